//! Encrypted backups of a home: create, inspect, verify, restore and drill.
//!
//! A backup is an age file (X25519 recipients, a passphrase, plugin recipients, or a fresh key
//! split M-of-N between custodians) holding a tar archive: the audit log up to its head, the
//! checkpoints, `keyward.toml`, `state.json`, and the software keystore's private keys as
//! PKCS#8. PKCS#11 keys created wrappable go in as `C_WrapKey` blobs under a wrapping key made
//! for this backup and carried inside it (see [`crate::token::wrap`]). Other hardware keys are
//! non-extractable: the manifest lists them with their public keys and how to recover them. The
//! format is in docs/FORMATS.md "Backups".
//!
//! Nothing is written until everything checked out: a backup is written to a temporary file and
//! renamed into place once its `backup_created` entry is in the log; a restore is built in a
//! temporary directory beside the new home, verified, recorded in the new home's log, and
//! renamed into place.

pub mod archive;
pub mod crypt;
pub mod shares;

use crate::audit::{AuditLog, Event, Outcome, GENESIS};
use crate::fsutil;
use crate::home::Home;
use crate::keys::{State, Version};
use crate::prompt::{Confirm, PromptError, Prompter, SecretKind, SecretRequest};
use crate::secret::Pin;
use crate::token::soft::{sign_pkcs8, SoftToken, SOFT_TOKEN_NAME};
use crate::token::wrap::{self, WrappingKey};
use crate::token::{GenerateRequest, ObjectId, PublicKey, Token, TokenKind};
use crate::{Error, Keyward, Result};
use archive::{ArchiveWriter, KeyRecord, Manifest, Material, Unpacked};
use crypt::HeaderInfo;
use serde::Serialize;
use std::fs::File;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};

pub use archive::FORMAT;
pub use shares::Custodian;

/// `SecretRequest::token` when the core asks for a backup's passphrase (kind `Passphrase` to
/// open one, `NewPassphrase` to create one). The CLI reads `KEYWARD_BACKUP_PASSPHRASE` for it.
pub const PASSPHRASE_PROMPT: &str = "backup";

/// What went wrong with a backup, in words the user can act on.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0}")]
    Invalid(String),
    #[error("invalid recipient {value:?}: {why}")]
    BadRecipient { value: String, why: String },
    #[error("cannot read the identity file {path}: {why}")]
    BadIdentity { path: String, why: String },
    #[error("age encryption failed: {0}")]
    Encrypt(String),
    #[error("{path} is not an age-encrypted keyward backup")]
    NotAgeFile { path: String },
    #[error("none of the {tried} identities given opens {path}; nothing was written")]
    WrongIdentity { path: String, tried: usize },
    #[error("{path} is corrupt: {detail}; nothing was written")]
    Corrupt { path: String, detail: String },
    #[error("{path} does not check out: {detail}; nothing was written")]
    Tampered { path: String, detail: String },
    #[error("{have} share(s) given, {threshold} needed: need {need} more share(s)")]
    NeedMoreShares {
        have: usize,
        threshold: u8,
        need: usize,
    },
    #[error("{share} belongs to another backup ({}…), not to {backup} ({}…)", share_backup.get(..16).unwrap_or(share_backup), backup_id.get(..16).unwrap_or(backup_id))]
    ForeignShare {
        share: String,
        share_backup: String,
        backup: String,
        backup_id: String,
    },
    #[error("none of the {tried} identities given opens the share {share}")]
    ShareUnreadable { share: String, tried: usize },
    #[error("{share} is not a valid share: {why}")]
    BadShare { share: String, why: String },
    #[error("the shares do not combine into the backup's key: one of them is damaged")]
    SharesDoNotCombine,
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

impl BackupError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        BackupError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

impl From<BackupError> for Error {
    fn from(e: BackupError) -> Self {
        match e {
            BackupError::Io { path, source } => Error::Io { path, source },
            BackupError::Invalid(m) => Error::Invalid(m),
            other => Error::Other(other.to_string()),
        }
    }
}

// ---- create -----------------------------------------------------------------------------------

/// `backup create`.
#[derive(Clone, Debug, Default)]
pub struct CreateRequest {
    pub output: PathBuf,
    pub recipients: Vec<String>,
    pub recipients_files: Vec<PathBuf>,
    /// Encrypt with a passphrase (asked through the prompter).
    pub passphrase: bool,
    /// M, with `custodians` as the N.
    pub shares: Option<u8>,
    pub custodians: Vec<Custodian>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Created {
    pub file: PathBuf,
    pub backup_id: String,
    pub bytes: u64,
    pub share_files: Vec<PathBuf>,
    pub manifest: Manifest,
}

enum Plan {
    Recipients(crypt::Recipients),
    Passphrase(Pin),
    Shares(u8, Vec<Custodian>),
}

fn plan(req: &CreateRequest, prompter: &mut dyn Prompter) -> Result<(Plan, archive::Protection)> {
    let mut values = req.recipients.clone();
    for f in &req.recipients_files {
        values.extend(crypt::read_recipients_file(f)?);
    }
    let modes = usize::from(!values.is_empty())
        + usize::from(req.passphrase)
        + usize::from(req.shares.is_some() || !req.custodians.is_empty());
    if modes == 0 {
        return Err(BackupError::Invalid(
            "say who can open the backup: --recipient AGE_RECIPIENT, --recipients-file FILE, --passphrase, or --shares M --custodian NAME=AGE_RECIPIENT ...".into(),
        )
        .into());
    }
    if modes > 1 {
        return Err(BackupError::Invalid(
            "choose one protection: recipients, a passphrase, or custodian shares (age cannot mix a passphrase with recipients, and shares exist so that no single recipient opens the backup)".into(),
        )
        .into());
    }
    if req.passphrase {
        let pin = prompter.secret(&SecretRequest {
            kind: SecretKind::NewPassphrase,
            token: PASSPHRASE_PROMPT,
            info: None,
        })?;
        if pin.expose().chars().count() < 8 {
            return Err(BackupError::Invalid(
                "the backup passphrase must have at least 8 characters".into(),
            )
            .into());
        }
        return Ok((
            Plan::Passphrase(pin),
            archive::Protection {
                kind: "passphrase".into(),
                recipients: vec![],
                threshold: None,
                custodians: vec![],
            },
        ));
    }
    if req.shares.is_some() || !req.custodians.is_empty() {
        let m = req.shares.ok_or_else(|| {
            BackupError::Invalid(
                "--custodian needs --shares M (how many custodians must come together)".into(),
            )
        })?;
        shares::check_threshold(m, req.custodians.len())?;
        let mut names: Vec<&str> = req.custodians.iter().map(|c| c.name.as_str()).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            return Err(
                BackupError::Invalid("each custodian needs a different name".into()).into(),
            );
        }
        // Check every recipient now, before any work.
        for c in &req.custodians {
            crypt::parse_one_recipient(&c.recipient)?;
        }
        return Ok((
            Plan::Shares(m, req.custodians.clone()),
            archive::Protection {
                kind: "shares".into(),
                recipients: vec![],
                threshold: Some(m),
                custodians: req.custodians.iter().map(|c| c.name.clone()).collect(),
            },
        ));
    }
    let r = crypt::parse_recipients(&values)?;
    let described = r.described.clone();
    Ok((
        Plan::Recipients(r),
        archive::Protection {
            kind: "recipients".into(),
            recipients: described,
            threshold: None,
            custodians: vec![],
        },
    ))
}

