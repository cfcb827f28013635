//! Signing many images in one call, and the offline path (sign now into a signature file,
//! attach later).
//!
//! [`sign_images`] resolves tags concurrently, signs one payload at a time on the caller's
//! thread (a token session is not thread-safe, and a YubiKey touch is one at a time), and
//! attaches signatures concurrently. Every image ends in exactly one call of
//! [`BatchSigner::record`] (success or failure) before its outcome is reported through the
//! progress callback and in the returned report; a failed `record` turns the image into a
//! failure. One image failing never stops the others.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use futures::StreamExt as _;

use super::error::OciError;
use super::payload::{
    validate_containers_image, ParsedPayload, Payload, RESERVED_OPTIONAL_KEYS, SIMPLE_SIGNING_TYPE,
};
use super::reference::{Digest, ImageRef};
use super::registry::RegistryClient;
use super::signature::{
    attach_async, attach_gated, AttachOptions, AttachOutcome, Gate, NewSignature,
};
use super::verify::PublicKey;

/// The signing side of a batch: the token, and the audit log.
pub trait BatchSigner {
    /// Signs `payload` and returns the raw signature: ECDSA as DER (or r||s), RSA PKCS#1 v1.5
    /// over SHA-256, Ed25519 pure. The hash is SHA-256 for every algorithm.
    fn sign(&mut self, payload: &[u8]) -> Result<Vec<u8>, String>;

    /// Provenance written into every payload's `optional` map (signer, key name/version/id,
    /// token kind/serial, CI job…). Keys `creator` and `timestamp` are reserved.
    fn provenance(&self) -> BTreeMap<String, String>;

    /// Records the result of one image (for instance as an audit log entry). Called exactly
    /// once per image, success or failure, before the outcome is reported. An error makes
    /// the image count as failed.
    fn record(&mut self, result: &ImageSignResult) -> Result<(), String>;
}

/// Options of [`sign_images`] and [`sign_offline`].
#[derive(Clone, Debug)]
pub struct SignOptions {
    /// `optional.creator` (default `keyward <version>`).
    pub creator: Option<String>,
    /// Write `optional.timestamp`, the signing time in Unix seconds (default true).
    pub timestamp: bool,
    /// User annotations (`-a KEY=VALUE`), written into `optional` next to the provenance.
    /// They may not reuse a provenance key or a reserved key.
    pub annotations: BTreeMap<String, String>,
    /// How signatures are attached.
    pub attach: AttachOptions,
    /// Concurrent tag resolutions (default: the client's concurrency).
    pub resolve_concurrency: Option<usize>,
    /// Concurrent attachments (default: the client's concurrency).
    pub push_concurrency: Option<usize>,
    /// Set to true to stop: images not yet signed fail with "cancelled".
    pub cancel: Option<Arc<AtomicBool>>,
}

impl Default for SignOptions {
    fn default() -> Self {
        SignOptions {
            creator: Some(concat!("keyward ", env!("CARGO_PKG_VERSION")).to_string()),
            timestamp: true,
            annotations: BTreeMap::new(),
            attach: AttachOptions::default(),
            resolve_concurrency: None,
            push_concurrency: None,
            cancel: None,
        }
    }
}

/// The step at which an image failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The reference could not be parsed.
    Parse,
    /// The tag could not be resolved to a digest.
    Resolve,
    /// The payload could not be built.
    Payload,
    /// The signer failed.
    Sign,
    /// The signature could not be attached.
    Attach,
    /// `record` failed.
    Record,
    /// The batch was cancelled before this image was signed.
    Cancelled,
}

/// Why an image failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignFailure {
    /// Where.
    pub stage: Stage,
    /// The error message (with the hint of what to do).
    pub message: String,
    /// Whether trying again later may succeed (network, 5xx, races).
    pub transient: bool,
}

impl SignFailure {
    fn new(stage: Stage, e: &OciError) -> Self {
        SignFailure {
            stage,
            message: e.to_string(),
            transient: e.is_transient(),
        }
    }
}

/// Where a signature went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Published {
    /// Attached to the registry.
    Attached(AttachOutcome),
    /// Written into a signature file ([`sign_offline`]), not attached.
    Offline,
}

