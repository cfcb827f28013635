//! Public keys as SubjectPublicKeyInfo DER, the form every verifier reads.

use super::{Algorithm, TokenError, TokenResult};
use sha2::{Digest, Sha256};
use spki::{DecodePublicKey, EncodePublicKey};

/// A public key in SubjectPublicKeyInfo DER form, with its algorithm.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    algorithm: Algorithm,
    spki_der: Vec<u8>,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({}, {})", self.algorithm, self.key_id())
    }
}

fn bad(what: &str, e: impl std::fmt::Display) -> TokenError {
    TokenError::Other(format!("invalid {what} public key: {e}"))
}

impl PublicKey {
    /// Parses SPKI DER and works out the algorithm (RSA size 3072 or 4096 only for generation,
    /// but any RSA size is accepted for verification and named by its size).
    pub fn from_spki_der(der: &[u8]) -> TokenResult<Self> {
        let algorithm = if p256::PublicKey::from_public_key_der(der).is_ok() {
            Algorithm::P256
        } else if p384::PublicKey::from_public_key_der(der).is_ok() {
            Algorithm::P384
        } else if ed25519_dalek::VerifyingKey::from_public_key_der(der).is_ok() {
            Algorithm::Ed25519
        } else if let Ok(k) = rsa::RsaPublicKey::from_public_key_der(der) {
            use rsa::traits::PublicKeyParts;
            match k.size() * 8 {
                0..=2048 => Algorithm::Rsa2048,
                2049..=3072 => Algorithm::Rsa3072,
                _ => Algorithm::Rsa4096,
            }
        } else {
            return Err(TokenError::Other(
                "unsupported or malformed SubjectPublicKeyInfo (expected P-256, P-384, RSA or Ed25519)"
                    .into(),
            ));
        };
        Ok(PublicKey {
            algorithm,
            spki_der: der.to_vec(),
        })
    }

    pub fn from_pem(pem: &str) -> TokenResult<Self> {
        let (label, der) = spki::Document::from_pem(pem).map_err(|e| bad("PEM", e))?;
        if label != "PUBLIC KEY" {
            return Err(TokenError::Other(format!(
                "expected a PEM block 'PUBLIC KEY', found '{label}'"
            )));
        }
        Self::from_spki_der(der.as_bytes())
    }

    /// From an uncompressed SEC1 point of a NIST curve.
    pub fn from_ec_point(algorithm: Algorithm, sec1: &[u8]) -> TokenResult<Self> {
        let der = match algorithm {
            Algorithm::P256 => p256::PublicKey::from_sec1_bytes(sec1)
                .map_err(|e| bad("P-256", e))?
                .to_public_key_der()
                .map_err(|e| bad("P-256", e))?,
            Algorithm::P384 => p384::PublicKey::from_sec1_bytes(sec1)
                .map_err(|e| bad("P-384", e))?
                .to_public_key_der()
                .map_err(|e| bad("P-384", e))?,
            Algorithm::Ed25519 => {
                let bytes: [u8; 32] = sec1
                    .try_into()
                    .map_err(|_| bad("Ed25519", "expected 32 bytes"))?;
                ed25519_dalek::VerifyingKey::from_bytes(&bytes)
                    .map_err(|e| bad("Ed25519", e))?
                    .to_public_key_der()
                    .map_err(|e| bad("Ed25519", e))?
            }
            other => return Err(bad(other.as_str(), "not an elliptic-curve algorithm")),
        };
        Self::from_spki_der(der.as_bytes())
    }

    /// From an RSA modulus and public exponent (big-endian).
    pub fn from_rsa(modulus: &[u8], exponent: &[u8]) -> TokenResult<Self> {
        let key = rsa::RsaPublicKey::new(
            rsa::BigUint::from_bytes_be(modulus),
            rsa::BigUint::from_bytes_be(exponent),
        )
        .map_err(|e| bad("RSA", e))?;
        let der = key.to_public_key_der().map_err(|e| bad("RSA", e))?;
        Self::from_spki_der(der.as_bytes())
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// keyward's key id: SHA-256 of the DER SubjectPublicKeyInfo, lower-case hex.
    pub fn key_id(&self) -> String {
        hex::encode(Sha256::digest(&self.spki_der))
    }

    /// SPKI PEM, `-----BEGIN PUBLIC KEY-----`, as `cosign verify --key` and openssl read.
    pub fn to_pem(&self) -> String {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&self.spki_der);
        let mut out = String::from("-----BEGIN PUBLIC KEY-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
            out.push('\n');
        }
        out.push_str("-----END PUBLIC KEY-----\n");
        out
    }

    /// Verifies a signature made by keyward's rules: ECDSA over SHA-256 (DER or raw
    /// r||s), RSA PKCS#1 v1.5 SHA-256, pure Ed25519. One implementation serves the whole
    /// crate: the image verifier's, which follows cosign and containers/image.
    pub fn verify(&self, data: &[u8], signature: &[u8]) -> bool {
        crate::oci::verify::PublicKey::from_spki_der(&self.spki_der)
            .map(|k| k.verify(data, signature).is_ok())
            .unwrap_or(false)
    }
}

/// DER-encodes a raw r||s ECDSA signature (what PKCS#11 CKM_ECDSA returns).
pub fn ecdsa_raw_to_der(algorithm: Algorithm, raw: &[u8]) -> TokenResult<Vec<u8>> {
    let err = |e: ecdsa::Error| {
        TokenError::Other(format!("token returned a malformed ECDSA signature: {e}"))
    };
    Ok(match algorithm {
        Algorithm::P256 => p256::ecdsa::Signature::from_slice(raw)
            .map_err(err)?
            .to_der()
            .as_bytes()
            .to_vec(),
        Algorithm::P384 => p384::ecdsa::Signature::from_slice(raw)
            .map_err(err)?
            .to_der()
            .as_bytes()
            .to_vec(),
        other => {
            return Err(TokenError::Other(format!(
                "{other} signatures are not ECDSA"
            )))
        }
    })
}
