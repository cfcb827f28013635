//! The console's state: plain data that `update` changes and the components render.
//!
//! Secrets are the one exception to "everything is in the state": a PIN being typed lives in
//! the PIN modal's zeroizing buffer only until it is submitted (it then moves into a
//! [`crate::secret::Pin`] sent to the worker that asked) or the modal closes (it is wiped).

pub mod audit;

use crate::audit::verify::Report;
use crate::keys::{Pending, Version};
use crate::prompt::SecretKind;
use crate::secret::Pin;
use crate::service::TokenEntry;
use crate::tui::job::{CancelFlag, Job, JobId, Request};
use audit::{AuditFilter, AuditIndex};
use std::collections::BTreeMap;
use std::sync::mpsc::SyncSender;
use zeroize::Zeroizing;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tab {
    Tokens,
    Keys,
    Images,
    Audit,
    Ceremony,
}

impl Tab {
    pub const ALL: [Tab; 5] = [
        Tab::Tokens,
        Tab::Keys,
        Tab::Images,
        Tab::Audit,
        Tab::Ceremony,
    ];
    pub fn title(self) -> &'static str {
        match self {
            Tab::Tokens => "Tokens",
            Tab::Keys => "Keys",
            Tab::Images => "Images",
            Tab::Audit => "Audit",
            Tab::Ceremony => "Ceremony",
        }
    }
    pub fn index(self) -> usize {
        Tab::ALL.iter().position(|t| *t == self).unwrap_or(0)
    }
    pub fn from_index(i: usize) -> Tab {
        Tab::ALL[i % Tab::ALL.len()]
    }
}

/// A scrolling selection over `len` items.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    pub selected: usize,
    pub offset: usize,
}

impl Cursor {
    /// Moves by `delta` (clamped to the list) and keeps the selection inside `height` rows.
    pub fn step(&mut self, delta: isize, len: usize, height: usize) {
        if len == 0 {
            *self = Cursor::default();
            return;
        }
        let max = len - 1;
        let s = self.selected as isize + delta;
        self.selected = s.clamp(0, max as isize) as usize;
        self.follow(len, height);
    }
    pub fn to(&mut self, index: usize, len: usize, height: usize) {
        self.selected = index.min(len.saturating_sub(1));
        self.follow(len, height);
    }
    /// Keeps the selection visible and the window full.
    pub fn follow(&mut self, len: usize, height: usize) {
        let height = height.max(1);
        if len == 0 {
            *self = Cursor::default();
            return;
        }
        self.selected = self.selected.min(len - 1);
        if self.selected < self.offset {
            self.offset = self.selected;
        } else if self.selected >= self.offset + height {
            self.offset = self.selected + 1 - height;
        }
        self.offset = self.offset.min(len.saturating_sub(height));
    }
    /// The first visible index for a window of `height` rows (render-side clamp).
    pub fn window_start(&self, len: usize, height: usize) -> usize {
        let height = height.max(1);
        let mut off = self.offset.min(len.saturating_sub(height));
        if self.selected >= off + height {
            off = self.selected + 1 - height;
        }
        if self.selected < off {
            off = self.selected;
        }
        off
    }
}

/// How a loaded list stands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Load {
    #[default]
    Loading,
    Ready,
    Failed(String),
}

#[derive(Clone, Debug, Default)]
pub struct TokensView {
    pub entries: Vec<TokenEntry>,
    pub cursor: Cursor,
    pub load: Load,
}

#[derive(Clone, Debug, Default)]
pub struct KeysView {
    pub versions: Vec<Version>,
    /// Creation times as Unix seconds (for the age column), parallel to `versions`.
    pub created: Vec<i64>,
    pub pending: Vec<Pending>,
    pub cursor: Cursor,
    pub load: Load,
    /// Audit index rows about the selected key, newest first (capped).
    pub history: Vec<u32>,
    /// The key `history` was computed for, and the index length then.
    pub history_for: Option<(String, usize)>,
    /// A version to select once the list is reloaded (a freshly generated one).
    pub select: Option<(String, u32)>,
    /// Rotation and deactivation deadlines (`key due`), as of the load.
    pub due: Vec<crate::keys::Due>,
    /// Cryptoperiod policies by key name.
    pub policies: BTreeMap<String, crate::keys::Policy>,
}