/// The result of one image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageSignResult {
    /// Position in the input list.
    pub index: usize,
    /// The image as given.
    pub image: String,
    /// The parsed reference.
    pub reference: Option<ImageRef>,
    /// The signed manifest digest.
    pub digest: Option<Digest>,
    /// The payload layer digest (sha256 of the payload).
    pub payload_digest: Option<Digest>,
    /// The base64 signature, once made.
    pub signature_b64: Option<String>,
    /// Success or failure.
    pub outcome: Result<Published, SignFailure>,
}

impl ImageSignResult {
    fn new(index: usize, image: &str) -> Self {
        ImageSignResult {
            index,
            image: image.to_string(),
            reference: None,
            digest: None,
            payload_digest: None,
            signature_b64: None,
            outcome: Err(SignFailure {
                stage: Stage::Parse,
                message: String::new(),
                transient: false,
            }),
        }
    }
}

/// Progress of a batch, for a progress bar or the TUI. Delivered on the caller's thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProgressEvent {
    /// The batch starts.
    Started {
        /// Number of images.
        total: usize,
    },
    /// A tag was resolved.
    Resolved {
        /// Position in the input list.
        index: usize,
        /// The digest.
        digest: Digest,
    },
    /// The payload was signed; attaching follows.
    Signed {
        /// Position in the input list.
        index: usize,
    },
    /// The image is finished and recorded.
    Finished {
        /// Position in the input list.
        index: usize,
        /// Whether it succeeded.
        ok: bool,
    },
    /// Every image is finished.
    Done {
        /// Images signed and recorded.
        succeeded: usize,
        /// Images that failed.
        failed: usize,
    },
}

/// The results of a batch, in input order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchReport {
    /// One result per input image.
    pub results: Vec<ImageSignResult>,
}

impl BatchReport {
    /// Images signed and recorded.
    pub fn succeeded(&self) -> usize {
        self.results.iter().filter(|r| r.outcome.is_ok()).count()
    }
    /// Images that failed.
    pub fn failed(&self) -> usize {
        self.results.len() - self.succeeded()
    }
}

