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
