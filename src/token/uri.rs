//! RFC 7512 PKCS#11 URIs naming a token, e.g.
//! `pkcs11:token=keyward;serial=1c9b?module-path=/usr/lib/softhsm/libsofthsm2.so`.

use super::pkcs11::TokenSelector;
use std::path::PathBuf;

/// Well-known module locations (Debian), probed when a URI names no module.
pub const WELL_KNOWN_MODULES: &[(&str, &str)] = &[
    ("softhsm2", "/usr/lib/softhsm/libsofthsm2.so"),
    (
        "opensc-pkcs11",
        "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so",
    ),
    ("ykcs11", "/usr/lib/x86_64-linux-gnu/libykcs11.so"),
];

#[derive(Debug, PartialEq, Eq)]
pub struct Pkcs11Uri {
    pub module: PathBuf,
    pub selector: TokenSelector,
}

fn pct_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .ok_or_else(|| format!("bad percent-encoding in {s:?}"))?;
            out.push(
                u8::from_str_radix(hex, 16)
                    .map_err(|_| format!("bad percent-encoding in {s:?}"))?,
            );
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} is not UTF-8"))
}

pub fn parse(uri: &str) -> Result<Pkcs11Uri, String> {
    let rest = uri
        .strip_prefix("pkcs11:")
        .ok_or_else(|| format!("{uri:?} is not a pkcs11: URI"))?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut selector = TokenSelector::default();
    let mut module = None;
    let mut module_name = None;
    for attr in path.split(';').filter(|a| !a.is_empty()) {
        let (k, v) = attr
            .split_once('=')
            .ok_or_else(|| format!("bad attribute {attr:?} in {uri:?}"))?;
        let v = pct_decode(v)?;
        match k {
            "token" => selector.label = Some(v),
            "serial" => selector.serial = Some(v),
            "slot-id" => selector.slot = Some(v.parse().map_err(|_| format!("bad slot-id {v:?}"))?),
            // Object and library attributes do not select a token; accept and ignore them.
            "manufacturer"
            | "model"
            | "library-manufacturer"
            | "library-description"
            | "library-version"
            | "object"
            | "id"
            | "type"
            | "slot-description"
            | "slot-manufacturer" => {}
            other => {
                return Err(format!(
                    "unknown PKCS#11 URI attribute {other:?} in {uri:?}"
                ))
            }
        }
    }
    for q in query.split('&').filter(|a| !a.is_empty()) {
        let (k, v) = q
            .split_once('=')
            .ok_or_else(|| format!("bad query attribute {q:?} in {uri:?}"))?;
        let v = pct_decode(v)?;
        match k {
            "module-path" => module = Some(PathBuf::from(v)),
            "module-name" => module_name = Some(v),
            "pin-value" | "pin-source" => {
                return Err(
                    "PINs in PKCS#11 URIs are refused: they end up in shell history and process lists; use a prompt, --pin-file or KEYWARD_PIN".into(),
                )
            }
            _ => {}
        }
    }
    let module = match (module, module_name) {
        (Some(p), _) => p,
        (None, Some(name)) => WELL_KNOWN_MODULES
            .iter()
            .find(|(n, _)| *n == name || format!("lib{n}") == name)
            .map(|(_, p)| PathBuf::from(p))
            .ok_or_else(|| format!("unknown module-name {name:?}; use module-path"))?,
        (None, None) => PathBuf::from(WELL_KNOWN_MODULES[0].1),
    };
    Ok(Pkcs11Uri { module, selector })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_token_serial_and_module() {
        let u = parse("pkcs11:token=my%20hsm;serial=42?module-path=/opt/m.so").unwrap();
        assert_eq!(u.module, PathBuf::from("/opt/m.so"));
        assert_eq!(u.selector.label.as_deref(), Some("my hsm"));
        assert_eq!(u.selector.serial.as_deref(), Some("42"));
    }

    #[test]
    fn refuses_pins_in_uris() {
        assert!(parse("pkcs11:token=a?pin-value=1234")
            .unwrap_err()
            .contains("refused"));
    }
}
