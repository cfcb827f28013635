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
            Event::Signed { .. } => "signed",
            Event::ImageSigned { .. } => "image_signed",
            Event::PublicKeyRead { .. } => "public_key_read",
            Event::Checkpoint { .. } => "checkpoint",
            Event::TornTailRepaired { .. } => "torn_tail_repaired",
        }
    }

    /// The key name the event is about, if any.
    pub fn key(&self) -> Option<&str> {
        match self {
            Event::KeyGenerating { key, .. }
            | Event::KeyGenerated { key, .. }
            | Event::KeyGenerationAborted { key, .. }
            | Event::StateChanged { key, .. }
            | Event::Signed { key, .. }
            | Event::ImageSigned { key, .. }
            | Event::PublicKeyRead { key, .. }
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
                ..
            } => format!(
                "generated {key}/{version} ({algorithm}) on {token}, {state}, key id {}",
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
            } => match reason {
                Some(r) => format!("{key}/{version} {from} -> {to} ({r})"),
                None => format!("{key}/{version} {from} -> {to}"),
            },
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
            Event::TornTailRepaired { bytes, .. } => {
                format!("cut a torn final line of {bytes} bytes (crash during an append)")
            }
        }
    }
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
