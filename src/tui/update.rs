//! `update(&mut State, Action) -> Option<Action>`: every change to the console's state, pure
//! and synchronous. Work for the token, the disk or the network is queued as a request in
//! `state.outbox`; its result comes back later as another action.

use crate::audit::Outcome;
use crate::keys::{check_key_name, State as KeyState};
use crate::prompt::{Confirm, SecretKind};
use crate::secret::Pin;
use crate::token::Algorithm;
use crate::tui::action::{Action, InputKey};
use crate::tui::ceremony;
use crate::tui::components;
use crate::tui::job::{Job, JobId};
use crate::tui::lifecycle;
use crate::tui::state::audit::{AuditFilter, Compiled};
use crate::tui::state::{
    background_kind, Chain, ConfirmModal, Field, FieldKind, Form, FormKind, ImageRow, ImageStatus,
    Load, Modal, OnConfirm, PinModal, Scan, State, Tab, PIN_MAX,
};
use std::path::PathBuf;

/// Audit rows a scan step looks at: ids only, or ids and text.
const SCAN_STEP_IDS: usize = 400_000;
const SCAN_STEP_TEXT: usize = 60_000;
/// How many entries the Keys detail pane lists.
pub const HISTORY_MAX: usize = 100;
/// Ticks (250 ms) between looks for entries other processes appended.
const TAIL_EVERY: u64 = 8;

/// The requests the console makes when it starts.
pub fn init(state: &mut State) {
    state.request(Job::ListTokens);
    state.request(Job::LoadKeys);
    state.request(Job::LoadAudit);
    state.audit.chain = Chain::Verifying;
    state.request(Job::VerifyAudit);
}