/// A temporary file or directory removed on drop unless kept.
struct Temp {
    path: PathBuf,
    dir: bool,
    keep: bool,
}

impl Temp {
    fn beside(target: &Path, tag: &str, dir: bool) -> Result<Self> {
        let parent = target
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| Path::new("."));
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "keyward".into());
        let path = parent.join(format!(
            ".{name}.{tag}-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        if dir {
            std::fs::create_dir(&path).map_err(|e| Error::io(&path, e))?;
            fsutil::create_private_dir(&path).map_err(|e| Error::io(&path, e))?;
        }
        Ok(Temp {
            path,
            dir,
            keep: false,
        })
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        if !self.keep {
            let _ = if self.dir {
                std::fs::remove_dir_all(&self.path)
            } else {
                std::fs::remove_file(&self.path)
            };
        }
    }
}

fn create_private_file(path: &Path) -> Result<File> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path).map_err(|e| Error::io(path, e))
}

/// A file writer that starts writeback while it writes: every 64 MiB a helper thread calls
/// `fdatasync` on a clone of the file, so the final `fsync` (a backup or a restored log must
/// survive a crash) has little left to do and the disk works while the CPU encrypts.
struct DurableFile {
    file: File,
    since_sync: u64,
    tick: Option<std::sync::mpsc::SyncSender<()>>,
    syncer: Option<std::thread::JoinHandle<()>>,
}

impl DurableFile {
    const EVERY: u64 = 64 << 20;

    fn new(file: File) -> Self {
        let (tick, syncer) = match file.try_clone() {
            Ok(clone) => {
                let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
                let h = std::thread::spawn(move || {
                    for () in rx {
                        // Best effort: the final sync_all reports any error.
                        let _ = clone.sync_data();
                    }
                });
                (Some(tx), Some(h))
            }
            Err(_) => (None, None),
        };
        DurableFile {
            file,
            since_sync: 0,
            tick,
            syncer,
        }
    }

    /// Stops the helper and makes everything durable.
    fn finish(mut self) -> std::io::Result<File> {
        drop(self.tick.take());
        if let Some(h) = self.syncer.take() {
            let _ = h.join();
        }
        self.file.sync_all()?;
        Ok(self.file)
    }
}

impl Write for DurableFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.since_sync += n as u64;
        if self.since_sync >= Self::EVERY {
            self.since_sync = 0;
            if let Some(t) = &self.tick {
                // Skip the tick when a sync is still running.
                let _ = t.try_send(());
            }
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// A writer that writes on a helper thread: the caller (encrypting a backup, or decrypting
/// and checking a restore) fills 1 MiB buffers and goes on while the helper has the kernel copy
/// the previous one into the page cache. On two cores this takes the copy off the critical
/// path. [`PipeWriter::finish`] waits for every byte and reports the first write error.
struct PipeWriter<W: Write + Send + 'static> {
    buf: Vec<u8>,
    tx: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    back: std::sync::mpsc::Receiver<Vec<u8>>,
    error: std::sync::Arc<std::sync::Mutex<Option<std::io::Error>>>,
    handle: Option<std::thread::JoinHandle<W>>,
}

impl<W: Write + Send + 'static> PipeWriter<W> {
    const CAP: usize = 1 << 20;

    fn new(inner: W) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(3);
        let (back_tx, back) = std::sync::mpsc::channel::<Vec<u8>>();
        let error = std::sync::Arc::new(std::sync::Mutex::new(None));
        let seen = error.clone();
        let handle = std::thread::spawn(move || {
            let mut inner = inner;
            let mut ok = true;
            for b in rx {
                if ok {
                    if let Err(e) = inner.write_all(&b) {
                        ok = false;
                        if let Ok(mut slot) = seen.lock() {
                            *slot = Some(e);
                        }
                    }
                }
                let _ = back_tx.send(b);
            }
            inner
        });
        PipeWriter {
            buf: Vec::with_capacity(Self::CAP),
            tx: Some(tx),
            back,
            error,
            handle: Some(handle),
        }
    }

    fn take_error(&self) -> Option<std::io::Error> {
        self.error.lock().ok().and_then(|mut e| e.take())
    }

    /// Hands the filled buffer to the helper.
    fn send(&mut self) -> std::io::Result<()> {
        if let Some(e) = self.take_error() {
            return Err(e);
        }
        if self.buf.is_empty() {
            return Ok(());
        }
        let next = match self.back.try_recv() {
            Ok(mut v) => {
                v.clear();
                v
            }
            Err(_) => Vec::with_capacity(Self::CAP),
        };
        let full = std::mem::replace(&mut self.buf, next);
        self.tx
            .as_ref()
            .ok_or_else(|| std::io::Error::other("the writing thread is finished"))?
            .send(full)
            .map_err(|_| std::io::Error::other("the writing thread stopped"))
    }

    /// Writes what is left, waits for the helper, and returns the inner writer.
    fn finish(mut self) -> std::io::Result<W> {
        self.send()?;
        drop(self.tx.take());
        let inner = self
            .handle
            .take()
            .ok_or_else(|| std::io::Error::other("the writing thread is gone"))?
            .join()
            .map_err(|_| std::io::Error::other("the writing thread panicked"))?;
        match self.take_error() {
            Some(e) => Err(e),
            None => Ok(inner),
        }
    }
}

impl<W: Write + Send + 'static> Write for PipeWriter<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let room = Self::CAP - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == Self::CAP {
            self.send()?;
        }
        Ok(n)
    }

    /// Hands over what is buffered; durability comes from [`PipeWriter::finish`] and the
    /// inner writer's own finish.
    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

