//! Rotating a key from an HSM (SoftHSM2) onto a YubiKey (the virtual card over real PC/SC):
//! the new version lives in a card slot, the old one stays active for the overlap on the HSM,
//! signatures come from the card and verify with openssl, ykman sees the slot, and the bundle
//! names both tokens.
#![allow(clippy::unwrap_used)]

#[path = "support/piv.rs"]
mod piv;
mod support;

use piv::PivWorld;
use serde_json::Value;

#[test]
fn a_key_is_rotated_from_softhsm2_onto_a_yubikey() {
    const SERIAL: u32 = 33_000_001;
    let w = PivWorld::new(&[SERIAL]);
    let card = w.token(SERIAL);
    // The HSM's user PIN is the card's, so one KEYWARD_PIN serves both in this test.
    w.ok(&[
        "token",
        "init",
        "--module",
        support::SOFTHSM_MODULE,
        "--label",
        "hsm",
        "--name",
        "hsm",
    ]);
    w.ok(&["key", "generate", "release", "--token", "hsm"]);
    w.ok(&[
        "key",
        "policy",
        "release",
        "--rotate-every",
        "90d",
        "--overlap",
        "7d",
    ]);
    let rotated: Value = serde_json::from_str(&w.ok(&[
        "key", "rotate", "release", "--token", &card, "--output", "json",
    ]))
    .unwrap();
    assert_eq!(rotated["new"]["token"], card.as_str());
    assert_eq!(rotated["new"]["state"], "active");
    assert_eq!(rotated["previous"][0]["token"], "hsm");
    assert_eq!(
        rotated["previous"][0]["state"], "active",
        "the overlap keeps it"
    );
    assert!(rotated["previous"][0]["overlap_until"].is_string());

    // `key sign` uses the newest active version: the card's. openssl checks it against the
    // public key keyward exports, and ykman sees the slot keyward used.
    let dir = w.world.path();
    let data = dir.join("notes.txt");
    std::fs::write(&data, b"release 2.0\n").unwrap();
    let sig = dir.join("notes.sig");
    w.ok(&[
        "key",
        "sign",
        "release",
        "--input",
        data.to_str().unwrap(),
        "--output",
        sig.to_str().unwrap(),
    ]);
    let pem = w.ok(&["key", "public-key", "release/2"]);
    assert!(support::openssl_verify(
        dir,
        &pem,
        "p256",
        &std::fs::read(&data).unwrap(),
        &std::fs::read(&sig).unwrap()
    ));
    let slot = rotated["new"]["object_id"].as_str().unwrap().to_owned();
    let info = w.cards.ykman(SERIAL, &["piv", "info"]);
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(
        info.to_lowercase().contains(&slot.to_lowercase()),
        "ykman does not show slot {slot}:\n{info}"
    );
    // The old version still signs on the HSM during the overlap.
    w.ok(&[
        "key",
        "sign",
        "release/1",
        "--input",
        data.to_str().unwrap(),
        "--output",
        dir.join("notes.v1.sig").to_str().unwrap(),
    ]);

    // The card attests the new version to its (test) root; the result goes into the bundle.
    w.trust_test_root();
    w.ok(&["token", "piv", "attest", "release/2"]);

    // The bundle trusts both, naming each one's token and the attestation.
    let out = dir.join("bundle");
    w.ok(&[
        "bundle",
        "export",
        "--key",
        "release",
        "--scope",
        "registry.example.com/team/app",
        "--output",
        out.to_str().unwrap(),
    ]);
    let bundle: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("bundle.json")).unwrap()).unwrap();
    let keys = bundle["keys"].as_array().unwrap();
    let by_version = |n: u64| keys.iter().find(|k| k["version"] == n).unwrap();
    assert_eq!(by_version(1)["token_kind"], "pkcs11");
    assert_eq!(by_version(2)["token_kind"], "piv");
    assert_eq!(by_version(2)["token_model"], "YubiKey");
    assert_eq!(by_version(2)["token_serial"], SERIAL.to_string());
    let att = &by_version(2)["attestation"];
    assert_eq!(att["verified"], true, "{att}");
    assert_eq!(att["attested_serial"], SERIAL);
    assert!(
        att["pin_policy"].is_string() && att["touch_policy"].is_string(),
        "{att}"
    );
    assert!(
        by_version(1)["attestation"].is_null(),
        "an HSM key is not attested"
    );
    w.ok(&["audit", "verify"]);
}