impl KeysView {
    pub fn selected(&self) -> Option<&Version> {
        self.versions.get(self.cursor.selected)
    }

    /// The deadline that concerns a version, if any: its overlap ending, else its key's rotation.
    pub fn due_of(&self, v: &Version) -> Option<&crate::keys::Due> {
        let of = |action: &str| {
            self.due
                .iter()
                .find(|d| d.key == v.key && d.version == v.version && d.action == action)
        };
        of("deactivate").or_else(|| of("rotate"))
    }
}

/// The Ceremony screen: the shipped scripts, or the ceremony being run.
#[derive(Clone, Debug, Default)]
pub struct CeremonyView {
    /// (name, summary) of the scripts built into keyward.
    pub scripts: Vec<(String, String)>,
    pub ceremony: Option<Box<crate::ceremony::Ceremony>>,
    /// Over the scripts, or over the steps once a ceremony is open.
    pub cursor: Cursor,
    /// The ceremony job running now (one at a time).
    pub running: Option<JobId>,
}

impl CeremonyView {
    pub fn progress_file(&self) -> Option<std::path::PathBuf> {
        self.ceremony.as_ref().map(|c| c.progress_path().to_owned())
    }
}

/// How far one image got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageStatus {
    Queued,
    Resolved,
    Signed,
    Done,
    Failed(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRow {
    pub image: String,
    pub digest: Option<String>,
    pub status: ImageStatus,
}

/// Who signed an image, as `image verify` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageSigner {
    pub key_id: String,
    pub verified: bool,
    pub annotations: Vec<(String, String)>,
    pub note: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageVerification {
    pub image: String,
    pub digest: String,
    pub signers: Vec<ImageSigner>,
}

#[derive(Clone, Debug, Default)]
pub struct ImagesView {
    pub rows: Vec<ImageRow>,
    pub cursor: Cursor,
    /// The key of the last batch.
    pub key: Option<String>,
    pub running: Option<JobId>,
    pub verification: Option<ImageVerification>,
    /// Set once the batch is done: (succeeded, failed).
    pub summary: Option<(usize, usize)>,
}

/// The chain status from `audit verify`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Chain {
    #[default]
    Unknown,
    Verifying,
    Verified {
        upto: u64,
        checkpoints: usize,
    },
    Broken {
        at: u64,
        message: String,
    },
    Failed(String),
}

impl Chain {
    pub fn from_report(r: &Report) -> Chain {
        match &r.problem {
            None => Chain::Verified {
                upto: r.verified,
                checkpoints: r.checkpoints_checked,
            },
            Some(p) => Chain::Broken {
                at: p.seq,
                message: p.message.clone(),
            },
        }
    }
}

/// A filter or search being applied over the index, a slice at a time so that a million
/// entries never hold up a frame.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// Rows not yet looked at are `0..remaining` (the scan walks from the newest down).
    pub remaining: usize,
}

#[derive(Clone, Debug, Default)]
pub struct AuditView {
    pub index: AuditIndex,
    pub load: Load,
    /// Entries read so far while loading.
    pub loading_entries: u64,
    pub filter: AuditFilter,
    /// Matching rows, newest first; `None` when no filter is set (every row, newest first).
    pub matches: Option<Vec<u32>>,
    pub scan: Option<Scan>,
    pub cursor: Cursor,
    pub chain: Chain,
}

impl AuditView {
    /// Rows the list shows now.
    pub fn visible_len(&self) -> usize {
        match &self.matches {
            Some(m) => m.len(),
            None => self.index.len(),
        }
    }
    /// The index row at list position `pos` (0 = newest).
    pub fn row_at(&self, pos: usize) -> Option<usize> {
        match &self.matches {
            Some(m) => m.get(pos).map(|&i| i as usize),
            None => self.index.len().checked_sub(pos + 1),
        }
    }
}

/// Where a worker waits for the person's answer.
#[derive(Debug)]
pub struct SecretReply(pub SyncSender<Option<Pin>>);
#[derive(Debug)]
pub struct ConfirmReply(pub SyncSender<bool>);