impl<W: Write + Send + 'static> Drop for PipeWriter<W> {
    fn drop(&mut self) {
        // On an error path: stop the helper before the caller removes the file.
        drop(self.tx.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// The hash of the first audit entry of a log: the home id (GENESIS for an empty log).
fn home_id(log: &Path) -> Result<String> {
    let f = match File::open(log) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(GENESIS.into()),
        Err(e) => return Err(Error::io(log, e)),
    };
    let mut line = Vec::new();
    std::io::BufRead::read_until(&mut BufReader::new(f), b'\n', &mut line)
        .map_err(|e| Error::io(log, e))?;
    if line.last() != Some(&b'\n') {
        return Ok(GENESIS.into());
    }
    let (_, _, hash) = crate::audit::check_line(&line[..line.len() - 1])
        .map_err(|_| Error::AuditBroken("the first audit entry is damaged".into()))?;
    Ok(String::from_utf8_lossy(&hash).into_owned())
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

fn wrapped_recovery(token: &str, wrapping_key_id: &str) -> String {
    format!(
        "wrappable key of token {token}: inside as a C_WrapKey blob ({}, RFC 5649) under wrapping key {wrapping_key_id}, also inside. Restore it onto a PKCS#11 token with `keyward backup restore --onto TOKEN` (C_UnwrapKey)",
        wrap::MECHANISM
    )
}

/// Whether a version's private key goes into a backup wrapped.
fn wraps(v: &Version) -> bool {
    v.token != SOFT_TOKEN_NAME
        && v.wrappable
        && !matches!(v.state, State::Destroyed | State::Compromised)
}

/// Checks that a private key (PKCS#8 DER) signs a probe its public key verifies.
fn check_private(k: &KeyRecord, der: &[u8]) -> std::result::Result<(), String> {
    let pk = PublicKey::from_pem(&k.public_key).map_err(|e| format!("the public key: {e}"))?;
    if pk.key_id() != k.key_id {
        return Err("the key id does not match its public key".into());
    }
    let probe = format!("keyward backup check {}", k.key_id);
    let sig = sign_pkcs8(k.algorithm, der, probe.as_bytes())
        .map_err(|e| format!("it does not sign ({e})"))?;
    if !pk.verify(probe.as_bytes(), &sig) {
        return Err("it does not match its public key".into());
    }
    Ok(())
}

fn recovery_text(token: &str, serial: &str, key: Option<&str>) -> String {
    format!(
        "non-extractable on token {token} (serial {serial}): this backup holds its public key only. Recover by using another token that holds the same key, or rotate{} and distribute the new public key",
        key.map(|k| format!(" (`keyward key rotate {k}`)")).unwrap_or_default()
    )
}

/// Wraps every wrappable version on its token under `wk`: per token, the SO installs `wk` as a
/// trusted wrap-only session key, the user logs in, each key is wrapped, and the key is removed
/// again. Each step is in the audit log. Returns (object id, blob) pairs.
fn wrap_keys(
    kw: &Keyward,
    registry: &crate::keys::Registry,
    wk: &WrappingKey,
    backup_id: &str,
    prompter: &mut dyn Prompter,
) -> Result<Vec<(String, Vec<u8>)>> {
    let mut by_token: std::collections::BTreeMap<&str, Vec<&Version>> = Default::default();
    for v in registry.versions().filter(|v| wraps(v)) {
        by_token.entry(v.token.as_str()).or_default().push(v);
    }
    let wrapping_key_id = wk.id();
    let mut out = Vec::new();
    for (token, versions) in by_token {
        let names = versions
            .iter()
            .map(|v| v.name())
            .collect::<Vec<_>>()
            .join(", ");
        let unreachable = |e: Error| {
            Error::Other(format!(
                "token {token} holds wrappable key(s) {names} but cannot be opened ({e}); connect it, or make the backup where it is reachable"
            ))
        };
        let mut t = kw.open_token(token).map_err(unreachable)?;
        let info = t.info().map_err(unreachable)?;
        let so_pin = prompter.secret(&SecretRequest {
            kind: SecretKind::SoPin,
            token: &t.name,
            info: Some(&info),
        })?;
        let installed = t.token.install_wrapping_key(wk, &so_pin);
        drop(so_pin);
        let event = Event::WrappingKeyInstalled {
            token: t.name.clone(),
            token_serial: info.serial.clone(),
            wrapping_key_id: wrapping_key_id.clone(),
            backup_id: backup_id.to_owned(),
        };
        if let Err(e) = installed {
            kw.record(event, Outcome::Failed, Some(e.to_string()))?;
            return Err(e.into());
        }
        let result = (|| -> Result<()> {
            kw.record(event, Outcome::Ok, None)?;
            kw.login(&mut t, prompter)?;
            for v in &versions {
                let event = Event::KeyWrapped {
                    key: v.key.clone(),
                    version: v.version,
                    key_id: v.key_id.clone(),
                    token: t.name.clone(),
                    token_serial: info.serial.clone(),
                    object_id: v.object_id.clone(),
                    wrapping_key_id: wrapping_key_id.clone(),
                    mechanism: wrap::MECHANISM.into(),
                    backup_id: backup_id.to_owned(),
                };
                match t.token.wrap_key(&ObjectId(v.object_id.clone())) {
                    Ok(blob) => {
                        kw.record(event, Outcome::Ok, None)?;
                        out.push((v.object_id.clone(), blob));
                    }
                    Err(e) => {
                        kw.record(event, Outcome::Failed, Some(e.to_string()))?;
                        return Err(e.into());
                    }
                }
            }
            Ok(())
        })();
        let removed = t.token.remove_wrapping_key();
        result?;
        removed?;
    }
    Ok(out)
}

/// Creates an encrypted backup of `kw`'s home. Asks for the keystore passphrase when the
/// software keystore holds keys (they go into the backup as PKCS#8).
pub fn create(kw: &Keyward, req: &CreateRequest, prompter: &mut dyn Prompter) -> Result<Created> {
    let output = req.output.clone();
    if output.exists() {
        return Err(BackupError::Invalid(format!(
            "{} exists; keyward never overwrites a backup — choose another name",
            output.display()
        ))
        .into());
    }
    for c in &req.custodians {
        let p = shares::share_path(&output, &c.name);
        if p.exists() {
            return Err(BackupError::Invalid(format!(
                "{} exists; keyward never overwrites a share — choose another backup name",
                p.display()
            ))
            .into());
        }
    }
    let (plan, protection) = plan(req, prompter)?;
    let home = kw.home();

    // What the log knows, and the software keys (their private halves need the passphrase).
    let registry = kw.registry()?;
    let mut keys: Vec<KeyRecord> = Vec::new();
    let mut pkcs8: Vec<(String, crate::secret::KeyBytes)> = Vec::new();
    let soft_present = SoftToken::open(home.dir()).is_initialized();
    let mut soft_keys = Vec::new();
    let mut soft = None;
    if soft_present {
        let mut t = kw.open_token(SOFT_TOKEN_NAME)?;
        soft_keys = t.token.list_keys()?;
        if soft_keys.iter().any(|k| k.has_private) {
            kw.login(&mut t, prompter)?;
        }
        soft = Some(t);
    }
    // One wrapping key for this backup, if any version is wrappable; its id names it in the
    // manifest before any token has seen it.
    let wrapping = registry.versions().any(wraps).then(WrappingKey::generate);
    let wrapping_id = wrapping.as_ref().map(WrappingKey::id);
    for v in registry.versions() {
        if v.token == SOFT_TOKEN_NAME {
            continue;
        }
        if let (true, Some(id)) = (wraps(v), &wrapping_id) {
            keys.push(KeyRecord {
                key: Some(v.key.clone()),
                version: Some(v.version),
                state: Some(v.state),
                token: v.token.clone(),
                token_serial: v.token_serial.clone(),
                object_id: v.object_id.clone(),
                label: v.name(),
                algorithm: v.algorithm,
                key_id: v.key_id.clone(),
                public_key: v.public_key.clone(),
                material: Material::Wrapped,
                entry: Some(archive::wrapped_key_entry(&v.object_id)),
                wrapping_key_id: Some(id.clone()),
                recovery: wrapped_recovery(&v.token, id),
            });
            continue;
        }
        keys.push(KeyRecord {
            key: Some(v.key.clone()),
            version: Some(v.version),
            state: Some(v.state),
            token: v.token.clone(),
            token_serial: v.token_serial.clone(),
            object_id: v.object_id.clone(),
            label: v.name(),
            algorithm: v.algorithm,
            key_id: v.key_id.clone(),
            public_key: v.public_key.clone(),
            material: Material::NotExtractable,
            entry: None,
            wrapping_key_id: None,
            recovery: if v.wrappable {
                format!(
                    "wrappable, but {}: not carried by backups; rotate (`keyward key rotate {}`)",
                    v.state, v.key
                )
            } else {
                recovery_text(&v.token, &v.token_serial, Some(&v.key))
            },
        });
    }
    let soft_serial = home.dir().join("soft").display().to_string();
    for k in &soft_keys {
        let v = registry
            .versions()
            .find(|v| v.token == SOFT_TOKEN_NAME && v.object_id == k.object_id.0);
        let entry = archive::soft_key_entry(&k.object_id.0);
        let material = if k.has_private {
            let t = soft
                .as_mut()
                .ok_or_else(|| Error::Other("software keystore not open".into()))?;
            pkcs8.push((entry.clone(), t.token.export_pkcs8(&k.object_id)?));
            Material::Pkcs8
        } else {
            Material::Missing
        };
        keys.push(KeyRecord {
            key: v.map(|v| v.key.clone()),
            version: v.map(|v| v.version),
            state: v.map(|v| v.state),
            token: SOFT_TOKEN_NAME.into(),
            token_serial: v.map(|v| v.token_serial.clone()).unwrap_or(soft_serial.clone()),
            object_id: k.object_id.0.clone(),
            label: k.label.clone(),
            algorithm: k.algorithm,
            key_id: k.public_key.key_id(),
            public_key: k.public_key.to_pem(),
            entry: (material == Material::Pkcs8).then_some(entry),
            wrapping_key_id: None,
            recovery: if material == Material::Pkcs8 {
                "software key: restored from this backup into a software keystore (`backup restore`), or imported onto a token with --onto".into()
            } else {
                "software key whose private half is gone from the keystore: rotate".into()
            },
            material,
        });
    }
    for v in registry.versions().filter(|v| v.token == SOFT_TOKEN_NAME) {
        if !keys
            .iter()
            .any(|k| k.token == SOFT_TOKEN_NAME && k.object_id == v.object_id)
        {
            keys.push(KeyRecord {
                key: Some(v.key.clone()),
                version: Some(v.version),
                state: Some(v.state),
                token: SOFT_TOKEN_NAME.into(),
                token_serial: v.token_serial.clone(),
                object_id: v.object_id.clone(),
                label: v.name(),
                algorithm: v.algorithm,
                key_id: v.key_id.clone(),
                public_key: v.public_key.clone(),
                material: Material::Missing,
                entry: None,
                wrapping_key_id: None,
                recovery: "the software keystore no longer holds this key: rotate".into(),
            });
        }
    }
    drop(soft);

    // A consistent cut of the log: everything up to the head read now.
    let head = kw.audit().head()?;
    let log_path = home.audit_log();
    let home_id = home_id(&log_path)?;
    let checkpoints = read_optional(&home.checkpoints())?;
    let config = read_optional(&home.config())?;
    let state = read_optional(&home.snapshot())?;

    let tmp = Temp::beside(&output, "tmp", false)?;
    let file = create_private_file(&tmp.path)?;
    let fresh = match &plan {
        Plan::Shares(..) => Some(age::x25519::Identity::generate()),
        _ => None,
    };
    let seal = match (&plan, &fresh) {
        (Plan::Recipients(r), _) => crypt::Seal::Recipients(r),
        (Plan::Passphrase(p), _) => crypt::Seal::Passphrase(p),
        (Plan::Shares(..), Some(id)) => crypt::Seal::Fresh(id),
        (Plan::Shares(..), None) => return Err(Error::Other("no fresh key".into())),
    };
    let (stream, header) = crypt::encrypt(seal, PipeWriter::new(DurableFile::new(file)))?;
    // The wrappable keys, wrapped on their tokens now that the backup id is known.
    let wrapped = match &wrapping {
        Some(wk) => wrap_keys(kw, &registry, wk, &header.backup_id, prompter)?,
        None => Vec::new(),
    };
    for k in keys.iter().filter(|k| k.material == Material::Wrapped) {
        let blob = wrapped
            .iter()
            .find(|(id, _)| *id == k.object_id)
            .map(|(_, b)| b)
            .ok_or_else(|| Error::Other(format!("{}: no wrapped blob", k.name())))?;
        // The blob must open and match before the backup claims to hold the key.
        let der = wrapping
            .as_ref()
            .ok_or_else(|| Error::Other("no wrapping key".into()))?
            .unwrap_pkcs8(blob)?;
        check_private(k, &der).map_err(|why| {
            Error::Other(format!(
                "{} wrapped by {} does not check out: {why}",
                k.name(),
                k.token
            ))
        })?;
    }
    let werr = |e: std::io::Error| Error::io(&output, e);
    let mut w = ArchiveWriter::new(stream);
    if let Some(b) = &checkpoints {
        w.add_bytes(archive::CHECKPOINTS, b).map_err(werr)?;
    }
    if let Some(b) = &config {
        w.add_bytes(archive::CONFIG, b).map_err(werr)?;
    }
    if let Some(b) = &state {
        w.add_bytes(archive::STATE, b).map_err(werr)?;
    }
    {
        let f = File::open(&log_path);
        match f {
            Ok(mut f) => w
                .add_stream(archive::AUDIT_LOG, head.offset, &mut f)
                .map_err(|e| Error::io(&log_path, e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                w.add_bytes(archive::AUDIT_LOG, b"").map_err(werr)?
            }
            Err(e) => return Err(Error::io(&log_path, e)),
        }
    }
    for (entry, der) in &pkcs8 {
        w.add_bytes(entry, der).map_err(werr)?;
    }
    drop(pkcs8);
    let mut wrapping_keys = Vec::new();
    if let Some(wk) = &wrapping {
        let id = wk.id();
        let entry = archive::wrapping_key_entry(&id);
        w.add_bytes(&entry, wk.expose()).map_err(werr)?;
        let mut tokens: Vec<String> = keys
            .iter()
            .filter(|k| k.material == Material::Wrapped)
            .map(|k| k.token.clone())
            .collect();
        tokens.sort();
        tokens.dedup();
        wrapping_keys.push(archive::WrappingKeyRecord {
            id,
            algorithm: "aes-256".into(),
            mechanism: wrap::MECHANISM.into(),
            entry,
            tokens,
        });
        for (object_id, blob) in &wrapped {
            w.add_bytes(&archive::wrapped_key_entry(object_id), blob)
                .map_err(werr)?;
        }
    }
    drop(wrapping);
    let actor = crate::audit::Actor::current();
    let mut manifest = Manifest {
        format: FORMAT.into(),
        backup_id: header.backup_id.clone(),
        created: crate::audit::now_rfc3339(),
        created_by: actor.to_string(),
        keyward_version: env!("CARGO_PKG_VERSION").into(),
        home_id,
        audit: archive::AuditHead {
            seq: head.seq,
            hash: head.hash.clone(),
            bytes: head.offset,
        },
        protection: protection.clone(),
        entries: vec![],
        keys,
        wrapping_keys,
    };
    let stream = w.finish(&mut manifest).map_err(werr)?;
    let pipe = stream.finish().map_err(werr)?.into_inner();
    let file = pipe.finish().map_err(werr)?.finish().map_err(werr)?;
    let bytes = file.metadata().map_err(werr)?.len();
    drop(file);

    // Shares, each to its custodian, beside the backup.
    let file_name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut share_temps = Vec::new();
    if let (Plan::Shares(m, custodians), Some(id)) = (&plan, &fresh) {
        for (name, armored) in shares::split(id, *m, custodians, &header.backup_id, &file_name)? {
            let target = shares::share_path(&output, &name);
            let t = Temp::beside(&target, "tmp", false)?;
            let mut f = create_private_file(&t.path)?;
            f.write_all(&armored)
                .and_then(|()| f.sync_all())
                .map_err(|e| Error::io(&t.path, e))?;
            share_temps.push((t, target));
        }
    }
    drop(fresh);

    // Fail closed: the backup exists only once the log records it.
    let keys_wrapped = manifest
        .keys
        .iter()
        .filter(|k| k.material == Material::Wrapped)
        .count() as u32;
    let keys_included = manifest
        .keys
        .iter()
        .filter(|k| k.material == Material::Pkcs8)
        .count() as u32
        + keys_wrapped;
    kw.record(
        Event::BackupCreated {
            backup_id: header.backup_id.clone(),
            file: output.display().to_string(),
            head_seq: head.seq,
            head_hash: head.hash.clone(),
            protection: protection.describe(),
            keys_included,
            keys_listed: manifest.keys.len() as u32 - keys_included,
            keys_wrapped,
        },
        Outcome::Ok,
        None,
    )?;
    let mut share_files = Vec::new();
    for (mut t, target) in share_temps {
        std::fs::rename(&t.path, &target).map_err(|e| Error::io(&target, e))?;
        t.keep = true;
        share_files.push(target);
    }
    let mut tmp = tmp;
    std::fs::rename(&tmp.path, &output).map_err(|e| Error::io(&output, e))?;
    tmp.keep = true;
    if let Some(dir) = output.parent().filter(|p| !p.as_os_str().is_empty()) {
        let _ = fsutil::sync_dir(dir);
    }
    Ok(Created {
        file: output,
        backup_id: header.backup_id,
        bytes,
        share_files,
        manifest,
    })
}

// ---- opening ----------------------------------------------------------------------------------

/// What opens a backup: identity files, share files (opened with the identities), or — for a
/// passphrase backup — nothing (the prompter is asked).
#[derive(Clone, Debug, Default)]
pub struct Unlock {
    pub identities: Vec<PathBuf>,
    pub shares: Vec<PathBuf>,
}

type Plain = age::stream::StreamReader<BufReader<File>>;

fn open(path: &Path, unlock: &Unlock, prompter: &mut dyn Prompter) -> Result<(HeaderInfo, Plain)> {
    let f = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut r = BufReader::with_capacity(1 << 20, f);
    let header = crypt::read_header(&mut r, path)?;
    let f = File::open(path).map_err(|e| Error::io(path, e))?;
    let dec = age::Decryptor::new_buffered(BufReader::with_capacity(1 << 20, f))
        .map_err(|e| crypt::open_error(path, e, 0))?;
    let identities = crypt::load_identities(&unlock.identities)?;
    if !unlock.shares.is_empty() {
        let id = shares::combine(&unlock.shares, &identities, &header.backup_id, path)?;
        let plain = dec
            .decrypt(std::iter::once(&id as &dyn age::Identity))
            .map_err(|e| match e {
                age::DecryptError::NoMatchingKeys => BackupError::Tampered {
                    path: path.display().to_string(),
                    detail: "the shares combine into a key that does not open it".into(),
                },
                other => crypt::open_error(path, other, 1),
            })?;
        return Ok((header, plain));
    }
    if header.is_scrypt() && identities.is_empty() {
        let pin = prompter.secret(&SecretRequest {
            kind: SecretKind::Passphrase,
            token: PASSPHRASE_PROMPT,
            info: None,
        })?;
        let id = crypt::passphrase_identity(&pin);
        let plain = dec
            .decrypt(std::iter::once(&id as &dyn age::Identity))
            .map_err(|e| match e {
                age::DecryptError::DecryptionFailed
                | age::DecryptError::NoMatchingKeys
                | age::DecryptError::KeyDecryptionFailed => BackupError::Invalid(format!(
                    "wrong passphrase for {}; nothing was written",
                    path.display()
                )),
                other => crypt::open_error(path, other, 1),
            })?;
        return Ok((header, plain));
    }
    if identities.is_empty() {
        return Err(BackupError::Invalid(format!(
            "{} is encrypted to {}: pass --identity FILE{}",
            path.display(),
            header.stanzas.join(", "),
            if header.stanzas.iter().all(|s| s == "X25519") {
                " (or --share FILE for each custodian share, with the custodians' --identity files)"
            } else {
                ""
            }
        ))
        .into());
    }
    let n = identities.len();
    let plain = dec
        .decrypt(identities.iter().map(|b| b.as_ref() as &dyn age::Identity))
        .map_err(|e| crypt::open_error(path, e, n))?;
    Ok((header, plain))
}

/// A verified archive: every digest, the audit chain, and each private key against its public
/// key.
#[derive(Clone, Debug, Serialize)]
pub struct Verified {
    pub file: PathBuf,
    pub backup_id: String,
    pub manifest: Manifest,
    pub chain: archive::ChainSummary,
    pub keys_checked: usize,
}

fn check_unpacked(path: &Path, header: &HeaderInfo, u: &Unpacked) -> Result<usize> {
    let tampered = |detail: String| BackupError::Tampered {
        path: path.display().to_string(),
        detail,
    };
    let mut checked = 0;
    for k in &u.manifest.keys {
        if k.entry.is_none() {
            continue;
        }
        let der = private_der(u, k)
            .map_err(|why| tampered(format!("the private key of {}: {why}", k.name())))?;
        check_private(k, &der)
            .map_err(|why| tampered(format!("the private key of {}: {why}", k.name())))?;
        checked += 1;
    }
    if u.manifest.backup_id != header.backup_id {
        return Err(tampered(
            "its manifest names another backup id: the archive was re-encrypted into this file"
                .into(),
        )
        .into());
    }
    Ok(checked)
}

/// The wrapping key a wrapped record names, and its blob.
fn wrapped_parts<'a>(
    u: &'a Unpacked,
    k: &KeyRecord,
) -> std::result::Result<(WrappingKey, &'a [u8]), String> {
    let blob = k
        .entry
        .as_ref()
        .and_then(|e| u.files.get(e))
        .ok_or("the wrapped private key is missing")?;
    let id = k
        .wrapping_key_id
        .as_deref()
        .ok_or("the record names no wrapping key")?;
    let rec = u
        .manifest
        .wrapping_keys
        .iter()
        .find(|w| w.id == id)
        .ok_or_else(|| format!("wrapping key {id} is not in the manifest"))?;
    if rec.mechanism != wrap::MECHANISM {
        return Err(format!(
            "wrapping key {id} is for {}, not {}",
            rec.mechanism,
            wrap::MECHANISM
        ));
    }
    let value = u
        .files
        .get(&rec.entry)
        .ok_or_else(|| format!("wrapping key {id} is missing"))?;
    let wk = WrappingKey::from_bytes(value, id).map_err(|e| e.to_string())?;
    Ok((wk, blob))
}

/// The PKCS#8 DER of a `pkcs8` record, or of a `wrapped` one unwrapped in software.
fn private_der(
    u: &Unpacked,
    k: &KeyRecord,
) -> std::result::Result<crate::secret::KeyBytes, String> {
    match k.material {
        Material::Pkcs8 => k
            .entry
            .as_ref()
            .and_then(|e| u.files.get(e))
            .map(|d| zeroize::Zeroizing::new(d.to_vec()))
            .ok_or_else(|| "the private key is missing".into()),
        Material::Wrapped => {
            let (wk, blob) = wrapped_parts(u, k)?;
            wk.unwrap_pkcs8(blob).map_err(|e| e.to_string())
        }
        _ => Err("the backup holds no private key for it".into()),
    }
}

/// `backup verify`: decrypts in memory and checks everything; writes nothing.
pub fn verify(path: &Path, unlock: &Unlock, prompter: &mut dyn Prompter) -> Result<Verified> {
    let (header, plain) = open(path, unlock, prompter)?;
    let u = archive::unpack(plain, None, path)?;
    let keys_checked = check_unpacked(path, &header, &u)?;
    Ok(Verified {
        file: path.to_owned(),
        backup_id: header.backup_id,
        manifest: u.manifest,
        chain: u.chain,
        keys_checked,
    })
}

/// What `backup inspect` shows: the header (always), and the manifest when the file could be
/// opened.
#[derive(Clone, Debug, Serialize)]
pub struct Inspection {
    pub file: PathBuf,
    pub bytes: u64,
    pub header: HeaderInfo,
    /// `FILE.NAME.share` files found beside the backup.
    pub share_files: Vec<PathBuf>,
    pub contents: Option<Verified>,
}

/// `backup inspect`: the public facts without a key; the manifest (never a secret) with one.
pub fn inspect(path: &Path, unlock: &Unlock, prompter: &mut dyn Prompter) -> Result<Inspection> {
    let f = File::open(path).map_err(|e| Error::io(path, e))?;
    let bytes = f.metadata().map_err(|e| Error::io(path, e))?.len();
    let header = crypt::read_header(&mut BufReader::new(f), path)?;
    let mut share_files = Vec::new();
    if let (Some(dir), Some(name)) = (path.parent(), path.file_name()) {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let prefix = format!("{}.", name.to_string_lossy());
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.starts_with(&prefix) && n.ends_with(".share") {
                    share_files.push(path.with_file_name(n));
                }
            }
        }
        share_files.sort();
    }
    let contents = if !unlock.identities.is_empty() || !unlock.shares.is_empty() {
        Some(verify(path, unlock, prompter)?)
    } else if header.is_scrypt() {
        // A passphrase backup opens when the passphrase can be had; otherwise show the header.
        match verify(path, unlock, prompter) {
            Ok(v) => Some(v),
            Err(Error::Prompt(PromptError::NotInteractive { .. })) => None,
            Err(e) => return Err(e),
        }
    } else {
        None
    };
    Ok(Inspection {
        file: path.to_owned(),
        bytes,
        header,
        share_files,
        contents,
    })
}

