//! The archive inside the age encryption: a POSIX (ustar) tar whose last entry is
//! `manifest.json`, with the SHA-256 of every other entry. See docs/FORMATS.md "Backups".
//!
//! Writing streams each entry once (the audit log can be gigabytes) and hashes it on the way;
//! reading streams the audit log through the hash chain check and, for a restore, into the new
//! home's temporary directory, and keeps the small entries in memory.

use super::BackupError;
use crate::audit::{check_line, LineFault, GENESIS};
use crate::keys::State;
use crate::token::Algorithm;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, Read, Write};
use std::path::Path;
use zeroize::Zeroizing;

pub const FORMAT: &str = "keyward-backup/1";
pub const MANIFEST: &str = "manifest.json";
pub const AUDIT_LOG: &str = "audit.log";
pub const CHECKPOINTS: &str = "audit.checkpoints";
pub const CONFIG: &str = "keyward.toml";
pub const STATE: &str = "state.json";
const SOFT_KEY_PREFIX: &str = "soft/keys/";
const SOFT_KEY_SUFFIX: &str = ".p8";
const WRAPPED_PREFIX: &str = "wrapped/";
const WRAPPED_SUFFIX: &str = ".kwp";
const WRAPPING_KEY_PREFIX: &str = "wrapping-keys/";
const WRAPPING_KEY_SUFFIX: &str = ".aes256";
/// Entries other than the audit log are held in memory; none is anywhere near this.
const SMALL_LIMIT: u64 = 64 << 20;
const BUF: usize = 1 << 20;

/// The archive entry holding a software key's PKCS#8.
pub fn soft_key_entry(object_id: &str) -> String {
    format!("{SOFT_KEY_PREFIX}{object_id}{SOFT_KEY_SUFFIX}")
}

/// The archive entry holding a PKCS#11 key's `C_WrapKey` blob.
pub fn wrapped_key_entry(object_id: &str) -> String {
    format!("{WRAPPED_PREFIX}{object_id}{WRAPPED_SUFFIX}")
}

/// The archive entry holding a wrapping key's value (32 bytes).
pub fn wrapping_key_entry(id: &str) -> String {
    format!("{WRAPPING_KEY_PREFIX}{id}{WRAPPING_KEY_SUFFIX}")
}

fn allowed_name(name: &str) -> bool {
    let hex_id = |prefix: &str, suffix: &str| {
        name.strip_prefix(prefix)
            .and_then(|r| r.strip_suffix(suffix))
            .is_some_and(|id| {
                !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
            })
    };
    matches!(name, MANIFEST | AUDIT_LOG | CHECKPOINTS | CONFIG | STATE)
        || hex_id(SOFT_KEY_PREFIX, SOFT_KEY_SUFFIX)
        || hex_id(WRAPPED_PREFIX, WRAPPED_SUFFIX)
        || hex_id(WRAPPING_KEY_PREFIX, WRAPPING_KEY_SUFFIX)
}

/// `manifest.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// `keyward-backup/1`.
    pub format: String,
    /// SHA-256 of the age header of the file this archive was written into.
    pub backup_id: String,
    /// RFC 3339, UTC.
    pub created: String,
    /// `user@host`.
    pub created_by: String,
    pub keyward_version: String,
    /// The hash of the home's first audit entry (64 zeros for an empty log): the same for a
    /// home and every restore of it.
    pub home_id: String,
    pub audit: AuditHead,
    /// How the file is encrypted.
    pub protection: Protection,
    /// Every entry but the manifest, in archive order.
    pub entries: Vec<EntryDigest>,
    /// Every key version the log knows, and every key the software keystore holds.
    pub keys: Vec<KeyRecord>,
    /// The wrapping keys inside, which open the `wrapped` keys (the values are archive
    /// entries; never shown).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub wrapping_keys: Vec<WrappingKeyRecord>,
}

