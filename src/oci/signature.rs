//! The cosign signature manifest: attach signatures to an image, list them.
//!
//! Signatures of manifest `sha256:H` live in the image's repository under the tag
//! `sha256-H.sig`, as an OCI image manifest whose layers are the signatures: each layer's blob
//! is a simple-signing payload (media type [`SIMPLE_SIGNING_MEDIA_TYPE`]) and its annotation
//! [`SIGNATURE_ANNOTATION`] holds the standard-base64 signature over the payload bytes.
//!
//! Attaching adds layers and never removes any. Registries have no compare-and-swap on tags, so
//! [`attach`] re-reads the tag after writing and merges again when another writer's manifest
//! replaced its own (see [`AttachOptions`]).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures::StreamExt as _;
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::{Semaphore, SemaphorePermit};

use super::error::OciError;
use super::reference::{Digest, ImageRef};
use super::registry::{Inner, RegistryClient, DOCKER_MANIFEST, OCI_MANIFEST};

/// Media type of a layer holding a simple-signing payload.
pub const SIMPLE_SIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// Layer annotation holding the base64 signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// Media type of the signature manifest's config blob.
pub const OCI_CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";

/// One signature to attach: the payload bytes and the raw signature over them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewSignature {
    /// The simple-signing payload, exactly the bytes that were signed.
    pub payload: Vec<u8>,
    /// The signature, standard base64 (what goes into the annotation).
    pub signature_b64: String,
    /// Extra layer annotations (e.g. a certificate); the signature annotation is added.
    pub annotations: BTreeMap<String, String>,
}

impl NewSignature {
    /// A signature from payload bytes and raw signature bytes.
    pub fn new(payload: Vec<u8>, signature: &[u8]) -> Self {
        NewSignature {
            payload,
            signature_b64: base64::engine::general_purpose::STANDARD.encode(signature),
            annotations: BTreeMap::new(),
        }
    }

    /// The digest the payload layer will have.
    pub fn payload_digest(&self) -> Digest {
        Digest::of(&self.payload)
    }
}

/// A signature found in a signature manifest, its payload checked against its descriptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredSignature {
    /// The layer (payload blob) digest.
    pub layer_digest: Digest,
    /// The payload bytes (they hash to `layer_digest`).
    pub payload: Vec<u8>,
    /// The base64 signature annotation, if present.
    pub signature_b64: Option<String>,
    /// All the layer's annotations.
    pub annotations: BTreeMap<String, String>,
}

/// A simple-signing layer that could not be used, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RejectedLayer {
    /// The digest the descriptor claims.
    pub layer_digest: String,
    /// Why it was rejected (digest mismatch, too large, missing blob…).
    pub reason: String,
}

/// All signatures attached to one image digest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SignatureListing {
    /// The `.sig` manifest's digest; `None` when the image has no signature tag.
    pub manifest_digest: Option<Digest>,
    /// Usable signature layers, in manifest order.
    pub signatures: Vec<StoredSignature>,
    /// Simple-signing layers whose blob could not be fetched or did not match its descriptor.
    pub rejected: Vec<RejectedLayer>,
}

/// How [`attach`] deals with concurrent writers of the same signature tag.
#[derive(Clone, Debug)]
pub struct AttachOptions {
    /// Write attempts before giving up with [`OciError::ConcurrentUpdate`] (default 12).
    pub max_attempts: u32,
    /// First backoff after a lost race; doubled each time, with random jitter (default 25 ms).
    pub backoff: Duration,
    /// After writing, wait this long (plus jitter, plus the write's round trip) and check that
    /// the signatures are still there: a writer that read the tag before this write and writes
    /// after it would otherwise remove them unseen (default 100 ms; zero checks at once).
    pub settle: Duration,
}

impl Default for AttachOptions {
    fn default() -> Self {
        AttachOptions {
            max_attempts: 12,
            backoff: Duration::from_millis(25),
            settle: Duration::from_millis(100),
        }
    }
}