// ---- restore ----------------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct RestoreRequest {
    pub file: PathBuf,
    pub unlock: Unlock,
    pub into: PathBuf,
    /// Put the private keys onto this token (a name in the restored keyward.toml, a `pkcs11:`
    /// URI, or `soft`) instead of a new software keystore.
    pub onto: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Restored {
    pub into: PathBuf,
    pub backup_id: String,
    pub head_seq: u64,
    pub head_hash: String,
    /// `key/version -> token` for each private key restored.
    pub keys_restored: Vec<String>,
    /// Keys the backup only lists (non-extractable), with how to recover them.
    pub keys_listed: Vec<String>,
    /// Where the home that was replaced (after confirmation) was moved.
    pub replaced: Option<PathBuf>,
}

/// Says what a non-empty directory holds, for the confirmation.
fn describe_home(dir: &Path) -> String {
    let mut parts = Vec::new();
    if let Ok(text) = std::fs::read(dir.join("audit.log")) {
        parts.push(format!(
            "an audit log of {} entries",
            text.iter().filter(|&&b| b == b'\n').count()
        ));
    }
    if let Ok(rd) = std::fs::read_dir(dir.join("soft").join("keys")) {
        let n = rd
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".age"))
            .count();
        parts.push(format!("{n} software key(s)"));
    }
    if dir.join("keyward.toml").exists() {
        parts.push("keyward.toml".into());
    }
    let others = std::fs::read_dir(dir).map(|r| r.count()).unwrap_or(0);
    if parts.is_empty() {
        format!("{others} file(s)")
    } else {
        parts.join(", ")
    }
}

