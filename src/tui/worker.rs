//! Workers: threads that do the blocking work (token, disk, network) so the UI never waits.
//!
//! Jobs run in lanes, one thread each: one lane per token (it owns that token's open session,
//! as cryptoki sessions are `Send` but not `Sync`, and keeps it logged in between jobs), one for
//! the audit log, one for token discovery, one for the network and one for the rest. A job that
//! needs a PIN asks through [`TuiPrompter`], which blocks this worker (never the UI) until the
//! person answers in the PIN modal.

use crate::error::{Error, Result};
use crate::home::Home;
use crate::keys::State as KeyState;
use crate::prompt::{Confirm, PromptError, Prompter, SecretRequest};
use crate::secret::Pin;
use crate::service::OpenToken;
use crate::tui::action::Action;
use crate::tui::job::{CancelFlag, Job, JobId, Request};
use crate::tui::state::audit::AuditIndex;
use crate::tui::state::{
    ConfirmReply, ImageRow, ImageSigner, ImageStatus, ImageVerification, SecretPrompt, SecretReply,
};
use crate::Keyward;
use std::collections::HashMap;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

/// What the event loop receives: terminal events and worker reports, on one channel.
#[derive(Debug)]
pub enum AppEvent {
    Term(crossterm::event::Event),
    Action(Action),
}

/// The lane a job runs in.
pub fn lane(job: &Job) -> String {
    if let Some(t) = job.token() {
        return format!("token:{t}");
    }
    match job {
        Job::LoadAudit | Job::AuditTail { .. } => "audit".into(),
        Job::VerifyAudit => "verify".into(),
        Job::ListTokens | Job::InitToken { .. } => "tokens".into(),
        Job::VerifyImage { .. } | Job::PlanResign { .. } => "network".into(),
        Job::CeremonyOpen { .. }
        | Job::CeremonyResume { .. }
        | Job::CeremonyAck { .. }
        | Job::CeremonyStep { .. }
        | Job::CeremonyFinish { .. } => "ceremony".into(),
        _ => "core".into(),
    }
}

/// The lanes, started on first use.
pub struct Workers {
    home: Home,
    tx: Sender<AppEvent>,
    lanes: HashMap<String, Sender<Request>>,
}

impl Workers {
    pub fn new(home: Home, tx: Sender<AppEvent>) -> Self {
        Workers {
            home,
            tx,
            lanes: HashMap::new(),
        }
    }

    pub fn dispatch(&mut self, req: Request) {
        let name = lane(&req.job);
        let req = match self.lanes.get(&name) {
            Some(l) => match l.send(req) {
                Ok(()) => return,
                // The lane's thread is gone: start it again.
                Err(mpsc::SendError(req)) => req,
            },
            None => req,
        };
        let (ltx, lrx) = mpsc::channel::<Request>();
        let (home, tx) = (self.home.clone(), self.tx.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("keyward-{name}"))
            .spawn(move || lane_loop(home, tx, lrx));
        match spawned {
            Ok(_) => {
                let _ = ltx.send(req);
                self.lanes.insert(name, ltx);
            }
            Err(e) => {
                let _ = self.tx.send(AppEvent::Action(Action::JobFailed {
                    id: req.id,
                    error: format!("cannot start a worker thread: {e}"),
                    hint: None,
                    cancelled: false,
                }));
            }
        }
    }
}

fn lane_loop(home: Home, tx: Sender<AppEvent>, rx: Receiver<Request>) {
    let mut session: Option<OpenToken> = None;
    for req in rx {
        if req.cancel.is_cancelled() {
            continue;
        }
        let action = run(&home, &tx, &req, &mut session);
        if tx.send(AppEvent::Action(action)).is_err() {
            break;
        }
    }
}

/// Runs one job to its result action; panics become a failed job.
pub fn run(
    home: &Home,
    tx: &Sender<AppEvent>,
    req: &Request,
    session: &mut Option<OpenToken>,
) -> Action {
    let id = req.id;
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        execute(home, tx, req, session)
    }));
    match r {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => failed(id, &e),
        Err(p) => {
            *session = None;
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Action::JobFailed {
                id,
                error: format!("internal error in {}: {what}", req.job.label()),
                hint: None,
                cancelled: false,
            }
        }
    }
}

