//! The typed events of the audit log.

use crate::token::Algorithm;
use serde::{Deserialize, Serialize};

/// What happened. Serialized with a `type` tag, snake_case; unknown fields are rejected so that
/// an entry means exactly what it says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Event {
    /// A PKCS#11 token was initialised (SO PIN and user PIN set) and registered.
    TokenInitialized {
        token: String,
        module: String,
        label: String,
        serial: String,
    },
    /// The software keystore was created with a passphrase.
    KeystoreCreated { token: String },
    /// A login attempt (outcome tells whether it worked; never the PIN).
    Login {
        token: String,
        serial: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tries_left: Option<u32>,
    },
    /// Intent: keyward is about to generate `key/version` on `token` with this object id.
    /// Followed by `key_generated` or `key_generation_aborted`.
    KeyGenerating {
        key: String,
        version: u32,
        token: String,
        token_serial: String,
        object_id: String,
        algorithm: Algorithm,
        /// The state the version will have once generated.
        state: crate::keys::State,
        /// Created wrappable (PKCS#11: extractable only under an SO-trusted wrapping key).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        wrappable: bool,
    },
    KeyGenerated {
        key: String,
        version: u32,
        token: String,
        token_serial: String,
        object_id: String,
        algorithm: Algorithm,
        key_id: String,
        public_key: String,
        state: crate::keys::State,
        /// Created wrappable: backups carry it as a `C_WrapKey` blob.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        wrappable: bool,
    },
    KeyGenerationAborted {
        key: String,
        version: u32,
        token: String,
        object_id: String,
        reason: String,
        /// Closed by recovery after a crash rather than by the generating process: a token
        /// that completes the interrupted request later has its key adopted then.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        interrupted: bool,
    },
    StateChanged {
        key: String,
        version: u32,
        from: crate::keys::State,
        to: crate::keys::State,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// For `compromised`: since when the key must be distrusted (RFC 3339).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<String>,
    },
    /// A cryptoperiod policy for a key: rotate every `rotate_every` seconds, keep the old
    /// version active for `overlap` seconds after a rotation.
    PolicySet {
        key: String,
        rotate_every: u64,
        overlap: u64,
    },
    /// `key rotate`: `to` became active; each of `from` stays active until `overlap_until`.
    Rotated {
        key: String,
        from: Vec<u32>,
        to: u32,
        overlap_until: String,
    },
    /// A signature over a file or other data.
    Signed {
        key: String,
        version: u32,
        key_id: String,
        /// SHA-256 of the signed data, hex.
        data_sha256: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subject: Option<String>,
    },
    /// A container image signature.
    ImageSigned {
        key: String,
        version: u32,
        key_id: String,
        image: String,
        digest: String,
    },
    PublicKeyRead {
        key: String,
        version: u32,
        key_id: String,
    },
    /// A signed checkpoint of the log head (`head_seq`, `head_hash`).
    Checkpoint {
        head_seq: u64,
        head_hash: String,
        key: String,
        version: u32,
        key_id: String,
        signature: String,
    },
    /// A torn final line (a crash in the middle of an append) was cut off before appending.
    TornTailRepaired { bytes: u64, sha256: String },
    /// A signature made offline was pushed to its image's registry (`image attach`).
    SignatureAttached {
        image: String,
        digest: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key_id: Option<String>,
    },
    /// A distribution bundle was written (`bundle export`): what it trusts and revokes, and the
    /// SHA-256 of its `SHA256SUMS`, so a shipped bundle can be matched to this entry.
    BundleExported {
        output: String,
        scopes: Vec<String>,
        /// `key/version` of every trusted version.
        trusts: Vec<String>,
        /// `key/version` of every revoked (compromised) version.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        revokes: Vec<String>,
        sums_sha256: String,
        /// Key id of the key that signed `SHA256SUMS`, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signed_by: Option<String>,
    },
    /// Administration of a YubiKey's PIV application. Never a PIN, PUK or management key.
    PivAdmin {
        token: String,
        serial: String,
        action: PivAction,
        /// Tries left after the attempt, when the card said (a wrong PIN or PUK).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pin_tries_left: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        puk_tries_left: Option<u32>,
    },
    /// A key version's hardware attestation was fetched and checked.
    KeyAttested {
        key: String,
        version: u32,
        key_id: String,
        token: String,
        /// The card keyward asked.
        serial: String,
        object_id: String,
        verified: bool,
        /// The serial the attestation names.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attested_serial: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        firmware: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pin_policy: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        touch_policy: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        problems: Vec<String>,
    },
    /// The private key of a version was imported into another token: a copy, which the
    /// registry lists with the version (the version's own token stays `from_token`).
    KeyImported {
        key: String,
        version: u32,
        key_id: String,
        from_token: String,
        token: String,
        token_serial: String,
        object_id: String,
    },
    /// A copy of a version's private key was destroyed on its token (`key destroy`).
    KeyCopyRemoved {
        key: String,
        version: u32,
        key_id: String,
        token: String,
        token_serial: String,
        object_id: String,
    },
    /// `token scan`: the keys found on a token, and the versions adopted into the log.
    TokenScanned {
        token: String,
        serial: String,
        found: Vec<String>,
        adopted: Vec<String>,
    },
    /// `backup create`: an encrypted backup of this home up to entry `head_seq`.
    BackupCreated {
        backup_id: String,
        file: String,
        head_seq: u64,
        head_hash: String,
        /// How it is encrypted, e.g. "3-of-5 custodian shares (alice, ...)".
        protection: String,
        /// Private keys inside (software keys and wrapped keys) and keys only listed
        /// (non-extractable).
        keys_included: u32,
        keys_listed: u32,
        /// Of `keys_included`, PKCS#11 keys inside as `C_WrapKey` blobs.
        #[serde(default, skip_serializing_if = "is_zero")]
        keys_wrapped: u32,
    },
    /// `backup restore`: this home was rebuilt from a backup whose log ended at `head_seq`.
    BackupRestored {
        backup_id: String,
        head_seq: u64,
        head_hash: String,
        keys_restored: u32,
    },
    /// A restored private key now lives on `token` (software keystore import, PKCS#11 import):
    /// the version's binding changes to this token and object.
    KeyRestored {
        key: String,
        version: u32,
        token: String,
        token_serial: String,
        object_id: String,
        key_id: String,
        backup_id: String,
        /// The key came out of the backup as a `C_WrapKey` blob under this wrapping key (and
        /// was unwrapped with `C_UnwrapKey`, or in software for a non-PKCS#11 target).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        wrapping_key_id: Option<String>,
        /// The new binding is wrappable again (unwrapped onto a PKCS#11 token).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        wrappable: bool,
    },
    /// `backup create`: the SO of `token` installed the backup's wrapping key (a session
    /// object marked `CKA_TRUSTED`, wrap only). Never the key's value.
    WrappingKeyInstalled {
        token: String,
        token_serial: String,
        wrapping_key_id: String,
        backup_id: String,
    },
    /// `backup create`: the private key of a wrappable version was wrapped (`C_WrapKey`) under
    /// the backup's wrapping key; the blob is in the backup.
    KeyWrapped {
        key: String,
        version: u32,
        key_id: String,
        token: String,
        token_serial: String,
        object_id: String,
        wrapping_key_id: String,
        mechanism: String,
        backup_id: String,
    },
    /// `backup drill`: a backup was restored into a scratch home and compared with this one.
    BackupDrilled {
        backup_id: String,
        head_seq: u64,
        head_hash: String,
        keys_checked: u32,
        /// Differences found (0 when the drill passed).
        differences: u32,
    },
    /// The software-keystore copy of a version was deleted after the key was imported into
    /// tokens; the version now lives on `bound_token` (one of those copies).
    KeyCopyDestroyed {
        key: String,
        version: u32,
        key_id: String,
        /// Where the destroyed copy was.
        token: String,
        object_id: String,
        /// Where the version lives from now on.
        bound_token: String,
        bound_serial: String,
        bound_object_id: String,
    },
    /// `ceremony run`: a scripted, witnessed ceremony began.
    CeremonyStarted {
        ceremony: String,
        run_id: String,
        /// SHA-256 of the script's TOML text.
        script_sha256: String,
        /// `name (role)` of every declared participant.
        participants: Vec<String>,
    },
    /// One step of a ceremony: `started` (with who acknowledged it), then `ok` or `failed`.
    CeremonyStep {
        run_id: String,
        step: String,
        kind: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        acknowledged_by: Vec<String>,
    },
    /// A ceremony's signed transcript was written; its SHA-256 chains it into the log.
    CeremonyCompleted {
        ceremony: String,
        run_id: String,
        transcript: String,
        transcript_sha256: String,
        /// `key/version` that signed the transcript, and its key id.
        signed_by: String,
        key_id: String,
    },
}

