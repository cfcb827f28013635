//! One conformance suite, run against every backend: the software keystore and a SoftHSM2
//! token through PKCS#11. Each algorithm the token offers: generate, list, sign, verify with
//! RustCrypto and with openssl, destroy.
#![allow(clippy::unwrap_used)]

mod support;

use keyward::secret::Pin;
use keyward::token::pkcs11::{initialize_token, Pkcs11Token, TokenSelector};
use keyward::token::soft::SoftToken;
use keyward::token::{Algorithm, GenerateRequest, ObjectId, Token, TokenError};
use sha2::{Digest, Sha256};
use spki::DecodePublicKey;
use std::path::Path;
use std::sync::OnceLock;
use support::*;

/// SoftHSM2 reads its config once per process, so this test binary gets one private config;
/// each test initialises its own token in it.
fn softhsm() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("tokens")).unwrap();
        let conf = d.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nlog.level = ERROR\n",
                d.path().join("tokens").display()
            ),
        )
        .unwrap();
        std::env::set_var("SOFTHSM2_CONF", &conf);
        d
    })
    .path()
}

fn hsm_token(label: &str) -> Pkcs11Token {
    softhsm();
    initialize_token(
        Path::new(SOFTHSM_MODULE),
        label,
        &Pin::new(SO_PIN.into()),
        &Pin::new(USER_PIN.into()),
    )
    .unwrap();
    let mut t = Pkcs11Token::open(
        label,
        Path::new(SOFTHSM_MODULE),
        &TokenSelector {
            label: Some(label.into()),
            ..Default::default()
        },
    )
    .unwrap();
    t.login(&Pin::new(USER_PIN.into())).unwrap();
    t
}

/// Verifies with RustCrypto directly (not through keyward's own PublicKey::verify).
fn rustcrypto_verify(alg: Algorithm, spki: &[u8], data: &[u8], sig: &[u8]) -> bool {
    use ecdsa::signature::hazmat::PrehashVerifier;
    use signature::Verifier;
    match alg {
        Algorithm::P256 => {
            let vk = p256::ecdsa::VerifyingKey::from_public_key_der(spki).unwrap();
            let s = p256::ecdsa::Signature::from_der(sig).unwrap();
            vk.verify_prehash(&Sha256::digest(data), &s).is_ok()
        }
        Algorithm::P384 => {
            let vk = p384::ecdsa::VerifyingKey::from_public_key_der(spki).unwrap();
            let s = p384::ecdsa::Signature::from_der(sig).unwrap();
            vk.verify_prehash(&Sha256::digest(data), &s).is_ok()
        }
        Algorithm::Ed25519 => {
            let vk = ed25519_dalek::VerifyingKey::from_public_key_der(spki).unwrap();
            vk.verify(data, &ed25519_dalek::Signature::from_slice(sig).unwrap())
                .is_ok()
        }
        Algorithm::Rsa2048 | Algorithm::Rsa3072 | Algorithm::Rsa4096 => {
            let pk = rsa::RsaPublicKey::from_public_key_der(spki).unwrap();
            let vk = rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(pk);
            vk.verify(data, &rsa::pkcs1v15::Signature::try_from(sig).unwrap())
                .is_ok()
        }
    }
}

fn conformance(token: &mut dyn Token, expect: &[Algorithm]) {
    let info = token.info().unwrap();
    for alg in expect {
        assert!(
            info.algorithms.contains(alg),
            "{} should offer {alg}",
            info.label
        );
    }
    let scratch = tempfile::tempdir().unwrap();
    for (i, &alg) in info.algorithms.iter().enumerate() {
        let id = ObjectId(format!("c0ffee{i:02x}"));
        let label = format!("conformance/{}", i + 1);
        let key = token
            .generate(&GenerateRequest {
                label: label.clone(),
                object_id: id.clone(),
                algorithm: alg,
            })
            .unwrap_or_else(|e| panic!("generate {alg}: {e}"));
        assert_eq!(key.algorithm, alg);
        assert_eq!(key.label, label);
        let listed = token.list_keys().unwrap();
        let found = listed.iter().find(|k| k.object_id == id).expect("listed");
        assert_eq!(found.public_key.key_id(), key.public_key.key_id());
        assert_eq!(token.public_key(&id).unwrap(), key.public_key);

        let data = format!("conformance data for {alg}").into_bytes();
        let sig = token.sign(&id, &data).unwrap();
        assert!(
            rustcrypto_verify(alg, key.public_key.spki_der(), &data, &sig),
            "RustCrypto rejects {alg}"
        );
        assert!(
            openssl_verify(
                scratch.path(),
                &key.public_key.to_pem(),
                alg.as_str(),
                &data,
                &sig
            ),
            "openssl rejects {alg}"
        );
        assert!(!rustcrypto_verify(
            alg,
            key.public_key.spki_der(),
            b"other data",
            &sig
        ));
        assert!(!openssl_verify(
            scratch.path(),
            &key.public_key.to_pem(),
            alg.as_str(),
            b"other",
            &sig
        ));

        token.destroy(&id).unwrap();
        assert!(token.list_keys().unwrap().iter().all(|k| k.object_id != id));
        assert!(matches!(
            token.sign(&id, &data),
            Err(TokenError::KeyNotFound { .. })
        ));
    }
}

