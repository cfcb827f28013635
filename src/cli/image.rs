use super::{print_json, Ctx, Format, FormatArg};
use clap::Subcommand;
use keyward::images::{RegistryOptions, SignRequest};
use keyward::oci::verify::{PublicKey as OciPublicKey, Verdict};
use keyward::oci::{ProgressEvent, SignatureFile};
use keyward::Error;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(clap::Args, Debug, Default, Clone)]
pub struct RegistryArgs {
    /// Use plain HTTP for this registry (HOST[:PORT]); repeatable. TLS otherwise.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    pub insecure_registry: Vec<String>,
}

impl RegistryArgs {
    fn options(&self) -> RegistryOptions {
        RegistryOptions {
            insecure: self.insecure_registry.clone(),
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum ImageCmd {
    /// Sign images in cosign's format with the key on its token (every active version).
    #[command(
        after_help = "Examples:\n  keyward image sign registry.example/app:1.4 --key release\n  keyward image sign --from-file images.txt --key release -a build=1234\n  keyward image sign --offline registry.example/app@sha256:... --key release --output app.sig\n\nWith --output json (before the subcommand, or --json), one JSON result per image."
    )]
    Sign {
        /// Images (tags or digests).
        images: Vec<String>,
        /// Key name (all its active versions sign), or NAME/VERSION; repeatable.
        #[arg(long, required = true)]
        key: Vec<String>,
        /// KEY=VALUE written into the signed payload's `optional` map; repeatable.
        #[arg(long = "annotation", short = 'a', value_name = "KEY=VALUE")]
        annotation: Vec<String>,
        /// Read more images from FILE, one per line (# comments allowed).
        #[arg(long, value_name = "FILE")]
        from_file: Option<PathBuf>,
        /// Who signs, for the provenance (default: OS user@host).
        #[arg(long)]
        signer: Option<String>,
        /// Sign one pinned image without a registry and write a signature file.
        #[arg(long, requires = "output")]
        offline: bool,
        /// The signature file (with --offline).
        #[arg(long, value_name = "SIGFILE")]
        output: Option<PathBuf>,
        /// How many images are in each registry phase at once: resolving, writing their
        /// signature, the final check (default 16).
        #[arg(long, value_name = "N")]
        jobs: Option<usize>,
        /// Sign with the copy each version has on this token (e.g. one of several YubiKeys a
        /// ceremony imported the key onto); default: the version's own token.
        #[arg(long, value_name = "TOKEN")]
        token: Option<String>,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Push signature files made with `image sign --offline`.
    Attach {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        registry: RegistryArgs,
        #[command(flatten)]
        fmt: FormatArg,
    },
    /// Add the newest active version's signature to every image an older version signed
    /// (per the audit log) that still exists, so nothing depends on the old key.
    Resign {
        #[arg(long)]
        key: String,
        /// Show what would be signed, sign nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        registry: RegistryArgs,
        #[command(flatten)]
        fmt: FormatArg,
    },
    /// Verify an image: accepted when at least one signature verifies with one of the keys.
    #[command(
        after_help = "Exit codes: 0 verified; 10 unsigned; 11 no signature by these keys; 12 signed for another digest; 13 malformed signature or payload; 14 annotation not met; 15 registry error."
    )]
    Verify {
        image: String,
        /// A keyward key (every version that may verify); repeatable.
        #[arg(long)]
        key: Vec<String>,
        /// An SPKI PEM public key file; repeatable.
        #[arg(long, value_name = "FILE")]
        public_key: Vec<PathBuf>,
        /// Trust exactly what this distribution bundle trusts (revoked keys never count).
        #[arg(long, value_name = "DIR")]
        bundle: Option<PathBuf>,
        /// KEY=VALUE the signed payload must carry; repeatable.
        #[arg(long = "annotation", short = 'a', value_name = "KEY=VALUE")]
        annotation: Vec<String>,
        #[command(flatten)]
        registry: RegistryArgs,
        #[command(flatten)]
        fmt: FormatArg,
    },
    /// List every signature on an image, verified or not, naming keyward keys that made them.
    Signatures {
        image: String,
        #[command(flatten)]
        registry: RegistryArgs,
        #[command(flatten)]
        fmt: FormatArg,
    },
}

