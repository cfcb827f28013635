use super::{print_json, Ctx, Format, FormatArg};
use clap::Subcommand;
use keyward::keys::{format_duration, parse_duration, parse_key_ref, State};
use keyward::token::Algorithm;
use keyward::Error;
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum KeyCmd {
    /// Generate a new version of NAME on a token (non-extractable where the token allows).
    #[command(
        after_help = "Example:\n  keyward key generate release --token hsm --algorithm p256"
    )]
    Generate {
        name: String,
        /// The token to generate on (`soft`, a name from keyward.toml, or a pkcs11: URI).
        #[arg(long)]
        token: String,
        #[arg(long, default_value = "p256", value_parser = parse_alg)]
        algorithm: Algorithm,
        /// Create the version pre-active (activate it later).
        #[arg(long)]
        inactive: bool,
        #[command(flatten)]
        placement: super::piv::PlacementArgs,
        #[command(flatten)]
        fmt: FormatArg,
    },
    /// List every key version with its state.
    List {
        #[command(flatten)]
        fmt: FormatArg,
    },
    /// Show a key's versions and public keys.
    Show {
        name: String,
        #[command(flatten)]
        fmt: FormatArg,
    },
    /// Activate a pre-active (or suspended) version.
    Activate {
        /// NAME/VERSION
        version: String,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        fmt: FormatArg,
    },
    /// Suspend an active version (it stops signing until resumed).
    Suspend {
        /// NAME/VERSION
        version: String,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        fmt: FormatArg,
    },
    /// Resume a suspended version.
    Resume {
        /// NAME/VERSION
        version: String,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        fmt: FormatArg,
    },
    /// Deactivate a version: it no longer signs; its public key still verifies old signatures.
    Deactivate {
        /// NAME/VERSION
        version: String,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        fmt: FormatArg,
    },
    /// Mark a version compromised: bundles revoke it and verifiers stop trusting it.
    Compromise {
        /// NAME/VERSION
        version: String,
        /// Since when the key must be distrusted (RFC 3339, e.g. 2026-11-20T00:00:00Z).
        #[arg(long)]
        since: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        fmt: FormatArg,
    },
    /// Destroy the private key of a version on its token (asks for a confirmation naming it).
    Destroy {
        /// NAME/VERSION
        version: String,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        fmt: FormatArg,
    },
    /// Set the cryptoperiod policy of a key.
    #[command(
        after_help = "Example:\n  keyward key policy release --rotate-every 90d --overlap 14d"
    )]
    Policy {
        name: String,
        /// Time between rotations (e.g. 90d, 12w, 1y).
        #[arg(long, value_name = "DURATION")]
        rotate_every: String,
        /// How long the previous version keeps signing after a rotation (e.g. 14d).
        #[arg(long, value_name = "DURATION")]
        overlap: String,
        #[command(flatten)]
        fmt: FormatArg,
    },
    /// Rotate: the next version becomes active; older active versions stay active for the overlap.
    Rotate {
        name: String,
        /// Token for the new version (default: the token of the newest version).
        #[arg(long)]
        token: Option<String>,
        #[arg(long, value_parser = parse_alg)]
        algorithm: Option<Algorithm>,
        /// Overlap for this rotation (default: the key's policy, else none).
        #[arg(long, value_name = "DURATION")]
        overlap: Option<String>,
        #[command(flatten)]
        fmt: FormatArg,
    },
    /// Versions due or overdue for rotation or deactivation; exit code 9 when any is overdue.
    Due {
        /// Deactivate versions whose overlap has ended.
        #[arg(long)]
        apply: bool,
        #[command(flatten)]
        fmt: FormatArg,
    },
    /// Print the SPKI PEM public key of NAME (newest active version) or NAME/VERSION.
    PublicKey { key: String },
    /// Sign a file (SHA-256; DER ECDSA, RSA PKCS#1 v1.5, or Ed25519) with the newest active version.
    #[command(
        after_help = "Example:\n  keyward key sign release --input f --output f.sig\n  openssl dgst -sha256 -verify pub.pem -signature f.sig f"
    )]
    Sign {
        /// NAME or NAME/VERSION
        name: String,
        #[arg(long, value_name = "FILE")]
        input: PathBuf,
        #[arg(long, value_name = "FILE")]
        output: PathBuf,
        /// Sign on this token: the version's own, or one holding a copy of its key
        /// (`token piv import`). Default: the version's own token.
        #[arg(long)]
        token: Option<String>,
    },
}

fn need_version(s: &str) -> Result<(String, u32), Error> {
    let (key, v) = parse_key_ref(s).map_err(Error::Invalid)?;
    let v = v.ok_or_else(|| Error::Invalid(format!("name the version: {key}/N")))?;
    Ok((key, v))
}

fn show_version(ctx: &Ctx, fmt: &FormatArg, v: &keyward::keys::Version) -> Result<(), Error> {
    if ctx.format(fmt) == Format::Json {
        return print_json(&version_json(v));
    }
    println!("{}/{} is now {}", v.key, v.version, v.state);
    Ok(())
}

