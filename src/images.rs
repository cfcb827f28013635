//! Container image signing and verification with keyward keys: the glue between the key
//! registry, the tokens, the audit log and `oci`.
//!
//! `image sign --key NAME` signs with every *active* version of the key (one during normal
//! operation, two during a rotation overlap), one token session and one PIN entry per version,
//! and records every signature as an `image_signed` audit entry before it is reported.

use crate::audit::{Actor, Event, Outcome};
use crate::error::{Error, Result};
use crate::keys::Version;
use crate::oci::batch::{ImageSignResult, ProgressEvent, SignOptions};
use crate::oci::verify::{ImageVerification, PublicKey as OciPublicKey, VerifyOptions};
use crate::oci::{self, BatchSigner, ImageRef, OciError, RegistryClient, SignatureFile};
use crate::prompt::Prompter;
use crate::service::{Keyward, Signer};
use std::collections::BTreeMap;

/// Provenance keys keyward writes into the payload's `optional` map.
pub mod provenance {
    pub const SIGNER: &str = "signer";
    pub const KEY: &str = "keyward.key";
    pub const VERSION: &str = "keyward.version";
    pub const KEY_ID: &str = "keyward.key-id";
    pub const TOKEN_KIND: &str = "keyward.token-kind";
    pub const TOKEN_SERIAL: &str = "keyward.token-serial";
    pub const CI_JOB: &str = "ci.job";
}

/// The CI job this process runs in, from GitHub Actions, GitLab CI or Jenkins variables.
pub fn ci_job() -> Option<String> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if var("GITHUB_ACTIONS").is_some() {
        return Some(format!(
            "{}/{}/actions/runs/{}",
            var("GITHUB_SERVER_URL").unwrap_or_else(|| "https://github.com".into()),
            var("GITHUB_REPOSITORY").unwrap_or_default(),
            var("GITHUB_RUN_ID").unwrap_or_default()
        ));
    }
    if var("GITLAB_CI").is_some() {
        return var("CI_JOB_URL").or_else(|| var("CI_JOB_ID").map(|id| format!("gitlab job {id}")));
    }
    if var("JENKINS_URL").is_some() {
        return var("BUILD_URL").or_else(|| var("BUILD_TAG"));
    }
    None
}

/// How to reach registries.
#[derive(Clone, Debug, Default)]
pub struct RegistryOptions {
    /// `--insecure-registry HOST[:PORT]`: plain HTTP for these only.
    pub insecure: Vec<String>,
}

impl RegistryOptions {
    pub fn client(&self) -> Result<RegistryClient> {
        self.client_with(None)
    }

    fn client_with(&self, jobs: Option<usize>) -> Result<RegistryClient> {
        let mut opts = oci::ClientOptions {
            insecure_registries: self.insecure.clone(),
            ..Default::default()
        };
        if let Some(j) = jobs {
            opts.concurrency = j;
        }
        RegistryClient::new(opts).map_err(Error::from)
    }
}

/// The signing side of a batch: one active version on its logged-in token.
struct KeySigner<'a> {
    signer: Signer<'a>,
    provenance: BTreeMap<String, String>,
}

impl BatchSigner for KeySigner<'_> {
    fn sign(&mut self, payload: &[u8]) -> std::result::Result<Vec<u8>, String> {
        self.signer
            .sign_unrecorded(payload)
            .map_err(|e| e.to_string())
    }

    fn provenance(&self) -> BTreeMap<String, String> {
        self.provenance.clone()
    }

    fn record(&mut self, result: &ImageSignResult) -> std::result::Result<(), String> {
        let v = self.signer.version();
        let event = Event::ImageSigned {
            key: v.key.clone(),
            version: v.version,
            key_id: v.key_id.clone(),
            image: result.image.clone(),
            digest: result
                .digest
                .as_ref()
                .map(|d| d.as_str().to_owned())
                .unwrap_or_default(),
        };
        let (outcome, detail) = match &result.outcome {
            Ok(_) => (Outcome::Ok, None),
            Err(f) => (
                Outcome::Failed,
                Some(format!("{:?}: {}", f.stage, f.message)),
            ),
        };
        self.signer
            .keyward()
            .record(event, outcome, detail)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// What to sign with and how.
pub struct SignRequest<'a> {
    pub keys: &'a [String],
    pub annotations: BTreeMap<String, String>,
    /// Overrides the signer (default: OS user@host).
    pub signer: Option<String>,
    pub registry: RegistryOptions,
    pub cancel: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    /// How many images are in each registry phase at once (resolving, writing, the final
    /// check); default 16.
    pub jobs: Option<usize>,
    /// Sign with the copy of each version this token holds (a key imported onto several
    /// YubiKeys in a ceremony); default: each version's own token.
    pub token: Option<String>,
}

