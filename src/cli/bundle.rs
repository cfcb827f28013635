use super::{print_json, Ctx, Format, FormatArg};
use clap::Subcommand;
use keyward::bundle::{self, ExportRequest, SignatureStatus};
use keyward::token::PublicKey;
use keyward::Error;
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum BundleCmd {
    /// Write a distribution bundle: trusted public keys, revocations, verifier configurations.
    #[command(
        after_help = "Example:\n  keyward bundle export --key release --scope registry.example.com/team/app --output bundle-2026-11 --sign-with bundle-signing"
    )]
    Export {
        /// Keys to include (default: every key); repeatable.
        #[arg(long)]
        key: Vec<String>,
        /// REGISTRY/REPO the verifier policies apply to; repeatable, at least one.
        #[arg(long, required = true)]
        scope: Vec<String>,
        /// Directory to create (must not exist or be empty).
        #[arg(long, value_name = "DIR")]
        output: PathBuf,
        /// Key that signs SHA256SUMS.
        #[arg(long, value_name = "KEY")]
        sign_with: Option<String>,
        /// Keep trusting deactivated versions (to verify images they signed).
        #[arg(long)]
        keep_deactivated: bool,
        /// Also write DIR.tar.gz.
        #[arg(long)]
        tar: bool,
    },
    /// Check a bundle: every file against SHA256SUMS, the signature, the key files.
    Verify {
        dir: PathBuf,
        /// The public key that must have signed the bundle.
        #[arg(long, value_name = "PUBKEY.pem")]
        trust: Option<PathBuf>,
        /// Show what changed since this older bundle, and warn about images losing trust.
        #[arg(long, value_name = "DIR")]
        previous: Option<PathBuf>,
        #[command(flatten)]
        fmt: FormatArg,
    },
    /// What changed between two bundles.
    Diff {
        old: PathBuf,
        new: PathBuf,
        #[command(flatten)]
        fmt: FormatArg,
    },
}

fn print_diff(d: &bundle::Diff) {
    for k in &d.added {
        println!("  + trusted   {k}");
    }
    for k in &d.dropped {
        println!("  - no longer trusted (deactivated or dropped) {k}");
    }
    for k in &d.revoked {
        println!("  ! REVOKED   {k}");
    }
    for s in &d.scopes_added {
        println!("  + scope     {s}");
    }
    for s in &d.scopes_removed {
        println!("  - scope     {s}");
    }
    if d.added.is_empty()
        && d.dropped.is_empty()
        && d.revoked.is_empty()
        && d.scopes_added.is_empty()
        && d.scopes_removed.is_empty()
    {
        println!("  no change in trust");
    }
}

pub fn run(ctx: &mut Ctx, cmd: BundleCmd) -> Result<(), Error> {
    match cmd {
        BundleCmd::Export {
            key,
            scope,
            output,
            sign_with,
            keep_deactivated,
            tar,
        } => {
            let m = ctx.kw.export_bundle(
                &ExportRequest {
                    keys: &key,
                    scopes: &scope,
                    output: &output,
                    sign_with: sign_with.as_deref(),
                    keep_deactivated,
                    tarball: tar,
                },
                &mut ctx.prompter,
            )?;
            if ctx.format == Format::Json {
                return print_json(&m);
            }
            println!("bundle written to {}", output.display());
            for k in &m.keys {
                println!(
                    "  trusts  {}/{} ({}, {})",
                    k.key,
                    k.version,
                    k.state,
                    &k.key_id[..16]
                );
            }
            for r in &m.revoked {
                println!("  revokes {}/{} ({})", r.key, r.version, &r.key_id[..16]);
            }
            if m.signed_by.is_none() {
                println!("note: not signed; pass --sign-with KEY so verifiers can check it came from you");
            }
            Ok(())
        }
        BundleCmd::Verify {
            dir,
            trust,
            previous,
            fmt,
        } => {
            let trust = trust
                .map(|p| {
                    std::fs::read_to_string(&p)
                        .map_err(|e| Error::io(&p, e))
                        .and_then(|pem| PublicKey::from_pem(&pem).map_err(Error::from))
                })
                .transpose()?;
            let v = bundle::verify(&dir, trust.as_ref())?;
            let prev = previous.map(|p| bundle::verify(&p, None)).transpose()?;
            let diff = prev
                .as_ref()
                .map(|p| bundle::diff(&p.manifest, &v.manifest));
            let losing = if prev.is_some() {
                ctx.kw.images_losing_trust(&v.manifest)?
            } else {
                Vec::new()
            };
            if ctx.format(&fmt) == Format::Json {
                return print_json(&serde_json::json!({
                    "ok": true, "signature": v.signature, "manifest": v.manifest,
                    "diff": diff, "images_losing_trust": losing,
                }));
            }
            println!(
                "bundle {} verified: every file matches SHA256SUMS",
                dir.display()
            );
            match &v.signature {
                SignatureStatus::Trusted { key_id } => println!("  signed by the trusted key {}", &key_id[..16]),
                SignatureStatus::SelfSigned { key_id } => println!(
                    "  signed by {} (the key shipped in the bundle; pass --trust PUBKEY.pem to anchor it)",
                    &key_id[..16]
                ),
                SignatureStatus::Unsigned => println!("  WARNING: not signed"),
            }
            println!(
                "  trusts {} key version(s), revokes {}",
                v.manifest.trusted_ids().len(),
                v.manifest.revoked.len()
            );
            if let Some(d) = &diff {
                println!("changes since the previous bundle:");
                print_diff(d);
            }
            for (k, image, digest) in &losing {
                println!("  WARNING: {image} ({digest}) is signed only by {k}, which this bundle no longer trusts: run `keyward image resign --key {}` before rolling it out", k.split('/').next().unwrap_or(k));
            }
            Ok(())
        }
        BundleCmd::Diff { old, new, fmt } => {
            let o = bundle::verify(&old, None)?;
            let n = bundle::verify(&new, None)?;
            let d = bundle::diff(&o.manifest, &n.manifest);
            if ctx.format(&fmt) == Format::Json {
                return print_json(&d);
            }
            println!("{} -> {}:", old.display(), new.display());
            print_diff(&d);
            Ok(())
        }
    }
}
