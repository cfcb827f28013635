//! What the core asks a person for (PINs, passphrases, confirmations). Front ends supply a
//! `Prompter`; batch mode supplies one that never asks.

use crate::secret::Pin;
use crate::token::TokenInfo;

/// What secret is needed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretKind {
    /// The user PIN of a token.
    UserPin,
    /// The security officer PIN (token initialisation).
    SoPin,
    /// The passphrase of the software keystore.
    Passphrase,
    /// A new passphrase for a keystore being created (ask twice).
    NewPassphrase,
    /// A new user PIN being set (ask twice).
    NewUserPin,
    /// A new PUK for a YubiKey's PIV application (ask twice).
    NewPuk,
}

pub struct SecretRequest<'a> {
    pub kind: SecretKind,
    /// The token's name in keyward.
    pub token: &'a str,
    /// The token, when it is open (PIN status, tries left).
    pub info: Option<&'a TokenInfo>,
}

/// Confirmations the core may ask for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Confirm {
    /// The next wrong PIN will lock the token.
    FinalPinTry { token: String },
    /// A destructive action, naming what will be lost.
    Destructive { what: String },
}

impl Confirm {
    pub fn question(&self) -> String {
        match self {
            Confirm::FinalPinTry { token } => {
                format!("{token} has ONE PIN try left: a wrong PIN will lock it. Try anyway?")
            }
            Confirm::Destructive { what } => format!("This will {what}. Continue?"),
        }
    }
}

/// A ceremony step asks one participant to acknowledge it (they type their name).
pub struct AckRequest<'a> {
    /// The ceremony's name (`root-key`).
    pub ceremony: &'a str,
    /// The step's id and title.
    pub step: &'a str,
    pub title: &'a str,
    /// The participant asked, and their role.
    pub person: &'a str,
    pub role: &'a str,
}

/// Errors a prompter can return.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error("{what} is needed but keyward may not ask (batch mode). {hint}")]
    NotInteractive { what: String, hint: String },
    #[error("cancelled")]
    Cancelled,
    #[error("{0}")]
    Io(String),
}

pub trait Prompter {
    fn secret(&mut self, request: &SecretRequest<'_>) -> Result<Pin, PromptError>;
    fn confirm(&mut self, question: &Confirm) -> Result<bool, PromptError>;
    /// Asks a ceremony participant to acknowledge a step; returns what they typed (their name
    /// to acknowledge, empty to decline). Default: not possible (batch mode declares
    /// acknowledgements in the participants file instead).
    fn acknowledge(&mut self, request: &AckRequest<'_>) -> Result<String, PromptError> {
        Err(PromptError::NotInteractive {
            what: format!(
                "the acknowledgement of {} ({}) for step {}",
                request.person, request.role, request.step
            ),
            hint: "declare it under [acknowledgements] in the participants file".into(),
        })
    }
    /// Tells the person something (e.g. "touch your YubiKey"); default: nothing.
    fn notify(&mut self, _message: &str) {}
    /// A sender for messages while a token works (a YubiKey waiting for a touch), handed to
    /// the token at login; default: none.
    fn notifier(&mut self) -> Option<crate::token::Notifier> {
        None
    }
}

/// A prompter holding one secret per kind, already known (tests, automation).
pub struct FixedPrompter {
    pub user_pin: Option<String>,
    pub so_pin: Option<String>,
    pub passphrase: Option<String>,
    pub confirm: bool,
}

impl Prompter for FixedPrompter {
    fn secret(&mut self, request: &SecretRequest<'_>) -> Result<Pin, PromptError> {
        let v = match request.kind {
            SecretKind::UserPin | SecretKind::NewUserPin => &self.user_pin,
            SecretKind::SoPin | SecretKind::NewPuk => &self.so_pin,
            SecretKind::Passphrase | SecretKind::NewPassphrase => &self.passphrase,
        };
        v.clone().map(Pin::new).ok_or(PromptError::NotInteractive {
            what: format!("{:?}", request.kind),
            hint: String::new(),
        })
    }
    fn confirm(&mut self, _q: &Confirm) -> Result<bool, PromptError> {
        Ok(self.confirm)
    }
}
