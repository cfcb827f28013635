//! Public-key distribution bundles: the keys a verifier should trust now, the revoked ones,
//! and ready-to-apply verifier configurations (containers policy.json + registries.d,
//! sigstore policy-controller, Kyverno, plain PEMs for cosign), with `SHA256SUMS` and a
//! signature over it. Format: docs/FORMATS.md "Distribution bundles".

pub mod verifiers;

use crate::error::{Error, Result};
use crate::fsutil;
use crate::keys::{State, Version};
use crate::prompt::Prompter;
use crate::service::Keyward;
use crate::token::PublicKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

pub const FORMAT: &str = "keyward-bundle/1";
pub const SUMS: &str = "SHA256SUMS";
pub const SUMS_SIG: &str = "SHA256SUMS.sig";
pub const SUMS_KEY: &str = "SHA256SUMS.pub.pem";

/// One trusted key version, as `bundle.json` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustedKey {
    pub key: String,
    pub version: u32,
    pub key_id: String,
    pub algorithm: String,
    pub state: State,
    pub activated: Option<String>,
    pub deactivated: Option<String>,
    pub token_kind: String,
    pub token_model: Option<String>,
    pub token_serial: String,
    /// The newest hardware attestation recorded in the audit log (`token piv attest`), when
    /// the token offers one.
    pub attestation: Option<BundleAttestation>,
    /// The PEM file, relative to the bundle.
    pub file: String,
}

/// A version's hardware attestation as the audit log recorded it: whether the chain to the
/// vendor's root verified and the attested key was this version's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleAttestation {
    pub verified: bool,
    /// When keyward checked it.
    pub time: String,
    /// The card keyward asked, and the serial the attestation certificate names.
    pub serial: String,
    pub attested_serial: Option<u32>,
    pub firmware: Option<String>,
    pub pin_policy: Option<String>,
    pub touch_policy: Option<String>,
    /// Why it did not verify.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

/// A revoked (compromised) version: never trusted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedKey {
    pub key: String,
    pub version: u32,
    pub key_id: String,
    pub since: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHead {
    pub seq: u64,
    pub hash: String,
}

/// `bundle.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    pub created: String,
    pub scopes: Vec<String>,
    pub audit_head: AuditHead,
    pub keys: Vec<TrustedKey>,
    pub revoked: Vec<RevokedKey>,
    /// Key id of the key that signed SHA256SUMS, if signed.
    pub signed_by: Option<String>,
}

impl Manifest {
    pub fn trusted_ids(&self) -> BTreeSet<String> {
        let revoked: BTreeSet<&str> = self.revoked.iter().map(|r| r.key_id.as_str()).collect();
        self.keys
            .iter()
            .filter(|k| !revoked.contains(k.key_id.as_str()))
            .map(|k| k.key_id.clone())
            .collect()
    }
}

/// What to export.
pub struct ExportRequest<'a> {
    /// Keys to include (empty: every key).
    pub keys: &'a [String],
    /// `REGISTRY/REPO` scopes the verifier configurations apply to.
    pub scopes: &'a [String],
    pub output: &'a Path,
    /// Key that signs SHA256SUMS.
    pub sign_with: Option<&'a str>,
    /// Keep trusting deactivated versions (to verify old images).
    pub keep_deactivated: bool,
    /// Also write `<output>.tar.gz`.
    pub tarball: bool,
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Which of `versions` a bundle trusts and which it revokes (compromised ones); the rest
/// (pre-active, and deactivated or destroyed unless `keep_deactivated`) it leaves out.
pub fn partition<'a>(
    versions: impl IntoIterator<Item = &'a Version>,
    keep_deactivated: bool,
) -> (Vec<&'a Version>, Vec<&'a Version>) {
    let (mut trusted, mut revoked) = (Vec::new(), Vec::new());
    for v in versions {
        if v.state == State::Compromised {
            revoked.push(v);
        } else if trusted_state(v, keep_deactivated) {
            trusted.push(v);
        }
    }
    (trusted, revoked)
}

