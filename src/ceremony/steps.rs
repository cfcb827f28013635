//! What each step kind does: one core operation, its outputs saved as soon as it returns so
//! that a retried step never repeats work that completed.

use super::script::{list, StepKind};
use super::{ops, Ceremony};
use crate::backup::{self, Custodian, Unlock};
use crate::bundle::ExportRequest;
use crate::config::ConfigKind;
use crate::error::{Error, Result};
use crate::keys::State;
use crate::prompt::Prompter;
use crate::service::Keyward;
use crate::token::soft::{SoftToken, SOFT_TOKEN_NAME};
use crate::token::{Algorithm, GenerateOptions};
use std::path::{Path, PathBuf};

pub(super) fn execute(
    c: &mut Ceremony,
    index: usize,
    kw: &Keyward,
    prompter: &mut dyn Prompter,
) -> Result<()> {
    let kind = c.progress.steps[index].kind;
    match kind {
        StepKind::CheckOffline => check_offline(c, index),
        StepKind::Confirm => Ok(()),
        StepKind::Generate => generate(c, index, kw, prompter),
        StepKind::Import => import(c, index, kw, prompter),
        StepKind::Backup => backup_create(c, index, kw, prompter),
        StepKind::BackupVerify => backup_open(c, index, kw, prompter, false),
        StepKind::BackupDrill => backup_open(c, index, kw, prompter, true),
        StepKind::Bundle => bundle(c, index, kw, prompter),
        StepKind::DestroySoftwareCopy => destroy_copy(c, index, kw, prompter),
        StepKind::Rotate => rotate(c, index, kw, prompter),
        StepKind::SetState => set_state(c, index, kw),
        StepKind::Destroy => destroy(c, index, kw, prompter),
        StepKind::Checkpoint => checkpoint(c, index, kw, prompter),
    }
}

/// A step argument, rendered; `None` when absent or empty.
fn arg(c: &Ceremony, index: usize, name: &str) -> Result<Option<String>> {
    let spec = &c.source.script.steps[index];
    let Some(t) = spec.with.get(name) else {
        return Ok(None);
    };
    let v = c
        .render(t)
        .map_err(|e| Error::Invalid(format!("step {} argument {name}: {e}", spec.id)))?;
    let v = v.trim().to_owned();
    Ok((!v.is_empty()).then_some(v))
}

fn required(c: &Ceremony, index: usize, name: &str) -> Result<String> {
    arg(c, index, name)?.ok_or_else(|| {
        Error::Invalid(format!(
            "step {} needs a value for {name} (check the ceremony's parameters)",
            c.progress.steps[index].id
        ))
    })
}

fn flag(c: &Ceremony, index: usize, name: &str, default: bool) -> Result<bool> {
    match arg(c, index, name)?.as_deref() {
        None => Ok(default),
        Some("true" | "yes" | "1") => Ok(true),
        Some("false" | "no" | "0") => Ok(false),
        Some(other) => Err(Error::Invalid(format!(
            "step {}: {name} must be true or false, not {other:?}",
            c.progress.steps[index].id
        ))),
    }
}

fn version(c: &Ceremony, index: usize) -> Result<Option<u32>> {
    arg(c, index, "version")?
        .map(|v| {
            v.parse::<u32>().map_err(|_| {
                Error::Invalid(format!(
                    "step {}: version {v:?} is not a number",
                    c.progress.steps[index].id
                ))
            })
        })
        .transpose()
}

fn algorithm(c: &Ceremony, index: usize) -> Result<Option<Algorithm>> {
    arg(c, index, "algorithm")?
        .map(|a| a.parse::<Algorithm>().map_err(Error::Invalid))
        .transpose()
}

fn check_offline(c: &mut Ceremony, index: usize) -> Result<()> {
    let enforce = flag(c, index, "enforce", true)?;
    let sys = Path::new("/sys/class/net");
    let up = ops::interfaces_up(sys).map_err(|e| Error::io(sys, e))?;
    c.set_output(
        index,
        "interfaces_up",
        if up.is_empty() {
            "none".to_string()
        } else {
            up.join(", ")
        },
    );
    c.set_output(index, "enforced", enforce.to_string());
    if enforce && !up.is_empty() {
        return Err(Error::Invalid(format!(
            "the machine is online: network interface(s) {} are up. Disconnect them (unplug the cable; `ip link set DEV down`) and retry; only a rehearsal may run with require_offline=false, which the transcript records",
            up.join(", ")
        )));
    }
    Ok(())
}