/// A wrapping key carried by the backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WrappingKeyRecord {
    /// 32 hex digits: SHA-256("keyward wrapping key" NUL value), first 16 bytes.
    pub id: String,
    /// `aes-256`.
    pub algorithm: String,
    /// `CKM_AES_KEY_WRAP_PAD` (RFC 5649).
    pub mechanism: String,
    /// The archive entry holding the 32-byte value.
    pub entry: String,
    /// The tokens whose SO installed it to wrap keys for this backup.
    pub tokens: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditHead {
    /// The last entry in the archived log.
    pub seq: u64,
    pub hash: String,
    /// Byte length of the archived log.
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryDigest {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Protection {
    /// `recipients`, `passphrase` or `shares`.
    pub kind: String,
    /// Public recipients (`age1…`), for `recipients`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<String>,
    /// M, for `shares`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<u8>,
    /// Custodians by name, in share order, for `shares`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub custodians: Vec<String>,
}

impl Protection {
    pub fn describe(&self) -> String {
        match self.kind.as_str() {
            "shares" => format!(
                "{}-of-{} custodian shares ({})",
                self.threshold.unwrap_or(0),
                self.custodians.len(),
                self.custodians.join(", ")
            ),
            "passphrase" => "a passphrase (age scrypt)".into(),
            _ => format!("{} age recipient(s)", self.recipients.len()),
        }
    }
}

/// What the backup holds for one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Material {
    /// The PKCS#8 private key is in the archive (software keystore keys).
    Pkcs8,
    /// A PKCS#11 key created wrappable: its `C_WrapKey` blob (RFC 5649 over PKCS#8) is in
    /// `entry`, under the wrapping key `wrapping_key_id`.
    Wrapped,
    /// Generated non-extractable on a hardware token: only the public key is here.
    NotExtractable,
    /// The log knows the version but its private key is gone from the keystore.
    Missing,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRecord {
    /// Key name and version, when the log knows the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<State>,
    pub token: String,
    pub token_serial: String,
    pub object_id: String,
    pub label: String,
    pub algorithm: Algorithm,
    pub key_id: String,
    /// SPKI PEM.
    pub public_key: String,
    pub material: Material,
    /// The archive entry holding the private key (`pkcs8`) or its wrapped blob (`wrapped`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<String>,
    /// For `wrapped`: the id of the wrapping key (in `wrapping_keys`) that opens `entry`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wrapping_key_id: Option<String>,
    /// How to get this key back, in words.
    pub recovery: String,
}

impl KeyRecord {
    pub fn name(&self) -> String {
        match (&self.key, self.version) {
            (Some(k), Some(v)) => format!("{k}/{v}"),
            _ => format!("{} (not in the log)", self.label),
        }
    }
}

// ---- writing ----------------------------------------------------------------------------------

/// Writes the tar stream, hashing every entry.
pub struct ArchiveWriter<W: Write> {
    out: W,
    entries: Vec<EntryDigest>,
    mtime: u64,
}

fn header(name: &str, size: u64, mtime: u64) -> io::Result<tar::Header> {
    let mut h = tar::Header::new_ustar();
    h.set_path(name)?;
    h.set_size(size);
    h.set_mode(0o600);
    h.set_mtime(mtime);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    Ok(h)
}

fn pad(out: &mut impl Write, size: u64) -> io::Result<()> {
    let rem = (512 - (size % 512)) % 512;
    out.write_all(&[0u8; 512][..rem as usize])
}

impl<W: Write> ArchiveWriter<W> {
    pub fn new(out: W) -> Self {
        let mtime = time::OffsetDateTime::now_utc().unix_timestamp().max(0) as u64;
        ArchiveWriter {
            out,
            entries: Vec::new(),
            mtime,
        }
    }

    /// Adds a small entry held in memory.
    pub fn add_bytes(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let h = header(name, bytes.len() as u64, self.mtime)?;
        self.out.write_all(h.as_bytes())?;
        self.out.write_all(bytes)?;
        pad(&mut self.out, bytes.len() as u64)?;
        self.entries.push(EntryDigest {
            name: name.into(),
            size: bytes.len() as u64,
            sha256: hex::encode(Sha256::digest(bytes)),
        });
        Ok(())
    }

    /// Streams exactly `size` bytes of `src` into an entry, hashing them.
    pub fn add_stream(&mut self, name: &str, size: u64, src: &mut impl Read) -> io::Result<()> {
        let h = header(name, size, self.mtime)?;
        self.out.write_all(h.as_bytes())?;
        let digest = hash_copy(src, &mut self.out, size)?;
        pad(&mut self.out, size)?;
        self.entries.push(EntryDigest {
            name: name.into(),
            size,
            sha256: digest,
        });
        Ok(())
    }

    /// Appends the manifest (with the entry digests filled in) and the tar end blocks.
    pub fn finish(mut self, manifest: &mut Manifest) -> io::Result<W> {
        manifest.entries = std::mem::take(&mut self.entries);
        let json = serde_json::to_vec_pretty(manifest).map_err(io::Error::other)?;
        let h = header(MANIFEST, json.len() as u64, self.mtime)?;
        self.out.write_all(h.as_bytes())?;
        self.out.write_all(&json)?;
        pad(&mut self.out, json.len() as u64)?;
        self.out.write_all(&[0u8; 1024])?;
        Ok(self.out)
    }
}

/// Copies exactly `size` bytes, hashing them on a second thread so that hashing and
/// encryption overlap (on two cores this is most of the difference to plain `age`).
fn hash_copy(src: &mut impl Read, dst: &mut impl Write, size: u64) -> io::Result<String> {
    use std::sync::mpsc;
    use std::sync::Arc;
    let (tx, rx) = mpsc::sync_channel::<Arc<Vec<u8>>>(4);
    let (back_tx, back_rx) = mpsc::channel::<Arc<Vec<u8>>>();
    let hasher = std::thread::spawn(move || {
        let mut h = Sha256::new();
        for chunk in rx {
            h.update(&chunk[..]);
            let _ = back_tx.send(chunk);
        }
        hex::encode(h.finalize())
    });
    let mut left = size;
    let result = (|| {
        while left > 0 {
            let mut buf = back_rx
                .try_recv()
                .ok()
                .and_then(|a| Arc::try_unwrap(a).ok())
                .unwrap_or_else(|| vec![0u8; BUF]);
            buf.resize(BUF.min(left as usize), 0);
            let mut filled = 0;
            while filled < buf.len() {
                let n = src.read(&mut buf[filled..])?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the file shrank while it was being backed up",
                    ));
                }
                filled += n;
            }
            dst.write_all(&buf)?;
            left -= buf.len() as u64;
            if tx.send(Arc::new(buf)).is_err() {
                return Err(io::Error::other("the hashing thread stopped"));
            }
        }
        Ok(())
    })();
    drop(tx);
    let digest = hasher
        .join()
        .map_err(|_| io::Error::other("the hashing thread panicked"))?;
    result.map(|()| digest)
}

