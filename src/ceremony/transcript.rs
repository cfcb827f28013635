//! The ceremony transcript: a canonical JSON document signed by a key of the home, its
//! SHA-256 chained into the audit log (`ceremony_completed`), and a Markdown rendering for
//! people. Only the JSON is signed and verified; the Markdown is a rendering of it.

use super::{Artifact, Attempt, AuditMark, Ceremony, CeremonyError, Finished};
use crate::audit::{Event, Outcome};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::prompt::Prompter;
use crate::service::Keyward;
use crate::token::{Algorithm, PublicKey};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

pub const TRANSCRIPT_FORMAT: &str = "keyward-ceremony-transcript/1";
/// Prefixed to the transcript bytes before signing, so that a transcript signature can never
/// be taken for the signature of a file (`key sign`) or a bundle.
pub const SIGNING_CONTEXT: &[u8] = b"keyward-ceremony-transcript/1\n";

/// A participant as the transcript names them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParticipantRecord {
    pub name: String,
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptRecord {
    pub name: String,
    pub title: String,
    pub origin: String,
    pub sha256: String,
}

/// One step in the transcript.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepTranscript {
    pub id: String,
    pub kind: String,
    pub title: String,
    pub instructions: String,
    pub checklist: Vec<String>,
    /// Every attempt, failed ones included, with who acknowledged it and when.
    pub attempts: Vec<Attempt>,
    pub outputs: BTreeMap<String, String>,
    pub artifacts: Vec<Artifact>,
}

/// The signed body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transcript {
    pub format: String,
    pub run_id: String,
    pub script: ScriptRecord,
    pub params: BTreeMap<String, String>,
    pub participants: Vec<ParticipantRecord>,
    /// `user@host` that ran keyward.
    pub host: String,
    pub home: String,
    pub started: String,
    pub completed: String,
    /// Audit head before the ceremony's first entry, and after its last step.
    pub audit_start: AuditMark,
    pub audit_end: AuditMark,
    pub steps: Vec<StepTranscript>,
}

/// Who signed, and the signature (base64) over `SIGNING_CONTEXT` + the pretty JSON of
/// `transcript`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TranscriptSignature {
    pub key: String,
    pub version: u32,
    pub key_id: String,
    pub algorithm: Algorithm,
    pub public_key: String,
    pub signature: String,
}

/// `transcript.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedTranscript {
    pub transcript: Transcript,
    pub signature: TranscriptSignature,
}

impl SignedTranscript {
    /// The exact bytes of `transcript.json`.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut b = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::Other(format!("cannot encode the transcript: {e}")))?;
        b.push(b'\n');
        Ok(b)
    }
}

/// What is signed.
pub fn signed_message(t: &Transcript) -> Result<Vec<u8>> {
    let mut m = SIGNING_CONTEXT.to_vec();
    m.extend(
        serde_json::to_vec_pretty(t)
            .map_err(|e| Error::Other(format!("cannot encode the transcript: {e}")))?,
    );
    Ok(m)
}

/// SHA-256 (hex) and size of a file.
pub fn file_digest(path: &Path) -> Result<(String, u64)> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let r = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if r == 0 {
            break;
        }
        h.update(&buf[..r]);
        n += r as u64;
    }
    Ok((hex::encode(h.finalize()), n))
}

