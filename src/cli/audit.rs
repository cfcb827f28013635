use super::{print_json, Ctx, Format, FormatArg};
use clap::Subcommand;
use keyward::audit::checkpoint;
use keyward::Error;
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum AuditCmd {
    /// Show audit entries, oldest first (filters combine).
    Show {
        /// Only entries about this key.
        #[arg(long)]
        key: Option<String>,
        /// Only this event type (e.g. key_generated, login, signed).
        #[arg(long)]
        event: Option<String>,
        /// Only this outcome (ok, failed, started, refused).
        #[arg(long)]
        outcome: Option<String>,
        /// Only the last N matching entries.
        #[arg(long)]
        last: Option<usize>,
        #[command(flatten)]
        fmt: FormatArg,
    },
    /// Verify the hash chain and the signed checkpoints; names the first bad entry.
    Verify {
        /// Also check checkpoints kept elsewhere (JSON lines, as `audit checkpoint` prints).
        #[arg(long, value_name = "FILE")]
        checkpoints: Vec<PathBuf>,
        #[command(flatten)]
        fmt: FormatArg,
    },
    /// Sign a checkpoint of the log head with a key (else [audit] checkpoint_key).
    Checkpoint {
        #[arg(long)]
        key: Option<String>,
        #[command(flatten)]
        fmt: FormatArg,
    },
    /// Export the verified log as JSON lines (stdout, or --file).
    Export {
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
    },
}

pub fn run(ctx: &mut Ctx, cmd: AuditCmd) -> Result<(), Error> {
    match cmd {
        AuditCmd::Show {
            key,
            event,
            outcome,
            last,
            fmt,
        } => {
            let mut entries: Vec<_> = ctx
                .kw
                .audit()
                .entries()?
                .into_iter()
                .filter(|e| key.as_deref().is_none_or(|k| e.event.key() == Some(k)))
                .filter(|e| event.as_deref().is_none_or(|t| e.event.kind() == t))
                .filter(|e| {
                    outcome
                        .as_deref()
                        .is_none_or(|o| e.outcome.to_string() == o)
                })
                .collect();
            if let Some(n) = last {
                let skip = entries.len().saturating_sub(n);
                entries.drain(..skip);
            }
            if ctx.format(&fmt) == Format::Json {
                return print_json(&entries);
            }
            for e in entries {
                println!(
                    "{:>6} {} {:<20} {:<8} {}{}",
                    e.seq,
                    e.time,
                    e.actor.to_string(),
                    e.outcome.to_string(),
                    e.event.summary(),
                    e.detail.map(|d| format!(" — {d}")).unwrap_or_default()
                );
            }
            Ok(())
        }
        AuditCmd::Verify { checkpoints, fmt } => {
            let mut extra = Vec::new();
            for p in &checkpoints {
                extra.extend(checkpoint::load(p).map_err(Error::Config)?);
            }
            let report = ctx.kw.verify_audit(&extra)?;
            if ctx.format(&fmt) == Format::Json {
                print_json(&report)?;
            } else if report.is_ok() {
                println!(
                    "audit log verified: {} entries, head {}, {} signed checkpoint(s) checked",
                    report.verified, report.head_hash, report.checkpoints_checked
                );
            }
            match report.problem {
                None => Ok(()),
                Some(p) => Err(Error::AuditBroken(format!(
                    "{} (first bad entry: {}, line {}); entries 1..{} are intact",
                    p.message, p.seq, p.line, report.verified
                ))),
            }
        }
        AuditCmd::Checkpoint { key, fmt } => {
            let rec = ctx.kw.checkpoint(key.as_deref(), &mut ctx.prompter)?;
            if ctx.format(&fmt) == Format::Json {
                return print_json(&rec);
            }
            println!(
                "checkpoint of entry {} ({}) signed with {}/{}; copy this line off the host:",
                rec.seq, rec.hash, rec.key, rec.version
            );
            println!(
                "{}",
                serde_json::to_string(&rec).map_err(|e| Error::Other(e.to_string()))?
            );
            Ok(())
        }
        AuditCmd::Export { file } => {
            let report = ctx.kw.verify_audit(&[])?;
            if let Some(p) = &report.problem {
                return Err(Error::AuditBroken(p.message.clone()));
            }
            // The exact bytes, so that hashes and checkpoints stay verifiable elsewhere.
            let path = ctx.kw.audit().path().to_owned();
            let out = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
            match file {
                Some(f) => {
                    keyward::fsutil::write_atomic(&f, &out, false).map_err(|e| Error::io(&f, e))?
                }
                None => {
                    use std::io::Write;
                    std::io::stdout()
                        .write_all(&out)
                        .map_err(|e| Error::Other(e.to_string()))?
                }
            }
            Ok(())
        }
    }
}
