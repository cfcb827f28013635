//! Ceremonies: scripted, witnessed sequences of key operations that leave a signed transcript
//! chained into the audit log.
//!
//! A [`Ceremony`] is a plain state machine a front end drives one step at a time, without
//! blocking anything but [`Ceremony::run_step`] and [`Ceremony::finish`] (which talk to
//! tokens; a TUI runs them on its worker):
//!
//! ```text
//! load (or resume) ─> current() ─> acknowledge…() ─> run_step() ─┬─> current() … ─> finish()
//!                        ^                                       └─ Err: stopped, saved; resume
//! ```
//!
//! Every change is saved at once to the progress file (`DIR/progress.json`), so a failed or
//! interrupted ceremony resumes where it stopped ([`Ceremony::resume`]); steps that completed
//! are never run again, and a step that did part of its work (one token of several) skips
//! that part. Formats: docs/FORMATS.md "Ceremony scripts", "Participants file", "Ceremony
//! progress and transcripts".

mod ops;
pub mod participants;
pub mod script;
mod steps;
pub mod transcript;

pub use ops::interfaces_up;
pub use participants::{Participants, ParticipantsFile, Person};
pub use script::{Script, Source, StepKind};
pub use transcript::{SignedTranscript, Transcript, VerifyReport};

use crate::audit::{Event, Outcome};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::prompt::Prompter;
use crate::service::Keyward;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const PROGRESS_FORMAT: &str = "keyward-ceremony-progress/1";
pub const PROGRESS_FILE: &str = "progress.json";
pub const TRANSCRIPT_FILE: &str = "transcript.json";
pub const TRANSCRIPT_MD: &str = "transcript.md";

/// What went wrong with a ceremony, in words the participants can act on.
#[derive(Debug, thiserror::Error)]
pub enum CeremonyError {
    #[error("ceremony script: {0}")]
    Script(String),
    #[error("participants: {0}")]
    Participants(String),
    #[error("{0}")]
    Params(String),
    #[error("step {step} ({title}) needs the acknowledgement of {}; the ceremony stopped before the step and nothing was done", missing.join(", "))]
    MissingAcknowledgement {
        step: String,
        title: String,
        missing: Vec<String>,
        progress: PathBuf,
    },
    #[error("{0}")]
    Acknowledgement(String),
    #[error("step {index}/{total} {step} failed: {error}. The ceremony stopped; its state is saved in {}", progress.display())]
    StepFailed {
        step: String,
        index: usize,
        total: usize,
        error: String,
        code: i32,
        progress: PathBuf,
    },
    #[error("{0}")]
    Progress(String),
    #[error("the transcript does not verify: {0}")]
    Verify(String),
}

impl CeremonyError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CeremonyError::StepFailed { code, .. } => *code,
            CeremonyError::MissingAcknowledgement { .. } => 8,
            _ => 1,
        }
    }

    pub fn hint(&self) -> Option<String> {
        Some(match self {
            CeremonyError::MissingAcknowledgement { progress, step, .. } => format!(
                "in batch mode, declare the acknowledgement under [acknowledgements] {step} = [...] in the participants file, then `keyward ceremony run --resume {} --participants FILE`",
                progress.display()
            ),
            CeremonyError::StepFailed { progress, .. } => format!(
                "fix the cause, then continue with `keyward ceremony run --resume {}` (completed steps are not run again)",
                progress.display()
            ),
            CeremonyError::Verify(_) => {
                "do not trust this transcript or the files it names; compare with the copies the participants took away".into()
            }
            _ => return None,
        })
    }
}

/// How a participant acknowledged a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckMethod {
    /// They typed their name at the prompt (CLI or console).
    Typed,
    /// Declared in advance in the participants file (batch mode).
    Declared,
}

/// One acknowledgement of one attempt of a step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ack {
    pub person: String,
    pub role: String,
    pub time: String,
    pub method: AckMethod,
}

/// One try at a step: who acknowledged it, when it ran, how it ended, and the audit entries
/// it wrote (`audit_from..=audit_to`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attempt {
    pub acknowledgements: Vec<Ack>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<String>,
    /// `ok` or `failed`; none while it runs (or if it was interrupted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_from: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_to: Option<u64>,
}

/// A file a step produced (or read), by SHA-256.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    /// `public-key`, `backup`, `share`, `bundle`.
    pub kind: String,
    /// Relative to the ceremony directory when inside it, else absolute.
    pub path: String,
    pub sha256: String,
    pub bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Pending,
    /// Started and not finished: running now, or interrupted (a crash).
    Running,
    Done,
    Failed,
}

