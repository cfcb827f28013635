//! Secret material: PINs, passphrases and private key bytes.
//!
//! Secrets live in zeroizing types that implement neither `Display`, `Serialize` nor `Clone`,
//! and whose `Debug` never shows the value.

use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

/// A PIN, SO PIN or passphrase typed by a person or read from a PIN file.
pub struct Pin(SecretString);

impl Pin {
    /// Takes ownership of a string that holds a PIN; the string is zeroized on drop.
    pub fn new(value: String) -> Self {
        Pin(SecretString::from(value))
    }

    /// Reads a PIN from a file: the first line, without its line ending.
    pub fn from_file(path: &std::path::Path) -> std::io::Result<Self> {
        let raw = Zeroizing::new(std::fs::read_to_string(path)?);
        let first = raw.lines().next().unwrap_or("");
        Ok(Pin::new(first.to_owned()))
    }

    /// The secret value, for handing to a token library. Callers must not copy it.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    pub fn is_empty(&self) -> bool {
        self.expose().is_empty()
    }
}

impl std::fmt::Debug for Pin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pin(<redacted>)")
    }
}

/// Private key bytes (PKCS#8 DER) held in memory only while needed.
pub type KeyBytes = Zeroizing<Vec<u8>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_pin() {
        let pin = Pin::new("123456".into());
        assert!(!format!("{pin:?}").contains("123456"));
    }

    #[test]
    fn pin_file_takes_first_line_only() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pin");
        std::fs::write(&p, "s3cret\nother\n").unwrap();
        assert_eq!(Pin::from_file(&p).unwrap().expose(), "s3cret");
    }
}
