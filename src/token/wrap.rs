//! Wrapping keys: the AES-256 keys under which a PKCS#11 token wraps (`C_WrapKey`,
//! `CKM_AES_KEY_WRAP_PAD`, RFC 5649) a key version that was created wrappable, for a backup.
//!
//! keyward makes a fresh wrapping key for each backup. Its value exists in memory while the
//! backup is made, as a session object on the token (trusted by the SO, wrap only) while the
//! keys are wrapped, and afterwards only inside the age-encrypted backup, next to the blobs it
//! opens. A restore creates it on the new token as a session object (unwrap only) and calls
//! `C_UnwrapKey`; where the target is not a PKCS#11 token it unwraps in software (RFC 5649)
//! and imports the PKCS#8. See docs/SECURITY.md "Wrappable PKCS#11 keys".

use super::{TokenError, TokenResult};
use crate::secret::KeyBytes;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// The mechanism keyward wraps with, as the manifest and the audit log name it.
pub const MECHANISM: &str = "CKM_AES_KEY_WRAP_PAD";

/// An AES-256 wrapping key. No Debug, Display, Clone or Serialize: the value is a secret.
pub struct WrappingKey {
    value: Zeroizing<[u8; 32]>,
}

impl WrappingKey {
    /// A fresh random key (the operating system's generator).
    pub fn generate() -> Self {
        let mut value = Zeroizing::new([0u8; 32]);
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut value[..]);
        WrappingKey { value }
    }

    /// A key read back from a backup; `expected_id` is what the manifest names it.
    pub fn from_bytes(bytes: &[u8], expected_id: &str) -> TokenResult<Self> {
        let arr: [u8; 32] = bytes.try_into().map_err(|_| {
            TokenError::Other(format!(
                "wrapping key {expected_id} has {} bytes, not 32 (AES-256)",
                bytes.len()
            ))
        })?;
        let k = WrappingKey {
            value: Zeroizing::new(arr),
        };
        if k.id() != expected_id {
            return Err(TokenError::Other(format!(
                "the wrapping key stored as {expected_id} is another key (its id is {})",
                k.id()
            )));
        }
        Ok(k)
    }

    /// The id: 32 hex digits of SHA-256("keyward wrapping key" NUL value). It names the key in
    /// manifests and audit entries and lets a restore check the value it was given; finding
    /// the 256-bit value from it is as hard as breaking SHA-256.
    pub fn id(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"keyward wrapping key\0");
        h.update(&self.value[..]);
        hex::encode(&h.finalize()[..16])
    }

    /// The value, for handing to a token (`CKA_VALUE`) or writing into the encrypted archive.
    /// Callers must not copy it.
    pub fn expose(&self) -> &[u8; 32] {
        &self.value
    }

    fn kwp(&self) -> TokenResult<aes_kw::KwpAes256> {
        use aes_kw::KeyInit;
        aes_kw::KwpAes256::new_from_slice(&self.value[..])
            .map_err(|_| TokenError::Other("AES-256 key of the wrong length".into()))
    }

    /// RFC 5649 unwrap in software: the PKCS#8 DER a token wrapped under this key.
    pub fn unwrap_pkcs8(&self, blob: &[u8]) -> TokenResult<KeyBytes> {
        let kwp = self.kwp()?;
        let mut buf = Zeroizing::new(vec![0u8; blob.len().saturating_sub(aes_kw::IV_LEN)]);
        let n = kwp
            .unwrap_key(blob, &mut buf)
            .map_err(|e| {
                TokenError::Other(format!(
                    "the wrapped key does not open with wrapping key {} ({e})",
                    self.id()
                ))
            })?
            .len();
        buf.truncate(n);
        strip_der_zero_padding(&mut buf);
        Ok(buf)
    }

    /// RFC 5649 wrap in software (tests, and tokens that import instead of unwrapping).
    pub fn wrap(&self, plaintext: &[u8]) -> TokenResult<Vec<u8>> {
        let kwp = self.kwp()?;
        let mut buf = vec![0u8; plaintext.len().div_ceil(8) * 8 + aes_kw::IV_LEN];
        let n = kwp
            .wrap_key(plaintext, &mut buf)
            .map_err(|e| TokenError::Other(format!("RFC 5649 wrap: {e}")))?
            .len();
        buf.truncate(n);
        Ok(buf)
    }
}

