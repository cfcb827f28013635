//! A blocking registry client: resolve tags, fetch manifests with a size limit, push and pull
//! blobs, push manifests.
//!
//! Internally it runs a small tokio runtime and `oci-client` (which does the bearer-token dance
//! from basic credentials). Manifests are fetched with a bounded read of keyward's own, so that
//! a hostile or broken registry cannot make keyward buffer an arbitrary amount of data, and so
//! that the digest of what was read is computed here, not taken from a header.
//!
//! The client must not be used from inside another tokio runtime (its methods block).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::RegistryOperation;
use secrecy::ExposeSecret;

use super::credentials::{find_credentials, CredentialSource, Credentials};
use super::error::OciError;
use super::reference::{Digest, ImageRef};

/// OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index media type.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker schema 2 manifest media type.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list media type.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// How bearer tokens obtained for manifest reads are kept before asking again.
const TOKEN_TTL: Duration = Duration::from_secs(45);

/// Options of a [`RegistryClient`].
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// `HOST[:PORT]` of registries reached over plain HTTP. Every other registry is reached over
    /// HTTPS, verified against the system's root certificates.
    pub insecure_registries: Vec<String>,
    /// Where credentials come from.
    pub credentials: CredentialSource,
    /// The largest manifest keyward reads (default 4 MiB, the limit registries themselves use).
    pub max_manifest_bytes: usize,
    /// The largest blob keyward reads; only signature payloads are read (default 1 MiB).
    pub max_blob_bytes: usize,
    /// How many registry requests run at once in batch operations (default 8).
    pub concurrency: usize,
    /// TCP/TLS connect timeout (default 10 s).
    pub connect_timeout: Duration,
    /// Timeout between two reads on a connection (default 60 s).
    pub read_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            insecure_registries: Vec::new(),
            credentials: CredentialSource::Environment,
            max_manifest_bytes: 4 * 1024 * 1024,
            max_blob_bytes: 1024 * 1024,
            concurrency: 8,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
        }
    }
}

/// A manifest as read from a registry.
#[derive(Clone, Debug)]
pub struct Manifest {
    /// sha256 of `bytes`, computed locally.
    pub digest: Digest,
    /// Its media type (from `Content-Type`, else from the document's `mediaType`).
    pub media_type: String,
    /// The exact bytes (what the digest covers).
    pub bytes: Vec<u8>,
}

impl Manifest {
    /// True for an OCI index or a Docker manifest list (a multi-platform image).
    pub fn is_index(&self) -> bool {
        self.media_type == OCI_INDEX || self.media_type == DOCKER_MANIFEST_LIST
    }
}

#[derive(Clone)]
enum AuthHeader {
    None,
    Bearer(String),
    Basic(Arc<Credentials>),
}

type TokenKey = (String, String, bool);

pub(crate) struct Inner {
    oci: oci_client::Client,
    http: reqwest::Client,
    opts: ClientOptions,
    cred_files: Vec<PathBuf>,
    creds: Mutex<HashMap<String, Option<Arc<Credentials>>>>,
    tokens: Mutex<HashMap<TokenKey, (AuthHeader, Instant)>>,
    /// One lock per token key: concurrent requests that find no cached authorization ask
    /// once, not once each.
    authorizing: Mutex<HashMap<TokenKey, Arc<tokio::sync::Mutex<()>>>>,
    /// Shared blobs known to be in a repository ([`Inner::ensure_blob`]).
    known_blobs: Mutex<HashMap<BlobKey, Arc<tokio::sync::OnceCell<()>>>>,
}

type BlobKey = (String, String, Digest);

fn blob_key(repository: &ImageRef, digest: &Digest) -> BlobKey {
    (
        repository.registry().to_string(),
        repository.repository().to_string(),
        digest.clone(),
    )
}

const MANIFEST_PUSH: &str = "manifest upload";