fn transition(
    ctx: &mut Ctx,
    version: &str,
    to: State,
    reason: Option<String>,
    fmt: &FormatArg,
) -> Result<(), Error> {
    let (key, v) = need_version(version)?;
    let out = ctx.kw.set_state(&key, v, to, reason)?;
    show_version(ctx, fmt, &out)
}

fn parse_alg(s: &str) -> Result<Algorithm, String> {
    s.parse()
}

fn version_json(v: &keyward::keys::Version) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or_default()
}

pub fn run(ctx: &mut Ctx, cmd: KeyCmd) -> Result<(), Error> {
    match cmd {
        KeyCmd::Generate {
            name,
            token,
            algorithm,
            inactive,
            placement,
            fmt,
        } => {
            let v = ctx.kw.generate_with(
                &name,
                &token,
                algorithm,
                inactive,
                &placement.options(),
                &mut ctx.prompter,
            )?;
            if ctx.format(&fmt) == Format::Json {
                return print_json(&version_json(&v));
            }
            println!(
                "generated {}/{} ({}) on {}: {}\nkey id {}",
                v.key, v.version, v.algorithm, v.token, v.state, v.key_id
            );
            if v.token == "soft" {
                println!("note: software key — not hardware protected");
            }
            Ok(())
        }
        KeyCmd::List { fmt } => {
            let fixed = ctx.kw.reconcile()?;
            for f in fixed {
                eprintln!("note: interrupted generation {f}");
            }
            for v in ctx.kw.end_overlaps()? {
                eprintln!(
                    "note: {}/{} deactivated: its rotation overlap ended",
                    v.key, v.version
                );
            }
            let reg = ctx.kw.registry()?;
            let due = reg.due(keyward::service::now_ts());
            if ctx.format(&fmt) == Format::Json {
                let all: Vec<_> = reg.versions().map(version_json).collect();
                return print_json(&all);
            }
            if reg.keys.is_empty() {
                println!("no keys yet; generate one with `keyward key generate NAME --token soft`");
                return Ok(());
            }
            println!(
                "{:<24} {:<12} {:<8} {:<12} {:<20} KEY ID",
                "VERSION", "STATE", "ALG", "TOKEN", "CREATED"
            );
            for v in reg.versions() {
                let note = due
                    .iter()
                    .filter(|d| d.key == v.key && d.version == v.version && d.status != "ok")
                    .map(|d| format!("  [{} {} by {}]", d.action, d.status, d.due))
                    .collect::<String>();
                println!(
                    "{:<24} {:<12} {:<8} {:<12} {:<20} {}{note}",
                    format!("{}/{}", v.key, v.version),
                    v.state.as_str(),
                    v.algorithm.as_str(),
                    v.token,
                    &v.created[..v.created.len().min(19)],
                    &v.key_id[..16]
                );
            }
            for p in &reg.pending {
                println!(
                    "{:<24} {:<12} {:<8} {:<12} (generation in progress or interrupted)",
                    format!("{}/{}", p.key, p.version),
                    "pending",
                    p.algorithm.as_str(),
                    p.token
                );
            }
            Ok(())
        }
        KeyCmd::Show { name, fmt } => {
            let _ = ctx.kw.reconcile()?;
            let reg = ctx.kw.registry()?;
            let versions = reg
                .keys
                .get(&name)
                .ok_or(Error::UnknownKey { name: name.clone() })?;
            if ctx.format(&fmt) == Format::Json {
                let all: Vec<_> = versions.values().map(version_json).collect();
                let attestations = ctx.kw.attestations(&name)?;
                return print_json(
                    &serde_json::json!({"key": name, "versions": all, "attestations": attestations}),
                );
            }
            println!("key {name}");
            for v in versions.values() {
                println!(
                    "\n  {}/{}  {}\n  algorithm  {} ({})\n  token      {} (serial {})\n  object id  {}\n  key id     {}\n  created    {}\n  updated    {}",
                    v.key, v.version, v.state, v.algorithm, v.algorithm.signature_scheme(),
                    v.token, v.token_serial, v.object_id, v.key_id, v.created, v.updated
                );
                if v.token == "soft" {
                    println!("  protection software — not hardware protected");
                }
                for c in &v.copies {
                    println!(
                        "  copy       {} (serial {}) object id {}, since {}",
                        c.token, c.token_serial, c.object_id, c.since
                    );
                }
                for line in v.public_key.lines() {
                    println!("  {line}");
                }
            }
            super::piv::print_attestations(ctx, &name)?;
            Ok(())
        }
        KeyCmd::Activate {
            version,
            reason,
            fmt,
        } => transition(ctx, &version, State::Active, reason, &fmt),
        KeyCmd::Suspend {
            version,
            reason,
            fmt,
        } => transition(ctx, &version, State::Suspended, reason, &fmt),
        KeyCmd::Resume {
            version,
            reason,
            fmt,
        } => transition(ctx, &version, State::Active, reason, &fmt),
        KeyCmd::Deactivate {
            version,
            reason,
            fmt,
        } => transition(ctx, &version, State::Deactivated, reason, &fmt),
        KeyCmd::Compromise {
            version,
            since,
            reason,
            fmt,
        } => {
            let (key, v) = need_version(&version)?;
            let out = ctx.kw.compromise(&key, v, &since, reason)?;
            show_version(ctx, &fmt, &out)
        }
        KeyCmd::Destroy {
            version,
            reason,
            fmt,
        } => {
            let (key, v) = need_version(&version)?;
            let out = ctx.kw.destroy(&key, v, reason, &mut ctx.prompter)?;
            show_version(ctx, &fmt, &out)
        }
        KeyCmd::Policy {
            name,
            rotate_every,
            overlap,
            fmt,
        } => {
            let every = parse_duration(&rotate_every).map_err(Error::Invalid)?;
            let overlap = parse_duration(&overlap).map_err(Error::Invalid)?;
            ctx.kw.set_policy(&name, every, overlap)?;
            if ctx.format(&fmt) == Format::Json {
                return print_json(&serde_json::json!({
                    "key": name, "rotate_every_seconds": every, "overlap_seconds": overlap,
                }));
            }
            println!(
                "{name}: rotate every {}, overlap {}",
                format_duration(every),
                format_duration(overlap)
            );
            Ok(())
        }
        KeyCmd::Rotate {
            name,
            token,
            algorithm,
            overlap,
            fmt,
        } => {
            let overlap = overlap
                .map(|o| parse_duration(&o).map_err(Error::Invalid))
                .transpose()?;
            let (new, old) = ctx.kw.rotate(
                &name,
                token.as_deref(),
                algorithm,
                overlap,
                &mut ctx.prompter,
            )?;
            if ctx.format(&fmt) == Format::Json {
                return print_json(&serde_json::json!({
                    "new": version_json(&new),
                    "previous": old.iter().map(version_json).collect::<Vec<_>>(),
                }));
            }
            println!(
                "rotated {name}: {}/{} ({}) on {} is active",
                new.key, new.version, new.algorithm, new.token
            );
            for o in old {
                match (&o.state, &o.overlap_until) {
                    (State::Active, Some(until)) => println!(
                        "  {}/{} stays active until {until} (overlap); `keyward key due --apply` deactivates it then",
                        o.key, o.version
                    ),
                    _ => println!("  {}/{} is now {}", o.key, o.version, o.state),
                }
            }
            Ok(())
        }
        KeyCmd::Due { apply, fmt } => {
            let applied = if apply {
                ctx.kw.end_overlaps()?
            } else {
                Vec::new()
            };
            let due = ctx.kw.registry()?.due(keyward::service::now_ts());
            let overdue = due.iter().any(|d| d.status == "overdue");
            if ctx.format(&fmt) == Format::Json {
                print_json(&serde_json::json!({
                    "due": due,
                    "deactivated": applied.iter().map(version_json).collect::<Vec<_>>(),
                }))?;
            } else {
                for v in &applied {
                    println!("deactivated {}/{} (overlap ended)", v.key, v.version);
                }
                if due.is_empty() {
                    println!("nothing due (keys without a policy are never due; see `keyward key policy`)");
                }
                for d in &due {
                    println!(
                        "{:<8} {}/{}  {} by {}",
                        d.status, d.key, d.version, d.action, d.due
                    );
                }
            }
            if overdue {
                return Err(Error::Overdue(
                    due.iter()
                        .filter(|d| d.status == "overdue")
                        .map(|d| format!("{}/{} {}", d.key, d.version, d.action))
                        .collect::<Vec<_>>()
                        .join(", "),
                ));
            }
            Ok(())
        }
        KeyCmd::PublicKey { key } => {
            let (name, v) = parse_key_ref(&key).map_err(Error::Invalid)?;
            let (_, pk) = ctx.kw.public_key(&name, v)?;
            print!("{}", pk.to_pem());
            Ok(())
        }
        KeyCmd::Sign {
            name,
            input,
            output,
            token,
        } => {
            let (key, v) = parse_key_ref(&name).map_err(Error::Invalid)?;
            let data = std::fs::read(&input).map_err(|e| Error::io(&input, e))?;
            let subject = Some(format!("file {}", input.display()));
            let (version, sig) =
                ctx.kw
                    .sign_via(&key, v, token.as_deref(), &data, subject, &mut ctx.prompter)?;
            keyward::fsutil::write_atomic(&output, &sig, false)
                .map_err(|e| Error::io(&output, e))?;
            if ctx.format == Format::Json {
                return print_json(&serde_json::json!({
                    "key": version.key, "version": version.version, "key_id": version.key_id,
                    "input": input, "output": output,
                }));
            }
            eprintln!(
                "signed {} with {}/{} -> {}",
                input.display(),
                version.key,
                version.version,
                output.display()
            );
            Ok(())
        }
    }
}