/// One key version's batch.
pub struct VersionReport {
    pub version: Version,
    pub report: oci::BatchReport,
}

impl Keyward {
    fn image_signers<'a>(
        &'a self,
        keys: &[String],
        signer_name: Option<&str>,
        token: Option<&str>,
        prompter: &mut dyn Prompter,
    ) -> Result<Vec<KeySigner<'a>>> {
        // A version whose rotation overlap has ended must not sign any more.
        self.end_overlaps()?;
        let registry = self.registry()?;
        let mut out = Vec::new();
        for key in keys {
            let (name, pinned) = crate::keys::parse_key_ref(key).map_err(Error::Invalid)?;
            let versions: Vec<Version> = match pinned {
                Some(n) => vec![self.resolve(&name, Some(n))?],
                None => registry
                    .active_versions(&name)
                    .into_iter()
                    .cloned()
                    .collect(),
            };
            if versions.is_empty() {
                // Let `signer` produce the precise error (unknown key, no active version).
                self.signer(&name, None, prompter)?;
            }
            for v in versions {
                let s = self.signer_via(&v.key, Some(v.version), token, prompter)?;
                let info = s.token_info()?;
                let mut p = BTreeMap::new();
                p.insert(
                    provenance::SIGNER.into(),
                    signer_name
                        .map(str::to_owned)
                        .unwrap_or_else(|| Actor::current().to_string()),
                );
                p.insert(provenance::KEY.into(), v.key.clone());
                p.insert(provenance::VERSION.into(), v.version.to_string());
                p.insert(provenance::KEY_ID.into(), v.key_id.clone());
                p.insert(provenance::TOKEN_KIND.into(), info.kind.to_string());
                p.insert(provenance::TOKEN_SERIAL.into(), info.serial.clone());
                if let Some(job) = ci_job() {
                    p.insert(provenance::CI_JOB.into(), job);
                }
                out.push(KeySigner {
                    signer: s,
                    provenance: p,
                });
            }
        }
        Ok(out)
    }

    /// Signs `images` with every active version of each key: one PIN entry per token, digests
    /// resolved and signatures pushed concurrently, one audit entry per signature.
    pub fn sign_images(
        &self,
        images: &[String],
        req: &SignRequest<'_>,
        prompter: &mut dyn Prompter,
        progress: &mut dyn FnMut(&Version, ProgressEvent),
    ) -> Result<Vec<VersionReport>> {
        let jobs = req.jobs.unwrap_or(16).clamp(1, 64);
        let client = req.registry.client_with(Some(jobs))?;
        let mut signers = self.image_signers(
            req.keys,
            req.signer.as_deref(),
            req.token.as_deref(),
            prompter,
        )?;
        let opts = SignOptions {
            annotations: req.annotations.clone(),
            cancel: req.cancel.clone(),
            resolve_concurrency: Some(jobs),
            push_concurrency: Some(jobs),
            ..Default::default()
        };
        let mut out = Vec::new();
        for s in signers.iter_mut() {
            let version = s.signer.version().clone();
            let report =
                oci::sign_images(&client, images, s, &opts, &mut |e| progress(&version, e))?;
            out.push(VersionReport { version, report });
        }
        Ok(out)
    }

    /// Signs one pinned image (`IMAGE@sha256:…`) without a registry: the signature file can be
    /// attached later from a connected machine.
    pub fn sign_image_offline(
        &self,
        image: &str,
        key: &str,
        annotations: BTreeMap<String, String>,
        signer_name: Option<&str>,
        token: Option<&str>,
        prompter: &mut dyn Prompter,
    ) -> Result<(Version, SignatureFile)> {
        let image = ImageRef::parse(image)?;
        if image.digest().is_none() {
            return Err(Error::Invalid(format!(
                "offline signing needs a pinned image, {image}@sha256:<digest>; resolve the digest on a connected machine"
            )));
        }
        let mut signers = self.image_signers(&[key.to_owned()], signer_name, token, prompter)?;
        let s = signers
            .first_mut()
            .ok_or_else(|| Error::Invalid(format!("key {key} has no active version")))?;
        let opts = SignOptions {
            annotations,
            ..Default::default()
        };
        let mut file = oci::sign_offline(&image, s, &opts)?;
        file.key_id = Some(s.signer.version().key_id.clone());
        Ok((s.signer.version().clone(), file))
    }

    /// Attaches signature files made offline. Each must verify with a key keyward knows.
    pub fn attach_signatures(
        &self,
        files: &[SignatureFile],
        registry: &RegistryOptions,
    ) -> Result<Vec<oci::AttachOutcome>> {
        let client = registry.client()?;
        let reg = self.registry()?;
        let mut out = Vec::new();
        for f in files {
            let key = f
                .key_id
                .as_deref()
                .and_then(|id| reg.versions().find(|v| v.key_id == id))
                .map(|v| OciPublicKey::from_pem(&v.public_key))
                .transpose()?;
            let event = Event::SignatureAttached {
                image: f.reference.clone(),
                digest: f.digest.as_str().to_owned(),
                key_id: f.key_id.clone(),
            };
            match oci::attach_file(&client, f, key.as_ref(), &Default::default()) {
                Ok(o) => {
                    self.record(event, Outcome::Ok, None)?;
                    out.push(o);
                }
                Err(e) => {
                    self.record(event, Outcome::Failed, Some(e.to_string()))?;
                    return Err(e.into());
                }
            }
        }
        Ok(out)
    }

    /// The public keys of every version of `key` that may verify (not compromised or
    /// destroyed-before-use; a destroyed version's old signatures stay valid).
    pub fn verification_keys(&self, key: &str) -> Result<Vec<(Version, OciPublicKey)>> {
        let (name, pinned) = crate::keys::parse_key_ref(key).map_err(Error::Invalid)?;
        let registry = self.registry()?;
        let versions = registry
            .keys
            .get(&name)
            .ok_or(Error::UnknownKey { name: name.clone() })?;
        let mut out = Vec::new();
        for v in versions.values() {
            if pinned.is_some_and(|n| n != v.version) {
                continue;
            }
            if v.state == crate::keys::State::Compromised {
                continue;
            }
            out.push((v.clone(), OciPublicKey::from_pem(&v.public_key)?));
        }
        if out.is_empty() {
            return Err(Error::Invalid(format!(
                "key {key} has no version that may verify (compromised versions never do)"
            )));
        }
        Ok(out)
    }

    /// Verifies an image against public keys.
    pub fn verify_image(
        &self,
        image: &str,
        keys: &[OciPublicKey],
        annotations: BTreeMap<String, String>,
        registry: &RegistryOptions,
    ) -> Result<ImageVerification> {
        let client = registry.client()?;
        let image = ImageRef::parse(image)?;
        let opts = VerifyOptions {
            annotations,
            ..Default::default()
        };
        Ok(oci::verify_image(&client, &image, keys, &opts)?)
    }

    /// Every signature on an image, verified against every key keyward knows (for display).
    pub fn image_signatures(
        &self,
        image: &str,
        registry: &RegistryOptions,
    ) -> Result<(ImageVerification, BTreeMap<String, String>)> {
        let reg = self.registry()?;
        let mut keys = Vec::new();
        let mut names = BTreeMap::new();
        for v in reg.versions() {
            if let Ok(k) = OciPublicKey::from_pem(&v.public_key) {
                names.insert(k.key_id(), format!("{}/{} ({})", v.key, v.version, v.state));
                keys.push(k);
            }
        }
        let client = registry.client()?;
        let image = ImageRef::parse(image)?;
        let opts = VerifyOptions::default();
        Ok((oci::verify_image(&client, &image, &keys, &opts)?, names))
    }
}