/// What [`attach`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachOutcome {
    /// The `.sig` reference written.
    pub signature_ref: ImageRef,
    /// Digest of the signature manifest that was last seen holding the signatures.
    pub manifest_digest: Digest,
    /// Signatures added by this call.
    pub added: usize,
    /// Signatures that were already there (same payload digest and same signature).
    pub already_present: usize,
    /// Manifest writes made (0 when everything was already present).
    pub writes: u32,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Fields keyward does not interpret (urls, platform, artifactType…), kept as they are.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SigManifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Parses an existing signature manifest; anything keyward cannot safely extend is an error.
pub(crate) fn parse_sig_manifest(
    bytes: &[u8],
    media_type: &str,
    reference: &ImageRef,
) -> Result<SigManifest, OciError> {
    let bad = |reason: String| OciError::MalformedSignatureManifest {
        reference: reference.to_string(),
        reason,
    };
    if media_type != OCI_MANIFEST && media_type != DOCKER_MANIFEST {
        return Err(bad(format!(
            "it is a {media_type:?}, not an image manifest"
        )));
    }
    let m: SigManifest = serde_json::from_slice(bytes)
        .map_err(|e| bad(format!("not a valid image manifest: {e}")))?;
    if m.schema_version != 2 {
        return Err(bad(format!(
            "schemaVersion {} instead of 2",
            m.schema_version
        )));
    }
    if m.extra.contains_key("manifests") {
        return Err(bad("it has a manifests list".into()));
    }
    for l in m.layers.iter().chain(std::iter::once(&m.config)) {
        if Digest::parse(&l.digest).is_err() {
            return Err(bad(format!(
                "descriptor digest {:?} is not a sha256 digest",
                l.digest
            )));
        }
    }
    Ok(m)
}

fn has_signature(m: &SigManifest, payload_digest: &str, sig_b64: &str) -> bool {
    m.layers.iter().any(|l| {
        l.media_type == SIMPLE_SIGNING_MEDIA_TYPE
            && l.digest == payload_digest
            && l.annotations
                .as_ref()
                .and_then(|a| a.get(SIGNATURE_ANNOTATION))
                .is_some_and(|s| s == sig_b64)
    })
}

/// The config blob of a signature manifest with `layers` layers: go-containerregistry's empty
/// image plus one history entry per layer, as cosign writes it, but with empty `diff_ids`, so
/// that it depends on the number of layers only. Every signature manifest of a repository
/// with the same number of layers shares it, so a batch uploads it once per repository
/// instead of once per image. Verifiers read only the manifest's layers; the history keeps
/// one entry per layer for registries that check that (Quay), also after cosign appends its
/// own layer.
fn config_for(layers: usize) -> Vec<u8> {
    let history: Vec<Value> = (0..layers)
        .map(|_| serde_json::json!({"created": "0001-01-01T00:00:00Z"}))
        .collect();
    let doc = serde_json::json!({
        "architecture": "",
        "created": "0001-01-01T00:00:00Z",
        "history": history,
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": []},
        "config": {},
    });
    doc.to_string().into_bytes()
}

/// The manifest that results from adding `new` to `base` (or to nothing), plus its config blob.
fn merged(base: Option<&SigManifest>, new: &[&NewSignature]) -> (SigManifest, Vec<u8>) {
    let mut layers = base.map(|b| b.layers.clone()).unwrap_or_default();
    for s in new {
        let mut ann = s.annotations.clone();
        ann.insert(SIGNATURE_ANNOTATION.to_string(), s.signature_b64.clone());
        layers.push(Descriptor {
            media_type: SIMPLE_SIGNING_MEDIA_TYPE.to_string(),
            digest: s.payload_digest().to_string(),
            size: s.payload.len() as u64,
            annotations: Some(ann),
            extra: Map::new(),
        });
    }
    let config = config_for(layers.len());
    let manifest = SigManifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.to_string()),
        config: Descriptor {
            media_type: OCI_CONFIG_MEDIA_TYPE.to_string(),
            digest: Digest::of(&config).to_string(),
            size: config.len() as u64,
            annotations: None,
            extra: Map::new(),
        },
        layers,
        annotations: base.and_then(|b| b.annotations.clone()),
        extra: base.map(|b| b.extra.clone()).unwrap_or_default(),
    };
    (manifest, config)
}

