//! `keyward image sign` with a key on a (virtual) YubiKey: a batch of images with one PIN
//! entry, the touch notice, and sigstore-rs as the independent verifier.
#![allow(clippy::unwrap_used)]

#[path = "support/piv.rs"]
mod piv;
#[path = "support/registry.rs"]
mod registry;
#[path = "support/sigstore.rs"]
mod sig;
mod support;

use piv::*;
use registry::TestRegistry;

#[test]
fn images_signed_on_a_yubikey_verify_with_sigstore() {
    let w = PivWorld::new(&[33_000_001]);
    let reg = TestRegistry::start();
    w.ok(&["key", "generate", "release", "--token", "yubikey:33000001"]);
    let d1 = reg.push_image("app", "1.0");
    let d2 = reg.push_image("api", "2.0");
    let (i1, i2) = (reg.image("app", "1.0"), reg.image("api", "2.0"));
    let host = reg.host();

    let out = w.run(&[
        "image",
        "sign",
        &i1,
        &i2,
        "--key",
        "release",
        "--insecure-registry",
        &host,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = ok(out, &["image", "sign"]);
    assert!(stdout.contains(&d1) && stdout.contains(&d2), "{stdout}");
    // The release manager is told to touch the key (the default touch policy is cached).
    assert!(
        stderr.contains("touch your YubiKey (serial 33000001)"),
        "{stderr}"
    );

    // One PIN entry for the batch: one login in the audit log, two image signatures.
    let log = w.audit();
    let logins = log
        .iter()
        .filter(|e| e["event"]["type"] == "login" && e["outcome"] == "ok")
        .count();
    // One login when the key was generated, one for the batch.
    assert_eq!(logins, 2);
    let signed = log
        .iter()
        .filter(|e| e["event"]["type"] == "image_signed" && e["outcome"] == "ok")
        .count();
    assert_eq!(signed, 2);

    let pem = w.ok(&["key", "public-key", "release"]);
    assert!(sig::sigstore_accepts(&host, &i1, &pem));
    assert!(sig::sigstore_accepts(&host, &i2, &pem));
    let out = w.ok(&[
        "image",
        "verify",
        &i1,
        "--key",
        "release",
        "--insecure-registry",
        &host,
    ]);
    assert!(out.contains("signed by release/1"), "{out}");
    assert!(out.contains("keyward.token-kind: piv"), "{out}");
}

#[test]
fn image_sign_token_signs_with_the_copy_a_yubikey_holds() {
    const SERIAL: u32 = 33_000_021;
    let w = PivWorld::new(&[SERIAL]);
    let card = w.token(SERIAL);
    let reg = TestRegistry::start();
    let host = reg.host();
    // A key made in the software keystore (as in a ceremony) and copied onto the card.
    w.ok(&["key", "generate", "ceremony", "--token", "soft"]);
    w.ok(&["token", "piv", "import", "ceremony/1", "--token", &card]);
    reg.push_image("app", "3.0");
    let image = reg.image("app", "3.0");
    w.ok(&[
        "image",
        "sign",
        &image,
        "--key",
        "ceremony",
        "--token",
        &card,
        "--insecure-registry",
        &host,
    ]);
    // The signature verifies with the version's public key, and its provenance names the card.
    let out = w.ok(&[
        "image",
        "verify",
        &image,
        "--key",
        "ceremony",
        "--insecure-registry",
        &host,
        "--output",
        "json",
    ]);
    assert!(
        out.contains("piv") && out.contains(&SERIAL.to_string()),
        "{out}"
    );
    // A token that holds no copy is refused, naming it.
    let e = w.run(&[
        "image",
        "sign",
        &image,
        "--key",
        "ceremony",
        "--token",
        "yubikey:99999999",
        "--insecure-registry",
        &host,
    ]);
    assert!(!e.status.success());
    let msg = String::from_utf8_lossy(&e.stderr);
    assert!(msg.contains("99999999"), "{msg}");
}
