use super::{print_json, Ctx, Format, FormatArg};
use clap::Subcommand;
use keyward::keys::{parse_key_ref, State};
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
    },
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
            fmt,
        } => {
            let v = ctx
                .kw
                .generate(&name, &token, algorithm, inactive, &mut ctx.prompter)?;
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
            let reg = ctx.kw.registry()?;
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
                println!(
                    "{:<24} {:<12} {:<8} {:<12} {:<20} {}",
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
                return print_json(&serde_json::json!({"key": name, "versions": all}));
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
                for line in v.public_key.lines() {
                    println!("  {line}");
                }
            }
            Ok(())
        }
        KeyCmd::Activate {
            version,
            reason,
            fmt,
        } => {
            let (key, v) = parse_key_ref(&version).map_err(Error::Invalid)?;
            let v =
                v.ok_or_else(|| Error::Invalid(format!("name the version to activate: {key}/N")))?;
            let out = ctx.kw.set_state(&key, v, State::Active, reason)?;
            if ctx.format(&fmt) == Format::Json {
                return print_json(&version_json(&out));
            }
            println!("{}/{} is now {}", out.key, out.version, out.state);
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
        } => {
            let (key, v) = parse_key_ref(&name).map_err(Error::Invalid)?;
            let data = std::fs::read(&input).map_err(|e| Error::io(&input, e))?;
            let subject = Some(format!("file {}", input.display()));
            let (version, sig) = ctx.kw.sign(&key, v, &data, subject, &mut ctx.prompter)?;
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