/// A step's record in the progress file (and, once done, in the transcript).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepRecord {
    pub id: String,
    pub kind: StepKind,
    pub title: String,
    pub status: StepStatus,
    pub attempts: Vec<Attempt>,
    /// What the step produced (key ids, versions, backup id, ...); `{{id.name}}` in later steps.
    pub outputs: BTreeMap<String, String>,
    pub artifacts: Vec<Artifact>,
}

/// Where the ceremony stopped, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stop {
    pub step: String,
    pub time: String,
    pub reason: String,
}

/// An audit log position.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditMark {
    pub seq: u64,
    pub hash: String,
}

/// The completed ceremony's transcript.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Finished {
    pub transcript: PathBuf,
    pub markdown: PathBuf,
    pub sha256: String,
    /// `key/version` that signed it.
    pub signed_by: String,
    pub key_id: String,
    /// The `ceremony_completed` audit entry.
    pub audit_seq: u64,
}

/// `DIR/progress.json`: everything needed to resume, including the script's exact text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Progress {
    pub format: String,
    pub run_id: String,
    pub ceremony: String,
    pub script_origin: String,
    pub script_sha256: String,
    pub script: String,
    pub params: BTreeMap<String, String>,
    pub participants: Participants,
    pub dir: PathBuf,
    /// The keyward home the ceremony runs in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<String>,
    /// The audit head before the ceremony's first entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_start: Option<AuditMark>,
    pub steps: Vec<StepRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<Stop>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<Finished>,
}

/// Where a ceremony stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// Step `index` is next (acknowledge, then run it).
    Next {
        index: usize,
    },
    /// Every step is done: sign and write the transcript with [`Ceremony::finish`].
    ReadyToFinish,
    Completed(Finished),
}

/// A step as a front end shows it: texts rendered, who must acknowledge, who did.
#[derive(Clone, Debug, Serialize)]
pub struct StepView {
    /// 1-based.
    pub number: usize,
    pub total: usize,
    pub id: String,
    pub kind: StepKind,
    pub title: String,
    pub instructions: String,
    pub checklist: Vec<String>,
    /// (person, role) of everyone who must acknowledge it.
    pub required: Vec<(String, String)>,
    /// Acknowledgements of the current attempt.
    pub acknowledged: Vec<Ack>,
    pub status: StepStatus,
    pub attempts: usize,
    pub last_error: Option<String>,
    pub outputs: BTreeMap<String, String>,
}

/// What [`Ceremony::run_step`] did.
#[derive(Clone, Debug, Serialize)]
pub struct StepReport {
    pub number: usize,
    pub total: usize,
    pub id: String,
    pub title: String,
    pub outputs: BTreeMap<String, String>,
    pub artifacts: Vec<Artifact>,
}

/// A ceremony in progress: its script, the saved progress, and where that is saved.
#[derive(Clone, Debug)]
pub struct Ceremony {
    source: Source,
    progress: Progress,
    path: PathBuf,
}

fn now() -> String {
    crate::audit::now_rfc3339()
}

fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).map_err(|e| Error::io(p, e))
}

impl Ceremony {
    /// Checks a script against its parameters and participants and prepares a run in `dir`
    /// (which must not exist yet, or be empty). Writes nothing: [`Ceremony::start`] (or the
    /// first [`Ceremony::run_step`]) creates the directory and records the start.
    pub fn load(
        source: Source,
        params: &BTreeMap<String, String>,
        participants: Participants,
        dir: &Path,
    ) -> Result<Ceremony> {
        let script = &source.script;
        let params = script
            .resolve_params(params)
            .map_err(CeremonyError::Params)?;
        let dir = absolute(dir)?;
        if dir.exists() {
            let empty = std::fs::read_dir(&dir)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
            if !empty {
                return Err(CeremonyError::Progress(format!(
                    "{} exists and is not empty: a ceremony gets a new directory (to continue one, use --resume {})",
                    dir.display(),
                    dir.join(PROGRESS_FILE).display()
                ))
                .into());
            }
        }
        let run_id = hex::encode(rand::random::<[u8; 8]>());
        let steps = script
            .steps
            .iter()
            .map(|s| StepRecord {
                id: s.id.clone(),
                kind: s.kind,
                title: s.title.clone(),
                status: StepStatus::Pending,
                attempts: Vec::new(),
                outputs: BTreeMap::new(),
                artifacts: Vec::new(),
            })
            .collect();
        let c = Ceremony {
            progress: Progress {
                format: PROGRESS_FORMAT.into(),
                run_id,
                ceremony: script.name.clone(),
                script_origin: source.origin.clone(),
                script_sha256: source.sha256(),
                script: source.text.clone(),
                params,
                participants,
                dir: dir.clone(),
                home: None,
                started: None,
                audit_start: None,
                steps,
                stopped: None,
                finished: None,
            },
            path: dir.join(PROGRESS_FILE),
            source,
        };
        c.progress
            .participants
            .check(&c.source.script, &|n| c.lookup(n))?;
        Ok(c)
    }

