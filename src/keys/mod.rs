//! Keys, versions and their NIST SP 800-57 states, derived by folding the audit log.

use crate::audit::{Entry, Event, Outcome};
use crate::token::Algorithm;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// The NIST SP 800-57 state of a key version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    PreActive,
    Active,
    Suspended,
    Deactivated,
    Compromised,
    Destroyed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::PreActive => "pre-active",
            State::Active => "active",
            State::Suspended => "suspended",
            State::Deactivated => "deactivated",
            State::Compromised => "compromised",
            State::Destroyed => "destroyed",
        }
    }

    /// Whether SP 800-57's state diagram allows going from `self` to `to`.
    pub fn can_become(self, to: State) -> bool {
        use State::*;
        matches!(
            (self, to),
            (PreActive, Active)
                | (PreActive, Compromised)
                | (PreActive, Destroyed)
                | (Active, Suspended)
                | (Active, Deactivated)
                | (Active, Compromised)
                | (Suspended, Active)
                | (Suspended, Deactivated)
                | (Suspended, Compromised)
                | (Deactivated, Compromised)
                | (Deactivated, Destroyed)
                | (Compromised, Destroyed)
        )
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for State {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "pre-active" => State::PreActive,
            "active" => State::Active,
            "suspended" => State::Suspended,
            "deactivated" => State::Deactivated,
            "compromised" => State::Compromised,
            "destroyed" => State::Destroyed,
            other => return Err(format!("unknown state {other:?}")),
        })
    }
}

/// One version of a key: one key pair on one token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    pub key: String,
    pub version: u32,
    pub token: String,
    pub token_serial: String,
    pub object_id: String,
    pub algorithm: Algorithm,
    pub key_id: String,
    /// SPKI PEM.
    pub public_key: String,
    pub state: State,
    pub created: String,
    pub updated: String,
    /// When the version last became active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activated: Option<String>,
    /// When it was deactivated (or compromised / destroyed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deactivated: Option<String>,
    /// After a rotation: the end of this (old) version's overlap window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlap_until: Option<String>,
    /// For a compromised version: since when it must be distrusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compromised_since: Option<String>,
    /// Copies of the private key on other tokens (`token piv import`): the same key pair,
    /// usable for signing with `--token`. `token`/`object_id` above stay the original.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub copies: Vec<KeyCopy>,
}

/// A copy of a version's private key on another token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyCopy {
    pub token: String,
    pub token_serial: String,
    pub object_id: String,
    /// When the copy was made.
    pub since: String,
}

/// Where a version's private key can be used: its own token, or a copy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Holder {
    pub token: String,
    pub token_serial: String,
    pub object_id: String,
    /// False for the version's own token, true for a copy.
    pub copy: bool,
}

/// A key's cryptoperiod policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Seconds between rotations.
    pub rotate_every: u64,
    /// Seconds an old version stays active after a rotation.
    pub overlap: u64,
}

impl Version {
    pub fn name(&self) -> String {
        format!("{}/{}", self.key, self.version)
    }

    /// Every token holding the private key: the version's own first, then the copies.
    pub fn holders(&self) -> Vec<Holder> {
        std::iter::once(Holder {
            token: self.token.clone(),
            token_serial: self.token_serial.clone(),
            object_id: self.object_id.clone(),
            copy: false,
        })
        .chain(self.copies.iter().map(|c| Holder {
            token: c.token.clone(),
            token_serial: c.token_serial.clone(),
            object_id: c.object_id.clone(),
            copy: true,
        }))
        .collect()
    }

    /// The holder on `token` (by name), if the version's key is there.
    pub fn holder_on(&self, token: &str) -> Option<Holder> {
        self.holders().into_iter().find(|h| h.token == token)
    }
}

/// A generation that was started and has not yet been completed or aborted in the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub key: String,
    pub version: u32,
    pub token: String,
    pub object_id: String,
    pub algorithm: Algorithm,
    pub state: State,
    pub seq: u64,
}

/// Every key and version, as the log says.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registry {
    pub keys: BTreeMap<String, BTreeMap<u32, Version>>,
    pub pending: Vec<Pending>,
    /// Generations closed by crash recovery; a key that appears later under one of these
    /// object ids is adopted.
    #[serde(default)]
    pub interrupted: Vec<Pending>,
    /// Highest version number ever allocated per key (aborted ones included), so numbers are
    /// never reused.
    pub allocated: BTreeMap<String, u32>,
    /// Tokens initialised through keyward (name -> serial), for information.
    pub tokens: BTreeMap<String, String>,
    /// Cryptoperiod policies per key.
    #[serde(default)]
    pub policies: BTreeMap<String, Policy>,
}