/// Writes `KEY-VERSION.pub.pem` into the ceremony directory and records its digest.
fn public_key_file(c: &mut Ceremony, index: usize, key: &str, v: u32, pem: &str) -> Result<()> {
    let path = c.progress.dir.join(format!("{key}-{v}.pub.pem"));
    crate::fsutil::write_atomic(&path, pem.as_bytes(), false).map_err(|e| Error::io(&path, e))?;
    c.add_artifact(index, "public-key", &path, Some(format!("{key}/{v}")))
}

fn generate(
    c: &mut Ceremony,
    index: usize,
    kw: &Keyward,
    prompter: &mut dyn Prompter,
) -> Result<()> {
    let key = required(c, index, "key")?;
    let v = match c.output(index, "version") {
        // An earlier attempt generated it: do not generate another version.
        Some(n) => kw.resolve(&key, n.parse().ok())?,
        None => {
            let token = arg(c, index, "token")?.unwrap_or_else(|| SOFT_TOKEN_NAME.into());
            let alg = algorithm(c, index)?.unwrap_or(Algorithm::P256);
            let inactive = flag(c, index, "inactive", false)?;
            if flag(c, index, "fresh_keystore", false)? {
                if token != SOFT_TOKEN_NAME {
                    return Err(Error::Invalid(
                        "fresh_keystore applies to the software keystore (token = \"soft\")".into(),
                    ));
                }
                if SoftToken::open(kw.home().dir()).is_initialized() {
                    return Err(Error::Invalid(format!(
                        "the software keystore of {} exists already; this ceremony generates its key in a fresh one: run it with a new, empty home (--home DIR)",
                        kw.home().dir().display()
                    )));
                }
            }
            let v = kw.generate(&key, &token, alg, inactive, prompter)?;
            c.set_output(index, "key", v.key.clone());
            c.set_output(index, "version", v.version.to_string());
            c.set_output(index, "key_id", v.key_id.clone());
            c.set_output(index, "token", v.token.clone());
            c.set_output(index, "algorithm", v.algorithm.to_string());
            c.save()?;
            v
        }
    };
    public_key_file(c, index, &v.key, v.version, &v.public_key)
}

fn is_piv(kw: &Keyward, token: &str) -> bool {
    token.starts_with("yubikey:")
        || token == crate::token::piv::PIV_PREFIX
        || kw.config().token(token).map(|t| &t.kind) == Some(&ConfigKind::Piv)
}

fn import(c: &mut Ceremony, index: usize, kw: &Keyward, prompter: &mut dyn Prompter) -> Result<()> {
    let key = required(c, index, "key")?;
    let version = version(c, index)?;
    let tokens = list(&required(c, index, "tokens")?);
    if tokens.is_empty() {
        return Err(Error::Invalid(
            "name at least one token to import into".into(),
        ));
    }
    let slot = arg(c, index, "slot")?;
    for t in &tokens {
        if c.output(index, &format!("{t}.object_id")).is_some() {
            continue; // imported by an earlier attempt
        }
        let options = GenerateOptions {
            slot: if is_piv(kw, t) { slot.clone() } else { None },
            ..GenerateOptions::default()
        };
        let (v, token, k) = kw.import_to_token(&key, version, t, &options, prompter)?;
        let serial = token.info().map(|i| i.serial).unwrap_or_default();
        drop(token);
        c.set_output(index, &format!("{t}.object_id"), k.object_id.0.clone());
        c.set_output(index, &format!("{t}.serial"), serial);
        c.set_output(index, &format!("{t}.key_id"), k.public_key.key_id());
        c.set_output(index, "key", v.key.clone());
        c.set_output(index, "version", v.version.to_string());
        c.set_output(index, "key_id", v.key_id.clone());
        c.save()?;
    }
    c.set_output(index, "tokens", tokens.join(","));
    Ok(())
}