/// SoftHSM2 2.6 zero-pads the key data to a multiple of 8 bytes before CKM_AES_KEY_WRAP_PAD
/// (which pads by itself), so its unwrapped PKCS#8 may end in up to 7 zero bytes after the DER
/// SEQUENCE. Its own C_UnwrapKey ignores them; so does this, and nothing else.
fn strip_der_zero_padding(buf: &mut Zeroizing<Vec<u8>>) {
    let total = match buf.get(..2) {
        Some([0x30, l]) if *l < 0x80 => 2 + usize::from(*l),
        Some([0x30, 0x81]) => buf.get(2).map(|l| 3 + usize::from(*l)).unwrap_or(0),
        Some([0x30, 0x82]) => match buf.get(2..4) {
            Some([a, b]) => 4 + (usize::from(*a) << 8 | usize::from(*b)),
            _ => 0,
        },
        _ => 0,
    };
    if total > 0
        && total < buf.len()
        && buf.len() - total < 8
        && buf[total..].iter().all(|&b| b == 0)
    {
        buf.truncate(total);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc5649_vectors_unwrap() {
        // RFC 5649 section 6 uses a 192-bit KEK; check our 256-bit path against a round trip
        // and the id's commitment, and the RFC's own vector through the crate's 192-bit type.
        use aes_kw::KeyInit;
        let kek = hex::decode("5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8").unwrap();
        let kwp = aes_kw::KwpAes192::new_from_slice(&kek).unwrap();
        let wrapped =
            hex::decode("138bdeaa9b8fa7fc61f97742e72248ee5ae6ae5360d1ae6a5f54f373fa543b6a")
                .unwrap();
        let mut out = [0u8; 24];
        let key = kwp.unwrap_key(&wrapped, &mut out).unwrap();
        assert_eq!(hex::encode(key), "c37b7e6492584340bed12207808941155068f738");

        let k = WrappingKey::generate();
        let blob = k.wrap(b"a private key of odd length").unwrap();
        assert_eq!(blob.len() % 8, 0);
        assert_eq!(
            &k.unwrap_pkcs8(&blob).unwrap()[..],
            b"a private key of odd length"
        );
        let mut bad = blob.clone();
        bad[3] ^= 1;
        assert!(k.unwrap_pkcs8(&bad).is_err());
        let other = WrappingKey::generate();
        assert!(other.unwrap_pkcs8(&blob).is_err());
        assert!(WrappingKey::from_bytes(k.expose(), &k.id()).is_ok());
        assert!(WrappingKey::from_bytes(k.expose(), &other.id()).is_err());
        assert_eq!(k.id().len(), 32);
    }

    #[test]
    fn softhsm_zero_padding_after_the_der_is_dropped_and_nothing_else() {
        let k = WrappingKey::generate();
        let der = [0x30, 0x03, 0x02, 0x01, 0x05];
        let mut padded = der.to_vec();
        padded.extend([0, 0, 0]);
        assert_eq!(
            &k.unwrap_pkcs8(&k.wrap(&padded).unwrap()).unwrap()[..],
            &der
        );
        // Non-zero trailing bytes are kept: the PKCS#8 parser then rejects them.
        let mut odd = der.to_vec();
        odd.extend([0, 1]);
        assert_eq!(
            &k.unwrap_pkcs8(&k.wrap(&odd).unwrap()).unwrap()[..],
            &odd[..]
        );
    }
}