impl Registry {
    /// Applies one log entry.
    pub fn apply(&mut self, entry: &Entry) {
        match (&entry.event, entry.outcome) {
            (
                Event::KeyGenerating {
                    key,
                    version,
                    token,
                    object_id,
                    algorithm,
                    state,
                    ..
                },
                Outcome::Started,
            ) => {
                let a = self.allocated.entry(key.clone()).or_default();
                *a = (*a).max(*version);
                self.pending.push(Pending {
                    key: key.clone(),
                    version: *version,
                    token: token.clone(),
                    object_id: object_id.clone(),
                    algorithm: *algorithm,
                    state: *state,
                    seq: entry.seq,
                });
            }
            (
                Event::KeyGenerated {
                    key,
                    version,
                    token,
                    token_serial,
                    object_id,
                    algorithm,
                    key_id,
                    public_key,
                    state,
                },
                Outcome::Ok,
            ) => {
                self.pending
                    .retain(|p| !(p.key == *key && p.version == *version));
                self.interrupted
                    .retain(|p| !(p.key == *key && p.version == *version));
                let a = self.allocated.entry(key.clone()).or_default();
                *a = (*a).max(*version);
                self.keys.entry(key.clone()).or_default().insert(
                    *version,
                    Version {
                        key: key.clone(),
                        version: *version,
                        token: token.clone(),
                        token_serial: token_serial.clone(),
                        object_id: object_id.clone(),
                        algorithm: *algorithm,
                        key_id: key_id.clone(),
                        public_key: public_key.clone(),
                        state: *state,
                        created: entry.time.clone(),
                        updated: entry.time.clone(),
                        activated: (*state == State::Active).then(|| entry.time.clone()),
                        deactivated: None,
                        overlap_until: None,
                        compromised_since: None,
                        copies: Vec::new(),
                    },
                );
            }
            (
                Event::KeyGenerationAborted {
                    key,
                    version,
                    interrupted,
                    ..
                },
                _,
            ) => {
                let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
                    .into_iter()
                    .partition(|p| p.key == *key && p.version == *version);
                self.pending = kept;
                if *interrupted {
                    self.interrupted.extend(gone);
                }
            }
            (
                Event::StateChanged {
                    key,
                    version,
                    to,
                    since,
                    ..
                },
                Outcome::Ok,
            ) => {
                if let Some(v) = self.keys.get_mut(key).and_then(|k| k.get_mut(version)) {
                    v.state = *to;
                    v.updated = entry.time.clone();
                    match to {
                        State::Active => {
                            v.activated = Some(entry.time.clone());
                            v.deactivated = None;
                        }
                        State::Deactivated | State::Compromised | State::Destroyed => {
                            v.deactivated.get_or_insert_with(|| entry.time.clone());
                            v.overlap_until = None;
                        }
                        _ => {}
                    }
                    if *to == State::Destroyed {
                        // `key destroy` destroys the copies before it records success.
                        v.copies.clear();
                    }
                    if *to == State::Compromised {
                        v.compromised_since = Some(since.clone().unwrap_or(entry.time.clone()));
                    }
                }
            }
            (
                Event::PolicySet {
                    key,
                    rotate_every,
                    overlap,
                },
                Outcome::Ok,
            ) => {
                self.policies.insert(
                    key.clone(),
                    Policy {
                        rotate_every: *rotate_every,
                        overlap: *overlap,
                    },
                );
            }
            (
                Event::Rotated {
                    key,
                    from,
                    overlap_until,
                    ..
                },
                Outcome::Ok,
            ) => {
                if let Some(versions) = self.keys.get_mut(key) {
                    for n in from {
                        if let Some(v) = versions.get_mut(n) {
                            v.overlap_until = Some(overlap_until.clone());
                        }
                    }
                }
            }
            (
                Event::KeyRestored {
                    key,
                    version,
                    token,
                    token_serial,
                    object_id,
                    key_id,
                    ..
                },
                Outcome::Ok,
            ) => {
                // A restore moved the version's private key onto another token (or a new
                // keystore): the same key pair, a new binding. A different key id is not the
                // same key and changes nothing.
                if let Some(v) = self.keys.get_mut(key).and_then(|k| k.get_mut(version)) {
                    if v.key_id == *key_id {
                        v.token = token.clone();
                        v.token_serial = token_serial.clone();
                        v.object_id = object_id.clone();
                        v.updated = entry.time.clone();
                    }
                }
            }
            (
                Event::KeyImported {
                    key,
                    version,
                    key_id,
                    token,
                    token_serial,
                    object_id,
                    ..
                },
                Outcome::Ok,
            ) => {
                // A copy of the same key pair on another token (a different key id is not
                // the same key and changes nothing). A new copy on a token replaces an older
                // one there.
                if let Some(v) = self.keys.get_mut(key).and_then(|k| k.get_mut(version)) {
                    if v.key_id == *key_id && v.token != *token {
                        v.copies.retain(|c| c.token != *token);
                        v.copies.push(KeyCopy {
                            token: token.clone(),
                            token_serial: token_serial.clone(),
                            object_id: object_id.clone(),
                            since: entry.time.clone(),
                        });
                        v.updated = entry.time.clone();
                    }
                }
            }
            (
                Event::KeyCopyDestroyed {
                    key,
                    version,
                    key_id,
                    token,
                    object_id,
                    bound_token,
                    bound_serial,
                    bound_object_id,
                },
                Outcome::Ok,
            ) => {
                // The copy the version was bound to is gone; one of its copies (made by
                // `key_imported`) carries the version on and stops being listed as a copy.
                if let Some(v) = self.keys.get_mut(key).and_then(|k| k.get_mut(version)) {
                    if v.key_id == *key_id && v.token == *token && v.object_id == *object_id {
                        v.token = bound_token.clone();
                        v.token_serial = bound_serial.clone();
                        v.object_id = bound_object_id.clone();
                        v.copies.retain(|c| c.token != *bound_token);
                        v.updated = entry.time.clone();
                    }
                }
            }
            (
                Event::PivAdmin {
                    serial,
                    action: crate::audit::event::PivAction::Reset { .. },
                    ..
                },
                Outcome::Ok,
            ) => {
                // A reset YubiKey holds no copies any more (versions living on it are marked
                // destroyed by the reset itself).
                for v in self.keys.values_mut().flat_map(|vs| vs.values_mut()) {
                    let before = v.copies.len();
                    v.copies.retain(|c| c.token_serial != *serial);
                    if v.copies.len() != before {
                        v.updated = entry.time.clone();
                    }
                }
            }
            (
                Event::KeyCopyRemoved {
                    key,
                    version,
                    token,
                    ..
                },
                Outcome::Ok,
            ) => {
                if let Some(v) = self.keys.get_mut(key).and_then(|k| k.get_mut(version)) {
                    v.copies.retain(|c| c.token != *token);
                    v.updated = entry.time.clone();
                }
            }
            (Event::TokenInitialized { token, serial, .. }, Outcome::Ok) => {
                self.tokens.insert(token.clone(), serial.clone());
            }
            _ => {}
        }
    }