async fn read_sig_manifest(
    inner: &Inner,
    sig_ref: &ImageRef,
) -> Result<Option<(SigManifest, Digest)>, OciError> {
    match inner.get_manifest(sig_ref).await? {
        None => Ok(None),
        Some(m) => {
            let parsed = parse_sig_manifest(&m.bytes, &m.media_type, sig_ref)?;
            Ok(Some((parsed, m.digest)))
        }
    }
}

fn jitter(base: Duration) -> Duration {
    let ms = base.as_millis().max(1) as u64;
    Duration::from_millis(ms + rand::thread_rng().gen_range(0..=ms))
}

/// Attaches `signatures` to `digest` in `image`'s repository (async; see [`attach`]).
pub(crate) async fn attach_async(
    inner: &Inner,
    image: &ImageRef,
    digest: &Digest,
    signatures: &[NewSignature],
    opts: &AttachOptions,
) -> Result<AttachOutcome, OciError> {
    attach_gated(inner, image, digest, signatures, opts, None).await
}

/// Manifest writes refused for a missing blob that [`attach_gated`] retries.
const MAX_MISSING_BLOB: u32 = 3;

/// Bounds the registry requests of many concurrent [`attach_gated`] calls: at most `n`
/// attachments read, merge and write at once, and at most `n` make their final check (one
/// read after the settle time) at once. The checks have their own permits so that an
/// attachment whose settle time is over does not queue behind every attachment not yet
/// written: images finish (and are recorded) steadily instead of all at the end. Waits
/// (backoff, settle) hold no permit, so a batch waits out its settle times together.
pub(crate) struct Gate {
    writers: Semaphore,
    checkers: Semaphore,
}

impl Gate {
    /// A gate for `n` concurrent attachments (at least one).
    pub(crate) fn new(n: usize) -> Self {
        Gate {
            writers: Semaphore::new(n.max(1)),
            checkers: Semaphore::new(n.max(1)),
        }
    }
}

/// One attachment's place at the gate: a writer permit, held while it talks to the registry.
struct Slot<'g> {
    gate: Option<&'g Gate>,
    permit: Option<SemaphorePermit<'g>>,
}

impl<'g> Slot<'g> {
    async fn hold(&mut self) {
        if let (Some(g), None) = (self.gate, &self.permit) {
            // A closed semaphore (never closed here) lets everything through.
            self.permit = g.writers.acquire().await.ok();
        }
    }

    fn release(&mut self) {
        self.permit = None;
    }

    async fn checker(&self) -> Option<SemaphorePermit<'g>> {
        match self.gate {
            Some(g) => g.checkers.acquire().await.ok(),
            None => None,
        }
    }
}