fn check_annotations(
    signer: &dyn BatchSigner,
    opts: &SignOptions,
) -> Result<BTreeMap<String, String>, OciError> {
    let mut all = signer.provenance();
    for (k, v) in &opts.annotations {
        if RESERVED_OPTIONAL_KEYS.contains(&k.as_str()) {
            return Err(OciError::InvalidPayload(format!(
                "annotation key {k:?} is reserved"
            )));
        }
        if all.contains_key(k) {
            return Err(OciError::InvalidPayload(format!(
                "annotation key {k:?} is already used by keyward's provenance"
            )));
        }
        all.insert(k.clone(), v.clone());
    }
    if let Some(k) = all
        .keys()
        .find(|k| RESERVED_OPTIONAL_KEYS.contains(&k.as_str()))
    {
        return Err(OciError::InvalidPayload(format!(
            "provenance key {k:?} is reserved"
        )));
    }
    Ok(all)
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn build_payload(
    image: &ImageRef,
    digest: &Digest,
    optional: &BTreeMap<String, String>,
    opts: &SignOptions,
) -> Result<Vec<u8>, OciError> {
    let mut p = Payload::new(image, digest);
    p.creator = opts.creator.clone();
    p.timestamp = opts.timestamp.then(now);
    p.annotations = optional.clone();
    p.to_bytes()
}

enum Msg {
    Resolved(usize, Result<Digest, OciError>),
    Attached(usize, Result<AttachOutcome, OciError>),
}

/// Signs every image in `images` (tags or digests) and attaches the signatures.
///
/// Fails as a whole only when the options are unusable (an annotation key clashes with the
/// provenance or a reserved key); otherwise every image has a result in the report.
pub fn sign_images(
    client: &RegistryClient,
    images: &[String],
    signer: &mut dyn BatchSigner,
    opts: &SignOptions,
    progress: &mut dyn FnMut(ProgressEvent),
) -> Result<BatchReport, OciError> {
    let optional = check_annotations(signer, opts)?;
    let total = images.len();
    progress(ProgressEvent::Started { total });
    let mut results: Vec<ImageSignResult> = images
        .iter()
        .enumerate()
        .map(|(i, s)| ImageSignResult::new(i, s))
        .collect();
    let mut done = vec![false; total];
    let mut remaining = total;

    let (tx, rx) = mpsc::channel::<Msg>();
    let mut to_resolve = Vec::new();
    // Parse errors are final at once.
    let mut finals: Vec<usize> = Vec::new();
    for (i, s) in images.iter().enumerate() {
        match ImageRef::parse(s) {
            Ok(r) => {
                results[i].reference = Some(r.clone());
                to_resolve.push((i, r));
            }
            Err(e) => {
                results[i].outcome = Err(SignFailure::new(Stage::Parse, &e));
                finals.push(i);
            }
        }
    }
    for i in finals {
        finish(&mut results[i], signer, progress);
        done[i] = true;
        remaining -= 1;
    }

    let inner = Arc::clone(client.inner());
    let resolve_n = opts
        .resolve_concurrency
        .unwrap_or(inner.opts().concurrency)
        .max(1);
    let push_n = opts
        .push_concurrency
        .unwrap_or(inner.opts().concurrency)
        .max(1);
    let rt = client.runtime();
    {
        let tx = tx.clone();
        let inner = Arc::clone(&inner);
        rt.spawn(async move {
            let inner = &inner;
            let mut s = futures::stream::iter(to_resolve)
                .map(|(i, r)| async move { (i, inner.resolve(&r).await) })
                .buffer_unordered(resolve_n);
            while let Some((i, d)) = s.next().await {
                if tx.send(Msg::Resolved(i, d)).is_err() {
                    break;
                }
            }
        });
    }
    let gate = Arc::new(Gate::new(push_n));

    while remaining > 0 {
        let Ok(msg) = rx.recv() else {
            // Every sender is gone: a task died. Fail what is left rather than hang.
            for i in 0..total {
                if !done[i] {
                    results[i].outcome = Err(SignFailure {
                        stage: Stage::Attach,
                        message: "internal error: the registry worker stopped".into(),
                        transient: true,
                    });
                    finish(&mut results[i], signer, progress);
                    done[i] = true;
                }
            }
            break;
        };
        let (i, final_now) = match msg {
            Msg::Resolved(i, Err(e)) => {
                results[i].outcome = Err(SignFailure::new(Stage::Resolve, &e));
                (i, true)
            }
            Msg::Resolved(i, Ok(digest)) => {
                progress(ProgressEvent::Resolved {
                    index: i,
                    digest: digest.clone(),
                });
                results[i].digest = Some(digest.clone());
                match sign_one(&mut results[i], &digest, &optional, signer, opts) {
                    Err(f) => {
                        results[i].outcome = Err(f);
                        (i, true)
                    }
                    Ok(sig) => {
                        progress(ProgressEvent::Signed { index: i });
                        let (tx, inner, gate) = (tx.clone(), Arc::clone(&inner), Arc::clone(&gate));
                        let reference = results[i].reference.clone();
                        let attach_opts = opts.attach.clone();
                        rt.spawn(async move {
                            let r = match reference {
                                Some(r) => {
                                    attach_gated(
                                        &inner,
                                        &r,
                                        &digest,
                                        &[sig],
                                        &attach_opts,
                                        Some(&gate),
                                    )
                                    .await
                                }
                                None => Err(OciError::Setup("reference lost".into())),
                            };
                            let _ = tx.send(Msg::Attached(i, r));
                        });
                        (i, false)
                    }
                }
            }
            Msg::Attached(i, r) => {
                results[i].outcome = match r {
                    Ok(o) => Ok(Published::Attached(o)),
                    Err(e) => Err(SignFailure::new(Stage::Attach, &e)),
                };
                (i, true)
            }
        };
        if final_now && !done[i] {
            finish(&mut results[i], signer, progress);
            done[i] = true;
            remaining -= 1;
        }
    }
    drop(tx);
    let report = BatchReport { results };
    progress(ProgressEvent::Done {
        succeeded: report.succeeded(),
        failed: report.failed(),
    });
    Ok(report)
}

fn sign_one(
    result: &mut ImageSignResult,
    digest: &Digest,
    optional: &BTreeMap<String, String>,
    signer: &mut dyn BatchSigner,
    opts: &SignOptions,
) -> Result<NewSignature, SignFailure> {
    if opts
        .cancel
        .as_ref()
        .is_some_and(|c| c.load(Ordering::SeqCst))
    {
        return Err(SignFailure::new(Stage::Cancelled, &OciError::Cancelled));
    }
    let Some(image) = result.reference.clone() else {
        return Err(SignFailure::new(
            Stage::Payload,
            &OciError::Setup("no reference".into()),
        ));
    };
    let payload = build_payload(&image, digest, optional, opts)
        .map_err(|e| SignFailure::new(Stage::Payload, &e))?;
    result.payload_digest = Some(Digest::of(&payload));
    let raw = signer
        .sign(&payload)
        .map_err(|e| SignFailure::new(Stage::Sign, &OciError::Signer(e)))?;
    let sig = NewSignature::new(payload, &raw);
    result.signature_b64 = Some(sig.signature_b64.clone());
    Ok(sig)
}

/// Records the result (turning it into a failure if recording fails), then reports it.
fn finish(
    result: &mut ImageSignResult,
    signer: &mut dyn BatchSigner,
    progress: &mut dyn FnMut(ProgressEvent),
) {
    if let Err(e) = signer.record(result) {
        result.outcome = Err(SignFailure::new(Stage::Record, &OciError::Record(e)));
    }
    progress(ProgressEvent::Finished {
        index: result.index,
        ok: result.outcome.is_ok(),
    });
}

/// The format tag of signature files.
pub const SIGNATURE_FILE_FORMAT: &str = "keyward-cosign-signature/v1";

/// A signature made offline, to be attached later with [`attach_file`].
///
/// JSON, one object: `format` (`keyward-cosign-signature/v1`), `reference` (the image as
/// `registry/repository@sha256:…`), `digest`, `payload` (standard base64 of the exact payload
/// bytes), `signature` (standard base64), and informational `key_id` and `created`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureFile {
    /// Always [`SIGNATURE_FILE_FORMAT`].
    pub format: String,
    /// `registry/repository@sha256:…`.
    pub reference: String,
    /// The signed manifest digest.
    pub digest: Digest,
    /// Base64 of the payload bytes.
    pub payload: String,
    /// Base64 of the signature.
    pub signature: String,
    /// Key id of the signing key, if the signer said (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// Unix time of signing (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<i64>,
}

