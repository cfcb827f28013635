//! `keyward image ...` as a release manager runs it: keys on SoftHSM2 and the software
//! keystore, a private Debian docker-registry, sigstore-rs as the independent verifier.
#![allow(clippy::unwrap_used)]

#[path = "support/registry.rs"]
mod registry;
#[path = "support/sigstore.rs"]
mod sig;
mod support;

use registry::TestRegistry;
use support::*;

fn setup() -> (World, TestRegistry) {
    let w = World::new();
    w.init_hsm("hsm");
    (w, TestRegistry::start())
}

fn kw(w: &World, reg: &TestRegistry, args: &[&str]) -> std::process::Output {
    let mut all: Vec<&str> = args.to_vec();
    let host = reg.host();
    // --insecure-registry belongs to the image subcommand; put it last.
    all.extend(["--insecure-registry", &host]);
    w.run(&all)
}

fn pem(w: &World, key: &str) -> String {
    w.ok(&["key", "public-key", key])
}

#[test]
fn sign_with_softhsm_and_soft_keys_then_keyward_and_sigstore_verify() {
    let (w, reg) = setup();
    w.ok(&["key", "generate", "release", "--token", "hsm"]);
    w.ok(&["key", "generate", "dev", "--token", "soft"]);
    let digest = reg.push_image("app", "1.0");
    let image = reg.image("app", "1.0");

    let out = kw(
        &w,
        &reg,
        &[
            "image", "sign", &image, "--key", "release", "-a", "build=42",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(&digest), "{}", stdout(&out));
    let out = kw(&w, &reg, &["image", "sign", &image, "--key", "dev"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // keyward verifies with each key alone, names the digest and the provenance.
    let out = kw(
        &w,
        &reg,
        &[
            "image", "verify", &image, "--key", "release", "-a", "build=42",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains(&digest), "{text}");
    assert!(text.contains("signed by release/1"), "{text}");
    assert!(text.contains("keyward.token-kind: pkcs11"), "{text}");
    assert!(text.contains("build: 42"), "{text}");
    let out = kw(&w, &reg, &["image", "verify", &image, "--key", "dev"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // sigstore-rs, which nobody here wrote, accepts both signatures, each with its key.
    let release_pem = pem(&w, "release");
    let dev_pem = pem(&w, "dev");
    assert!(sig::sigstore_accepts(&reg.host(), &image, &release_pem));
    assert!(sig::sigstore_accepts(&reg.host(), &image, &dev_pem));
    // Both layers are present; every payload passes containers/image's strict rules.
    let layers = reg.signature_layers("app", &digest);
    assert_eq!(layers.len(), 2);
    let listing = w.ok(&[
        "--output",
        "json",
        "image",
        "signatures",
        &image,
        "--insecure-registry",
        &reg.host(),
    ]);
    let listing: serde_json::Value = serde_json::from_str(&listing).unwrap();
    for s in listing["signatures"].as_array().unwrap() {
        assert_eq!(s["containers_image_rules"], "ok", "{s}");
        assert_eq!(s["verified"], true);
    }
    // Every signature is in the audit log.
    let signed = w.ok(&[
        "audit",
        "show",
        "--event",
        "image_signed",
        "--output",
        "json",
    ]);
    let signed: serde_json::Value = serde_json::from_str(&signed).unwrap();
    assert_eq!(signed.as_array().unwrap().len(), 2);
    assert!(signed
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["event"]["digest"] == digest.as_str()));
    assert!(w.run(&["audit", "verify"]).status.success());
}

#[test]
fn verify_failures_have_distinct_exit_codes() {
    let (w, reg) = setup();
    w.ok(&["key", "generate", "release", "--token", "hsm"]);
    w.ok(&["key", "generate", "other", "--token", "hsm"]);
    reg.push_image("app", "unsigned");
    reg.push_image("app", "signed");
    let unsigned = reg.image("app", "unsigned");
    let signed = reg.image("app", "signed");
    assert!(kw(
        &w,
        &reg,
        &["image", "sign", &signed, "--key", "release", "-a", "env=prod"]
    )
    .status
    .success());

    let out = kw(
        &w,
        &reg,
        &["image", "verify", &unsigned, "--key", "release"],
    );
    assert_eq!(out.status.code(), Some(10), "{}", stderr(&out));
    assert!(stderr(&out).contains("not signed"), "{}", stderr(&out));
    let out = kw(&w, &reg, &["image", "verify", &signed, "--key", "other"]);
    assert_eq!(out.status.code(), Some(11), "{}", stderr(&out));
    let out = kw(
        &w,
        &reg,
        &[
            "image",
            "verify",
            &signed,
            "--key",
            "release",
            "-a",
            "env=staging",
        ],
    );
    assert_eq!(out.status.code(), Some(14), "{}", stderr(&out));
    // A tag moved to another manifest after signing: the signature does not follow it.
    let other = reg.push_image("app", "signed");
    let out = kw(&w, &reg, &["image", "verify", &signed, "--key", "release"]);
    assert_eq!(out.status.code(), Some(10), "{}", stderr(&out));
    assert!(stderr(&out).contains(&other), "{}", stderr(&out));
    assert!(!sig::sigstore_accepts(
        &reg.host(),
        &signed,
        &pem(&w, "release")
    ));
    // Registry down.
    let out = w.run(&[
        "image",
        "verify",
        "127.0.0.1:9/app:x",
        "--key",
        "release",
        "--insecure-registry",
        "127.0.0.1:9",
    ]);
    assert_eq!(out.status.code(), Some(15), "{}", stderr(&out));
}

#[test]
fn batch_signs_many_images_with_one_pin_entry_and_reports_each() {
    let (w, reg) = setup();
    w.ok(&["key", "generate", "release", "--token", "hsm"]);
    let mut lines = String::from("# release images\n");
    for i in 0..6 {
        reg.push_image("batch", &format!("v{i}"));
        lines.push_str(&reg.image("batch", &format!("v{i}")));
        lines.push('\n');
    }
    lines.push_str(&reg.image("batch", "does-not-exist"));
    lines.push('\n');
    let list = w.path().join("images.txt");
    std::fs::write(&list, lines).unwrap();
    let out = kw(
        &w,
        &reg,
        &[
            "--output",
            "json",
            "image",
            "sign",
            "--from-file",
            list.to_str().unwrap(),
            "--key",
            "release",
        ],
    );
    assert_eq!(out.status.code(), Some(16), "{}", stderr(&out));
    let results: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results.len(), 7);
    assert_eq!(results.iter().filter(|r| r["ok"] == true).count(), 6);
    let bad = results.iter().find(|r| r["ok"] == false).unwrap();
    assert!(bad["image"].as_str().unwrap().ends_with("does-not-exist"));
    // One login for the whole batch.
    let logins = w.ok(&["audit", "show", "--event", "login", "--output", "json"]);
    let logins: serde_json::Value = serde_json::from_str(&logins).unwrap();
    assert_eq!(
        logins.as_array().unwrap().len(),
        2,
        "token init aside, one login for generate and one for the batch"
    );
    let failed = w.ok(&[
        "audit",
        "show",
        "--event",
        "image_signed",
        "--outcome",
        "failed",
        "--output",
        "json",
    ]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&failed)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn offline_sign_then_attach_then_sigstore_accepts() {
    let (w, reg) = setup();
    w.ok(&["key", "generate", "release", "--token", "hsm"]);
    let digest = reg.push_image("air", "gapped");
    let pinned = format!("{}/air@{digest}", reg.host());
    let sigfile = w.path().join("air.sig.json");
    // No registry flag: the offline path never talks to a registry.
    w.ok(&[
        "image",
        "sign",
        "--offline",
        &pinned,
        "--key",
        "release",
        "--output",
        sigfile.to_str().unwrap(),
    ]);
    assert!(sigfile.exists());
    assert_eq!(reg.signature_layers("air", &digest).len(), 0);
    let out = kw(&w, &reg, &["image", "attach", sigfile.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(sig::sigstore_accepts(
        &reg.host(),
        &reg.image("air", "gapped"),
        &pem(&w, "release")
    ));
    let out = kw(&w, &reg, &["image", "verify", &pinned, "--key", "release"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The push is in the audit log too.
    let attached = w.ok(&[
        "audit",
        "show",
        "--event",
        "signature_attached",
        "--output",
        "json",
    ]);
    let attached: serde_json::Value = serde_json::from_str(&attached).unwrap();
    assert_eq!(attached.as_array().unwrap().len(), 1, "{attached}");
    assert_eq!(attached[0]["event"]["digest"], digest.as_str());
}

#[test]
fn only_active_versions_sign_and_an_overlap_signs_with_both() {
    let (w, reg) = setup();
    w.ok(&["key", "generate", "staged", "--token", "hsm", "--inactive"]);
    let image = reg.image("app", "1");
    let digest = reg.push_image("app", "1");
    let out = kw(&w, &reg, &["image", "sign", &image, "--key", "staged"]);
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no active version"),
        "{}",
        stderr(&out)
    );

    w.ok(&["key", "generate", "release", "--token", "hsm"]);
    w.ok(&["key", "rotate", "release", "--overlap", "7d"]);
    let out = kw(&w, &reg, &["image", "sign", &image, "--key", "release"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(reg.signature_layers("app", &digest).len(), 2);
    for v in ["release/1", "release/2"] {
        assert!(
            sig::sigstore_accepts(&reg.host(), &image, &pem(&w, v)),
            "{v}"
        );
    }
}
