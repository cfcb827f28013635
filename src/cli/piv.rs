//! `keyward token piv ...`: YubiKey PIV administration, attestation and import; the
//! `--slot/--pin-policy/--touch-policy` options of `key generate`.

use super::{print_json, Ctx, Format, FormatArg};
use clap::Subcommand;
use keyward::keys::parse_key_ref;
use keyward::prompt::PromptError;
use keyward::secret::Pin;
use keyward::token::piv::{PinPolicyChoice, TouchPolicyChoice};
use keyward::token::GenerateOptions;
use keyward::Error;

/// Where a key goes on a YubiKey (ignored by other tokens only when left unset).
#[derive(clap::Args, Debug, Default)]
pub struct PlacementArgs {
    /// YubiKey PIV slot (9c, 9a, 9d, 9e, 82..95). Default: 9c, else the first free retired slot.
    #[arg(long, value_name = "SLOT")]
    pub slot: Option<String>,
    /// YubiKey PIN policy: never, once, always (default: always; keyward keeps the PIN for
    /// the session, so a batch still needs one PIN entry).
    #[arg(long, value_name = "POLICY", value_parser = parse_pin_policy)]
    pub pin_policy: Option<PinPolicyChoice>,
    /// YubiKey touch policy: never, always, cached (default: cached: one touch covers 15 s).
    #[arg(long, value_name = "POLICY", value_parser = parse_touch_policy)]
    pub touch_policy: Option<TouchPolicyChoice>,
}

impl PlacementArgs {
    pub fn options(&self) -> GenerateOptions {
        GenerateOptions {
            slot: self.slot.clone(),
            pin_policy: self.pin_policy,
            touch_policy: self.touch_policy,
        }
    }
}

fn parse_pin_policy(s: &str) -> Result<PinPolicyChoice, String> {
    s.parse()
}

fn parse_touch_policy(s: &str) -> Result<TouchPolicyChoice, String> {
    s.parse()
}

#[derive(Subcommand, Debug)]
pub enum PivCmd {
    /// Change the PIN (current PIN: KEYWARD_PIN or prompt; new PIN: KEYWARD_NEW_PIN or prompt).
    #[command(
        after_help = "Example:\n  KEYWARD_PIN=123456 KEYWARD_NEW_PIN=... keyward token piv change-pin yubikey:12345678"
    )]
    ChangePin {
        /// The YubiKey: yubikey:SERIAL, a keyward.toml name, or `yubikey` when only one is attached.
        token: String,
        #[command(flatten)]
        fmt: FormatArg,
    },
    /// Change the PUK (current: KEYWARD_PUK or prompt; new: KEYWARD_NEW_PUK or prompt).
    #[command(
        after_help = "Example:\n  KEYWARD_PUK=12345678 KEYWARD_NEW_PUK=... keyward token piv change-puk yubikey:12345678"
    )]
    ChangePuk {
        token: String,
        #[command(flatten)]
        fmt: FormatArg,
    },
    /// Unblock (and set) the PIN with the PUK (KEYWARD_PUK; new PIN: KEYWARD_NEW_PIN).
    #[command(
        after_help = "Example:\n  KEYWARD_PUK=... KEYWARD_NEW_PIN=... keyward token piv unblock-pin yubikey:12345678"
    )]
    UnblockPin {
        token: String,
        #[command(flatten)]
        fmt: FormatArg,
    },
    /// Set the PIN and PUK retry counts. The card resets PIN and PUK to factory defaults.
    #[command(
        after_help = "Example:\n  keyward token piv set-retries yubikey:12345678 --pin 5 --puk 3 --yes"
    )]
    SetRetries {
        token: String,
        /// PIN tries before the PIN locks (1-255).
        #[arg(long, value_parser = clap::value_parser!(u8).range(1..))]
        pin: u8,
        /// PUK tries before the PUK blocks (1-255).
        #[arg(long, value_parser = clap::value_parser!(u8).range(1..))]
        puk: u8,
        #[command(flatten)]
        fmt: FormatArg,
    },
    /// Replace the management key with a random one stored PIN-protected on the card (as
    /// ykman does): from then on the PIN alone unlocks administration.
    #[command(
        after_help = "Example:\n  KEYWARD_PIN=... keyward token piv set-management-key yubikey:12345678"
    )]
    SetManagementKey {
        token: String,
        #[command(flatten)]
        fmt: FormatArg,
    },
    /// What each slot holds: algorithm, origin (generated/imported), policies, key id,
    /// certificate (GET METADATA on firmware 5.3+, else the certificates).
    #[command(after_help = "Example:\n  keyward token piv slots yubikey:12345678")]
    Slots {
        token: String,
        #[command(flatten)]
        fmt: FormatArg,
    },
    /// Reset the PIV application: every key on the card is lost (asks, naming them).
    #[command(
        after_help = "Example:\n  keyward token piv reset yubikey:12345678          # asks\n  keyward --batch --yes token piv reset yubikey:12345678"
    )]
    Reset {
        token: String,
        #[command(flatten)]
        fmt: FormatArg,
    },
    /// Check a key version's attestation: the card's certificate for the slot, chained through
    /// the card's f9 certificate to Yubico's PIV root CA (or a root keyward.toml lists under
    /// `[piv] attestation_roots`); recorded in the audit log with the root and the serial.
    #[command(after_help = "Example:\n  keyward token piv attest release/1")]
    Attest {
        /// NAME or NAME/VERSION
        key: String,
        /// The YubiKey holding the key (its own token or a copy's); needed only when several
        /// YubiKeys hold copies.
        #[arg(long)]
        token: Option<String>,
        /// Also print the attestation certificates (PEM).
        #[arg(long)]
        pem: bool,
        #[command(flatten)]
        fmt: FormatArg,
    },
    /// Copy a software-keystore key version into a YubiKey slot (air-gapped ceremonies: one
    /// key on several cards). The copy is recorded; the version stays on the keystore.
    #[command(
        after_help = "Example:\n  keyward token piv import ceremony/1 --token yubikey:12345678 --slot 9c"
    )]
    Import {
        /// NAME or NAME/VERSION (on the software keystore)
        key: String,
        /// The YubiKey to import into.
        #[arg(long)]
        token: String,
        #[command(flatten)]
        placement: PlacementArgs,
        #[command(flatten)]
        fmt: FormatArg,
    },
}