    /// Reopens a ceremony from its progress file.
    pub fn resume(progress_file: &Path) -> Result<Ceremony> {
        let text = std::fs::read_to_string(progress_file).map_err(|e| {
            CeremonyError::Progress(format!("cannot read {}: {e}", progress_file.display()))
        })?;
        let progress: Progress = serde_json::from_str(&text).map_err(|e| {
            CeremonyError::Progress(format!(
                "{} is not a keyward ceremony progress file: {e}",
                progress_file.display()
            ))
        })?;
        if progress.format != PROGRESS_FORMAT {
            return Err(CeremonyError::Progress(format!(
                "{}: format {:?} is not {PROGRESS_FORMAT:?}",
                progress_file.display(),
                progress.format
            ))
            .into());
        }
        let source = Source::parse(&progress.script_origin, &progress.script)?;
        if source.sha256() != progress.script_sha256 {
            return Err(CeremonyError::Progress(format!(
                "{}: the script inside does not match its recorded SHA-256",
                progress_file.display()
            ))
            .into());
        }
        if source.script.steps.len() != progress.steps.len()
            || source
                .script
                .steps
                .iter()
                .zip(&progress.steps)
                .any(|(a, b)| a.id != b.id || a.kind != b.kind)
        {
            return Err(CeremonyError::Progress(format!(
                "{}: the steps do not match the script",
                progress_file.display()
            ))
            .into());
        }
        Ok(Ceremony {
            source,
            path: absolute(progress_file)?,
            progress,
        })
    }

    /// Refuses participants that differ from the ones declared at the start (a resumed
    /// ceremony may bring new acknowledgements, not new people).
    pub fn check_same_participants(&self, p: &Participants) -> Result<()> {
        if *p != self.progress.participants {
            return Err(CeremonyError::Participants(
                "these participants differ from the ones declared when the ceremony started; a resumed ceremony keeps its people (only acknowledgements may be added)".into(),
            )
            .into());
        }
        Ok(())
    }

    pub fn script(&self) -> &Script {
        &self.source.script
    }
    pub fn source(&self) -> &Source {
        &self.source
    }
    pub fn progress(&self) -> &Progress {
        &self.progress
    }
    pub fn progress_path(&self) -> &Path {
        &self.path
    }
    pub fn dir(&self) -> &Path {
        &self.progress.dir
    }
    pub fn run_id(&self) -> &str {
        &self.progress.run_id
    }

    /// Writes the progress file (atomically), creating the ceremony directory if needed.
    pub fn save(&self) -> Result<()> {
        if !self.progress.dir.exists() {
            fsutil::create_private_dir(&self.progress.dir)
                .map_err(|e| Error::io(&self.progress.dir, e))?;
        }
        let bytes = serde_json::to_vec_pretty(&self.progress)
            .map_err(|e| Error::Other(format!("cannot encode the progress: {e}")))?;
        fsutil::write_atomic(&self.path, &bytes, true).map_err(|e| Error::io(&self.path, e))
    }

    /// The value of a template name: a parameter, a built-in, or `step.output`.
    pub fn lookup(&self, name: &str) -> Option<String> {
        if let Some(v) = self.progress.params.get(name) {
            return Some(v.clone());
        }
        match name {
            "dir" => return Some(self.progress.dir.display().to_string()),
            "run_id" => return Some(self.progress.run_id.clone()),
            "ceremony" => return Some(self.progress.ceremony.clone()),
            "administrator" | "custodians" | "witnesses" => {
                return Some(self.progress.participants.names(name))
            }
            _ => {}
        }
        let (step, out) = name.split_once('.')?;
        self.progress
            .steps
            .iter()
            .find(|s| s.id == step)?
            .outputs
            .get(out)
            .cloned()
    }