fn trusted_state(v: &Version, keep_deactivated: bool) -> bool {
    match v.state {
        State::Active | State::Suspended => true,
        State::Deactivated | State::Destroyed => keep_deactivated,
        State::PreActive | State::Compromised => false,
    }
}

fn check_scope(s: &str) -> Result<()> {
    let r = crate::oci::ImageRef::parse(s)
        .map_err(|e| Error::Invalid(format!("invalid --scope {s:?}: {e}")))?;
    if r.tag().is_some_and(|t| t != "latest") || r.digest().is_some() || s.contains('@') {
        return Err(Error::Invalid(format!(
            "--scope {s:?} must be REGISTRY/REPO, without a tag or digest"
        )));
    }
    Ok(())
}

impl Keyward {
    /// Writes a bundle directory (atomically: built beside it, then renamed into place).
    pub fn export_bundle(
        &self,
        req: &ExportRequest<'_>,
        prompter: &mut dyn Prompter,
    ) -> Result<Manifest> {
        if req.scopes.is_empty() {
            return Err(Error::Invalid(
                "name at least one --scope REGISTRY/REPO: verifier policies must be scoped".into(),
            ));
        }
        for s in req.scopes {
            check_scope(s)?;
        }
        let registry = self.registry()?;
        let names: Vec<String> = if req.keys.is_empty() {
            registry.keys.keys().cloned().collect()
        } else {
            req.keys.to_vec()
        };
        let mut keys = Vec::new();
        let mut revoked = Vec::new();
        let mut pems = BTreeMap::new();
        for name in &names {
            let versions = registry
                .keys
                .get(name)
                .ok_or(Error::UnknownKey { name: name.clone() })?;
            let attestations = self.attestations(name)?;
            let (trusted, revokes) = partition(versions.values(), req.keep_deactivated);
            for v in revokes {
                revoked.push(RevokedKey {
                    key: v.key.clone(),
                    version: v.version,
                    key_id: v.key_id.clone(),
                    since: v.compromised_since.clone(),
                });
            }
            for v in trusted {
                let file = format!("keys/{}-{}.pem", v.key, v.version);
                pems.insert(file.clone(), v.public_key.clone());
                let kind = if v.token == crate::token::soft::SOFT_TOKEN_NAME {
                    "soft"
                } else if v.token.starts_with("yubikey:") {
                    "piv"
                } else {
                    "pkcs11"
                };
                keys.push(TrustedKey {
                    key: v.key.clone(),
                    version: v.version,
                    key_id: v.key_id.clone(),
                    algorithm: v.algorithm.to_string(),
                    state: v.state,
                    activated: v.activated.clone(),
                    deactivated: v.deactivated.clone(),
                    token_kind: kind.into(),
                    token_model: (kind == "piv").then(|| "YubiKey".to_owned()),
                    token_serial: v.token_serial.clone(),
                    attestation: attestations
                        .iter()
                        .find(|a| a.version == v.version)
                        .map(|a| BundleAttestation {
                            verified: a.verified,
                            time: a.time.clone(),
                            serial: a.serial.clone(),
                            attested_serial: a.attested_serial,
                            firmware: a.firmware.clone(),
                            pin_policy: a.pin_policy.clone(),
                            touch_policy: a.touch_policy.clone(),
                            problems: a.problems.clone(),
                        }),
                    file,
                });
            }
        }
        if keys.is_empty() {
            return Err(Error::Invalid(
                "no version to trust: every selected version is pre-active, compromised or deactivated (use --keep-deactivated to keep old ones)".into(),
            ));
        }
        let head = self.audit().head()?;
        let signer = match req.sign_with {
            Some(k) => Some(self.signer(k, None, prompter)?),
            None => None,
        };
        let manifest = Manifest {
            format: FORMAT.into(),
            created: crate::audit::now_rfc3339(),
            scopes: req.scopes.to_vec(),
            audit_head: AuditHead {
                seq: head.seq,
                hash: head.hash,
            },
            keys,
            revoked,
            signed_by: signer.as_ref().map(|s| s.version().key_id.clone()),
        };
        let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for (f, pem) in &pems {
            files.insert(f.clone(), pem.clone().into_bytes());
        }
        files.insert(
            "bundle.json".into(),
            serde_json::to_vec_pretty(&manifest).map_err(|e| Error::Other(e.to_string()))?,
        );
        for (f, bytes) in verifiers::render(&manifest, &pems)? {
            files.insert(f, bytes);
        }
        let sums: String = files
            .iter()
            .map(|(f, b)| format!("{}  {f}\n", sha256_hex(b)))
            .collect();
        files.insert(SUMS.into(), sums.clone().into_bytes());
        if let Some(mut s) = signer {
            use base64::Engine;
            let sig = s.sign(
                sums.as_bytes(),
                Some(format!("bundle {}", req.output.display())),
            )?;
            files.insert(
                SUMS_SIG.into(),
                format!(
                    "{}\n",
                    base64::engine::general_purpose::STANDARD.encode(sig)
                )
                .into_bytes(),
            );
            files.insert(SUMS_KEY.into(), s.version().public_key.clone().into_bytes());
        }
        write_dir(req.output, &files)?;
        if req.tarball {
            write_tarball(req.output, &files)?;
        }
        let name = |k: &str, v: u32| format!("{k}/{v}");
        let event = crate::audit::Event::BundleExported {
            output: std::path::absolute(req.output)
                .unwrap_or_else(|_| req.output.to_owned())
                .display()
                .to_string(),
            scopes: manifest.scopes.clone(),
            trusts: manifest
                .keys
                .iter()
                .map(|k| name(&k.key, k.version))
                .collect(),
            revokes: manifest
                .revoked
                .iter()
                .map(|k| name(&k.key, k.version))
                .collect(),
            sums_sha256: sha256_hex(sums.as_bytes()),
            signed_by: manifest.signed_by.clone(),
        };
        // A bundle the log cannot record is not shipped: take it back.
        if let Err(e) = self.record(event, crate::audit::Outcome::Ok, None) {
            let _ = std::fs::remove_dir_all(req.output);
            if req.tarball {
                let _ = std::fs::remove_file(tarball_path(req.output));
            }
            return Err(e);
        }
        Ok(manifest)
    }
}

