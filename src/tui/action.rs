//! Everything that changes the console's state: intents (imperative: `GenerateKey`) and what
//! workers report back (past tense: `KeyGenerated`). Results carry the id of their request.

use crate::audit::verify::Report;
use crate::audit::Entry;
use crate::images::ResignItem;
use crate::keys::{Due, Pending, Policy, Version};
use crate::prompt::Confirm;
use crate::service::TokenEntry;
use crate::token::Algorithm;
use crate::tui::job::Job;
use crate::tui::job::JobId;
use crate::tui::state::audit::{AuditFilter, AuditIndex};
use crate::tui::state::{
    ConfirmReply, ImageRow, ImageVerification, SecretPrompt, SecretReply, Tab,
};
use std::collections::BTreeMap;
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
    /// Keys screen: suspend, resume, deactivate, compromise… the selected version.
    OpenStateChange,
    OpenRotate,
    OpenPolicy,
    OpenResign,
    OpenBundleExport,
    /// Deactivate the versions whose rotation overlap has ended (asks first).
    ApplyDue,
    /// Tokens screen, on a YubiKey: PIV administration.
    PivAdmin(crate::tui::job::PivOp),
    /// Tokens screen: the form for new PIN and PUK retry counts.
    OpenPivRetries,
    /// Keys screen: check the selected version's hardware attestation.
    AttestSelected,
    /// Ceremony screen: start a shipped (or a file's) ceremony / resume one.
    OpenCeremonyStart,
    OpenCeremonyResume,
    /// Ceremony screen: a participant acknowledges the current step.
    OpenCeremonyAck,
    /// Ceremony screen: run the current step (asks first).
    RunCeremonyStep,
    /// Ceremony screen: sign the transcript once every step is done (asks first).
    FinishCeremony,
    /// Run a job (what a confirmation's "yes" does).
    Run(Box<Job>),
    /// Ask before running a job, naming what it does and what is at stake.
    Confirm {
        title: String,
        question: String,
        loses: Option<String>,
        job: Box<Job>,
    },
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
        due: Vec<Due>,
        policies: BTreeMap<String, Policy>,
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
    StateChanged {
        id: JobId,
        version: Box<Version>,
    },
    KeyRotated {
        id: JobId,
        new: Box<Version>,
        old: Vec<Version>,
    },
    PolicySet {
        id: JobId,
        key: String,
        policy: Policy,
    },
    DueApplied {
        id: JobId,
        deactivated: Vec<Version>,
    },
    ResignPlanned {
        id: JobId,
        key: String,
        /// The newest active version, which will sign, and its token.
        newest: Box<Version>,
        insecure: Vec<String>,
        items: Vec<ResignItem>,
    },
    Resigned {
        id: JobId,
        newest: String,
        items: Vec<ResignItem>,
    },
    /// A PIV administration job finished: what it did, for the person.
    PivDone {
        id: JobId,
        lines: Vec<String>,
    },
    Attested {
        id: JobId,
        title: String,
        lines: Vec<String>,
        verified: bool,
    },
    /// A ceremony as saved after a job; `failed`: the step (or acknowledgement) that failed.
    CeremonyLoaded {
        id: JobId,
        ceremony: Box<crate::ceremony::Ceremony>,
        failed: Option<(String, Option<String>)>,
        info: Option<(String, Vec<String>)>,
    },
    BundleExported {
        id: JobId,
        output: PathBuf,
        /// What it trusts and revokes, for the person.
        lines: Vec<String>,
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