    pub fn next_version(&self, key: &str) -> u32 {
        let max_known = self
            .keys
            .get(key)
            .and_then(|v| v.keys().next_back().copied())
            .unwrap_or(0);
        max_known.max(self.allocated.get(key).copied().unwrap_or(0)) + 1
    }

    pub fn version(&self, key: &str, version: u32) -> Option<&Version> {
        self.keys.get(key).and_then(|v| v.get(&version))
    }

    /// The newest active version of a key.
    pub fn newest_active(&self, key: &str) -> Option<&Version> {
        self.keys
            .get(key)?
            .values()
            .rev()
            .find(|v| v.state == State::Active)
    }

    pub fn versions(&self) -> impl Iterator<Item = &Version> {
        self.keys.values().flat_map(|v| v.values())
    }
}

impl State {
    /// Every state SP 800-57 allows after this one.
    pub fn legal_targets(self) -> Vec<State> {
        [
            State::PreActive,
            State::Active,
            State::Suspended,
            State::Deactivated,
            State::Compromised,
            State::Destroyed,
        ]
        .into_iter()
        .filter(|t| self.can_become(*t))
        .collect()
    }
}

/// Parses a duration such as `90d`, `12h`, `2w`, `1y`, `30days` (humantime syntax).
pub fn parse_duration(s: &str) -> Result<u64, String> {
    humantime::parse_duration(s)
        .map(|d| d.as_secs())
        .map_err(|e| format!("invalid duration {s:?}: {e} (examples: 90d, 12h, 2w, 1y)"))
}