impl SecretReply {
    pub fn send(&self, pin: Option<Pin>) {
        // The worker may be gone (job cancelled): nothing to do then.
        let _ = self.0.send(pin);
    }
}
impl ConfirmReply {
    pub fn send(&self, yes: bool) {
        let _ = self.0.send(yes);
    }
}

/// What the core asks for, as the PIN modal shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretPrompt {
    pub kind: SecretKind,
    pub token: String,
    /// `PinStatus::describe()` of the token, shown before the person types.
    pub status: Option<String>,
    /// The next wrong entry could lock the token.
    pub risky: bool,
    /// The security-officer credential is a YubiKey's PUK (not a PKCS#11 SO PIN).
    pub puk: bool,
}

/// The most characters a PIN field takes. The buffer is allocated at this size once, so typing
/// never reallocates it and leaves no stray copy of a partial PIN behind.
pub const PIN_MAX: usize = 128;

pub struct PinModal {
    pub job: JobId,
    pub prompt: SecretPrompt,
    /// One field, or two (new PIN and repeat).
    pub fields: Vec<Zeroizing<String>>,
    pub focus: usize,
    pub error: Option<String>,
    pub reply: SecretReply,
}

impl PinModal {
    pub fn new(job: JobId, prompt: SecretPrompt, reply: SecretReply) -> Self {
        let n = match prompt.kind {
            SecretKind::NewUserPin | SecretKind::NewPassphrase | SecretKind::NewPuk => 2,
            _ => 1,
        };
        PinModal {
            job,
            prompt,
            fields: (0..n)
                .map(|_| Zeroizing::new(String::with_capacity(PIN_MAX)))
                .collect(),
            focus: 0,
            error: None,
            reply,
        }
    }
    /// Characters typed in each field (what the masked field shows).
    pub fn lengths(&self) -> Vec<usize> {
        self.fields.iter().map(|f| f.chars().count()).collect()
    }
}

impl std::fmt::Debug for PinModal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinModal")
            .field("job", &self.job)
            .field("prompt", &self.prompt)
            .field("lengths", &self.lengths())
            .finish_non_exhaustive()
    }
}

/// What answering "yes" does.
#[derive(Debug)]
pub enum OnConfirm {
    /// Tell the worker that asked.
    Reply(ConfirmReply),
    /// Run an action of the console.
    Action(Box<crate::tui::action::Action>),
}