fn is_empty_dir(dir: &Path) -> Result<bool> {
    match std::fs::read_dir(dir) {
        Ok(mut rd) => Ok(rd.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => Err(BackupError::Invalid(
            format!("{} is a file, not a home directory", dir.display()),
        )
        .into()),
        Err(e) => Err(Error::io(dir, e)),
    }
}

/// Decrypts, checks and writes a restored home into `dir` (an empty private directory), with
/// its keys on `onto` (else a new software keystore whose passphrase is `passphrase`, or asked).
fn restore_into(
    file: &Path,
    unlock: &Unlock,
    dir: &Path,
    final_dir: &Path,
    (onto, placement): (Option<&str>, &crate::token::GenerateOptions),
    passphrase: Option<Pin>,
    prompter: &mut dyn Prompter,
) -> Result<(Verified, Vec<String>, Vec<String>)> {
    let (header, plain) = open(file, unlock, prompter)?;
    let log_path = dir.join(archive::AUDIT_LOG);
    let out = create_private_file(&log_path)?;
    let mut w = PipeWriter::new(DurableFile::new(out));
    let u = archive::unpack(plain, Some((&mut w, &log_path)), file)?;
    w.finish()
        .and_then(DurableFile::finish)
        .map_err(|e| Error::io(&log_path, e))?;
    let keys_checked = check_unpacked(file, &header, &u)?;
    for name in [archive::CHECKPOINTS, archive::CONFIG, archive::STATE] {
        if let Some(b) = u.files.get(name) {
            let p = dir.join(name);
            fsutil::write_atomic(&p, b, true).map_err(|e| Error::io(&p, e))?;
        }
    }
    let backup_id = header.backup_id.clone();
    let audit = AuditLog::new(log_path.clone());
    let mut restored = Vec::new();
    let mut listed = Vec::new();
    // What goes onto a token: software keys always; wrapped PKCS#11 keys only onto a token
    // named with --onto (a hardware key does not silently become a software one).
    let mut with_keys: Vec<&KeyRecord> = Vec::new();
    for k in &u.manifest.keys {
        match (&k.material, onto) {
            (Material::Pkcs8, _) | (Material::Wrapped, Some(_)) => with_keys.push(k),
            (Material::Wrapped, None) => listed.push(format!(
                "{}: wrapped in this backup (wrapping key {}); not restored without a token: restore onto a PKCS#11 token with --onto TOKEN (C_UnwrapKey)",
                k.name(),
                k.wrapping_key_id.as_deref().unwrap_or("?")
            )),
            (Material::NotExtractable, Some(target)) => listed.push(format!(
                "{}: cannot be restored onto {target}: the backup holds its public key only. {}",
                k.name(),
                k.recovery
            )),
            _ => listed.push(format!("{}: {}", k.name(), k.recovery)),
        }
    }
    if placement.slot.is_some() && with_keys.len() > 1 {
        return Err(BackupError::Invalid(format!(
            "--slot names one slot, and the backup has {} keys to restore; leave it out (each key gets a free slot)",
            with_keys.len()
        ))
        .into());
    }
    if !with_keys.is_empty() {
        let target = onto.unwrap_or(SOFT_TOKEN_NAME);
        let kw = Keyward::open(Home::at(dir))?;
        let mut t = if target == SOFT_TOKEN_NAME {
            let mut soft = SoftToken::open(dir);
            let pin = match passphrase {
                Some(p) => p,
                None => prompter.secret(&SecretRequest {
                    kind: SecretKind::NewPassphrase,
                    token: SOFT_TOKEN_NAME,
                    info: None,
                })?,
            };
            soft.initialize(&pin)?;
            audit.append(
                Event::KeystoreCreated {
                    token: SOFT_TOKEN_NAME.into(),
                },
                Outcome::Ok,
                Some(format!("new keystore for the keys of backup {backup_id}")),
            )?;
            crate::service::OpenToken {
                name: SOFT_TOKEN_NAME.into(),
                token: Box::new(soft),
            }
        } else {
            let mut t = kw.open_token(target)?;
            kw.login(&mut t, prompter)?;
            t
        };
        let kind = t.info()?.kind;
        // The software keystore's serial is its directory: the final one, not the temporary.
        let serial = if target == SOFT_TOKEN_NAME {
            final_dir.join("soft").display().to_string()
        } else {
            t.info()?.serial
        };
        let mut imported: Vec<ObjectId> = Vec::new();
        let result = (|| -> Result<()> {
            for k in &with_keys {
                let name = k.name();
                let failed = |why: String| Error::Other(format!("{name}: {why}"));
                let pk = PublicKey::from_pem(&k.public_key)?;
                // A key keeps its object id where it can (same software keystore layout);
                // elsewhere the token gives a fresh one (a PIV token: a free slot).
                let object_id = if target == SOFT_TOKEN_NAME {
                    ObjectId(k.object_id.clone())
                } else {
                    // A YubiKey's slot and policies (taken by each import, so set each time).
                    t.token.set_generate_options(placement)?;
                    let mut taken = kw.taken_object_ids(&t.name)?;
                    taken.extend(imported.iter().cloned());
                    t.token.new_object_id(&taken)?
                };
                let request = GenerateRequest {
                    label: k.label.clone(),
                    object_id: object_id.clone(),
                    algorithm: k.algorithm,
                };
                let unwrap_on_token = k.material == Material::Wrapped && kind == TokenKind::Pkcs11;
                let stored = if unwrap_on_token {
                    let (wk, blob) = wrapped_parts(&u, k).map_err(failed)?;
                    t.token.unwrap_key(&request, &wk, blob, &pk)
                } else {
                    let der = private_der(&u, k).map_err(failed)?;
                    t.token.import_key(&request, &der)
                };
                let stored = match stored {
                    Ok(s) => s,
                    Err(e) => {
                        return Err(failed(format!("cannot be put onto {}: {e}", t.name)));
                    }
                };
                imported.push(object_id.clone());
                if stored.public_key.key_id() != k.key_id {
                    return Err(Error::Other(format!(
                        "{name} came back from {target} with another public key"
                    )));
                }
                // On a PKCS#11 token the private half was built by the token: it must sign
                // what the original public key verifies.
                if kind == TokenKind::Pkcs11 {
                    let probe = format!("keyward restore check {} {}", backup_id, k.key_id);
                    let sig = t.token.sign(&object_id, probe.as_bytes())?;
                    if !pk.verify(probe.as_bytes(), &sig) {
                        return Err(failed(format!(
                            "the key on {} does not sign as its public key says",
                            t.name
                        )));
                    }
                }
                let wrapping_key_id = (k.material == Material::Wrapped)
                    .then(|| k.wrapping_key_id.clone())
                    .flatten();
                if let (Some(key), Some(version)) = (&k.key, k.version) {
                    audit.append(
                        Event::KeyRestored {
                            key: key.clone(),
                            version,
                            token: t.name.clone(),
                            token_serial: serial.clone(),
                            object_id: object_id.0.clone(),
                            key_id: k.key_id.clone(),
                            backup_id: backup_id.clone(),
                            wrapping_key_id,
                            wrappable: unwrap_on_token,
                        },
                        Outcome::Ok,
                        None,
                    )?;
                }
                restored.push(format!(
                    "{name} -> {}{}",
                    t.name,
                    match (k.material == Material::Wrapped, unwrap_on_token) {
                        (true, true) => " (C_UnwrapKey; wrappable there)",
                        (true, false) => " (unwrapped in software, imported)",
                        _ => "",
                    }
                ));
            }
            Ok(())
        })();
        if let Err(e) = result {
            // Leave no key on a token that the new home's log does not record.
            if target != SOFT_TOKEN_NAME {
                for id in &imported {
                    let _ = t.token.destroy(id);
                }
            }
            return Err(e);
        }
    }
    audit.append(
        Event::BackupRestored {
            backup_id: backup_id.clone(),
            head_seq: u.manifest.audit.seq,
            head_hash: u.manifest.audit.hash.clone(),
            keys_restored: restored.len() as u32,
        },
        Outcome::Ok,
        Some(format!("restored from {}", file.display())),
    )?;
    Ok((
        Verified {
            file: file.to_owned(),
            backup_id,
            manifest: u.manifest,
            chain: u.chain,
            keys_checked,
        },
        restored,
        listed,
    ))
}

/// `backup restore --into NEW_HOME [--onto TOKEN]`. Refuses a non-empty `into` unless the
/// prompter confirms (the old home is then moved aside, not deleted).
pub fn restore(req: &RestoreRequest, prompter: &mut dyn Prompter) -> Result<Restored> {
    restore_with(req, &crate::token::GenerateOptions::default(), prompter)
}

/// [`restore`] onto a YubiKey with a placement for the imported keys: a slot (one key only),
/// PIN and touch policies. Other tokens take only the default placement.
pub fn restore_with(
    req: &RestoreRequest,
    placement: &crate::token::GenerateOptions,
    prompter: &mut dyn Prompter,
) -> Result<Restored> {
    if !placement.is_default() && req.onto.is_none() {
        return Err(BackupError::Invalid(
            "--slot, --pin-policy and --touch-policy place keys on a YubiKey: name it with --onto yubikey:SERIAL".into(),
        )
        .into());
    }
    let into = &req.into;
    let mut replace = false;
    if !is_empty_dir(into)? {
        let what = format!(
            "replace the keyward home {} ({}) with the backup's; the current one is moved aside to {}.replaced-<time>",
            into.display(),
            describe_home(into),
            into.display()
        );
        match prompter.confirm(&Confirm::Destructive { what: what.clone() }) {
            Ok(true) => replace = true,
            Ok(false) => return Err(Error::Prompt(PromptError::Cancelled)),
            Err(PromptError::NotInteractive { hint, .. }) => {
                return Err(BackupError::Invalid(format!(
                    "refusing to {what} without a confirmation: {hint}"
                ))
                .into())
            }
            Err(e) => return Err(e.into()),
        }
    }
    let mut tmp = Temp::beside(into, "restore", true)?;
    let (verified, keys_restored, keys_listed) = restore_into(
        &req.file,
        &req.unlock,
        &tmp.path,
        into,
        (req.onto.as_deref(), placement),
        None,
        prompter,
    )?;
    let mut replaced = None;
    if replace {
        let stamp = time::OffsetDateTime::now_utc().unix_timestamp();
        let aside = PathBuf::from(format!("{}.replaced-{stamp}", into.display()));
        std::fs::rename(into, &aside).map_err(|e| Error::io(into, e))?;
        replaced = Some(aside);
    } else if into.exists() {
        // An empty directory: rename over it.
        std::fs::remove_dir(into).map_err(|e| Error::io(into, e))?;
    }
    std::fs::rename(&tmp.path, into).map_err(|e| Error::io(into, e))?;
    tmp.keep = true;
    if let Some(parent) = into.parent().filter(|p| !p.as_os_str().is_empty()) {
        let _ = fsutil::sync_dir(parent);
    }
    Ok(Restored {
        into: into.clone(),
        backup_id: verified.backup_id,
        head_seq: verified.manifest.audit.seq,
        head_hash: verified.manifest.audit.hash,
        keys_restored,
        keys_listed,
        replaced,
    })
}

// ---- drill ------------------------------------------------------------------------------------

#[derive(Clone, Debug, Serialize)]
pub struct DrillReport {
    pub backup_id: String,
    pub head_seq: u64,
    pub head_hash: String,
    pub live_head_seq: u64,
    pub keys_checked: u32,
    /// What does not match (the drill fails when this is not empty).
    pub differences: Vec<String>,
    /// What changed legitimately since the backup, and keys only listed.
    pub notes: Vec<String>,
}

impl DrillReport {
    pub fn passed(&self) -> bool {
        self.differences.is_empty()
    }
}

/// Whether the live log has entry `seq` with `hash`.
fn live_has(log: &Path, seq: u64, hash: &str) -> Result<bool> {
    if seq == 0 {
        return Ok(hash == GENESIS);
    }
    let f = File::open(log).map_err(|e| Error::io(log, e))?;
    let prefix = format!("{{\"seq\":{seq},");
    let mut r = BufReader::with_capacity(1 << 20, f);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = std::io::BufRead::read_until(&mut r, b'\n', &mut line)
            .map_err(|e| Error::io(log, e))?;
        if n == 0 {
            return Ok(false);
        }
        if line.starts_with(prefix.as_bytes()) {
            let body = line.strip_suffix(b"\n").unwrap_or(&line);
            return Ok(match crate::audit::check_line(body) {
                Ok((_, _, h)) => h == hash.as_bytes(),
                Err(_) => false,
            });
        }
    }
}

