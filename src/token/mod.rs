//! The one `Token` trait every backend implements, and the plain types that cross it.
//!
//! Backend crate types (cryptoki sessions, yubikey handles, age identities) never appear here.

pub mod piv;
pub mod pkcs11;
pub mod pubkey;
pub mod soft;
pub mod uri;
pub mod wrap;

use crate::secret::Pin;
use serde::{Deserialize, Serialize};
use std::fmt;

pub use pubkey::PublicKey;
pub use wrap::WrappingKey;

/// Signature algorithms keyward generates and signs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    P256,
    P384,
    /// RSA-2048: the largest RSA key a YubiKey before firmware 5.7 holds.
    Rsa2048,
    Rsa3072,
    Rsa4096,
    Ed25519,
}

impl Algorithm {
    pub const ALL: [Algorithm; 6] = [
        Algorithm::P256,
        Algorithm::P384,
        Algorithm::Rsa2048,
        Algorithm::Rsa3072,
        Algorithm::Rsa4096,
        Algorithm::Ed25519,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::P256 => "p256",
            Algorithm::P384 => "p384",
            Algorithm::Rsa2048 => "rsa2048",
            Algorithm::Rsa3072 => "rsa3072",
            Algorithm::Rsa4096 => "rsa4096",
            Algorithm::Ed25519 => "ed25519",
        }
    }

    /// What the signature is, in words a verifier's documentation uses.
    pub fn signature_scheme(self) -> &'static str {
        match self {
            Algorithm::P256 | Algorithm::P384 => "ECDSA over SHA-256, DER-encoded",
            Algorithm::Rsa2048 | Algorithm::Rsa3072 | Algorithm::Rsa4096 => {
                "RSA PKCS#1 v1.5 with SHA-256"
            }
            Algorithm::Ed25519 => "Ed25519 (pure)",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Algorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "p256" | "p-256" | "ecdsa-p256" | "secp256r1" => Ok(Algorithm::P256),
            "p384" | "p-384" | "ecdsa-p384" | "secp384r1" => Ok(Algorithm::P384),
            "rsa2048" | "rsa-2048" => Ok(Algorithm::Rsa2048),
            "rsa3072" | "rsa-3072" => Ok(Algorithm::Rsa3072),
            "rsa4096" | "rsa-4096" => Ok(Algorithm::Rsa4096),
            "ed25519" => Ok(Algorithm::Ed25519),
            other => Err(format!(
                "unknown algorithm {other:?}; use one of p256, p384, rsa2048, rsa3072, rsa4096, ed25519"
            )),
        }
    }
}

/// What kind of place holds the keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    Pkcs11,
    Piv,
    Soft,
}

impl fmt::Display for TokenKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TokenKind::Pkcs11 => "pkcs11",
            TokenKind::Piv => "piv",
            TokenKind::Soft => "soft",
        })
    }
}

/// The state of the user PIN as the token reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinStatus {
    /// Exact tries left when the token tells (PIV does); `None` when it only gives flags.
    pub tries_left: Option<u32>,
    /// A wrong PIN has been entered since the last good one (CKF_USER_PIN_COUNT_LOW).
    pub count_low: bool,
    /// The next wrong PIN locks the token (CKF_USER_PIN_FINAL_TRY).
    pub final_try: bool,
    /// The PIN is locked (CKF_USER_PIN_LOCKED).
    pub locked: bool,
    /// The token has no user PIN set yet.
    pub not_initialized: bool,
}

impl PinStatus {
    pub fn describe(&self) -> String {
        if self.not_initialized {
            return "not set up".into();
        }
        if self.locked {
            return "PIN LOCKED".into();
        }
        if let Some(n) = self.tries_left {
            return format!("{n} tries left");
        }
        if self.final_try {
            return "final try".into();
        }
        if self.count_low {
            return "a wrong PIN was entered".into();
        }
        "ok".into()
    }
}

/// A description of a token, for listing and for the audit log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    pub kind: TokenKind,
    pub label: String,
    pub manufacturer: String,
    pub model: String,
    pub serial: String,
    pub firmware: String,
    pub pin: PinStatus,
    /// False for the software keystore: its keys are not hardware protected.
    pub hardware: bool,
    /// Algorithms this token can generate.
    pub algorithms: Vec<Algorithm>,
    /// PUK tries left, when the token tells (a YubiKey from firmware 5.3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub puk_tries_left: Option<u32>,
    /// Loud warnings for the person: a factory-default PIN, PUK or management key still set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl TokenInfo {
    pub fn protection(&self) -> &'static str {
        if self.hardware {
            "hardware"
        } else {
            "software — not hardware protected"
        }
    }
}

