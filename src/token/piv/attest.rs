//! YubiKey PIV attestation: the card signs a certificate for a slot's key with its own
//! attestation key (slot f9), whose certificate Yubico's PIV root CA signed at manufacture.
//!
//! Chains checked here, every shipped certificate pinned by its SHA-256:
//! - before firmware 5.7.4: slot attestation → f9 certificate → `Yubico PIV Root CA Serial
//!   263751` (assets/yubico-piv-ca.pem);
//! - from 5.7.4: slot attestation → f9 → `Yubico PIV Attestation A 1|B 1` → `Yubico
//!   Attestation Intermediate A 1|B 1` (assets/yubico-piv-intermediates.pem; the card does not
//!   carry them) → `Yubico Attestation Root 1` (assets/yubico-attestation-root-1.pem).
//!
//! The attested public key must be the key keyward knows, and the serial in the attestation
//! (extension 1.3.6.1.4.1.41482.3.7) the card's.
//!
//! Other roots are trusted only when keyward.toml lists them (`[piv] attestation_roots`), for
//! a test CA such as the virtual card's or a private PKI; the result always names the root
//! that verified and where it came from.

use crate::token::PublicKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::Path;
use x509_cert::der::{Decode, Encode};
use x509_cert::Certificate;

/// Yubico's PIV attestation root, as shipped in `assets/` (with its source).
pub const YUBICO_PIV_ROOT_PEM: &str = include_str!("../../../assets/yubico-piv-ca.pem");
/// SHA-256 of the root's DER; a replaced asset file fails closed.
pub const YUBICO_PIV_ROOT_SHA256: &str =
    "63ece914e54dd87915f34033c85af4c0696ba1512f8add66ced738331207b546";
/// Yubico's current attestation root (firmware 5.7.4 and later).
pub const YUBICO_ATTESTATION_ROOT_1_PEM: &str =
    include_str!("../../../assets/yubico-attestation-root-1.pem");
const YUBICO_ATTESTATION_ROOT_1_SHA256: &str =
    "62760c6a6ef91679f454c8902b80fd009825b3f25da90f1fbace2ec6586cd5a8";
/// The intermediates between Root 1 and a card's f9 certificate.
pub const YUBICO_INTERMEDIATES_PEM: &str =
    include_str!("../../../assets/yubico-piv-intermediates.pem");
const YUBICO_INTERMEDIATES_SHA256: [&str; 4] = [
    "4698a1d3389c3ec60016c216250f1d0439922832d65142327436376dc2942b55",
    "d4cc3f456fdaf4e7812a21aab1dfe9d8e27d24e2fd2d6f21c9940109f0daa754",
    "6de693f05376f5d8ca29069261e1c8626c75d503bd2edbfd75354cad1f722870",
    "2d55b7998f4e42569d6d8fa382b6dc77d1dacf07358b19701163892922b17052",
];

const OID_FIRMWARE: &str = "1.3.6.1.4.1.41482.3.3";
const OID_SERIAL: &str = "1.3.6.1.4.1.41482.3.7";
const OID_POLICY: &str = "1.3.6.1.4.1.41482.3.8";
const OID_FORM_FACTOR: &str = "1.3.6.1.4.1.41482.3.9";

const SHA256_RSA: &str = "1.2.840.113549.1.1.11";
const ECDSA_SHA256: &str = "1.2.840.10045.4.3.2";
const ECDSA_SHA384: &str = "1.2.840.10045.4.3.3";