#[test]
fn soft_token_conformance() {
    let home = tempfile::tempdir().unwrap();
    let mut t = SoftToken::open(home.path());
    assert!(!t.info().unwrap().hardware);
    assert_eq!(
        t.info().unwrap().protection(),
        "software — not hardware protected"
    );
    t.login(&Pin::new("a long passphrase".into())).unwrap();
    conformance(&mut t, &Algorithm::ALL);
}

#[test]
fn soft_token_keeps_keys_encrypted_and_rejects_a_wrong_passphrase() {
    let home = tempfile::tempdir().unwrap();
    let mut t = SoftToken::open(home.path());
    t.login(&Pin::new("a long passphrase".into())).unwrap();
    let id = ObjectId("01".into());
    let k = t
        .generate(&GenerateRequest {
            label: "k/1".into(),
            object_id: id.clone(),
            algorithm: Algorithm::P256,
        })
        .unwrap();
    // The private key file is an age file; no PKCS#8 bytes in clear.
    let file = std::fs::read(home.path().join("soft/keys/01.age")).unwrap();
    assert!(file.starts_with(b"age-encryption.org/v1"));
    let mut again = SoftToken::open(home.path());
    assert!(matches!(
        again.login(&Pin::new("wrong passphrase".into())),
        Err(TokenError::BadPassphrase)
    ));
    assert!(matches!(
        again.sign(&id, b"x"),
        Err(TokenError::NotLoggedIn { .. })
    ));
    again.login(&Pin::new("a long passphrase".into())).unwrap();
    let sig = again.sign(&id, b"x").unwrap();
    assert!(k.public_key.verify(b"x", &sig));
}

#[test]
fn pkcs11_softhsm_conformance() {
    let mut t = hsm_token("conformance");
    let info = t.info().unwrap();
    assert!(info.hardware);
    assert_eq!(info.model, "SoftHSM v2");
    conformance(
        &mut t,
        &[
            Algorithm::P256,
            Algorithm::P384,
            Algorithm::Rsa3072,
            Algorithm::Rsa4096,
        ],
    );
}

#[test]
fn pkcs11_wrong_pin_is_reported_and_good_pin_works() {
    softhsm();
    let label = "wrongpin";
    initialize_token(
        Path::new(SOFTHSM_MODULE),
        label,
        &Pin::new(SO_PIN.into()),
        &Pin::new(USER_PIN.into()),
    )
    .unwrap();
    let sel = TokenSelector {
        label: Some(label.into()),
        ..Default::default()
    };
    let mut t = Pkcs11Token::open(label, Path::new(SOFTHSM_MODULE), &sel).unwrap();
    let err = t.login(&Pin::new("0000".into())).unwrap_err();
    assert!(matches!(err, TokenError::PinIncorrect { .. }), "{err}");
    assert!(err.to_string().contains("wrong PIN"), "{err}");
    assert!(!t.is_logged_in());
    t.login(&Pin::new(USER_PIN.into())).unwrap();
    assert!(t.is_logged_in());
}

#[test]
fn pkcs11_generate_needs_login_and_reports_unknown_objects() {
    softhsm();
    let label = "nologin";
    initialize_token(
        Path::new(SOFTHSM_MODULE),
        label,
        &Pin::new(SO_PIN.into()),
        &Pin::new(USER_PIN.into()),
    )
    .unwrap();
    let sel = TokenSelector {
        label: Some(label.into()),
        ..Default::default()
    };
    let mut t = Pkcs11Token::open(label, Path::new(SOFTHSM_MODULE), &sel).unwrap();
    let req = GenerateRequest {
        label: "x/1".into(),
        object_id: ObjectId("aa".into()),
        algorithm: Algorithm::P256,
    };
    assert!(matches!(
        t.generate(&req),
        Err(TokenError::NotLoggedIn { .. })
    ));
    t.login(&Pin::new(USER_PIN.into())).unwrap();
    assert!(matches!(
        t.public_key(&ObjectId("bb".into())),
        Err(TokenError::KeyNotFound { .. })
    ));
}
