//! `SoftToken`: the built-in software keystore under the home directory.
//!
//! Layout (all under `<home>/soft/`):
//! - `identity.age`: an age X25519 identity, encrypted with the keystore passphrase (scrypt).
//! - `keys/<object-id>.age`: a PKCS#8 DER private key encrypted to that identity's recipient.
//! - `keys/<object-id>.json`: label, algorithm and public key PEM.
//!
//! Everything stays readable with the standard `age` tool: `age -d identity.age` gives the
//! identity, and `age -d -i identity.txt keys/ID.age` the private key.
//!
//! Keys here are software keys: not hardware protected, and shown as such everywhere.

use super::pubkey::PublicKey;
use super::*;
use crate::fsutil;
use crate::secret::{KeyBytes, Pin};
use age::secrecy::ExposeSecret as _;
use serde::{Deserialize, Serialize};
use spki::EncodePublicKey;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use zeroize::Zeroizing;

pub const SOFT_TOKEN_NAME: &str = "soft";

#[derive(Serialize, Deserialize)]
struct KeyMeta {
    label: String,
    algorithm: Algorithm,
    public_key: String,
}

/// The software keystore. Logged in means the age identity is decrypted in memory.
pub struct SoftToken {
    dir: PathBuf,
    identity: Option<age::x25519::Identity>,
}

fn io_err(path: &Path, source: std::io::Error) -> TokenError {
    TokenError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn other(msg: impl Into<String>) -> TokenError {
    TokenError::Other(msg.into())
}

impl SoftToken {
    /// Opens (without creating) the keystore in `<home>/soft`.
    pub fn open(home: &Path) -> Self {
        SoftToken {
            dir: home.join("soft"),
            identity: None,
        }
    }

    fn identity_path(&self) -> PathBuf {
        self.dir.join("identity.age")
    }

    fn keys_dir(&self) -> PathBuf {
        self.dir.join("keys")
    }

    fn check_id(object_id: &ObjectId) -> TokenResult<()> {
        if object_id.0.is_empty()
            || !object_id.0.bytes().all(|b| b.is_ascii_hexdigit())
            || object_id.0.len() > 64
        {
            return Err(other(format!("invalid software key id {object_id}")));
        }
        Ok(())
    }

    /// Whether the keystore has been created (a passphrase set).
    pub fn is_initialized(&self) -> bool {
        self.identity_path().exists()
    }

    /// Creates the keystore with a passphrase. Fails if it exists.
    pub fn initialize(&mut self, passphrase: &Pin) -> TokenResult<()> {
        if self.is_initialized() {
            return Err(other("the software keystore already exists"));
        }
        if passphrase.expose().chars().count() < 8 {
            return Err(other(
                "the software keystore passphrase must have at least 8 characters",
            ));
        }
        fsutil::create_private_dir(&self.dir).map_err(|e| io_err(&self.dir, e))?;
        fsutil::create_private_dir(&self.keys_dir()).map_err(|e| io_err(&self.dir, e))?;
        let identity = age::x25519::Identity::generate();
        let plaintext = Zeroizing::new(identity.to_string().expose_secret().as_bytes().to_vec());
        let recipient = age::scrypt::Recipient::new(age::secrecy::SecretString::from(
            passphrase.expose().to_owned(),
        ));
        let ciphertext = encrypt_to(&recipient, &plaintext)?;
        let path = self.identity_path();
        fsutil::write_atomic(&path, &ciphertext, true).map_err(|e| io_err(&path, e))?;
        self.identity = Some(identity);
        Ok(())
    }

    fn identity(&self) -> TokenResult<&age::x25519::Identity> {
        self.identity.as_ref().ok_or(TokenError::NotLoggedIn {
            token: SOFT_TOKEN_NAME.into(),
        })
    }

    fn read_meta(&self, object_id: &ObjectId) -> TokenResult<KeyMeta> {
        Self::check_id(object_id)?;
        let path = self.keys_dir().join(format!("{}.json", object_id.0));
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(TokenError::KeyNotFound {
                    token: SOFT_TOKEN_NAME.into(),
                    object_id: object_id.0.clone(),
                })
            }
            Err(e) => return Err(io_err(&path, e)),
        };
        serde_json::from_str(&text)
            .map_err(|e| other(format!("{} is corrupt: {e}", path.display())))
    }

    fn private_key(&self, object_id: &ObjectId) -> TokenResult<KeyBytes> {
        Self::check_id(object_id)?;
        let identity = self.identity()?;
        let path = self.keys_dir().join(format!("{}.age", object_id.0));
        let ciphertext = std::fs::read(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                TokenError::KeyNotFound {
                    token: SOFT_TOKEN_NAME.into(),
                    object_id: object_id.0.clone(),
                }
            } else {
                io_err(&path, e)
            }
        })?;
        decrypt_with(identity, &ciphertext)
            .map_err(|e| other(format!("cannot decrypt {}: {e}", path.display())))
    }

    /// Imports a PKCS#8 DER private key (used by ceremonies); returns the key as stored.
    pub fn import_pkcs8(
        &mut self,
        request: &GenerateRequest,
        pkcs8: &[u8],
    ) -> TokenResult<TokenKey> {
        let public_key = public_from_pkcs8(request.algorithm, pkcs8)?;
        self.store(request, pkcs8, public_key)
    }

    fn store(
        &mut self,
        request: &GenerateRequest,
        pkcs8: &[u8],
        public_key: PublicKey,
    ) -> TokenResult<TokenKey> {
        Self::check_id(&request.object_id)?;
        let recipient = self.identity()?.to_public();
        let keys = self.keys_dir();
        let key_path = keys.join(format!("{}.age", request.object_id.0));
        let meta_path = keys.join(format!("{}.json", request.object_id.0));
        if key_path.exists() || meta_path.exists() {
            return Err(other(format!(
                "a software key with id {} already exists",
                request.object_id
            )));
        }
        let ciphertext = encrypt_to(&recipient, pkcs8)?;
        let meta = KeyMeta {
            label: request.label.clone(),
            algorithm: request.algorithm,
            public_key: public_key.to_pem(),
        };
        let meta_json = serde_json::to_vec_pretty(&meta).map_err(|e| other(e.to_string()))?;
        // Private half first, metadata last: a key is listed only once both halves exist.
        fsutil::write_atomic(&key_path, &ciphertext, true).map_err(|e| io_err(&key_path, e))?;
        fsutil::write_atomic(&meta_path, &meta_json, false).map_err(|e| io_err(&meta_path, e))?;
        Ok(TokenKey {
            object_id: request.object_id.clone(),
            label: request.label.clone(),
            algorithm: request.algorithm,
            public_key,
            has_private: true,
        })
    }
}