/// Formats seconds the way `parse_duration` reads them.
/// Days, hours, minutes and seconds (`90d`, `14d 12h`, `0s`): exact, unlike months and years.
pub fn format_duration(secs: u64) -> String {
    let parts: Vec<String> = [(86_400, "d"), (3600, "h"), (60, "m"), (1, "s")]
        .iter()
        .scan(secs, |left, (unit, name)| {
            let n = *left / unit;
            *left %= unit;
            Some((n > 0).then(|| format!("{n}{name}")))
        })
        .flatten()
        .collect();
    if parts.is_empty() {
        "0s".into()
    } else {
        parts.join(" ")
    }
}

/// Parses an RFC 3339 time into a Unix timestamp.
pub fn parse_time(s: &str) -> Result<i64, String> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|e| format!("invalid time {s:?}: {e} (use RFC 3339, e.g. 2026-11-20T00:00:00Z)"))
}

/// Formats a Unix timestamp as RFC 3339 UTC (seconds).
pub fn format_time(ts: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ts)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ts.to_string())
}

/// How a version stands against its key's cryptoperiod policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Due {
    pub key: String,
    pub version: u32,
    /// `rotate` (the newest active version's cryptoperiod) or `deactivate` (an overlap ending).
    pub action: &'static str,
    pub due: String,
    /// `ok`, `soon` (within a tenth of the period, at most 14 days) or `overdue`.
    pub status: &'static str,
}

impl Registry {
    /// Rotation and deactivation deadlines at time `now`.
    pub fn due(&self, now: i64) -> Vec<Due> {
        let mut out = Vec::new();
        for (key, policy) in &self.policies {
            let Some(newest) = self.newest_active(key) else {
                continue;
            };
            let since = newest
                .activated
                .as_deref()
                .or(Some(newest.created.as_str()))
                .and_then(|t| parse_time(t).ok());
            if let Some(since) = since {
                let due = since + policy.rotate_every as i64;
                let warn = (policy.rotate_every / 10).min(14 * 86400) as i64;
                out.push(Due {
                    key: key.clone(),
                    version: newest.version,
                    action: "rotate",
                    due: format_time(due),
                    status: if now >= due {
                        "overdue"
                    } else if now >= due - warn {
                        "soon"
                    } else {
                        "ok"
                    },
                });
            }
        }
        for v in self.versions() {
            if v.state != State::Active {
                continue;
            }
            if let Some(until) = v.overlap_until.as_deref().and_then(|t| parse_time(t).ok()) {
                out.push(Due {
                    key: v.key.clone(),
                    version: v.version,
                    action: "deactivate",
                    due: format_time(until),
                    status: if now >= until { "overdue" } else { "soon" },
                });
            }
        }
        out
    }