/// Runs a job that needs no person (loads) on the calling thread: for benchmarks and tests.
pub fn run_sync(home: &Home, id: JobId, job: Job) -> Action {
    let (tx, _rx) = mpsc::channel();
    let req = Request {
        id,
        job,
        cancel: CancelFlag::default(),
    };
    run(home, &tx, &req, &mut None)
}

pub fn failed(id: JobId, e: &Error) -> Action {
    Action::JobFailed {
        id,
        error: e.to_string(),
        hint: e.hint(),
        cancelled: matches!(e, Error::Prompt(PromptError::Cancelled)),
    }
}

fn execute(
    home: &Home,
    tx: &Sender<AppEvent>,
    req: &Request,
    session: &mut Option<OpenToken>,
) -> Result<Action> {
    let id = req.id;
    // Opened per job: cheap, and it sees a token registered since.
    let mut kw = Keyward::open(home.clone())?;
    let mut prompter = TuiPrompter {
        id,
        tx: tx.clone(),
        cancel: req.cancel.clone(),
    };
    Ok(match &req.job {
        Job::ListTokens => Action::TokensListed {
            id,
            tokens: kw.list_tokens(),
        },
        Job::LoadKeys => {
            // As `key list` does: finish generations a crash interrupted, and deactivate the
            // versions whose rotation overlap has ended (audited), as every keyward run does.
            let _ = kw.reconcile();
            let _ = kw.end_overlaps();
            let reg = kw.registry()?;
            Action::KeysLoaded {
                id,
                versions: reg.versions().cloned().collect(),
                pending: reg.pending.clone(),
                due: reg.due(crate::service::now_ts()),
                policies: reg.policies.clone(),
            }
        }
        Job::LoadAudit => {
            let mut index = AuditIndex::default();
            let mut n = 0u64;
            kw.audit().for_each_from(0, |e, end| {
                index.push(&e, end);
                n += 1;
                if n.is_multiple_of(100_000) {
                    let _ = tx.send(AppEvent::Action(Action::AuditLoading { id, entries: n }));
                }
            })?;
            Action::AuditLoaded {
                id,
                index: Box::new(index),
            }
        }
        Job::AuditTail { from } => {
            let mut entries = Vec::new();
            kw.audit()
                .for_each_from(*from, |e, end| entries.push((e, end)))?;
            Action::AuditAppended {
                id,
                from: *from,
                entries,
            }
        }
        Job::VerifyAudit => Action::AuditVerified {
            id,
            report: kw.verify_audit(&[])?,
        },
        Job::Generate {
            key,
            token,
            algorithm,
            inactive,
            wrappable,
        } => {
            let mut t = match session.take() {
                Some(t) if t.name == *token => t,
                _ => kw.open_token(token)?,
            };
            // On an error the session is dropped; the next job opens the token afresh.
            let spec = crate::service::NewVersion {
                inactive: *inactive,
                wrappable: *wrappable,
            };
            let v = kw.generate_on_spec(&mut t, key, *algorithm, &spec, &mut prompter)?;
            *session = Some(t);
            Action::KeyGenerated {
                id,
                version: Box::new(v),
            }
        }
        Job::Destroy { key, version, .. } => Action::KeyDestroyed {
            id,
            version: Box::new(kw.destroy(key, *version, None, &mut prompter)?),
        },
        Job::Activate { key, version } => Action::KeyActivated {
            id,
            version: Box::new(kw.set_state(key, *version, KeyState::Active, None)?),
        },
        Job::ExportPublicKey { key, version, path } => {
            let (v, pk) = kw.public_key(key, Some(*version))?;
            crate::fsutil::write_atomic(path, pk.to_pem().as_bytes(), false)
                .map_err(|e| Error::io(path, e))?;
            Action::PublicKeyExported {
                id,
                key: v.name(),
                path: std::path::absolute(path).unwrap_or_else(|_| path.clone()),
            }
        }
        Job::SignFile {
            key,
            version,
            token,
            input,
            output,
        } => {
            let data = std::fs::read(input).map_err(|e| Error::io(input, e))?;
            let v = kw.resolve(key, Some(*version))?;
            if v.state != KeyState::Active {
                // `signer` records the refusal in the audit log and says why.
                return Err(match kw.signer(key, Some(*version), &mut prompter) {
                    Err(e) => e,
                    Ok(_) => Error::Other(format!("{}/{} is {}", key, version, v.state)),
                });
            }
            let t = match session.take() {
                Some(t) if t.name == *token => t,
                _ => kw.open_token(token)?,
            };
            let mut signer = kw.signer_on(t, v, &mut prompter)?;
            let sig = signer.sign(&data, Some(format!("file {}", input.display())))?;
            let name = signer.version().name();
            *session = Some(signer.into_token());
            crate::fsutil::write_atomic(output, &sig, false).map_err(|e| Error::io(output, e))?;
            Action::FileSigned {
                id,
                key: name,
                output: std::path::absolute(output).unwrap_or_else(|_| output.clone()),
            }
        }
        Job::InitToken {
            module,
            label,
            name,
        } => {
            let slot = kw.init_pkcs11_token(module, label, name, &mut prompter)?;
            Action::TokenInitialized {
                id,
                name: name.clone(),
                serial: slot.serial,
            }
        }
        Job::SignImages {
            key,
            images,
            insecure,
            ..
        } => sign_images(&kw, tx, id, key, images, insecure, req, &mut prompter)?,
        Job::VerifyImage {
            image,
            key,
            insecure,
        } => Action::ImageVerified {
            id,
            verification: verify_image(&kw, image, key.as_deref(), insecure)?,
        },
        Job::SetState {
            key,
            version,
            to,
            reason,
            since,
        } => Action::StateChanged {
            id,
            version: Box::new(match (to, since) {
                (KeyState::Compromised, Some(since)) => {
                    kw.compromise(key, *version, since, reason.clone().unwrap_or_default())?
                }
                _ => kw.set_state(key, *version, *to, reason.clone())?,
            }),
        },
        Job::Rotate {
            key,
            token,
            algorithm,
            overlap,
            wrappable,
        } => {
            // `rotate` opens the token itself; a card admits one session at a time.
            *session = None;
            let (new, old) = kw.rotate_spec(
                key,
                Some(token),
                Some(*algorithm),
                Some(*overlap),
                *wrappable,
                &mut prompter,
            )?;
            Action::KeyRotated {
                id,
                new: Box::new(new),
                old,
            }
        }
        Job::SetPolicy {
            key,
            rotate_every,
            overlap,
        } => {
            kw.set_policy(key, *rotate_every, *overlap)?;
            Action::PolicySet {
                id,
                key: key.clone(),
                policy: crate::keys::Policy {
                    rotate_every: *rotate_every,
                    overlap: *overlap,
                },
            }
        }
        Job::ApplyDue => Action::DueApplied {
            id,
            deactivated: kw.end_overlaps()?,
        },
        Job::PlanResign { key, insecure } => {
            let registry = crate::images::RegistryOptions {
                insecure: insecure.clone(),
            };
            let (newest, items) = kw.resign(key, true, &registry, &mut prompter)?;
            Action::ResignPlanned {
                id,
                key: key.clone(),
                newest: Box::new(newest),
                insecure: insecure.clone(),
                items,
            }
        }
        Job::Resign { key, insecure, .. } => {
            *session = None;
            let registry = crate::images::RegistryOptions {
                insecure: insecure.clone(),
            };
            let (newest, items) = kw.resign(key, false, &registry, &mut prompter)?;
            Action::Resigned {
                id,
                newest: newest.name(),
                items,
            }
        }
        Job::Piv { token, op } => {
            // The card admits one session: the lane's own goes first.
            *session = None;
            piv_admin(&kw, id, token, op, &mut prompter)?
        }
        Job::Attest { key, version, .. } => {
            *session = None;
            let (v, a) = kw.attest(key, Some(*version))?;
            let mut lines = vec![if a.verified {
                format!(
                    "VERIFIED: {} was generated on the YubiKey, chain to {}",
                    v.name(),
                    a.chain.last().map_or("the root", String::as_str)
                )
            } else {
                format!("NOT VERIFIED: {}", v.name())
            }];
            lines.extend(a.problems.iter().map(|p| format!("problem: {p}")));
            if let Some(s) = a.serial {
                lines.push(format!("attested serial {s}"));
            }
            for (what, value) in [
                ("firmware", &a.firmware),
                ("PIN policy", &a.pin_policy),
                ("touch policy", &a.touch_policy),
                ("form factor", &a.form_factor),
            ] {
                if let Some(x) = value {
                    lines.push(format!("{what} {x}"));
                }
            }
            lines.push("recorded in the audit log (key_attested)".into());
            Action::Attested {
                id,
                title: format!("Attestation of {}", v.name()),
                lines,
                verified: a.verified,
            }
        }
        Job::CeremonyOpen {
            script,
            participants,
            params,
            dir,
        } => {
            use crate::ceremony::{participants::ParticipantsFile, Ceremony, Source};
            let source = Source::resolve(script)?;
            let (people, _) = ParticipantsFile::load(participants)?.split();
            let params = params.iter().cloned().collect();
            let mut c = Ceremony::load(source, &params, people, dir)?;
            c.start(&kw)?;
            Action::CeremonyLoaded {
                id,
                ceremony: Box::new(c),
                failed: None,
                info: None,
            }
        }
        Job::CeremonyResume { progress } => Action::CeremonyLoaded {
            id,
            ceremony: Box::new(crate::ceremony::Ceremony::resume(progress)?),
            failed: None,
            info: None,
        },
        Job::CeremonyAck {
            progress,
            person,
            typed,
        } => {
            let mut c = crate::ceremony::Ceremony::resume(progress)?;
            let failed = c
                .acknowledge_typed(person, typed)
                .err()
                .map(|e| (e.to_string(), e.hint()));
            Action::CeremonyLoaded {
                id,
                ceremony: Box::new(c),
                failed,
                info: None,
            }
        }
        Job::CeremonyStep { progress } => ceremony_step(&kw, id, progress, &mut prompter)?,
        Job::CeremonyFinish { progress } => {
            let mut c = crate::ceremony::Ceremony::resume(progress)?;
            let f = c.finish(&kw, &mut prompter)?;
            Action::CeremonyLoaded {
                id,
                ceremony: Box::new(c),
                failed: None,
                info: Some((
                    "Ceremony completed".into(),
                    vec![
                        format!("transcript  {}", f.transcript.display()),
                        format!("rendering   {}", f.markdown.display()),
                        format!("sha256      {}", f.sha256),
                        format!(
                            "signed by   {} (key id {})",
                            f.signed_by,
                            short_id(&f.key_id)
                        ),
                        format!("chained into the audit log as entry {}", f.audit_seq),
                        format!(
                            "check it any time: keyward ceremony verify {}",
                            f.transcript.display()
                        ),
                    ],
                )),
            }
        }
        Job::ExportBundle {
            keys,
            scopes,
            output,
            sign_with,
            keep_deactivated,
            tar,
        } => export_bundle(
            &kw,
            id,
            &crate::bundle::ExportRequest {
                keys,
                scopes,
                output,
                sign_with: sign_with.as_deref(),
                keep_deactivated: *keep_deactivated,
                tarball: *tar,
            },
            &mut prompter,
        )?,
    })
}

