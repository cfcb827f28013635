//! Core operations ceremonies need beyond the existing services: destroying the software copy
//! of a key once tokens hold copies of it, and the offline check.

use crate::audit::{Event, Outcome};
use crate::error::{Error, Result};
use crate::keys::{State, Version};
use crate::prompt::{Confirm, PromptError, Prompter};
use crate::service::Keyward;
use crate::token::soft::SOFT_TOKEN_NAME;
use crate::token::{ObjectId, TokenError};
use std::path::Path;

impl Keyward {
    /// Deletes the software-keystore copy of a version that imports copied onto tokens, and
    /// binds the version to one of those copies (`keep_on`, default the first import) after
    /// checking that that token holds the key and signs with it. Asks for a confirmation
    /// naming what is deleted. Recorded as `key_copy_destroyed` (intent first).
    pub fn destroy_software_copy(
        &self,
        key: &str,
        version: Option<u32>,
        keep_on: Option<&str>,
        prompter: &mut dyn Prompter,
    ) -> Result<Version> {
        let v = self.resolve(key, version)?;
        if v.token != SOFT_TOKEN_NAME {
            return Err(Error::Invalid(format!(
                "{}/{} lives on {}, not in the software keystore: there is no software copy to destroy",
                v.key, v.version, v.token
            )));
        }
        if matches!(v.state, State::Destroyed) {
            return Err(Error::Invalid(format!(
                "{}/{} is destroyed already",
                v.key, v.version
            )));
        }
        // The copies imports made (`key_imported`), oldest first.
        let copies = &v.copies;
        if copies.is_empty() {
            return Err(Error::Invalid(format!(
                "no token holds a copy of {}/{}: import it first; destroying the only copy would destroy the key",
                v.key, v.version
            )));
        }
        let keep = match keep_on {
            Some(name) => copies.iter().find(|c| c.token == name).ok_or_else(|| {
                Error::Invalid(format!(
                    "{name} holds no copy of {}/{}; copies are on {}",
                    v.key,
                    v.version,
                    copies
                        .iter()
                        .map(|c| c.token.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?,
            None => &copies[0],
        }
        .clone();
        // The copy that will carry the version must hold the key and sign with it.
        let mut t = self.open_token(&keep.token)?;
        self.login(&mut t, prompter)?;
        let oid = ObjectId(keep.object_id.clone());
        let pk = t.token.public_key(&oid)?;
        if pk.key_id() != v.key_id {
            return Err(Error::Invalid(format!(
                "{} object {} has key id {}, not {}: keeping the software copy",
                keep.token,
                keep.object_id,
                &pk.key_id()[..16],
                &v.key_id[..16]
            )));
        }
        let probe = format!(
            "keyward copy check {} {}",
            v.key_id,
            crate::audit::now_rfc3339()
        );
        let sig = t.token.sign(&oid, probe.as_bytes())?;
        if !pk.verify(probe.as_bytes(), &sig) {
            return Err(Error::Invalid(format!(
                "a signature by the copy on {} does not verify: keeping the software copy",
                keep.token
            )));
        }
        let serial = t.info()?.serial;
        drop(t);
        let others: Vec<&str> = copies
            .iter()
            .filter(|c| c.token != keep.token)
            .map(|c| c.token.as_str())
            .collect();
        let what = format!(
            "delete the software-keystore copy of {}/{} (key id {}); the key stays on {}{} and in any backup that holds it",
            v.key,
            v.version,
            &v.key_id[..16],
            keep.token,
            if others.is_empty() {
                String::new()
            } else {
                format!(" (copies also on {})", others.join(", "))
            }
        );
        if !prompter.confirm(&Confirm::Destructive { what })? {
            return Err(PromptError::Cancelled.into());
        }
        let mut soft = self.open_token(SOFT_TOKEN_NAME)?;
        self.login(&mut soft, prompter)?;
        let _lock = self.op_lock()?;
        let event = Event::KeyCopyDestroyed {
            key: v.key.clone(),
            version: v.version,
            key_id: v.key_id.clone(),
            token: v.token.clone(),
            object_id: v.object_id.clone(),
            bound_token: keep.token.clone(),
            bound_serial: serial,
            bound_object_id: keep.object_id.clone(),
        };
        self.record(event.clone(), Outcome::Started, None)?;
        match soft.token.destroy(&ObjectId(v.object_id.clone())) {
            Ok(()) | Err(TokenError::KeyNotFound { .. }) => {}
            Err(e) => {
                self.record(event, Outcome::Failed, Some(e.to_string()))?;
                return Err(e.into());
            }
        }
        self.record(event, Outcome::Ok, None)?;
        self.resolve(&v.key, Some(v.version))
    }
}

/// Network interfaces other than loopback that are up, from a sysfs `class/net` directory.
pub fn interfaces_up(sys_class_net: &Path) -> std::io::Result<Vec<String>> {
    let mut up = Vec::new();
    let entries = match std::fs::read_dir(sys_class_net) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(up),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "lo" {
            continue;
        }
        let read = |f: &str| {
            std::fs::read_to_string(entry.path().join(f))
                .map(|s| s.trim().to_owned())
                .unwrap_or_default()
        };
        let state = read("operstate");
        // Some virtual links (tun, wireguard) report "unknown" while they carry traffic.
        if state == "up" || (state == "unknown" && read("carrier") == "1") {
            up.push(name);
        }
    }
    up.sort();
    Ok(up)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_non_loopback_interfaces_that_are_up_count() {
        let d = tempfile::tempdir().unwrap();
        let mk = |name: &str, state: &str, carrier: Option<&str>| {
            let p = d.path().join(name);
            std::fs::create_dir(&p).unwrap();
            std::fs::write(p.join("operstate"), format!("{state}\n")).unwrap();
            if let Some(c) = carrier {
                std::fs::write(p.join("carrier"), format!("{c}\n")).unwrap();
            }
        };
        mk("lo", "unknown", Some("1"));
        mk("eth0", "up", Some("1"));
        mk("eth1", "down", Some("0"));
        mk("wg0", "unknown", Some("1"));
        mk("dummy0", "unknown", None);
        assert_eq!(interfaces_up(d.path()).unwrap(), vec!["eth0", "wg0"]);
        assert!(interfaces_up(&d.path().join("none")).unwrap().is_empty());
    }
}
