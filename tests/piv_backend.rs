//! `PivToken` through the `Token` trait on a virtual card: the backend conformance suite
//! (generate, list, public key, sign, verify with RustCrypto and openssl, destroy) for every
//! algorithm the card offers, and the sign-rate benchmark (keyward vs the yubikey crate's raw
//! sign call on the same card).
//!
//! libpcsclite reads PCSCLITE_CSOCK_NAME once per process, so this binary has one test and
//! one card set.
#![allow(clippy::unwrap_used)]

#[path = "support/piv.rs"]
mod piv;
mod support;

use keyward::home::Home;
use keyward::prompt::FixedPrompter;
use keyward::secret::Pin;
use keyward::token::piv::PivToken;
use keyward::token::{Algorithm, GenerateRequest, Token, TokenError};
use keyward::Keyward;
use piv::*;
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};

const CONFORMANCE: u32 = 32_000_001;
const BENCH: u32 = 32_000_002;

fn conformance(token: &mut PivToken) {
    let info = token.info().unwrap();
    assert_eq!(
        info.algorithms,
        [Algorithm::P256, Algorithm::P384, Algorithm::Rsa2048]
    );
    assert!(info.hardware);
    assert_eq!(info.serial, CONFORMANCE.to_string());
    // Not logged in: generation is refused before the card is touched.
    let id = token.new_object_id(&[]).unwrap();
    assert_eq!(id.0, "9c");
    assert!(matches!(
        token.generate(&GenerateRequest {
            label: "c/0".into(),
            object_id: id,
            algorithm: Algorithm::P256,
        }),
        Err(TokenError::NotLoggedIn { .. })
    ));
    token.login(&Pin::new(PIN.into())).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    for (i, &alg) in info.algorithms.iter().enumerate() {
        let id = token.new_object_id(&[]).unwrap();
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
        assert_eq!(found.label, label);
        assert_eq!(found.public_key.key_id(), key.public_key.key_id());
        assert_eq!(token.public_key(&id).unwrap(), key.public_key);

        let data = format!("conformance data for {alg}").into_bytes();
        let sig = token.sign(&id, &data).unwrap();
        assert!(
            key.public_key.verify(&data, &sig),
            "RustCrypto rejects {alg}"
        );
        assert!(
            support::openssl_verify(
                scratch.path(),
                &key.public_key.to_pem(),
                alg.as_str(),
                &data,
                &sig
            ),
            "openssl rejects {alg}"
        );
        assert!(!key.public_key.verify(b"other data", &sig));
        // A second signature with the one login (PIN-always slot: keyward re-verifies).
        let sig2 = token.sign(&id, b"second").unwrap();
        assert!(key.public_key.verify(b"second", &sig2));

        token.destroy(&id).unwrap();
        assert!(token.list_keys().unwrap().iter().all(|k| k.object_id != id));
        assert!(matches!(
            token.sign(&id, &data),
            Err(TokenError::KeyNotFound { .. })
        ));
    }

    // Import (a keystore key copied onto the card): every algorithm, into a retired slot.
    for (i, &alg) in info.algorithms.iter().enumerate() {
        let (pkcs8, public) = software_key(alg);
        let slot = if alg == Algorithm::Rsa2048 {
            "9a" // piv-authenticator imports RSA into 9a only
        } else {
            ["85", "86"][i]
        };
        token
            .set_generate_options(&keyward::token::GenerateOptions {
                slot: Some(slot.into()),
                ..Default::default()
            })
            .unwrap();
        let id = token.new_object_id(&[]).unwrap();
        assert_eq!(id.0, slot);
        let key = token
            .import_key(
                &GenerateRequest {
                    label: format!("imported/{}", i + 1),
                    object_id: id.clone(),
                    algorithm: alg,
                },
                &pkcs8,
            )
            .unwrap_or_else(|e| panic!("import {alg}: {e}"));
        assert_eq!(key.public_key, public);
        assert_eq!(token.public_key(&id).unwrap(), public);
        let sig = token.sign(&id, b"imported").unwrap();
        assert!(public.verify(b"imported", &sig), "{alg} imported key");
        token.destroy(&id).unwrap();
    }
}

/// A software key pair: PKCS#8 DER and its public key.
fn software_key(alg: Algorithm) -> (Vec<u8>, keyward::token::PublicKey) {
    use p256::pkcs8::{EncodePrivateKey, EncodePublicKey};
    let mut rng = rand::rngs::OsRng;
    let (pkcs8, spki) = match alg {
        Algorithm::P256 => {
            let k = p256::SecretKey::random(&mut rng);
            (
                k.to_pkcs8_der().unwrap(),
                k.public_key().to_public_key_der().unwrap(),
            )
        }
        Algorithm::P384 => {
            let k = p384::SecretKey::random(&mut rng);
            (
                k.to_pkcs8_der().unwrap(),
                k.public_key().to_public_key_der().unwrap(),
            )
        }
        _ => {
            let k = rsa::RsaPrivateKey::new(&mut rng, 2048).unwrap();
            (
                k.to_pkcs8_der().unwrap(),
                k.to_public_key().to_public_key_der().unwrap(),
            )
        }
    };
    (
        pkcs8.as_bytes().to_vec(),
        keyward::token::PublicKey::from_spki_der(spki.as_bytes()).unwrap(),
    )
}