fn write_dir(out: &Path, files: &BTreeMap<String, Vec<u8>>) -> Result<()> {
    if out.exists() {
        let empty = std::fs::read_dir(out)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false);
        if !empty {
            return Err(Error::Invalid(format!(
                "{} exists and is not empty; choose a new --output directory",
                out.display()
            )));
        }
    }
    let parent = out.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    let tmp = parent.join(format!(
        ".{}.tmp-{}",
        out.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    for (f, bytes) in files {
        let p = tmp.join(f);
        fsutil::write_atomic(&p, bytes, false).map_err(|e| Error::io(&p, e))?;
    }
    if out.exists() {
        std::fs::remove_dir(out).map_err(|e| Error::io(out, e))?;
    }
    std::fs::rename(&tmp, out).map_err(|e| Error::io(out, e))?;
    fsutil::sync_dir(parent).map_err(|e| Error::io(parent, e))
}

/// `DIR.tar.gz` beside the bundle directory.
fn tarball_path(out: &Path) -> PathBuf {
    PathBuf::from(format!("{}.tar.gz", out.display()))
}

fn write_tarball(out: &Path, files: &BTreeMap<String, Vec<u8>>) -> Result<()> {
    let mut buf = Vec::new();
    {
        let mut tar = tar::Builder::new(&mut buf);
        for (f, bytes) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(0);
            h.set_cksum();
            tar.append_data(&mut h, f, bytes.as_slice())
                .map_err(|e| Error::Other(format!("tar: {e}")))?;
        }
        tar.finish()
            .map_err(|e| Error::Other(format!("tar: {e}")))?;
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &buf).map_err(|e| Error::Other(e.to_string()))?;
    let bytes = gz.finish().map_err(|e| Error::Other(e.to_string()))?;
    let path = tarball_path(out);
    fsutil::write_atomic(&path, &bytes, false).map_err(|e| Error::io(&path, e))
}

