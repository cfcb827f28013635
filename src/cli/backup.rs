//! `keyward backup create|inspect|verify|restore|drill`.

use super::{print_json, Ctx, Format};
use clap::{Args, Subcommand};
use keyward::backup::{self, Custodian, Unlock};
use keyward::Error;
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum BackupCmd {
    /// Write an encrypted backup of this home: audit log, config, state, software keys.
    #[command(
        after_help = "Examples:\n  keyward backup create --output home.kwb --recipient age1...\n  KEYWARD_BACKUP_PASSPHRASE=... keyward --batch backup create --output home.kwb --passphrase\n  keyward backup create --output home.kwb --shares 3 \\\n      --custodian alice=age1... --custodian bob=age1... --custodian carol=age1... \\\n      --custodian dave=age1... --custodian erin=age1...\n\nA backup with recipients opens with the standard tool: age -d -i key.txt home.kwb > home.tar\nPKCS#11 keys created --wrappable go in as C_WrapKey blobs: the token's SO PIN authorises it\n(KEYWARD_SO_PIN in batch mode). Other hardware-token keys are non-extractable: the backup lists\ntheir public keys and how to recover them."
    )]
    Create {
        /// The backup file to write (never overwritten). Shares go beside it as FILE.NAME.share.
        #[arg(long, value_name = "FILE")]
        output: PathBuf,
        /// An age recipient (age1..., or a plugin recipient such as age1yubikey1...).
        #[arg(long = "recipient", short = 'r', value_name = "AGE_RECIPIENT")]
        recipients: Vec<String>,
        /// A file of age recipients, one a line.
        #[arg(long = "recipients-file", short = 'R', value_name = "FILE")]
        recipients_files: Vec<PathBuf>,
        /// Encrypt with a passphrase (asked, or KEYWARD_BACKUP_PASSPHRASE; never argv).
        #[arg(long)]
        passphrase: bool,
        /// Split the backup key M-of-N between the custodians: any M of them restore it.
        #[arg(long, value_name = "M")]
        shares: Option<u8>,
        /// A custodian and the age recipient their share is encrypted to.
        #[arg(long = "custodian", value_name = "NAME=AGE_RECIPIENT")]
        custodians: Vec<Custodian>,
    },
    /// Show what a backup is and, given a key, what is inside (never a secret).
    #[command(after_help = "Example:\n  keyward backup inspect home.kwb --identity key.txt")]
    Inspect {
        file: PathBuf,
        #[command(flatten)]
        unlock: UnlockArgs,
    },
    /// Decrypt in memory and check every digest, the audit chain and every private key.
    #[command(
        after_help = "Examples:\n  keyward backup verify home.kwb --identity key.txt\n  keyward backup verify home.kwb --share home.kwb.alice.share --share home.kwb.bob.share \\\n      --share home.kwb.carol.share --identity alice.txt --identity bob.txt --identity carol.txt"
    )]
    Verify {
        file: PathBuf,
        #[command(flatten)]
        unlock: UnlockArgs,
    },
    /// Rebuild a home from a backup (into a new directory; asks before replacing one).
    #[command(
        after_help = "Examples:\n  keyward backup restore home.kwb --identity key.txt --into /srv/keyward-new\n  keyward backup restore home.kwb --identity key.txt --into /srv/new --onto hsm2\n  keyward backup restore home.kwb --identity key.txt --into /srv/new --onto yubikey:12345678 --slot 9a\n\nSoftware keys go into a new software keystore (KEYWARD_PASSPHRASE sets its passphrase),\nor onto --onto TOKEN; wrapped PKCS#11 keys only onto --onto TOKEN (C_UnwrapKey on a PKCS#11\ntoken). Each new binding is recorded in the restored home's audit log. Non-extractable keys\ncannot be restored: the output says how to recover each."
    )]
    Restore {
        file: PathBuf,
        #[command(flatten)]
        unlock: UnlockArgs,
        /// The home directory to create.
        #[arg(long, value_name = "NEW_HOME")]
        into: PathBuf,
        /// Put the private keys onto this token (a name from the restored keyward.toml, a
        /// pkcs11: URI, yubikey:SERIAL, or soft).
        #[arg(long, value_name = "TOKEN")]
        onto: Option<String>,
        /// With --onto a YubiKey: the slot (one key only) and policies of the imported keys.
        #[command(flatten)]
        placement: super::piv::PlacementArgs,
    },
    /// Restore into a scratch home, compare with this home, and record the drill.
    #[command(after_help = "Example:\n  keyward backup drill home.kwb --identity key.txt")]
    Drill {
        file: PathBuf,
        #[command(flatten)]
        unlock: UnlockArgs,
    },
}

