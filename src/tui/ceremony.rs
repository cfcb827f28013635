//! The Ceremony screen's forms and confirmations. The ceremony itself (`crate::ceremony`) is
//! driven on a worker: every job reopens it from its progress file, acts, saves, and hands
//! the saved state back to the screen.

use crate::ceremony::Status;
use crate::tui::action::Action;
use crate::tui::job::Job;
use crate::tui::state::{Field, Form, FormKind, Modal, State};
use std::path::PathBuf;

fn form(state: &mut State, kind: FormKind, title: &str, fields: Vec<Field>, note: &str) {
    state.modals.push(Modal::Form(Form {
        kind,
        title: title.into(),
        fields,
        focus: 0,
        note: Some(note.into()),
        error: None,
    }));
}

fn busy(state: &mut State) -> bool {
    if state.ceremony.running.is_some() {
        state.message = Some("a ceremony step is running: wait for it".into());
        return true;
    }
    false
}

/// `o`: a shipped script (or a file), the participants file, parameters, a new directory.
pub fn open_start(state: &mut State) {
    if busy(state) {
        return;
    }
    let mut scripts: Vec<String> = state
        .ceremony
        .scripts
        .iter()
        .map(|(n, _)| n.clone())
        .collect();
    scripts.push("file".into());
    let selected = if state.ceremony.ceremony.is_none() {
        state.ceremony.cursor.selected.min(scripts.len() - 1)
    } else {
        0
    };
    form(
        state,
        FormKind::CeremonyStart,
        "Start a ceremony",
        vec![
            Field::choice("Script", scripts, selected),
            Field::text("Script file", ""),
            Field::text("Participants", "participants.toml"),
            Field::text("Parameters", ""),
            Field::text("Directory", "ceremony"),
        ],
        "Script file: only with Script = file. Participants: the TOML file naming the administrator, custodians (with age recipients) and witnesses. Parameters: NAME=VALUE separated by spaces (`keyward ceremony show NAME` lists them). Directory: new or empty; it receives the progress, backup, shares, bundle and transcript",
    );
}

/// `O`: reopen a ceremony from its progress file.
pub fn open_resume(state: &mut State) {
    if busy(state) {
        return;
    }
    let default = state
        .ceremony
        .progress_file()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "ceremony/progress.json".into());
    form(
        state,
        FormKind::CeremonyResume,
        "Resume a ceremony",
        vec![Field::text("Progress file", &default)],
        "DIR/progress.json of a ceremony started here or with `keyward ceremony run`",
    );
}