/// The result of checking a key's attestation. `verified` is true only when every check
/// passed; `problems` says what failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attestation {
    pub verified: bool,
    pub problems: Vec<String>,
    /// The card serial the attestation names.
    pub serial: Option<u32>,
    pub firmware: Option<String>,
    pub pin_policy: Option<String>,
    pub touch_policy: Option<String>,
    pub form_factor: Option<String>,
    /// keyward key id (SHA-256 of the SPKI) of the attested public key.
    pub attested_key_id: Option<String>,
    /// Subjects from the slot's certificate up to the root.
    pub chain: Vec<String>,
    /// The subject of the root the chain verified to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    /// Where that root comes from: [`YUBICO_SOURCE`], or the keyward.toml entry (path and
    /// SHA-256 of the certificate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_source: Option<String>,
    /// The slot attestation certificate and the f9 certificate, PEM, for independent checks
    /// (`openssl verify -CAfile root.pem -untrusted f9.pem slot.pem`).
    pub certificates_pem: Vec<String>,
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The DER of every certificate in a PEM text (comment lines allowed around them).
pub fn pems_to_ders(text: &str) -> Vec<Vec<u8>> {
    use base64::Engine;
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let body = &rest[start + BEGIN.len()..];
        let Some(end) = body.find(END) else { break };
        let b64: String = body[..end].chars().filter(|c| !c.is_whitespace()).collect();
        if let Ok(der) = base64::engine::general_purpose::STANDARD.decode(b64) {
            out.push(der);
        }
        rest = &body[end + END.len()..];
    }
    out
}

/// The DER of the first certificate in a PEM text.
#[cfg(test)]
fn pem_to_der(text: &str) -> Option<Vec<u8>> {
    pems_to_ders(text).into_iter().next()
}

/// [`Attestation::root_source`] of Yubico's roots.
pub const YUBICO_SOURCE: &str = "Yubico (shipped with keyward)";

/// A trust anchor: a root (or any certificate trusted as the end of a chain) and its source.
#[derive(Clone, Debug)]
pub struct Anchor {
    cert: Certificate,
    source: String,
}

/// The extra attestation roots keyward.toml lists (`[piv] attestation_roots`), each file
/// holding one or more PEM certificates. An unreadable or empty file is an error: a
/// configured root never silently disappears.
pub fn load_extra_roots(paths: &[impl AsRef<Path>]) -> Result<Vec<Anchor>, String> {
    let mut out = Vec::new();
    for path in paths {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "keyward.toml [piv] attestation_roots: cannot read {}: {e}",
                path.display()
            )
        })?;
        let ders = pems_to_ders(&text);
        if ders.is_empty() {
            return Err(format!(
                "keyward.toml [piv] attestation_roots: {} holds no PEM certificate",
                path.display()
            ));
        }
        for der in ders {
            let cert = Certificate::from_der(&der).map_err(|e| {
                format!(
                    "keyward.toml [piv] attestation_roots: {}: {e}",
                    path.display()
                )
            })?;
            out.push(Anchor {
                cert,
                source: format!(
                    "keyward.toml [piv] attestation_roots: {} (sha256 {})",
                    path.display(),
                    hex::encode(Sha256::digest(&der))
                ),
            });
        }
    }
    Ok(out)
}

/// Parses shipped certificates, each of which must have one of the pinned fingerprints.
fn pinned(what: &str, pem_text: &str, fingerprints: &[&str]) -> Result<Vec<Certificate>, String> {
    let ders = pems_to_ders(pem_text);
    if ders.len() != fingerprints.len() {
        return Err(format!(
            "the shipped {what} holds {} certificates, not the pinned {}",
            ders.len(),
            fingerprints.len()
        ));
    }
    ders.iter()
        .map(|der| {
            let fp = hex::encode(Sha256::digest(der));
            if !fingerprints.contains(&fp.as_str()) {
                return Err(format!(
                    "the shipped {what} holds a certificate with fingerprint {fp}, which is not pinned"
                ));
            }
            Certificate::from_der(der).map_err(|e| format!("the shipped {what}: {e}"))
        })
        .collect()
}

/// The pinned legacy root (firmware before 5.7.4).
fn root() -> Result<Certificate, String> {
    pinned(
        "Yubico PIV root",
        YUBICO_PIV_ROOT_PEM,
        &[YUBICO_PIV_ROOT_SHA256],
    )?
    .pop()
    .ok_or_else(|| "no Yubico PIV root".into())
}