fn encrypt_to(recipient: &dyn age::Recipient, plaintext: &[u8]) -> TokenResult<Vec<u8>> {
    let encryptor = age::Encryptor::with_recipients(std::iter::once(recipient))
        .map_err(|e| other(format!("age: {e}")))?;
    let mut out = Vec::new();
    let mut w = encryptor
        .wrap_output(&mut out)
        .map_err(|e| other(format!("age: {e}")))?;
    w.write_all(plaintext)
        .map_err(|e| other(format!("age: {e}")))?;
    w.finish().map_err(|e| other(format!("age: {e}")))?;
    Ok(out)
}

fn decrypt_with(
    identity: &dyn age::Identity,
    ciphertext: &[u8],
) -> Result<KeyBytes, age::DecryptError> {
    let decryptor = age::Decryptor::new(ciphertext)?;
    let mut reader = decryptor.decrypt(std::iter::once(identity))?;
    let mut out = Zeroizing::new(Vec::new());
    reader.read_to_end(&mut out)?;
    Ok(out)
}

fn public_from_pkcs8(algorithm: Algorithm, pkcs8: &[u8]) -> TokenResult<PublicKey> {
    use p256::pkcs8::DecodePrivateKey;
    let bad = |e: String| other(format!("invalid {algorithm} private key: {e}"));
    let der = match algorithm {
        Algorithm::P256 => p256::SecretKey::from_pkcs8_der(pkcs8)
            .map_err(|e| bad(e.to_string()))?
            .public_key()
            .to_public_key_der(),
        Algorithm::P384 => p384::SecretKey::from_pkcs8_der(pkcs8)
            .map_err(|e| bad(e.to_string()))?
            .public_key()
            .to_public_key_der(),
        Algorithm::Ed25519 => ed25519_dalek::SigningKey::from_pkcs8_der(pkcs8)
            .map_err(|e| bad(e.to_string()))?
            .verifying_key()
            .to_public_key_der(),
        Algorithm::Rsa2048 | Algorithm::Rsa3072 | Algorithm::Rsa4096 => {
            rsa::RsaPrivateKey::from_pkcs8_der(pkcs8)
                .map_err(|e| bad(e.to_string()))?
                .to_public_key()
                .to_public_key_der()
        }
    }
    .map_err(|e| bad(e.to_string()))?;
    PublicKey::from_spki_der(der.as_bytes())
}

