//! `Keyward`: the core service both front ends call. It checks policy, writes the audit entry,
//! talks to the token and returns plain results.

use crate::audit::checkpoint::{self, CheckpointRecord};
use crate::audit::{verify, AuditLog, Event, Outcome};
use crate::config::{Config, ConfigKind, TokenConfig};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::home::Home;
use crate::keys::{check_key_name, Registry, State, Version};
use crate::prompt::{Confirm, Prompter, SecretKind, SecretRequest};
use crate::token::pkcs11::{self, Pkcs11Token, SlotDescription, TokenSelector};
use crate::token::soft::{SoftToken, SOFT_TOKEN_NAME};
use crate::token::{
    uri, Algorithm, GenerateRequest, ObjectId, PublicKey, Token, TokenError, TokenInfo, TokenKey,
    TokenKind,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// An open token with the name keyward knows it by.
pub struct OpenToken {
    pub name: String,
    pub token: Box<dyn Token>,
}

impl OpenToken {
    pub fn info(&self) -> Result<TokenInfo> {
        Ok(self.token.info()?)
    }
}

/// A token as `token list` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct TokenEntry {
    pub name: String,
    pub kind: TokenKind,
    /// "built-in", "keyward.toml", or "discovered".
    pub source: &'static str,
    pub module: Option<String>,
    pub info: Option<TokenInfo>,
    /// Why the token could not be opened, if it could not.
    pub error: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Snapshot {
    seq: u64,
    hash: String,
    offset: u64,
    registry: Registry,
}

pub struct Keyward {
    home: Home,
    config: Config,
    audit: AuditLog,
}

impl Keyward {
    /// Opens (creating if needed) a home directory.
    pub fn open(home: Home) -> Result<Self> {
        fsutil::create_private_dir(home.dir()).map_err(|e| Error::io(home.dir(), e))?;
        let config = Config::load(&home.config()).map_err(Error::Config)?;
        let audit = AuditLog::new(home.audit_log());
        Ok(Keyward {
            home,
            config,
            audit,
        })
    }

    pub fn home(&self) -> &Home {
        &self.home
    }
    pub fn config(&self) -> &Config {
        &self.config
    }
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// Appends an audit entry; the caller refuses its operation if this fails.
    pub fn record(&self, event: Event, outcome: Outcome, detail: Option<String>) -> Result<u64> {
        Ok(self.audit.append(event, outcome, detail)?.seq)
    }

    // ---- state ----------------------------------------------------------------------------

    /// Folds the audit log into the key registry, starting from the snapshot when the snapshot
    /// still matches the log.
    pub fn registry(&self) -> Result<Registry> {
        let (mut registry, offset, base_seq) = match self.load_snapshot() {
            Some(s) => (s.registry, s.offset, s.seq),
            None => (Registry::default(), 0, 0),
        };
        let mut last = None;
        let mut folded = 0u64;
        self.audit.for_each_from(offset, |entry, pos| {
            registry.apply(&entry);
            folded += 1;
            last = Some((entry.seq, entry.hash, pos));
        })?;
        if let Some((seq, hash, pos)) = last {
            if seq != base_seq + folded {
                return Err(Error::AuditBroken(format!(
                    "entries are not numbered in sequence after entry {base_seq}; run `keyward audit verify`"
                )));
            }
            if folded >= 512 {
                let snap = Snapshot {
                    seq,
                    hash,
                    offset: pos,
                    registry: registry.clone(),
                };
                if let Ok(bytes) = serde_json::to_vec(&snap) {
                    // A cache: failing to write it costs speed, not correctness.
                    let _ = fsutil::write_atomic(&self.home.snapshot(), &bytes, true);
                }
            }
        }
        Ok(registry)
    }

    fn load_snapshot(&self) -> Option<Snapshot> {
        let bytes = std::fs::read(self.home.snapshot()).ok()?;
        let snap: Snapshot = serde_json::from_slice(&bytes).ok()?;
        // The snapshot is valid only if the log still has, at `offset`, the entry it recorded.
        let expect = format!(",\"hash\":\"{}\"}}\n", snap.hash);
        let mut f = File::open(self.home.audit_log()).ok()?;
        let start = snap.offset.checked_sub(expect.len() as u64)?;
        f.seek(SeekFrom::Start(start)).ok()?;
        let mut buf = vec![0u8; expect.len()];
        f.read_exact(&mut buf).ok()?;
        (buf == expect.as_bytes()).then_some(snap)
    }

    // ---- tokens -----------------------------------------------------------------------------

    pub fn token_names(&self) -> Vec<String> {
        let mut names = vec![SOFT_TOKEN_NAME.to_string()];
        names.extend(self.config.tokens.iter().map(|t| t.name.clone()));
        names
    }

    /// Opens a token by keyward name, or by a `pkcs11:` URI.
    pub fn open_token(&self, name: &str) -> Result<OpenToken> {
        if name == SOFT_TOKEN_NAME {
            return Ok(OpenToken {
                name: name.into(),
                token: Box::new(SoftToken::open(self.home.dir())),
            });
        }
        if name.starts_with("pkcs11:") {
            let u = uri::parse(name).map_err(Error::Invalid)?;
            let t = Pkcs11Token::open(name, &u.module, &u.selector)?;
            return Ok(OpenToken {
                name: name.into(),
                token: Box::new(t),
            });
        }
        if name == crate::token::piv::PIV_PREFIX || name.starts_with("yubikey:") {
            return self.open_yubikey(name);
        }
        let Some(tc) = self.config.token(name) else {
            return Err(Error::UnknownToken {
                name: name.into(),
                known: self.token_names().join(", "),
            });
        };
        match tc.kind {
            ConfigKind::Pkcs11 => {
                let module = tc.module.clone().unwrap_or_default();
                let selector = TokenSelector {
                    label: tc.label.clone(),
                    serial: tc.serial.clone(),
                    slot: tc.slot,
                };
                let t = Pkcs11Token::open(name, &module, &selector)?;
                Ok(OpenToken {
                    name: name.into(),
                    token: Box::new(t),
                })
            }
            ConfigKind::Piv => self.open_yubikey(name),
        }
    }

    /// Every token keyward can name: the software keystore, configured tokens, and tokens found
    /// in well-known PKCS#11 modules that keyward.toml does not name.
    pub fn list_tokens(&self) -> Vec<TokenEntry> {
        let mut out = Vec::new();
        let mut configured: Vec<(PathBuf, String)> = Vec::new();
        let mut names = vec![(SOFT_TOKEN_NAME.to_string(), "built-in", None)];
        for t in &self.config.tokens {
            if let Some(m) = &t.module {
                if let Some(l) = &t.label {
                    configured.push((m.clone(), l.clone()));
                }
            }
            names.push((
                t.name.clone(),
                "keyward.toml",
                t.module.as_ref().map(|m| m.display().to_string()),
            ));
        }
        for (name, source, module) in names {
            let (kind, info, error) = match self.open_token(&name) {
                Ok(t) => match t.token.info() {
                    Ok(i) => (i.kind, Some(i), None),
                    Err(e) => (TokenKind::Pkcs11, None, Some(e.to_string())),
                },
                Err(e) => (
                    if name == SOFT_TOKEN_NAME {
                        TokenKind::Soft
                    } else if self.config.token(&name).map(|t| &t.kind) == Some(&ConfigKind::Piv) {
                        TokenKind::Piv
                    } else {
                        TokenKind::Pkcs11
                    },
                    None,
                    Some(e.to_string()),
                ),
            };
            out.push(TokenEntry {
                name,
                kind,
                source,
                module,
                info,
                error,
            });
        }
        out.extend(self.discovered_yubikeys());
        for (_, module) in uri::WELL_KNOWN_MODULES {
            let path = Path::new(module);
            if !path.exists() {
                continue;
            }
            let Ok(slots) = pkcs11::list_slots(path) else {
                continue;
            };
            for s in slots.into_iter().filter(|s| s.initialized) {
                if configured.iter().any(|(m, l)| m == path && *l == s.label) {
                    continue;
                }
                let name = format!(
                    "pkcs11:token={};serial={}?module-path={}",
                    s.label, s.serial, module
                );
                let info = self
                    .open_token(&name)
                    .ok()
                    .and_then(|t| t.token.info().ok());
                out.push(TokenEntry {
                    name,
                    kind: TokenKind::Pkcs11,
                    source: "discovered",
                    module: Some(module.to_string()),
                    info,
                    error: None,
                });
            }
        }
        out
    }

    /// Logs in to an open token: checks the PIN status first (locked, final try), asks the
    /// prompter, records the outcome in the audit log (never the PIN).
    pub fn login(&self, t: &mut OpenToken, prompter: &mut dyn Prompter) -> Result<()> {
        if let Some(n) = prompter.notifier() {
            t.token.set_notifier(n);
        }
        if t.token.is_logged_in() {
            return Ok(());
        }
        let info = t.token.info()?;
        let login_event = |tries_left| Event::Login {
            token: t.name.clone(),
            serial: info.serial.clone(),
            tries_left,
        };
        if info.pin.locked {
            let err = TokenError::PinLocked {
                token: t.name.clone(),
            };
            self.record(
                login_event(Some(0)),
                Outcome::Refused,
                Some(err.to_string()),
            )?;
            return Err(err.into());
        }
        if info.pin.final_try || info.pin.tries_left == Some(1) {
            let ok = prompter.confirm(&Confirm::FinalPinTry {
                token: t.name.clone(),
            })?;
            if !ok {
                return Err(TokenError::FinalTryNotConfirmed {
                    token: t.name.clone(),
                }
                .into());
            }
        }
        let creating = info.kind == TokenKind::Soft && info.pin.not_initialized;
        let kind = match (info.kind, creating) {
            (TokenKind::Soft, true) => SecretKind::NewPassphrase,
            (TokenKind::Soft, false) => SecretKind::Passphrase,
            _ => SecretKind::UserPin,
        };
        let pin = prompter.secret(&SecretRequest {
            kind,
            token: &t.name,
            info: Some(&info),
        })?;
        match t.token.login(&pin) {
            Ok(()) => {
                if creating {
                    self.record(
                        Event::KeystoreCreated {
                            token: t.name.clone(),
                        },
                        Outcome::Ok,
                        None,
                    )?;
                }
                self.record(login_event(info.pin.tries_left), Outcome::Ok, None)?;
                if info.kind == TokenKind::Piv {
                    // Loud, every time: a factory-default PIN or management key protects nothing.
                    for w in t.token.info().map(|i| i.warnings).unwrap_or_default() {
                        prompter.notify(&format!("WARNING: {} {w}", t.name));
                    }
                }
                Ok(())
            }
            Err(e) => {
                let tries = match &e {
                    TokenError::PinIncorrect { tries_left, .. } => *tries_left,
                    TokenError::PinLocked { .. } => Some(0),
                    _ => None,
                };
                self.record(login_event(tries), Outcome::Failed, Some(e.to_string()))?;
                Err(e.into())
            }
        }
    }

    /// Initialises a PKCS#11 token (SO PIN, then user PIN) and registers it as `name`.
    pub fn init_pkcs11_token(
        &mut self,
        module: &Path,
        label: &str,
        name: &str,
        prompter: &mut dyn Prompter,
    ) -> Result<SlotDescription> {
        if name == SOFT_TOKEN_NAME || name.starts_with("pkcs11:") || name.is_empty() {
            return Err(Error::Invalid(format!("{name:?} cannot name a token")));
        }
        if self.config.token(name).is_some() {
            return Err(Error::Invalid(format!(
                "a token named {name:?} is already registered in {}",
                self.home.config().display()
            )));
        }
        let so_pin = prompter.secret(&SecretRequest {
            kind: SecretKind::SoPin,
            token: name,
            info: None,
        })?;
        let user_pin = prompter.secret(&SecretRequest {
            kind: SecretKind::NewUserPin,
            token: name,
            info: None,
        })?;
        if user_pin.expose().len() < 4 {
            return Err(Error::Invalid(
                "the user PIN must have at least 4 characters".into(),
            ));
        }
        // Record the intent first: if the log cannot be written, the token stays untouched.
        let module_s = module.display().to_string();
        let event = |serial: String| Event::TokenInitialized {
            token: name.into(),
            module: module_s.clone(),
            label: label.into(),
            serial,
        };
        self.record(event(String::new()), Outcome::Started, None)?;
        let slot = match pkcs11::initialize_token(module, label, &so_pin, &user_pin) {
            Ok(s) => s,
            Err(e) => {
                self.record(event(String::new()), Outcome::Failed, Some(e.to_string()))?;
                return Err(e.into());
            }
        };
        let mut config = self.config.clone();
        config.tokens.push(TokenConfig {
            name: name.into(),
            kind: ConfigKind::Pkcs11,
            module: Some(module.to_owned()),
            label: Some(label.into()),
            serial: Some(slot.serial.clone()),
            slot: None,
        });
        config.save(&self.home.config()).map_err(Error::Config)?;
        self.config = config;
        self.record(event(slot.serial.clone()), Outcome::Ok, None)?;
        Ok(slot)
    }

    // ---- keys ---------------------------------------------------------------------------------

    pub(crate) fn op_lock(&self) -> Result<File> {
        let p = self.home.dir().join("keyward.lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(|e| Error::io(&p, e))?;
        f.lock().map_err(|e| Error::io(&p, e))?;
        Ok(f)
    }

    /// Generates a new version of `key` on `token`. The version is `active`, or `pre-active`
    /// when `inactive`. The intent is logged first; if the completion cannot be logged the new
    /// key pair is destroyed again, so the token never holds a key the log does not know.
    pub fn generate(
        &self,
        key: &str,
        token_name: &str,
        algorithm: Algorithm,
        inactive: bool,
        prompter: &mut dyn Prompter,
    ) -> Result<Version> {
        check_key_name(key).map_err(Error::Invalid)?;
        let mut t = self.open_token(token_name)?;
        self.generate_on(&mut t, key, algorithm, inactive, prompter)
    }

    /// As [`Keyward::generate`], on a token the caller keeps open (a TUI worker's session);
    /// logs in through `prompter` only if the token is not logged in yet.
    pub fn generate_on(
        &self,
        t: &mut OpenToken,
        key: &str,
        algorithm: Algorithm,
        inactive: bool,
        prompter: &mut dyn Prompter,
    ) -> Result<Version> {
        check_key_name(key).map_err(Error::Invalid)?;
        let info = t.info()?;
        if !info.algorithms.contains(&algorithm) {
            return Err(TokenError::Unsupported {
                token: t.name.clone(),
                algorithm,
                why: format!(
                    "it offers {}",
                    info.algorithms
                        .iter()
                        .map(|a| a.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
            .into());
        }
        self.login(t, prompter)?;
        let _lock = self.op_lock()?;
        self.reconcile_locked()?;
        let registry = self.registry()?;
        let version = registry.next_version(key);
        let object_id = t.token.new_object_id(&self.taken_object_ids(&t.name)?)?;
        let state = if inactive {
            State::PreActive
        } else {
            State::Active
        };
        let label = format!("{key}/{version}");
        self.record(
            Event::KeyGenerating {
                key: key.into(),
                version,
                token: t.name.clone(),
                token_serial: info.serial.clone(),
                object_id: object_id.0.clone(),
                algorithm,
                state,
            },
            Outcome::Started,
            None,
        )?;
        let aborted = |reason: String| Event::KeyGenerationAborted {
            key: key.into(),
            version,
            token: t.name.clone(),
            object_id: object_id.0.clone(),
            reason,
            interrupted: false,
        };
        let generated = match t.token.generate(&GenerateRequest {
            label,
            object_id: object_id.clone(),
            algorithm,
        }) {
            Ok(k) => k,
            Err(e) => {
                self.record(aborted(e.to_string()), Outcome::Failed, None)?;
                return Err(e.into());
            }
        };
        let event = generated_event(key, version, &t.name, &info.serial, &generated, state);
        if let Err(e) = self.record(event, Outcome::Ok, None) {
            // Fail closed: a key the log does not record must not stay on the token.
            let destroyed = t.token.destroy(&object_id);
            let _ = self.record(
                aborted("the audit log could not record the new key".into()),
                Outcome::Failed,
                None,
            );
            return Err(match destroyed {
                Ok(()) => e,
                Err(d) => Error::Other(format!(
                    "{e}; and destroying the unrecorded key {object_id} on {} failed: {d}",
                    t.name
                )),
            });
        }
        self.registry()?
            .version(key, version)
            .cloned()
            .ok_or_else(|| Error::Other("the new version is missing from the log".into()))
    }

    /// Finishes generations that a crash interrupted: adopts a key that reached the token,
    /// records the abort of one that did not. Skips when another keyward holds the lock.
    pub fn reconcile(&self) -> Result<Vec<String>> {
        let p = self.home.dir().join("keyward.lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(|e| Error::io(&p, e))?;
        match f.try_lock() {
            Ok(()) => self.reconcile_locked(),
            Err(_) => Ok(Vec::new()),
        }
    }

    fn reconcile_locked(&self) -> Result<Vec<String>> {
        let registry = self.registry()?;
        let mut done = Vec::new();
        let candidates = registry
            .pending
            .iter()
            .map(|p| (p, true))
            .chain(registry.interrupted.iter().map(|p| (p, false)));
        let mut listed: std::collections::BTreeMap<String, Option<(String, Vec<TokenKey>)>> =
            Default::default();
        for (p, pending) in candidates {
            let keys = listed.entry(p.token.clone()).or_insert_with(|| {
                let mut t = self.open_token(&p.token).ok()?;
                let serial = t.token.info().map(|i| i.serial).unwrap_or_default();
                t.token.list_keys().ok().map(|k| (serial, k))
            });
            // An unreachable token: decide later, when it is back.
            let Some((serial, keys)) = keys else {
                continue;
            };
            match keys.iter().find(|k| k.object_id.0 == p.object_id) {
                Some(k) => {
                    let ev = generated_event(&p.key, p.version, &p.token, serial, k, p.state);
                    self.record(
                        ev,
                        Outcome::Ok,
                        Some("recovered: keyward was interrupted; the token completed the generation".into()),
                    )?;
                    done.push(format!("{}/{}: recovered", p.key, p.version));
                }
                None if pending => {
                    self.record(
                        Event::KeyGenerationAborted {
                            key: p.key.clone(),
                            version: p.version,
                            token: p.token.clone(),
                            object_id: p.object_id.clone(),
                            reason: "interrupted before the token created the key".into(),
                            interrupted: true,
                        },
                        Outcome::Failed,
                        None,
                    )?;
                    done.push(format!("{}/{}: aborted", p.key, p.version));
                }
                None => {}
            }
        }
        Ok(done)
    }

    fn find_version(&self, registry: &Registry, key: &str, version: u32) -> Result<Version> {
        if !registry.keys.contains_key(key) {
            return Err(Error::UnknownKey { name: key.into() });
        }
        registry
            .version(key, version)
            .cloned()
            .ok_or(Error::UnknownVersion {
                key: key.into(),
                version,
            })
    }

    /// Moves a version to another state, if SP 800-57 allows it. `destroyed` goes through
    /// [`Keyward::destroy`], which removes the private key from its token.
    pub fn set_state(
        &self,
        key: &str,
        version: u32,
        to: State,
        reason: Option<String>,
    ) -> Result<Version> {
        self.transition(key, version, to, reason, None)
    }

    /// `key compromise`: the version must not be trusted for signatures made since `since`.
    pub fn compromise(
        &self,
        key: &str,
        version: u32,
        since: &str,
        reason: String,
    ) -> Result<Version> {
        crate::keys::parse_time(since).map_err(Error::Invalid)?;
        self.transition(
            key,
            version,
            State::Compromised,
            Some(reason),
            Some(since.into()),
        )
    }

    fn check_transition(&self, v: &Version, to: State) -> Result<()> {
        if v.state.can_become(to) {
            return Ok(());
        }
        let legal = v.state.legal_targets();
        Err(Error::InvalidTransition {
            key: v.key.clone(),
            version: v.version,
            from: v.state,
            to,
            legal: if legal.is_empty() {
                "none: it is final".into()
            } else {
                legal
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        })
    }

    fn transition(
        &self,
        key: &str,
        version: u32,
        to: State,
        reason: Option<String>,
        since: Option<String>,
    ) -> Result<Version> {
        if to == State::Destroyed {
            return Err(Error::Invalid(format!(
                "use `keyward key destroy {key}/{version}`: it removes the private key from its token"
            )));
        }
        let _lock = self.op_lock()?;
        let registry = self.registry()?;
        let v = self.find_version(&registry, key, version)?;
        self.check_transition(&v, to)?;
        self.record(
            Event::StateChanged {
                key: key.into(),
                version,
                from: v.state,
                to,
                reason,
                since,
            },
            Outcome::Ok,
            None,
        )?;
        self.find_version(&self.registry()?, key, version)
    }

    /// Destroys the private key of a version on its token and marks the version `destroyed`.
    /// Asks for a confirmation naming what is lost. The public key stays in the log.
    pub fn destroy(
        &self,
        key: &str,
        version: u32,
        reason: Option<String>,
        prompter: &mut dyn Prompter,
    ) -> Result<Version> {
        let registry = self.registry()?;
        let v = self.find_version(&registry, key, version)?;
        self.check_transition(&v, State::Destroyed)?;
        let copies = if v.copies.is_empty() {
            String::new()
        } else {
            format!(
                ", and its copies on {}",
                v.copies
                    .iter()
                    .map(|c| format!("{} (slot {})", c.token, c.object_id))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let what = format!(
            "destroy the private key of {}/{} (key id {}) on token {}{copies}; signatures can no longer be made with it, and it cannot be recovered from the token",
            v.key, v.version, &v.key_id[..16], v.token
        );
        if !prompter.confirm(&Confirm::Destructive { what })? {
            return Err(crate::prompt::PromptError::Cancelled.into());
        }
        // Every copy's token must be here: a destroyed version leaves no key behind.
        let mut copy_tokens = Vec::new();
        for c in &v.copies {
            let mut t = self.open_token(&c.token).map_err(|e| {
                Error::Invalid(format!(
                    "{}/{} has a copy on {} (slot {}), which keyward must destroy too: {e}",
                    v.key, v.version, c.token, c.object_id
                ))
            })?;
            self.login(&mut t, prompter)?;
            copy_tokens.push((c.clone(), t));
        }
        let mut t = self.open_token(&v.token)?;
        self.login(&mut t, prompter)?;
        let _lock = self.op_lock()?;
        for (c, mut ct) in copy_tokens {
            let event = Event::KeyCopyRemoved {
                key: v.key.clone(),
                version: v.version,
                key_id: v.key_id.clone(),
                token: c.token.clone(),
                token_serial: c.token_serial.clone(),
                object_id: c.object_id.clone(),
            };
            self.record(event.clone(), Outcome::Started, None)?;
            match ct.token.destroy(&ObjectId(c.object_id.clone())) {
                Ok(()) | Err(TokenError::KeyNotFound { .. }) => {
                    self.record(event, Outcome::Ok, None)?;
                }
                Err(e) => {
                    self.record(event, Outcome::Failed, Some(e.to_string()))?;
                    return Err(e.into());
                }
            }
        }
        let event = |outcome_reason: Option<String>| Event::StateChanged {
            key: key.into(),
            version,
            from: v.state,
            to: State::Destroyed,
            reason: outcome_reason,
            since: None,
        };
        // Intent first: a destruction the log cannot record does not happen.
        self.record(event(reason.clone()), Outcome::Started, None)?;
        match t.token.destroy(&ObjectId(v.object_id.clone())) {
            Ok(()) | Err(TokenError::KeyNotFound { .. }) => {}
            Err(e) => {
                self.record(event(reason), Outcome::Failed, Some(e.to_string()))?;
                return Err(e.into());
            }
        }
        self.record(event(reason), Outcome::Ok, None)?;
        self.find_version(&self.registry()?, key, version)
    }

    /// Sets a key's cryptoperiod policy.
    pub fn set_policy(&self, key: &str, rotate_every: u64, overlap: u64) -> Result<()> {
        check_key_name(key).map_err(Error::Invalid)?;
        if rotate_every == 0 {
            return Err(Error::Invalid(
                "--rotate-every must be longer than zero".into(),
            ));
        }
        if overlap >= rotate_every {
            return Err(Error::Invalid(
                "--overlap must be shorter than --rotate-every".into(),
            ));
        }
        self.record(
            Event::PolicySet {
                key: key.into(),
                rotate_every,
                overlap,
            },
            Outcome::Ok,
            None,
        )?;
        Ok(())
    }

    /// `key rotate`: generates the next version, active at once, on `token` (default: the
    /// token of the newest version) with `algorithm` (default: the newest version's). Every
    /// version active before stays active until the overlap (the key's policy, else
    /// `overlap` given here, else none) ends.
    pub fn rotate(
        &self,
        key: &str,
        token: Option<&str>,
        algorithm: Option<Algorithm>,
        overlap: Option<u64>,
        prompter: &mut dyn Prompter,
    ) -> Result<(Version, Vec<Version>)> {
        let registry = self.registry()?;
        let versions = registry
            .keys
            .get(key)
            .ok_or(Error::UnknownKey { name: key.into() })?;
        let newest = versions
            .values()
            .next_back()
            .ok_or(Error::UnknownKey { name: key.into() })?;
        let token = token.unwrap_or(&newest.token).to_owned();
        let algorithm = algorithm.unwrap_or(newest.algorithm);
        let old: Vec<u32> = registry
            .active_versions(key)
            .iter()
            .map(|v| v.version)
            .collect();
        let overlap = overlap
            .or(registry.policies.get(key).map(|p| p.overlap))
            .unwrap_or(0);
        let new = self.generate(key, &token, algorithm, false, prompter)?;
        let until = crate::keys::format_time(now_ts() + overlap as i64);
        if !old.is_empty() {
            self.record(
                Event::Rotated {
                    key: key.into(),
                    from: old.clone(),
                    to: new.version,
                    overlap_until: until,
                },
                Outcome::Ok,
                None,
            )?;
        }
        if overlap == 0 {
            for n in &old {
                self.transition(
                    key,
                    *n,
                    State::Deactivated,
                    Some(format!("rotated to {key}/{}", new.version)),
                    None,
                )?;
            }
        }
        let registry = self.registry()?;
        let olds = old
            .iter()
            .filter_map(|n| registry.version(key, *n).cloned())
            .collect();
        Ok((new, olds))
    }

    /// Deactivates every version whose rotation overlap has ended (as audit events);
    /// returns what it did.
    pub fn end_overlaps(&self) -> Result<Vec<Version>> {
        let registry = self.registry()?;
        let now = now_ts();
        let mut done = Vec::new();
        for d in registry.due(now) {
            if d.action == "deactivate" && d.status == "overdue" {
                done.push(self.transition(
                    &d.key,
                    d.version,
                    State::Deactivated,
                    Some(format!("rotation overlap ended at {}", d.due)),
                    None,
                )?);
            }
        }
        Ok(done)
    }

    /// A version by `NAME/VERSION`, or the newest active one (else the newest) by `NAME`.
    pub fn resolve(&self, key: &str, version: Option<u32>) -> Result<Version> {
        let registry = self.registry()?;
        match version {
            Some(v) => self.find_version(&registry, key, v),
            None => {
                let versions = registry
                    .keys
                    .get(key)
                    .ok_or(Error::UnknownKey { name: key.into() })?;
                registry
                    .newest_active(key)
                    .or_else(|| versions.values().next_back())
                    .cloned()
                    .ok_or(Error::UnknownKey { name: key.into() })
            }
        }
    }

    /// The public key of a version, recording the read.
    pub fn public_key(&self, key: &str, version: Option<u32>) -> Result<(Version, PublicKey)> {
        let v = self.resolve(key, version)?;
        let pk = PublicKey::from_pem(&v.public_key)?;
        self.record(
            Event::PublicKeyRead {
                key: v.key.clone(),
                version: v.version,
                key_id: v.key_id.clone(),
            },
            Outcome::Ok,
            None,
        )?;
        Ok((v, pk))
    }

    /// Opens the token of the newest active version of `key` (or the given version) and logs
    /// in, ready to sign many times with one PIN entry.
    pub fn signer(
        &self,
        key: &str,
        version: Option<u32>,
        prompter: &mut dyn Prompter,
    ) -> Result<Signer<'_>> {
        let registry = self.registry()?;
        let v = match version {
            Some(n) => self.find_version(&registry, key, n)?,
            None => match registry.newest_active(key) {
                Some(v) => v.clone(),
                None => {
                    let versions = registry
                        .keys
                        .get(key)
                        .ok_or(Error::UnknownKey { name: key.into() })?;
                    return Err(Error::NoActiveVersion {
                        key: key.into(),
                        states: versions
                            .values()
                            .map(|v| format!("{}/{} {}", v.key, v.version, v.state))
                            .collect::<Vec<_>>()
                            .join(", "),
                    });
                }
            },
        };
        if v.state != State::Active {
            let err = Error::NotActive {
                key: v.key.clone(),
                version: v.version,
                state: v.state,
            };
            self.record(
                Event::Signed {
                    key: v.key.clone(),
                    version: v.version,
                    key_id: v.key_id.clone(),
                    data_sha256: String::new(),
                    subject: None,
                },
                Outcome::Refused,
                Some(err.to_string()),
            )?;
            return Err(err);
        }
        let t = self.open_token(&v.token)?;
        self.signer_on(t, v, prompter)
    }

    /// As [`Keyward::signer`], signing on `token` when given: the version's own token or a
    /// token holding a copy of its key (`token piv import`).
    pub fn signer_via(
        &self,
        key: &str,
        version: Option<u32>,
        token: Option<&str>,
        prompter: &mut dyn Prompter,
    ) -> Result<Signer<'_>> {
        let Some(token) = token else {
            return self.signer(key, version, prompter);
        };
        let v = match version {
            Some(n) => self.resolve(key, Some(n))?,
            None => match self.registry()?.newest_active(key) {
                Some(v) => v.clone(),
                // `signer` says precisely why there is none (and records a refusal).
                None => return self.signer(key, None, prompter),
            },
        };
        if v.state != State::Active {
            // `signer` records the refusal and says why.
            return self.signer(key, Some(v.version), prompter);
        }
        let holder = self.holder(&v, token)?;
        let t = self.open_token(&holder.token)?;
        self.signer_on(t, v, prompter)
    }

    /// A signer over a token the caller already opened (and maybe logged in to); `version`
    /// must be active and live on that token.
    pub fn signer_on(
        &self,
        mut t: OpenToken,
        version: Version,
        prompter: &mut dyn Prompter,
    ) -> Result<Signer<'_>> {
        if version.state != State::Active {
            return Err(Error::NotActive {
                key: version.key.clone(),
                version: version.version,
                state: version.state,
            });
        }
        let Some(holder) = version.holder_on(&t.name) else {
            return Err(Error::Invalid(format!(
                "{}/{} lives on {}, not on {}",
                version.key,
                version.version,
                version
                    .holders()
                    .iter()
                    .map(|h| h.token.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                t.name
            )));
        };
        self.login(&mut t, prompter)?;
        Ok(Signer {
            kw: self,
            token: t,
            version,
            holder,
        })
    }

    /// Signs `data` with the newest active version of `key`; the signature is returned only
    /// once the audit log records it.
    pub fn sign(
        &self,
        key: &str,
        version: Option<u32>,
        data: &[u8],
        subject: Option<String>,
        prompter: &mut dyn Prompter,
    ) -> Result<(Version, Vec<u8>)> {
        self.sign_via(key, version, None, data, subject, prompter)
    }

    /// As [`Keyward::sign`], on `token` when given (the version's own token or a copy's).
    pub fn sign_via(
        &self,
        key: &str,
        version: Option<u32>,
        token: Option<&str>,
        data: &[u8],
        subject: Option<String>,
        prompter: &mut dyn Prompter,
    ) -> Result<(Version, Vec<u8>)> {
        self.end_overlaps()?;
        let mut signer = self.signer_via(key, version, token, prompter)?;
        let sig = signer.sign(data, subject)?;
        Ok((signer.version.clone(), sig))
    }

    // ---- audit ----------------------------------------------------------------------------------

    /// Verifies the chain and every checkpoint (the home's, plus `extra`).
    pub fn verify_audit(&self, extra: &[CheckpointRecord]) -> Result<verify::Report> {
        let mut cps = checkpoint::load(&self.home.checkpoints()).map_err(Error::Config)?;
        cps.extend_from_slice(extra);
        Ok(verify::verify(self.audit.path(), &cps)?)
    }

    /// Signs a checkpoint of the current head with `key` (else `audit.checkpoint_key`).
    pub fn checkpoint(
        &self,
        key: Option<&str>,
        prompter: &mut dyn Prompter,
    ) -> Result<CheckpointRecord> {
        let key = key
            .map(str::to_owned)
            .or_else(|| self.config.audit.checkpoint_key.clone())
            .ok_or_else(|| {
                Error::Invalid(
                    "no checkpoint key: pass --key NAME or set [audit] checkpoint_key in keyward.toml"
                        .into(),
                )
            })?;
        let report = self.verify_audit(&[])?;
        if let Some(p) = report.problem {
            return Err(Error::AuditBroken(p.message));
        }
        let mut signer = self.signer(&key, None, prompter)?;
        let head = self.audit.head()?;
        let msg = checkpoint::message(head.seq, &head.hash);
        let sig = signer
            .token
            .token
            .sign(&ObjectId(signer.version.object_id.clone()), &msg)?;
        use base64::Engine;
        let v = &signer.version;
        let record = CheckpointRecord {
            seq: head.seq,
            hash: head.hash.clone(),
            time: crate::audit::now_rfc3339(),
            key: v.key.clone(),
            version: v.version,
            key_id: v.key_id.clone(),
            public_key: v.public_key.clone(),
            signature: base64::engine::general_purpose::STANDARD.encode(sig),
        };
        self.record(
            Event::Checkpoint {
                head_seq: record.seq,
                head_hash: record.hash.clone(),
                key: record.key.clone(),
                version: record.version,
                key_id: record.key_id.clone(),
                signature: record.signature.clone(),
            },
            Outcome::Ok,
            None,
        )?;
        let path = self.home.checkpoints();
        checkpoint::append(&path, &record).map_err(|e| Error::io(&path, e))?;
        Ok(record)
    }
}

/// Now, as a Unix timestamp.
pub fn now_ts() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn generated_event(
    key: &str,
    version: u32,
    token: &str,
    serial: &str,
    k: &TokenKey,
    state: State,
) -> Event {
    Event::KeyGenerated {
        key: key.into(),
        version,
        token: token.into(),
        token_serial: serial.into(),
        object_id: k.object_id.0.clone(),
        algorithm: k.algorithm,
        key_id: k.public_key.key_id(),
        public_key: k.public_key.to_pem(),
        state,
    }
}

/// A logged-in token and an active version: signs many times, recording each signature.
pub struct Signer<'a> {
    kw: &'a Keyward,
    /// The open, logged-in token; get it back with [`Signer::into_token`].
    token: OpenToken,
    version: Version,
    /// Where the key is used: the version's own token or a copy.
    holder: crate::keys::Holder,
}

impl Signer<'_> {
    pub fn version(&self) -> &Version {
        &self.version
    }

    /// The token and object the signatures come from (a copy's when `holder().copy`).
    pub fn holder(&self) -> &crate::keys::Holder {
        &self.holder
    }

    pub fn token_info(&self) -> Result<TokenInfo> {
        self.token.info()
    }

    /// Signs without recording: the caller must record the signature (e.g. an image
    /// signature, recorded once pushed) before reporting success.
    pub fn sign_unrecorded(&mut self, data: &[u8]) -> Result<Vec<u8>> {
        let oid = ObjectId(self.holder.object_id.clone());
        Ok(self.token.token.sign(&oid, data)?)
    }

    /// Signs and records; the signature is returned only once recorded.
    pub fn sign(&mut self, data: &[u8], subject: Option<String>) -> Result<Vec<u8>> {
        let data_sha256 = hex::encode(Sha256::digest(data));
        let (key, version, key_id) = (
            self.version.key.clone(),
            self.version.version,
            self.version.key_id.clone(),
        );
        let event = move |subject| Event::Signed {
            key,
            version,
            key_id,
            data_sha256,
            subject,
        };
        // A signature from a copy says so in the entry's detail.
        let via = self.holder.copy.then(|| {
            format!(
                "with the copy on {} (slot {})",
                self.holder.token, self.holder.object_id
            )
        });
        match self.sign_unrecorded(data) {
            Ok(sig) => {
                self.kw.record(event(subject), Outcome::Ok, via)?;
                Ok(sig)
            }
            Err(e) => {
                self.kw
                    .record(event(subject), Outcome::Failed, Some(e.to_string()))?;
                Err(e)
            }
        }
    }

    pub fn keyward(&self) -> &Keyward {
        self.kw
    }

    /// Gives the open token back (to keep a session for the next job).
    pub fn into_token(self) -> OpenToken {
        self.token
    }
}
