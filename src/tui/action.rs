//! Everything that changes the console's state: intents (imperative: `GenerateKey`) and what
//! workers report back (past tense: `KeyGenerated`). Results carry the id of their request.

use crate::audit::verify::Report;
use crate::audit::Entry;
use crate::keys::{Pending, Version};
use crate::prompt::Confirm;
use crate::service::TokenEntry;
use crate::token::Algorithm;
use crate::tui::job::JobId;
use crate::tui::state::audit::{AuditFilter, AuditIndex};
use crate::tui::state::{
    ConfirmReply, ImageRow, ImageVerification, SecretPrompt, SecretReply, Tab,
};
use std::path::PathBuf;

/// A key, as a modal or form receives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputKey {
    Char(char),
    Backspace,
    Enter,
    Esc,
    Tab,
    BackTab,
    Left,
    Right,
    Up,
    Down,
}

#[derive(Debug)]
pub enum Action {
    // ---- the console ----
    Quit,
    SelectTab(Tab),
    NextTab,
    PrevTab,
    Up,
    Down,
    PageUp,
    PageDown,
    Top,
    Bottom,
    Help,
    /// A key for the open modal.
    Input(InputKey),
    Resize(u16, u16),
    /// A mouse click at (column, row).
    Click(u16, u16),
    Tick,
    /// Continue a filter scan over the audit index (the event loop sends it while one runs).
    ContinueScan,
    Refresh,
    /// Cancel the newest running job.
    CancelJob,

    // ---- intents that open a form ----
    OpenGenerate,
    OpenExport,
    OpenSignFile,
    OpenInitToken,
    OpenSearch,
    OpenFilter,
    OpenSignImages,
    OpenVerifyImage,
    ActivateSelected,
    DestroySelected,
    ClearFilter,

    // ---- intents ----
    GenerateKey {
        name: String,
        token: String,
        algorithm: Algorithm,
        inactive: bool,
    },
    ActivateKey {
        key: String,
        version: u32,
    },
    ExportPublicKey {
        key: String,
        version: u32,
        path: PathBuf,
    },
    SignFile {
        key: String,
        version: u32,
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
        images: Vec<String>,
        insecure: Vec<String>,
    },
    VerifyImage {
        image: String,
        key: Option<String>,
        insecure: Vec<String>,
    },
    ApplyFilter(AuditFilter),
    VerifyAudit,

    // ---- what the workers report ----
    TokensListed {
        id: JobId,
        tokens: Vec<TokenEntry>,
    },
    KeysLoaded {
        id: JobId,
        versions: Vec<Version>,
        pending: Vec<Pending>,
    },
    AuditLoading {
        id: JobId,
        entries: u64,
    },
    AuditLoaded {
        id: JobId,
        index: Box<AuditIndex>,
    },
    AuditAppended {
        id: JobId,
        from: u64,
        entries: Vec<(Entry, u64)>,
    },
    AuditVerified {
        id: JobId,
        report: Report,
    },
    KeyGenerated {
        id: JobId,
        version: Box<Version>,
    },
    KeyDestroyed {
        id: JobId,
        version: Box<Version>,
    },
    KeyActivated {
        id: JobId,
        version: Box<Version>,
    },
    PublicKeyExported {
        id: JobId,
        key: String,
        path: PathBuf,
    },
    FileSigned {
        id: JobId,
        key: String,
        output: PathBuf,
    },
    TokenInitialized {
        id: JobId,
        name: String,
        serial: String,
    },
    ImageProgressed {
        id: JobId,
        index: usize,
        row: ImageRow,
    },
    ImagesSigned {
        id: JobId,
        rows: Vec<ImageRow>,
    },
    ImageVerified {
        id: JobId,
        verification: ImageVerification,
    },
    JobProgressed {
        id: JobId,
        message: String,
    },
    JobFailed {
        id: JobId,
        error: String,
        hint: Option<String>,
        cancelled: bool,
    },
    /// A worker needs a PIN or passphrase; it waits on `reply`.
    SecretNeeded {
        id: JobId,
        prompt: SecretPrompt,
        reply: SecretReply,
    },
    /// A worker needs a yes/no; it waits on `reply`.
    ConfirmNeeded {
        id: JobId,
        confirm: Confirm,
        reply: ConfirmReply,
    },
    /// A worker tells the person something (e.g. "touch your YubiKey").
    Notified {
        id: JobId,
        message: String,
    },
}