fn backup_create(
    c: &mut Ceremony,
    index: usize,
    kw: &Keyward,
    prompter: &mut dyn Prompter,
) -> Result<()> {
    if c.output(index, "backup_id").is_some() {
        return Ok(());
    }
    let output = PathBuf::from(required(c, index, "output")?);
    let m: u8 = required(c, index, "threshold")?.parse().map_err(|_| {
        Error::Invalid("threshold must be a number between 1 and the custodians".into())
    })?;
    let custodians: Vec<Custodian> = c
        .progress
        .participants
        .custodians
        .iter()
        .map(|p| Custodian {
            name: p.name.clone(),
            recipient: p.recipient.clone().unwrap_or_default(),
        })
        .collect();
    let created = backup::create(
        kw,
        &backup::CreateRequest {
            output: output.clone(),
            shares: Some(m),
            custodians: custodians.clone(),
            ..Default::default()
        },
        prompter,
    )?;
    c.set_output(index, "backup_id", created.backup_id.clone());
    c.set_output(index, "file", created.file.display().to_string());
    c.set_output(index, "threshold", m.to_string());
    c.set_output(index, "shares", custodians.len().to_string());
    c.set_output(
        index,
        "keys",
        created
            .manifest
            .keys
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(", "),
    );
    c.add_artifact(index, "backup", &created.file, Some(created.backup_id))?;
    for cu in &custodians {
        let share = backup::shares::share_path(&created.file, &cu.name);
        c.add_artifact(
            index,
            "share",
            &share,
            Some(format!("share of {} ({})", cu.name, cu.recipient)),
        )?;
    }
    c.save()
}