fn parse_annotations(list: &[String]) -> Result<BTreeMap<String, String>, Error> {
    let mut out = BTreeMap::new();
    for a in list {
        let (k, v) = a
            .split_once('=')
            .ok_or_else(|| Error::Invalid(format!("annotation {a:?} is not KEY=VALUE")))?;
        if k.is_empty() {
            return Err(Error::Invalid(format!("annotation {a:?} has an empty key")));
        }
        out.insert(k.to_owned(), v.to_owned());
    }
    Ok(out)
}

fn report_json(
    r: &keyward::oci::verify::SignatureReport,
    names: &BTreeMap<String, String>,
) -> serde_json::Value {
    serde_json::json!({
        "layer": r.layer_digest,
        "verified": r.verified(),
        "verdict": r.verdict.to_string(),
        "key_id": r.key_id,
        "key": r.key_id.as_ref().and_then(|k| names.get(k)),
        "docker_reference": r.docker_reference,
        "provenance": r.provenance,
        "containers_image_rules": r.containers_image.as_ref().map(|_| "ok".to_string()).unwrap_or_else(|e| e.clone()),
    })
}

pub fn run(ctx: &mut Ctx, cmd: ImageCmd) -> Result<(), Error> {
    match cmd {
        ImageCmd::Sign {
            mut images,
            key,
            annotation,
            from_file,
            signer,
            offline,
            output,
            jobs,
            token,
            registry,
        } => {
            let annotations = parse_annotations(&annotation)?;
            if let Some(f) = from_file {
                let text = std::fs::read_to_string(&f).map_err(|e| Error::io(&f, e))?;
                images.extend(
                    text.lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty() && !l.starts_with('#'))
                        .map(str::to_owned),
                );
            }
            if images.is_empty() {
                return Err(Error::Invalid(
                    "no image to sign: name images or pass --from-file".into(),
                ));
            }
            if offline {
                if images.len() != 1 || key.len() != 1 {
                    return Err(Error::Invalid(
                        "--offline signs one pinned image with one key".into(),
                    ));
                }
                let out = output
                    .ok_or_else(|| Error::Invalid("--offline needs --output SIGFILE".into()))?;
                let (v, file) = ctx.kw.sign_image_offline(
                    &images[0],
                    &key[0],
                    annotations,
                    signer.as_deref(),
                    token.as_deref(),
                    &mut ctx.prompter,
                )?;
                file.write(&out)?;
                if ctx.format == Format::Json {
                    return print_json(&serde_json::json!({
                        "image": file.reference, "digest": file.digest.as_str(),
                        "key": v.key, "version": v.version, "key_id": v.key_id, "output": out,
                    }));
                }
                eprintln!(
                    "signed {} with {}/{} offline -> {}; push it later with `keyward image attach {}`",
                    file.reference,
                    v.key,
                    v.version,
                    out.display(),
                    out.display()
                );
                return Ok(());
            }
            let req = SignRequest {
                keys: &key,
                annotations,
                signer,
                registry: registry.options(),
                cancel: None,
                jobs,
                token,
            };
            let tty = std::io::stderr().is_terminal() && ctx.format == Format::Text;
            let total = images.len();
            let mut done = 0usize;
            let reports = ctx
                .kw
                .sign_images(&images, &req, &mut ctx.prompter, &mut |v, e| {
                    if let ProgressEvent::Finished { ok, .. } = e {
                        done += 1;
                        if tty {
                            let width = 30;
                            let filled = (done % (total + 1)) * width / total.max(1);
                            eprint!(
                                "\r{}/{} [{}{}] {}/{} {}",
                                v.key,
                                v.version,
                                "#".repeat(filled),
                                " ".repeat(width - filled.min(width)),
                                done.min(total),
                                total,
                                if ok { "" } else { "(a failure)" }
                            );
                        }
                    }
                    if let ProgressEvent::Done { .. } = e {
                        done = 0;
                        if tty {
                            eprintln!();
                        }
                    }
                })?;
            let mut failed = 0;
            let mut all = 0;
            for vr in &reports {
                for r in &vr.report.results {
                    all += 1;
                    if r.outcome.is_err() {
                        failed += 1;
                    }
                    if ctx.format == Format::Json {
                        let line = serde_json::json!({
                            "image": r.image,
                            "digest": r.digest.as_ref().map(|d| d.as_str().to_owned()),
                            "key": vr.version.key, "version": vr.version.version, "key_id": vr.version.key_id,
                            "ok": r.outcome.is_ok(),
                            "error": r.outcome.as_ref().err().map(|f| f.message.clone()),
                            "stage": r.outcome.as_ref().err().map(|f| format!("{:?}", f.stage).to_lowercase()),
                        });
                        println!("{line}");
                    } else {
                        match &r.outcome {
                            Ok(_) => println!(
                                "signed   {}@{} with {}/{}",
                                r.image,
                                r.digest.as_ref().map(|d| d.as_str()).unwrap_or("?"),
                                vr.version.key,
                                vr.version.version
                            ),
                            Err(f) => println!(
                                "FAILED   {} with {}/{}: {}",
                                r.image, vr.version.key, vr.version.version, f.message
                            ),
                        }
                    }
                }
            }
            if failed > 0 {
                return Err(Error::PartialFailure { failed, total: all });
            }
            Ok(())
        }
        ImageCmd::Attach {
            files,
            registry,
            fmt,
        } => {
            let mut sigs = Vec::new();
            for f in &files {
                sigs.push(SignatureFile::read(f)?);
            }
            let out = ctx.kw.attach_signatures(&sigs, &registry.options())?;
            for (f, o) in sigs.iter().zip(out) {
                if ctx.format(&fmt) == Format::Json {
                    println!(
                        "{}",
                        serde_json::json!({"image": f.reference, "added": o.added, "already_present": o.already_present})
                    );
                } else {
                    println!(
                        "{} {}",
                        if o.added > 0 {
                            "attached"
                        } else {
                            "already present"
                        },
                        f.reference
                    );
                }
            }
            Ok(())
        }
        ImageCmd::Resign {
            key,
            dry_run,
            registry,
            fmt,
        } => {
            let (newest, items) =
                ctx.kw
                    .resign(&key, dry_run, &registry.options(), &mut ctx.prompter)?;
            let failed = items
                .iter()
                .filter(|i| i.action.starts_with("failed"))
                .count();
            if ctx.format(&fmt) == Format::Json {
                print_json(&serde_json::json!({
                    "key": newest.key, "version": newest.version, "images": items,
                }))?;
            } else {
                println!("resign with {}/{}:", newest.key, newest.version);
                if items.is_empty() {
                    println!("  no image was signed by an older version of {key}");
                }
                for i in &items {
                    println!(
                        "  {:<16} {} (was signed by {})",
                        i.action,
                        i.image,
                        i.signed_by.join(", ")
                    );
                }
            }
            if failed > 0 {
                return Err(Error::PartialFailure {
                    failed,
                    total: items.len(),
                });
            }
            Ok(())
        }
        ImageCmd::Verify {
            image,
            key,
            public_key,
            bundle,
            annotation,
            registry,
            fmt,
        } => {
            if key.is_empty() && public_key.is_empty() && bundle.is_none() {
                return Err(Error::Invalid(
                    "name the trusted keys: --key NAME, --public-key FILE or --bundle DIR".into(),
                ));
            }
            let mut keys = Vec::new();
            let mut names = BTreeMap::new();
            if let Some(dir) = &bundle {
                let v = keyward::bundle::verify(dir, None)?;
                let r = keyward::oci::ImageRef::parse(&image)?;
                let repo = r.repository_name();
                let in_scope = v.manifest.scopes.iter().any(|s| {
                    let s = s.trim_end_matches('/');
                    repo == s || repo.starts_with(&format!("{s}/"))
                });
                if !in_scope {
                    return Err(Error::ImageVerify {
                        code: 11,
                        message: format!(
                            "{repo} is outside the bundle's scopes ({}): the bundle's policy rejects it",
                            v.manifest.scopes.join(", ")
                        ),
                    });
                }
                for (k, pk) in keyward::bundle::trusted_keys(dir, &v)? {
                    names.insert(pk.key_id(), format!("{}/{} (bundle)", k.key, k.version));
                    keys.push(pk);
                }
            }
            for k in &key {
                for (v, pk) in ctx.kw.verification_keys(k)? {
                    names.insert(pk.key_id(), format!("{}/{}", v.key, v.version));
                    keys.push(pk);
                }
            }
            for f in &public_key {
                let pem = std::fs::read_to_string(f).map_err(|e| Error::io(f, e))?;
                let pk = OciPublicKey::from_pem(&pem)?;
                names.insert(pk.key_id(), f.display().to_string());
                keys.push(pk);
            }
            let annotations = parse_annotations(&annotation)?;
            let v = ctx
                .kw
                .verify_image(&image, &keys, annotations, &registry.options())?;
            let verified: Vec<_> = v.reports.iter().filter(|r| r.verified()).collect();
            if ctx.format(&fmt) == Format::Json {
                print_json(&serde_json::json!({
                    "image": v.image.to_string(), "digest": v.digest.as_str(),
                    "verified": !verified.is_empty(),
                    "signatures": v.reports.iter().map(|r| report_json(r, &names)).collect::<Vec<_>>(),
                }))?;
            } else if !verified.is_empty() {
                println!(
                    "verified {}@{}",
                    v.image.repository_name(),
                    v.digest.as_str()
                );
                for r in &verified {
                    let who = r
                        .key_id
                        .as_ref()
                        .and_then(|k| names.get(k))
                        .cloned()
                        .unwrap_or_default();
                    println!("  signed by {who}");
                    for (k, val) in &r.provenance {
                        println!("    {k}: {val}");
                    }
                }
            }
            if !verified.is_empty() {
                return Ok(());
            }
            Err(verify_failure(&v))
        }
        ImageCmd::Signatures {
            image,
            registry,
            fmt,
        } => {
            let (v, names) = ctx.kw.image_signatures(&image, &registry.options())?;
            if ctx.format(&fmt) == Format::Json {
                return print_json(&serde_json::json!({
                    "image": v.image.to_string(), "digest": v.digest.as_str(),
                    "signatures": v.reports.iter().map(|r| report_json(r, &names)).collect::<Vec<_>>(),
                }));
            }
            println!(
                "{}@{}: {} signature(s)",
                v.image.repository_name(),
                v.digest.as_str(),
                v.reports.len()
            );
            for r in &v.reports {
                let who = r
                    .key_id
                    .as_ref()
                    .and_then(|k| names.get(k))
                    .cloned()
                    .unwrap_or_else(|| "a key keyward does not know".into());
                match &r.verdict {
                    Verdict::Verified => println!("  {}  verified, by {who}", &r.layer_digest),
                    other => println!("  {}  {other}", &r.layer_digest),
                }
                for (k, val) in &r.provenance {
                    println!("      {k}: {val}");
                }
            }
            Ok(())
        }
    }
}

