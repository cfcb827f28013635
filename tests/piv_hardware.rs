//! The hardware suite for a real YubiKey: runs only when KEYWARD_TEST_YUBIKEY_SERIAL names the
//! inserted card, and then RESETS ITS PIV APPLICATION (every PIV key on it is lost). Every
//! destructive step checks the serial first and refuses any other card. See
//! docs/HARDWARE-TESTING.md. Covers what the virtual card cannot: attestation, metadata
//! (PUK tries, default PIN/PUK), EC import, retry counts, touch (with
//! KEYWARD_TEST_YUBIKEY_TOUCH=1, a person touches the key when asked).
#![cfg(keyward_yubikey_hw)]
#![allow(clippy::unwrap_used)]

mod support;

use keyward::secret::Pin;
use keyward::token::piv::{PinPolicyChoice, PivToken, TouchPolicyChoice};
use keyward::token::{Algorithm, GenerateOptions, GenerateRequest, ObjectId, Token};

fn serial() -> Option<u32> {
    let s = std::env::var("KEYWARD_TEST_YUBIKEY_SERIAL").ok()?;
    Some(
        s.parse()
            .expect("KEYWARD_TEST_YUBIKEY_SERIAL must be the card's decimal serial"),
    )
}

/// Opens the card and refuses anything but the named serial.
fn open(serial: u32) -> PivToken {
    let t = PivToken::open(&format!("yubikey:{serial}"), serial).unwrap();
    assert_eq!(
        t.serial(),
        serial,
        "refusing a card that is not the named one"
    );
    assert_eq!(t.info().unwrap().serial, serial.to_string());
    t
}

fn generate(t: &mut PivToken, slot: &str, alg: Algorithm, touch: TouchPolicyChoice) -> ObjectId {
    t.set_generate_options(&GenerateOptions {
        slot: Some(slot.into()),
        pin_policy: Some(PinPolicyChoice::Always),
        touch_policy: Some(touch),
    })
    .unwrap();
    let id = t.new_object_id(&[]).unwrap();
    t.generate(&GenerateRequest {
        label: format!("hw/{slot}"),
        object_id: id.clone(),
        algorithm: alg,
    })
    .unwrap();
    id
}