/// The result of `bundle verify`.
#[derive(Clone, Debug, Serialize)]
pub struct Verification {
    pub manifest: Manifest,
    /// Whether SHA256SUMS is signed and the signature checked against a trusted key.
    pub signature: SignatureStatus,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SignatureStatus {
    /// Signed by the `--trust` key.
    Trusted {
        key_id: String,
    },
    /// Signed by the key shipped in the bundle; not anchored to a key the caller trusts.
    SelfSigned {
        key_id: String,
    },
    Unsigned,
}

/// Checks every file against SHA256SUMS (changed, added, removed), the signature, and reads
/// `bundle.json`.
pub fn verify(dir: &Path, trust: Option<&PublicKey>) -> Result<Verification> {
    let bad = |m: String| Error::Invalid(format!("bundle {}: {m}", dir.display()));
    let sums_path = dir.join(SUMS);
    let sums =
        std::fs::read_to_string(&sums_path).map_err(|e| bad(format!("cannot read {SUMS}: {e}")))?;
    let mut listed = BTreeMap::new();
    for (i, line) in sums.lines().enumerate() {
        let (h, f) = line
            .split_once("  ")
            .ok_or_else(|| bad(format!("{SUMS} line {} is malformed", i + 1)))?;
        if f.contains("..") || f.starts_with('/') {
            return Err(bad(format!("{SUMS} names a path outside the bundle: {f}")));
        }
        listed.insert(f.to_owned(), h.to_owned());
    }
    let mut present = BTreeSet::new();
    collect_files(dir, dir, &mut present)?;
    for extra in [SUMS, SUMS_SIG, SUMS_KEY] {
        present.remove(extra);
    }
    for f in &present {
        if !listed.contains_key(f) {
            return Err(bad(format!("file {f} was added: it is not in {SUMS}")));
        }
    }
    for (f, h) in &listed {
        let p = dir.join(f);
        let bytes = std::fs::read(&p).map_err(|_| bad(format!("file {f} was removed")))?;
        if &sha256_hex(&bytes) != h {
            return Err(bad(format!(
                "file {f} was changed: its SHA-256 does not match {SUMS}"
            )));
        }
    }
    let signature = match std::fs::read_to_string(dir.join(SUMS_SIG)) {
        Err(_) => {
            if trust.is_some() {
                return Err(bad(format!(
                    "it is not signed ({SUMS_SIG} missing) but --trust was given"
                )));
            }
            SignatureStatus::Unsigned
        }
        Ok(sig_b64) => {
            use base64::Engine;
            let sig = base64::engine::general_purpose::STANDARD
                .decode(sig_b64.trim())
                .map_err(|e| bad(format!("{SUMS_SIG} is not base64: {e}")))?;
            let shipped = std::fs::read_to_string(dir.join(SUMS_KEY))
                .map_err(|_| bad(format!("{SUMS_KEY} is missing")))
                .and_then(|p| PublicKey::from_pem(&p).map_err(Error::from))?;
            let key = trust.unwrap_or(&shipped);
            if !key.verify(sums.as_bytes(), &sig) {
                return Err(bad(match trust {
                    Some(t) => format!(
                        "{SUMS} is not signed by the trusted key {} (signed by {}?)",
                        t.key_id(),
                        shipped.key_id()
                    ),
                    None => format!("the signature over {SUMS} is bad"),
                }));
            }
            match trust {
                Some(t) => SignatureStatus::Trusted { key_id: t.key_id() },
                None => SignatureStatus::SelfSigned {
                    key_id: shipped.key_id(),
                },
            }
        }
    };
    let manifest: Manifest = serde_json::from_slice(
        &std::fs::read(dir.join("bundle.json")).map_err(|e| bad(format!("bundle.json: {e}")))?,
    )
    .map_err(|e| bad(format!("bundle.json: {e}")))?;
    if manifest.format != FORMAT {
        return Err(bad(format!("unknown format {:?}", manifest.format)));
    }
    for k in &manifest.keys {
        let pem = std::fs::read_to_string(dir.join(&k.file))
            .map_err(|_| bad(format!("{} is missing", k.file)))?;
        if PublicKey::from_pem(&pem)?.key_id() != k.key_id {
            return Err(bad(format!("{} does not hold key id {}", k.file, k.key_id)));
        }
    }
    Ok(Verification {
        manifest,
        signature,
    })
}

fn collect_files(root: &Path, dir: &Path, out: &mut BTreeSet<String>) -> Result<()> {
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let e = e.map_err(|e| Error::io(dir, e))?;
        let p = e.path();
        if p.is_dir() {
            collect_files(root, &p, out)?;
        } else if let Ok(rel) = p.strip_prefix(root) {
            out.insert(rel.to_string_lossy().replace('\\', "/"));
        }
    }
    Ok(())
}