// ---- reading ----------------------------------------------------------------------------------

/// What a read archive held, checked against its manifest.
pub struct Unpacked {
    pub manifest: Manifest,
    /// Every entry but the audit log and the manifest, by name. May hold private keys.
    pub files: BTreeMap<String, Zeroizing<Vec<u8>>>,
    /// The archived log's chain, as checked.
    pub chain: ChainSummary,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ChainSummary {
    pub entries: u64,
    pub head_hash: String,
    pub first_hash: String,
    pub checkpoints_checked: usize,
}

/// Incremental hash chain check over the bytes of an audit log (the same rules as `audit
/// verify`, without reading a file twice).
struct Chain {
    expected: u64,
    prev: [u8; 64],
    first: Option<[u8; 64]>,
    carry: Vec<u8>,
    problem: Option<String>,
    wanted: HashSet<u64>,
    seen: HashMap<u64, String>,
}

impl Chain {
    fn new(wanted: HashSet<u64>) -> Self {
        let mut prev = [0u8; 64];
        prev.copy_from_slice(GENESIS.as_bytes());
        Chain {
            expected: 1,
            prev,
            first: None,
            carry: Vec::new(),
            problem: None,
            wanted,
            seen: HashMap::new(),
        }
    }

    fn line(&mut self, line: &[u8]) {
        let expected = self.expected;
        match check_line(line) {
            Err(LineFault::Malformed) => {
                self.problem = Some(format!("audit entry {expected} is not a keyward entry"))
            }
            Err(LineFault::HashMismatch { seq }) => {
                self.problem = Some(format!(
                    "audit entry {seq} was modified: its content does not match its hash"
                ))
            }
            Ok((seq, prev, hash)) => {
                if seq != expected || prev != self.prev {
                    self.problem = Some(format!(
                        "audit entry {expected} is missing, out of order or replaced (found entry {seq})"
                    ));
                    return;
                }
                if self.first.is_none() {
                    self.first = Some(hash);
                }
                if self.wanted.contains(&seq) {
                    self.seen
                        .insert(seq, String::from_utf8_lossy(&hash).into_owned());
                }
                self.prev = hash;
                self.expected += 1;
            }
        }
    }

    fn feed(&mut self, mut chunk: &[u8]) {
        if self.problem.is_some() {
            return;
        }
        while let Some(i) = memchr::memchr(b'\n', chunk) {
            if self.carry.is_empty() {
                self.line(&chunk[..i]);
            } else {
                self.carry.extend_from_slice(&chunk[..i]);
                let carry = std::mem::take(&mut self.carry);
                self.line(&carry);
            }
            if self.problem.is_some() {
                return;
            }
            chunk = &chunk[i + 1..];
        }
        self.carry.extend_from_slice(chunk);
    }