impl From<OciError> for Error {
    fn from(e: OciError) -> Self {
        Error::Oci(e)
    }
}

/// One image `image resign` looked at.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ResignItem {
    /// `REGISTRY/REPO@sha256:…`
    pub image: String,
    /// Versions that signed it before (from the audit log).
    pub signed_by: Vec<String>,
    /// `signed`, `would sign`, `already signed`, `gone` (no longer in its registry), `failed: …`.
    pub action: String,
}

impl Keyward {
    /// `image resign`: adds the newest active version's signature to every image the audit log
    /// shows was signed by an older version of `key` and that still exists in its registry.
    pub fn resign(
        &self,
        key: &str,
        dry_run: bool,
        registry: &RegistryOptions,
        prompter: &mut dyn Prompter,
    ) -> Result<(Version, Vec<ResignItem>)> {
        let reg = self.registry()?;
        let newest = reg
            .newest_active(key)
            .cloned()
            .ok_or_else(|| Error::NoActiveVersion {
                key: key.into(),
                states: String::new(),
            })?;
        // digest-pinned image -> (versions that signed it, signed by newest?)
        let mut seen: BTreeMap<String, (Vec<String>, bool)> = BTreeMap::new();
        for e in self.audit().entries()? {
            if e.outcome != Outcome::Ok {
                continue;
            }
            if let Event::ImageSigned {
                key: k,
                version,
                image,
                digest,
                ..
            } = e.event
            {
                if k != key || digest.is_empty() {
                    continue;
                }
                let Ok(r) = ImageRef::parse(&image) else {
                    continue;
                };
                let Ok(d) = oci::Digest::parse(&digest) else {
                    continue;
                };
                let pinned = r.with_digest(&d).to_string();
                let slot = seen.entry(pinned).or_default();
                if version == newest.version {
                    slot.1 = true;
                } else if !slot.0.contains(&format!("{k}/{version}")) {
                    slot.0.push(format!("{k}/{version}"));
                }
            }
        }
        let client = registry.client()?;
        let newest_key = OciPublicKey::from_pem(&newest.public_key)?;
        let mut items = Vec::new();
        let mut to_sign = Vec::new();
        for (image, (by, done)) in seen {
            if by.is_empty() {
                continue;
            }
            let r = ImageRef::parse(&image)?;
            let mut item = ResignItem {
                image: image.clone(),
                signed_by: by,
                action: String::new(),
            };
            if done {
                item.action = "already signed".into();
            } else {
                match oci::verify_image(
                    &client,
                    &r,
                    std::slice::from_ref(&newest_key),
                    &VerifyOptions::default(),
                ) {
                    Ok(v) if v.verified() => item.action = "already signed".into(),
                    Ok(_) => {
                        item.action = if dry_run { "would sign" } else { "signing" }.into();
                        to_sign.push(image.clone());
                    }
                    Err(OciError::ManifestNotFound { .. }) => item.action = "gone".into(),
                    Err(e) => item.action = format!("failed: {e}"),
                }
            }
            items.push(item);
        }
        if dry_run || to_sign.is_empty() {
            return Ok((newest, items));
        }
        let pinned_key = [format!("{}/{}", newest.key, newest.version)];
        let req = SignRequest {
            keys: &pinned_key,
            annotations: BTreeMap::new(),
            signer: None,
            registry: registry.clone(),
            cancel: None,
            jobs: None,
            token: None,
        };
        let reports = self.sign_images(&to_sign, &req, prompter, &mut |_, _| {})?;
        for vr in reports {
            for res in vr.report.results {
                if let Some(item) = items.iter_mut().find(|i| i.image == res.image) {
                    item.action = match res.outcome {
                        Ok(_) => "signed".into(),
                        Err(f) => format!("failed: {}", f.message),
                    };
                }
            }
        }
        Ok((newest, items))
    }
}
