//! Drives the virtual cards with the real `yubikey` crate (0.8.0) over PC/SC.
//!
//!     scripts/virtual-piv start --serial 12345678 --serial 87654321
//!     export PCSCLITE_CSOCK_NAME=...            # as printed by start
//!     cargo run --release --example yubikey_check -- 12345678 87654321
//!
//! The first card gets the non-destructive checks (with one card, `YubiKey::open()` must
//! find it); the second (optional) card is used for the two-card checks and, at the end,
//! blocked and reset to factory defaults.
//! Prints one line per check and a closing `N passed, N failed` line.

use std::str::FromStr;
use std::time::Duration;

use p256::ecdsa::signature::hazmat::PrehashVerifier;
use sha2::{Digest, Sha256};
use x509_cert::{
    name::Name, serial_number::SerialNumber, spki::SubjectPublicKeyInfoOwned, time::Validity,
};
use yubikey::{
    certificate::Certificate,
    piv::{self, AlgorithmId, SlotId},
    Error, MgmKey, PinPolicy, Serial, TouchPolicy, YubiKey,
};

const PIN: &[u8] = b"123456";
const PUK: &[u8] = b"12345678";

struct Report {
    passed: u32,
    failed: u32,
}

impl Report {
    fn check<T>(&mut self, name: &str, result: Result<T, String>) -> Option<T> {
        match result {
            Ok(value) => {
                self.passed += 1;
                println!("ok     {name}");
                Some(value)
            }
            Err(e) => {
                self.failed += 1;
                println!("FAILED {name}: {e}");
                None
            }
        }
    }
}

fn e(err: Error) -> String {
    format!("{err} ({err:?})")
}

fn expect(cond: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(what())
    }
}

fn open(serial: u32) -> Result<YubiKey, String> {
    YubiKey::open_by_serial(Serial::from(serial)).map_err(e)
}

/// Generates a P-256 key in `slot` and returns its public key info.
fn generate_p256(yk: &mut YubiKey, slot: SlotId) -> Result<SubjectPublicKeyInfoOwned, String> {
    yk.authenticate(MgmKey::default()).map_err(e)?;
    piv::generate(
        yk,
        slot,
        AlgorithmId::EccP256,
        PinPolicy::Default,
        TouchPolicy::Default,
    )
    .map_err(e)
}

fn sign_and_verify(yk: &mut YubiKey, slot: SlotId, public: &[u8]) -> Result<(), String> {
    let digest = Sha256::digest(b"keyward virtual PIV check");
    yk.verify_pin(PIN).map_err(e)?;
    let der = piv::sign_data(yk, &digest, AlgorithmId::EccP256, slot).map_err(e)?;
    let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(public).map_err(|x| x.to_string())?;
    let sig = p256::ecdsa::Signature::from_der(&der).map_err(|x| x.to_string())?;
    key.verify_prehash(&digest, &sig)
        .map_err(|x| format!("signature does not verify: {x}"))
}

fn rsa_check(yk: &mut YubiKey) -> Result<(), String> {
    use rsa::pkcs8::DecodePublicKey as _;
    use rsa::signature::Verifier as _;
    use x509_cert::der::Encode as _;
    yk.authenticate(MgmKey::default()).map_err(e)?;
    let spki = piv::generate(
        yk,
        SlotId::KeyManagement,
        AlgorithmId::Rsa2048,
        PinPolicy::Default,
        TouchPolicy::Default,
    )
    .map_err(e)?;
    let public = rsa::RsaPublicKey::from_public_key_der(&spki.to_der().map_err(|x| x.to_string())?)
        .map_err(|x| x.to_string())?;
    let message = b"keyward RSA check";
    // EMSA-PKCS1-v1_5 block for SHA-256: the card does raw RSA.
    let digest_info = [
        0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
        0x05, 0x00, 0x04, 0x20,
    ];
    let mut block = vec![0x00, 0x01];
    block.resize(256 - digest_info.len() - 32 - 1, 0xFF);
    block.push(0x00);
    block.extend_from_slice(&digest_info);
    block.extend_from_slice(&Sha256::digest(message));
    yk.verify_pin(PIN).map_err(e)?;
    let sig = piv::sign_data(yk, &block, AlgorithmId::Rsa2048, SlotId::KeyManagement).map_err(e)?;
    let sig = rsa::pkcs1v15::Signature::try_from(&sig[..]).map_err(|x| x.to_string())?;
    rsa::pkcs1v15::VerifyingKey::<Sha256>::new(public)
        .verify(message, &sig)
        .map_err(|x| format!("signature does not verify: {x}"))
}