/// `backup drill`: restores into a scratch home, compares it with the live home, signs with
/// every restored private key and verifies with the live public key, and records the drill in
/// the live log (refused if it cannot be recorded).
pub fn drill(
    kw: &Keyward,
    file: &Path,
    unlock: &Unlock,
    prompter: &mut dyn Prompter,
) -> Result<DrillReport> {
    let scratch_parent = std::env::temp_dir();
    let scratch = Temp::beside(&scratch_parent.join("keyward-drill"), "scratch", true)?;
    // The scratch keystore gets a random passphrase nobody sees; it is deleted afterwards.
    let pass = Pin::new(hex::encode(rand::random::<[u8; 24]>()));
    let pass2 = Pin::new(pass.expose().to_owned());
    let (verified, _, _) = restore_into(
        file,
        unlock,
        &scratch.path,
        &scratch.path,
        (None, &crate::token::GenerateOptions::default()),
        Some(pass),
        prompter,
    )?;
    let m = &verified.manifest;
    let mut differences = Vec::new();
    let mut notes = Vec::new();
    let live_home_id = home_id(&kw.home().audit_log())?;
    if live_home_id != m.home_id {
        differences.push(format!(
            "the backup is of another home (home id {}…, this home {}…)",
            m.home_id.get(..12).unwrap_or(""),
            live_home_id.get(..12).unwrap_or("")
        ));
    }
    let live_head = kw.audit().head()?;
    if !live_has(&kw.home().audit_log(), m.audit.seq, &m.audit.hash)? {
        differences.push(format!(
            "the live audit log does not have the backup's head (entry {} {}…): one of them was rewritten",
            m.audit.seq,
            m.audit.hash.get(..12).unwrap_or("")
        ));
    } else if live_head.seq > m.audit.seq {
        notes.push(format!(
            "the live log has {} more entry(ies) than the backup",
            live_head.seq - m.audit.seq
        ));
    }
    let live = kw.registry()?;
    let restored = Keyward::open(Home::at(&scratch.path))?.registry()?;
    for v in restored.versions() {
        match live.version(&v.key, v.version) {
            None => differences.push(format!(
                "{} is in the backup but not in the live log",
                v.name()
            )),
            Some(l) if l.key_id != v.key_id => differences.push(format!(
                "{} has another public key in the live log",
                v.name()
            )),
            Some(l) if l.state != v.state => notes.push(format!(
                "{} is {} now, {} in the backup",
                v.name(),
                l.state,
                v.state
            )),
            Some(_) => {}
        }
    }
    for l in live.versions() {
        if restored.version(&l.key, l.version).is_none() {
            notes.push(format!(
                "{} was created after the backup: back it up",
                l.name()
            ));
        }
    }
    // Every restored private key signs, and the live public key verifies it.
    let mut keys_checked = 0u32;
    let mut soft = SoftToken::open(&scratch.path);
    let with_keys: Vec<&KeyRecord> = m
        .keys
        .iter()
        .filter(|k| k.material == Material::Pkcs8)
        .collect();
    if !with_keys.is_empty() {
        soft.login(&pass2)?;
    }
    for k in with_keys {
        let probe = format!("keyward backup drill {}", verified.backup_id);
        let sig = soft.sign(&ObjectId(k.object_id.clone()), probe.as_bytes());
        let live_pk = match (&k.key, k.version) {
            (Some(key), Some(ver)) => live.version(key, ver).map(|v| v.public_key.clone()),
            _ => Some(k.public_key.clone()),
        };
        match (sig, live_pk.map(|p| PublicKey::from_pem(&p))) {
            (Ok(sig), Some(Ok(pk))) if pk.verify(probe.as_bytes(), &sig) => keys_checked += 1,
            (Err(e), _) => {
                differences.push(format!("{}: the restored key does not sign: {e}", k.name()))
            }
            (_, None) => differences.push(format!("{}: not in the live log", k.name())),
            _ => differences.push(format!(
                "{}: a signature by the restored key does not verify with the live public key",
                k.name()
            )),
        }
    }
    for k in &m.keys {
        match k.material {
            Material::NotExtractable => notes.push(format!("{}: {}", k.name(), k.recovery)),
            Material::Wrapped => notes.push(format!(
                "{}: wrapped in the backup; the blob opens with wrapping key {} and signs as its public key (restore it onto a token with --onto)",
                k.name(),
                k.wrapping_key_id.as_deref().unwrap_or("?")
            )),
            _ => {}
        }
    }
    drop(soft);
    drop(scratch);
    let report = DrillReport {
        backup_id: verified.backup_id.clone(),
        head_seq: m.audit.seq,
        head_hash: m.audit.hash.clone(),
        live_head_seq: live_head.seq,
        keys_checked,
        differences,
        notes,
    };
    kw.record(
        Event::BackupDrilled {
            backup_id: report.backup_id.clone(),
            head_seq: report.head_seq,
            head_hash: report.head_hash.clone(),
            keys_checked,
            differences: report.differences.len() as u32,
        },
        if report.passed() {
            Outcome::Ok
        } else {
            Outcome::Failed
        },
        (!report.passed()).then(|| report.differences.join("; ")),
    )?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fails every write after `ok` bytes, like a full disk.
    struct FullAfter {
        ok: usize,
        written: Vec<u8>,
    }

    impl Write for FullAfter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.written.len() + buf.len() > self.ok {
                return Err(std::io::Error::other("no space left on device"));
            }
            self.written.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn pipe_writer_keeps_every_byte_in_order() {
        let data: Vec<u8> = (0..5_000_003u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut w = PipeWriter::new(Vec::new());
        for chunk in data.chunks(65_552) {
            w.write_all(chunk).unwrap();
        }
        assert_eq!(w.finish().unwrap(), data);
    }

    #[test]
    fn pipe_writer_reports_a_write_error() {
        let mut w = PipeWriter::new(FullAfter {
            ok: 3 << 20,
            written: Vec::new(),
        });
        let chunk = vec![1u8; 1 << 16];
        // The error surfaces on a later write (the helper is behind) or at the latest in finish.
        let mut failed = None;
        for _ in 0..200 {
            if let Err(e) = w.write_all(&chunk) {
                failed = Some(e);
                break;
            }
        }
        let e = match failed {
            Some(e) => e,
            None => w.finish().err().unwrap(),
        };
        assert!(e.to_string().contains("no space left"), "{e}");
    }
}
