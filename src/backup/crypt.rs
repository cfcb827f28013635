//! The age layer of a backup: who can open it (recipients, a passphrase, plugin recipients such
//! as `age1yubikey1…`), the identities that open it, and the backup id (the SHA-256 of the age
//! header, which every share names).

use super::BackupError;
use crate::secret::Pin;
use sha2::{Digest, Sha256};
use std::io::{self, BufRead, Read, Write};
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// What a backup file's age header says, readable without any key.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct HeaderInfo {
    /// SHA-256 (hex) of the header bytes, from `age-encryption.org/v1` through the MAC line.
    pub backup_id: String,
    /// Stanza types in order: `X25519`, `scrypt`, or a plugin's tag (e.g. `piv-p256`).
    pub stanzas: Vec<String>,
    /// Header length in bytes.
    pub header_len: u64,
}

impl HeaderInfo {
    pub fn is_scrypt(&self) -> bool {
        self.stanzas.iter().any(|s| s == "scrypt")
    }
}

/// Reads and identifies an age header (binary format only: keyward never writes armour for
/// backups). Leaves `r` after the header's MAC line.
pub fn read_header<R: BufRead>(r: &mut R, path: &Path) -> Result<HeaderInfo, BackupError> {
    let not_age = || BackupError::NotAgeFile {
        path: path.display().to_string(),
    };
    let mut hasher = Sha256::new();
    let mut stanzas = Vec::new();
    let mut len = 0u64;
    let mut line = Vec::new();
    let mut first = true;
    loop {
        line.clear();
        let n = r
            .take(64 * 1024)
            .read_until(b'\n', &mut line)
            .map_err(|e| BackupError::io(path, e))?;
        if n == 0 || line.last() != Some(&b'\n') {
            return Err(if first {
                not_age()
            } else {
                BackupError::Corrupt {
                    path: path.display().to_string(),
                    detail: "the age header is cut short".into(),
                }
            });
        }
        len += n as u64;
        hasher.update(&line);
        if first {
            if line != b"age-encryption.org/v1\n" {
                return Err(not_age());
            }
            first = false;
            continue;
        }
        if let Some(rest) = line.strip_prefix(b"-> ") {
            let tag = rest
                .split(|&b| b == b' ' || b == b'\n')
                .next()
                .unwrap_or_default();
            // age adds random "grease" stanzas that no identity opens; they say nothing.
            if !tag.ends_with(b"-grease") {
                stanzas.push(String::from_utf8_lossy(tag).into_owned());
            }
        } else if line.starts_with(b"---") {
            break;
        }
        if len > 1 << 20 {
            return Err(not_age());
        }
    }
    Ok(HeaderInfo {
        backup_id: hex::encode(hasher.finalize()),
        stanzas,
        header_len: len,
    })
}

/// Parsed recipients for `backup create`.
pub struct Recipients {
    list: Vec<Box<dyn age::Recipient + Send>>,
    /// How they are described in the manifest and the audit log (public keys only).
    pub described: Vec<String>,
}

impl Recipients {
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
    pub fn len(&self) -> usize {
        self.list.len()
    }
}

/// Parses `age1…` X25519 recipients and plugin recipients (`age1yubikey1…`); plugin recipients
/// need the plugin binary (`age-plugin-yubikey`) on `PATH`.
pub fn parse_recipients(values: &[String]) -> Result<Recipients, BackupError> {
    let mut list: Vec<Box<dyn age::Recipient + Send>> = Vec::new();
    let mut described = Vec::new();
    let mut plugins: Vec<(String, Vec<age::plugin::Recipient>)> = Vec::new();
    for v in values {
        let v = v.trim();
        if let Ok(r) = age::x25519::Recipient::from_str(v) {
            list.push(Box::new(r));
            described.push(v.to_owned());
            continue;
        }
        match age::plugin::Recipient::from_str(v) {
            Ok(r) => {
                let name = r.plugin().to_owned();
                match plugins.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, rs)) => rs.push(r),
                    None => plugins.push((name, vec![r])),
                }
                described.push(v.to_owned());
            }
            Err(_) => {
                return Err(BackupError::BadRecipient {
                    value: v.chars().take(80).collect(),
                    why: "not an age recipient (age1…) or a plugin recipient (age1yubikey1…)"
                        .into(),
                })
            }
        }
    }
    for (name, rs) in plugins {
        let p = age::plugin::RecipientPluginV1::new(&name, &rs, &[], age::NoCallbacks).map_err(
            |e| BackupError::BadRecipient {
                value: format!("age1{name}1…"),
                why: match e {
                    age::EncryptError::MissingPlugin { binary_name } => format!(
                        "the plugin binary {binary_name} is not installed (it must be on PATH)"
                    ),
                    other => other.to_string(),
                },
            },
        )?;
        list.push(Box::new(p));
    }
    Ok(Recipients { list, described })
}