/// What was done to a YubiKey's PIV application.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum PivAction {
    ChangePin,
    ChangePuk,
    UnblockPin,
    /// New retry counts; the card reset PIN and PUK to their defaults.
    SetRetries {
        pin: u8,
        puk: u8,
    },
    /// A new random management key, stored PIN-protected on the card.
    SetManagementKey,
    /// The PIV application was reset; `lost` names the key versions that were on it.
    Reset {
        lost: Vec<String>,
    },
}

impl PivAction {
    pub fn describe(&self) -> String {
        match self {
            PivAction::ChangePin => "PIN changed".into(),
            PivAction::ChangePuk => "PUK changed".into(),
            PivAction::UnblockPin => "PIN unblocked with the PUK".into(),
            PivAction::SetRetries { pin, puk } => {
                format!("retries set to {pin} (PIN) and {puk} (PUK); PIN and PUK reset to defaults")
            }
            PivAction::SetManagementKey => "new random management key stored PIN-protected".into(),
            PivAction::Reset { lost } if lost.is_empty() => "PIV application reset".into(),
            PivAction::Reset { lost } => {
                format!("PIV application reset; lost {}", lost.join(", "))
            }
        }
    }
}

impl Event {
    /// The snake_case type tag, as written in the log.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::TokenInitialized { .. } => "token_initialized",
            Event::KeystoreCreated { .. } => "keystore_created",
            Event::Login { .. } => "login",
            Event::KeyGenerating { .. } => "key_generating",
            Event::KeyGenerated { .. } => "key_generated",
            Event::KeyGenerationAborted { .. } => "key_generation_aborted",
            Event::StateChanged { .. } => "state_changed",
            Event::PolicySet { .. } => "policy_set",
            Event::Rotated { .. } => "rotated",
            Event::Signed { .. } => "signed",
            Event::ImageSigned { .. } => "image_signed",
            Event::PublicKeyRead { .. } => "public_key_read",
            Event::Checkpoint { .. } => "checkpoint",
            Event::TornTailRepaired { .. } => "torn_tail_repaired",
            Event::SignatureAttached { .. } => "signature_attached",
            Event::BundleExported { .. } => "bundle_exported",
            Event::PivAdmin { .. } => "piv_admin",
            Event::KeyAttested { .. } => "key_attested",
            Event::KeyImported { .. } => "key_imported",
            Event::KeyCopyRemoved { .. } => "key_copy_removed",
            Event::TokenScanned { .. } => "token_scanned",
            Event::BackupCreated { .. } => "backup_created",
            Event::BackupRestored { .. } => "backup_restored",
            Event::KeyRestored { .. } => "key_restored",
            Event::WrappingKeyInstalled { .. } => "wrapping_key_installed",
            Event::KeyWrapped { .. } => "key_wrapped",
            Event::BackupDrilled { .. } => "backup_drilled",
            Event::KeyCopyDestroyed { .. } => "key_copy_destroyed",
            Event::CeremonyStarted { .. } => "ceremony_started",
            Event::CeremonyStep { .. } => "ceremony_step",
            Event::CeremonyCompleted { .. } => "ceremony_completed",
        }
    }

    /// The key name the event is about, if any.
    pub fn key(&self) -> Option<&str> {
        match self {
            Event::KeyGenerating { key, .. }
            | Event::KeyGenerated { key, .. }
            | Event::KeyGenerationAborted { key, .. }
            | Event::StateChanged { key, .. }
            | Event::PolicySet { key, .. }
            | Event::Rotated { key, .. }
            | Event::Signed { key, .. }
            | Event::ImageSigned { key, .. }
            | Event::PublicKeyRead { key, .. }
            | Event::KeyAttested { key, .. }
            | Event::KeyImported { key, .. }
            | Event::KeyCopyRemoved { key, .. }
            | Event::KeyRestored { key, .. }
            | Event::KeyWrapped { key, .. }
            | Event::KeyCopyDestroyed { key, .. }
            | Event::Checkpoint { key, .. } => Some(key),
            _ => None,
        }
    }

    /// A one-line human summary.
    pub fn summary(&self) -> String {
        match self {
            Event::TokenInitialized {
                token,
                label,
                serial,
                ..
            } => {
                format!("token {token} initialised (label {label}, serial {serial})")
            }
            Event::KeystoreCreated { token } => format!("software keystore {token} created"),
            Event::Login {
                token, tries_left, ..
            } => match tries_left {
                Some(n) => format!("login to {token} ({n} tries left)"),
                None => format!("login to {token}"),
            },
            Event::KeyGenerating {
                key,
                version,
                token,
                algorithm,
                ..
            } => {
                format!("generating {key}/{version} ({algorithm}) on {token}")
            }
            Event::KeyGenerated {
                key,
                version,
                token,
                algorithm,
                key_id,
                state,
                wrappable,
                ..
            } => format!(
                "generated {key}/{version} ({algorithm}{}) on {token}, {state}, key id {}",
                if *wrappable { ", wrappable" } else { "" },
                &key_id[..key_id.len().min(16)]
            ),
            Event::KeyGenerationAborted {
                key,
                version,
                reason,
                ..
            } => {
                format!("generation of {key}/{version} aborted: {reason}")
            }
            Event::StateChanged {
                key,
                version,
                from,
                to,
                reason,
                ..
            } => match reason {
                Some(r) => format!("{key}/{version} {from} -> {to} ({r})"),
                None => format!("{key}/{version} {from} -> {to}"),
            },
            Event::PolicySet {
                key,
                rotate_every,
                overlap,
            } => format!(
                "policy for {key}: rotate every {}, overlap {}",
                crate::keys::format_duration(*rotate_every),
                crate::keys::format_duration(*overlap)
            ),
            Event::Rotated {
                key,
                from,
                to,
                overlap_until,
            } => format!(
                "{key} rotated to version {to}; {} active until {overlap_until}",
                from.iter()
                    .map(|v| format!("{key}/{v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Event::Signed {
                key,
                version,
                data_sha256,
                subject,
                ..
            } => format!(
                "signed {} with {key}/{version}",
                subject
                    .clone()
                    .unwrap_or_else(|| format!("sha256:{}", &data_sha256[..16]))
            ),
            Event::ImageSigned {
                key,
                version,
                image,
                digest,
                ..
            } => {
                format!("signed image {image}@{digest} with {key}/{version}")
            }
            Event::PublicKeyRead { key, version, .. } => {
                format!("public key of {key}/{version} read")
            }
            Event::Checkpoint {
                head_seq,
                key,
                version,
                ..
            } => {
                format!("checkpoint of entry {head_seq} signed with {key}/{version}")
            }
            Event::SignatureAttached { image, digest, .. } => {
                format!("attached an offline signature to {image} ({digest})")
            }
            Event::BundleExported {
                output,
                trusts,
                revokes,
                signed_by,
                ..
            } => {
                let mut s = format!("bundle {output} trusts {}", trusts.join(", "));
                if !revokes.is_empty() {
                    s.push_str(&format!("; revokes {}", revokes.join(", ")));
                }
                if signed_by.is_none() {
                    s.push_str(" (not signed)");
                }
                s
            }
            Event::TornTailRepaired { bytes, .. } => {
                format!("cut a torn final line of {bytes} bytes (crash during an append)")
            }
            Event::PivAdmin {
                token,
                action,
                pin_tries_left,
                puk_tries_left,
                ..
            } => {
                let mut s = format!("{token}: {}", action.describe());
                if let Some(n) = pin_tries_left {
                    s.push_str(&format!(" ({n} PIN tries left)"));
                }
                if let Some(n) = puk_tries_left {
                    s.push_str(&format!(" ({n} PUK tries left)"));
                }
                s
            }
            Event::KeyAttested {
                key,
                version,
                serial,
                verified,
                ..
            } => {
                if *verified {
                    format!("attestation of {key}/{version} verified (YubiKey {serial})")
                } else {
                    format!("attestation of {key}/{version} did NOT verify (YubiKey {serial})")
                }
            }
            Event::KeyImported {
                key,
                version,
                token,
                object_id,
                ..
            } => format!("{key}/{version} imported into {token} (slot {object_id})"),
            Event::KeyCopyRemoved {
                key,
                version,
                token,
                object_id,
                ..
            } => format!("copy of {key}/{version} destroyed on {token} (slot {object_id})"),
            Event::TokenScanned {
                token,
                found,
                adopted,
                ..
            } => format!(
                "scanned {token}: {} keyward keys found, {} adopted",
                found.len(),
                adopted.len()
            ),
            Event::BackupCreated {
                backup_id,
                head_seq,
                protection,
                keys_included,
                keys_listed,
                ..
            } => format!(
                "backup {} created up to entry {head_seq} ({keys_included} private key(s), {keys_listed} listed only; {protection})",
                backup_id.get(..16).unwrap_or(backup_id)
            ),
            Event::BackupRestored {
                backup_id,
                head_seq,
                keys_restored,
                ..
            } => format!(
                "home restored from backup {} (log up to entry {head_seq}, {keys_restored} key(s) restored)",
                backup_id.get(..16).unwrap_or(backup_id)
            ),
            Event::KeyRestored {
                key,
                version,
                token,
                wrapping_key_id,
                ..
            } => match wrapping_key_id {
                Some(w) => format!(
                    "{key}/{version} unwrapped from a backup onto {token} (wrapping key {})",
                    w.get(..12).unwrap_or(w)
                ),
                None => format!("{key}/{version} restored from a backup onto {token}"),
            },
            Event::WrappingKeyInstalled {
                token,
                wrapping_key_id,
                backup_id,
                ..
            } => format!(
                "SO of {token} installed wrapping key {} for backup {}",
                wrapping_key_id.get(..12).unwrap_or(wrapping_key_id),
                backup_id.get(..16).unwrap_or(backup_id)
            ),
            Event::KeyWrapped {
                key,
                version,
                token,
                wrapping_key_id,
                backup_id,
                ..
            } => format!(
                "{key}/{version} wrapped on {token} under wrapping key {} for backup {}",
                wrapping_key_id.get(..12).unwrap_or(wrapping_key_id),
                backup_id.get(..16).unwrap_or(backup_id)
            ),
            Event::BackupDrilled {
                backup_id,
                keys_checked,
                differences,
                ..
            } => format!(
                "restore drill of backup {}: {keys_checked} key(s) checked, {differences} difference(s)",
                backup_id.get(..16).unwrap_or(backup_id)
            ),
            Event::KeyCopyDestroyed {
                key,
                version,
                token,
                bound_token,
                ..
            } => format!(
                "the {token} copy of {key}/{version} destroyed; it now lives on {bound_token}"
            ),
            Event::CeremonyStarted {
                ceremony,
                run_id,
                participants,
                ..
            } => format!(
                "ceremony {ceremony} ({run_id}) started with {}",
                participants.join(", ")
            ),
            Event::CeremonyStep {
                run_id,
                step,
                acknowledged_by,
                ..
            } => {
                if acknowledged_by.is_empty() {
                    format!("ceremony {run_id}: step {step}")
                } else {
                    format!(
                        "ceremony {run_id}: step {step}, acknowledged by {}",
                        acknowledged_by.join(", ")
                    )
                }
            }
            Event::CeremonyCompleted {
                ceremony,
                run_id,
                transcript_sha256,
                signed_by,
                ..
            } => format!(
                "ceremony {ceremony} ({run_id}) completed; transcript sha256:{} signed with {signed_by}",
                transcript_sha256.get(..16).unwrap_or(transcript_sha256)
            ),
        }
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// How an operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    Failed,
    /// An intent: the operation has begun and another entry will say how it ended.
    Started,
    /// Refused by policy (e.g. signing with a version that is not active).
    Refused,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
            Outcome::Started => "started",
            Outcome::Refused => "refused",
        })
    }
}

/// Who acted: the OS user and host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Actor {
    pub user: String,
    pub host: String,
}

impl Actor {
    pub fn current() -> Self {
        let user = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .ok()
            .filter(|u| !u.is_empty())
            .or_else(user_from_uid)
            .unwrap_or_else(|| "unknown".into());
        let host = gethostname::gethostname().to_string_lossy().into_owned();
        Actor { user, host }
    }
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.user, self.host)
    }
}

/// The user name of this process's uid, from /etc/passwd (no libc call, no unsafe).
fn user_from_uid() -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self").ok()?.uid();
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let id: u32 = f.nth(1)?.parse().ok()?;
            (id == uid).then(|| name.to_owned())
        })
        .next()
        .or(Some(format!("uid{uid}")))
}