impl SignatureFile {
    /// Pretty JSON with a final newline.
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Parses and checks a signature file: format, reference pinned to `digest`, payload for
    /// that digest and repository, payload acceptable to containers/image, base64 fields.
    pub fn from_json(bytes: &[u8]) -> Result<Self, OciError> {
        let bad = |reason: String| OciError::InvalidSignatureFile { reason };
        let f: SignatureFile = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        f.check()?;
        Ok(f)
    }

    fn check(&self) -> Result<(), OciError> {
        let bad = |reason: String| OciError::InvalidSignatureFile { reason };
        if self.format != SIGNATURE_FILE_FORMAT {
            return Err(bad(format!(
                "format {:?}, expected {SIGNATURE_FILE_FORMAT:?}",
                self.format
            )));
        }
        let image = self.image()?;
        if image.digest() != Some(&self.digest) {
            return Err(bad(format!(
                "reference {} is not pinned to digest {}",
                self.reference, self.digest
            )));
        }
        let payload = self.payload_bytes()?;
        self.signature_bytes()?;
        validate_containers_image(&payload).map_err(|e| bad(format!("payload: {e}")))?;
        let p = ParsedPayload::parse(&payload).map_err(|e| bad(format!("payload: {e}")))?;
        if p.signature_type != SIMPLE_SIGNING_TYPE || p.manifest_digest != self.digest.as_str() {
            return Err(bad(format!(
                "the payload signs {}, not {}",
                p.manifest_digest, self.digest
            )));
        }
        if !image.same_repository(&p.docker_reference) {
            return Err(bad(format!(
                "the payload names {}, not {}",
                p.docker_reference,
                image.repository_name()
            )));
        }
        Ok(())
    }