/// The public keys a bundle trusts (revoked ones never count).
pub fn trusted_keys(
    dir: &Path,
    v: &Verification,
) -> Result<Vec<(TrustedKey, crate::oci::verify::PublicKey)>> {
    let trusted = v.manifest.trusted_ids();
    let mut out = Vec::new();
    for k in &v.manifest.keys {
        if !trusted.contains(&k.key_id) {
            continue;
        }
        let pem = std::fs::read_to_string(dir.join(&k.file))
            .map_err(|e| Error::io(&dir.join(&k.file), e))?;
        out.push((k.clone(), crate::oci::verify::PublicKey::from_pem(&pem)?));
    }
    Ok(out)
}

/// What changed between two bundles.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Diff {
    pub added: Vec<String>,
    /// Trusted before, not now, and not revoked (deactivated, destroyed or dropped).
    pub dropped: Vec<String>,
    pub revoked: Vec<String>,
    pub scopes_added: Vec<String>,
    pub scopes_removed: Vec<String>,
}

pub fn diff(old: &Manifest, new: &Manifest) -> Diff {
    let name = |m: &Manifest, id: &str| {
        m.keys
            .iter()
            .map(|k| (k.key_id.as_str(), format!("{}/{}", k.key, k.version)))
            .chain(
                m.revoked
                    .iter()
                    .map(|k| (k.key_id.as_str(), format!("{}/{}", k.key, k.version))),
            )
            .find(|(i, _)| *i == id)
            .map(|(_, n)| n)
            .unwrap_or_else(|| id[..16.min(id.len())].to_owned())
    };
    let (o, n) = (old.trusted_ids(), new.trusted_ids());
    let old_revoked: BTreeSet<_> = old.revoked.iter().map(|r| r.key_id.clone()).collect();
    let new_revoked: BTreeSet<_> = new.revoked.iter().map(|r| r.key_id.clone()).collect();
    let os: BTreeSet<_> = old.scopes.iter().cloned().collect();
    let ns: BTreeSet<_> = new.scopes.iter().cloned().collect();
    Diff {
        added: n.difference(&o).map(|id| name(new, id)).collect(),
        dropped: o
            .difference(&n)
            .filter(|id| !new_revoked.contains(*id))
            .map(|id| name(old, id))
            .collect(),
        revoked: new_revoked
            .difference(&old_revoked)
            .map(|id| name(new, id))
            .collect(),
        scopes_added: ns.difference(&os).cloned().collect(),
        scopes_removed: os.difference(&ns).cloned().collect(),
    }
}

impl Keyward {
    /// Images the audit log says were signed only by key ids that `new` no longer trusts:
    /// verifiers holding the new bundle would reject them. (key version, image, digest)
    pub fn images_losing_trust(&self, new: &Manifest) -> Result<Vec<(String, String, String)>> {
        let trusted = new.trusted_ids();
        let mut by_digest: BTreeMap<String, (bool, Vec<(String, String)>)> = BTreeMap::new();
        for e in self.audit().entries()? {
            if e.outcome != crate::audit::Outcome::Ok {
                continue;
            }
            if let crate::audit::Event::ImageSigned {
                key,
                version,
                key_id,
                image,
                digest,
            } = e.event
            {
                let slot = by_digest.entry(digest).or_default();
                if trusted.contains(&key_id) {
                    slot.0 = true;
                } else {
                    slot.1.push((format!("{key}/{version}"), image));
                }
            }
        }
        Ok(by_digest
            .into_iter()
            .filter(|(_, (ok, _))| !ok)
            .flat_map(|(d, (_, v))| v.into_iter().map(move |(k, i)| (k, i, d.clone())))
            .collect())
    }
}
