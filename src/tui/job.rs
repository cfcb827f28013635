//! Jobs: the work the UI asks the workers to do. Plain data; each request carries an id so a
//! late or superseded result can be recognised and dropped, and a cancel flag long jobs check.

use crate::token::Algorithm;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub type JobId = u64;

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
}

impl Job {
    /// The token whose worker must run this job (it owns that token's session), if any.
    pub fn token(&self) -> Option<&str> {
        match self {
            Job::Generate { token, .. }
            | Job::SignFile { token, .. }
            | Job::Destroy { token, .. }
            | Job::SignImages { token, .. } => Some(token),
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