/// Both pinned roots, and the pinned intermediates.
fn anchors() -> Result<(Vec<Anchor>, Vec<Certificate>), String> {
    let mut roots = vec![root()?];
    roots.extend(pinned(
        "Yubico Attestation Root 1",
        YUBICO_ATTESTATION_ROOT_1_PEM,
        &[YUBICO_ATTESTATION_ROOT_1_SHA256],
    )?);
    let roots = roots
        .into_iter()
        .map(|cert| Anchor {
            cert,
            source: YUBICO_SOURCE.into(),
        })
        .collect();
    let intermediates = pinned(
        "Yubico attestation intermediates",
        YUBICO_INTERMEDIATES_PEM,
        &YUBICO_INTERMEDIATES_SHA256,
    )?;
    Ok((roots, intermediates))
}

/// From `cert` up to a trusted root through pinned intermediates; returns the subjects above
/// `cert` (the root last) and the root's anchor.
fn walk_to_root<'a>(
    cert: &Certificate,
    roots: &'a [Anchor],
    intermediates: &[Certificate],
) -> Result<(Vec<String>, &'a Anchor), String> {
    let mut chain = Vec::new();
    let mut current = cert.clone();
    for _ in 0..=intermediates.len() {
        let issuer = &current.tbs_certificate.issuer;
        let mut candidates = roots
            .iter()
            .filter(|r| &r.cert.tbs_certificate.subject == issuer)
            .peekable();
        if candidates.peek().is_some() {
            // Several anchors may share a subject: the one whose key signed wins.
            let mut last = String::new();
            for root in candidates {
                match check_signature(&current, &root.cert) {
                    Ok(()) => {
                        chain.push(root.cert.tbs_certificate.subject.to_string());
                        return Ok((chain, root));
                    }
                    Err(e) => last = e,
                }
            }
            return Err(last);
        }
        let Some(next) = intermediates
            .iter()
            .find(|c| &c.tbs_certificate.subject == issuer)
        else {
            return Err(format!(
                "{} is issued by {issuer}, which is neither a Yubico root nor an intermediate keyward ships, nor a root listed in keyward.toml [piv] attestation_roots (list a test or private CA there to trust it)",
                current.tbs_certificate.subject
            ));
        };
        check_signature(&current, next)?;
        chain.push(next.tbs_certificate.subject.to_string());
        current = next.clone();
    }
    Err("the certificate chain loops".into())
}

/// Checks that `issuer` signed `subject`.
fn check_signature(subject: &Certificate, issuer: &Certificate) -> Result<(), String> {
    use spki::DecodePublicKey;
    if subject.tbs_certificate.issuer != issuer.tbs_certificate.subject {
        return Err(format!(
            "{} is issued by {}, not by {}",
            subject.tbs_certificate.subject,
            subject.tbs_certificate.issuer,
            issuer.tbs_certificate.subject
        ));
    }
    let tbs = subject
        .tbs_certificate
        .to_der()
        .map_err(|e| format!("re-encoding the certificate: {e}"))?;
    let sig = subject
        .signature
        .as_bytes()
        .ok_or("the signature is not a whole number of bytes")?;
    let key = issuer
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| e.to_string())?;
    let bad = |what: &str| {
        format!(
            "the signature of {} by {} does not verify ({what})",
            subject.tbs_certificate.subject, issuer.tbs_certificate.subject
        )
    };
    let ok = match subject.signature_algorithm.oid.to_string().as_str() {
        SHA256_RSA => {
            use signature::Verifier;
            let pk = rsa::RsaPublicKey::from_public_key_der(&key)
                .map_err(|_| bad("issuer key is not RSA"))?;
            let vk = rsa::pkcs1v15::VerifyingKey::<Sha256>::new(pk);
            let s = rsa::pkcs1v15::Signature::try_from(sig)
                .map_err(|_| bad("malformed RSA signature"))?;
            vk.verify(&tbs, &s).is_ok()
        }
        ECDSA_SHA256 | ECDSA_SHA384 => {
            use ecdsa::signature::hazmat::PrehashVerifier;
            let digest = if subject.signature_algorithm.oid.to_string() == ECDSA_SHA256 {
                Sha256::digest(&tbs).to_vec()
            } else {
                sha2::Sha384::digest(&tbs).to_vec()
            };
            if let Ok(vk) = p256::ecdsa::VerifyingKey::from_public_key_der(&key) {
                let s = p256::ecdsa::Signature::from_der(sig)
                    .map_err(|_| bad("malformed ECDSA signature"))?;
                vk.verify_prehash(&digest, &s).is_ok()
            } else if let Ok(vk) = p384::ecdsa::VerifyingKey::from_public_key_der(&key) {
                let s = p384::ecdsa::Signature::from_der(sig)
                    .map_err(|_| bad("malformed ECDSA signature"))?;
                vk.verify_prehash(&digest, &s).is_ok()
            } else {
                return Err(bad("issuer key is not P-256 or P-384"));
            }
        }
        other => return Err(bad(&format!("signature algorithm {other} not supported"))),
    };
    if ok {
        Ok(())
    } else {
        Err(bad("wrong signature"))
    }
}