fn short_id(s: &str) -> &str {
    s.get(..16).unwrap_or(s)
}

/// Runs the current ceremony step. A failed step stops the ceremony with its state saved: the
/// screen gets the saved state and the error (the step can be acknowledged and run again).
fn ceremony_step(
    kw: &Keyward,
    id: JobId,
    progress: &std::path::Path,
    prompter: &mut TuiPrompter,
) -> Result<Action> {
    let mut c = crate::ceremony::Ceremony::resume(progress)?;
    match c.run_step(kw, prompter) {
        Ok(r) => {
            let mut lines: Vec<String> = r
                .outputs
                .iter()
                .map(|(k, v)| format!("{k:<14} {v}"))
                .collect();
            lines.extend(
                r.artifacts
                    .iter()
                    .map(|a| format!("{:<14} {} (sha256 {})", a.kind, a.path, short_id(&a.sha256))),
            );
            Ok(Action::CeremonyLoaded {
                id,
                ceremony: Box::new(c),
                failed: None,
                info: (!lines.is_empty()).then(|| {
                    (
                        format!("Step {}/{} done: {}", r.number, r.total, r.title),
                        lines,
                    )
                }),
            })
        }
        Err(e) => {
            // The core saved the failure; show what is on disk.
            let saved = crate::ceremony::Ceremony::resume(progress).unwrap_or(c);
            Ok(Action::CeremonyLoaded {
                id,
                ceremony: Box::new(saved),
                failed: Some((e.to_string(), e.hint())),
                info: None,
            })
        }
    }
}