fn first_card(r: &mut Report, serial: u32) {
    let Some(mut yk) = r.check(&format!("open_by_serial({serial})"), open(serial)) else {
        return;
    };
    r.check("serial()", {
        let s = yk.serial();
        expect(s == Serial::from(serial), || format!("got {s}"))
    });
    r.check("version() is 5.4.3 (the default --firmware)", {
        let v = yk.version();
        expect((v.major, v.minor, v.patch) == (5, 4, 3), || {
            format!("got {v}")
        })
    });
    r.check("name() contains Yubico YubiKey", {
        let name = yk.name().to_string();
        expect(name.contains("Yubico YubiKey"), || name.clone())
            .map(|()| println!("       reader: {name}"))
    });
    r.check(
        "get_pin_retries() == 3",
        yk.get_pin_retries()
            .map_err(e)
            .and_then(|n| expect(n == 3, || format!("got {n}"))),
    );
    r.check(
        "verify_pin(wrong) -> WrongPin { tries: 2 }",
        match yk.verify_pin(b"654321") {
            Err(Error::WrongPin { tries: 2 }) => Ok(()),
            other => Err(format!("got {other:?}")),
        },
    );
    r.check(
        "get_pin_retries() == 2",
        yk.get_pin_retries()
            .map_err(e)
            .and_then(|n| expect(n == 2, || format!("got {n}"))),
    );
    r.check("verify_pin(123456)", yk.verify_pin(PIN).map_err(e));
    r.check(
        "get_pin_retries() back to 3",
        yk.get_pin_retries()
            .map_err(e)
            .and_then(|n| expect(n == 3, || format!("got {n}"))),
    );
    r.check(
        "authenticate(default 3DES management key)",
        yk.authenticate(MgmKey::default()).map_err(e),
    );
    r.check("authenticate(wrong management key) fails", {
        let wrong = MgmKey::from_bytes([7u8; 24]).map_err(e);
        wrong.and_then(|k| match yk.authenticate(k) {
            Err(_) => Ok(()),
            Ok(()) => Err("accepted".into()),
        })
    });
    r.check("chuid()", yk.chuid().map(|_| ()).map_err(e));
    let spki = r.check(
        "generate P-256 in 9c",
        generate_p256(&mut yk, SlotId::Signature),
    );
    let public = spki
        .as_ref()
        .map(|s| s.subject_public_key.raw_bytes().to_vec());
    if let (Some(spki), Some(public)) = (&spki, &public) {
        r.check(
            "sign SHA-256 digest in 9c, verify with p256",
            sign_and_verify(&mut yk, SlotId::Signature, public),
        );
        r.check("sign without PIN just before fails (9c is PIN-always)", {
            let digest = Sha256::digest(b"x");
            match piv::sign_data(&mut yk, &digest, AlgorithmId::EccP256, SlotId::Signature) {
                Err(_) => Ok(()),
                Ok(_) => Err("signed".into()),
            }
        });
        let cert = r.check(
            "Certificate::generate_self_signed in 9c",
            (|| {
                yk.authenticate(MgmKey::default()).map_err(e)?;
                yk.verify_pin(PIN).map_err(e)?;
                Certificate::generate_self_signed::<_, p256::NistP256>(
                    &mut yk,
                    SlotId::Signature,
                    SerialNumber::from(42u32),
                    Validity::from_now(Duration::from_secs(3600)).map_err(|x| x.to_string())?,
                    Name::from_str("CN=keyward virtual PIV test").map_err(|x| x.to_string())?,
                    spki.clone(),
                    |_| Ok(()),
                )
                .map_err(e)
            })(),
        );
        r.check(
            "Certificate::read(9c) returns the written certificate",
            (|| {
                let read = Certificate::read(&mut yk, SlotId::Signature).map_err(e)?;
                let cert = cert.as_ref().ok_or("nothing was written")?;
                expect(read.cert == cert.cert, || "different certificate".into())?;
                expect(read.subject().contains("keyward virtual PIV test"), || {
                    read.subject()
                })?;
                let key = read.subject_pki().subject_public_key.raw_bytes().to_vec();
                expect(&key == public, || "different public key".into())
            })(),
        );
    }
    r.check(
        "generate RSA-2048 in 9d, sign PKCS#1 v1.5, verify with rsa",
        rsa_check(&mut yk),
    );
    r.check(
        "piv_keys() lists 9c",
        yk.piv_keys().map_err(e).and_then(|keys| {
            expect(keys.iter().any(|k| k.slot() == SlotId::Signature), || {
                format!("{} keys, none in 9c", keys.len())
            })
        }),
    );
    r.check(
        "metadata() of 9c: a generated P-256 key with its public key",
        match piv::metadata(&mut yk, SlotId::Signature) {
            Ok(m)
                if m.origin == Some(piv::Origin::Generated)
                    && m.algorithm
                        == piv::ManagementAlgorithmId::Asymmetric(piv::AlgorithmId::EccP256)
                    && m.public.is_some() =>
            {
                Ok(())
            }
            other => Err(format!("got {other:?}")),
        },
    );
    r.check(
        "metadata() of the PIN: default, 3 of 3 tries",
        match piv::metadata(&mut yk, SlotId::Management(piv::ManagementSlotId::Pin)) {
            Ok(m)
                if m.default == Some(true)
                    && m.retries
                        .as_ref()
                        .map(|r| (r.retry_count, r.remaining_count))
                        == Some((3, 3)) =>
            {
                Ok(())
            }
            other => Err(format!("got {other:?}")),
        },
    );
    r.check(
        "change_pin and back",
        (|| {
            yk.change_pin(PIN, b"24681357").map_err(e)?;
            yk.verify_pin(b"24681357").map_err(e)?;
            yk.change_pin(b"24681357", PIN).map_err(e)
        })(),
    );
    r.check(
        "change_pin(wrong old) -> WrongPin { tries: 2 }",
        match yk.change_pin(b"000000", b"111111") {
            Err(Error::WrongPin { tries: 2 }) => Ok(()),
            other => Err(format!("got {other:?}")),
        },
    );
    r.check(
        "verify_pin(123456) restores retries",
        yk.verify_pin(PIN).map_err(e),
    );

    // A power cycle (the YubiKey is dropped: disconnect with reset) logs the PIN out.
    r.check(
        "PIN verified, card reset: signing is refused with a security error",
        (|| {
            yk.verify_pin(PIN).map_err(e)?;
            drop(yk);
            let mut yk = open(serial)?;
            let digest = Sha256::digest(b"y");
            let result =
                match piv::sign_data(&mut yk, &digest, AlgorithmId::EccP256, SlotId::Signature) {
                    Err(Error::PcscError { inner }) => Err(format!("PC/SC error {inner:?}")),
                    Err(err) => {
                        println!("       refused with: {err:?}");
                        Ok(())
                    }
                    Ok(_) => Err("signed without PIN".into()),
                };
            if let Some(public) = &public {
                result?;
                sign_and_verify(&mut yk, SlotId::Signature, public)
                    .map_err(|x| format!("after reopen: {x}"))
            } else {
                result
            }
        })(),
    );
}