pub fn update(state: &mut State, action: Action) -> Option<Action> {
    match action {
        Action::Quit => {
            quit(state);
            None
        }
        Action::SelectTab(t) => {
            state.tab = t;
            None
        }
        Action::NextTab => {
            state.tab = Tab::from_index(state.tab.index() + 1);
            None
        }
        Action::PrevTab => {
            state.tab = Tab::from_index(state.tab.index() + Tab::ALL.len() - 1);
            None
        }
        Action::Up => move_cursor(state, -1),
        Action::Down => move_cursor(state, 1),
        Action::PageUp => {
            let h = components::list_rows(state.tab, state.size) as isize;
            move_cursor(state, -h)
        }
        Action::PageDown => {
            let h = components::list_rows(state.tab, state.size) as isize;
            move_cursor(state, h)
        }
        Action::Top => move_cursor(state, isize::MIN / 2),
        Action::Bottom => move_cursor(state, isize::MAX / 2),
        Action::Help => {
            if matches!(state.modal(), Some(Modal::Help)) {
                state.modals.pop();
            } else {
                state.modals.push(Modal::Help);
            }
            None
        }
        Action::Input(k) => input(state, k),
        Action::Resize(w, h) => {
            state.size = (w, h);
            follow_all(state);
            None
        }
        Action::Click(col, row) => {
            if row == 0 {
                if let Some(t) = components::tab_at(col) {
                    state.tab = t;
                }
            }
            None
        }
        Action::Tick => {
            state.tick += 1;
            if state.tick.is_multiple_of(TAIL_EVERY) {
                tail_audit(state);
            }
            None
        }
        Action::ContinueScan => {
            scan_step(state);
            None
        }
        Action::Refresh => {
            refresh(state);
            None
        }
        Action::CancelJob => {
            cancel_newest(state);
            None
        }
        Action::OpenGenerate => {
            open_generate(state);
            None
        }
        Action::OpenExport => {
            if let Some(v) = selected_version(state) {
                let path = format!("{}-{}.pem", v.key, v.version);
                state.modals.push(Modal::Form(Form {
                    kind: FormKind::Export {
                        key: v.key.clone(),
                        version: v.version,
                    },
                    title: format!("Export the public key of {}/{}", v.key, v.version),
                    fields: vec![Field::text("File", &path)],
                    focus: 0,
                    note: Some("SPKI PEM, what `cosign verify --key` reads".into()),
                    error: None,
                }));
            }
            None
        }
        Action::OpenSignFile => {
            if let Some(v) = selected_version(state) {
                let note = if v.state == KeyState::Active {
                    "SHA-256 over the file; DER signature. The output defaults to FILE.sig".into()
                } else {
                    format!(
                        "{}/{} is {}: only an active version signs",
                        v.key, v.version, v.state
                    )
                };
                state.modals.push(Modal::Form(Form {
                    kind: FormKind::SignFile {
                        key: v.key.clone(),
                        version: v.version,
                    },
                    title: format!("Sign a file with {}/{}", v.key, v.version),
                    fields: vec![Field::text("File", ""), Field::text("Signature", "")],
                    focus: 0,
                    note: Some(note),
                    error: None,
                }));
            }
            None
        }
        Action::OpenInitToken => {
            let taken = |n: &str| state.tokens.entries.iter().any(|t| t.name == n);
            let name = (1..)
                .map(|i| {
                    if i == 1 {
                        "hsm".to_string()
                    } else {
                        format!("hsm{i}")
                    }
                })
                .find(|n| !taken(n))
                .unwrap_or_else(|| "hsm".into());
            state.modals.push(Modal::Form(Form {
                kind: FormKind::InitToken,
                title: "Initialise a PKCS#11 token".into(),
                fields: vec![
                    Field::text("Module", "/usr/lib/softhsm/libsofthsm2.so"),
                    Field::text("Label", "keyward"),
                    Field::text("Name", &name),
                ],
                focus: 0,
                note: Some("Uses a free slot; asks for a new SO PIN, then the new user PIN".into()),
                error: None,
            }));
            None
        }
        Action::OpenSearch => {
            state.modals.push(Modal::Form(Form {
                kind: FormKind::Search,
                title: "Search the audit log".into(),
                fields: vec![Field::text("Text", &state.audit.filter.search)],
                focus: 0,
                note: Some("Case-insensitive, in summaries, details and entry numbers".into()),
                error: None,
            }));
            None
        }
        Action::OpenFilter => {
            open_filter(state);
            None
        }
        Action::OpenSignImages => {
            let keys = active_keys(state);
            if keys.is_empty() {
                return error(state, "No active key", "generate a key first (g)".into());
            }
            state.modals.push(Modal::Form(Form {
                kind: FormKind::SignImages,
                title: "Sign container images".into(),
                fields: vec![
                    Field::text("Images", ""),
                    Field::choice("Key", keys, 0),
                    Field::text("Plain HTTP", &state.insecure_registries),
                ],
                focus: 0,
                note: Some(
                    "References separated by spaces; tags are resolved to digests. Plain HTTP: registries (host:port) reached without TLS".into(),
                ),
                error: None,
            }));
            None
        }
        Action::OpenVerifyImage => {
            let mut keys = vec!["any".to_string()];
            keys.extend(state.keys.versions.iter().map(|v| v.key.clone()));
            keys.dedup();
            state.modals.push(Modal::Form(Form {
                kind: FormKind::VerifyImage,
                title: "Verify a container image".into(),
                fields: vec![
                    Field::text("Image", ""),
                    Field::choice("Key", keys, 0),
                    Field::text("Plain HTTP", &state.insecure_registries),
                ],
                focus: 0,
                note: None,
                error: None,
            }));
            None
        }
        Action::ActivateSelected => {
            let v = selected_version(state)?;
            if v.state.can_become(KeyState::Active) {
                Some(Action::ActivateKey {
                    key: v.key.clone(),
                    version: v.version,
                })
            } else {
                let msg = format!(
                    "{}/{} is {}: only a pre-active or suspended version can be activated",
                    v.key, v.version, v.state
                );
                state.message = Some(msg);
                None
            }
        }
        Action::DestroySelected => {
            let v = selected_version(state)?;
            if !v.state.can_become(KeyState::Destroyed) {
                state.message = Some(format!(
                    "{}/{} is {}: deactivate it (or mark it compromised) before destroying it",
                    v.key, v.version, v.state
                ));
                return None;
            }
            state.request(Job::Destroy {
                key: v.key,
                version: v.version,
                token: v.token,
            });
            None
        }
        Action::ClearFilter => Some(Action::ApplyFilter(AuditFilter::default())),
        Action::OpenStateChange => {
            lifecycle::open_state_change(state);
            None
        }
        Action::OpenRotate => {
            lifecycle::open_rotate(state);
            None
        }
        Action::OpenPolicy => {
            lifecycle::open_policy(state);
            None
        }
        Action::OpenResign => {
            lifecycle::open_resign(state);
            None
        }
        Action::OpenBundleExport => {
            lifecycle::open_bundle_export(state);
            None
        }
        Action::ApplyDue => lifecycle::apply_due(state),
        Action::PivAdmin(op) => lifecycle::piv_admin(state, op),
        Action::OpenPivRetries => {
            lifecycle::open_piv_retries(state);
            None
        }
        Action::AttestSelected => lifecycle::attest_selected(state),
        Action::OpenCeremonyStart => {
            ceremony::open_start(state);
            None
        }
        Action::OpenCeremonyResume => {
            ceremony::open_resume(state);
            None
        }
        Action::OpenCeremonyAck => {
            ceremony::open_ack(state);
            None
        }
        Action::RunCeremonyStep => ceremony::run_step(state),
        Action::FinishCeremony => ceremony::finish(state),
        Action::Run(job) => {
            let is_ceremony = matches!(
                *job,
                Job::CeremonyOpen { .. }
                    | Job::CeremonyResume { .. }
                    | Job::CeremonyAck { .. }
                    | Job::CeremonyStep { .. }
                    | Job::CeremonyFinish { .. }
            );
            let id = state.request(*job);
            if is_ceremony {
                state.ceremony.running = Some(id);
            }
            None
        }
        Action::Confirm {
            title,
            question,
            loses,
            job,
        } => {
            state.modals.push(Modal::Confirm(ConfirmModal {
                job: None,
                title,
                question,
                loses,
                on_yes: OnConfirm::Action(Box::new(Action::Run(job))),
            }));
            None
        }

        Action::GenerateKey {
            name,
            token,
            algorithm,
            inactive,
        } => {
            if let Err(e) = check_key_name(&name) {
                return error(state, "Cannot generate", e);
            }
            state.tab = Tab::Keys;
            state.request(Job::Generate {
                key: name,
                token,
                algorithm,
                inactive,
            });
            None
        }
        Action::ActivateKey { key, version } => {
            state.request(Job::Activate { key, version });
            None
        }
        Action::ExportPublicKey { key, version, path } => {
            state.request(Job::ExportPublicKey { key, version, path });
            None
        }
        Action::SignFile {
            key,
            version,
            input,
            output,
        } => {
            let Some(token) = state
                .keys
                .versions
                .iter()
                .find(|v| v.key == key && v.version == version)
                .map(|v| v.token.clone())
            else {
                return error(state, "Cannot sign", format!("no version {key}/{version}"));
            };
            state.request(Job::SignFile {
                key,
                version,
                token,
                input,
                output,
            });
            None
        }
        Action::InitToken {
            module,
            label,
            name,
        } => {
            state.request(Job::InitToken {
                module,
                label,
                name,
            });
            None
        }
        Action::SignImages {
            key,
            images,
            insecure,
        } => {
            let Some(token) = newest_active_token(state, &key) else {
                return error(
                    state,
                    "Cannot sign",
                    format!("key {key} has no active version"),
                );
            };
            state.tab = Tab::Images;
            state.images.rows = images
                .iter()
                .map(|i| ImageRow {
                    image: i.clone(),
                    digest: None,
                    status: ImageStatus::Queued,
                })
                .collect();
            state.images.cursor = Default::default();
            state.images.summary = None;
            state.images.key = Some(key.clone());
            let id = state.request(Job::SignImages {
                key,
                token,
                images,
                insecure,
            });
            state.images.running = Some(id);
            None
        }
        Action::VerifyImage {
            image,
            key,
            insecure,
        } => {
            state.tab = Tab::Images;
            state.images.verification = None;
            state.request(Job::VerifyImage {
                image,
                key,
                insecure,
            });
            None
        }
        Action::ApplyFilter(f) => {
            apply_filter(state, f);
            None
        }
        Action::VerifyAudit => {
            state.audit.chain = Chain::Verifying;
            state.request(Job::VerifyAudit);
            None
        }

        // ---- results ----
        Action::TokensListed { id, tokens } => {
            if !accept(state, id) {
                return None;
            }
            state.tokens.entries = tokens;
            state.tokens.load = Load::Ready;
            follow_all(state);
            None
        }
        Action::KeysLoaded {
            id,
            versions,
            pending,
            due,
            policies,
        } => {
            if !accept(state, id) {
                return None;
            }
            state.keys.due = due;
            state.keys.policies = policies;
            let selected = state
                .keys
                .select
                .take()
                .or_else(|| state.keys.selected().map(|v| (v.key.clone(), v.version)));
            state.keys.created = versions.iter().map(|v| parse_time(&v.created)).collect();
            state.keys.versions = versions;
            state.keys.pending = pending;
            state.keys.load = Load::Ready;
            if let Some((k, n)) = selected {
                if let Some(i) = state
                    .keys
                    .versions
                    .iter()
                    .position(|v| v.key == k && v.version == n)
                {
                    let h = components::list_rows(Tab::Keys, state.size);
                    state.keys.cursor.to(i, state.keys.versions.len(), h);
                }
            }
            follow_all(state);
            refresh_history(state);
            None
        }
        Action::AuditLoading { id, entries } => {
            if state.latest.get("audit") == Some(&id) {
                state.audit.loading_entries = entries;
            }
            None
        }
        Action::AuditLoaded { id, index } => {
            if !accept(state, id) {
                return None;
            }
            state.audit.index = *index;
            state.audit.load = Load::Ready;
            let f = state.audit.filter.clone();
            apply_filter(state, f);
            refresh_history(state);
            // Entries appended while the index was being built.
            tail_audit(state);
            None
        }
        Action::AuditAppended { id, from, entries } => {
            if !accept(state, id) {
                return None;
            }
            if from != state.audit.index.end_offset {
                // Not where the index ends: the file changed under us; index it again.
                state.audit.load = Load::Loading;
                state.request(Job::LoadAudit);
                return None;
            }
            append_audit(state, entries);
            None
        }
        Action::AuditVerified { id, report } => {
            if !accept(state, id) {
                return None;
            }
            state.audit.chain = Chain::from_report(&report);
            None
        }
        Action::KeyGenerated { id, version } => {
            if !accept(state, id) {
                return None;
            }
            let mut msg = format!(
                "generated {}/{} ({}) on {}: {} — key id {}",
                version.key,
                version.version,
                version.algorithm,
                version.token,
                version.state,
                short(&version.key_id, 16)
            );
            if version.token == crate::token::soft::SOFT_TOKEN_NAME {
                msg.push_str(" (software — not hardware protected)");
            }
            state.message = Some(msg);
            // Select the new version once the reloaded list has it.
            state.keys.select = Some((version.key.clone(), version.version));
            Some(Action::Refresh)
        }
        Action::KeyDestroyed { id, version } => {
            if !accept(state, id) {
                return None;
            }
            state.message = Some(format!(
                "{}/{} destroyed: its private key is gone from {}; its public key stays in the log",
                version.key, version.version, version.token
            ));
            Some(Action::Refresh)
        }
        Action::KeyActivated { id, version } => {
            if !accept(state, id) {
                return None;
            }
            state.message = Some(format!(
                "{}/{} is now {}",
                version.key, version.version, version.state
            ));
            Some(Action::Refresh)
        }
        Action::StateChanged { id, version } => {
            if !accept(state, id) {
                return None;
            }
            state.message = Some(format!(
                "{}/{} is now {} (recorded in the audit log)",
                version.key, version.version, version.state
            ));
            Some(Action::Refresh)
        }
        Action::KeyRotated { id, new, old } => {
            if !accept(state, id) {
                return None;
            }
            let mut lines = vec![format!(
                "{} is active on {} ({}), key id {}",
                new.name(),
                new.token,
                new.algorithm,
                short(&new.key_id, 16)
            )];
            for o in &old {
                lines.push(match (&o.state, &o.overlap_until) {
                    (KeyState::Active, Some(u)) => format!(
                        "{} stays active until {u}; then it is deactivated (d, `key due --apply`, or the next keyward run)",
                        o.name()
                    ),
                    (s, _) => format!("{} is now {s}", o.name()),
                });
            }
            lines.push(
                "Next: re-sign older images with the new version (S) and export a new bundle (b)"
                    .into(),
            );
            state.keys.select = Some((new.key.clone(), new.version));
            state.modals.push(Modal::Info {
                title: format!("Rotated {}", new.key),
                lines,
            });
            state.message = Some(format!("rotated {} to {}", new.key, new.name()));
            Some(Action::Refresh)
        }
        Action::PolicySet { id, key, policy } => {
            if !accept(state, id) {
                return None;
            }
            state.message = Some(format!(
                "{key}: rotate every {}, overlap {} (recorded in the audit log)",
                crate::keys::format_duration(policy.rotate_every),
                crate::keys::format_duration(policy.overlap)
            ));
            Some(Action::Refresh)
        }
        Action::DueApplied { id, deactivated } => {
            if !accept(state, id) {
                return None;
            }
            state.message = Some(if deactivated.is_empty() {
                "no overlap had ended: nothing deactivated".into()
            } else {
                format!(
                    "deactivated {}",
                    deactivated
                        .iter()
                        .map(|v| v.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            });
            Some(Action::Refresh)
        }
        Action::ResignPlanned {
            id,
            key,
            newest,
            insecure,
            items,
        } => {
            if !accept(state, id) {
                return None;
            }
            lifecycle::resign_planned(state, key, *newest, insecure, items)
        }
        Action::Resigned { id, newest, items } => {
            if !accept(state, id) {
                return None;
            }
            let signed = items.iter().filter(|i| i.action == "signed").count();
            let failed = items
                .iter()
                .filter(|i| i.action.starts_with("failed"))
                .count();
            let mut lines = vec![format!(
                "{signed} image(s) now carry {newest}'s signature; {failed} failed"
            )];
            lines.extend(
                items
                    .iter()
                    .map(|i| format!("{:<15} {}", i.action, i.image)),
            );
            state.modals.push(Modal::Info {
                title: format!("Re-signed with {newest}"),
                lines,
            });
            state.message = Some(format!("re-signed {signed} image(s) with {newest}"));
            Some(Action::Refresh)
        }
        Action::CeremonyLoaded {
            id,
            ceremony: c,
            failed,
            info,
        } => {
            if state.ceremony.running == Some(id) {
                state.ceremony.running = None;
            }
            if !accept(state, id) {
                return None;
            }
            state.tab = Tab::Ceremony;
            let current = c
                .current_index()
                .unwrap_or(c.progress().steps.len().saturating_sub(1));
            state.message = Some(match c.status() {
                crate::ceremony::Status::Next { index } => format!(
                    "{}: step {} of {} next",
                    c.progress().ceremony,
                    index + 1,
                    c.progress().steps.len()
                ),
                crate::ceremony::Status::ReadyToFinish => {
                    format!(
                        "{}: every step done — f signs the transcript",
                        c.progress().ceremony
                    )
                }
                crate::ceremony::Status::Completed(f) => {
                    format!(
                        "{} completed: {}",
                        c.progress().ceremony,
                        f.transcript.display()
                    )
                }
            });
            state.ceremony.ceremony = Some(c);
            state.ceremony.cursor = Default::default();
            let h = components::list_rows(Tab::Ceremony, state.size);
            state.ceremony.cursor.step(current as isize, current + 1, h);
            if let Some((error, hint)) = failed {
                let message = match hint {
                    Some(h) => format!("{error}\n\n{h}"),
                    None => error,
                };
                return error_then_refresh(state, "The ceremony stopped", message);
            }
            if let Some((title, lines)) = info {
                state.modals.push(Modal::Info { title, lines });
            }
            Some(Action::Refresh)
        }
        Action::PivDone { id, lines } => {
            if !accept(state, id) {
                return None;
            }
            state.message = lines.first().cloned();
            state.modals.push(Modal::Info {
                title: "YubiKey".into(),
                lines,
            });
            Some(Action::Refresh)
        }
        Action::Attested {
            id,
            title,
            lines,
            verified,
        } => {
            if !accept(state, id) {
                return None;
            }
            state.message = Some(format!(
                "{title}: {}",
                if verified { "verified" } else { "NOT verified" }
            ));
            state.modals.push(Modal::Info { title, lines });
            Some(Action::Refresh)
        }
        Action::BundleExported { id, output, lines } => {
            if !accept(state, id) {
                return None;
            }
            state.message = Some(format!("bundle written to {}", output.display()));
            state.modals.push(Modal::Info {
                title: format!("Bundle {}", output.display()),
                lines,
            });
            Some(Action::Refresh)
        }
        Action::PublicKeyExported { id, key, path } => {
            if !accept(state, id) {
                return None;
            }
            state.message = Some(format!("public key of {key} written to {}", path.display()));
            Some(Action::Refresh)
        }
        Action::FileSigned { id, key, output } => {
            if !accept(state, id) {
                return None;
            }
            state.message = Some(format!(
                "signed with {key}: signature in {}",
                output.display()
            ));
            Some(Action::Refresh)
        }
        Action::TokenInitialized { id, name, serial } => {
            if !accept(state, id) {
                return None;
            }
            state.message = Some(format!(
                "token {name} initialised (serial {serial}) and registered"
            ));
            Some(Action::Refresh)
        }
        Action::ImageProgressed { id, index, row } => {
            if state.images.running == Some(id) {
                if let Some(r) = state.images.rows.get_mut(index) {
                    *r = row;
                }
            }
            None
        }
        Action::ImagesSigned { id, rows } => {
            if !accept(state, id) {
                return None;
            }
            let ok = rows
                .iter()
                .filter(|r| r.status == ImageStatus::Done)
                .count();
            state.images.summary = Some((ok, rows.len() - ok));
            state.images.rows = rows;
            state.images.running = None;
            state.message = Some(format!(
                "images: {ok} signed, {} failed",
                state.images.rows.len() - ok
            ));
            Some(Action::Refresh)
        }
        Action::ImageVerified { id, verification } => {
            if !accept(state, id) {
                return None;
            }
            state.images.verification = Some(verification);
            None
        }
        Action::JobProgressed { id, message } => {
            if let Some(j) = state.jobs.get_mut(&id) {
                j.progress = Some(message);
            }
            None
        }
        Action::JobFailed {
            id,
            error: message,
            hint,
            cancelled,
        } => job_failed(state, id, message, hint, cancelled),
        Action::SecretNeeded { id, prompt, reply } => {
            if !state.jobs.contains_key(&id) {
                reply.send(None);
                return None;
            }
            state
                .modals
                .push(Modal::Pin(PinModal::new(id, prompt, reply)));
            None
        }
        Action::ConfirmNeeded { id, confirm, reply } => {
            if !state.jobs.contains_key(&id) {
                reply.send(false);
                return None;
            }
            let (title, loses) = match &confirm {
                Confirm::FinalPinTry { token } => (
                    "Final PIN try".to_string(),
                    Some(format!(
                        "a wrong PIN now locks {token}: unlocking needs the SO PIN, or re-initialising the token, which erases every key on it"
                    )),
                ),
                Confirm::Destructive { what } => ("Confirm".to_string(), Some(what.clone())),
            };
            state.modals.push(Modal::Confirm(ConfirmModal {
                job: Some(id),
                title,
                question: confirm.question(),
                loses,
                on_yes: OnConfirm::Reply(reply),
            }));
            None
        }
        Action::Notified { id, message } => {
            // E.g. "touch your YubiKey": shown on the job line while the job waits.
            if let Some(j) = state.jobs.get_mut(&id) {
                j.progress = Some(message.clone());
                state.message = Some(message);
            }
            None
        }
    }
}

// ---- helpers -----------------------------------------------------------------------------------

fn short(s: &str, n: usize) -> &str {
    s.get(..n).unwrap_or(s)
}

/// Unix seconds of an RFC 3339 time (0 if it does not parse).
pub fn parse_time(s: &str) -> i64 {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .unwrap_or(0)
}

fn error(state: &mut State, title: &str, message: String) -> Option<Action> {
    state.last_error = Some(message.clone());
    state.modals.push(Modal::Error {
        title: title.into(),
        message,
    });
    None
}

/// Whether a result is still wanted; marks its job finished.
fn accept(state: &mut State, id: JobId) -> bool {
    let Some(running) = state.jobs.remove(&id) else {
        return false;
    };
    if let Some(kind) = background_kind(&running.job) {
        if state.latest.get(kind) != Some(&id) {
            return false;
        }
    }
    true
}

fn quit(state: &mut State) {
    for m in state.modals.drain(..) {
        match m {
            Modal::Pin(p) => p.reply.send(None),
            Modal::Confirm(ConfirmModal {
                on_yes: OnConfirm::Reply(r),
                ..
            }) => r.send(false),
            _ => {}
        }
    }
    for j in state.jobs.values() {
        j.cancel.cancel();
    }
    state.quit = true;
}

fn refresh(state: &mut State) {
    let in_flight = |state: &State, kind: &str| {
        state
            .latest
            .get(kind)
            .is_some_and(|id| state.jobs.contains_key(id))
    };
    if !in_flight(state, "tokens") {
        state.request(Job::ListTokens);
    }
    state.request(Job::LoadKeys);
    if !in_flight(state, "verify") {
        // The badge keeps its last result until this one arrives.
        state.request(Job::VerifyAudit);
    }
    match state.audit.load {
        Load::Ready => tail_audit(state),
        Load::Failed(_) => {
            state.audit.load = Load::Loading;
            state.request(Job::LoadAudit);
        }
        Load::Loading => {}
    }
}

fn tail_audit(state: &mut State) {
    if state.audit.load != Load::Ready {
        return;
    }
    let busy = state
        .latest
        .get("audit")
        .is_some_and(|id| state.jobs.contains_key(id));
    if !busy {
        let from = state.audit.index.end_offset;
        state.request(Job::AuditTail { from });
    }
}

fn cancel_newest(state: &mut State) {
    let Some((&id, _)) = state.user_jobs().last() else {
        state.message = Some("no job is running".into());
        return;
    };
    if let Some(j) = state.jobs.remove(&id) {
        j.cancel.cancel();
        close_job_modals(state, id);
        if state.images.running == Some(id) {
            state.images.running = None;
        }
        state.message = Some(format!(
            "cancelled: {}. A token operation already under way still finishes, and the audit log records it",
            j.job.label()
        ));
    }
}

/// Closes the PIN and confirmation modals a job opened, answering "no" to its worker.
fn close_job_modals(state: &mut State, id: JobId) {
    let modals = std::mem::take(&mut state.modals);
    for m in modals {
        match m {
            Modal::Pin(p) if p.job == id => p.reply.send(None),
            Modal::Confirm(ConfirmModal {
                job: Some(j),
                on_yes: OnConfirm::Reply(r),
                ..
            }) if j == id => r.send(false),
            other => state.modals.push(other),
        }
    }
}

fn job_failed(
    state: &mut State,
    id: JobId,
    message: String,
    hint: Option<String>,
    cancelled: bool,
) -> Option<Action> {
    if state.ceremony.running == Some(id) {
        state.ceremony.running = None;
    }
    let job = state.jobs.get(&id)?.job.clone();
    let current = accept(state, id);
    close_job_modals(state, id);
    if !current {
        return None;
    }
    match &job {
        Job::ListTokens => state.tokens.load = Load::Failed(message.clone()),
        Job::LoadKeys => state.keys.load = Load::Failed(message.clone()),
        Job::LoadAudit | Job::AuditTail { .. } => state.audit.load = Load::Failed(message.clone()),
        Job::VerifyAudit => state.audit.chain = Chain::Failed(message.clone()),
        Job::SignImages { .. } => {
            state.images.running = None;
            for r in &mut state.images.rows {
                if !matches!(r.status, ImageStatus::Done | ImageStatus::Failed(_)) {
                    r.status = ImageStatus::Failed(message.clone());
                }
            }
        }
        _ => {}
    }
    if cancelled {
        state.message = Some(format!("cancelled: {}", job.label()));
    } else {
        state.last_error = Some(message.clone());
        if !job.is_background() {
            let text = match hint {
                Some(h) => format!("{message}\n\nhint: {h}"),
                None => message,
            };
            state.modals.push(Modal::Error {
                title: format!("{} failed", capitalise(&job.label())),
                message: text,
            });
        }
    }
    if job.is_background() {
        None
    } else {
        // A failed login or a refused operation is in the log, and PIN counters may have moved.
        Some(Action::Refresh)
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

fn selected_version(state: &mut State) -> Option<crate::keys::Version> {
    match state.keys.selected() {
        Some(v) => Some(v.clone()),
        None => {
            state.message = Some("no key selected: generate one with g".into());
            None
        }
    }
}

fn active_keys(state: &State) -> Vec<String> {
    let mut keys: Vec<String> = state
        .keys
        .versions
        .iter()
        .filter(|v| v.state == KeyState::Active)
        .map(|v| v.key.clone())
        .collect();
    keys.dedup();
    keys
}

fn newest_active_token(state: &State, key: &str) -> Option<String> {
    state
        .keys
        .versions
        .iter()
        .rev()
        .find(|v| v.key == key && v.state == KeyState::Active)
        .map(|v| v.token.clone())
}

fn open_generate(state: &mut State) {
    // Tokens that opened; a hardware one first, the software keystore always offered.
    let mut tokens: Vec<(String, bool)> = state
        .tokens
        .entries
        .iter()
        .filter(|t| t.info.is_some() && t.error.is_none())
        .map(|t| (t.name.clone(), t.info.as_ref().is_some_and(|i| i.hardware)))
        .collect();
    if !tokens
        .iter()
        .any(|(n, _)| n == crate::token::soft::SOFT_TOKEN_NAME)
    {
        tokens.push((crate::token::soft::SOFT_TOKEN_NAME.into(), false));
    }
    let default = tokens.iter().position(|(_, hw)| *hw).unwrap_or(0);
    let names: Vec<String> = tokens.into_iter().map(|(n, _)| n).collect();
    let name = if state.tab == Tab::Keys {
        state
            .keys
            .selected()
            .map(|v| v.key.clone())
            .unwrap_or_default()
    } else {
        String::new()
    };
    state.modals.push(Modal::Form(Form {
        kind: FormKind::Generate,
        title: "Generate a key".into(),
        fields: vec![
            Field::text("Name", &name),
            Field::choice("Token", names, default),
            Field::choice(
                "Algorithm",
                Algorithm::ALL
                    .iter()
                    .map(|a| a.as_str().to_string())
                    .collect(),
                0,
            ),
            Field::toggle("Pre-active", false),
        ],
        focus: 0,
        note: Some("An existing name gets its next version. Pre-active: activate later (a)".into()),
        error: None,
    }));
}

fn open_filter(state: &mut State) {
    let idx = &state.audit.index;
    let any = |mut v: Vec<String>| {
        v.insert(0, "any".into());
        v
    };
    let pick = |options: &Vec<String>, cur: &Option<String>| {
        cur.as_ref()
            .and_then(|c| options.iter().position(|o| o == c))
            .unwrap_or(0)
    };
    let keys = any(idx.keys.sorted());
    let actors = any(idx.actors.sorted());
    let kinds = any(idx.kinds.sorted());
    let outcomes: Vec<String> = ["any", "ok", "failed", "started", "refused"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let f = &state.audit.filter;
    let fields = vec![
        Field::choice("Key", keys.clone(), pick(&keys, &f.key)),
        Field::choice("Actor", actors.clone(), pick(&actors, &f.actor)),
        Field::choice("Event", kinds.clone(), pick(&kinds, &f.kind)),
        Field::choice(
            "Outcome",
            outcomes.clone(),
            pick(&outcomes, &f.outcome.map(|o| o.to_string())),
        ),
    ];
    state.modals.push(Modal::Form(Form {
        kind: FormKind::Filter,
        title: "Filter the audit log".into(),
        fields,
        focus: 0,
        note: Some("←/→ change a value; Enter applies".into()),
        error: None,
    }));
}

fn parse_outcome(s: &str) -> Option<Outcome> {
    match s {
        "ok" => Some(Outcome::Ok),
        "failed" => Some(Outcome::Failed),
        "started" => Some(Outcome::Started),
        "refused" => Some(Outcome::Refused),
        _ => None,
    }
}

/// The action a submitted form stands for, or what is wrong with it.
fn submit_form(state: &State, form: &Form) -> Result<Action, String> {
    let v = |i: usize| form.fields.get(i).map(Field::value).unwrap_or_default();
    let opt = |s: String| (s != "any" && !s.is_empty()).then_some(s);
    let list = |s: String| -> Vec<String> {
        s.split(|c: char| c.is_whitespace() || c == ',')
            .filter(|x| !x.is_empty())
            .map(str::to_owned)
            .collect()
    };
    match &form.kind {
        FormKind::Generate => {
            let name = v(0);
            check_key_name(&name)?;
            Ok(Action::GenerateKey {
                name,
                token: v(1),
                algorithm: v(2).parse()?,
                inactive: form.fields.get(3).is_some_and(Field::is_on),
            })
        }
        FormKind::Export { key, version } => {
            let path = v(0);
            if path.is_empty() {
                return Err("name the file to write".into());
            }
            Ok(Action::ExportPublicKey {
                key: key.clone(),
                version: *version,
                path: PathBuf::from(path),
            })
        }
        FormKind::SignFile { key, version } => {
            let input = v(0);
            if input.is_empty() {
                return Err("name the file to sign".into());
            }
            let output = match v(1) {
                o if o.is_empty() => format!("{input}.sig"),
                o => o,
            };
            Ok(Action::SignFile {
                key: key.clone(),
                version: *version,
                input: input.into(),
                output: output.into(),
            })
        }
        FormKind::InitToken => {
            let (module, label, name) = (v(0), v(1), v(2));
            if module.is_empty() || label.is_empty() || name.is_empty() {
                return Err("module, label and name are all needed".into());
            }
            Ok(Action::InitToken {
                module: module.into(),
                label,
                name,
            })
        }
        FormKind::SignImages => {
            let images = list(v(0));
            if images.is_empty() {
                return Err("type one or more image references".into());
            }
            Ok(Action::SignImages {
                key: v(1),
                images,
                insecure: list(v(2)),
            })
        }
        FormKind::VerifyImage => {
            let image = v(0);
            if image.is_empty() {
                return Err("type an image reference".into());
            }
            Ok(Action::VerifyImage {
                image,
                key: opt(v(1)),
                insecure: list(v(2)),
            })
        }
        FormKind::StateChange { .. }
        | FormKind::Rotate { .. }
        | FormKind::Policy { .. }
        | FormKind::Resign { .. }
        | FormKind::BundleExport
        | FormKind::PivRetries { .. } => {
            lifecycle::submit(state, form).unwrap_or_else(|| Err("this form has no submit".into()))
        }
        FormKind::CeremonyStart | FormKind::CeremonyResume | FormKind::CeremonyAck { .. } => {
            ceremony::submit(state, form).unwrap_or_else(|| Err("this form has no submit".into()))
        }
        FormKind::Search => Ok(Action::ApplyFilter(AuditFilter {
            search: v(0),
            ..state.audit.filter.clone()
        })),
        FormKind::Filter => Ok(Action::ApplyFilter(AuditFilter {
            key: opt(v(0)),
            actor: opt(v(1)),
            kind: opt(v(2)),
            outcome: parse_outcome(&v(3)),
            search: state.audit.filter.search.clone(),
        })),
    }
}

fn input(state: &mut State, key: InputKey) -> Option<Action> {
    let top = state.modals.pop()?;
    match top {
        Modal::Help => {
            if !matches!(
                key,
                InputKey::Esc | InputKey::Enter | InputKey::Char('?' | 'q')
            ) {
                state.modals.push(Modal::Help);
            }
            None
        }
        Modal::Error { title, message } => {
            if !matches!(key, InputKey::Esc | InputKey::Enter | InputKey::Char('q')) {
                state.modals.push(Modal::Error { title, message });
            }
            None
        }
        Modal::Info { title, lines } => {
            if !matches!(key, InputKey::Esc | InputKey::Enter | InputKey::Char('q')) {
                state.modals.push(Modal::Info { title, lines });
            }
            None
        }
        Modal::Pin(pin) => pin_input(state, pin, key),
        Modal::Confirm(c) => match key {
            InputKey::Char('y' | 'Y') => match c.on_yes {
                OnConfirm::Reply(r) => {
                    r.send(true);
                    None
                }
                OnConfirm::Action(a) => Some(*a),
            },
            InputKey::Char('n' | 'N') | InputKey::Esc => {
                if let OnConfirm::Reply(r) = c.on_yes {
                    r.send(false);
                }
                state.message = Some("not confirmed: nothing was done".into());
                None
            }
            _ => {
                state.modals.push(Modal::Confirm(c));
                None
            }
        },
        Modal::Form(mut form) => {
            let n = form.fields.len();
            match key {
                InputKey::Esc => return None,
                InputKey::Enter => match submit_form(state, &form) {
                    Ok(a) => return Some(a),
                    Err(e) => form.error = Some(e),
                },
                InputKey::Tab | InputKey::Down => form.focus = (form.focus + 1) % n.max(1),
                InputKey::BackTab | InputKey::Up => {
                    form.focus = (form.focus + n.max(1) - 1) % n.max(1)
                }
                other => {
                    if let Some(f) = form.fields.get_mut(form.focus) {
                        edit_field(f, other);
                    }
                    form.error = None;
                }
            }
            state.modals.push(Modal::Form(form));
            None
        }
    }
}

fn edit_field(f: &mut Field, key: InputKey) {
    match (&mut f.kind, key) {
        (FieldKind::Text { value }, InputKey::Char(c)) => value.push(c),
        (FieldKind::Text { value }, InputKey::Backspace) => {
            value.pop();
        }
        (FieldKind::Choice { options, index }, InputKey::Right | InputKey::Char(' ')) => {
            *index = (*index + 1) % options.len().max(1)
        }
        (FieldKind::Choice { options, index }, InputKey::Left) => {
            *index = (*index + options.len().max(1) - 1) % options.len().max(1)
        }
        (FieldKind::Toggle { on }, InputKey::Char(' ') | InputKey::Left | InputKey::Right) => {
            *on = !*on
        }
        _ => {}
    }
}

fn pin_input(state: &mut State, mut pin: PinModal, key: InputKey) -> Option<Action> {
    match key {
        InputKey::Esc => {
            // Dropping the modal wipes its buffers (Zeroizing); the worker gets "cancelled".
            pin.reply.send(None);
            state.message = Some("PIN entry cancelled".into());
            return None;
        }
        InputKey::Char(c) => {
            if let Some(f) = pin.fields.get_mut(pin.focus) {
                if f.len() + c.len_utf8() <= PIN_MAX {
                    f.push(c);
                }
            }
            pin.error = None;
        }
        InputKey::Backspace => {
            if let Some(f) = pin.fields.get_mut(pin.focus) {
                f.pop();
            }
        }
        InputKey::Tab | InputKey::Down | InputKey::BackTab | InputKey::Up => {
            pin.focus = (pin.focus + 1) % pin.fields.len();
        }
        InputKey::Enter => {
            if pin.fields.get(pin.focus).is_some_and(|f| f.is_empty()) {
                pin.error = Some("nothing typed (Esc cancels)".into());
            } else if pin.focus + 1 < pin.fields.len() {
                pin.focus += 1;
            } else if pin.fields.len() == 2 && pin.fields[0].as_str() != pin.fields[1].as_str() {
                for f in &mut pin.fields {
                    zeroize::Zeroize::zeroize(&mut **f);
                }
                pin.focus = 0;
                pin.error = Some("the two entries differ; type them again".into());
            } else if pin.prompt.kind == SecretKind::NewPassphrase
                && pin.fields[0].chars().count() < 8
            {
                for f in &mut pin.fields {
                    zeroize::Zeroize::zeroize(&mut **f);
                }
                pin.focus = 0;
                pin.error = Some("at least 8 characters; type it again".into());
            } else {
                // The typed text moves into the Pin (zeroized when the worker drops it); the
                // modal's buffers are wiped as it is dropped here.
                let secret = Pin::new(std::mem::take(&mut *pin.fields[0]));
                pin.reply.send(Some(secret));
                state.message = Some(format!("checking with {}…", pin.prompt.token));
                return None;
            }
        }
        InputKey::Left | InputKey::Right => {}
    }
    state.modals.push(Modal::Pin(pin));
    None
}

fn move_cursor(state: &mut State, delta: isize) -> Option<Action> {
    let h = components::list_rows(state.tab, state.size);
    match state.tab {
        Tab::Tokens => {
            let n = state.tokens.entries.len();
            state.tokens.cursor.step(delta, n, h);
        }
        Tab::Keys => {
            let n = state.keys.versions.len();
            state.keys.cursor.step(delta, n, h);
            refresh_history(state);
        }
        Tab::Images => {
            let n = state.images.rows.len();
            state.images.cursor.step(delta, n, h);
        }
        Tab::Audit => {
            let n = state.audit.visible_len();
            state.audit.cursor.step(delta, n, h);
        }
        Tab::Ceremony => {
            let n = match &state.ceremony.ceremony {
                Some(c) => c.progress().steps.len(),
                None => state.ceremony.scripts.len(),
            };
            state.ceremony.cursor.step(delta, n, h);
        }
    }
    None
}

fn error_then_refresh(state: &mut State, title: &str, message: String) -> Option<Action> {
    error(state, title, message);
    Some(Action::Refresh)
}

fn follow_all(state: &mut State) {
    let size = state.size;
    let h = |t| components::list_rows(t, size);
    state
        .tokens
        .cursor
        .follow(state.tokens.entries.len(), h(Tab::Tokens));
    state
        .keys
        .cursor
        .follow(state.keys.versions.len(), h(Tab::Keys));
    state
        .images
        .cursor
        .follow(state.images.rows.len(), h(Tab::Images));
    let n = state.audit.visible_len();
    state.audit.cursor.follow(n, h(Tab::Audit));
}

fn apply_filter(state: &mut State, f: AuditFilter) {
    state.audit.cursor = Default::default();
    if f.is_empty() {
        state.audit.filter = f;
        state.audit.matches = None;
        state.audit.scan = None;
        return;
    }
    state.audit.filter = f;
    state.audit.matches = Some(Vec::new());
    state.audit.scan = Some(Scan {
        remaining: state.audit.index.len(),
    });
    scan_step(state);
}

/// Looks at the next slice of rows, newest first, so results stream in from the top.
pub fn scan_step(state: &mut State) {
    let Some(scan) = state.audit.scan.clone() else {
        return;
    };
    let audit = &mut state.audit;
    let Some(compiled) = Compiled::new(&audit.filter, &audit.index) else {
        audit.scan = None;
        return;
    };
    let step = if compiled.has_search() {
        SCAN_STEP_TEXT
    } else {
        SCAN_STEP_IDS
    };
    let lo = scan.remaining.saturating_sub(step);
    let matches = audit.matches.get_or_insert_with(Vec::new);
    let rows = audit.index.rows();
    for i in (lo..scan.remaining).rev() {
        if compiled.matches(&audit.index, &rows[i]) {
            matches.push(i as u32);
        }
    }
    audit.scan = (lo > 0).then_some(Scan { remaining: lo });
}

fn append_audit(state: &mut State, entries: Vec<(crate::audit::Entry, u64)>) {
    if entries.is_empty() {
        return;
    }
    let audit = &mut state.audit;
    let first_new = audit.index.len();
    for (e, end) in &entries {
        audit.index.push(e, *end);
    }
    let added: Vec<u32> = match (&audit.matches, Compiled::new(&audit.filter, &audit.index)) {
        (None, _) => (first_new..audit.index.len())
            .rev()
            .map(|i| i as u32)
            .collect(),
        (Some(_), Some(c)) => (first_new..audit.index.len())
            .rev()
            .filter(|&i| {
                audit
                    .index
                    .row(i)
                    .is_some_and(|r| c.matches(&audit.index, r))
            })
            .map(|i| i as u32)
            .collect(),
        (Some(_), None) => Vec::new(),
    };
    if let Some(m) = &mut audit.matches {
        m.splice(0..0, added.iter().copied());
    }
    // Keep the selected entry selected unless the newest was selected.
    if audit.cursor.selected > 0 {
        audit.cursor.selected += added.len();
        audit.cursor.offset += added.len();
    }
    follow_all(state);
    refresh_history(state);
}

/// Recomputes the Keys detail pane's audit history when the key or the log changed.
pub fn refresh_history(state: &mut State) {
    let Some(key) = state.keys.selected().map(|v| v.key.clone()) else {
        state.keys.history.clear();
        state.keys.history_for = None;
        return;
    };
    let len = state.audit.index.len();
    if state.keys.history_for.as_ref() == Some(&(key.clone(), len)) {
        return;
    }
    state.keys.history.clear();
    if let Some(id) = state.audit.index.keys.id(&key) {
        let rows = state.audit.index.rows();
        state.keys.history.extend(
            rows.iter()
                .enumerate()
                .rev()
                .filter(|(_, r)| r.key == id)
                .take(HISTORY_MAX)
                .map(|(i, _)| i as u32),
        );
    }
    state.keys.history_for = Some((key, len));
}