/// The most telling reason no signature verified, as an exit code and message.
fn verify_failure(v: &keyward::oci::verify::ImageVerification) -> Error {
    let target = format!("{}@{}", v.image.repository_name(), v.digest.as_str());
    if v.reports.is_empty() {
        return Error::ImageVerify {
            code: 10,
            message: format!("{target} is not signed (no signature found)"),
        };
    }
    let pick = |f: fn(&Verdict) -> bool| v.reports.iter().find(|r| f(&r.verdict));
    if let Some(r) = pick(|x| matches!(x, Verdict::AnnotationMismatch { .. })) {
        return Error::ImageVerify {
            code: 14,
            message: format!("{target}: signed by the key, but {}", r.verdict),
        };
    }
    if let Some(r) = pick(|x| {
        matches!(
            x,
            Verdict::DigestMismatch { .. } | Verdict::IdentityMismatch { .. }
        )
    }) {
        return Error::ImageVerify {
            code: 12,
            message: format!(
                "{target}: a signature by the key is for something else: {}",
                r.verdict
            ),
        };
    }
    if let Some(r) = pick(|x| {
        matches!(
            x,
            Verdict::MalformedPayload(_)
                | Verdict::MalformedSignature(_)
                | Verdict::LayerRejected(_)
        )
    })
    .filter(|_| {
        v.reports
            .iter()
            .all(|r| !matches!(r.verdict, Verdict::BadSignature))
    }) {
        return Error::ImageVerify {
            code: 13,
            message: format!("{target}: {}", r.verdict),
        };
    }
    Error::ImageVerify {
        code: 11,
        message: format!(
            "{target} has {} signature(s), none made by the given key(s)",
            v.reports.len()
        ),
    }
}