fn two_cards(r: &mut Report, first: u32, second: u32) {
    r.check(
        "YubiKey::open() refuses with two cards",
        match YubiKey::open() {
            Err(_) => Ok(()),
            Ok(yk) => Err(format!("opened {}", yk.serial())),
        },
    );
    let both = (|| Ok::<_, String>((open(first)?, open(second)?)))();
    let Some((mut a, mut b)) = r.check("both cards open at once", both) else {
        return;
    };
    r.check(
        "serials differ",
        expect(a.serial() != b.serial(), || "same serial".into()),
    );
    r.check(
        "the two cards generate different keys",
        (|| {
            let ka = generate_p256(&mut a, SlotId::Authentication)?.subject_public_key;
            let kb = generate_p256(&mut b, SlotId::Authentication)?.subject_public_key;
            expect(ka != kb, || "same key on both cards".into())
        })(),
    );
}

/// Blocks PIN and PUK of `serial`, then resets it and checks the factory defaults.
fn reset_card(r: &mut Report, serial: u32) {
    let Some(mut yk) = r.check(
        &format!("open_by_serial({serial}) for the reset checks"),
        open(serial),
    ) else {
        return;
    };
    r.check(
        "PIN-protected management key: set_protected, get_protected, authenticate",
        (|| {
            let key = MgmKey::generate();
            yk.authenticate(MgmKey::default()).map_err(e)?;
            yk.verify_pin(PIN).map_err(e)?;
            key.set_protected(&mut yk).map_err(e)?;
            yk.verify_pin(PIN).map_err(e)?;
            let stored = MgmKey::get_protected(&mut yk).map_err(e)?;
            expect(stored.as_ref() == key.as_ref(), || {
                "different key read back".into()
            })?;
            yk.authenticate(stored).map_err(e)?;
            match yk.authenticate(MgmKey::default()) {
                Err(_) => Ok(()),
                Ok(()) => Err("default key still accepted".into()),
            }
        })(),
    );
    r.check(
        "change_puk(wrong) -> WrongPin",
        match yk.change_puk(b"00000000", b"11111111") {
            Err(Error::WrongPin { tries }) => {
                println!("       PUK tries left: {tries}");
                Ok(())
            }
            other => Err(format!("got {other:?}")),
        },
    );
    r.check(
        "change_puk(default) and back",
        (|| {
            yk.change_puk(PUK, b"87654321").map_err(e)?;
            yk.change_puk(b"87654321", PUK).map_err(e)
        })(),
    );
    r.check(
        "block the PIN (wrong PIN until PinLocked)",
        (|| {
            for _ in 0..10 {
                match yk.verify_pin(b"000000") {
                    Err(Error::WrongPin { tries }) if tries > 0 => continue,
                    Err(Error::WrongPin { .. }) | Err(Error::PinLocked) => return Ok(()),
                    other => return Err(format!("got {other:?}")),
                }
            }
            Err("PIN never blocked".into())
        })(),
    );
    r.check(
        "unblock_pin(PUK) while PIN blocked",
        (|| {
            yk.unblock_pin(PUK, PIN).map_err(e)?;
            yk.verify_pin(PIN).map_err(e)
        })(),
    );
    r.check("block_puk() terminates", yk.block_puk().map_err(e));
    r.check(
        "block PIN again",
        (|| {
            for _ in 0..10 {
                match yk.verify_pin(b"000000") {
                    Err(Error::WrongPin { tries }) if tries > 0 => continue,
                    Err(Error::WrongPin { .. }) | Err(Error::PinLocked) => return Ok(()),
                    other => return Err(format!("got {other:?}")),
                }
            }
            Err("PIN never blocked".into())
        })(),
    );
    r.check("reset_device()", yk.reset_device().map_err(e));
    drop(yk);
    r.check(
        "after reset: default PIN, management key, empty slots (f9 kept, as on a YubiKey)",
        (|| {
            let mut yk = open(serial)?;
            yk.verify_pin(PIN).map_err(e)?;
            yk.authenticate(MgmKey::default()).map_err(e)?;
            let keys = yk.piv_keys().map_err(e)?;
            expect(keys.iter().all(|k| k.slot() == SlotId::Attestation), || {
                format!("{} keys left", keys.len())
            })
        })(),
    );
}

fn main() {
    let serials: Vec<u32> = std::env::args()
        .skip(1)
        .map(|s| s.parse().expect("serials are decimal numbers"))
        .collect();
    let (first, second) = match serials.as_slice() {
        [a] => (*a, None),
        [a, b] => (*a, Some(*b)),
        _ => {
            eprintln!("usage: yubikey_check SERIAL [SECOND_SERIAL]");
            std::process::exit(2);
        }
    };
    let mut r = Report {
        passed: 0,
        failed: 0,
    };
    if second.is_none() {
        r.check(
            "YubiKey::open() finds the only card",
            match YubiKey::open() {
                Ok(yk) => expect(yk.serial() == Serial::from(first), || {
                    format!("opened {}", yk.serial())
                }),
                Err(err) => Err(e(err)),
            },
        );
    }
    first_card(&mut r, first);
    if let Some(second) = second {
        two_cards(&mut r, first, second);
        reset_card(&mut r, second);
    }
    println!("{} passed, {} failed", r.passed, r.failed);
    std::process::exit(if r.failed == 0 { 0 } else { 1 });
}