/// The virtual card signs with an imported EC key under its PIN policy, as a YubiKey does:
/// PIN-always needs a VERIFY right before each signature.
fn imported_keys_honour_the_pin_policy(serial: u32) {
    use yubikey::piv::{self, AlgorithmId, SlotId};
    let mut yk = yubikey::YubiKey::open_by_serial(yubikey::Serial(serial)).unwrap();
    yk.authenticate(yubikey::MgmKey::default()).unwrap();
    let k = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let slot = SlotId::Retired(piv::RetiredSlotId::R10);
    piv::import_ecc_key(
        &mut yk,
        slot,
        AlgorithmId::EccP256,
        &k.to_bytes(),
        yubikey::TouchPolicy::Never,
        yubikey::PinPolicy::Always,
    )
    .unwrap();
    let digest = Sha256::digest(b"policy");
    assert!(
        piv::sign_data(&mut yk, &digest, AlgorithmId::EccP256, slot).is_err(),
        "signed without the PIN"
    );
    yk.verify_pin(PIN.as_bytes()).unwrap();
    let sig = piv::sign_data(&mut yk, &digest, AlgorithmId::EccP256, slot).unwrap();
    let sig = p256::ecdsa::Signature::from_der(&sig).unwrap();
    use p256::ecdsa::signature::hazmat::PrehashVerifier;
    p256::ecdsa::VerifyingKey::from(k.public_key())
        .verify_prehash(&digest, &sig)
        .unwrap();
    assert!(
        piv::sign_data(&mut yk, &digest, AlgorithmId::EccP256, slot).is_err(),
        "a PIN-always key signed twice on one VERIFY"
    );
    // An imported key is never attested.
    assert!(piv::attest(&mut yk, slot).is_err());
}

/// Signatures per second over `n` signatures.
fn rate(n: u32, mut f: impl FnMut(u32)) -> f64 {
    f(0); // warm-up
    let start = Instant::now();
    for i in 1..=n {
        f(i);
    }
    f64::from(n) / start.elapsed().max(Duration::from_micros(1)).as_secs_f64()
}

fn bench(cards: &VirtualPiv) {
    let home = tempfile::tempdir().unwrap();
    let kw = Keyward::open(Home::resolve(Some(home.path().to_owned())).unwrap()).unwrap();
    let mut prompter = FixedPrompter {
        user_pin: Some(PIN.into()),
        so_pin: None,
        passphrase: None,
        confirm: false,
    };
    let token = format!("yubikey:{BENCH}");
    let v = kw
        .generate("bench", &token, Algorithm::P256, false, &mut prompter)
        .unwrap();
    assert_eq!(v.object_id, "9c");
    let n = 40;

    // keyward: one login, then Signer::sign (card + audit entry per signature).
    let mut signer = kw.signer("bench", None, &mut prompter).unwrap();
    let keyward_rate = rate(n, |i| {
        signer.sign(format!("image {i}").as_bytes(), None).unwrap();
    });
    drop(signer);

    // The crate's raw calls on the same card and slot: VERIFY PIN (the slot is PIN-always)
    // and GENERAL AUTHENTICATE.
    let mut yk = yubikey::YubiKey::open_by_serial(yubikey::Serial(BENCH)).unwrap();
    let raw_rate = rate(n, |i| {
        yk.verify_pin(PIN.as_bytes()).unwrap();
        let digest = Sha256::digest(format!("image {i}").as_bytes());
        yubikey::piv::sign_data(
            &mut yk,
            &digest,
            yubikey::piv::AlgorithmId::EccP256,
            yubikey::piv::SlotId::Signature,
        )
        .unwrap();
    });
    let ratio = keyward_rate / raw_rate;
    println!(
        "sign rate on the virtual card ({}): keyward {keyward_rate:.1}/s, raw yubikey crate {raw_rate:.1}/s, ratio {:.0} %",
        cards.reader(BENCH),
        ratio * 100.0
    );
    // The goal is >= 90 %; the assertion leaves room for a loaded CI machine.
    assert!(
        ratio > 0.6,
        "keyward signs at {:.0} % of the raw rate",
        ratio * 100.0
    );
}

#[test]
fn piv_token_conformance_and_sign_rate() {
    let cards = VirtualPiv::start(&[CONFORMANCE, BENCH]);
    // Before the first PC/SC call of this process.
    std::env::set_var("PCSCLITE_CSOCK_NAME", &cards.socket);
    let found = keyward::token::piv::discover();
    assert_eq!(
        found.iter().map(|c| c.serial).collect::<Vec<_>>(),
        [CONFORMANCE, BENCH]
    );
    assert!(found[0].reader.contains("YubiKey"));
    assert_eq!(found[0].firmware, "5.4.3");
    let mut t = PivToken::open(&format!("yubikey:{CONFORMANCE}"), CONFORMANCE).unwrap();
    conformance(&mut t);
    drop(t);
    imported_keys_honour_the_pin_policy(CONFORMANCE);
    bench(&cards);
}