    /// Renders a template of the script (placeholders were checked when it was parsed).
    fn render(&self, t: &str) -> std::result::Result<String, String> {
        script::render(t, &|n| self.lookup(n))
    }

    fn render_or_raw(&self, t: &str) -> String {
        script::render(t, &|n| self.lookup(n)).unwrap_or_else(|_| t.to_owned())
    }

    /// Where the ceremony stands.
    pub fn status(&self) -> Status {
        if let Some(f) = &self.progress.finished {
            return Status::Completed(f.clone());
        }
        match self.current_index() {
            Some(index) => Status::Next { index },
            None => Status::ReadyToFinish,
        }
    }

    /// The index of the first step not done.
    pub fn current_index(&self) -> Option<usize> {
        self.progress
            .steps
            .iter()
            .position(|s| s.status != StepStatus::Done)
    }

    /// Who must acknowledge step `index`: (person, role).
    pub fn required(&self, index: usize) -> Vec<(String, String)> {
        let Some(spec) = self.source.script.steps.get(index) else {
            return Vec::new();
        };
        spec.acknowledge
            .iter()
            .flat_map(|role| {
                self.progress
                    .participants
                    .role(role)
                    .iter()
                    .map(move |p| (p.name.clone(), participants::role_word(role).to_owned()))
            })
            .collect()
    }

    /// The attempt acknowledgements go to: the last one if it has not run yet.
    fn open_attempt(&mut self, index: usize) -> &mut Attempt {
        let step = &mut self.progress.steps[index];
        if step.attempts.last().is_none_or(|a| a.started.is_some()) {
            step.attempts.push(Attempt::default());
        }
        let last = step.attempts.len() - 1;
        &mut step.attempts[last]
    }

    fn current_acks(&self, index: usize) -> Vec<Ack> {
        match self.progress.steps[index].attempts.last() {
            Some(a) if a.started.is_none() => a.acknowledgements.clone(),
            _ => Vec::new(),
        }
    }

    /// A step, rendered for display.
    pub fn view(&self, index: usize) -> Option<StepView> {
        let spec = self.source.script.steps.get(index)?;
        let rec = &self.progress.steps[index];
        Some(StepView {
            number: index + 1,
            total: self.progress.steps.len(),
            id: spec.id.clone(),
            kind: spec.kind,
            title: self.render_or_raw(&spec.title),
            instructions: self.render_or_raw(&spec.instructions),
            checklist: spec
                .checklist
                .iter()
                .map(|c| self.render_or_raw(c))
                .collect(),
            required: self.required(index),
            acknowledged: self.current_acks(index),
            status: rec.status,
            attempts: rec.attempts.iter().filter(|a| a.started.is_some()).count(),
            last_error: rec.attempts.iter().rev().find_map(|a| a.error.clone()),
            outputs: rec.outputs.clone(),
        })
    }

    /// The next step to acknowledge and run (`next_step`), if any.
    pub fn current(&self) -> Option<StepView> {
        self.view(self.current_index()?)
    }

    /// Every step.
    pub fn steps(&self) -> Vec<StepView> {
        (0..self.progress.steps.len())
            .filter_map(|i| self.view(i))
            .collect()
    }

    /// Who still has to acknowledge the current step.
    pub fn missing(&self) -> Vec<(String, String)> {
        let Some(i) = self.current_index() else {
            return Vec::new();
        };
        let acks = self.current_acks(i);
        self.required(i)
            .into_iter()
            .filter(|(p, _)| !acks.iter().any(|a| a.person == *p))
            .collect()
    }