fn extension<'a>(cert: &'a Certificate, oid: &str) -> Option<&'a [u8]> {
    cert.tbs_certificate
        .extensions
        .as_ref()?
        .iter()
        .find(|e| e.extn_id.to_string() == oid)
        .map(|e| e.extn_value.as_bytes())
}

fn pin_policy_name(b: u8) -> String {
    match b {
        1 => "never".into(),
        2 => "once".into(),
        3 => "always".into(),
        4 => "match-once".into(),
        5 => "match-always".into(),
        other => format!("unknown ({other})"),
    }
}

fn touch_policy_name(b: u8) -> String {
    match b {
        1 => "never".into(),
        2 => "always".into(),
        3 => "cached".into(),
        other => format!("unknown ({other})"),
    }
}

fn form_factor_name(b: u8) -> String {
    let base = match b & 0x3f {
        1 => "USB-A keychain",
        2 => "USB-A nano",
        3 => "USB-C keychain",
        4 => "USB-C nano",
        5 => "USB-C/Lightning",
        6 => "USB-A Bio",
        7 => "USB-C Bio",
        _ => "unspecified",
    };
    let mut s = base.to_owned();
    if b & 0x80 != 0 {
        s.push_str(", FIPS");
    }
    if b & 0x40 != 0 {
        s.push_str(", CSPN");
    }
    s
}