/// [`attach_async`] for many attachments at once, bounded by `gate` (see [`Gate`]).
pub(crate) async fn attach_gated(
    inner: &Inner,
    image: &ImageRef,
    digest: &Digest,
    signatures: &[NewSignature],
    opts: &AttachOptions,
    gate: Option<&Gate>,
) -> Result<AttachOutcome, OciError> {
    if signatures.is_empty() {
        return Err(OciError::InvalidPayload("no signatures to attach".into()));
    }
    let sig_ref = image.signature_ref(digest);
    let mut slot = Slot { gate, permit: None };
    slot.hold().await;
    // Blobs first: a manifest is never written before what it refers to exists.
    for s in signatures {
        inner.push_blob(image, s.payload.clone()).await?;
    }
    let mut writes = 0u32;
    let mut added = 0usize;
    let mut already_present = 0usize;
    let mut backoff = opts.backoff;
    let max_writes = opts.max_attempts.max(1);
    let mut missing_blob = 0u32;
    let outcome = |manifest_digest: Digest, added: usize, already_present: usize, writes: u32| {
        AttachOutcome {
            signature_ref: sig_ref.clone(),
            manifest_digest,
            added,
            already_present,
            writes,
        }
    };
    // Every pass but the first follows a lost race (our signatures were gone at the check, or
    // the tag changed before our write). Reads that find the tag changed under us also count,
    // so the loop always ends.
    for pass in 0..max_writes * 4 {
        if pass > 0 {
            slot.release();
            tokio::time::sleep(jitter(backoff)).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
        slot.hold().await;
        let base = retry_5xx(|| read_sig_manifest(inner, &sig_ref)).await?;
        let missing: Vec<&NewSignature> = signatures
            .iter()
            .filter(|s| {
                !base.as_ref().is_some_and(|(m, _)| {
                    has_signature(m, s.payload_digest().as_str(), &s.signature_b64)
                })
            })
            .collect();
        if let (true, Some((_, seen))) = (missing.is_empty(), &base) {
            if writes == 0 {
                return Ok(outcome(seen.clone(), 0, signatures.len(), writes));
            }
            // Our write was replaced, then another writer merged our signatures back in: that
            // manifest must stand the same check as our own write.
            slot.release();
            match settled(&slot, inner, &sig_ref, signatures, opts, Duration::ZERO).await? {
                Some(d) => return Ok(outcome(d, added, already_present, writes)),
                None => continue,
            }
        }
        if writes == 0 {
            already_present = signatures.len() - missing.len();
            added = missing.len();
        }
        if writes >= max_writes {
            break;
        }
        let (manifest, config) = merged(base.as_ref().map(|(m, _)| m), &missing);
        let body = serde_json::to_vec(&manifest).map_err(|e| {
            OciError::Setup(format!("cannot serialise the signature manifest: {e}"))
        })?;
        // The write follows the read at once, so that another writer's update has only that
        // moment to slip in between. Only when the config had to be uploaded first (once per
        // repository, layer count and client) is the tag read again just before writing, and
        // the write made only if it still holds what the merge started from.
        let config_digest = Digest::of(&config);
        if inner.ensure_blob(image, config).await? {
            let now = retry_5xx(|| inner.get_manifest(&sig_ref))
                .await?
                .map(|m| m.digest);
            if now != base.as_ref().map(|(_, d)| d.clone()) {
                continue;
            }
        }
        let started = Instant::now();
        let pushed =
            retry_5xx(|| inner.push_manifest_checked(&sig_ref, body.clone(), OCI_MANIFEST)).await?;
        let round_trip = started.elapsed();
        if let Err(e) = pushed {
            // Refused, nothing written: a blob it refers to is unknown. docker-registry says
            // so while another client uploads the same config blob; check it again (upload
            // it if it really is gone), then read, merge and write again.
            missing_blob += 1;
            if missing_blob > MAX_MISSING_BLOB {
                return Err(e);
            }
            inner.forget_blob(image, &config_digest);
            continue;
        }
        writes += 1;
        slot.release();
        if let Some(d) = settled(&slot, inner, &sig_ref, signatures, opts, round_trip).await? {
            return Ok(outcome(d, added, already_present, writes));
        }
        // Replaced: back off, then merge again.
    }
    Err(OciError::ConcurrentUpdate {
        reference: sig_ref.to_string(),
        attempts: writes,
    })
}

/// Runs `f`, retrying a few times on HTTP 5xx. docker-registry's filesystem storage answers
/// 500 when a tag is read while another client rewrites it, which is exactly what concurrent
/// signers do; a registry that keeps failing still fails fast.
async fn retry_5xx<T, F, Fut>(mut f: F) -> Result<T, OciError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, OciError>>,
{
    let mut delay = Duration::from_millis(20);
    for _ in 0..4 {
        match f().await {
            Err(OciError::ServerError { .. }) => {
                tokio::time::sleep(jitter(delay)).await;
                delay *= 2;
            }
            other => return other,
        }
    }
    f().await
}

/// The check after a write: a writer that read the tag before our write and writes after it
/// removes our signatures unseen. Waits the settle time (plus jitter, plus `extra`), then reads
/// the tag: the manifest's digest when it still holds every signature.
///
/// `extra` is the round trip of our manifest write. A separate read-back request used to
/// precede the settle time; waiting one more round trip instead keeps the interval from our
/// write to the check at least as long, without the request.
async fn settled(
    slot: &Slot<'_>,
    inner: &Inner,
    sig_ref: &ImageRef,
    signatures: &[NewSignature],
    opts: &AttachOptions,
    extra: Duration,
) -> Result<Option<Digest>, OciError> {
    if !opts.settle.is_zero() {
        tokio::time::sleep(jitter(opts.settle) + extra).await;
    }
    let _permit = slot.checker().await;
    let again = retry_5xx(|| read_sig_manifest(inner, sig_ref)).await?;
    Ok(again.and_then(|(m, d)| {
        signatures
            .iter()
            .all(|s| has_signature(&m, s.payload_digest().as_str(), &s.signature_b64))
            .then_some(d)
    }))
}

/// Attaches `signatures` to manifest `digest` in `image`'s repository.
///
/// Payload blobs are uploaded first, then the `.sig` manifest is read, extended with the
/// signatures it does not hold yet (a signature with the same payload digest and the same
/// signature is never added twice), and written back; after the settle time the tag is read
/// again and must still hold them (otherwise a concurrent writer's manifest replaced this one:
/// merge again and retry with jittered backoff). An existing `.sig` manifest that cannot be
/// parsed is an error, never overwritten.
pub fn attach(
    client: &RegistryClient,
    image: &ImageRef,
    digest: &Digest,
    signatures: &[NewSignature],
    opts: &AttachOptions,
) -> Result<AttachOutcome, OciError> {
    client.runtime().block_on(attach_async(
        client.inner(),
        image,
        digest,
        signatures,
        opts,
    ))
}

pub(crate) async fn list_async(
    inner: &Inner,
    image: &ImageRef,
    digest: &Digest,
) -> Result<SignatureListing, OciError> {
    let sig_ref = image.signature_ref(digest);
    let Some((manifest, manifest_digest)) = read_sig_manifest(inner, &sig_ref).await? else {
        return Ok(SignatureListing::default());
    };
    let layers: Vec<Descriptor> = manifest
        .layers
        .into_iter()
        .filter(|l| l.media_type == SIMPLE_SIGNING_MEDIA_TYPE)
        .collect();
    let limit = inner.opts().max_blob_bytes;
    let concurrency = inner.opts().concurrency.max(1);
    let fetched: Vec<(Descriptor, Result<Vec<u8>, String>)> = futures::stream::iter(layers)
        .map(|l| async move {
            let r = match Digest::parse(&l.digest) {
                Err(e) => Err(e.to_string()),
                Ok(_) if l.size > limit as u64 => Err(format!(
                    "layer size {} exceeds the limit of {limit} bytes",
                    l.size
                )),
                Ok(d) => match inner.pull_blob(image, &d).await {
                    Ok(b) if b.len() as u64 != l.size => Err(format!(
                        "blob is {} bytes, descriptor says {}",
                        b.len(),
                        l.size
                    )),
                    Ok(b) => Ok(b),
                    Err(e) => Err(e.to_string()),
                },
            };
            (l, r)
        })
        .buffered(concurrency)
        .collect()
        .await;
    let mut out = SignatureListing {
        manifest_digest: Some(manifest_digest),
        ..Default::default()
    };
    for (l, r) in fetched {
        match r {
            Ok(payload) => {
                let annotations = l.annotations.unwrap_or_default();
                out.signatures.push(StoredSignature {
                    // parse cannot fail: checked above.
                    layer_digest: Digest::parse(&l.digest)?,
                    payload,
                    signature_b64: annotations.get(SIGNATURE_ANNOTATION).cloned(),
                    annotations,
                })
            }
            Err(reason) => out.rejected.push(RejectedLayer {
                layer_digest: l.digest,
                reason,
            }),
        }
    }
    Ok(out)
}

/// Lists the signatures attached to manifest `digest` in `image`'s repository. No `.sig` tag
/// gives an empty listing; a malformed one is an error. Each payload blob is checked against
/// its descriptor's digest and size; layers that fail are listed in
/// [`SignatureListing::rejected`].
pub fn list(
    client: &RegistryClient,
    image: &ImageRef,
    digest: &Digest,
) -> Result<SignatureListing, OciError> {
    client
        .runtime()
        .block_on(list_async(client.inner(), image, digest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(p: &str, s: &str) -> NewSignature {
        NewSignature {
            payload: p.as_bytes().to_vec(),
            signature_b64: s.to_string(),
            annotations: BTreeMap::new(),
        }
    }

    #[test]
    fn merge_keeps_existing_layers_and_fields() {
        let r = ImageRef::parse("reg.io/app:sha256-00.sig").unwrap();
        let (m1, _) = merged(None, &[&sig("a", "A")]);
        let mut bytes = serde_json::to_value(&m1).unwrap();
        bytes["layers"][0]["annotations"]["dev.sigstore.cosign/bundle"] = "x".into();
        bytes["layers"][0]["urls"] = serde_json::json!(["https://x"]);
        bytes["annotations"] = serde_json::json!({"org.example": "kept"});
        let base = parse_sig_manifest(bytes.to_string().as_bytes(), OCI_MANIFEST, &r).unwrap();
        let b = sig("b", "B");
        let (m2, config) = merged(Some(&base), &[&b]);
        assert_eq!(m2.layers.len(), 2);
        assert_eq!(m2.layers[0], base.layers[0]);
        assert!(m2.layers[0].extra.contains_key("urls"));
        assert_eq!(m2.annotations.unwrap()["org.example"], "kept");
        assert!(has_signature(&base, &Digest::of(b"a").to_string(), "A"));
        assert!(!has_signature(&base, &Digest::of(b"a").to_string(), "B"));
        assert_eq!(m2.config.digest, Digest::of(&config).to_string());
        let cfg: Value = serde_json::from_slice(&config).unwrap();
        assert_eq!(cfg["history"].as_array().unwrap().len(), 2);
        assert_eq!(cfg["rootfs"]["type"], "layers");
        // Shared by every manifest with as many layers, whatever they are.
        let (m3, config3) = merged(None, &[&sig("c", "C"), &sig("d", "D")]);
        assert_eq!(config3, config);
        assert_eq!(m3.config, m2.config);
    }

    #[test]
    fn malformed_manifests_are_refused() {
        let r = ImageRef::parse("reg.io/app:sha256-00.sig").unwrap();
        for (body, mt) in [
            ("not json", OCI_MANIFEST),
            (
                r#"{"schemaVersion":1,"config":{"mediaType":"x","digest":"sha256:0","size":0},"layers":[]}"#,
                OCI_MANIFEST,
            ),
            (r#"{"schemaVersion":2,"layers":[]}"#, OCI_MANIFEST),
            (
                r#"{"schemaVersion":2,"manifests":[]}"#,
                super::super::registry::OCI_INDEX,
            ),
        ] {
            assert!(matches!(
                parse_sig_manifest(body.as_bytes(), mt, &r),
                Err(OciError::MalformedSignatureManifest { .. })
            ));
        }
    }
}