#[derive(Args, Debug)]
pub struct UnlockArgs {
    /// An age identity file (AGE-SECRET-KEY-1... lines, or plugin identities). Repeatable;
    /// with --share, the custodians' identities (every identity is tried on every share).
    #[arg(long = "identity", short = 'i', value_name = "FILE")]
    identities: Vec<PathBuf>,
    /// A custodian share file (FILE.NAME.share). Repeatable.
    #[arg(long = "share", value_name = "FILE")]
    shares: Vec<PathBuf>,
}

impl UnlockArgs {
    fn unlock(self) -> Unlock {
        Unlock {
            identities: self.identities,
            shares: self.shares,
        }
    }
}

fn short(h: &str) -> &str {
    h.get(..16).unwrap_or(h)
}

fn print_manifest(m: &backup::archive::Manifest) {
    println!("  format      {}", m.format);
    println!("  created     {} by {}", m.created, m.created_by);
    println!("  home id     {}", m.home_id);
    println!(
        "  audit log   up to entry {} ({}…), {} bytes",
        m.audit.seq,
        short(&m.audit.hash),
        m.audit.bytes
    );
    println!("  protection  {}", m.protection.describe());
    println!("  entries");
    for e in &m.entries {
        println!(
            "    {:<44} {:>12}  sha256 {}…",
            e.name,
            e.size,
            short(&e.sha256)
        );
    }
    println!("  keys");
    for k in &m.keys {
        let what = match k.material {
            backup::archive::Material::Pkcs8 => "private key inside (PKCS#8)".to_string(),
            backup::archive::Material::Wrapped => format!(
                "wrapped inside (C_WrapKey, CKM_AES_KEY_WRAP_PAD) under wrapping key {}",
                k.wrapping_key_id.as_deref().unwrap_or("?")
            ),
            backup::archive::Material::NotExtractable => {
                "public key only (non-extractable)".to_string()
            }
            backup::archive::Material::Missing => {
                "public key only (private key missing)".to_string()
            }
        };
        println!(
            "    {:<24} {:<8} {:<10} key id {}…  {what}",
            k.name(),
            k.algorithm.as_str(),
            k.token,
            short(&k.key_id)
        );
        if k.material != backup::archive::Material::Pkcs8 {
            println!("      recovery: {}", k.recovery);
        }
    }
    for w in &m.wrapping_keys {
        println!(
            "  wrapping key {} ({}, {}) inside; installed by the SO of {}",
            w.id,
            w.algorithm,
            w.mechanism,
            w.tokens.join(", ")
        );
    }
}