/// Identifies one key pair on a token: the backend's stable object id (CKA_ID for PKCS#11, a
/// file stem for the software keystore, a slot for PIV), as hex.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ObjectId(pub String);

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A key pair found on a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenKey {
    pub object_id: ObjectId,
    pub label: String,
    pub algorithm: Algorithm,
    pub public_key: PublicKey,
    /// Whether the private key half exists (a lone public key object is reported with false).
    pub has_private: bool,
}

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenerateRequest {
    pub label: String,
    pub object_id: ObjectId,
    pub algorithm: Algorithm,
}

/// Where and how a YubiKey PIV token places a new key; other tokens accept only the default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerateOptions {
    /// A PIV slot (`9c`, `82`..`95`, `9a`, `9d`, `9e`); default: 9c, else the first free
    /// retired slot.
    pub slot: Option<String>,
    pub pin_policy: Option<piv::PinPolicyChoice>,
    pub touch_policy: Option<piv::TouchPolicyChoice>,
}

impl GenerateOptions {
    pub fn is_default(&self) -> bool {
        self == &GenerateOptions::default()
    }
}

/// Tells the person something while a token works ("touch your YubiKey"); the front end's.
pub type Notifier = Box<dyn FnMut(&str) + Send>;

/// Errors a token reports, with what the user needs to act.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("wrong PIN for {token}: {}", tries_message(*.tries_left))]
    PinIncorrect {
        token: String,
        tries_left: Option<u32>,
    },
    #[error("the PIN of {token} is locked; unblock it with the SO PIN or PUK (or re-initialise the token)")]
    PinLocked { token: String },
    #[error("wrong PUK for {token}: {}", puk_tries_message(*.tries_left))]
    PukIncorrect {
        token: String,
        tries_left: Option<u32>,
    },
    #[error("the PUK of {token} is blocked: a locked PIN can now only be recovered by resetting the PIV application, which destroys every key on it")]
    PukLocked { token: String },
    #[error("{token}: the YubiKey was not touched in time (it waits about 15 seconds); touch its contact when it blinks, and try again")]
    TouchTimeout { token: String },
    #[error("{token} has one PIN try left; a wrong PIN will lock it. Confirm the attempt explicitly (--allow-final-pin-try in batch mode)")]
    FinalTryNotConfirmed { token: String },
    #[error("wrong passphrase for the software keystore")]
    BadPassphrase,
    #[error("{token}: not logged in")]
    NotLoggedIn { token: String },
    #[error("{token}: no key object with id {object_id}")]
    KeyNotFound { token: String, object_id: String },
    #[error("{token} cannot do {algorithm}: {why}")]
    Unsupported {
        token: String,
        algorithm: Algorithm,
        why: String,
    },
    #[error(
        "{token}: the token is not present (removed or slot empty); reconnect it and try again"
    )]
    NotPresent { token: String },
    #[error("{token}: {call} failed: {detail}")]
    Backend {
        token: String,
        call: &'static str,
        detail: String,
    },
    #[error("PKCS#11 module {module}: {detail}")]
    Module { module: String, detail: String },
    #[error("{0}")]
    Other(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

fn tries_message(tries: Option<u32>) -> String {
    match tries {
        Some(0) => "the PIN is now locked".into(),
        Some(1) => "1 try left before the PIN locks".into(),
        Some(n) => format!("{n} tries left"),
        None => "the token does not say how many tries remain".into(),
    }
}

fn puk_tries_message(tries: Option<u32>) -> String {
    match tries {
        Some(0) => "the PUK is now blocked".into(),
        Some(1) => "1 try left before the PUK blocks for good".into(),
        Some(n) => format!("{n} tries left"),
        None => "the token does not say how many tries remain".into(),
    }
}

pub type TokenResult<T> = Result<T, TokenError>;

/// One trait for every backend. A `Token` value is an open connection to one token; it owns its
/// session and is used from one thread at a time.
pub trait Token: Send {
    /// The token's self-description (kind, manufacturer, model, serial, firmware, PIN status).
    fn info(&self) -> TokenResult<TokenInfo>;
    /// Logs the user in. On a wrong PIN the error carries the tries left when known.
    fn login(&mut self, pin: &Pin) -> TokenResult<()>;
    fn is_logged_in(&self) -> bool;
    /// Key pairs on the token (public parts only; no login needed where the token allows).
    fn list_keys(&mut self) -> TokenResult<Vec<TokenKey>>;
    /// Generates a non-extractable key pair on the token.
    fn generate(&mut self, request: &GenerateRequest) -> TokenResult<TokenKey>;
    /// Signs `data`: ECDSA over SHA-256 (DER), RSA PKCS#1 v1.5 SHA-256, or pure Ed25519.
    fn sign(&mut self, object_id: &ObjectId, data: &[u8]) -> TokenResult<Vec<u8>>;
    /// The public key of a key pair.
    fn public_key(&mut self, object_id: &ObjectId) -> TokenResult<PublicKey>;
    /// Destroys a key pair (both halves).
    fn destroy(&mut self, object_id: &ObjectId) -> TokenResult<()>;
    /// The private key as PKCS#8 DER, for an encrypted backup. Only keys that exist outside
    /// hardware can do this (the software keystore); token keys are non-extractable.
    fn export_pkcs8(&mut self, object_id: &ObjectId) -> TokenResult<crate::secret::KeyBytes> {
        Err(TokenError::Other(format!(
            "key {object_id} was generated non-extractable on the token: it cannot be exported"
        )))
    }
    /// The object id for a new key. Most tokens take a random 16-byte id; a PIV token takes
    /// a free slot (`taken` lists the ids keyward's log still uses on this token).
    fn new_object_id(&mut self, taken: &[ObjectId]) -> TokenResult<ObjectId> {
        let _ = taken;
        Ok(ObjectId(hex::encode(rand::random::<[u8; 16]>())))
    }
    /// Placement and policies for the next [`Token::generate`] or [`Token::import_key`].
    fn set_generate_options(&mut self, options: &GenerateOptions) -> TokenResult<()> {
        if options.is_default() {
            return Ok(());
        }
        Err(TokenError::Other(
            "--slot, --pin-policy and --touch-policy apply to YubiKey PIV tokens only".into(),
        ))
    }
    /// Hardware attestation of a key (YubiKey PIV: slot attestation chained to Yubico's CA,
    /// or to one of `extra_roots`, which keyward.toml lists).
    fn attest(
        &mut self,
        object_id: &ObjectId,
        extra_roots: &[piv::Anchor],
    ) -> TokenResult<piv::Attestation> {
        let _ = extra_roots;
        Err(TokenError::Other(format!(
            "key {object_id}: this token offers no key attestation"
        )))
    }
    /// Where to say "touch your YubiKey"; tokens that never wait for a touch ignore it.
    fn set_notifier(&mut self, notifier: Notifier) {
        let _ = notifier;
    }
    /// Imports a PKCS#8 DER private key under `request`'s label and object id (restore).
    fn import_key(&mut self, request: &GenerateRequest, pkcs8: &[u8]) -> TokenResult<TokenKey> {
        let _ = pkcs8;
        Err(TokenError::Unsupported {
            token: self.info().map(|i| i.label).unwrap_or_default(),
            algorithm: request.algorithm,
            why: "this token cannot import private keys".into(),
        })
    }
    /// Whether a key on the token is wrappable (extractable only under a trusted wrapping key):
    /// `None` when the token cannot tell now (not logged in, or it has no such notion).
    fn wrappable(&mut self, object_id: &ObjectId) -> TokenResult<Option<bool>> {
        let _ = object_id;
        Ok(None)
    }
    /// Makes the next [`Token::generate`] create a wrappable private key: sensitive, and
    /// extractable only wrapped under a wrapping key the token's SO trusted
    /// (`CKA_WRAP_WITH_TRUSTED`). PKCS#11 tokens only.
    fn set_wrappable(&mut self, wrappable: bool) -> TokenResult<()> {
        if !wrappable {
            return Ok(());
        }
        Err(TokenError::Other(
            "--wrappable applies to PKCS#11 tokens only: a YubiKey's keys never leave it, and a software keystore key is in every backup anyway".into(),
        ))
    }
    /// Puts `key` on the token as a session object that the SO marks trusted for wrapping
    /// (`CKA_TRUSTED`, wrap only). Logs in as SO with `so_pin` and out again; call it before
    /// the user logs in.
    fn install_wrapping_key(&mut self, key: &WrappingKey, so_pin: &Pin) -> TokenResult<()> {
        let _ = (key, so_pin);
        Err(TokenError::Other("only PKCS#11 tokens wrap keys".into()))
    }
    /// The private key of `object_id` wrapped (`C_WrapKey`, [`wrap::MECHANISM`]) under the
    /// installed wrapping key: an RFC 5649 blob of its PKCS#8.
    fn wrap_key(&mut self, object_id: &ObjectId) -> TokenResult<Vec<u8>> {
        Err(TokenError::Other(format!(
            "key {object_id}: only PKCS#11 tokens wrap keys"
        )))
    }
    /// Destroys the wrapping key [`Token::install_wrapping_key`] put on the token.
    fn remove_wrapping_key(&mut self) -> TokenResult<()> {
        Ok(())
    }
    /// Unwraps `blob` (`C_UnwrapKey`) under `key` into a private key on the token labelled and
    /// identified as `request` says (sensitive, wrappable again), and creates its public key
    /// object from `public_key`.
    fn unwrap_key(
        &mut self,
        request: &GenerateRequest,
        key: &WrappingKey,
        blob: &[u8],
        public_key: &PublicKey,
    ) -> TokenResult<TokenKey> {
        let _ = (key, blob, public_key);
        Err(TokenError::Unsupported {
            token: self.info().map(|i| i.label).unwrap_or_default(),
            algorithm: request.algorithm,
            why: "only PKCS#11 tokens unwrap keys (C_UnwrapKey)".into(),
        })
    }
}