    fn finish(&mut self) {
        if self.problem.is_none() && !self.carry.is_empty() {
            self.problem = Some("the archived audit log ends in the middle of an entry".into());
        }
    }
}

/// Reads the audit log entry once: the SHA-256 digest and the hash chain check run on two
/// helper threads while this one decrypts and writes, so a restore keeps up with `age -d`.
fn stream_audit(
    entry: &mut impl Read,
    wanted: HashSet<u64>,
    mut out: Option<(&mut dyn Write, &Path)>,
    path: &Path,
) -> Result<(String, Chain, u64), BackupError> {
    use std::sync::mpsc::sync_channel;
    use std::sync::Arc;
    let (tx_h, rx_h) = sync_channel::<Arc<Vec<u8>>>(8);
    let (tx_c, rx_c) = sync_channel::<Arc<Vec<u8>>>(8);
    // Buffers come back from the checker once both threads are done with them.
    let (back_tx, back_rx) = std::sync::mpsc::channel::<Arc<Vec<u8>>>();
    std::thread::scope(|scope| {
        let hasher = scope.spawn(move || {
            let mut h = Sha256::new();
            for chunk in rx_h {
                h.update(&chunk[..]);
            }
            hex::encode(h.finalize())
        });
        let checker = scope.spawn(move || {
            let mut c = Chain::new(wanted);
            for chunk in rx_c {
                c.feed(&chunk);
                let _ = back_tx.send(chunk);
            }
            c.finish();
            c
        });
        let mut total = 0u64;
        let result = (|| -> Result<(), BackupError> {
            loop {
                let mut buf = back_rx
                    .try_recv()
                    .ok()
                    .and_then(|a| Arc::try_unwrap(a).ok())
                    .unwrap_or_default();
                buf.resize(BUF, 0);
                let mut filled = 0;
                while filled < BUF {
                    let n = entry
                        .read(&mut buf[filled..])
                        .map_err(|e| BackupError::Corrupt {
                            path: path.display().to_string(),
                            detail: format!("the encrypted data is damaged or cut short ({e})"),
                        })?;
                    if n == 0 {
                        break;
                    }
                    filled += n;
                }
                if filled == 0 {
                    return Ok(());
                }
                buf.truncate(filled);
                if let Some((w, p)) = out.as_mut() {
                    w.write_all(&buf).map_err(|e| BackupError::io(p, e))?;
                }
                total += filled as u64;
                let chunk = Arc::new(buf);
                if tx_h.send(chunk.clone()).is_err() || tx_c.send(chunk).is_err() {
                    return Err(BackupError::Other("a checking thread stopped".into()));
                }
            }
        })();
        drop(tx_h);
        drop(tx_c);
        let digest = hasher
            .join()
            .map_err(|_| BackupError::Other("the hashing thread panicked".into()));
        let chain = checker
            .join()
            .map_err(|_| BackupError::Other("the chain checking thread panicked".into()));
        result?;
        Ok((digest?, chain?, total))
    })
}

/// Reads the archive from `r` (the decrypted stream). The audit log goes through the chain
/// check and, when `audit_out` is given, into it. Every digest, the chain, the manifest's head
/// and the archived checkpoints are checked before this returns `Ok`.
pub fn unpack(
    r: impl Read,
    mut audit_out: Option<(&mut dyn Write, &Path)>,
    path: &Path,
) -> Result<Unpacked, BackupError> {
    let p = path.display().to_string();
    let corrupt = |e: io::Error| BackupError::Corrupt {
        path: p.clone(),
        detail: format!("the encrypted data is damaged or cut short ({e})"),
    };
    let tampered = |detail: String| BackupError::Tampered {
        path: p.clone(),
        detail,
    };
    let mut archive = tar::Archive::new(r);
    let mut read: Vec<EntryDigest> = Vec::new();
    let mut files: BTreeMap<String, Zeroizing<Vec<u8>>> = BTreeMap::new();
    let mut manifest: Option<Manifest> = None;
    let mut chain: Option<Chain> = None;
    let mut checkpoints: Vec<crate::audit::checkpoint::CheckpointRecord> = Vec::new();
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        let name = entry
            .path()
            .map_err(corrupt)?
            .to_string_lossy()
            .into_owned();
        if manifest.is_some() {
            return Err(tampered(format!("entry {name:?} follows the manifest")));
        }
        if entry.header().entry_type() != tar::EntryType::Regular || !allowed_name(&name) {
            return Err(tampered(format!(
                "unexpected entry {name:?}: not part of a keyward backup"
            )));
        }
        if read.iter().any(|e| e.name == name) {
            return Err(tampered(format!("entry {name:?} appears twice")));
        }
        let size = entry.header().size().map_err(corrupt)?;
        if name == AUDIT_LOG {
            let wanted = checkpoints.iter().map(|c| c.seq).collect();
            let (digest, c, total) = stream_audit(
                &mut entry,
                wanted,
                audit_out
                    .as_mut()
                    .map(|(w, p)| (&mut **w as &mut dyn Write, *p)),
                path,
            )?;
            if total != size {
                return Err(corrupt(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the audit log entry is cut short",
                )));
            }
            read.push(EntryDigest {
                name,
                size,
                sha256: digest,
            });
            chain = Some(c);
            continue;
        }
        if size > SMALL_LIMIT {
            return Err(tampered(format!("entry {name:?} is implausibly large")));
        }
        let mut bytes = Zeroizing::new(Vec::with_capacity(size as usize));
        entry.read_to_end(&mut bytes).map_err(corrupt)?;
        if bytes.len() as u64 != size {
            return Err(corrupt(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("entry {name:?} is cut short"),
            )));
        }
        if name == MANIFEST {
            let m: Manifest = serde_json::from_slice(&bytes)
                .map_err(|e| tampered(format!("the manifest is not valid: {e}")))?;
            manifest = Some(m);
            continue;
        }
        if name == CHECKPOINTS {
            let text = std::str::from_utf8(&bytes)
                .map_err(|_| tampered("audit.checkpoints is not UTF-8".into()))?;
            for l in text.lines().filter(|l| !l.trim().is_empty()) {
                checkpoints.push(
                    serde_json::from_str(l)
                        .map_err(|e| tampered(format!("audit.checkpoints: {e}")))?,
                );
            }
        }
        read.push(EntryDigest {
            name: name.clone(),
            size,
            sha256: hex::encode(Sha256::digest(&bytes)),
        });
        files.insert(name, bytes);
    }
    let Some(manifest) = manifest else {
        return Err(BackupError::Corrupt {
            path: p.clone(),
            detail: "the archive has no manifest: it is cut short or not a keyward backup".into(),
        });
    };
    if manifest.format != FORMAT {
        return Err(BackupError::Invalid(format!(
            "{p} is a {:?} archive; this keyward reads {FORMAT}",
            manifest.format
        )));
    }
    // Every digest.
    for want in &manifest.entries {
        match read.iter().find(|e| e.name == want.name) {
            None => return Err(tampered(format!("entry {:?} is missing", want.name))),
            Some(got) if got.size != want.size || got.sha256 != want.sha256 => {
                return Err(tampered(format!(
                    "entry {:?} does not match its SHA-256 in the manifest",
                    want.name
                )))
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = read
        .iter()
        .find(|e| !manifest.entries.iter().any(|m| m.name == e.name))
    {
        return Err(tampered(format!(
            "entry {:?} is not listed in the manifest",
            extra.name
        )));
    }
    // The chain, its head, the home id and the checkpoints.
    let Some(chain) = chain else {
        return Err(tampered("the archive holds no audit log".into()));
    };
    if let Some(problem) = &chain.problem {
        return Err(tampered(format!(
            "the archived audit log does not verify: {problem}"
        )));
    }
    let entries = chain.expected - 1;
    let head_hash = String::from_utf8_lossy(&chain.prev).into_owned();
    let first_hash = chain
        .first
        .map(|f| String::from_utf8_lossy(&f).into_owned())
        .unwrap_or_else(|| GENESIS.into());
    if entries != manifest.audit.seq || head_hash != manifest.audit.hash {
        return Err(tampered(format!(
            "the archived audit log ends at entry {entries} ({}…), the manifest says entry {} ({}…)",
            &head_hash[..12],
            manifest.audit.seq,
            manifest.audit.hash.get(..12).unwrap_or("")
        )));
    }
    if first_hash != manifest.home_id {
        return Err(tampered(
            "the archived audit log does not start with the home id the manifest names".into(),
        ));
    }
    for cp in &checkpoints {
        if chain.seen.get(&cp.seq) != Some(&cp.hash) {
            return Err(tampered(format!(
                "the archived checkpoint of entry {} does not match the archived log",
                cp.seq
            )));
        }
        cp.check_signature().map_err(|why| {
            tampered(format!(
                "the archived checkpoint of entry {}: {why}",
                cp.seq
            ))
        })?;
    }
    // Keys: every pkcs8 or wrapped entry the manifest names is there (the digests were
    // checked above), and so is the wrapping key of every wrapped one.
    for k in &manifest.keys {
        if let Some(e) = &k.entry {
            if !files.contains_key(e) {
                return Err(tampered(format!(
                    "the private key of {} is missing",
                    k.name()
                )));
            }
        }
        if k.material == Material::Wrapped {
            let wk = k
                .wrapping_key_id
                .as_ref()
                .and_then(|id| manifest.wrapping_keys.iter().find(|w| &w.id == id));
            match wk {
                Some(w) if files.contains_key(&w.entry) => {}
                _ => {
                    return Err(tampered(format!(
                        "the wrapping key of {} is missing",
                        k.name()
                    )))
                }
            }
        }
    }
    Ok(Unpacked {
        manifest,
        files,
        chain: ChainSummary {
            entries,
            head_hash,
            first_hash,
            checkpoints_checked: checkpoints.len(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{encode_entry, Actor, Event, Outcome};

    fn log(n: u64) -> (Vec<u8>, String, String) {
        let actor = Actor {
            user: "a".into(),
            host: "h".into(),
        };
        let mut out = Vec::new();
        let mut prev = GENESIS.to_string();
        let mut first = String::new();
        for seq in 1..=n {
            let (line, hash) = encode_entry(
                seq,
                &prev,
                "2026-01-01T00:00:00.000Z",
                &actor,
                &Event::PublicKeyRead {
                    key: "k".into(),
                    version: 1,
                    key_id: "00".into(),
                },
                Outcome::Ok,
                None,
            )
            .unwrap();
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
            if seq == 1 {
                first = hash.clone();
            }
            prev = hash;
        }
        (out, prev, first)
    }

    fn manifest(seq: u64, hash: &str, first: &str, bytes: u64) -> Manifest {
        Manifest {
            format: FORMAT.into(),
            backup_id: "x".into(),
            created: "2026-01-01T00:00:00.000Z".into(),
            created_by: "a@h".into(),
            keyward_version: "0".into(),
            home_id: first.into(),
            audit: AuditHead {
                seq,
                hash: hash.into(),
                bytes,
            },
            protection: Protection {
                kind: "passphrase".into(),
                recipients: vec![],
                threshold: None,
                custodians: vec![],
            },
            entries: vec![],
            keys: vec![],
            wrapping_keys: vec![],
        }
    }

    fn build(log_bytes: &[u8], m: &mut Manifest) -> Vec<u8> {
        let mut w = ArchiveWriter::new(Vec::new());
        w.add_bytes(CONFIG, b"# none\n").unwrap();
        w.add_stream(AUDIT_LOG, log_bytes.len() as u64, &mut &log_bytes[..])
            .unwrap();
        w.finish(m).unwrap()
    }

    #[test]
    fn round_trip_and_the_system_tar_reads_it() {
        let (bytes, head, first) = log(50);
        let mut m = manifest(50, &head, &first, bytes.len() as u64);
        let tar = build(&bytes, &mut m);
        let mut out = Vec::new();
        let u = unpack(&tar[..], Some((&mut out, Path::new("o"))), Path::new("t")).unwrap();
        assert_eq!(out, bytes);
        assert_eq!(u.chain.entries, 50);
        assert_eq!(u.manifest, m);
        // GNU tar lists what we wrote.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.tar"), &tar).unwrap();
        let o = std::process::Command::new("tar")
            .arg("-tf")
            .arg(dir.path().join("a.tar"))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            "keyward.toml\naudit.log\nmanifest.json\n"
        );
    }

    #[test]
    fn a_changed_entry_or_a_wrong_head_is_named() {
        let (bytes, head, first) = log(20);
        let mut m = manifest(20, &head, &first, bytes.len() as u64);
        let mut tar = build(&bytes, &mut m);
        // Flip a byte inside the config entry (the second 512-byte block).
        tar[512 + 2] ^= 1;
        let e = unpack(&tar[..], None, Path::new("t")).err().unwrap();
        assert!(e.to_string().contains("keyward.toml"), "{e}");
        let mut m = manifest(19, &head, &first, bytes.len() as u64);
        let tar = build(&bytes, &mut m);
        let e = unpack(&tar[..], None, Path::new("t")).err().unwrap();
        assert!(e.to_string().contains("ends at entry 20"), "{e}");
    }
}
