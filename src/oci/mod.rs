//! Container image signatures in cosign's key-based format, on OCI registries.
//!
//! - [`mod@reference`]: image references, the signed `docker-reference`, the `.sig` tag;
//! - [`credentials`]: registry credentials from `auth.json` / docker `config.json`;
//! - [`registry`]: a blocking registry client (resolve, manifests with a size limit, blobs);
//! - [`payload`]: the simple-signing payload and containers/image's strict validator;
//! - [`signature`]: the signature manifest: attach without losing anyone's signature, list;
//! - [`verify`]: verification with the rules cosign, sigstore-rs and containers/image share;
//! - [`batch`]: sign many images in one call, sign offline into a file and attach it later.
//!
//! This module depends on nothing else in keyward: the token and the audit log reach it
//! through [`batch::BatchSigner`]. Its API is blocking; it runs its own small tokio runtime
//! and must not be called from inside another one.
//!
//! The formats are described in `docs/FORMATS.md` ("Image signatures").

pub mod batch;
pub mod credentials;
pub mod error;
pub mod payload;
pub mod reference;
pub mod registry;
pub mod signature;
pub mod verify;

pub use batch::{
    attach_file, sign_images, sign_offline, BatchReport, BatchSigner, ImageSignResult,
    ProgressEvent, Published, SignFailure, SignOptions, SignatureFile, Stage,
};
pub use credentials::{CredentialSource, Credentials};
pub use error::OciError;
pub use payload::{validate_containers_image, ParsedPayload, Payload};
pub use reference::{Digest, ImageRef};
pub use registry::{ClientOptions, Manifest, RegistryClient};
pub use signature::{
    attach, list, AttachOptions, AttachOutcome, NewSignature, SignatureListing, StoredSignature,
};
pub use verify::{
    verify_image, verify_stored, ImageVerification, PublicKey, SignatureReport, Verdict,
    VerifyOptions,
};