/// Verifies a slot attestation (`leaf`, DER) with the card's f9 certificate
/// (`intermediate`, DER) up to a pinned Yubico root or one of `extra_roots`; checks the serial
/// and the public key when given. Never fails: problems are reported in the result.
pub fn verify_chain(
    leaf: &[u8],
    intermediate: &[u8],
    expected_serial: Option<u32>,
    expected_key: Option<&PublicKey>,
    extra_roots: &[Anchor],
) -> Attestation {
    let mut a = Attestation {
        verified: false,
        problems: Vec::new(),
        serial: None,
        firmware: None,
        pin_policy: None,
        touch_policy: None,
        form_factor: None,
        attested_key_id: None,
        chain: Vec::new(),
        root: None,
        root_source: None,
        certificates_pem: vec![pem("CERTIFICATE", leaf), pem("CERTIFICATE", intermediate)],
    };
    let leaf = match Certificate::from_der(leaf) {
        Ok(c) => c,
        Err(e) => {
            a.problems.push(format!(
                "the slot attestation certificate does not parse: {e}"
            ));
            return a;
        }
    };
    let inter = match Certificate::from_der(intermediate) {
        Ok(c) => c,
        Err(e) => {
            a.problems
                .push(format!("the f9 certificate does not parse: {e}"));
            return a;
        }
    };
    let (mut roots, intermediates) = match anchors() {
        Ok(a) => a,
        Err(e) => {
            a.problems.push(e);
            return a;
        }
    };
    roots.extend_from_slice(extra_roots);
    a.chain = vec![
        leaf.tbs_certificate.subject.to_string(),
        inter.tbs_certificate.subject.to_string(),
    ];
    if let Err(e) = check_signature(&leaf, &inter) {
        a.problems.push(e);
    }
    match walk_to_root(&inter, &roots, &intermediates) {
        Ok((above, root)) => {
            a.chain.extend(above);
            a.root = Some(root.cert.tbs_certificate.subject.to_string());
            a.root_source = Some(root.source.clone());
        }
        Err(e) => a.problems.push(e),
    }
    if let Some(v) = extension(&leaf, OID_SERIAL) {
        match x509_cert::der::asn1::Uint::from_der(v) {
            Ok(u) => {
                let bytes = u.as_bytes();
                if bytes.len() <= 4 {
                    a.serial = Some(bytes.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)));
                }
            }
            Err(_) => a
                .problems
                .push("the serial extension does not parse".into()),
        }
    }
    if let Some([maj, min, patch]) = extension(&leaf, OID_FIRMWARE) {
        a.firmware = Some(format!("{maj}.{min}.{patch}"));
    }
    if let Some([pin, touch, ..]) = extension(&leaf, OID_POLICY) {
        a.pin_policy = Some(pin_policy_name(*pin));
        a.touch_policy = Some(touch_policy_name(*touch));
    }
    if let Some([f, ..]) = extension(&leaf, OID_FORM_FACTOR) {
        a.form_factor = Some(form_factor_name(*f));
    }
    match (expected_serial, a.serial) {
        (Some(want), Some(got)) if want != got => a.problems.push(format!(
            "the attestation names serial {got}, but the card is {want}"
        )),
        (Some(_), None) => a.problems.push("the attestation names no serial".into()),
        _ => {}
    }
    match leaf.tbs_certificate.subject_public_key_info.to_der() {
        Ok(der) => {
            a.attested_key_id = Some(hex::encode(Sha256::digest(&der)));
            if let Some(k) = expected_key {
                if k.spki_der() != der.as_slice() {
                    a.problems.push(format!(
                        "the attested public key (key id {}) is not the key (key id {})",
                        &hex::encode(Sha256::digest(&der))[..16],
                        &k.key_id()[..16]
                    ));
                }
            }
        }
        Err(e) => a.problems.push(format!("attested public key: {e}")),
    }
    a.verified = a.problems.is_empty();
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    // Genuine certificates of a YubiKey (firmware 5.2.6), as published in sigstore/cosign's
    // TOKENS.md; see tests/vectors/piv-attestation/README.md.
    const LEAF: &str = include_str!("../../../tests/vectors/piv-attestation/9c-attestation.pem");
    const F9: &str = include_str!("../../../tests/vectors/piv-attestation/f9-device.pem");
    const KEY: &str = include_str!("../../../tests/vectors/piv-attestation/9c-public.pem");

    fn der(pem: &str) -> Vec<u8> {
        pem_to_der(pem).unwrap()
    }

    #[test]
    fn the_shipped_root_is_pinned() {
        let r = root().unwrap();
        assert_eq!(
            r.tbs_certificate.subject.to_string(),
            "CN=Yubico PIV Root CA Serial 263751"
        );
        check_signature(&r, &r).unwrap();
    }

    #[test]
    fn a_genuine_attestation_verifies() {
        let key = PublicKey::from_pem(KEY).unwrap();
        let a = verify_chain(&der(LEAF), &der(F9), Some(13_078_782), Some(&key), &[]);
        assert!(a.verified, "{:?}", a.problems);
        assert_eq!(
            a.root.as_deref(),
            Some("CN=Yubico PIV Root CA Serial 263751")
        );
        assert_eq!(a.root_source.as_deref(), Some(YUBICO_SOURCE));
        assert_eq!(a.serial, Some(13_078_782));
        assert_eq!(a.firmware.as_deref(), Some("5.2.6"));
        assert_eq!(a.pin_policy.as_deref(), Some("always"));
        assert_eq!(a.touch_policy.as_deref(), Some("always"));
        assert_eq!(a.attested_key_id.as_deref(), Some(key.key_id().as_str()));
        assert_eq!(a.chain.len(), 3);
        assert!(a.chain[0].contains("YubiKey PIV Attestation 9c"));
    }

    #[test]
    fn another_key_or_serial_is_refused() {
        let other = PublicKey::from_ec_point(
            crate::token::Algorithm::P256,
            p256::SecretKey::random(&mut rand::rngs::OsRng)
                .public_key()
                .to_sec1_bytes()
                .as_ref(),
        )
        .unwrap();
        let a = verify_chain(&der(LEAF), &der(F9), Some(13_078_782), Some(&other), &[]);
        assert!(!a.verified);
        assert!(a.problems[0].contains("is not the key"), "{:?}", a.problems);
        let key = PublicKey::from_pem(KEY).unwrap();
        let a = verify_chain(&der(LEAF), &der(F9), Some(1), Some(&key), &[]);
        assert!(!a.verified);
        assert!(
            a.problems[0].contains("serial 13078782"),
            "{:?}",
            a.problems
        );
    }

    #[test]
    fn a_tampered_or_skipped_link_is_refused() {
        let key = PublicKey::from_pem(KEY).unwrap();
        let mut leaf = der(LEAF);
        let n = leaf.len();
        leaf[n - 5] ^= 0x01; // inside the signature
        let a = verify_chain(&leaf, &der(F9), None, Some(&key), &[]);
        assert!(!a.verified);
        assert!(
            a.problems[0].contains("does not verify"),
            "{:?}",
            a.problems
        );
        // The leaf presented with the root as its "intermediate": the issuer does not match.
        let root_der = pem_to_der(YUBICO_PIV_ROOT_PEM).unwrap();
        let a = verify_chain(&der(LEAF), &root_der, None, Some(&key), &[]);
        assert!(!a.verified);
        // A self-made "f9" with Yubico's subject but its own key.
        let a = verify_chain(&der(F9), &der(F9), None, None, &[]);
        assert!(!a.verified);
    }

    #[test]
    fn the_shipped_intermediates_chain_to_root_1() {
        // Genuine Yubico certificates: PIV Attestation A 1 / B 1 → Intermediate A 1 / B 1 →
        // Root 1, the path of every f9 certificate from firmware 5.7.4 on.
        let (roots, intermediates) = anchors().unwrap();
        assert_eq!(roots.len(), 2);
        for piv in ["Yubico PIV Attestation A 1", "Yubico PIV Attestation B 1"] {
            let c = intermediates
                .iter()
                .find(|c| c.tbs_certificate.subject.to_string() == format!("CN={piv}"))
                .unwrap();
            let (chain, _) = walk_to_root(c, &roots, &intermediates).unwrap();
            assert_eq!(chain.len(), 2, "{chain:?}");
            assert!(chain[0].starts_with("CN=Yubico Attestation Intermediate"));
            assert_eq!(chain[1], "CN=Yubico Attestation Root 1");
        }
        // The legacy chain walks to the legacy root in one step.
        let f9 = Certificate::from_der(&der(F9)).unwrap();
        assert_eq!(
            walk_to_root(&f9, &roots, &intermediates).unwrap().0,
            ["CN=Yubico PIV Root CA Serial 263751"]
        );
        // A certificate from outside Yubico's PKI names its issuer.
        let leaf = Certificate::from_der(&der(LEAF)).unwrap();
        let only_roots = walk_to_root(&leaf, &roots[..1], &[]).unwrap_err();
        assert!(
            only_roots.contains("CN=Yubico PIV Attestation"),
            "{only_roots}"
        );
    }

    #[test]
    fn an_unpinned_certificate_is_refused() {
        let two = format!("{YUBICO_PIV_ROOT_PEM}{F9}");
        assert!(pinned("x", &two, &[YUBICO_PIV_ROOT_SHA256, "00"]).is_err());
        assert!(pinned("x", F9, &[YUBICO_PIV_ROOT_SHA256]).is_err());
    }

    #[test]
    fn garbage_is_reported_not_panicked() {
        let a = verify_chain(b"nope", b"nope", None, None, &[]);
        assert!(!a.verified);
        assert!(!a.problems.is_empty());
    }
}