#[derive(Debug)]
pub struct ConfirmModal {
    pub job: Option<JobId>,
    pub title: String,
    pub question: String,
    /// The destructive consequence, named (shown in the warning colour).
    pub loses: Option<String>,
    pub on_yes: OnConfirm,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FieldKind {
    Text { value: String },
    Choice { options: Vec<String>, index: usize },
    Toggle { on: bool },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub label: String,
    pub kind: FieldKind,
}

impl Field {
    pub fn text(label: &str, value: &str) -> Field {
        Field {
            label: label.into(),
            kind: FieldKind::Text {
                value: value.into(),
            },
        }
    }
    pub fn choice(label: &str, options: Vec<String>, index: usize) -> Field {
        Field {
            label: label.into(),
            kind: FieldKind::Choice { options, index },
        }
    }
    pub fn toggle(label: &str, on: bool) -> Field {
        Field {
            label: label.into(),
            kind: FieldKind::Toggle { on },
        }
    }
    pub fn value(&self) -> String {
        match &self.kind {
            FieldKind::Text { value } => value.trim().to_owned(),
            FieldKind::Choice { options, index } => {
                options.get(*index).cloned().unwrap_or_default()
            }
            FieldKind::Toggle { on } => on.to_string(),
        }
    }
    pub fn is_on(&self) -> bool {
        matches!(self.kind, FieldKind::Toggle { on: true })
    }
}

/// What a form is for; its submit turns the fields into this action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FormKind {
    Generate,
    Export { key: String, version: u32 },
    SignFile { key: String, version: u32 },
    InitToken,
    SignImages,
    VerifyImage,
    Search,
    Filter,
    StateChange { key: String, version: u32 },
    Rotate { key: String },
    Policy { key: String },
    Resign { key: String },
    BundleExport,
    PivRetries { token: String },
    CeremonyStart,
    CeremonyResume,
    CeremonyAck { person: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Form {
    pub kind: FormKind,
    pub title: String,
    pub fields: Vec<Field>,
    pub focus: usize,
    pub note: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug)]
pub enum Modal {
    Help,
    Error {
        title: String,
        message: String,
    },
    /// A result worth reading (a rotation, a bundle): closed with Enter or Esc.
    Info {
        title: String,
        lines: Vec<String>,
    },
    Pin(PinModal),
    Confirm(ConfirmModal),
    Form(Form),
}

/// A job the console is waiting for.
#[derive(Clone, Debug)]
pub struct Running {
    pub job: Job,
    pub cancel: CancelFlag,
    pub progress: Option<String>,
    pub started_tick: u64,
}

pub struct State {
    pub home: String,
    pub tab: Tab,
    pub tokens: TokensView,
    pub keys: KeysView,
    pub images: ImagesView,
    pub audit: AuditView,
    pub ceremony: CeremonyView,
    /// Modals, the top one active (a PIN request can arrive over an open help).
    pub modals: Vec<Modal>,
    pub jobs: BTreeMap<JobId, Running>,
    /// The newest request of each background kind; older results are stale.
    pub latest: BTreeMap<&'static str, JobId>,
    pub next_id: JobId,
    /// Requests for the workers, taken by the event loop after each update.
    pub outbox: Vec<Request>,
    pub message: Option<String>,
    pub last_error: Option<String>,
    pub quit: bool,
    /// Unix seconds, for ages; set by ticks (fixed in tests).
    pub now: i64,
    pub tick: u64,
    /// Terminal size (columns, rows).
    pub size: (u16, u16),
    pub no_color: bool,
    /// Registries to reach over plain HTTP, proposed in the image forms
    /// (`KEYWARD_INSECURE_REGISTRIES`, comma-separated).
    pub insecure_registries: String,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("tab", &self.tab)
            .field("modals", &self.modals)
            .field("jobs", &self.jobs)
            .finish_non_exhaustive()
    }
}

impl State {
    pub fn new(home: String, size: (u16, u16), now: i64) -> Self {
        State {
            home,
            tab: Tab::Tokens,
            tokens: TokensView::default(),
            keys: KeysView::default(),
            images: ImagesView::default(),
            audit: AuditView::default(),
            ceremony: CeremonyView {
                scripts: crate::ceremony::Source::builtins()
                    .map(|v| {
                        v.into_iter()
                            .map(|s| (s.script.name.clone(), s.script.summary.clone()))
                            .collect()
                    })
                    .unwrap_or_default(),
                ..Default::default()
            },
            modals: Vec::new(),
            jobs: BTreeMap::new(),
            latest: BTreeMap::new(),
            next_id: 1,
            outbox: Vec::new(),
            message: None,
            last_error: None,
            quit: false,
            now,
            tick: 0,
            size,
            no_color: false,
            insecure_registries: String::new(),
        }
    }

    /// Queues a job for a worker and returns its id.
    pub fn request(&mut self, job: Job) -> JobId {
        let id = self.next_id;
        self.next_id += 1;
        let cancel = CancelFlag::default();
        if let Some(kind) = background_kind(&job) {
            self.latest.insert(kind, id);
        }
        self.jobs.insert(
            id,
            Running {
                job: job.clone(),
                cancel: cancel.clone(),
                progress: None,
                started_tick: self.tick,
            },
        );
        self.outbox.push(Request { id, job, cancel });
        id
    }

    /// Jobs the person started that are still running.
    pub fn user_jobs(&self) -> impl Iterator<Item = (&JobId, &Running)> {
        self.jobs.iter().filter(|(_, r)| !r.job.is_background())
    }

    pub fn modal(&self) -> Option<&Modal> {
        self.modals.last()
    }
}

/// Background loads of one kind supersede each other.
pub fn background_kind(job: &Job) -> Option<&'static str> {
    match job {
        Job::ListTokens => Some("tokens"),
        Job::LoadKeys => Some("keys"),
        Job::LoadAudit | Job::AuditTail { .. } => Some("audit"),
        Job::VerifyAudit => Some("verify"),
        _ => None,
    }
}
