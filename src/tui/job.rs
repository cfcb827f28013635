//! Jobs: the work the UI asks the workers to do. Plain data; each request carries an id so a
//! late or superseded result can be recognised and dropped, and a cancel flag long jobs check.

use crate::keys::State as KeyState;
use crate::token::Algorithm;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub type JobId = u64;

/// YubiKey PIV administration (`keyward token piv …`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PivOp {
    ChangePin,
    ChangePuk,
    UnblockPin,
    SetManagementKey,
    SetRetries { pin: u8, puk: u8 },
    Reset,
}

impl PivOp {
    pub fn label(&self) -> &'static str {
        match self {
            PivOp::ChangePin => "changing the PIN",
            PivOp::ChangePuk => "changing the PUK",
            PivOp::UnblockPin => "unblocking the PIN",
            PivOp::SetManagementKey => "setting a new management key",
            PivOp::SetRetries { .. } => "setting retry counts",
            PivOp::Reset => "resetting the PIV application",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Job {
    /// `Keyward::list_tokens` (opens every module: slow, so never on the UI thread).
    ListTokens,
    /// Fold the registry (key versions and pending generations).
    LoadKeys,
    /// Index the whole audit log.
    LoadAudit,
    /// Index entries appended since byte `from`.
    AuditTail {
        from: u64,
    },
    /// `audit verify`: chain and checkpoints.
    VerifyAudit,
    Generate {
        key: String,
        token: String,
        algorithm: Algorithm,
        inactive: bool,
    },
    Activate {
        key: String,
        version: u32,
    },
    /// Destroy a version's private key on its token (the core asks for a confirmation).
    Destroy {
        key: String,
        version: u32,
        token: String,
    },
    ExportPublicKey {
        key: String,
        version: u32,
        path: PathBuf,
    },
    SignFile {
        key: String,
        version: u32,
        token: String,
        input: PathBuf,
        output: PathBuf,
    },
    InitToken {
        module: PathBuf,
        label: String,
        name: String,
    },
    SignImages {
        key: String,
        token: String,
        images: Vec<String>,
        /// Registries reached over plain HTTP (`--insecure-registry`).
        insecure: Vec<String>,
    },
    VerifyImage {
        image: String,
        key: Option<String>,
        insecure: Vec<String>,
    },
    /// A lifecycle transition other than destruction (`key suspend|resume|deactivate|…`).
    SetState {
        key: String,
        version: u32,
        to: KeyState,
        reason: Option<String>,
        /// For `compromised`: since when the key must not be trusted.
        since: Option<String>,
    },
    /// `key rotate`: a new version on `token`; the old ones stay active for the overlap.
    Rotate {
        key: String,
        token: String,
        algorithm: Algorithm,
        overlap: u64,
    },
    /// `key policy`.
    SetPolicy {
        key: String,
        rotate_every: u64,
        overlap: u64,
    },
    /// `key due --apply`: deactivate versions whose overlap has ended.
    ApplyDue,
    /// `image resign --dry-run`: which images need the newest version's signature.
    PlanResign {
        key: String,
        insecure: Vec<String>,
    },
    /// `image resign`, on the token of the newest active version.
    Resign {
        key: String,
        token: String,
        insecure: Vec<String>,
    },
    /// YubiKey PIV administration on `token` (a `yubikey:SERIAL` or a configured name).
    Piv {
        token: String,
        op: PivOp,
    },
    /// `token piv attest NAME/VERSION`: fetch and check the slot's attestation, audited.
    Attest {
        key: String,
        version: u32,
        token: String,
    },
    /// `ceremony run NAME|FILE`: load the script with its participants and parameters and
    /// start it (creates the ceremony directory, records `ceremony_started`).
    CeremonyOpen {
        script: String,
        participants: PathBuf,
        params: Vec<(String, String)>,
        dir: PathBuf,
    },
    /// `ceremony run --resume PROGRESS`.
    CeremonyResume {
        progress: PathBuf,
    },
    /// A participant typed their name to acknowledge the current step.
    CeremonyAck {
        progress: PathBuf,
        person: String,
        typed: String,
    },
    /// Run the current step (every acknowledgement given).
    CeremonyStep {
        progress: PathBuf,
    },
    /// Sign and write the transcript, chain its hash into the audit log.
    CeremonyFinish {
        progress: PathBuf,
    },
    /// `bundle export`.
    ExportBundle {
        keys: Vec<String>,
        scopes: Vec<String>,
        output: PathBuf,
        sign_with: Option<String>,
        keep_deactivated: bool,
        tar: bool,
    },
}

impl Job {
    /// The token whose worker must run this job (it owns that token's session), if any.
    pub fn token(&self) -> Option<&str> {
        match self {
            Job::Generate { token, .. }
            | Job::SignFile { token, .. }
            | Job::Destroy { token, .. }
            | Job::SignImages { token, .. }
            | Job::Rotate { token, .. }
            | Job::Resign { token, .. }
            | Job::Piv { token, .. }
            | Job::Attest { token, .. } => Some(token),
            _ => None,
        }
    }

    /// A short label for the jobs line.
    pub fn label(&self) -> String {
        match self {
            Job::ListTokens => "listing tokens".into(),
            Job::LoadKeys => "loading keys".into(),
            Job::LoadAudit => "indexing the audit log".into(),
            Job::AuditTail { .. } => "reading new audit entries".into(),
            Job::VerifyAudit => "verifying the audit chain".into(),
            Job::Generate { key, token, .. } => format!("generating {key} on {token}"),
            Job::Activate { key, version } => format!("activating {key}/{version}"),
            Job::ExportPublicKey { key, version, .. } => format!("exporting {key}/{version}"),
            Job::Destroy { key, version, .. } => format!("destroying {key}/{version}"),
            Job::SignFile { key, version, .. } => format!("signing with {key}/{version}"),
            Job::InitToken { name, .. } => format!("initialising token {name}"),
            Job::SignImages { images, .. } => format!("signing {} image(s)", images.len()),
            Job::VerifyImage { image, .. } => format!("verifying {image}"),
            Job::SetState {
                key, version, to, ..
            } => format!("{key}/{version} -> {to}"),
            Job::Rotate { key, token, .. } => format!("rotating {key} onto {token}"),
            Job::SetPolicy { key, .. } => format!("setting the policy of {key}"),
            Job::ApplyDue => "ending rotation overlaps".into(),
            Job::CeremonyOpen { script, .. } => format!("starting the {script} ceremony"),
            Job::CeremonyResume { .. } => "opening a ceremony".into(),
            Job::CeremonyAck { person, .. } => format!("recording {person}'s acknowledgement"),
            Job::CeremonyStep { .. } => "running a ceremony step".into(),
            Job::CeremonyFinish { .. } => "signing the ceremony transcript".into(),
            Job::Piv { token, op } => format!("{} of {token}", op.label()),
            Job::Attest { key, version, .. } => format!("attesting {key}/{version}"),
            Job::PlanResign { key, .. } => format!("finding images to re-sign with {key}"),
            Job::Resign { key, .. } => format!("re-signing images with {key}"),
            Job::ExportBundle { output, .. } => {
                format!("exporting a bundle to {}", output.display())
            }
        }
    }

    /// Background loads run without the user asking; they are not listed as running jobs.
    pub fn is_background(&self) -> bool {
        matches!(
            self,
            Job::ListTokens
                | Job::LoadKeys
                | Job::LoadAudit
                | Job::AuditTail { .. }
                | Job::VerifyAudit
        )
    }
}

/// A cancellation flag shared by the UI and the worker running the job.
#[derive(Clone, Debug, Default)]
pub struct CancelFlag(Arc<AtomicBool>);

impl CancelFlag {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst)
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
    pub fn shared(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.0)
    }
}

#[derive(Clone, Debug)]
pub struct Request {
    pub id: JobId,
    pub job: Job,
    pub cancel: CancelFlag,
}