/// YubiKey PIV administration; the core asks for PINs, PUKs and confirmations.
fn piv_admin(
    kw: &Keyward,
    id: JobId,
    token: &str,
    op: &crate::tui::job::PivOp,
    prompter: &mut TuiPrompter,
) -> Result<Action> {
    use crate::tui::job::PivOp;
    let lines = match op {
        PivOp::ChangePin => {
            kw.piv_change_pin(token, prompter)?;
            vec![format!("the PIN of {token} is changed")]
        }
        PivOp::ChangePuk => {
            let new = prompter.secret(&SecretRequest {
                kind: crate::prompt::SecretKind::NewPuk,
                token,
                info: None,
            })?;
            kw.piv_change_puk(token, &new, prompter)?;
            vec![format!("the PUK of {token} is changed")]
        }
        PivOp::UnblockPin => {
            kw.piv_unblock_pin(token, prompter)?;
            vec![format!("the PIN of {token} is unblocked and set anew")]
        }
        PivOp::SetManagementKey => {
            kw.piv_set_management_key(token, prompter)?;
            vec![
                format!(
                    "{token} has a new random management key, stored PIN-protected on the card"
                ),
                "administration now needs only the PIN (as with ykman)".into(),
            ]
        }
        PivOp::SetRetries { pin, puk } => {
            kw.piv_set_retries(token, *pin, *puk, prompter)?;
            vec![
                format!("{token}: {pin} PIN tries, {puk} PUK tries"),
                format!(
                    "the card reset the PIN to {} and the PUK to {}: change both now (c, C)",
                    crate::token::piv::DEFAULT_PIN,
                    crate::token::piv::DEFAULT_PUK
                ),
            ]
        }
        PivOp::Reset => {
            let lost = kw.piv_reset(token, prompter)?;
            let mut l = vec![format!(
                "the PIV application of {token} is back to factory state (default PIN, PUK and management key)"
            )];
            l.extend(lost.into_iter().map(|k| format!("lost: {k}")));
            l
        }
    };
    Ok(Action::PivDone { id, lines })
}