/// Generates a private key in memory as PKCS#8 DER (zeroized on drop).
pub fn generate_pkcs8(algorithm: Algorithm) -> TokenResult<KeyBytes> {
    use p256::pkcs8::EncodePrivateKey;
    let mut rng = rand::rngs::OsRng;
    let bad = |e: String| other(format!("generating {algorithm}: {e}"));
    let doc = match algorithm {
        Algorithm::P256 => p256::SecretKey::random(&mut rng).to_pkcs8_der(),
        Algorithm::P384 => p384::SecretKey::random(&mut rng).to_pkcs8_der(),
        Algorithm::Ed25519 => ed25519_dalek::SigningKey::generate(&mut rng).to_pkcs8_der(),
        Algorithm::Rsa2048 | Algorithm::Rsa3072 | Algorithm::Rsa4096 => {
            let bits = match algorithm {
                Algorithm::Rsa2048 => 2048,
                Algorithm::Rsa3072 => 3072,
                _ => 4096,
            };
            rsa::RsaPrivateKey::new(&mut rng, bits)
                .map_err(|e| bad(e.to_string()))?
                .to_pkcs8_der()
        }
    }
    .map_err(|e| bad(e.to_string()))?;
    Ok(Zeroizing::new(doc.as_bytes().to_vec()))
}

/// Signs with a PKCS#8 private key by keyward's rules (see [`Token::sign`]).
pub fn sign_pkcs8(algorithm: Algorithm, pkcs8: &[u8], data: &[u8]) -> TokenResult<Vec<u8>> {
    use p256::pkcs8::DecodePrivateKey;
    use sha2::{Digest, Sha256};
    use signature::Signer;
    let bad = |e: String| other(format!("signing with {algorithm}: {e}"));
    let digest = Sha256::digest(data);
    Ok(match algorithm {
        Algorithm::P256 => {
            use ecdsa::signature::hazmat::PrehashSigner;
            let k =
                p256::ecdsa::SigningKey::from_pkcs8_der(pkcs8).map_err(|e| bad(e.to_string()))?;
            let sig: p256::ecdsa::Signature =
                k.sign_prehash(&digest).map_err(|e| bad(e.to_string()))?;
            sig.to_der().as_bytes().to_vec()
        }
        Algorithm::P384 => {
            use ecdsa::signature::hazmat::PrehashSigner;
            let k =
                p384::ecdsa::SigningKey::from_pkcs8_der(pkcs8).map_err(|e| bad(e.to_string()))?;
            let sig: p384::ecdsa::Signature =
                k.sign_prehash(&digest).map_err(|e| bad(e.to_string()))?;
            sig.to_der().as_bytes().to_vec()
        }
        Algorithm::Ed25519 => {
            let k =
                ed25519_dalek::SigningKey::from_pkcs8_der(pkcs8).map_err(|e| bad(e.to_string()))?;
            k.sign(data).to_bytes().to_vec()
        }
        Algorithm::Rsa2048 | Algorithm::Rsa3072 | Algorithm::Rsa4096 => {
            let k = rsa::RsaPrivateKey::from_pkcs8_der(pkcs8).map_err(|e| bad(e.to_string()))?;
            let sk = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(k);
            let sig = sk.try_sign(data).map_err(|e| bad(e.to_string()))?;
            use signature::SignatureEncoding;
            sig.to_vec()
        }
    })
}

impl Token for SoftToken {
    fn info(&self) -> TokenResult<TokenInfo> {
        Ok(TokenInfo {
            kind: TokenKind::Soft,
            label: SOFT_TOKEN_NAME.into(),
            manufacturer: "keyward".into(),
            model: "software keystore (age)".into(),
            serial: self.dir.display().to_string(),
            firmware: env!("CARGO_PKG_VERSION").into(),
            pin: PinStatus {
                not_initialized: !self.is_initialized(),
                ..PinStatus::default()
            },
            hardware: false,
            algorithms: Algorithm::ALL.to_vec(),
            puk_tries_left: None,
            warnings: Vec::new(),
        })
    }

