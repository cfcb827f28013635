//! `keyward.toml`: the tokens keyward knows by name, and a few settings.
//!
//! ```toml
//! [[token]]
//! name = "hsm"
//! kind = "pkcs11"
//! module = "/usr/lib/softhsm/libsofthsm2.so"
//! label = "keyward"        # token label, and/or
//! serial = "1c9b3a8e..."   # token serial
//!
//! [[token]]
//! name = "desk"
//! kind = "piv"             # a YubiKey's PIV application
//! serial = "12345678"      # its serial
//!
//! [audit]
//! checkpoint_key = "audit" # key that signs `audit checkpoint`
//!
//! [piv]
//! # Extra roots for YubiKey attestation, besides Yubico's (which keyward ships). Only for a
//! # test CA (the virtual card's) or a private PKI: a listed root is trusted like Yubico's.
//! attestation_roots = ["attestation-ca/root-ca.pem"]   # relative to the keyward home
//! ```

use crate::fsutil;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default, rename = "token", skip_serializing_if = "Vec::is_empty")]
    pub tokens: Vec<TokenConfig>,
    #[serde(default, skip_serializing_if = "AuditConfig::is_default")]
    pub audit: AuditConfig,
    #[serde(default, skip_serializing_if = "PivConfig::is_default")]
    pub piv: PivConfig,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PivConfig {
    /// PEM files of extra attestation roots (relative paths: to the keyward home).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attestation_roots: Vec<PathBuf>,
}

impl PivConfig {
    fn is_default(&self) -> bool {
        self == &PivConfig::default()
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_key: Option<String>,
}

impl AuditConfig {
    fn is_default(&self) -> bool {
        self == &AuditConfig::default()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConfigKind {
    Pkcs11,
    Piv,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub name: String,
    pub kind: ConfigKind,
    /// PKCS#11 module path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<PathBuf>,
    /// PKCS#11 token label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Token serial (PKCS#11) or YubiKey serial (PIV).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// PKCS#11 slot id, when label and serial are not enough.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<u64>,
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let config: Config =
            toml::from_str(&text).map_err(|e| format!("{} is not valid: {e}", path.display()))?;
        let mut seen = std::collections::BTreeSet::new();
        for t in &config.tokens {
            if t.name == crate::token::soft::SOFT_TOKEN_NAME
                || t.name.starts_with("pkcs11:")
                || t.name == crate::token::piv::PIV_PREFIX
                || t.name.starts_with("yubikey:")
            {
                return Err(format!(
                    "{}: the token name {:?} is reserved",
                    path.display(),
                    t.name
                ));
            }
            if !seen.insert(&t.name) {
                return Err(format!(
                    "{}: the token name {:?} appears twice",
                    path.display(),
                    t.name
                ));
            }
            if t.kind == ConfigKind::Pkcs11 && t.module.is_none() {
                return Err(format!(
                    "{}: token {:?} needs `module = \"/path/to/module.so\"`",
                    path.display(),
                    t.name
                ));
            }
        }
        Ok(config)
    }

    pub fn save(&self, path: &Path) -> Result<(), String> {
        let text = toml::to_string_pretty(self).map_err(|e| e.to_string())?;
        let text = format!("# keyward configuration; see docs/FORMATS.md\n{text}");
        fsutil::write_atomic(path, text.as_bytes(), false)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    pub fn token(&self, name: &str) -> Option<&TokenConfig> {
        self.tokens.iter().find(|t| t.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_reserved_names() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("keyward.toml");
        let c = Config {
            tokens: vec![TokenConfig {
                name: "hsm".into(),
                kind: ConfigKind::Pkcs11,
                module: Some("/usr/lib/softhsm/libsofthsm2.so".into()),
                label: Some("k".into()),
                serial: None,
                slot: None,
            }],
            audit: AuditConfig::default(),
            piv: PivConfig {
                attestation_roots: vec!["test-ca.pem".into()],
            },
        };
        c.save(&p).unwrap();
        assert_eq!(Config::load(&p).unwrap(), c);
        std::fs::write(
            &p,
            "[[token]]\nname = \"soft\"\nkind = \"pkcs11\"\nmodule = \"/x\"\n",
        )
        .unwrap();
        assert!(Config::load(&p).unwrap_err().contains("reserved"));
    }
}