/// `bundle export`, summarised for the person, with the warning `bundle verify --previous`
/// gives: images the audit log shows were signed only by keys this bundle no longer trusts.
fn export_bundle(
    kw: &Keyward,
    id: JobId,
    req: &crate::bundle::ExportRequest<'_>,
    prompter: &mut TuiPrompter,
) -> Result<Action> {
    let m = kw.export_bundle(req, prompter)?;
    let mut lines = Vec::new();
    for k in &m.keys {
        lines.push(format!(
            "trusts  {}/{} ({}, key id {})",
            k.key,
            k.version,
            k.state,
            k.key_id.get(..16).unwrap_or(&k.key_id)
        ));
    }
    for r in &m.revoked {
        lines.push(format!(
            "revokes {}/{} (key id {})",
            r.key,
            r.version,
            r.key_id.get(..16).unwrap_or(&r.key_id)
        ));
    }
    lines.push(format!("scopes  {}", m.scopes.join(", ")));
    lines.push(match &m.signed_by {
        Some(k) => format!("signed  by key id {}", k.get(..16).unwrap_or(k)),
        None => "NOT signed: verifiers cannot check where it came from".into(),
    });
    // Only the keys this bundle is about: images signed by other keys are another bundle's.
    let names: std::collections::BTreeSet<&str> = m
        .keys
        .iter()
        .map(|k| k.key.as_str())
        .chain(m.revoked.iter().map(|r| r.key.as_str()))
        .collect();
    let losing: Vec<_> = kw
        .images_losing_trust(&m)?
        .into_iter()
        .filter(|(k, _, _)| names.contains(k.rsplit_once('/').map_or(k.as_str(), |(n, _)| n)))
        .collect();
    if !losing.is_empty() {
        lines.push(format!(
            "WARNING: {} image(s) were signed only by keys this bundle does not trust; re-sign them (S) before shipping it:",
            losing.len()
        ));
        for (k, image, digest) in losing.iter().take(8) {
            lines.push(format!(
                "  {image}@{} (signed by {k})",
                digest.get(..19).unwrap_or(digest)
            ));
        }
    }
    Ok(Action::BundleExported {
        id,
        output: std::path::absolute(req.output).unwrap_or_else(|_| req.output.to_owned()),
        lines,
    })
}