pub fn run(ctx: &mut Ctx, cmd: BackupCmd) -> Result<(), Error> {
    let json = ctx.format == Format::Json;
    match cmd {
        BackupCmd::Create {
            output,
            recipients,
            recipients_files,
            passphrase,
            shares,
            custodians,
        } => {
            let req = backup::CreateRequest {
                output,
                recipients,
                recipients_files,
                passphrase,
                shares,
                custodians,
            };
            let c = backup::create(&ctx.kw, &req, &mut ctx.prompter)?;
            if json {
                return print_json(&c);
            }
            let m = &c.manifest;
            let inside = m
                .keys
                .iter()
                .filter(|k| k.material == backup::archive::Material::Pkcs8)
                .count();
            let wrapped = m
                .keys
                .iter()
                .filter(|k| k.material == backup::archive::Material::Wrapped)
                .count();
            println!("backup {} written ({} bytes)", c.file.display(), c.bytes);
            println!("  backup id   {}", c.backup_id);
            println!(
                "  audit log   up to entry {} ({}…)",
                m.audit.seq,
                short(&m.audit.hash)
            );
            println!("  protection  {}", m.protection.describe());
            println!(
                "  keys        {} private key(s) inside{}, {} listed only",
                inside + wrapped,
                if wrapped > 0 {
                    format!(" ({wrapped} wrapped)")
                } else {
                    String::new()
                },
                m.keys.len() - inside - wrapped
            );
            for w in &m.wrapping_keys {
                println!("  wrapping    key {} ({})", w.id, w.mechanism);
            }
            for k in m.keys.iter().filter(|k| {
                !matches!(
                    k.material,
                    backup::archive::Material::Pkcs8 | backup::archive::Material::Wrapped
                )
            }) {
                println!("    {}: {}", k.name(), k.recovery);
            }
            for s in &c.share_files {
                println!("  share       {}", s.display());
            }
            Ok(())
        }
        BackupCmd::Inspect { file, unlock } => {
            let i = backup::inspect(&file, &unlock.unlock(), &mut ctx.prompter)?;
            if json {
                return print_json(&i);
            }
            println!("backup {} ({} bytes)", i.file.display(), i.bytes);
            println!("  backup id   {}", i.header.backup_id);
            println!("  encrypted   age, to: {}", i.header.stanzas.join(", "));
            for s in &i.share_files {
                println!("  share       {}", s.display());
            }
            match &i.contents {
                Some(v) => {
                    print_manifest(&v.manifest);
                    println!(
                        "  checked     every digest, {} audit entries, {} checkpoint(s), {} private key(s)",
                        v.chain.entries, v.chain.checkpoints_checked, v.keys_checked
                    );
                }
                None => println!(
                    "  (pass --identity FILE, or --share FILE... with the custodians' --identity files, to see inside)"
                ),
            }
            Ok(())
        }
        BackupCmd::Verify { file, unlock } => {
            let v = backup::verify(&file, &unlock.unlock(), &mut ctx.prompter)?;
            if json {
                return print_json(&v);
            }
            println!(
                "backup {} is intact: every digest matches, the audit chain verifies ({} entries, head {}…), {} checkpoint(s), {} private key(s) match their public keys",
                v.file.display(),
                v.chain.entries,
                short(&v.chain.head_hash),
                v.chain.checkpoints_checked,
                v.keys_checked
            );
            Ok(())
        }
        BackupCmd::Restore {
            file,
            unlock,
            into,
            onto,
            placement,
        } => {
            let req = backup::RestoreRequest {
                file,
                unlock: unlock.unlock(),
                into,
                onto,
            };
            let r = backup::restore_with(&req, &placement.options(), &mut ctx.prompter)?;
            if json {
                return print_json(&r);
            }
            println!(
                "restored backup {}… into {}",
                short(&r.backup_id),
                r.into.display()
            );
            println!(
                "  audit log   up to entry {} ({}…), then the restore",
                r.head_seq,
                short(&r.head_hash)
            );
            for k in &r.keys_restored {
                println!("  restored    {k}");
            }
            for k in &r.keys_listed {
                println!("  not inside  {k}");
            }
            if let Some(p) = &r.replaced {
                println!("  the previous home was moved to {}", p.display());
            }
            Ok(())
        }
        BackupCmd::Drill { file, unlock } => {
            let d = backup::drill(&ctx.kw, &file, &unlock.unlock(), &mut ctx.prompter)?;
            if json {
                print_json(&d)?;
            } else {
                println!(
                    "restore drill of backup {}… (log up to entry {}; live log at entry {})",
                    short(&d.backup_id),
                    d.head_seq,
                    d.live_head_seq
                );
                println!(
                    "  {} restored private key(s) signed and verified with the live public keys",
                    d.keys_checked
                );
                for n in &d.notes {
                    println!("  note        {n}");
                }
                for n in &d.differences {
                    println!("  DIFFERENCE  {n}");
                }
            }
            if d.passed() {
                Ok(())
            } else {
                Err(Error::Other(format!(
                    "the drill found {} difference(s); it is recorded in the audit log",
                    d.differences.len()
                )))
            }
        }
    }
}
