//! The error type of the OCI module.
//!
//! Every variant carries what the person at the keyboard needs to act: which registry, which
//! reference, which limit, and for authentication failures where keyward looked for
//! credentials. No variant carries a password or a token.

use std::path::PathBuf;

/// An error from the OCI module: parsing references, talking to a registry, reading or writing
/// signature manifests and signature files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OciError {
    /// The text is not an image reference keyward understands.
    #[error("invalid image reference {input:?}: {reason}")]
    InvalidReference {
        /// What the user typed.
        input: String,
        /// Why it was refused.
        reason: String,
    },

    /// The text is not a `sha256:<64 lowercase hex digits>` digest.
    #[error("invalid digest {input:?}: expected sha256:<64 lowercase hex digits>")]
    InvalidDigest {
        /// What was given.
        input: String,
    },

    /// The operation needs an image pinned by digest (`IMAGE@sha256:…`) and got a tag.
    #[error("{reference} has no digest: offline signing needs IMAGE@sha256:DIGEST (resolve the tag first, e.g. with `skopeo inspect`)")]
    DigestRequired {
        /// The reference as given.
        reference: String,
    },

    /// No TCP/TLS connection could be made to the registry.
    #[error("registry {registry} is unreachable: {detail} (check the address, the network, and whether it speaks plain HTTP: list it in insecure registries only if it really does)")]
    Unreachable {
        /// `HOST[:PORT]` of the registry.
        registry: String,
        /// What the HTTP stack said.
        detail: String,
    },

    /// The registry did not answer in time.
    #[error("registry {registry} did not answer in time during {operation}")]
    Timeout {
        /// `HOST[:PORT]` of the registry.
        registry: String,
        /// What keyward was doing.
        operation: &'static str,
    },

    /// HTTP 401: the registry wants (other) credentials.
    #[error("registry {registry} refused {operation} with HTTP 401 (authentication required): {}", auth_hint(registry, credentials_from.as_ref()))]
    Unauthorized {
        /// `HOST[:PORT]` of the registry.
        registry: String,
        /// What keyward was doing.
        operation: &'static str,
        /// The credentials file the credentials came from, if any were found.
        credentials_from: Option<PathBuf>,
    },

    /// HTTP 403: the credentials were accepted but do not allow this.
    #[error("registry {registry} denied {operation} on {repository} with HTTP 403: the account in use may read but not write there, or has no access at all ({})", auth_hint(registry, credentials_from.as_ref()))]
    Forbidden {
        /// `HOST[:PORT]` of the registry.
        registry: String,
        /// The repository.
        repository: String,
        /// What keyward was doing.
        operation: &'static str,
        /// The credentials file the credentials came from, if any were found.
        credentials_from: Option<PathBuf>,
    },

    /// HTTP 429.
    #[error(
        "registry {registry} is rate limiting requests (HTTP 429) during {operation}; retry later"
    )]
    RateLimited {
        /// `HOST[:PORT]` of the registry.
        registry: String,
        /// What keyward was doing.
        operation: &'static str,
    },

    /// HTTP 5xx: the registry itself failed.
    #[error("registry {registry} failed with HTTP {status} during {operation}: {message}")]
    ServerError {
        /// `HOST[:PORT]` of the registry.
        registry: String,
        /// HTTP status code.
        status: u16,
        /// What keyward was doing.
        operation: &'static str,
        /// The registry's message, shortened.
        message: String,
    },

    /// Any other refusal by the registry (4xx other than 401/403/404/429, or a protocol
    /// violation).
    #[error("registry {registry} rejected {operation}: {message}")]
    Rejected {
        /// `HOST[:PORT]` of the registry.
        registry: String,
        /// What keyward was doing.
        operation: &'static str,
        /// The registry's message, shortened.
        message: String,
    },

    /// The manifest (tag or digest) does not exist.
    #[error("manifest {reference} not found")]
    ManifestNotFound {
        /// The reference looked up.
        reference: String,
    },

    /// A manifest was larger than the configured limit.
    #[error("manifest {reference} is larger than the limit of {limit} bytes; refusing to read it")]
    ManifestTooLarge {
        /// The reference fetched.
        reference: String,
        /// The limit in bytes (`ClientOptions::max_manifest_bytes`).
        limit: usize,
    },

    /// A blob was larger than the configured limit.
    #[error("blob {digest} in {repository} is larger than the limit of {limit} bytes; refusing to read it")]
    BlobTooLarge {
        /// The repository.
        repository: String,
        /// The blob digest.
        digest: String,
        /// The limit in bytes.
        limit: usize,
    },

    /// The manifest is not an OCI/Docker image manifest or index.
    #[error("{reference} is not an image manifest or index (media type {media_type:?})")]
    UnsupportedManifest {
        /// The reference fetched.
        reference: String,
        /// Its media type.
        media_type: String,
    },

    /// The existing `.sig` manifest cannot be understood; keyward refuses to overwrite it.
    #[error("signature manifest {reference} is malformed ({reason}); keyward will not overwrite it: inspect it (e.g. `skopeo inspect --raw docker://{reference}`) and repair or delete that tag")]
    MalformedSignatureManifest {
        /// The `.sig` reference.
        reference: String,
        /// What is wrong with it.
        reason: String,
    },

    /// Content did not hash to the digest it was announced with.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        /// What was checked (a manifest reference, a blob).
        what: String,
        /// The digest it should have.
        expected: String,
        /// The digest it has.
        actual: String,
    },

    /// Concurrent writers kept replacing the signature manifest.
    #[error("signature manifest {reference} kept changing under concurrent writers: gave up after {attempts} attempts; run the command again")]
    ConcurrentUpdate {
        /// The `.sig` reference.
        reference: String,
        /// Attempts made.
        attempts: u32,
    },

    /// A credentials file exists but cannot be used.
    #[error("cannot use credentials file {}: {reason}", path.display())]
    CredentialsFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },

    /// A signature file is not valid.
    #[error("invalid signature file: {reason}")]
    InvalidSignatureFile {
        /// Why.
        reason: String,
    },

    /// A simple-signing payload is not valid.
    #[error("invalid signature payload: {0}")]
    InvalidPayload(String),

    /// A public key cannot be used for verification.
    #[error("unusable public key: {0}")]
    PublicKey(String),

    /// The signer (token) failed.
    #[error("signing failed: {0}")]
    Signer(String),

    /// Recording the result (audit log) failed.
    #[error("recording the result failed (the signature counts as failed): {0}")]
    Record(String),

    /// The batch was cancelled before this image was signed.
    #[error("cancelled before signing")]
    Cancelled,

    /// The HTTP client or async runtime could not be set up.
    #[error("cannot set up the registry client: {0}")]
    Setup(String),

    /// A local file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

fn auth_hint(registry: &str, from: Option<&PathBuf>) -> String {
    match from {
        Some(path) => format!(
            "the credentials for {registry} came from {}; log in again (`podman login {registry}` or `docker login {registry}`) if they are wrong or expired",
            path.display()
        ),
        None => format!(
            "no credentials for {registry} were found in $REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json, ~/.config/containers/auth.json, $DOCKER_CONFIG/config.json or ~/.docker/config.json; log in with `podman login {registry}` or `docker login {registry}`"
        ),
    }
}

impl OciError {
    /// True for errors worth retrying later (network, 5xx, 429, races), false for errors that
    /// will repeat until someone changes something (auth, malformed data, bad input).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            OciError::Unreachable { .. }
                | OciError::Timeout { .. }
                | OciError::RateLimited { .. }
                | OciError::ServerError { .. }
                | OciError::ConcurrentUpdate { .. }
        )
    }
}
