//! Core services for YubiKey PIV tokens: naming and opening cards, PIN/PUK and management-key
//! administration, reset, attestation, import from the software keystore, and `token scan`.
//!
//! Like every core service: check policy, write the audit entry (intent first where the card
//! changes), talk to the token, return plain results. Never a PIN, PUK or key in the log.

use crate::audit::event::PivAction;
use crate::audit::{Event, Outcome};
use crate::config::{ConfigKind, TokenConfig};
use crate::error::{Error, Result};
use crate::keys::{check_key_name, Holder, State, Version};
use crate::prompt::{Confirm, PromptError, Prompter, SecretKind, SecretRequest};
use crate::secret::Pin;
use crate::service::{Keyward, OpenToken, TokenEntry};
use crate::token::piv::{self, Anchor, Attestation, PivToken, PIV_PREFIX};
use crate::token::soft::SOFT_TOKEN_NAME;
use crate::token::{
    GenerateOptions, GenerateRequest, ObjectId, Token, TokenError, TokenKey, TokenKind,
};
use serde::Serialize;

/// One key found by `token scan`.
#[derive(Clone, Debug, Serialize)]
pub struct ScannedKey {
    pub object_id: String,
    pub label: String,
    pub key_id: String,
    /// `known` (in the log), `adopted` (added to the log now, pre-active), `conflict` (the log
    /// has this version with another key), `foreign` (not written by keyward).
    pub status: &'static str,
    /// For an adopted PKCS#11 key: whether it is wrappable (backups can carry it); `None` when
    /// the scan could not log in to look.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wrappable: Option<bool>,
}

/// What `token scan` found.
#[derive(Clone, Debug, Serialize)]
pub struct ScanReport {
    pub token: String,
    pub serial: String,
    pub keys: Vec<ScannedKey>,
}

/// The latest attestation check of a version on one card, from the audit log.
#[derive(Clone, Debug, Serialize)]
pub struct AttestationRecord {
    pub version: u32,
    pub time: String,
    /// The token (and slot) whose key was attested: the version's own, or a copy's.
    pub token: String,
    pub object_id: String,
    pub serial: String,
    pub verified: bool,
    /// The root the chain verified to, and where that root comes from ([`piv::YUBICO_SOURCE`]
    /// or a keyward.toml entry).
    pub root: Option<String>,
    pub root_source: Option<String>,
    pub attested_serial: Option<u32>,
    pub firmware: Option<String>,
    pub pin_policy: Option<String>,
    pub touch_policy: Option<String>,
    pub problems: Vec<String>,
}

fn cancelled() -> Error {
    PromptError::Cancelled.into()
}