/// `a`: the first participant who has not acknowledged yet types their own name.
pub fn open_ack(state: &mut State) {
    if busy(state) {
        return;
    }
    let Some(c) = &state.ceremony.ceremony else {
        state.message = Some("no ceremony open: o starts one, O resumes one".into());
        return;
    };
    let missing = c.missing();
    let Some(step) = c.current() else {
        state.message = Some("every step is done: f signs the transcript".into());
        return;
    };
    if missing.is_empty() {
        state.message = Some(format!(
            "step {} is acknowledged by everyone it names: n runs it",
            step.number
        ));
        return;
    }
    let names: Vec<String> = missing.iter().map(|(p, _)| p.clone()).collect();
    let (person, role) = missing[0].clone();
    form(
        state,
        FormKind::CeremonyAck { person: person.clone() },
        &format!("Step {}/{}: {}", step.number, step.total, step.title),
        vec![
            Field::choice("Participant", names, 0),
            Field::text("Type your name", ""),
        ],
        &format!(
            "{person} ({role}): by typing your own name you confirm you have read this step and checked its checklist. Still to acknowledge: {}",
            missing
                .iter()
                .map(|(p, r)| format!("{p} ({r})"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
}

/// `n`: run the current step once everyone it names has acknowledged it.
pub fn run_step(state: &mut State) -> Option<Action> {
    if busy(state) {
        return None;
    }
    let Some(c) = &state.ceremony.ceremony else {
        state.message = Some("no ceremony open: o starts one, O resumes one".into());
        return None;
    };
    let Some(step) = c.current() else {
        state.message = Some("every step is done: f signs the transcript".into());
        return None;
    };
    let missing = c.missing();
    if !missing.is_empty() {
        state.message = Some(format!(
            "step {} still needs the acknowledgement of {} (a)",
            step.number,
            missing
                .iter()
                .map(|(p, r)| format!("{p} ({r})"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        return None;
    }
    Some(Action::Confirm {
        title: format!("Step {}/{}", step.number, step.total),
        question: format!(
            "Run \"{}\" now? Acknowledged by {}.",
            step.title,
            step.acknowledged
                .iter()
                .map(|a| format!("{} ({})", a.person, a.role))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        loses: None,
        job: Box::new(Job::CeremonyStep {
            progress: c.progress_path().to_owned(),
        }),
    })
}

/// `f`: sign the transcript and chain it into the audit log.
pub fn finish(state: &mut State) -> Option<Action> {
    if busy(state) {
        return None;
    }
    let Some(c) = &state.ceremony.ceremony else {
        state.message = Some("no ceremony open".into());
        return None;
    };
    match c.status() {
        Status::ReadyToFinish => Some(Action::Confirm {
            title: "Finish the ceremony".into(),
            question: format!(
                "Sign the transcript of {} and record its hash in the audit log?",
                c.progress().ceremony
            ),
            loses: None,
            job: Box::new(Job::CeremonyFinish {
                progress: c.progress_path().to_owned(),
            }),
        }),
        Status::Completed(f) => {
            state.message = Some(format!(
                "already completed: transcript {}",
                f.transcript.display()
            ));
            None
        }
        Status::Next { index } => {
            state.message = Some(format!(
                "step {} of {} is not done yet",
                index + 1,
                c.progress().steps.len()
            ));
            None
        }
    }
}

/// What a ceremony form stands for.
pub fn submit(state: &State, form: &Form) -> Option<Result<Action, String>> {
    let v = |i: usize| form.fields.get(i).map(Field::value).unwrap_or_default();
    Some(match &form.kind {
        FormKind::CeremonyStart => (|| {
            let script = match v(0) {
                f if f == "file" => {
                    let file = v(1);
                    if file.is_empty() {
                        return Err("name the script file (or choose a shipped script)".into());
                    }
                    file
                }
                name => name,
            };
            let participants = v(2);
            if participants.is_empty() {
                return Err("name the participants file".into());
            }
            let mut params = Vec::new();
            for p in v(3).split_whitespace() {
                let Some((k, val)) = p.split_once('=') else {
                    return Err(format!("parameter {p:?} is not NAME=VALUE"));
                };
                params.push((k.to_owned(), val.to_owned()));
            }
            let dir = v(4);
            if dir.is_empty() {
                return Err("name the ceremony directory".into());
            }
            Ok(Action::Run(Box::new(Job::CeremonyOpen {
                script,
                participants: PathBuf::from(participants),
                params,
                dir: PathBuf::from(dir),
            })))
        })(),
        FormKind::CeremonyResume => {
            let p = v(0);
            if p.is_empty() {
                Err("name the progress file".into())
            } else {
                Ok(Action::Run(Box::new(Job::CeremonyResume {
                    progress: PathBuf::from(p),
                })))
            }
        }
        FormKind::CeremonyAck { .. } => (|| {
            let person = v(0);
            let typed = v(1);
            if typed.is_empty() {
                return Err(format!("{person}: type your own name"));
            }
            if typed != person {
                return Err(format!(
                    "that is not {person}'s name: each participant types their own"
                ));
            }
            let progress = state.ceremony.progress_file().ok_or("no ceremony open")?;
            Ok(Action::Run(Box::new(Job::CeremonyAck {
                progress,
                person,
                typed,
            })))
        })(),
        _ => return None,
    })
}