pub(super) fn build(c: &Ceremony) -> Transcript {
    let p = &c.progress;
    let s = &c.source.script;
    Transcript {
        format: TRANSCRIPT_FORMAT.into(),
        run_id: p.run_id.clone(),
        script: ScriptRecord {
            name: s.name.clone(),
            title: s.title.clone(),
            origin: p.script_origin.clone(),
            sha256: p.script_sha256.clone(),
        },
        params: p.params.clone(),
        participants: p
            .participants
            .everyone()
            .into_iter()
            .map(|(role, person)| ParticipantRecord {
                name: person.name.clone(),
                role: super::participants::role_word(role).into(),
                recipient: person.recipient.clone(),
            })
            .collect(),
        host: crate::audit::Actor::current().to_string(),
        home: p
            .home
            .as_ref()
            .map(|h| h.display().to_string())
            .unwrap_or_default(),
        started: p.started.clone().unwrap_or_default(),
        completed: crate::audit::now_rfc3339(),
        audit_start: p.audit_start.clone().unwrap_or(AuditMark {
            seq: 0,
            hash: crate::audit::GENESIS.into(),
        }),
        audit_end: AuditMark {
            seq: 0,
            hash: crate::audit::GENESIS.into(),
        },
        steps: c
            .steps()
            .into_iter()
            .zip(&p.steps)
            .map(|(view, rec)| StepTranscript {
                id: rec.id.clone(),
                kind: rec.kind.as_str().into(),
                title: view.title,
                instructions: view.instructions,
                checklist: view.checklist,
                attempts: rec.attempts.clone(),
                outputs: rec.outputs.clone(),
                artifacts: rec.artifacts.clone(),
            })
            .collect(),
    }
}