    fn login(&mut self, pin: &Pin) -> TokenResult<()> {
        if !self.is_initialized() {
            return self.initialize(pin);
        }
        let path = self.identity_path();
        let ciphertext = std::fs::read(&path).map_err(|e| io_err(&path, e))?;
        let mut scrypt =
            age::scrypt::Identity::new(age::secrecy::SecretString::from(pin.expose().to_owned()));
        // Accept the work factor we write (age's default) and up to 2^22; refuse a file that
        // would make us spin for minutes.
        scrypt.set_max_work_factor(22);
        let plaintext = match decrypt_with(&scrypt, &ciphertext) {
            Ok(p) => p,
            Err(age::DecryptError::DecryptionFailed) | Err(age::DecryptError::NoMatchingKeys) => {
                return Err(TokenError::BadPassphrase)
            }
            Err(e) => return Err(other(format!("{}: {e}", path.display()))),
        };
        let text = std::str::from_utf8(&plaintext)
            .map_err(|_| other(format!("{} does not hold an age identity", path.display())))?;
        let identity = age::x25519::Identity::from_str(text.trim()).map_err(|e| {
            other(format!(
                "{} does not hold an age identity: {e}",
                path.display()
            ))
        })?;
        self.identity = Some(identity);
        Ok(())
    }

    fn is_logged_in(&self) -> bool {
        self.identity.is_some()
    }

    fn list_keys(&mut self) -> TokenResult<Vec<TokenKey>> {
        let dir = self.keys_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&dir, e)),
        };
        let mut keys = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_err(&dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(stem) = name.strip_suffix(".json") else {
                continue;
            };
            if stem.starts_with('.') {
                continue;
            }
            let id = ObjectId(stem.to_owned());
            let meta = self.read_meta(&id)?;
            let public_key = PublicKey::from_pem(&meta.public_key)?;
            keys.push(TokenKey {
                has_private: dir.join(format!("{stem}.age")).exists(),
                object_id: id,
                label: meta.label,
                algorithm: meta.algorithm,
                public_key,
            });
        }
        keys.sort_by(|a, b| a.label.cmp(&b.label));
        Ok(keys)
    }

    fn export_pkcs8(&mut self, object_id: &ObjectId) -> TokenResult<KeyBytes> {
        self.private_key(object_id)
    }

    fn import_key(&mut self, request: &GenerateRequest, pkcs8: &[u8]) -> TokenResult<TokenKey> {
        self.import_pkcs8(request, pkcs8)
    }

    fn generate(&mut self, request: &GenerateRequest) -> TokenResult<TokenKey> {
        self.identity()?;
        let pkcs8 = generate_pkcs8(request.algorithm)?;
        let public_key = public_from_pkcs8(request.algorithm, &pkcs8)?;
        self.store(request, &pkcs8, public_key)
    }

    fn sign(&mut self, object_id: &ObjectId, data: &[u8]) -> TokenResult<Vec<u8>> {
        let meta = self.read_meta(object_id)?;
        let pkcs8 = self.private_key(object_id)?;
        sign_pkcs8(meta.algorithm, &pkcs8, data)
    }

    fn public_key(&mut self, object_id: &ObjectId) -> TokenResult<PublicKey> {
        PublicKey::from_pem(&self.read_meta(object_id)?.public_key)
    }

    fn destroy(&mut self, object_id: &ObjectId) -> TokenResult<()> {
        Self::check_id(object_id)?;
        self.identity()?;
        let keys = self.keys_dir();
        let mut found = false;
        for ext in ["age", "json"] {
            let p = keys.join(format!("{}.{ext}", object_id.0));
            match std::fs::remove_file(&p) {
                Ok(()) => found = true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&p, e)),
            }
        }
        if !found {
            return Err(TokenError::KeyNotFound {
                token: SOFT_TOKEN_NAME.into(),
                object_id: object_id.0.clone(),
            });
        }
        fsutil::sync_dir(&keys).map_err(|e| io_err(&keys, e))
    }
}
