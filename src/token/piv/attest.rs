//! YubiKey PIV attestation: the card signs a certificate for a slot's key with its own
//! attestation key (slot f9), whose certificate Yubico's PIV root CA signed at manufacture.
//!
//! Chain checked here: slot attestation certificate → f9 certificate → the pinned
//! `Yubico PIV Root CA Serial 263751` (assets/yubico-piv-ca.pem, fingerprint pinned below).
//! The attested public key must be the key keyward knows, and the serial in the attestation
//! (extension 1.3.6.1.4.1.41482.3.7) the card's. Firmware 5.7.4 and later attest under
//! "Yubico Attestation Root 1" through intermediates the card does not carry: such a chain is
//! reported as not verified, with the reason.

use crate::token::PublicKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use x509_cert::der::{Decode, Encode};
use x509_cert::Certificate;

/// Yubico's PIV attestation root, as shipped in `assets/` (with its source).
pub const YUBICO_PIV_ROOT_PEM: &str = include_str!("../../../assets/yubico-piv-ca.pem");
/// SHA-256 of the root's DER; a replaced asset file fails closed.
pub const YUBICO_PIV_ROOT_SHA256: &str =
    "63ece914e54dd87915f34033c85af4c0696ba1512f8add66ced738331207b546";

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

/// The DER of the first certificate in a PEM text (comment lines allowed around it).
pub fn pem_to_der(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let start = text.find("-----BEGIN CERTIFICATE-----")?;
    let body = &text[start + "-----BEGIN CERTIFICATE-----".len()..];
    let end = body.find("-----END CERTIFICATE-----")?;
    let b64: String = body[..end].chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

/// The pinned root, checked against its fingerprint.
fn root() -> Result<Certificate, String> {
    let der = pem_to_der(YUBICO_PIV_ROOT_PEM).ok_or("the shipped Yubico root is not PEM")?;
    let fp = hex::encode(Sha256::digest(&der));
    if fp != YUBICO_PIV_ROOT_SHA256 {
        return Err(format!(
            "the shipped Yubico root has fingerprint {fp}, not the pinned {YUBICO_PIV_ROOT_SHA256}"
        ));
    }
    Certificate::from_der(&der).map_err(|e| format!("the shipped Yubico root: {e}"))
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
/// (`intermediate`, DER) up to the pinned Yubico root; checks the serial and the public key
/// when given. Never fails: problems are reported in the result.
pub fn verify_chain(
    leaf: &[u8],
    intermediate: &[u8],
    expected_serial: Option<u32>,
    expected_key: Option<&PublicKey>,
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
    let root = match root() {
        Ok(r) => r,
        Err(e) => {
            a.problems.push(e);
            return a;
        }
    };
    a.chain = vec![
        leaf.tbs_certificate.subject.to_string(),
        inter.tbs_certificate.subject.to_string(),
        root.tbs_certificate.subject.to_string(),
    ];
    if let Err(e) = check_signature(&leaf, &inter) {
        a.problems.push(e);
    }
    if let Err(e) = check_signature(&inter, &root) {
        if inter.tbs_certificate.issuer != root.tbs_certificate.subject {
            a.problems.push(format!(
                "the f9 certificate is issued by {}: firmware 5.7.4 and later attest under Yubico Attestation Root 1, which this keyward does not ship yet",
                inter.tbs_certificate.issuer
            ));
        } else {
            a.problems.push(e);
        }
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
        let a = verify_chain(&der(LEAF), &der(F9), Some(13_078_782), Some(&key));
        assert!(a.verified, "{:?}", a.problems);
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
        let a = verify_chain(&der(LEAF), &der(F9), Some(13_078_782), Some(&other));
        assert!(!a.verified);
        assert!(a.problems[0].contains("is not the key"), "{:?}", a.problems);
        let key = PublicKey::from_pem(KEY).unwrap();
        let a = verify_chain(&der(LEAF), &der(F9), Some(1), Some(&key));
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
        let a = verify_chain(&leaf, &der(F9), None, Some(&key));
        assert!(!a.verified);
        assert!(
            a.problems[0].contains("does not verify"),
            "{:?}",
            a.problems
        );
        // The leaf presented with the root as its "intermediate": the issuer does not match.
        let root_der = pem_to_der(YUBICO_PIV_ROOT_PEM).unwrap();
        let a = verify_chain(&der(LEAF), &root_der, None, Some(&key));
        assert!(!a.verified);
        // A self-made "f9" with Yubico's subject but its own key.
        let a = verify_chain(&der(F9), &der(F9), None, None);
        assert!(!a.verified);
    }

    #[test]
    fn garbage_is_reported_not_panicked() {
        let a = verify_chain(b"nope", b"nope", None, None);
        assert!(!a.verified);
        assert!(!a.problems.is_empty());
    }
}
