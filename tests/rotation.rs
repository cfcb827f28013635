//! Rotation end to end against a local registry, with distribution bundles: old and new
//! bundles admit exactly what they should, `image resign` carries images over, a compromise
//! revokes. Judged by keyward and by sigstore-rs.
#![allow(clippy::unwrap_used)]

#[path = "support/registry.rs"]
mod registry;
#[path = "support/sigstore.rs"]
mod sig;
mod support;

use base64::Engine;
use registry::TestRegistry;
use support::*;

struct Env {
    w: World,
    reg: TestRegistry,
}

impl Env {
    fn run(&self, args: &[&str]) -> std::process::Output {
        let host = self.reg.host();
        let mut all = args.to_vec();
        if args.first() == Some(&"image") {
            all.extend(["--insecure-registry", &host]);
        }
        self.w.run(&all)
    }
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        stdout(&out)
    }
    fn admits(&self, bundle: &str, image: &str) -> bool {
        let out = self.run(&["image", "verify", image, "--bundle", bundle]);
        match out.status.code() {
            Some(0) => true,
            Some(10) | Some(11) => false,
            other => panic!("image verify --bundle: {other:?} {}", stderr(&out)),
        }
    }
    /// sigstore-rs with every key of a bundle, one at a time: any one accepting admits.
    fn sigstore_admits(&self, bundle: &str, image: &str) -> bool {
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(format!("{bundle}/bundle.json")).unwrap())
                .unwrap();
        let revoked: Vec<&str> = m["revoked"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["key_id"].as_str().unwrap())
            .collect();
        m["keys"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|k| !revoked.contains(&k["key_id"].as_str().unwrap()))
            .any(|k| {
                let pem =
                    std::fs::read_to_string(format!("{bundle}/{}", k["file"].as_str().unwrap()))
                        .unwrap();
                sig::sigstore_accepts(&self.reg.host(), image, &pem)
            })
    }
}