impl Keyward {
    /// The YubiKey serial behind a token name: `yubikey:SERIAL`, a keyward.toml `kind = "piv"`
    /// entry, or bare `yubikey` when exactly one card is attached. Returns the name keyward
    /// records (a bare `yubikey` becomes `yubikey:SERIAL`).
    pub fn resolve_yubikey(&self, name: &str) -> Result<(String, u32)> {
        if name == PIV_PREFIX {
            let cards = piv::discover();
            return match cards.as_slice() {
                [] => Err(TokenError::NotPresent {
                    token: "yubikey (no YubiKey found over PC/SC; is pcscd running and the key inserted?)".into(),
                }
                .into()),
                [one] => Ok((one.token_name(), one.serial)),
                many => Err(Error::Invalid(format!(
                    "{} YubiKeys are attached (serials {}); keyward does not guess: name one as {}",
                    many.len(),
                    many.iter()
                        .map(|c| c.serial.to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                    many.iter()
                        .map(|c| c.token_name())
                        .collect::<Vec<_>>()
                        .join(" or ")
                ))),
            };
        }
        if let Some(serial) = piv::parse_token_name(name) {
            return Ok((name.to_owned(), serial.map_err(Error::Invalid)?));
        }
        match self.config().token(name) {
            Some(tc) if tc.kind == ConfigKind::Piv => Ok((name.to_owned(), config_serial(tc)?)),
            Some(_) => Err(Error::Invalid(format!(
                "token {name} is not a YubiKey PIV token (keyward.toml says kind = \"pkcs11\")"
            ))),
            None => Err(Error::UnknownToken {
                name: name.into(),
                known: self.token_names().join(", "),
            }),
        }
    }

    /// Opens a YubiKey by any of its names (see [`Keyward::resolve_yubikey`]).
    pub fn open_yubikey(&self, name: &str) -> Result<OpenToken> {
        let (name, serial) = self.resolve_yubikey(name)?;
        Ok(OpenToken {
            token: Box::new(PivToken::open(&name, serial)?),
            name,
        })
    }

    /// YubiKeys over PC/SC that keyward.toml does not name, for `token list`.
    pub fn discovered_yubikeys(&self) -> Vec<TokenEntry> {
        let configured: Vec<u32> = self
            .config()
            .tokens
            .iter()
            .filter(|t| t.kind == ConfigKind::Piv)
            .filter_map(|t| config_serial(t).ok())
            .collect();
        piv::discover()
            .into_iter()
            .filter(|c| !configured.contains(&c.serial))
            .map(|c| {
                let name = c.token_name();
                let (info, error) = match PivToken::open(&name, c.serial).and_then(|t| t.info()) {
                    Ok(i) => (Some(i), None),
                    Err(e) => (None, Some(e.to_string())),
                };
                TokenEntry {
                    name,
                    kind: TokenKind::Piv,
                    source: "discovered",
                    module: Some(c.reader),
                    info,
                    error,
                }
            })
            .collect()
    }

    /// `key generate` with a placement: a PIV slot, PIN and touch policies.
    pub fn generate_with(
        &self,
        key: &str,
        token_name: &str,
        algorithm: crate::token::Algorithm,
        inactive: bool,
        options: &GenerateOptions,
        prompter: &mut dyn Prompter,
    ) -> Result<Version> {
        check_key_name(key).map_err(Error::Invalid)?;
        let mut t = self.open_token(token_name)?;
        t.token.set_generate_options(options)?;
        self.generate_on(&mut t, key, algorithm, inactive, prompter)
    }

    /// Object ids that versions on `token` (or generations in flight there) still use.
    pub fn taken_object_ids(&self, token: &str) -> Result<Vec<ObjectId>> {
        let registry = self.registry()?;
        let mut ids: Vec<ObjectId> = registry
            .keys
            .values()
            .flat_map(|vs| vs.values())
            .filter(|v| v.state != State::Destroyed)
            .flat_map(|v| v.holders())
            .filter(|h| h.token == token)
            .map(|h| ObjectId(h.object_id))
            .collect();
        ids.extend(
            registry
                .pending
                .iter()
                .filter(|p| p.token == token)
                .map(|p| ObjectId(p.object_id.clone())),
        );
        Ok(ids)
    }

    // ---- administration -----------------------------------------------------------------

    fn open_piv(&self, name: &str) -> Result<PivToken> {
        let (name, serial) = self.resolve_yubikey(name)?;
        Ok(PivToken::open(&name, serial)?)
    }

    fn admin_event(
        t: &PivToken,
        action: PivAction,
        pin_tries_left: Option<u32>,
        puk_tries_left: Option<u32>,
    ) -> Event {
        Event::PivAdmin {
            token: t.name().to_owned(),
            serial: t.serial().to_string(),
            action,
            pin_tries_left,
            puk_tries_left,
        }
    }

    /// Records intent, runs `op`, records the outcome (tries left on a wrong PIN or PUK).
    fn administer(
        &self,
        t: &PivToken,
        action: PivAction,
        op: impl FnOnce() -> std::result::Result<(), TokenError>,
    ) -> Result<()> {
        self.record(
            Self::admin_event(t, action.clone(), None, None),
            Outcome::Started,
            None,
        )?;
        match op() {
            Ok(()) => {
                self.record(Self::admin_event(t, action, None, None), Outcome::Ok, None)?;
                Ok(())
            }
            Err(e) => {
                let (pin, puk) = match &e {
                    TokenError::PinIncorrect { tries_left, .. } => (*tries_left, None),
                    TokenError::PinLocked { .. } => (Some(0), None),
                    TokenError::PukIncorrect { tries_left, .. } => (None, *tries_left),
                    TokenError::PukLocked { .. } => (None, Some(0)),
                    _ => (None, None),
                };
                self.record(
                    Self::admin_event(t, action, pin, puk),
                    Outcome::Failed,
                    Some(e.to_string()),
                )?;
                Err(e.into())
            }
        }
    }

    /// Refuses to spend the last PIN try without the person's explicit yes.
    fn guard_pin(&self, t: &PivToken, prompter: &mut dyn Prompter) -> Result<()> {
        match t.pin_tries_left()? {
            Some(0) => Err(TokenError::PinLocked {
                token: t.name().to_owned(),
            }
            .into()),
            Some(1) => {
                if prompter.confirm(&Confirm::FinalPinTry {
                    token: t.name().to_owned(),
                })? {
                    Ok(())
                } else {
                    Err(TokenError::FinalTryNotConfirmed {
                        token: t.name().to_owned(),
                    }
                    .into())
                }
            }
            _ => Ok(()),
        }
    }

    /// PUK tries left: the card's (firmware 5.3+), else what the last PUK attempt recorded
    /// in the log for this serial (a YubiKey before 5.3 cannot tell without spending one).
    pub fn puk_tries_left(&self, t: &PivToken) -> Result<Option<u32>> {
        if let Some(n) = t.puk_tries_left()? {
            return Ok(Some(n));
        }
        let serial = t.serial().to_string();
        let mut last = None;
        self.audit().for_each_from(0, |entry, _| {
            if let Event::PivAdmin {
                serial: s,
                action,
                puk_tries_left,
                ..
            } = &entry.event
            {
                let uses_puk = matches!(
                    action,
                    PivAction::ChangePuk
                        | PivAction::UnblockPin
                        | PivAction::Reset { .. }
                        | PivAction::SetRetries { .. }
                );
                if *s == serial && uses_puk && entry.outcome != Outcome::Started {
                    last = if entry.outcome == Outcome::Ok {
                        None
                    } else {
                        *puk_tries_left
                    };
                }
            }
        })?;
        Ok(last)
    }

    fn guard_puk(&self, t: &PivToken, prompter: &mut dyn Prompter) -> Result<()> {
        match self.puk_tries_left(t)? {
            Some(0) => Err(TokenError::PukLocked {
                token: t.name().to_owned(),
            }
            .into()),
            Some(1) => {
                let what = format!(
                    "use the LAST PUK try of {} (YubiKey {}): a wrong PUK blocks it for good, and a locked PIN can then only be recovered by a reset that destroys every key on the card",
                    t.name(),
                    t.serial()
                );
                if prompter.confirm(&Confirm::Destructive { what })? {
                    Ok(())
                } else {
                    Err(cancelled())
                }
            }
            _ => Ok(()),
        }
    }

    fn ask(&self, prompter: &mut dyn Prompter, kind: SecretKind, t: &PivToken) -> Result<Pin> {
        // With the card's info, a prompter knows that the SO credential is the PUK.
        let info = t.info().ok();
        Ok(prompter.secret(&SecretRequest {
            kind,
            token: t.name(),
            info: info.as_ref(),
        })?)
    }

    /// Logs in to a PIV token for administration, as [`Keyward::login`] does for any token.
    fn piv_login(&self, t: &mut PivToken, prompter: &mut dyn Prompter) -> Result<()> {
        self.guard_pin(t, prompter)?;
        let pin = self.ask(prompter, SecretKind::UserPin, t)?;
        let (token, serial) = (t.name().to_owned(), t.serial().to_string());
        let event = |tries_left| Event::Login {
            token: token.clone(),
            serial: serial.clone(),
            tries_left,
        };
        match t.login(&pin) {
            Ok(()) => {
                self.record(event(None), Outcome::Ok, None)?;
                Ok(())
            }
            Err(e) => {
                let tries = match &e {
                    TokenError::PinIncorrect { tries_left, .. } => *tries_left,
                    TokenError::PinLocked { .. } => Some(0),
                    _ => None,
                };
                self.record(event(tries), Outcome::Failed, Some(e.to_string()))?;
                Err(e.into())
            }
        }
    }

    /// `token piv change-pin`: current PIN (KEYWARD_PIN), new PIN (KEYWARD_NEW_PIN).
    pub fn piv_change_pin(&self, name: &str, prompter: &mut dyn Prompter) -> Result<()> {
        let t = self.open_piv(name)?;
        self.guard_pin(&t, prompter)?;
        let current = self.ask(prompter, SecretKind::UserPin, &t)?;
        let new = self.ask(prompter, SecretKind::NewUserPin, &t)?;
        if new.expose() == current.expose() {
            return Err(Error::Invalid(
                "the new PIN is the current PIN; nothing to change (batch mode: set KEYWARD_NEW_PIN)"
                    .into(),
            ));
        }
        piv::check_pin_format("PIN", new.expose(), 6)?;
        self.administer(&t, PivAction::ChangePin, || t.change_pin(&current, &new))
    }

    /// `token piv change-puk`: the current PUK comes from the prompter (the SO credential of
    /// the card), the new one from the front end.
    pub fn piv_change_puk(&self, name: &str, new: &Pin, prompter: &mut dyn Prompter) -> Result<()> {
        let t = self.open_piv(name)?;
        self.guard_puk(&t, prompter)?;
        let current = self.ask(prompter, SecretKind::SoPin, &t)?;
        if new.expose() == current.expose() {
            return Err(Error::Invalid(
                "the new PUK is the current PUK; nothing to change (batch mode: set KEYWARD_NEW_PUK)"
                    .into(),
            ));
        }
        piv::check_pin_format("PUK", new.expose(), 6)?;
        self.administer(&t, PivAction::ChangePuk, || t.change_puk(&current, new))
    }

    /// `token piv unblock-pin`: the PUK (KEYWARD_PUK) sets a new PIN (KEYWARD_NEW_PIN).
    pub fn piv_unblock_pin(&self, name: &str, prompter: &mut dyn Prompter) -> Result<()> {
        let t = self.open_piv(name)?;
        self.guard_puk(&t, prompter)?;
        let puk = self.ask(prompter, SecretKind::SoPin, &t)?;
        let new = self.ask(prompter, SecretKind::NewUserPin, &t)?;
        piv::check_pin_format("PIN", new.expose(), 6)?;
        self.administer(&t, PivAction::UnblockPin, || t.unblock_pin(&puk, &new))
    }

    /// `token piv set-retries`: new PIN and PUK retry counts. The card resets PIN and PUK to
    /// their factory defaults, so this asks for a confirmation naming that.
    pub fn piv_set_retries(
        &self,
        name: &str,
        pin_tries: u8,
        puk_tries: u8,
        prompter: &mut dyn Prompter,
    ) -> Result<()> {
        let mut t = self.open_piv(name)?;
        let what = format!(
            "set the retry counts of {} (YubiKey {}) to {pin_tries} (PIN) and {puk_tries} (PUK); the card then resets the PIN to {} and the PUK to {}, so the current PIN and PUK are lost and must be changed again",
            t.name(),
            t.serial(),
            piv::DEFAULT_PIN,
            piv::DEFAULT_PUK
        );
        if !prompter.confirm(&Confirm::Destructive { what })? {
            return Err(cancelled());
        }
        self.piv_login(&mut t, prompter)?;
        self.administer(
            &t,
            PivAction::SetRetries {
                pin: pin_tries,
                puk: puk_tries,
            },
            || t.set_retries(pin_tries, puk_tries),
        )
    }

    /// `token piv set-management-key`: a new random management key, stored PIN-protected on
    /// the card (as ykman does), so administration needs only the PIN.
    pub fn piv_set_management_key(&self, name: &str, prompter: &mut dyn Prompter) -> Result<()> {
        let mut t = self.open_piv(name)?;
        self.piv_login(&mut t, prompter)?;
        self.administer(&t, PivAction::SetManagementKey, || {
            t.set_protected_management_key()
        })
    }

    /// `token piv reset`: the PIV application back to factory state, after a confirmation
    /// naming the serial and what is lost. The versions that lived on the card become
    /// `destroyed` in the log.
    pub fn piv_reset(&self, name: &str, prompter: &mut dyn Prompter) -> Result<Vec<String>> {
        let mut t = self.open_piv(name)?;
        let serial = t.serial().to_string();
        let registry = self.registry()?;
        let lost_versions: Vec<Version> = registry
            .keys
            .values()
            .flat_map(|vs| vs.values())
            .filter(|v| {
                (v.token == t.name() || v.token_serial == serial) && v.state != State::Destroyed
            })
            .cloned()
            .collect();
        let mut lost: Vec<String> = lost_versions
            .iter()
            .map(|v| format!("{}/{} (slot {})", v.key, v.version, v.object_id))
            .collect();
        // Copies of versions that live elsewhere: the copy is lost, the version stays.
        let lost_copies: Vec<(String, String)> = registry
            .versions()
            .filter(|v| v.state != State::Destroyed)
            .flat_map(|v| {
                v.copies
                    .iter()
                    .filter(|c| c.token == t.name() || c.token_serial == serial)
                    .map(|c| (v.name(), c.object_id.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        for (name, slot) in &lost_copies {
            lost.push(format!("the copy of {name} (slot {slot})"));
        }
        for k in t.list_keys().unwrap_or_default() {
            if !lost_versions.iter().any(|v| v.object_id == k.object_id.0)
                && !lost_copies.iter().any(|(_, slot)| *slot == k.object_id.0)
            {
                lost.push(format!(
                    "{:?} (slot {}, not keyward's)",
                    k.label, k.object_id
                ));
            }
        }
        let what = format!(
            "reset the PIV application of YubiKey {serial} ({}): every PIV key and certificate on it is lost for good{}, and the PIN, PUK and management key return to the factory defaults",
            t.name(),
            if lost.is_empty() {
                " (keyward knows of none)".to_string()
            } else {
                format!(" — {}", lost.join(", "))
            }
        );
        if !prompter.confirm(&Confirm::Destructive { what })? {
            return Err(cancelled());
        }
        let action = PivAction::Reset { lost: lost.clone() };
        self.administer(&t, action, || t.reset())?;
        for v in lost_versions {
            let reason = Some(format!("YubiKey {serial} was reset: the key is gone"));
            let mut state = v.state;
            if !state.can_become(State::Destroyed) && state.can_become(State::Deactivated) {
                self.record(
                    Event::StateChanged {
                        key: v.key.clone(),
                        version: v.version,
                        from: state,
                        to: State::Deactivated,
                        reason: reason.clone(),
                        since: None,
                    },
                    Outcome::Ok,
                    None,
                )?;
                state = State::Deactivated;
            }
            if state.can_become(State::Destroyed) {
                self.record(
                    Event::StateChanged {
                        key: v.key.clone(),
                        version: v.version,
                        from: state,
                        to: State::Destroyed,
                        reason,
                        since: None,
                    },
                    Outcome::Ok,
                    None,
                )?;
            }
        }
        Ok(lost)
    }

    /// `token piv slots`: what each slot of a YubiKey holds (metadata and certificates).
    /// Returns the name keyward records for the card.
    pub fn piv_slots(&self, name: &str) -> Result<(String, Vec<piv::SlotStatus>)> {
        let t = self.open_piv(name)?;
        Ok((t.name().to_owned(), t.slots()?))
    }

    // ---- attestation ----------------------------------------------------------------------

    /// The extra attestation roots keyward.toml lists (`[piv] attestation_roots`; relative
    /// paths are relative to the keyward home). Yubico's roots are always trusted.
    pub fn attestation_roots(&self) -> Result<Vec<Anchor>> {
        let paths: Vec<std::path::PathBuf> = self
            .config()
            .piv
            .attestation_roots
            .iter()
            .map(|p| {
                if p.is_absolute() {
                    p.clone()
                } else {
                    self.home().dir().join(p)
                }
            })
            .collect();
        piv::load_extra_roots(&paths).map_err(Error::Config)
    }

    /// Whether `name` names a YubiKey (`yubikey`, `yubikey:SERIAL`, a `kind = "piv"` entry).
    pub fn is_yubikey(&self, name: &str) -> bool {
        name == PIV_PREFIX
            || piv::parse_token_name(name).is_some()
            || self
                .config()
                .token(name)
                .is_some_and(|t| t.kind == ConfigKind::Piv)
    }

    /// The holder of `v`'s key on `token`: by name, else (a YubiKey named another way) by
    /// serial. For the TUI and the CLI's `--token`.
    pub fn holder(&self, v: &Version, token: &str) -> Result<Holder> {
        if let Some(h) = v.holder_on(token) {
            return Ok(h);
        }
        if self.is_yubikey(token) {
            let (_, serial) = self.resolve_yubikey(token)?;
            let serial = serial.to_string();
            if let Some(h) = v.holders().into_iter().find(|h| h.token_serial == serial) {
                return Ok(h);
            }
        }
        Err(Error::Invalid(format!(
            "{}/{} has no key on {token}; it is on {}",
            v.key,
            v.version,
            v.holders()
                .iter()
                .map(|h| format!("{} (slot {})", h.token, h.object_id))
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }

    /// The YubiKey holder of a version to attest: `token` when given, else the version's own
    /// token if it is a YubiKey, else its only YubiKey copy.
    pub fn attestable_holder(&self, v: &Version, token: Option<&str>) -> Result<Holder> {
        if let Some(token) = token {
            return self.holder(v, token);
        }
        let on_cards: Vec<Holder> = v
            .holders()
            .into_iter()
            .filter(|h| self.is_yubikey(&h.token))
            .collect();
        match on_cards.as_slice() {
            [] => Err(Error::Invalid(format!(
                "{}/{} lives on {}, which offers no attestation; only keys on YubiKeys are attested",
                v.key, v.version, v.token
            ))),
            [one] => Ok(one.clone()),
            many if !many[0].copy => Ok(many[0].clone()),
            many => Err(Error::Invalid(format!(
                "{}/{} has copies on {}: name one with --token",
                v.key,
                v.version,
                many.iter()
                    .map(|h| h.token.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// Fetches and checks the attestation of a version's key on its YubiKey (see
    /// [`Keyward::attest_on`]).
    pub fn attest(&self, key: &str, version: Option<u32>) -> Result<(Version, Attestation)> {
        let (v, _, a) = self.attest_on(key, version, None)?;
        Ok((v, a))
    }

    /// Fetches and checks the attestation of a version's key (on `token`, or see
    /// [`Keyward::attestable_holder`]) against Yubico's roots and keyward.toml's
    /// `[piv] attestation_roots`; records the result and the serial, with the root that
    /// verified in the entry's detail (`root: SUBJECT; trusted as: SOURCE`).
    pub fn attest_on(
        &self,
        key: &str,
        version: Option<u32>,
        token: Option<&str>,
    ) -> Result<(Version, Holder, Attestation)> {
        let v = self.resolve(key, version)?;
        let holder = self.attestable_holder(&v, token)?;
        let roots = self.attestation_roots()?;
        let mut t = self.open_token(&holder.token)?;
        let serial = t.info()?.serial;
        let event = |verified, problems| Event::KeyAttested {
            key: v.key.clone(),
            version: v.version,
            key_id: v.key_id.clone(),
            token: holder.token.clone(),
            serial: serial.clone(),
            object_id: holder.object_id.clone(),
            verified,
            attested_serial: None,
            firmware: None,
            pin_policy: None,
            touch_policy: None,
            problems,
        };
        let mut a = match t.token.attest(&ObjectId(holder.object_id.clone()), &roots) {
            Ok(a) => a,
            Err(e) => {
                // A refusal (an imported key, no attestation certificate) is a result too.
                self.record(event(false, vec![e.to_string()]), Outcome::Failed, None)?;
                return Err(e.into());
            }
        };
        if a.attested_key_id.as_deref() != Some(v.key_id.as_str()) {
            let problem = format!(
                "the attested key is not {}/{} (key id {})",
                v.key,
                v.version,
                &v.key_id[..16]
            );
            if !a.problems.contains(&problem) {
                a.problems.push(problem);
            }
            a.verified = false;
        }
        let mut checked = event(a.verified, a.problems.clone());
        if let Event::KeyAttested {
            attested_serial,
            firmware,
            pin_policy,
            touch_policy,
            ..
        } = &mut checked
        {
            *attested_serial = a.serial;
            firmware.clone_from(&a.firmware);
            pin_policy.clone_from(&a.pin_policy);
            touch_policy.clone_from(&a.touch_policy);
        }
        self.record(
            checked,
            if a.verified {
                Outcome::Ok
            } else {
                Outcome::Failed
            },
            root_detail(&a),
        )?;
        Ok((v, holder, a))
    }

    /// The latest recorded attestation of each version of `key` on each card (for `key show`
    /// and the TUI).
    pub fn attestations(&self, key: &str) -> Result<Vec<AttestationRecord>> {
        let mut latest: std::collections::BTreeMap<(u32, String), AttestationRecord> =
            Default::default();
        self.audit().for_each_from(0, |entry, _| {
            if let Event::KeyAttested {
                key: k,
                version,
                token,
                object_id,
                serial,
                verified,
                attested_serial,
                firmware,
                pin_policy,
                touch_policy,
                problems,
                ..
            } = entry.event
            {
                let (root, root_source) = parse_root_detail(entry.detail.as_deref());
                if k == key {
                    latest.insert(
                        (version, token.clone()),
                        AttestationRecord {
                            version,
                            time: entry.time,
                            token,
                            object_id,
                            serial,
                            verified,
                            root,
                            root_source,
                            attested_serial,
                            firmware,
                            pin_policy,
                            touch_policy,
                            problems,
                        },
                    );
                }
            }
        })?;
        Ok(latest.into_values().collect())
    }

    // ---- import -----------------------------------------------------------------------------

    /// Copies the private key of a software-keystore version into a token (a YubiKey slot):
    /// how an air-gapped ceremony puts one key on several cards. The copy is recorded
    /// (`key_imported`) and listed with the version (`Version::copies`): the version keeps
    /// its keystore binding and can sign from any copy (`key sign --token`).
    pub fn import_to_token(
        &self,
        key: &str,
        version: Option<u32>,
        token_name: &str,
        options: &GenerateOptions,
        prompter: &mut dyn Prompter,
    ) -> Result<(Version, OpenToken, TokenKey)> {
        let v = self.resolve(key, version)?;
        if v.token != SOFT_TOKEN_NAME {
            return Err(Error::Invalid(format!(
                "{}/{} lives on {}, where it was generated non-extractable; only software keystore keys can be imported into a token",
                v.key, v.version, v.token
            )));
        }
        if v.state == State::Destroyed || v.state == State::Compromised {
            return Err(Error::Invalid(format!(
                "{}/{} is {}; keyward does not copy it",
                v.key, v.version, v.state
            )));
        }
        let mut t = self.open_token(token_name)?;
        if let Some(c) = v.copies.iter().find(|c| c.token == t.name) {
            return Err(Error::Invalid(format!(
                "{}/{} already has a copy on {} (slot {})",
                v.key, v.version, c.token, c.object_id
            )));
        }
        t.token.set_generate_options(options)?;
        let mut soft = self.open_token(SOFT_TOKEN_NAME)?;
        self.login(&mut soft, prompter)?;
        let pkcs8 = soft.token.export_pkcs8(&ObjectId(v.object_id.clone()))?;
        drop(soft);
        self.login(&mut t, prompter)?;
        let serial = t.info()?.serial;
        let taken = self.taken_object_ids(&t.name)?;
        let object_id = t.token.new_object_id(&taken)?;
        let event = Event::KeyImported {
            key: v.key.clone(),
            version: v.version,
            key_id: v.key_id.clone(),
            from_token: v.token.clone(),
            token: t.name.clone(),
            token_serial: serial,
            object_id: object_id.0.clone(),
        };
        self.record(event.clone(), Outcome::Started, None)?;
        let imported = t.token.import_key(
            &GenerateRequest {
                label: format!("{}/{}", v.key, v.version),
                object_id,
                algorithm: v.algorithm,
            },
            &pkcs8,
        );
        let k = match imported {
            Ok(k) if k.public_key.key_id() == v.key_id => k,
            Ok(k) => {
                let e = Error::Other(format!(
                    "the token reports key id {} after the import, not {}",
                    &k.public_key.key_id()[..16],
                    &v.key_id[..16]
                ));
                self.record(event, Outcome::Failed, Some(e.to_string()))?;
                return Err(e);
            }
            Err(e) => {
                self.record(event, Outcome::Failed, Some(e.to_string()))?;
                return Err(e.into());
            }
        };
        self.record(event, Outcome::Ok, None)?;
        Ok((v, t, k))
    }

    // ---- scan ------------------------------------------------------------------------------

    /// `token scan`: lists the keys on a token and adopts into the log, as `pre-active`, every
    /// key version keyward wrote there (label `NAME/VERSION`) that the log does not know — how
    /// a lost home directory is rebuilt from the cards. Activate them after checking key ids.
    pub fn scan_token(&self, name: &str) -> Result<ScanReport> {
        self.scan_token_with(name, None)
    }

    /// `token scan`; with a prompter, a PKCS#11 token is logged in to first, so that its private
    /// keys are seen and adopted keys keep their wrappability (a missing PIN in batch mode
    /// only skips that).
    pub fn scan_token_with(
        &self,
        name: &str,
        prompter: Option<&mut dyn Prompter>,
    ) -> Result<ScanReport> {
        let mut t = self.open_token(name)?;
        let info = t.info()?;
        let logged_in = match prompter {
            Some(p) if info.kind == crate::token::TokenKind::Pkcs11 => {
                match self.login(&mut t, p) {
                    Ok(()) => true,
                    Err(Error::Prompt(PromptError::NotInteractive { .. })) => false,
                    Err(e) => return Err(e),
                }
            }
            _ => false,
        };
        let found = t.token.list_keys()?;
        let _lock = self.op_lock()?;
        let registry = self.registry()?;
        let mut report = ScanReport {
            token: t.name.clone(),
            serial: info.serial.clone(),
            keys: Vec::new(),
        };
        let mut adopted = Vec::new();
        for k in found {
            let key_id = k.public_key.key_id();
            let mut wrappable = None;
            let parsed = k.label.split_once('/').and_then(|(n, v)| {
                check_key_name(n).ok()?;
                Some((n.to_owned(), v.parse::<u32>().ok()?))
            });
            let status = match parsed {
                None => "foreign",
                Some((n, ver)) => match registry.version(&n, ver) {
                    Some(v) if v.key_id == key_id => "known",
                    Some(_) => "conflict",
                    None if registry
                        .keys
                        .values()
                        .flat_map(|vs| vs.values())
                        .any(|v| v.key_id == key_id) =>
                    {
                        "known"
                    }
                    None => {
                        wrappable = if logged_in {
                            t.token.wrappable(&k.object_id)?
                        } else {
                            None
                        };
                        let wrappable = wrappable.unwrap_or(false);
                        self.record(
                            Event::KeyGenerated {
                                key: n.clone(),
                                version: ver,
                                token: t.name.clone(),
                                token_serial: info.serial.clone(),
                                object_id: k.object_id.0.clone(),
                                algorithm: k.algorithm,
                                key_id: key_id.clone(),
                                public_key: k.public_key.to_pem(),
                                state: State::PreActive,
                                wrappable,
                            },
                            Outcome::Ok,
                            Some(format!(
                                "adopted by token scan from the key and label on {} ({})",
                                t.name, k.object_id
                            )),
                        )?;
                        adopted.push(k.label.clone());
                        "adopted"
                    }
                },
            };
            report.keys.push(ScannedKey {
                object_id: k.object_id.0.clone(),
                label: k.label.clone(),
                key_id,
                status,
                wrappable,
            });
        }
        self.record(
            Event::TokenScanned {
                token: t.name.clone(),
                serial: info.serial,
                found: report
                    .keys
                    .iter()
                    .filter(|k| k.status != "foreign")
                    .map(|k| k.label.clone())
                    .collect(),
                adopted,
            },
            Outcome::Ok,
            None,
        )?;
        Ok(report)
    }
}

/// The `detail` of a `key_attested` entry: the root that verified and where it comes from.
fn root_detail(a: &Attestation) -> Option<String> {
    match (&a.root, &a.root_source) {
        (Some(root), Some(source)) => Some(format!("root: {root}; trusted as: {source}")),
        _ => None,
    }
}

fn parse_root_detail(detail: Option<&str>) -> (Option<String>, Option<String>) {
    detail
        .and_then(|d| d.strip_prefix("root: "))
        .and_then(|d| d.split_once("; trusted as: "))
        .map_or((None, None), |(r, s)| {
            (Some(r.to_owned()), Some(s.to_owned()))
        })
}

fn config_serial(tc: &TokenConfig) -> Result<u32> {
    tc.serial
        .as_deref()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| {
            Error::Config(format!(
                "token {:?} (kind = \"piv\") needs `serial = \"NNNNNNNN\"`, the YubiKey's serial (see `keyward token list`)",
                tc.name
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::home::Home;

    #[test]
    fn key_show_gets_the_latest_attestation_per_version() {
        let dir = tempfile::tempdir().unwrap();
        let kw = Keyward::open(Home::resolve(Some(dir.path().to_owned())).unwrap()).unwrap();
        let attested = |version, verified, problems: Vec<String>| Event::KeyAttested {
            key: "release".into(),
            version,
            key_id: "ab".repeat(32),
            token: "yubikey:1".into(),
            serial: "1".into(),
            object_id: "9c".into(),
            verified,
            attested_serial: Some(1),
            firmware: Some("5.4.3".into()),
            pin_policy: Some("always".into()),
            touch_policy: Some("cached".into()),
            problems,
        };
        kw.record(
            attested(1, false, vec!["wrong serial".into()]),
            Outcome::Failed,
            None,
        )
        .unwrap();
        kw.record(attested(1, true, vec![]), Outcome::Ok, None)
            .unwrap();
        kw.record(
            attested(2, false, vec!["bad chain".into()]),
            Outcome::Failed,
            None,
        )
        .unwrap();
        let mut other = attested(1, true, vec![]);
        if let Event::KeyAttested { key, .. } = &mut other {
            *key = "other".into();
        }
        kw.record(other, Outcome::Ok, None).unwrap();
        let a = kw.attestations("release").unwrap();
        assert_eq!(a.len(), 2);
        assert!(a[0].verified && a[0].version == 1);
        assert_eq!(a[0].touch_policy.as_deref(), Some("cached"));
        assert!(!a[1].verified);
        assert_eq!(a[1].problems, ["bad chain"]);
    }

    #[test]
    fn a_piv_config_entry_needs_its_serial() {
        let tc = TokenConfig {
            name: "desk".into(),
            kind: ConfigKind::Piv,
            module: None,
            label: None,
            serial: None,
            slot: None,
        };
        assert!(config_serial(&tc)
            .unwrap_err()
            .to_string()
            .contains("serial"));
        let tc = TokenConfig {
            serial: Some("12345678".into()),
            ..tc
        };
        assert_eq!(config_serial(&tc).unwrap(), 12_345_678);
    }
}