pub(super) fn sign_and_write(
    c: &Ceremony,
    kw: &Keyward,
    prompter: &mut dyn Prompter,
) -> Result<Finished> {
    let spec = &c.source.script.transcript;
    let key = c
        .render(&spec.sign_with)
        .map_err(|e| Error::Invalid(format!("[transcript] sign_with: {e}")))?;
    let version = match &spec.sign_version {
        Some(t) => {
            let v = c
                .render(t)
                .map_err(|e| Error::Invalid(format!("[transcript] sign_version: {e}")))?;
            let v = v.trim();
            if v.is_empty() {
                None
            } else {
                Some(v.parse::<u32>().map_err(|_| {
                    Error::Invalid(format!("[transcript] sign_version {v:?} is not a number"))
                })?)
            }
        }
        None => None,
    };
    let mut t = build(c);
    let head = kw.audit().head()?;
    t.audit_end = AuditMark {
        seq: head.seq,
        hash: head.hash,
    };
    let message = signed_message(&t)?;
    let mut signer = kw.signer(key.trim(), version, prompter)?;
    let sig = signer.sign(
        &message,
        Some(format!(
            "ceremony {} transcript {}",
            t.script.name, t.run_id
        )),
    )?;
    let v = signer.version().clone();
    drop(signer);
    let signed = SignedTranscript {
        transcript: t,
        signature: TranscriptSignature {
            key: v.key.clone(),
            version: v.version,
            key_id: v.key_id.clone(),
            algorithm: v.algorithm,
            public_key: v.public_key.clone(),
            signature: base64::engine::general_purpose::STANDARD.encode(&sig),
        },
    };
    let bytes = signed.to_bytes()?;
    let sha256 = hex::encode(Sha256::digest(&bytes));
    let json_path = c.progress.dir.join(super::TRANSCRIPT_FILE);
    let md_path = c.progress.dir.join(super::TRANSCRIPT_MD);
    fsutil::write_atomic(&json_path, &bytes, false).map_err(|e| Error::io(&json_path, e))?;
    let md = markdown(&signed, &sha256);
    fsutil::write_atomic(&md_path, md.as_bytes(), false).map_err(|e| Error::io(&md_path, e))?;
    // Chain the transcript into the log before reporting success.
    let seq = kw.record(
        Event::CeremonyCompleted {
            ceremony: signed.transcript.script.name.clone(),
            run_id: signed.transcript.run_id.clone(),
            transcript: json_path.display().to_string(),
            transcript_sha256: sha256.clone(),
            signed_by: format!("{}/{}", v.key, v.version),
            key_id: v.key_id.clone(),
        },
        Outcome::Ok,
        None,
    )?;
    Ok(Finished {
        transcript: json_path,
        markdown: md_path,
        sha256,
        signed_by: format!("{}/{}", v.key, v.version),
        key_id: v.key_id,
        audit_seq: seq,
    })
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// The human-readable rendering of a signed transcript.
pub fn markdown(s: &SignedTranscript, sha256: &str) -> String {
    use std::fmt::Write as _;
    let t = &s.transcript;
    let mut m = String::new();
    let _ = writeln!(m, "# {} — transcript\n", t.script.title);
    let _ = writeln!(
        m,
        "> This Markdown is a rendering of `transcript.json` (SHA-256 `{sha256}`). Only the JSON\n> is signed and chained into the audit log; check it with `keyward ceremony verify transcript.json`.\n"
    );
    let _ = writeln!(m, "| | |\n| --- | --- |");
    let _ = writeln!(m, "| ceremony | `{}` (run `{}`) |", t.script.name, t.run_id);
    let _ = writeln!(
        m,
        "| script | {} (SHA-256 `{}`) |",
        md_escape(&t.script.origin),
        t.script.sha256
    );
    let _ = writeln!(m, "| started | {} |", t.started);
    let _ = writeln!(m, "| completed | {} |", t.completed);
    let _ = writeln!(m, "| machine | {} |", md_escape(&t.host));
    let _ = writeln!(m, "| home | {} |", md_escape(&t.home));
    let _ = writeln!(
        m,
        "| audit log | entries {} to {} (head `{}`) |",
        t.audit_start.seq + 1,
        t.audit_end.seq,
        t.audit_end.hash
    );
    let _ = writeln!(
        m,
        "| signed by | {}/{} ({}, key id `{}`) |\n",
        s.signature.key, s.signature.version, s.signature.algorithm, s.signature.key_id
    );
    let _ = writeln!(m, "## Participants\n");
    for p in &t.participants {
        match &p.recipient {
            Some(r) => {
                let _ = writeln!(m, "- {} — {} (age recipient `{r}`)", p.name, p.role);
            }
            None => {
                let _ = writeln!(m, "- {} — {}", p.name, p.role);
            }
        }
    }
    if !t.params.is_empty() {
        let _ = writeln!(m, "\n## Parameters\n");
        for (k, v) in &t.params {
            if v.is_empty() {
                let _ = writeln!(m, "- `{k}` (empty)");
            } else {
                let _ = writeln!(m, "- `{k}` = `{}`", md_escape(v));
            }
        }
    }
    let _ = writeln!(m, "\n## Steps");
    for (i, st) in t.steps.iter().enumerate() {
        let _ = writeln!(
            m,
            "\n### {}. {} (`{}`, {})\n",
            i + 1,
            st.title,
            st.id,
            st.kind
        );
        if !st.instructions.is_empty() {
            let _ = writeln!(m, "{}\n", st.instructions);
        }
        for c in &st.checklist {
            let _ = writeln!(m, "- [x] {c}");
        }
        if !st.checklist.is_empty() {
            m.push('\n');
        }
        for (n, a) in st.attempts.iter().enumerate() {
            let _ = writeln!(
                m,
                "Attempt {}: {} (started {}, finished {}; audit entries {}–{}){}",
                n + 1,
                a.outcome.as_deref().unwrap_or("interrupted"),
                a.started.as_deref().unwrap_or("-"),
                a.finished.as_deref().unwrap_or("-"),
                a.audit_from.map(|x| x.to_string()).unwrap_or("-".into()),
                a.audit_to.map(|x| x.to_string()).unwrap_or("-".into()),
                a.error
                    .as_ref()
                    .map(|e| format!(" — {}", md_escape(e)))
                    .unwrap_or_default()
            );
            m.push('\n');
            for ack in &a.acknowledgements {
                let _ = writeln!(
                    m,
                    "- acknowledged by {} ({}) at {} ({})",
                    ack.person,
                    ack.role,
                    ack.time,
                    match ack.method {
                        super::AckMethod::Typed => "typed their name",
                        super::AckMethod::Declared => "declared in the participants file",
                    }
                );
            }
            m.push('\n');
        }
        if !st.outputs.is_empty() {
            let _ = writeln!(m, "| output | value |\n| --- | --- |");
            for (k, v) in &st.outputs {
                let _ = writeln!(m, "| {k} | `{}` |", md_escape(v));
            }
            m.push('\n');
        }
        if !st.artifacts.is_empty() {
            let _ = writeln!(
                m,
                "| file | kind | bytes | SHA-256 |\n| --- | --- | --- | --- |"
            );
            for a in &st.artifacts {
                let _ = writeln!(
                    m,
                    "| {} | {} | {} | `{}` |",
                    md_escape(&a.path),
                    a.kind,
                    a.bytes,
                    a.sha256
                );
            }
        }
    }
    m
}

// ---- verify -----------------------------------------------------------------------------------

/// How one recorded file compares with what is on disk now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ArtifactCheck {
    pub step: String,
    pub kind: String,
    pub path: String,
    /// `ok`, `missing` or `changed`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What `ceremony verify` found.
#[derive(Clone, Debug, Serialize)]
pub struct VerifyReport {
    pub transcript: PathBuf,
    pub sha256: String,
    pub ceremony: String,
    pub run_id: String,
    pub completed: String,
    pub signed_by: String,
    pub key_id: String,
    /// `trusted` (the --trust key), `known` (a version of the home's log), or `embedded`
    /// (only the public key inside the transcript vouches for it).
    pub signer: &'static str,
    pub artifacts: Vec<ArtifactCheck>,
    /// The `ceremony_completed` entry carrying this transcript's SHA-256 (checked with a home).
    pub audit_entry: Option<u64>,
    pub audit_checked: bool,
    /// Failures: the transcript must not be trusted.
    pub problems: Vec<String>,
    /// Worth knowing, not failures (e.g. shares taken away by custodians).
    pub warnings: Vec<String>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks a transcript: its exact bytes (canonical form), its signature, every recorded file
/// digest (missing files are reported, changed ones fail), and — with a home — that the log
/// chains its SHA-256 in a `ceremony_completed` entry and still has the ceremony's audit head.
pub fn verify(
    path: &Path,
    trust: Option<&PublicKey>,
    kw: Option<&Keyward>,
) -> Result<VerifyReport> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let sha256 = hex::encode(Sha256::digest(&bytes));
    let signed: SignedTranscript = serde_json::from_slice(&bytes).map_err(|e| {
        CeremonyError::Verify(format!(
            "{} is not a keyward ceremony transcript (or was edited): {e}",
            path.display()
        ))
    })?;
    let t = &signed.transcript;
    let sig = &signed.signature;
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    if t.format != TRANSCRIPT_FORMAT {
        problems.push(format!(
            "format {:?} is not {TRANSCRIPT_FORMAT:?}",
            t.format
        ));
    }
    if signed.to_bytes()? != bytes {
        problems.push(
            "the file is not byte for byte the transcript keyward wrote (it was edited, reformatted or re-encoded)".into(),
        );
    }
    let mut signer = "embedded";
    match PublicKey::from_pem(&sig.public_key) {
        Err(e) => problems.push(format!("the signer's public key does not parse: {e}")),
        Ok(pk) => {
            if pk.key_id() != sig.key_id {
                problems.push("the signer's key id does not match its public key".into());
            }
            let valid = base64::engine::general_purpose::STANDARD
                .decode(&sig.signature)
                .ok()
                .zip(signed_message(t).ok())
                .is_some_and(|(s, m)| pk.verify(&m, &s));
            if !valid {
                problems.push(format!(
                    "the signature by {}/{} (key id {}) does not verify: the transcript was changed after signing",
                    sig.key,
                    sig.version,
                    sig.key_id.get(..16).unwrap_or(&sig.key_id)
                ));
            }
            if let Some(trusted) = trust {
                if trusted.key_id() == pk.key_id() {
                    signer = "trusted";
                } else {
                    problems.push(format!(
                        "signed by key id {}, not by the --trust key {}",
                        sig.key_id.get(..16).unwrap_or(&sig.key_id),
                        &trusted.key_id()[..16]
                    ));
                }
            }
        }
    }
    let base = path.parent().unwrap_or(Path::new("."));
    let mut artifacts = Vec::new();
    for st in &t.steps {
        for a in &st.artifacts {
            let p = Path::new(&a.path);
            let full = if p.is_absolute() {
                p.to_owned()
            } else {
                base.join(p)
            };
            let status = match file_digest(&full) {
                Ok((d, _)) if d == a.sha256 => "ok",
                Ok(_) => {
                    problems.push(format!(
                        "{} ({}, step {}) changed since the ceremony: its SHA-256 is not the recorded {}",
                        a.path,
                        a.kind,
                        st.id,
                        a.sha256.get(..16).unwrap_or(&a.sha256)
                    ));
                    "changed"
                }
                Err(_) => {
                    warnings.push(format!(
                        "{} ({}, step {}) is not here to check{}",
                        a.path,
                        a.kind,
                        st.id,
                        if a.kind == "share" {
                            ": shares leave with their custodians; check each custodian's copy"
                        } else {
                            ""
                        }
                    ));
                    "missing"
                }
            };
            artifacts.push(ArtifactCheck {
                step: st.id.clone(),
                kind: a.kind.clone(),
                path: a.path.clone(),
                status,
                note: a.note.clone(),
            });
        }
    }
    let mut audit_entry = None;
    if let Some(kw) = kw {
        let mut found = None;
        let mut end_present = t.audit_end.seq == 0;
        kw.audit().for_each_from(0, |e, _| {
            if e.seq == t.audit_end.seq && e.hash == t.audit_end.hash {
                end_present = true;
            }
            if let Event::CeremonyCompleted {
                transcript_sha256,
                run_id,
                ..
            } = &e.event
            {
                if *transcript_sha256 == sha256 && *run_id == t.run_id && e.outcome == Outcome::Ok {
                    found = Some(e.seq);
                }
            }
        })?;
        audit_entry = found;
        if found.is_none() {
            problems.push(format!(
                "the audit log of {} has no ceremony_completed entry with this transcript's SHA-256 {}",
                kw.home().dir().display(),
                &sha256[..16]
            ));
        }
        if !end_present {
            problems.push(format!(
                "the audit log of {} no longer has entry {} ({}…) that the transcript recorded as its head",
                kw.home().dir().display(),
                t.audit_end.seq,
                t.audit_end.hash.get(..16).unwrap_or(&t.audit_end.hash)
            ));
        }
        let report = kw.verify_audit(&[])?;
        if let Some(p) = report.problem {
            problems.push(format!("the audit log does not verify: {}", p.message));
        }
        if signer == "embedded" {
            let registry = kw.registry()?;
            if registry
                .version(&sig.key, sig.version)
                .is_some_and(|v| v.key_id == sig.key_id)
            {
                signer = "known";
            } else {
                warnings.push(format!(
                    "{}/{} with key id {} is not a key version of this home",
                    sig.key,
                    sig.version,
                    sig.key_id.get(..16).unwrap_or(&sig.key_id)
                ));
            }
        }
    }
    Ok(VerifyReport {
        transcript: path.to_owned(),
        sha256,
        ceremony: t.script.name.clone(),
        run_id: t.run_id.clone(),
        completed: t.completed.clone(),
        signed_by: format!("{}/{}", sig.key, sig.version),
        key_id: sig.key_id.clone(),
        signer,
        artifacts,
        audit_entry,
        audit_checked: kw.is_some(),
        problems,
        warnings,
    })
}