    /// Active versions of a key, newest first.
    pub fn active_versions(&self, key: &str) -> Vec<&Version> {
        self.keys
            .get(key)
            .map(|vs| {
                vs.values()
                    .rev()
                    .filter(|v| v.state == State::Active)
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Validates a key name: what may appear before `/` in a `CKA_LABEL`.
pub fn check_key_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err("a key name has 1 to 64 characters".into());
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        || name.starts_with(['.', '-'])
    {
        return Err(format!(
            "invalid key name {name:?}: use letters, digits, '-', '_' and '.' (not first)"
        ));
    }
    Ok(())
}

/// Parses `NAME` or `NAME/VERSION`.
pub fn parse_key_ref(s: &str) -> Result<(String, Option<u32>), String> {
    match s.split_once('/') {
        None => {
            check_key_name(s)?;
            Ok((s.to_owned(), None))
        }
        Some((name, v)) => {
            check_key_name(name)?;
            let v: u32 = v
                .parse()
                .map_err(|_| format!("invalid version in {s:?}: expected NAME/NUMBER"))?;
            Ok((name.to_owned(), Some(v)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_format_exactly_and_read_back() {
        for (secs, text) in [
            (0, "0s"),
            (90 * 86_400, "90d"),
            (14 * 86_400 + 12 * 3600, "14d 12h"),
            (61, "1m 1s"),
        ] {
            assert_eq!(format_duration(secs), text);
            assert_eq!(parse_duration(text).unwrap(), secs);
        }
    }

    #[test]
    fn transitions_follow_sp800_57() {
        assert!(State::PreActive.can_become(State::Active));
        assert!(State::Suspended.can_become(State::Active));
        assert!(!State::Deactivated.can_become(State::Active));
        assert!(!State::Destroyed.can_become(State::Active));
        assert!(!State::Compromised.can_become(State::Active));
    }

    #[test]
    fn copies_follow_imports_resets_and_destruction() {
        use crate::audit::event::{Actor, PivAction};
        let mut seq = 0;
        let mut apply = |r: &mut Registry, event: Event, outcome: Outcome| {
            seq += 1;
            r.apply(&Entry {
                seq,
                prev: String::new(),
                time: format!("2026-01-01T00:00:{seq:02}Z"),
                actor: Actor {
                    user: "u".into(),
                    host: "h".into(),
                },
                event,
                outcome,
                detail: None,
                hash: String::new(),
            });
        };
        let mut r = Registry::default();
        apply(
            &mut r,
            Event::KeyGenerated {
                key: "c".into(),
                version: 1,
                token: "soft".into(),
                token_serial: "s".into(),
                object_id: "aa".into(),
                algorithm: Algorithm::P256,
                key_id: "k1".into(),
                public_key: String::new(),
                state: State::Active,
            },
            Outcome::Ok,
        );
        let import = |token: &str, serial: &str, slot: &str, key_id: &str| Event::KeyImported {
            key: "c".into(),
            version: 1,
            key_id: key_id.into(),
            from_token: "soft".into(),
            token: token.into(),
            token_serial: serial.into(),
            object_id: slot.into(),
        };
        apply(
            &mut r,
            import("yubikey:1", "1", "9c", "k1"),
            Outcome::Started,
        );
        apply(&mut r, import("yubikey:1", "1", "9c", "k1"), Outcome::Ok);
        apply(&mut r, import("yubikey:2", "2", "82", "k1"), Outcome::Ok);
        apply(&mut r, import("yubikey:2", "2", "83", "other"), Outcome::Ok);
        apply(
            &mut r,
            import("yubikey:3", "3", "9c", "k1"),
            Outcome::Failed,
        );
        let v = r.version("c", 1).unwrap();
        assert_eq!(v.token, "soft", "the version keeps its own token");
        let holders: Vec<_> = v
            .holders()
            .into_iter()
            .map(|h| (h.token, h.object_id, h.copy))
            .collect();
        assert_eq!(
            holders,
            [
                ("soft".into(), "aa".into(), false),
                ("yubikey:1".into(), "9c".into(), true),
                ("yubikey:2".into(), "82".into(), true),
            ]
        );
        assert_eq!(v.holder_on("yubikey:2").unwrap().object_id, "82");
        // A reset of card 1 drops its copy; a failed reset does not.
        let reset = |serial: &str| Event::PivAdmin {
            token: "x".into(),
            serial: serial.into(),
            action: PivAction::Reset { lost: vec![] },
            pin_tries_left: None,
            puk_tries_left: None,
        };
        apply(&mut r, reset("2"), Outcome::Failed);
        apply(&mut r, reset("1"), Outcome::Ok);
        let v = r.version("c", 1).unwrap();
        assert_eq!(v.copies.len(), 1);
        assert_eq!(v.copies[0].token, "yubikey:2");
        // Destroying the version leaves no copy.
        for (from, to) in [
            (State::Active, State::Deactivated),
            (State::Deactivated, State::Destroyed),
        ] {
            apply(
                &mut r,
                Event::StateChanged {
                    key: "c".into(),
                    version: 1,
                    from,
                    to,
                    reason: None,
                    since: None,
                },
                Outcome::Ok,
            );
        }
        assert!(r.version("c", 1).unwrap().copies.is_empty());
    }

    #[test]
    fn key_refs_parse() {
        assert_eq!(parse_key_ref("release").unwrap(), ("release".into(), None));
        assert_eq!(
            parse_key_ref("release/3").unwrap(),
            ("release".into(), Some(3))
        );
        assert!(parse_key_ref("release/x").is_err());
        assert!(parse_key_ref("../etc").is_err());
    }
}
