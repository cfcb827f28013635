use super::{print_json, Ctx, Format, FormatArg};
use clap::Subcommand;
use keyward::Error;
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum TokenCmd {
    /// List the software keystore, configured tokens and tokens found in well-known modules.
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
                    (Some(i), _) => println!(
                        "{:<12} {:<7} {:<22} {:<18} {:<18} {}",
                        t.name,
                        t.kind.to_string(),
                        i.model,
                        truncate(&i.serial, 18),
                        i.pin.describe(),
                        i.protection()
                    ),
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