/// The new PUK: KEYWARD_NEW_PUK, else asked twice on the terminal (never argv).
fn new_puk(ctx: &Ctx, token: &str) -> Result<Pin, Error> {
    use std::io::IsTerminal;
    if let Some(p) = std::env::var("KEYWARD_NEW_PUK")
        .ok()
        .filter(|v| !v.is_empty())
    {
        return Ok(Pin::new(p));
    }
    if ctx.prompter.batch || !std::io::stderr().is_terminal() {
        return Err(PromptError::NotInteractive {
            what: format!("a new PUK for {token}"),
            hint: "Set KEYWARD_NEW_PUK.".into(),
        }
        .into());
    }
    let io = |e: std::io::Error| Error::from(PromptError::Io(e.to_string()));
    let a = Pin::new(rpassword::prompt_password(format!("New PUK for {token}: ")).map_err(io)?);
    let b = Pin::new(rpassword::prompt_password("Repeat it: ").map_err(io)?);
    if a.expose() != b.expose() {
        return Err(PromptError::Io("the two entries differ; nothing was changed".into()).into());
    }
    Ok(a)
}

fn done(ctx: &Ctx, fmt: &FormatArg, token: &str, what: &str) -> Result<(), Error> {
    if ctx.format(fmt) == Format::Json {
        return print_json(&serde_json::json!({"token": token, "done": what}));
    }
    println!("{token}: {what}");
    Ok(())
}