fn backup_open(
    c: &mut Ceremony,
    index: usize,
    kw: &Keyward,
    prompter: &mut dyn Prompter,
    drill: bool,
) -> Result<()> {
    let file = PathBuf::from(required(c, index, "file")?);
    let custodians = &c.progress.participants.custodians;
    let unlock = Unlock {
        identities: custodians
            .iter()
            .filter_map(|p| p.identity.clone())
            .collect(),
        shares: custodians.iter().filter_map(|p| p.share.clone()).collect(),
    };
    let brought: Vec<String> = custodians
        .iter()
        .filter(|p| p.share.is_some())
        .map(|p| p.name.clone())
        .collect();
    c.add_artifact(index, "backup", &file, None)?;
    if drill {
        let report = backup::drill(kw, &file, &unlock, prompter)?;
        c.set_output(index, "backup_id", report.backup_id.clone());
        c.set_output(index, "keys_checked", report.keys_checked.to_string());
        c.set_output(index, "differences", report.differences.len().to_string());
        c.set_output(index, "shares_from", brought.join(", "));
        if !report.notes.is_empty() {
            c.set_output(index, "notes", report.notes.join("; "));
        }
        if !report.passed() {
            return Err(Error::Invalid(format!(
                "the drill found {} difference(s): {}",
                report.differences.len(),
                report.differences.join("; ")
            )));
        }
    } else {
        let v = backup::verify(&file, &unlock, prompter)?;
        c.set_output(index, "backup_id", v.backup_id.clone());
        c.set_output(index, "keys_checked", v.keys_checked.to_string());
        c.set_output(index, "audit_head_seq", v.manifest.audit.seq.to_string());
        c.set_output(index, "shares_from", brought.join(", "));
    }
    Ok(())
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .collect::<std::io::Result<_>>()
        .map_err(|e| Error::io(dir, e))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

fn bundle(c: &mut Ceremony, index: usize, kw: &Keyward, prompter: &mut dyn Prompter) -> Result<()> {
    let output = PathBuf::from(required(c, index, "output")?);
    if c.output(index, "written").is_none() {
        let keys = arg(c, index, "keys")?.map(|k| list(&k)).unwrap_or_default();
        let scopes = list(&required(c, index, "scopes")?);
        let sign_with = arg(c, index, "sign_with")?;
        let keep_deactivated = flag(c, index, "keep_deactivated", false)?;
        let m = kw.export_bundle(
            &ExportRequest {
                keys: &keys,
                scopes: &scopes,
                output: &output,
                sign_with: sign_with.as_deref(),
                keep_deactivated,
                tarball: false,
            },
            prompter,
        )?;
        c.set_output(index, "written", output.display().to_string());
        c.set_output(
            index,
            "trusts",
            m.keys
                .iter()
                .map(|k| format!("{}/{} {}", k.key, k.version, k.key_id))
                .collect::<Vec<_>>()
                .join(", "),
        );
        if let Some(id) = &m.signed_by {
            c.set_output(index, "signed_by", id.clone());
        }
        c.save()?;
    }
    let mut files = Vec::new();
    files_under(&output, &mut files)?;
    for f in files {
        c.add_artifact(index, "bundle", &f, None)?;
    }
    Ok(())
}

fn destroy_copy(
    c: &mut Ceremony,
    index: usize,
    kw: &Keyward,
    prompter: &mut dyn Prompter,
) -> Result<()> {
    let key = required(c, index, "key")?;
    let version = version(c, index)?;
    let keep_on = arg(c, index, "keep_on")?;
    let v = kw.destroy_software_copy(&key, version, keep_on.as_deref(), prompter)?;
    c.set_output(index, "key", v.key.clone());
    c.set_output(index, "version", v.version.to_string());
    c.set_output(index, "key_id", v.key_id.clone());
    c.set_output(index, "now_on", v.token.clone());
    c.set_output(index, "object_id", v.object_id.clone());
    Ok(())
}

fn rotate(c: &mut Ceremony, index: usize, kw: &Keyward, prompter: &mut dyn Prompter) -> Result<()> {
    let key = required(c, index, "key")?;
    let new = match c.output(index, "version") {
        Some(n) => kw.resolve(&key, n.parse().ok())?,
        None => {
            let token = arg(c, index, "token")?;
            let alg = algorithm(c, index)?;
            let overlap = match arg(c, index, "overlap")?.as_deref() {
                None | Some("0") => Some(0),
                Some(d) => Some(crate::keys::parse_duration(d).map_err(Error::Invalid)?),
            };
            let (new, olds) = kw.rotate(&key, token.as_deref(), alg, overlap, prompter)?;
            c.set_output(index, "key", new.key.clone());
            c.set_output(index, "version", new.version.to_string());
            c.set_output(index, "key_id", new.key_id.clone());
            c.set_output(index, "token", new.token.clone());
            c.set_output(
                index,
                "previous",
                olds.iter()
                    .map(|v| format!("{} {}", v.name(), v.state))
                    .collect::<Vec<_>>()
                    .join(", "),
            );
            c.save()?;
            new
        }
    };
    public_key_file(c, index, &new.key, new.version, &new.public_key)
}

fn set_state(c: &mut Ceremony, index: usize, kw: &Keyward) -> Result<()> {
    let key = required(c, index, "key")?;
    let v = version(c, index)?.ok_or_else(|| Error::Invalid("set-state needs a version".into()))?;
    let state: State = required(c, index, "state")?
        .parse()
        .map_err(Error::Invalid)?;
    let reason = arg(c, index, "reason")?;
    let done = kw.set_state(&key, v, state, reason)?;
    c.set_output(index, "state", done.state.to_string());
    Ok(())
}

fn destroy(
    c: &mut Ceremony,
    index: usize,
    kw: &Keyward,
    prompter: &mut dyn Prompter,
) -> Result<()> {
    let key = required(c, index, "key")?;
    let v = version(c, index)?.ok_or_else(|| Error::Invalid("destroy needs a version".into()))?;
    let reason = arg(c, index, "reason")?;
    let done = kw.destroy(&key, v, reason, prompter)?;
    c.set_output(index, "state", done.state.to_string());
    c.set_output(index, "key_id", done.key_id.clone());
    Ok(())
}

fn checkpoint(
    c: &mut Ceremony,
    index: usize,
    kw: &Keyward,
    prompter: &mut dyn Prompter,
) -> Result<()> {
    let key = required(c, index, "key")?;
    let r = kw.checkpoint(Some(&key), prompter)?;
    c.set_output(index, "seq", r.seq.to_string());
    c.set_output(index, "hash", r.hash.clone());
    c.set_output(index, "signed_by", format!("{}/{}", r.key, r.version));
    c.set_output(index, "key_id", r.key_id.clone());
    Ok(())
}