#[test]
fn rotation_with_overlap_bundles_resign_and_compromise() {
    let env = Env {
        w: World::new(),
        reg: TestRegistry::start(),
    };
    let (w, reg) = (&env.w, &env.reg);
    w.init_hsm("hsm");
    w.ok(&["key", "generate", "release", "--token", "hsm"]);
    let scope = format!("{}/app", reg.host());
    let d = |n: &str| w.path().join(n).to_str().unwrap().to_owned();
    let (a, b, c, dd) = (
        reg.image("app", "a"),
        reg.image("app", "b"),
        reg.image("app", "c"),
        reg.image("app", "d"),
    );
    for t in ["a", "b", "c", "d"] {
        reg.push_image("app", t);
    }

    env.ok(&["image", "sign", &a, "--key", "release"]);
    env.ok(&[
        "bundle",
        "export",
        "--key",
        "release",
        "--scope",
        &scope,
        "--output",
        &d("old"),
    ]);
    // The export is in the audit log, and the entry identifies the bundle by its SHA256SUMS.
    let exported: serde_json::Value = serde_json::from_str(&w.ok(&[
        "audit",
        "show",
        "--event",
        "bundle_exported",
        "--output",
        "json",
    ]))
    .unwrap();
    let e = &exported.as_array().unwrap()[0]["event"];
    assert_eq!(e["trusts"], serde_json::json!(["release/1"]), "{e}");
    let sums = std::fs::read(std::path::Path::new(&d("old")).join("SHA256SUMS")).unwrap();
    assert_eq!(
        e["sums_sha256"],
        registry::sha256(&sums).trim_start_matches("sha256:")
    );

    // Rotate with an overlap: B is signed by both versions.
    w.ok(&["key", "rotate", "release", "--overlap", "8s"]);
    let rotated = std::time::Instant::now();
    let out = env.ok(&["image", "sign", &b, "--key", "release"]);
    assert_eq!(
        out.lines().filter(|l| l.starts_with("signed")).count(),
        2,
        "{out}"
    );
    // D is signed by version 1 only (pinned), before the resign.
    env.ok(&["image", "sign", &dd, "--key", "release/1"]);
    // resign adds version 2 to A and D; B already has it.
    let plan = env.ok(&["image", "resign", "--key", "release", "--dry-run"]);
    assert!(plan.contains("would sign"), "{plan}");
    let out = env.ok(&["image", "resign", "--key", "release", "--output", "json"]);
    let res: serde_json::Value = serde_json::from_str(&out).unwrap();
    let signed: Vec<&str> = res["images"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["action"] == "signed")
        .map(|i| i["image"].as_str().unwrap())
        .collect();
    assert_eq!(signed.len(), 2, "{res}");
    // E is signed by version 1 only, after the resign: it will depend on version 1 alone.
    let e = reg.image("app", "e");
    reg.push_image("app", "e");
    env.ok(&["image", "sign", &e, "--key", "release/1"]);
    env.ok(&[
        "bundle",
        "export",
        "--key",
        "release",
        "--scope",
        &scope,
        "--output",
        &d("new"),
    ]);

    // The overlap ends: version 1 is deactivated; C is signed by version 2 only.
    let wait = std::time::Duration::from_millis(8300).saturating_sub(rotated.elapsed());
    std::thread::sleep(wait);
    let due = w.run(&["key", "due", "--apply"]);
    assert!(
        stdout(&due).contains("deactivated release/1"),
        "{}",
        stdout(&due)
    );
    let out = env.ok(&["image", "sign", &c, "--key", "release"]);
    assert_eq!(
        out.lines().filter(|l| l.starts_with("signed")).count(),
        1,
        "{out}"
    );

    let (old, new) = (d("old"), d("new"));
    for (img, old_ok, new_ok) in [
        (&a, true, true),
        (&b, true, true),
        (&c, false, true),
        (&e, true, true),
    ] {
        assert_eq!(env.admits(&old, img), old_ok, "OLD on {img}");
        assert_eq!(env.admits(&new, img), new_ok, "NEW on {img}");
        assert_eq!(
            env.sigstore_admits(&old, img),
            old_ok,
            "sigstore OLD on {img}"
        );
        assert_eq!(
            env.sigstore_admits(&new, img),
            new_ok,
            "sigstore NEW on {img}"
        );
    }
    // The single-key policy holds the newest version, which resign put on every image it knew.
    let single: serde_json::Value = serde_json::from_slice(
        &std::fs::read(format!("{new}/containers/policy-single-key.json")).unwrap(),
    )
    .unwrap();
    let req = &single["transports"]["docker"][&scope][0];
    let pem = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(req["keyData"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(pem, w.ok(&["key", "public-key", "release/2"]));
    for img in [&a, &b, &c, &dd] {
        assert!(
            sig::sigstore_accepts(&reg.host(), img, &pem),
            "single key on {img}"
        );
    }

    // Version 1 is compromised: the next bundle revokes it; E (version 1 only) is rejected,
    // A (re-signed by version 2) is still admitted.
    let out = w.run(&[
        "key",
        "compromise",
        "release/1",
        "--since",
        "2026-01-01T00:00:00Z",
        "--reason",
        "token lost",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    env.ok(&[
        "bundle",
        "export",
        "--key",
        "release",
        "--scope",
        &scope,
        "--output",
        &d("newer"),
        "--keep-deactivated",
    ]);
    let newer = d("newer");
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(format!("{newer}/bundle.json")).unwrap()).unwrap();
    assert_eq!(m["revoked"].as_array().unwrap().len(), 1);
    assert!(!std::path::Path::new(&format!("{newer}/keys/release-1.pem")).exists());
    assert!(env.admits(&newer, &a));
    assert!(!env.admits(&newer, &e));
    assert!(!env.sigstore_admits(&newer, &e));
    let out = env.run(&["image", "verify", &e, "--bundle", &newer]);
    assert_eq!(out.status.code(), Some(11), "{}", stderr(&out));

    let diff = env.ok(&["bundle", "diff", &new, &newer]);
    assert!(diff.contains("REVOKED   release/1"), "{diff}");
    let verify = env.ok(&["bundle", "verify", &newer, "--previous", &new]);
    assert!(verify.contains("REVOKED"), "{verify}");
    assert!(
        verify.contains("WARNING") && verify.contains("/app:e"),
        "{verify}"
    );
    // An image outside the bundle's scopes is never admitted.
    let other = reg.image("other", "x");
    reg.push_image("other", "x");
    env.ok(&["image", "sign", &other, "--key", "release"]);
    let out = env.run(&["image", "verify", &other, "--bundle", &newer]);
    assert_eq!(out.status.code(), Some(11), "{}", stderr(&out));
    assert!(w.run(&["audit", "verify"]).status.success());
}