/// Whether the registry refused a manifest because a blob it refers to is unknown to it.
fn names_missing_blob(e: &OciDistributionError) -> bool {
    let missing = |envelope: &oci_client::errors::OciEnvelope| {
        envelope.errors.iter().any(|e| {
            matches!(
                e.code,
                OciErrorCode::ManifestBlobUnknown | OciErrorCode::BlobUnknown
            )
        })
    };
    match e {
        OciDistributionError::RegistryError { envelope, .. } => missing(envelope),
        OciDistributionError::ServerError { code, message, .. } if *code < 500 => {
            serde_json::from_str::<oci_client::errors::OciEnvelope>(message)
                .is_ok_and(|e| missing(&e))
        }
        _ => false,
    }
}

/// A blocking client for OCI registries. Cheap to share by reference; all methods take `&self`.
pub struct RegistryClient {
    rt: tokio::runtime::Runtime,
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("options", &self.inner.opts)
            .finish_non_exhaustive()
    }
}

impl RegistryClient {
    /// Creates a client. Fails only if the TLS stack or the runtime cannot be set up.
    pub fn new(opts: ClientOptions) -> Result<Self, OciError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("keyward-oci")
            .enable_all()
            .build()
            .map_err(|e| OciError::Setup(e.to_string()))?;
        let protocol = if opts.insecure_registries.is_empty() {
            oci_client::client::ClientProtocol::Https
        } else {
            oci_client::client::ClientProtocol::HttpsExcept(opts.insecure_registries.clone())
        };
        let config = oci_client::client::ClientConfig {
            protocol,
            connect_timeout: Some(opts.connect_timeout),
            read_timeout: Some(opts.read_timeout),
            user_agent: concat!("keyward/", env!("CARGO_PKG_VERSION")),
            max_concurrent_upload: opts.concurrency.max(1),
            max_concurrent_download: opts.concurrency.max(1),
            // Signature payloads and configs are small: POST + PUT instead of POST + PATCH +
            // PUT.
            use_monolithic_push: true,
            ..Default::default()
        };
        let oci =
            oci_client::Client::try_from(config).map_err(|e| OciError::Setup(e.to_string()))?;
        let http = reqwest::Client::builder()
            .connect_timeout(opts.connect_timeout)
            .read_timeout(opts.read_timeout)
            .user_agent(concat!("keyward/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| OciError::Setup(error_chain(&e)))?;
        let cred_files = opts.credentials.files();
        Ok(RegistryClient {
            rt,
            inner: Arc::new(Inner {
                oci,
                http,
                opts,
                cred_files,
                creds: Mutex::new(HashMap::new()),
                tokens: Mutex::new(HashMap::new()),
                authorizing: Mutex::new(HashMap::new()),
                known_blobs: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The options the client was made with.
    pub fn options(&self) -> &ClientOptions {
        &self.inner.opts
    }

    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }

    pub(crate) fn runtime(&self) -> &tokio::runtime::Runtime {
        &self.rt
    }

    /// Resolves `image` to the digest of its manifest. A tag pointing at an index or manifest
    /// list resolves to the index digest (what `cosign sign` signs). A reference that already
    /// has a digest is checked against the registry (the manifest must exist and hash to it).
    pub fn resolve(&self, image: &ImageRef) -> Result<Digest, OciError> {
        self.rt.block_on(self.inner.resolve(image))
    }

    /// Fetches a manifest (image manifest or index), at most
    /// [`ClientOptions::max_manifest_bytes`] bytes.
    pub fn fetch_manifest(&self, image: &ImageRef) -> Result<Manifest, OciError> {
        self.rt.block_on(async {
            self.inner
                .get_manifest(image)
                .await?
                .ok_or_else(|| OciError::ManifestNotFound {
                    reference: image.to_string(),
                })
        })
    }

    /// Uploads a blob into `repository`'s repository; returns its digest.
    pub fn push_blob(&self, repository: &ImageRef, data: Vec<u8>) -> Result<Digest, OciError> {
        self.rt.block_on(self.inner.push_blob(repository, data))
    }

    /// Downloads a blob (at most [`ClientOptions::max_blob_bytes`]) and checks its digest.
    pub fn pull_blob(&self, repository: &ImageRef, digest: &Digest) -> Result<Vec<u8>, OciError> {
        self.rt.block_on(self.inner.pull_blob(repository, digest))
    }

    /// Uploads a manifest under `target`'s tag (or digest); returns the manifest digest.
    /// Push the blobs it refers to first.
    pub fn push_manifest(
        &self,
        target: &ImageRef,
        bytes: Vec<u8>,
        media_type: &str,
    ) -> Result<Digest, OciError> {
        self.rt
            .block_on(self.inner.push_manifest(target, bytes, media_type))
    }
}

impl Inner {
    pub(crate) fn opts(&self) -> &ClientOptions {
        &self.opts
    }

    fn scheme(&self, image: &ImageRef) -> &'static str {
        let insecure = &self.opts.insecure_registries;
        if insecure
            .iter()
            .any(|r| r == image.registry() || r == image.api_host())
        {
            "http"
        } else {
            "https"
        }
    }

    fn credentials(&self, image: &ImageRef) -> Result<Option<Arc<Credentials>>, OciError> {
        let key = format!("{}/{}", image.registry(), image.repository());
        if let Some(c) = lock(&self.creds).get(&key) {
            return Ok(c.clone());
        }
        let found = find_credentials(&self.cred_files, image)?.map(Arc::new);
        lock(&self.creds).insert(key, found.clone());
        Ok(found)
    }

    fn credentials_from(&self, image: &ImageRef) -> Option<PathBuf> {
        self.credentials(image)
            .ok()
            .flatten()
            .map(|c| c.source.clone())
    }

    async fn registry_auth(&self, image: &ImageRef) -> Result<RegistryAuth, OciError> {
        let auth = match self.credentials(image)? {
            Some(c) => c.to_registry_auth(),
            None => RegistryAuth::Anonymous,
        };
        // oci-client's push and blob calls read the auth it has stored for the registry.
        self.oci
            .store_auth_if_needed(image.to_oci().resolve_registry(), &auth)
            .await;
        Ok(auth)
    }

    /// Whether the registry asks for authentication: `GET /v2/` answered with a
    /// `WWW-Authenticate` challenge. oci-client makes the same probe before every request once
    /// any auth is stored for the registry and caches nothing when there is no challenge, so
    /// keyward stores auth in oci-client only for registries that challenge.
    async fn challenges(&self, image: &ImageRef, op: &'static str) -> Result<bool, OciError> {
        let url = format!("{}://{}/v2/", self.scheme(image), image.api_host());
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| self.map_reqwest(&e, image, op))?;
        Ok(resp
            .headers()
            .contains_key(reqwest::header::WWW_AUTHENTICATE))
    }

    /// Authorization for `image`'s repository, cached: a bearer token obtained by oci-client
    /// (token dance with the basic credentials), else basic credentials, else nothing. Used
    /// for keyward's own manifest reads, and called before every oci-client request so that
    /// oci-client holds the token (or, for a registry without a challenge, no auth at all).
    async fn authorize(
        &self,
        image: &ImageRef,
        push: bool,
        op: &'static str,
    ) -> Result<AuthHeader, OciError> {
        let key = (
            image.registry().to_string(),
            image.repository().to_string(),
            push,
        );
        let cached = || {
            lock(&self.tokens).get(&key).and_then(|(h, at)| {
                (at.elapsed() < TOKEN_TTL || !matches!(h, AuthHeader::Bearer(_))).then(|| h.clone())
            })
        };
        if let Some(h) = cached() {
            return Ok(h);
        }
        let flight = Arc::clone(lock(&self.authorizing).entry(key.clone()).or_default());
        let _one_at_a_time = flight.lock().await;
        if let Some(h) = cached() {
            return Ok(h);
        }
        let token = if self.challenges(image, op).await? {
            let auth = self.registry_auth(image).await?;
            let oper = if push {
                RegistryOperation::Push
            } else {
                RegistryOperation::Pull
            };
            self.oci
                .auth(&image.to_oci(), &auth, oper)
                .await
                .map_err(|e| self.map_oci(e, image, op))?
        } else {
            // No challenge: oci-client would send no credentials either (its probe finds no
            // challenge), it just would probe again before every request.
            None
        };
        let header = match (token, self.credentials(image)?) {
            (Some(t), _) => AuthHeader::Bearer(t),
            (None, Some(c)) => AuthHeader::Basic(c),
            (None, None) => AuthHeader::None,
        };
        lock(&self.tokens).insert(key, (header.clone(), Instant::now()));
        Ok(header)
    }

    fn forget_token(&self, image: &ImageRef) {
        lock(&self.tokens)
            .retain(|(r, repo, _), _| !(r == image.registry() && repo == image.repository()));
    }

    pub(crate) async fn resolve(&self, image: &ImageRef) -> Result<Digest, OciError> {
        let m = self
            .get_manifest(image)
            .await?
            .ok_or_else(|| OciError::ManifestNotFound {
                reference: image.to_string(),
            })?;
        let known = [
            OCI_MANIFEST,
            OCI_INDEX,
            DOCKER_MANIFEST,
            DOCKER_MANIFEST_LIST,
        ];
        if !known.contains(&m.media_type.as_str()) {
            return Err(OciError::UnsupportedManifest {
                reference: image.to_string(),
                media_type: m.media_type,
            });
        }
        Ok(m.digest)
    }

    /// GET a manifest with a bounded read. `Ok(None)` on 404.
    pub(crate) async fn get_manifest(
        &self,
        image: &ImageRef,
    ) -> Result<Option<Manifest>, OciError> {
        const OP: &str = "manifest fetch";
        let url = format!(
            "{}://{}/v2/{}/manifests/{}",
            self.scheme(image),
            image.api_host(),
            image.repository(),
            image.manifest_reference()
        );
        let mut retried = false;
        let resp = loop {
            let auth = self.authorize(image, false, OP).await?;
            let mut req = self.http.get(&url).header(reqwest::header::ACCEPT, ACCEPT);
            req = match &auth {
                AuthHeader::None => req,
                AuthHeader::Bearer(t) => req.bearer_auth(t),
                AuthHeader::Basic(c) => {
                    req.basic_auth(&c.username, Some(c.password().expose_secret()))
                }
            };
            let resp = req
                .send()
                .await
                .map_err(|e| self.map_reqwest(&e, image, OP))?;
            if resp.status() == reqwest::StatusCode::UNAUTHORIZED
                && !retried
                && !matches!(auth, AuthHeader::None)
            {
                // A cached token may have expired early: ask for a new one once.
                self.forget_token(image);
                retried = true;
                continue;
            }
            break resp;
        };
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            let body = read_limited(resp, 4096).await.unwrap_or_default();
            return Err(self.status_error(status.as_u16(), &body, image, OP));
        }
        let limit = self.opts.max_manifest_bytes;
        if resp.content_length().is_some_and(|n| n > limit as u64) {
            return Err(OciError::ManifestTooLarge {
                reference: image.to_string(),
                limit,
            });
        }
        let header_digest = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or("").trim().to_string());
        let bytes = match read_limited(resp, limit).await {
            Ok(b) => b,
            Err(ReadError::TooLarge) => {
                return Err(OciError::ManifestTooLarge {
                    reference: image.to_string(),
                    limit,
                })
            }
            Err(ReadError::Http(e)) => return Err(self.map_reqwest(&e, image, OP)),
        };
        let digest = Digest::of(&bytes);
        if let Some(expected) = image.digest() {
            if *expected != digest {
                return Err(OciError::DigestMismatch {
                    what: format!("manifest {image}"),
                    expected: expected.to_string(),
                    actual: digest.to_string(),
                });
            }
        }
        if let Some(h) = header_digest.filter(|h| h.starts_with("sha256:")) {
            if h != digest.as_str() {
                return Err(OciError::DigestMismatch {
                    what: format!("manifest {image} (Docker-Content-Digest header)"),
                    expected: h,
                    actual: digest.to_string(),
                });
            }
        }
        let media_type = match content_type {
            Some(ct) if !ct.is_empty() && ct != "application/json" && ct != "text/plain" => ct,
            _ => media_type_from_body(&bytes),
        };
        Ok(Some(Manifest {
            digest,
            media_type,
            bytes,
        }))
    }

    pub(crate) async fn push_blob(
        &self,
        repository: &ImageRef,
        data: Vec<u8>,
    ) -> Result<Digest, OciError> {
        const OP: &str = "blob upload";
        let digest = Digest::of(&data);
        self.authorize(repository, true, OP).await?;
        let target = repository.with_digest(&digest).to_oci();
        self.oci
            .push_blob(&target, data, digest.as_str())
            .await
            .map_err(|e| self.map_oci(e, repository, OP))?;
        Ok(digest)
    }

    /// Makes sure a blob many manifests share (the signature manifests' config) is in
    /// `repository`: checked with HEAD and uploaded only when missing, once per client
    /// (concurrent callers wait for the first). An existing blob is never uploaded again:
    /// docker-registry's filesystem storage rewrites the repository's link to a blob on
    /// every upload, non-atomically, and a manifest written meanwhile is refused as
    /// referring to an unknown blob. Returns true when the blob was not known yet at the call
    /// (the caller waited for the check or the upload).
    pub(crate) async fn ensure_blob(
        &self,
        repository: &ImageRef,
        data: Vec<u8>,
    ) -> Result<bool, OciError> {
        let digest = Digest::of(&data);
        let cell = Arc::clone(
            lock(&self.known_blobs)
                .entry(blob_key(repository, &digest))
                .or_default(),
        );
        if cell.initialized() {
            return Ok(false);
        }
        // A failed upload leaves the cell empty: the next caller tries again.
        cell.get_or_try_init(|| async {
            if !self.blob_exists(repository, &digest).await {
                self.push_blob(repository, data).await?;
            }
            Ok::<(), OciError>(())
        })
        .await?;
        Ok(true)
    }

    /// Forgets that a blob is in `repository` (the registry said it is not).
    pub(crate) fn forget_blob(&self, repository: &ImageRef, digest: &Digest) {
        lock(&self.known_blobs).remove(&blob_key(repository, digest));
    }

    /// HEAD of a blob; any failure counts as absent (the upload that follows reports it).
    async fn blob_exists(&self, repository: &ImageRef, digest: &Digest) -> bool {
        const OP: &str = "blob check";
        if self.authorize(repository, false, OP).await.is_err() {
            return false;
        }
        let target = repository.with_digest(digest).to_oci();
        self.oci
            .blob_exists(&target, digest.as_str())
            .await
            .unwrap_or(false)
    }

    /// [`Inner::push_manifest`], telling apart one refusal: a blob the manifest refers to is
    /// unknown to the registry (`Ok(Err(error))`, the error to report if it persists).
    pub(crate) async fn push_manifest_checked(
        &self,
        target: &ImageRef,
        bytes: Vec<u8>,
        media_type: &str,
    ) -> Result<Result<Digest, OciError>, OciError> {
        match self.push_manifest_raw(target, bytes, media_type).await? {
            Ok(d) => Ok(Ok(d)),
            Err(e) if names_missing_blob(&e) => Ok(Err(self.map_oci(e, target, MANIFEST_PUSH))),
            Err(e) => Err(self.map_oci(e, target, MANIFEST_PUSH)),
        }
    }

    pub(crate) async fn push_manifest(
        &self,
        target: &ImageRef,
        bytes: Vec<u8>,
        media_type: &str,
    ) -> Result<Digest, OciError> {
        self.push_manifest_raw(target, bytes, media_type)
            .await?
            .map_err(|e| self.map_oci(e, target, MANIFEST_PUSH))
    }

    /// Uploads a manifest: `Ok(Err(_))` is the registry's (or the transport's) error, not yet
    /// mapped.
    async fn push_manifest_raw(
        &self,
        target: &ImageRef,
        bytes: Vec<u8>,
        media_type: &str,
    ) -> Result<Result<Digest, OciDistributionError>, OciError> {
        let digest = Digest::of(&bytes);
        self.authorize(target, true, MANIFEST_PUSH).await?;
        let ct = reqwest::header::HeaderValue::from_str(media_type)
            .map_err(|_| OciError::Setup(format!("invalid media type {media_type:?}")))?;
        Ok(self
            .oci
            .push_manifest_raw(&target.to_oci(), bytes, ct)
            .await
            .map(|_| digest))
    }

    pub(crate) async fn pull_blob(
        &self,
        repository: &ImageRef,
        digest: &Digest,
    ) -> Result<Vec<u8>, OciError> {
        use futures::StreamExt as _;
        const OP: &str = "blob download";
        let limit = self.opts.max_blob_bytes;
        let too_large = || OciError::BlobTooLarge {
            repository: repository.repository_name(),
            digest: digest.to_string(),
            limit,
        };
        self.authorize(repository, false, OP).await?;
        let oref = repository.with_digest(digest).to_oci();
        let mut stream = self
            .oci
            .pull_blob_stream(&oref, digest.as_str())
            .await
            .map_err(|e| self.map_oci(e, repository, OP))?;
        if stream.content_length.is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                // oci-client reports a digest mismatch at the end of the stream as an I/O error.
                OciError::DigestMismatch {
                    what: format!("blob {digest} in {}", repository.repository_name()),
                    expected: digest.to_string(),
                    actual: e.to_string(),
                }
            })?;
            if out.len() + chunk.len() > limit {
                return Err(too_large());
            }
            out.extend_from_slice(&chunk);
        }
        let actual = Digest::of(&out);
        if actual != *digest {
            return Err(OciError::DigestMismatch {
                what: format!("blob in {}", repository.repository_name()),
                expected: digest.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(out)
    }

    fn map_reqwest(&self, e: &reqwest::Error, image: &ImageRef, op: &'static str) -> OciError {
        if e.is_timeout() {
            OciError::Timeout {
                registry: image.registry().to_string(),
                operation: op,
            }
        } else {
            OciError::Unreachable {
                registry: image.registry().to_string(),
                detail: error_chain(e),
            }
        }
    }

    fn status_error(
        &self,
        status: u16,
        body: &[u8],
        image: &ImageRef,
        op: &'static str,
    ) -> OciError {
        let registry = image.registry().to_string();
        match status {
            401 => OciError::Unauthorized {
                registry,
                operation: op,
                credentials_from: self.credentials_from(image),
            },
            403 => OciError::Forbidden {
                registry,
                repository: image.repository().to_string(),
                operation: op,
                credentials_from: self.credentials_from(image),
            },
            429 => OciError::RateLimited {
                registry,
                operation: op,
            },
            s if s >= 500 => OciError::ServerError {
                registry,
                status: s,
                operation: op,
                message: short(&String::from_utf8_lossy(body)),
            },
            s => OciError::Rejected {
                registry,
                operation: op,
                message: format!("HTTP {s}: {}", short(&String::from_utf8_lossy(body))),
            },
        }
    }

    pub(crate) fn map_oci(
        &self,
        e: OciDistributionError,
        image: &ImageRef,
        op: &'static str,
    ) -> OciError {
        let registry = image.registry().to_string();
        match e {
            OciDistributionError::RequestError(r) => self.map_reqwest(&r, image, op),
            OciDistributionError::UnauthorizedError { .. }
            | OciDistributionError::AuthenticationFailure(_) => {
                self.status_error(401, b"", image, op)
            }
            OciDistributionError::ServerError { code, message, .. } => {
                self.status_error(code, message.as_bytes(), image, op)
            }
            OciDistributionError::RegistryError { envelope, .. } => {
                let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
                if codes.contains(&&OciErrorCode::Unauthorized) {
                    self.status_error(401, b"", image, op)
                } else if codes.contains(&&OciErrorCode::Denied) {
                    self.status_error(403, b"", image, op)
                } else if codes.contains(&&OciErrorCode::Toomanyrequests) {
                    self.status_error(429, b"", image, op)
                } else if codes.iter().any(|c| {
                    matches!(
                        c,
                        OciErrorCode::ManifestUnknown
                            | OciErrorCode::NotFound
                            | OciErrorCode::NameUnknown
                    )
                }) {
                    OciError::ManifestNotFound {
                        reference: image.to_string(),
                    }
                } else {
                    OciError::Rejected {
                        registry,
                        operation: op,
                        message: short(&envelope.to_string()),
                    }
                }
            }
            OciDistributionError::DigestError(d) => OciError::DigestMismatch {
                what: format!("{op} in {}", image.repository_name()),
                expected: String::new(),
                actual: d.to_string(),
            },
            other => OciError::Rejected {
                registry,
                operation: op,
                message: short(&other.to_string()),
            },
        }
    }
}

fn media_type_from_body(bytes: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
        layers: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<Probe>(bytes) {
        Ok(Probe {
            media_type: Some(m),
            ..
        }) => m,
        Ok(Probe {
            manifests: Some(_), ..
        }) => OCI_INDEX.to_string(),
        Ok(Probe {
            layers: Some(_), ..
        }) => OCI_MANIFEST.to_string(),
        _ => String::new(),
    }
}

enum ReadError {
    TooLarge,
    Http(reqwest::Error),
}

async fn read_limited(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, ReadError> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(ReadError::Http)? {
        if out.len() + chunk.len() > limit {
            return Err(ReadError::TooLarge);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

fn short(s: &str) -> String {
    let s = s.trim();
    if s.chars().count() > 300 {
        let cut: String = s.chars().take(300).collect();
        format!("{cut}…")
    } else {
        s.to_string()
    }
}

/// The error and its sources, joined: reqwest's own message alone ("error sending request")
/// does not say what went wrong.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let msg = s.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        cur = s.source();
    }
    out
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data (caches) behind: keep going.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_error(code: u16, message: &str) -> OciDistributionError {
        OciDistributionError::ServerError {
            code,
            url: "http://127.0.0.1:5000/v2/app/manifests/sha256-00.sig".into(),
            message: message.into(),
        }
    }

    #[test]
    fn a_manifest_refused_for_a_missing_blob_is_told_apart() {
        // What docker-registry answers while another client re-uploads the config blob.
        let missing = r#"{"errors":[{"code":"DIGEST_INVALID","message":"provided digest did not match uploaded content"},{"code":"MANIFEST_BLOB_UNKNOWN","message":"blob unknown to registry","detail":"sha256:5641e4b5be4b7432dd29d458257770e27ce0ea04b6b9cef07aca2bf0d990b290"}]}"#;
        assert!(names_missing_blob(&server_error(400, missing)));
        assert!(names_missing_blob(&server_error(
            404,
            r#"{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}"#
        )));
        for (code, body) in [
            (
                400,
                r#"{"errors":[{"code":"MANIFEST_INVALID","message":"manifest invalid"}]}"#,
            ),
            (400, "not json"),
            (500, missing),
        ] {
            assert!(
                !names_missing_blob(&server_error(code, body)),
                "{code} {body}"
            );
        }
    }
}
