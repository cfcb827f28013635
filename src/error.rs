//! The core's error type: what happened, and what to do next. Exit codes are documented in
//! README.md and mapped here.

use crate::audit::AuditError;
use crate::keys::State;
use crate::prompt::PromptError;
use crate::token::TokenError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error(transparent)]
    Prompt(#[from] PromptError),
    #[error(transparent)]
    Oci(crate::oci::OciError),
    #[error(transparent)]
    Ceremony(#[from] crate::ceremony::CeremonyError),
    #[error("{message}")]
    ImageVerify { code: i32, message: String },
    #[error("{failed} of {total} image signature(s) failed")]
    PartialFailure { failed: usize, total: usize },
    #[error("{0}")]
    Config(String),
    #[error("no token named {name:?}; known tokens: {known}")]
    UnknownToken { name: String, known: String },
    #[error("no key named {name:?}")]
    UnknownKey { name: String },
    #[error("key {key} has no version {version}")]
    UnknownVersion { key: String, version: u32 },
    #[error("{key}/{version} is {state}; only an active version signs")]
    NotActive {
        key: String,
        version: u32,
        state: State,
    },
    #[error("key {key} has no active version (versions: {states})")]
    NoActiveVersion { key: String, states: String },
    #[error("{key}/{version} cannot go from {from} to {to}; from {from} it can become: {legal}")]
    InvalidTransition {
        key: String,
        version: u32,
        from: State,
        to: State,
        legal: String,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("overdue: {0}")]
    Overdue(String),
    #[error("the audit log does not verify: {0}")]
    AuditBroken(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.display().to_string(),
            source,
        }
    }

    /// The process exit code for this error (see README "Exit codes").
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::UnknownToken { .. }
            | Error::UnknownKey { .. }
            | Error::UnknownVersion { .. } => 3,
            Error::Token(TokenError::KeyNotFound { .. }) => 3,
            Error::Token(
                TokenError::PinIncorrect { .. }
                | TokenError::PinLocked { .. }
                | TokenError::BadPassphrase
                | TokenError::FinalTryNotConfirmed { .. }
                | TokenError::NotLoggedIn { .. },
            ) => 4,
            Error::Prompt(PromptError::NotInteractive { .. }) => 4,
            Error::Audit(_) | Error::AuditBroken(_) => 5,
            Error::NotActive { .. }
            | Error::NoActiveVersion { .. }
            | Error::InvalidTransition { .. } => 6,
            Error::Token(TokenError::NotPresent { .. } | TokenError::Module { .. }) => 7,
            Error::Prompt(PromptError::Cancelled) => 8,
            Error::Ceremony(c) => c.exit_code(),
            Error::Overdue(_) => 9,
            Error::ImageVerify { code, .. } => *code,
            Error::Oci(_) => 15,
            Error::PartialFailure { .. } => 16,
            _ => 1,
        }
    }

    /// What the user can do next, when there is something to say.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            Error::UnknownToken { .. } => {
                "run `keyward token list`, or register one with `keyward token init`".into()
            }
            Error::UnknownKey { .. } => "run `keyward key list` to see the keys".into(),
            Error::NotActive { key, version, state } if *state == State::PreActive => {
                format!("activate it first: `keyward key activate {key}/{version}`")
            }
            Error::NoActiveVersion { key, .. } => format!(
                "generate one (`keyward key generate {key} --token NAME`) or activate a pre-active version"
            ),
            Error::Token(TokenError::PinIncorrect { .. }) => {
                "check the PIN; keyward never retries on its own".into()
            }
            Error::Prompt(PromptError::NotInteractive { .. }) => {
                "set KEYWARD_PIN / KEYWARD_SO_PIN / KEYWARD_PASSPHRASE or pass --pin-file FILE".into()
            }
            Error::Audit(_) => "keyward refuses any operation it cannot record".into(),
            Error::Overdue(_) => {
                "rotate with `keyward key rotate NAME`, or deactivate ended overlaps with `keyward key due --apply`".into()
            }
            Error::Ceremony(c) => return c.hint(),
            Error::AuditBroken(_) => {
                "treat the home directory as tampered with: compare with a backup and your off-host checkpoints".into()
            }
            _ => return None,
        })
    }
}