    /// Records `person`'s acknowledgement of the current step (saved at once).
    pub fn acknowledge(&mut self, person: &str, method: AckMethod) -> Result<()> {
        let index = self.current_index().ok_or_else(|| {
            CeremonyError::Acknowledgement("every step is done; nothing to acknowledge".into())
        })?;
        let step = self.progress.steps[index].id.clone();
        let Some((_, role)) = self.required(index).into_iter().find(|(p, _)| p == person) else {
            let who = self.progress.participants.role_of(person);
            return Err(CeremonyError::Acknowledgement(match who {
                Some(r) => format!(
                    "step {step} is not acknowledged by the {}; it needs {}",
                    r,
                    self.required(index)
                        .iter()
                        .map(|(p, r)| format!("{p} ({r})"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                None => format!("{person:?} is not a participant of this ceremony"),
            })
            .into());
        };
        let attempt = self.open_attempt(index);
        if attempt.acknowledgements.iter().any(|a| a.person == person) {
            return Ok(());
        }
        attempt.acknowledgements.push(Ack {
            person: person.into(),
            role,
            time: now(),
            method,
        });
        self.save()
    }

    /// Records an acknowledgement typed at a prompt: `typed` must be the person's name.
    pub fn acknowledge_typed(&mut self, person: &str, typed: &str) -> Result<()> {
        if typed.trim() != person {
            return Err(CeremonyError::Acknowledgement(format!(
                "{person} must type their own name to acknowledge; got {:?}",
                typed.trim()
            ))
            .into());
        }
        self.acknowledge(person, AckMethod::Typed)
    }

    /// Batch mode: applies the acknowledgements declared for the current step (`declared`:
    /// step id, or `*`, to names). Returns who was added.
    pub fn acknowledge_declared(
        &mut self,
        declared: &BTreeMap<String, Vec<String>>,
    ) -> Result<Vec<String>> {
        let Some(index) = self.current_index() else {
            return Ok(Vec::new());
        };
        let step = self.progress.steps[index].id.clone();
        let names: Vec<&String> = declared
            .get(&step)
            .into_iter()
            .chain(declared.get("*"))
            .flatten()
            .collect();
        let mut added = Vec::new();
        for (person, _) in self.missing() {
            if names.contains(&&person) {
                self.acknowledge(&person, AckMethod::Declared)?;
                added.push(person);
            }
        }
        Ok(added)
    }

    /// Creates the ceremony directory and records `ceremony_started` (once).
    pub fn start(&mut self, kw: &Keyward) -> Result<()> {
        if self.progress.started.is_some() {
            if let Some(h) = &self.progress.home {
                if absolute(kw.home().dir())? != *h {
                    return Err(CeremonyError::Progress(format!(
                        "this ceremony runs in the home {}, not {}",
                        h.display(),
                        kw.home().dir().display()
                    ))
                    .into());
                }
            }
            return Ok(());
        }
        fsutil::create_private_dir(&self.progress.dir)
            .map_err(|e| Error::io(&self.progress.dir, e))?;
        let head = kw.audit().head()?;
        kw.record(
            Event::CeremonyStarted {
                ceremony: self.progress.ceremony.clone(),
                run_id: self.progress.run_id.clone(),
                script_sha256: self.progress.script_sha256.clone(),
                participants: self
                    .progress
                    .participants
                    .everyone()
                    .iter()
                    .map(|(r, p)| format!("{} ({})", p.name, participants::role_word(r)))
                    .collect(),
            },
            Outcome::Ok,
            None,
        )?;
        self.progress.home = Some(absolute(kw.home().dir())?);
        self.progress.started = Some(now());
        self.progress.audit_start = Some(AuditMark {
            seq: head.seq,
            hash: head.hash,
        });
        self.save()
    }

    /// Runs the current step: refuses while an acknowledgement is missing; records the step
    /// (`ceremony_step` started, then ok or failed) around the core operation. A failure
    /// stops the ceremony with its state saved.
    pub fn run_step(&mut self, kw: &Keyward, prompter: &mut dyn Prompter) -> Result<StepReport> {
        let index = self.current_index().ok_or_else(|| {
            CeremonyError::Progress("every step is done: finish the ceremony".into())
        })?;
        let total = self.progress.steps.len();
        let step_id = self.progress.steps[index].id.clone();
        let title = self.render_or_raw(&self.source.script.steps[index].title);
        let missing = self.missing();
        if !missing.is_empty() {
            let missing: Vec<String> = missing.iter().map(|(p, r)| format!("{p} ({r})")).collect();
            self.progress.stopped = Some(Stop {
                step: step_id.clone(),
                time: now(),
                reason: format!("waiting for the acknowledgement of {}", missing.join(", ")),
            });
            self.save()?;
            return Err(CeremonyError::MissingAcknowledgement {
                step: step_id,
                title,
                missing,
                progress: self.path.clone(),
            }
            .into());
        }
        self.start(kw)?;
        let kind = self.progress.steps[index].kind;
        let acks = self.current_acks(index);
        let event = Event::CeremonyStep {
            run_id: self.progress.run_id.clone(),
            step: step_id.clone(),
            kind: kind.as_str().into(),
            acknowledged_by: acks
                .iter()
                .map(|a| format!("{} ({})", a.person, a.role))
                .collect(),
        };
        let from = kw.record(event.clone(), Outcome::Started, None)?;
        {
            let attempt = self.open_attempt(index);
            attempt.started = Some(now());
            attempt.audit_from = Some(from);
        }
        self.progress.steps[index].status = StepStatus::Running;
        self.progress.stopped = None;
        self.save()?;
        let result = steps::execute(self, index, kw, prompter);
        match result {
            Ok(()) => {
                let to = kw.record(event, Outcome::Ok, None)?;
                let step = &mut self.progress.steps[index];
                step.status = StepStatus::Done;
                if let Some(a) = step.attempts.last_mut() {
                    a.finished = Some(now());
                    a.outcome = Some("ok".into());
                    a.audit_to = Some(to);
                }
                self.save()?;
                let step = &self.progress.steps[index];
                Ok(StepReport {
                    number: index + 1,
                    total,
                    id: step.id.clone(),
                    title,
                    outputs: step.outputs.clone(),
                    artifacts: step.artifacts.clone(),
                })
            }
            Err(e) => {
                let message = e.to_string();
                // Best effort: the failure is reported whether or not the log takes it.
                let to = kw
                    .record(event, Outcome::Failed, Some(message.clone()))
                    .ok();
                let step = &mut self.progress.steps[index];
                step.status = StepStatus::Failed;
                if let Some(a) = step.attempts.last_mut() {
                    a.finished = Some(now());
                    a.outcome = Some("failed".into());
                    a.error = Some(message.clone());
                    a.audit_to = to;
                }
                self.progress.stopped = Some(Stop {
                    step: step_id.clone(),
                    time: now(),
                    reason: message.clone(),
                });
                self.save()?;
                Err(CeremonyError::StepFailed {
                    step: step_id,
                    index: index + 1,
                    total,
                    error: message,
                    code: e.exit_code(),
                    progress: self.path.clone(),
                }
                .into())
            }
        }
    }

    pub(crate) fn set_output(&mut self, index: usize, name: &str, value: impl Into<String>) {
        self.progress.steps[index]
            .outputs
            .insert(name.into(), value.into());
    }

    pub(crate) fn output(&self, index: usize, name: &str) -> Option<&str> {
        self.progress.steps[index]
            .outputs
            .get(name)
            .map(String::as_str)
    }

    /// Records the digest of a file the step produced or read.
    pub(crate) fn add_artifact(
        &mut self,
        index: usize,
        kind: &str,
        path: &Path,
        note: Option<String>,
    ) -> Result<()> {
        let (sha256, bytes) = transcript::file_digest(path)?;
        let shown = match path.strip_prefix(&self.progress.dir) {
            Ok(rel) => rel.display().to_string(),
            Err(_) => absolute(path)?.display().to_string(),
        };
        let artifacts = &mut self.progress.steps[index].artifacts;
        artifacts.retain(|a| a.path != shown);
        artifacts.push(Artifact {
            kind: kind.into(),
            path: shown,
            sha256,
            bytes,
            note,
        });
        Ok(())
    }

    /// The transcript as it stands (unsigned): every step, who acknowledged it and when, the
    /// outputs and digests.
    pub fn transcript(&self) -> Transcript {
        transcript::build(self)
    }

    /// Signs the transcript with the script's key, writes `transcript.json` and its Markdown
    /// rendering, and records `ceremony_completed` with the transcript's SHA-256 before
    /// reporting success.
    pub fn finish(&mut self, kw: &Keyward, prompter: &mut dyn Prompter) -> Result<Finished> {
        if let Some(f) = &self.progress.finished {
            return Ok(f.clone());
        }
        if let Some(i) = self.current_index() {
            return Err(CeremonyError::Progress(format!(
                "step {} ({}) is not done yet",
                i + 1,
                self.progress.steps[i].id
            ))
            .into());
        }
        self.start(kw)?;
        let finished = transcript::sign_and_write(self, kw, prompter)?;
        self.progress.finished = Some(finished.clone());
        self.progress.stopped = None;
        self.save()?;
        Ok(finished)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::home::Home;
    use crate::prompt::FixedPrompter;

    const SCRIPT: &str = r#"
format = "keyward-ceremony/1"
name = "tiny"
title = "A tiny ceremony"

[roles.administrator]
min = "1"
max = "1"
[roles.witnesses]
min = "1"

[params.key]
default = "ceremony-key"

[transcript]
sign_with = "{{key}}"
sign_version = "{{gen.version}}"

[[step]]
id = "gen"
kind = "generate"
title = "Generate {{key}}"
checklist = ["key id read aloud by {{witnesses}}"]
acknowledge = ["administrator", "witnesses"]
[step.with]
key = "{{key}}"
algorithm = "ed25519"

[[step]]
id = "look"
kind = "confirm"
title = "Look at {{gen.key_id}}"
acknowledge = ["witnesses"]
"#;

    fn person(name: &str) -> Person {
        Person {
            name: name.into(),
            recipient: None,
            share: None,
            identity: None,
        }
    }

    #[test]
    fn a_front_end_drives_a_ceremony_step_by_step_and_resumes_it() {
        let d = tempfile::tempdir().unwrap();
        let kw = Keyward::open(Home::at(d.path().join("home"))).unwrap();
        let mut prompter = FixedPrompter {
            user_pin: None,
            so_pin: None,
            passphrase: Some("correct horse battery".into()),
            confirm: false,
        };
        let mut people = Participants::default();
        people.add("administrator", person("ada")).unwrap();
        people.add("witnesses", person("walter")).unwrap();
        let source = Source::parse("test", SCRIPT).unwrap();
        let dir = d.path().join("run");
        let mut c = Ceremony::load(source, &BTreeMap::new(), people.clone(), &dir).unwrap();
        assert!(!dir.exists(), "load wrote something");

        let v = c.current().unwrap();
        assert_eq!((v.number, v.total, v.id.as_str()), (1, 2, "gen"));
        assert_eq!(v.title, "Generate ceremony-key");
        assert_eq!(v.checklist, ["key id read aloud by walter"]);
        assert_eq!(
            c.missing(),
            [
                ("ada".to_string(), "administrator".to_string()),
                ("walter".to_string(), "witness".to_string())
            ]
        );
        let e = c.acknowledge_typed("ada", "Ada").unwrap_err().to_string();
        assert!(e.contains("own name"), "{e}");
        let e = c.acknowledge("mallory", AckMethod::Typed).unwrap_err();
        assert!(e.to_string().contains("not a participant"), "{e}");
        c.acknowledge_typed("ada", " ada ").unwrap();
        let e = c.run_step(&kw, &mut prompter).unwrap_err();
        assert!(
            matches!(&e, Error::Ceremony(CeremonyError::MissingAcknowledgement { missing, .. }) if missing == &["walter (witness)"]),
            "{e}"
        );
        assert!(
            kw.audit().entries().unwrap().is_empty(),
            "a refused step wrote to the log"
        );
        c.acknowledge("walter", AckMethod::Declared).unwrap();
        let r = c.run_step(&kw, &mut prompter).unwrap();
        let key_id = r.outputs["key_id"].clone();
        assert_eq!(r.artifacts[0].path, "ceremony-key-1.pub.pem");

        // The saved progress resumes where the ceremony stands.
        let mut c = Ceremony::resume(&dir.join(PROGRESS_FILE)).unwrap();
        c.check_same_participants(&people).unwrap();
        assert_eq!(c.status(), Status::Next { index: 1 });
        assert_eq!(c.current().unwrap().title, format!("Look at {key_id}"));
        let e = c
            .acknowledge("ada", AckMethod::Typed)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not acknowledged by the administrator"), "{e}");
        c.acknowledge("walter", AckMethod::Typed).unwrap();
        c.run_step(&kw, &mut prompter).unwrap();
        assert_eq!(c.status(), Status::ReadyToFinish);
        let f = c.finish(&kw, &mut prompter).unwrap();
        assert_eq!(f.signed_by, "ceremony-key/1");
        assert_eq!(f.key_id, key_id);
        assert!(matches!(c.status(), Status::Completed(_)));

        let report = transcript::verify(&f.transcript, None, Some(&kw)).unwrap();
        assert!(report.ok(), "{:?}", report.problems);
        assert_eq!(report.signer, "known");
        assert_eq!(report.audit_entry, Some(f.audit_seq));
        let t = c.transcript();
        assert_eq!(t.steps[0].attempts[0].acknowledgements.len(), 2);
        assert_eq!(
            t.steps[0].attempts[0].acknowledgements[1].method,
            AckMethod::Declared
        );
    }
}