#[test]
fn real_yubikey() {
    let serial = serial().expect(
        "the hardware-tests feature needs KEYWARD_TEST_YUBIKEY_SERIAL naming the inserted YubiKey",
    );
    let found = keyward::token::piv::discover();
    assert!(
        found.iter().any(|c| c.serial == serial),
        "YubiKey {serial} not found over PC/SC (found {found:?})"
    );

    // Factory state first (destructive: the serial was checked by open()).
    open(serial).reset().unwrap();
    let mut t = open(serial);
    let info = t.info().unwrap();
    assert_eq!(info.pin.tries_left, Some(3));
    let firmware: Vec<u32> = info
        .firmware
        .split('.')
        .map(|p| p.parse().unwrap())
        .collect();
    let has_metadata = firmware[0] > 5 || (firmware[0] == 5 && firmware[1] >= 3);
    if has_metadata {
        assert_eq!(info.puk_tries_left, Some(3));
        assert!(info
            .warnings
            .iter()
            .any(|w| w.contains("PIN is still the factory default")));
        assert!(info
            .warnings
            .iter()
            .any(|w| w.contains("PUK is still the factory default")));
    }
    assert!(info.warnings.iter().any(|w| w.contains("management key")));

    t.login(&Pin::new("123456".into())).unwrap();

    // Generate, sign, verify, attest.
    let scratch = tempfile::tempdir().unwrap();
    for (slot, alg) in [
        ("9c", Algorithm::P256),
        ("82", Algorithm::P384),
        ("83", Algorithm::Rsa2048),
    ] {
        let id = generate(&mut t, slot, alg, TouchPolicyChoice::Never);
        let pk = t.public_key(&id).unwrap();
        let sig = t.sign(&id, b"hardware").unwrap();
        assert!(pk.verify(b"hardware", &sig), "{alg} signature");
        assert!(support::openssl_verify(
            scratch.path(),
            &pk.to_pem(),
            alg.as_str(),
            b"hardware",
            &sig
        ));
        let a = t.attest(&id, &[]).unwrap();
        assert!(a.verified, "{slot}: {:?}", a.problems);
        assert_eq!(a.serial, Some(serial));
        assert_eq!(a.attested_key_id.as_deref(), Some(pk.key_id().as_str()));
        assert_eq!(a.pin_policy.as_deref(), Some("always"));
        assert_eq!(a.touch_policy.as_deref(), Some("never"));
    }

    // Touch: a person touches the key when asked.
    if std::env::var("KEYWARD_TEST_YUBIKEY_TOUCH").as_deref() == Ok("1") {
        let id = generate(&mut t, "84", Algorithm::P256, TouchPolicyChoice::Always);
        let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let a2 = asked.clone();
        t.set_notifier(Box::new(move |m| {
            eprintln!("{m}");
            a2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }));
        let sig = t.sign(&id, b"touched").unwrap();
        assert!(t.public_key(&id).unwrap().verify(b"touched", &sig));
        assert!(asked.load(std::sync::atomic::Ordering::SeqCst) > 0);
        eprintln!("now do NOT touch the key for 20 seconds");
        let e = t.sign(&id, b"untouched").unwrap_err();
        assert!(e.to_string().contains("not touched in time"), "{e}");
    }

    // Import of an EC key from PKCS#8 (the virtual card imports RSA only).
    let pkcs8 = keyward::token::soft::generate_pkcs8(Algorithm::P256).unwrap();
    t.set_generate_options(&GenerateOptions {
        slot: Some("85".into()),
        ..Default::default()
    })
    .unwrap();
    let id = t.new_object_id(&[]).unwrap();
    let k = t
        .import_key(
            &GenerateRequest {
                label: "hw/import".into(),
                object_id: id.clone(),
                algorithm: Algorithm::P256,
            },
            &pkcs8,
        )
        .unwrap();
    let sig = t.sign(&id, b"imported").unwrap();
    assert!(k.public_key.verify(b"imported", &sig));
    assert_eq!(t.public_key(&id).unwrap(), k.public_key);

    // Destroy overwrites the slot and marks it free (metadata still reports the throwaway
    // key from firmware 5.3 on).
    t.destroy(&id).unwrap();
    assert!(t.list_keys().unwrap().iter().all(|k| k.object_id != id));
    assert!(matches!(
        t.sign(&id, b"after destroy"),
        Err(keyward::token::TokenError::KeyNotFound { .. })
    ));

    // PIN-protected management key, then generation with only the PIN.
    t.set_protected_management_key().unwrap();
    drop(t);
    let mut t = open(serial);
    assert!(!t
        .info()
        .unwrap()
        .warnings
        .iter()
        .any(|w| w.contains("management key")));
    t.login(&Pin::new("123456".into())).unwrap();
    generate(&mut t, "86", Algorithm::P256, TouchPolicyChoice::Never);

    // Retry counts (the card resets PIN and PUK to the defaults).
    t.set_retries(5, 4).unwrap();
    drop(t);
    let t = open(serial);
    assert_eq!(t.pin_tries_left().unwrap(), Some(5));
    if has_metadata {
        assert_eq!(t.puk_tries_left().unwrap(), Some(4));
    }

    // PIN and PUK changes, then back to factory state.
    t.change_pin(&Pin::new("123456".into()), &Pin::new("24681357".into()))
        .unwrap();
    t.change_puk(&Pin::new("12345678".into()), &Pin::new("87654321".into()))
        .unwrap();
    t.unblock_pin(&Pin::new("87654321".into()), &Pin::new("123456".into()))
        .unwrap();
    t.reset().unwrap();
}