/// `Keyward::sign_images`, reporting each image's progress to the Images screen.
#[allow(clippy::too_many_arguments)]
fn sign_images(
    kw: &Keyward,
    tx: &Sender<AppEvent>,
    id: JobId,
    key: &str,
    images: &[String],
    insecure: &[String],
    req: &Request,
    prompter: &mut TuiPrompter,
) -> Result<Action> {
    use crate::oci::ProgressEvent;
    let keys = [key.to_owned()];
    let request = crate::images::SignRequest {
        keys: &keys,
        annotations: Default::default(),
        signer: None,
        registry: crate::images::RegistryOptions {
            insecure: insecure.to_vec(),
        },
        cancel: Some(req.cancel.shared()),
        jobs: None,
        token: None,
    };
    let mut rows: Vec<ImageRow> = images
        .iter()
        .map(|i| ImageRow {
            image: i.clone(),
            digest: None,
            status: ImageStatus::Queued,
        })
        .collect();
    let reports = {
        let mut progress = |_v: &crate::keys::Version, ev: ProgressEvent| {
            let (index, status, digest) = match ev {
                ProgressEvent::Resolved { index, digest } => (
                    index,
                    ImageStatus::Resolved,
                    Some(digest.as_str().to_owned()),
                ),
                ProgressEvent::Signed { index } => (index, ImageStatus::Signed, None),
                ProgressEvent::Finished { index, ok } => (
                    index,
                    if ok {
                        ImageStatus::Done
                    } else {
                        ImageStatus::Failed("failed".into())
                    },
                    None,
                ),
                _ => return,
            };
            if let Some(r) = rows.get_mut(index) {
                r.status = status;
                if digest.is_some() {
                    r.digest = digest;
                }
                let _ = tx.send(AppEvent::Action(Action::ImageProgressed {
                    id,
                    index,
                    row: r.clone(),
                }));
            }
        };
        kw.sign_images(images, &request, prompter, &mut progress)?
    };
    // With two active versions (a rotation overlap) an image needs both signatures.
    for report in &reports {
        for r in &report.report.results {
            let Some(row) = rows.get_mut(r.index) else {
                continue;
            };
            if let Some(d) = &r.digest {
                row.digest = Some(d.as_str().to_owned());
            }
            match &r.outcome {
                Ok(_) if !matches!(row.status, ImageStatus::Failed(_)) => {
                    row.status = ImageStatus::Done
                }
                Ok(_) => {}
                Err(f) => {
                    row.status =
                        ImageStatus::Failed(format!("{}: {}", report.version.name(), f.message))
                }
            }
        }
    }
    Ok(Action::ImagesSigned { id, rows })
}