pub fn run(ctx: &mut Ctx, cmd: PivCmd) -> Result<(), Error> {
    match cmd {
        PivCmd::ChangePin { token, fmt } => {
            ctx.kw.piv_change_pin(&token, &mut ctx.prompter)?;
            done(ctx, &fmt, &token, "PIN changed")
        }
        PivCmd::ChangePuk { token, fmt } => {
            let new = new_puk(ctx, &token)?;
            ctx.kw.piv_change_puk(&token, &new, &mut ctx.prompter)?;
            done(ctx, &fmt, &token, "PUK changed")
        }
        PivCmd::UnblockPin { token, fmt } => {
            ctx.kw.piv_unblock_pin(&token, &mut ctx.prompter)?;
            done(ctx, &fmt, &token, "PIN unblocked and set")
        }
        PivCmd::SetRetries {
            token,
            pin,
            puk,
            fmt,
        } => {
            ctx.kw
                .piv_set_retries(&token, pin, puk, &mut ctx.prompter)?;
            done(
                ctx,
                &fmt,
                &token,
                &format!(
                    "retries set to {pin} (PIN) and {puk} (PUK); PIN and PUK are now the factory defaults: change them"
                ),
            )
        }
        PivCmd::SetManagementKey { token, fmt } => {
            ctx.kw.piv_set_management_key(&token, &mut ctx.prompter)?;
            done(
                ctx,
                &fmt,
                &token,
                "new random management key stored PIN-protected on the card",
            )
        }
        PivCmd::Slots { token, fmt } => {
            let (name, slots) = ctx.kw.piv_slots(&token)?;
            if ctx.format(&fmt) == Format::Json {
                return print_json(&serde_json::json!({"token": name, "slots": slots}));
            }
            println!("{name}:");
            if slots.is_empty() {
                println!("  no keys or certificates");
            }
            for s in slots {
                let policies = match (s.pin_policy, s.touch_policy) {
                    (Some(p), Some(t)) => format!(" PIN {p}, touch {t}"),
                    _ => String::new(),
                };
                println!(
                    "  {}  {:<24} {}{}{}{}",
                    s.slot,
                    s.label.clone().unwrap_or_else(|| s.status.to_owned()),
                    s.algorithm.map(|a| a.to_string()).unwrap_or_default(),
                    s.origin.map(|o| format!(" {o}")).unwrap_or_default(),
                    policies,
                    s.key_id
                        .map(|k| format!(" key id {}", &k[..16]))
                        .unwrap_or_default(),
                );
                if s.label.is_none() {
                    if let Some(c) = s.certificate {
                        println!("      certificate {c}");
                    }
                }
            }
            Ok(())
        }
        PivCmd::Reset { token, fmt } => {
            let lost = ctx.kw.piv_reset(&token, &mut ctx.prompter)?;
            if ctx.format(&fmt) == Format::Json {
                return print_json(
                    &serde_json::json!({"token": token, "reset": true, "lost": lost}),
                );
            }
            println!("{token}: PIV application reset to factory defaults (PIN 123456, PUK 12345678, default management key)");
            for l in lost {
                println!("  lost {l}");
            }
            Ok(())
        }
        PivCmd::Attest {
            key,
            token,
            pem,
            fmt,
        } => {
            let (name, version) = parse_key_ref(&key).map_err(Error::Invalid)?;
            let (v, h, a) = ctx.kw.attest_on(&name, version, token.as_deref())?;
            if ctx.format(&fmt) == Format::Json {
                print_json(&serde_json::json!({
                    "key": v.key, "version": v.version, "key_id": v.key_id,
                    "token": h.token, "object_id": h.object_id, "copy": h.copy,
                    "attestation": a,
                }))?;
                return if a.verified {
                    Ok(())
                } else {
                    Err(Error::Invalid(format!(
                        "the attestation of {}/{} does not verify",
                        v.key, v.version
                    )))
                };
            }
            println!(
                "{}/{} on {} (slot {}{}): attestation {}",
                v.key,
                v.version,
                h.token,
                h.object_id,
                if h.copy { ", a copy" } else { "" },
                if a.verified {
                    "VERIFIED"
                } else {
                    "NOT VERIFIED"
                }
            );
            for (label, value) in [
                ("serial", a.serial.map(|s| s.to_string())),
                ("firmware", a.firmware.clone()),
                ("pin policy", a.pin_policy.clone()),
                ("touch policy", a.touch_policy.clone()),
                ("form factor", a.form_factor.clone()),
            ] {
                if let Some(v) = value {
                    println!("  {label:<13}{v}");
                }
            }
            for c in &a.chain {
                println!("  chain        {c}");
            }
            if let (Some(root), Some(source)) = (&a.root, &a.root_source) {
                println!("  root         {root}");
                println!("  trusted as   {source}");
                if source != keyward::token::piv::YUBICO_SOURCE {
                    println!("  NOTE         not a Yubico root: trusted only because keyward.toml lists it");
                }
            }
            for p in &a.problems {
                println!("  PROBLEM      {p}");
            }
            if pem {
                for c in &a.certificates_pem {
                    print!("{c}");
                }
            }
            if a.verified {
                Ok(())
            } else {
                Err(Error::Invalid(format!(
                    "the attestation of {}/{} does not verify",
                    v.key, v.version
                )))
            }
        }
        PivCmd::Import {
            key,
            token,
            placement,
            fmt,
        } => {
            let (name, version) = parse_key_ref(&key).map_err(Error::Invalid)?;
            let (v, t, k) = ctx.kw.import_to_token(
                &name,
                version,
                &token,
                &placement.options(),
                &mut ctx.prompter,
            )?;
            if ctx.format(&fmt) == Format::Json {
                return print_json(&serde_json::json!({
                    "key": v.key, "version": v.version, "key_id": v.key_id,
                    "token": t.name, "object_id": k.object_id,
                }));
            }
            println!(
                "imported {}/{} (key id {}) into {} slot {}",
                v.key,
                v.version,
                &v.key_id[..16],
                t.name,
                k.object_id
            );
            Ok(())
        }
    }
}

/// The attestation lines of `key show`.
pub fn print_attestations(ctx: &Ctx, key: &str) -> Result<(), Error> {
    for a in ctx.kw.attestations(key)? {
        println!(
            "\n  {key}/{} attestation {} ({}, {} slot {}, YubiKey {}{}{})",
            a.version,
            if a.verified {
                "verified"
            } else {
                "NOT verified"
            },
            a.time,
            a.token,
            a.object_id,
            a.serial,
            a.firmware
                .as_deref()
                .map(|f| format!(", firmware {f}"))
                .unwrap_or_default(),
            match (&a.pin_policy, &a.touch_policy) {
                (Some(p), Some(t)) => format!(", PIN {p}, touch {t}"),
                _ => String::new(),
            }
        );
        if let (Some(root), Some(source)) = (&a.root, &a.root_source) {
            println!("    root: {root} — {source}");
        }
        for p in &a.problems {
            println!("    problem: {p}");
        }
    }
    Ok(())
}
