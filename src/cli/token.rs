use super::{print_json, Ctx, Format, FormatArg};
use clap::Subcommand;
use keyward::Error;
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum TokenCmd {
    /// List the software keystore, configured tokens, YubiKeys found over PC/SC and tokens
    /// found in well-known PKCS#11 modules; warns about factory-default PINs and keys.
    #[command(after_help = "Example:\n  keyward token list\n  keyward token list --output json")]
    List {
        #[command(flatten)]
        fmt: FormatArg,
    },
    /// Initialise a PKCS#11 token (SO PIN, then user PIN) and register it under NAME.
    #[command(
        after_help = "Example:\n  KEYWARD_SO_PIN=... KEYWARD_PIN=... keyward token init --module /usr/lib/softhsm/libsofthsm2.so --label keyward --name hsm"
    )]
    Init {
        /// Path of the PKCS#11 module.
        #[arg(long, value_name = "PATH")]
        module: PathBuf,
        /// Token label to write.
        #[arg(long)]
        label: String,
        /// Name keyward will use for the token.
        #[arg(long)]
        name: String,
        #[command(flatten)]
        fmt: FormatArg,
    },
    /// Find keyward's key versions on a token (by their labels / slot certificates) and adopt
    /// those the audit log does not know, as pre-active: rebuilds a lost home from the cards.
    #[command(
        after_help = "Example:\n  keyward token scan yubikey:12345678\n  keyward key activate release/1   # after checking its key id"
    )]
    Scan {
        /// The token (yubikey:SERIAL, a keyward.toml name, a pkcs11: URI, soft).
        token: String,
        #[command(flatten)]
        fmt: FormatArg,
    },
    /// YubiKey PIV administration: PIN, PUK, retries, management key, reset, attestation,
    /// import.
    #[command(subcommand)]
    Piv(super::piv::PivCmd),
}

pub fn run(ctx: &mut Ctx, cmd: TokenCmd) -> Result<(), Error> {
    match cmd {
        TokenCmd::List { fmt } => {
            let tokens = ctx.kw.list_tokens();
            if ctx.format(&fmt) == Format::Json {
                return print_json(&tokens);
            }
            println!(
                "{:<12} {:<7} {:<22} {:<18} {:<18} PROTECTION",
                "NAME", "KIND", "MODEL", "SERIAL", "PIN"
            );
            for t in tokens {
                match (&t.info, &t.error) {
                    (Some(i), _) => {
                        let mut pin = i.pin.describe();
                        if i.kind == keyward::token::TokenKind::Piv {
                            pin = format!(
                                "{pin}, PUK {}",
                                i.puk_tries_left
                                    .map(|n| n.to_string())
                                    .unwrap_or_else(|| "?".into())
                            );
                        }
                        println!(
                            "{:<12} {:<7} {:<22} {:<18} {:<18} {}{}",
                            t.name,
                            t.kind.to_string(),
                            i.model,
                            truncate(&i.serial, 18),
                            pin,
                            i.protection(),
                            if i.kind == keyward::token::TokenKind::Piv {
                                format!(", firmware {}", i.firmware)
                            } else {
                                String::new()
                            }
                        );
                        for w in &i.warnings {
                            println!("  WARNING: {w}");
                        }
                    }
                    (None, Some(e)) => {
                        println!("{:<12} {:<7} unavailable: {e}", t.name, t.kind.to_string())
                    }
                    (None, None) => {
                        println!("{:<12} {:<7} unavailable", t.name, t.kind.to_string())
                    }
                }
            }
            Ok(())
        }
        TokenCmd::Scan { token, fmt } => {
            let report = ctx.kw.scan_token_with(&token, Some(&mut ctx.prompter))?;
            if ctx.format(&fmt) == Format::Json {
                return print_json(&report);
            }
            println!("{} (serial {}):", report.token, report.serial);
            if report.keys.is_empty() {
                println!("  no keys");
            }
            for k in &report.keys {
                println!(
                    "  {:<6} {:<24} key id {}  {}{}",
                    k.object_id,
                    k.label,
                    &k.key_id[..16],
                    k.status,
                    match k.wrappable {
                        Some(true) => " (wrappable)",
                        _ => "",
                    }
                );
            }
            if report.keys.iter().any(|k| k.status == "adopted") {
                println!("adopted versions are pre-active: compare their key ids with your records, then `keyward key activate NAME/VERSION`");
            }
            if report.keys.iter().any(|k| k.status == "conflict") {
                println!(
                    "conflict: the log knows that version with another key; keyward left it alone"
                );
            }
            Ok(())
        }
        TokenCmd::Piv(c) => super::piv::run(ctx, c),
        TokenCmd::Init {
            module,
            label,
            name,
            fmt,
        } => {
            let slot = ctx
                .kw
                .init_pkcs11_token(&module, &label, &name, &mut ctx.prompter)?;
            if ctx.format(&fmt) == Format::Json {
                return print_json(&serde_json::json!({
                    "name": name, "label": slot.label, "serial": slot.serial,
                    "model": slot.model, "module": module,
                }));
            }
            println!(
                "initialised token {:?} (serial {}, {}) and registered it as {name:?}",
                slot.label, slot.serial, slot.model
            );
            Ok(())
        }
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let t: String = s.chars().take(n - 1).collect();
        format!("{t}…")
    }
}