/// Who signed an image: with `key`, against its versions; else against every key keyward knows.
fn verify_image(
    kw: &Keyward,
    image: &str,
    key: Option<&str>,
    insecure: &[String],
) -> Result<ImageVerification> {
    let registry = crate::images::RegistryOptions {
        insecure: insecure.to_vec(),
    };
    let (v, names) = match key {
        Some(k) => {
            let versions = kw.verification_keys(k)?;
            let names: std::collections::BTreeMap<String, String> = versions
                .iter()
                .map(|(v, pk)| (pk.key_id(), format!("{} ({})", v.name(), v.state)))
                .collect();
            let keys: Vec<_> = versions.into_iter().map(|(_, pk)| pk).collect();
            (
                kw.verify_image(image, &keys, Default::default(), &registry)?,
                names,
            )
        }
        None => kw.image_signatures(image, &registry)?,
    };
    Ok(ImageVerification {
        image: v.image.to_string(),
        digest: v.digest.as_str().to_owned(),
        signers: v
            .reports
            .iter()
            .map(|r| {
                let key_id = r.key_id.clone().unwrap_or_default();
                ImageSigner {
                    verified: r.verified(),
                    note: if r.verified() {
                        names
                            .get(&key_id)
                            .cloned()
                            .unwrap_or_else(|| "a key keyward does not know".into())
                    } else {
                        format!("{:?}", r.verdict)
                    },
                    key_id,
                    annotations: r
                        .provenance
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                }
            })
            .collect(),
    })
}

/// The console's `Prompter`: asks the UI and blocks this worker until the person answers.
pub struct TuiPrompter {
    pub id: JobId,
    pub tx: Sender<AppEvent>,
    pub cancel: CancelFlag,
}

impl TuiPrompter {
    /// Waits for an answer, giving up when the job is cancelled or the UI is gone.
    fn wait<T>(&self, rx: &Receiver<T>) -> std::result::Result<T, PromptError> {
        loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(v) => return Ok(v),
                Err(RecvTimeoutError::Timeout) if !self.cancel.is_cancelled() => continue,
                Err(_) => return Err(PromptError::Cancelled),
            }
        }
    }
}

impl Prompter for TuiPrompter {
    fn secret(&mut self, request: &SecretRequest<'_>) -> std::result::Result<Pin, PromptError> {
        if self.cancel.is_cancelled() {
            return Err(PromptError::Cancelled);
        }
        let (rtx, rrx) = mpsc::sync_channel(1);
        let prompt = SecretPrompt {
            kind: request.kind,
            token: request.token.to_owned(),
            status: request.info.map(|i| i.pin.describe()),
            risky: request
                .info
                .is_some_and(|i| i.pin.final_try || i.pin.tries_left == Some(1)),
            puk: request
                .info
                .is_some_and(|i| i.kind == crate::token::TokenKind::Piv),
        };
        self.tx
            .send(AppEvent::Action(Action::SecretNeeded {
                id: self.id,
                prompt,
                reply: SecretReply(rtx),
            }))
            .map_err(|_| PromptError::Cancelled)?;
        self.wait(&rrx)?.ok_or(PromptError::Cancelled)
    }

    fn confirm(&mut self, question: &Confirm) -> std::result::Result<bool, PromptError> {
        if self.cancel.is_cancelled() {
            return Err(PromptError::Cancelled);
        }
        let (rtx, rrx) = mpsc::sync_channel(1);
        self.tx
            .send(AppEvent::Action(Action::ConfirmNeeded {
                id: self.id,
                confirm: question.clone(),
                reply: ConfirmReply(rtx),
            }))
            .map_err(|_| PromptError::Cancelled)?;
        self.wait(&rrx)
    }

    fn notify(&mut self, message: &str) {
        let _ = self.tx.send(AppEvent::Action(Action::Notified {
            id: self.id,
            message: message.to_owned(),
        }));
    }
}