/// Reads a recipients file: one recipient a line, `#` comments and blank lines ignored.
pub fn read_recipients_file(path: &Path) -> Result<Vec<String>, BackupError> {
    let text = std::fs::read_to_string(path).map_err(|e| BackupError::io(path, e))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect())
}

/// How a backup is encrypted.
pub enum Seal<'a> {
    Recipients(&'a Recipients),
    Passphrase(&'a Pin),
    /// The fresh identity whose secret the shares hold.
    Fresh(&'a age::x25519::Identity),
}

/// Starts an age stream to `output`. Returns the stream and the header description (for the
/// backup id, known before any payload is written).
pub fn encrypt<W: Write>(
    seal: Seal<'_>,
    output: W,
) -> Result<(age::stream::StreamWriter<HeaderTee<W>>, HeaderInfo), BackupError> {
    let enc = match seal {
        Seal::Recipients(r) => {
            age::Encryptor::with_recipients(r.list.iter().map(|b| b.as_ref() as _))
        }
        Seal::Passphrase(p) => {
            let r = age::scrypt::Recipient::new(age::secrecy::SecretString::from(
                p.expose().to_owned(),
            ));
            age::Encryptor::with_recipients(std::iter::once(&r as _))
        }
        Seal::Fresh(id) => {
            let r = id.to_public();
            age::Encryptor::with_recipients(std::iter::once(&r as _))
        }
    }
    .map_err(|e| BackupError::Encrypt(e.to_string()))?;
    let captured = Arc::new(Mutex::new(Vec::with_capacity(1024)));
    let capturing = Arc::new(AtomicBool::new(true));
    let tee = HeaderTee {
        inner: output,
        captured: captured.clone(),
        capturing: capturing.clone(),
    };
    let stream = enc
        .wrap_output(tee)
        .map_err(|e| BackupError::Encrypt(e.to_string()))?;
    // `wrap_output` has written the header and the payload nonce through the tee.
    capturing.store(false, Ordering::Release);
    let captured = std::mem::take(
        &mut *captured
            .lock()
            .map_err(|_| BackupError::Other("header capture poisoned".into()))?,
    );
    let info = read_header(&mut io::Cursor::new(captured), Path::new("<new backup>"))?;
    Ok((stream, info))
}

/// A writer that keeps a copy of the first bytes written (the age header), then passes
/// everything straight through.
pub struct HeaderTee<W> {
    inner: W,
    captured: Arc<Mutex<Vec<u8>>>,
    capturing: Arc<AtomicBool>,
}

impl<W> HeaderTee<W> {
    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: Write> Write for HeaderTee<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if self.capturing.load(Ordering::Acquire) {
            if let Ok(mut c) = self.captured.lock() {
                if c.len() < 1 << 20 {
                    c.extend_from_slice(&buf[..n]);
                }
            }
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Identities read from `--identity` files (X25519 and plugin identities).
pub fn load_identities(
    paths: &[std::path::PathBuf],
) -> Result<Vec<Box<dyn age::Identity>>, BackupError> {
    let mut out = Vec::new();
    for p in paths {
        let file = age::IdentityFile::from_file(p.display().to_string()).map_err(|e| {
            BackupError::BadIdentity {
                path: p.display().to_string(),
                why: e.to_string(),
            }
        })?;
        let ids = file
            .into_identities()
            .map_err(|e| BackupError::BadIdentity {
                path: p.display().to_string(),
                why: e.to_string(),
            })?;
        if ids.is_empty() {
            return Err(BackupError::BadIdentity {
                path: p.display().to_string(),
                why: "the file holds no identity".into(),
            });
        }
        out.extend(ids);
    }
    Ok(out)
}

/// The scrypt identity for a passphrase-protected backup.
pub fn passphrase_identity(p: &Pin) -> age::scrypt::Identity {
    let mut id =
        age::scrypt::Identity::new(age::secrecy::SecretString::from(p.expose().to_owned()));
    // Accept what we write (age's default, 2^18) and up to 2^22; refuse a file that would make
    // us spin for minutes.
    id.set_max_work_factor(22);
    id
}

/// Maps the errors of opening an age file to what the user can act on.
pub fn open_error(path: &Path, e: age::DecryptError, tried: usize) -> BackupError {
    let p = path.display().to_string();
    match e {
        age::DecryptError::NoMatchingKeys => BackupError::WrongIdentity { path: p, tried },
        age::DecryptError::DecryptionFailed | age::DecryptError::KeyDecryptionFailed => {
            BackupError::WrongIdentity { path: p, tried }
        }
        age::DecryptError::ExcessiveWork { required, .. } => BackupError::Corrupt {
            path: p,
            detail: format!(
                "its passphrase work factor 2^{required} is beyond what keyward accepts (2^22)"
            ),
        },
        age::DecryptError::InvalidMac => BackupError::Corrupt {
            path: p,
            detail: "its age header was modified (the header MAC does not match)".into(),
        },
        age::DecryptError::InvalidHeader | age::DecryptError::UnknownFormat => {
            BackupError::Corrupt {
                path: p,
                detail: "its age header is not valid".into(),
            }
        }
        age::DecryptError::Io(e) => BackupError::Corrupt {
            path: p,
            detail: format!("reading the age header: {e}"),
        },
        other => BackupError::Other(format!("{p}: {other}")),
    }
}

/// Reads a whole small age file (a share) with the given identities.
pub fn decrypt_small(
    ciphertext: &[u8],
    identities: &[Box<dyn age::Identity>],
) -> Result<zeroize::Zeroizing<Vec<u8>>, age::DecryptError> {
    let d = age::Decryptor::new_buffered(age::armor::ArmoredReader::new(ciphertext))?;
    let mut r = d.decrypt(identities.iter().map(|b| b.as_ref() as _))?;
    let mut out = zeroize::Zeroizing::new(Vec::new());
    r.read_to_end(&mut out)?;
    Ok(out)
}

/// Encrypts a small plaintext (a share) to one recipient, ASCII-armoured.
pub fn encrypt_small_armored(
    recipient: &dyn age::Recipient,
    plaintext: &[u8],
) -> Result<Vec<u8>, BackupError> {
    let enc = age::Encryptor::with_recipients(std::iter::once(recipient))
        .map_err(|e| BackupError::Encrypt(e.to_string()))?;
    let mut out = Vec::new();
    let armor = age::armor::ArmoredWriter::wrap_output(&mut out, age::armor::Format::AsciiArmor)
        .map_err(|e| BackupError::Encrypt(e.to_string()))?;
    let mut w = enc
        .wrap_output(armor)
        .map_err(|e| BackupError::Encrypt(e.to_string()))?;
    w.write_all(plaintext)
        .map_err(|e| BackupError::Encrypt(e.to_string()))?;
    w.finish()
        .and_then(|a| a.finish())
        .map_err(|e| BackupError::Encrypt(e.to_string()))?;
    Ok(out)
}

/// Parses one recipient (for a custodian).
pub fn parse_one_recipient(v: &str) -> Result<Box<dyn age::Recipient + Send>, BackupError> {
    let mut r = parse_recipients(&[v.to_owned()])?;
    r.list.pop().ok_or_else(|| BackupError::BadRecipient {
        value: v.into(),
        why: "empty".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_id_is_stable_and_read_back() {
        let id = age::x25519::Identity::generate();
        let r = parse_recipients(&[id.to_public().to_string()]).unwrap();
        let mut out = Vec::new();
        let (mut w, info) = encrypt(Seal::Recipients(&r), &mut out).unwrap();
        w.write_all(b"hello").unwrap();
        w.finish().unwrap();
        assert_eq!(info.stanzas, vec!["X25519".to_string()]);
        let mut cur = io::Cursor::new(&out);
        let back = read_header(&mut cur, Path::new("x")).unwrap();
        assert_eq!(back, info);
    }

    #[test]
    fn a_plugin_recipient_without_its_plugin_is_a_clear_error() {
        // The example recipient from age-plugin-yubikey's documentation.
        let r = "age1yubikey1qwt50d05nh5vutpdzmlg5wn80xq5negm4uj9ghv0snvdd3yysf5yw3rhl3t";
        if which_plugin("age-plugin-yubikey") {
            return; // installed here: encryption to it would work
        }
        let e = parse_recipients(&[r.to_string()]).err().unwrap();
        assert!(e.to_string().contains("age-plugin-yubikey"), "{e}");
        let e = parse_recipients(&["age1notarecipient".to_string()])
            .err()
            .unwrap();
        assert!(e.to_string().contains("not an age recipient"), "{e}");
    }

    fn which_plugin(name: &str) -> bool {
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(name).exists()))
            .unwrap_or(false)
    }

    #[test]
    fn a_non_age_file_is_named_as_such() {
        let mut cur = io::Cursor::new(b"hello world\n".to_vec());
        assert!(matches!(
            read_header(&mut cur, Path::new("x")),
            Err(BackupError::NotAgeFile { .. })
        ));
    }
}