    /// The image, pinned.
    pub fn image(&self) -> Result<ImageRef, OciError> {
        ImageRef::parse(&self.reference).map_err(|e| OciError::InvalidSignatureFile {
            reason: e.to_string(),
        })
    }

    /// The payload bytes.
    pub fn payload_bytes(&self) -> Result<Vec<u8>, OciError> {
        base64::engine::general_purpose::STANDARD
            .decode(&self.payload)
            .map_err(|e| OciError::InvalidSignatureFile {
                reason: format!("payload is not base64: {e}"),
            })
    }

    /// The raw signature bytes.
    pub fn signature_bytes(&self) -> Result<Vec<u8>, OciError> {
        base64::engine::general_purpose::STANDARD
            .decode(&self.signature)
            .map_err(|e| OciError::InvalidSignatureFile {
                reason: format!("signature is not base64: {e}"),
            })
    }

    /// Writes the file atomically (temporary file, fsync, rename).
    pub fn write(&self, path: &Path) -> Result<(), OciError> {
        write_atomic(path, &self.to_json())
    }

    /// Reads and checks a signature file.
    pub fn read(path: &Path) -> Result<Self, OciError> {
        let bytes = std::fs::read(path).map_err(|source| OciError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        SignatureFile::from_json(&bytes)
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), OciError> {
    use std::io::Write as _;
    let io = |source| OciError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}

/// Signs `image` (which must be pinned: `IMAGE@sha256:…`) without contacting any registry, and
/// returns the signature file. `record` is called as in [`sign_images`], with
/// [`Published::Offline`] on success.
pub fn sign_offline(
    image: &ImageRef,
    signer: &mut dyn BatchSigner,
    opts: &SignOptions,
) -> Result<SignatureFile, OciError> {
    let digest = image
        .digest()
        .cloned()
        .ok_or_else(|| OciError::DigestRequired {
            reference: image.to_string(),
        })?;
    let optional = check_annotations(signer, opts)?;
    let mut result = ImageSignResult::new(0, &image.to_string());
    result.reference = Some(image.clone());
    result.digest = Some(digest.clone());
    let mut opts = opts.clone();
    let created = now();
    opts.timestamp = opts.timestamp && created > 0;
    let signed = sign_one(&mut result, &digest, &optional, signer, &opts);
    result.outcome = signed
        .as_ref()
        .map(|_| Published::Offline)
        .map_err(Clone::clone);
    let mut ignore = |_| {};
    finish(&mut result, signer, &mut ignore);
    if let Err(f) = &result.outcome {
        return Err(match f.stage {
            Stage::Record => OciError::Record(f.message.clone()),
            Stage::Sign => OciError::Signer(f.message.clone()),
            Stage::Cancelled => OciError::Cancelled,
            _ => OciError::InvalidPayload(f.message.clone()),
        });
    }
    let sig = signed.map_err(|f| OciError::Signer(f.message))?;
    Ok(SignatureFile {
        format: SIGNATURE_FILE_FORMAT.to_string(),
        reference: image.with_digest(&digest).to_string(),
        digest,
        payload: base64::engine::general_purpose::STANDARD.encode(&sig.payload),
        signature: sig.signature_b64,
        key_id: None,
        created: Some(created),
    })
}

/// Attaches a signature file's signature to its image. With `key`, the signature must verify
/// with it first (so a corrupted or mixed-up file is refused before it reaches the registry).
pub fn attach_file(
    client: &RegistryClient,
    file: &SignatureFile,
    key: Option<&PublicKey>,
    opts: &AttachOptions,
) -> Result<AttachOutcome, OciError> {
    file.check()?;
    let image = file.image()?;
    let payload = file.payload_bytes()?;
    let raw = file.signature_bytes()?;
    if let Some(k) = key {
        k.verify(&payload, &raw)
            .map_err(|e| OciError::InvalidSignatureFile {
                reason: format!("the signature does not verify with key {}: {e}", k.key_id()),
            })?;
    }
    let sig = NewSignature {
        payload,
        signature_b64: file.signature.clone(),
        annotations: BTreeMap::new(),
    };
    client.runtime().block_on(attach_async(
        client.inner(),
        &image,
        &file.digest,
        &[sig],
        opts,
    ))
}
