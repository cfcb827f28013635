//! The CLI as a new user runs it, against a private SoftHSM2, cross-checked with openssl and
//! pkcs11-tool.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};
use support::*;

#[test]
fn acceptance_init_generate_sign_verify_with_openssl_then_tamper() {
    let w = World::new();
    w.init_hsm("hsm");
    w.ok(&["key", "generate", "release", "--token", "hsm"]);
    let pem = w.ok(&["key", "public-key", "release"]);
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"));
    std::fs::write(w.path().join("pub.pem"), &pem).unwrap();
    std::fs::write(w.path().join("f"), b"release artefact\n").unwrap();
    let f = w.path().join("f");
    let sig = w.path().join("f.sig");
    w.ok(&[
        "key",
        "sign",
        "release",
        "--input",
        f.to_str().unwrap(),
        "--output",
        sig.to_str().unwrap(),
    ]);
    let out = std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(w.path().join("pub.pem"))
        .arg("-signature")
        .arg(&sig)
        .arg(&f)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "Verified OK");
    let ok = w.run(&["audit", "verify"]);
    assert!(ok.status.success(), "{}", stderr(&ok));

    // Change one byte of entry 3 (a digit of its time stamp).
    let log = std::fs::read_to_string(w.audit_log()).unwrap();
    let mut lines: Vec<String> = log.lines().map(str::to_owned).collect();
    let pos = lines[2].find("\"time\":\"2").unwrap() + 9;
    let mut bytes = lines[2].clone().into_bytes();
    bytes[pos] = if bytes[pos] == b'1' { b'2' } else { b'1' };
    lines[2] = String::from_utf8(bytes).unwrap();
    std::fs::write(w.audit_log(), lines.join("\n") + "\n").unwrap();
    let bad = w.run(&["audit", "verify"]);
    assert_eq!(bad.status.code(), Some(5), "{}", stderr(&bad));
    assert!(stderr(&bad).contains("entry 3"), "{}", stderr(&bad));
    assert!(stderr(&bad).contains("modified"), "{}", stderr(&bad));
}

#[test]
fn pkcs11_tool_sees_the_key_sensitive_and_not_extractable() {
    let w = World::new();
    w.init_hsm("hsm");
    w.ok(&["key", "generate", "release", "--token", "hsm"]);
    w.ok(&[
        "key",
        "generate",
        "release",
        "--token",
        "hsm",
        "--algorithm",
        "rsa3072",
    ]);
    let objects = w.pkcs11_tool_objects("hsm");
    assert!(objects.contains("label:      release/1"), "{objects}");
    assert!(objects.contains("label:      release/2"), "{objects}");
    // Each private key object: sensitive, never extractable.
    let privs: Vec<&str> = objects.split("Private Key Object").skip(1).collect();
    assert_eq!(privs.len(), 2, "{objects}");
    for p in privs {
        let access = p.lines().find(|l| l.contains("Access:")).unwrap();
        assert!(access.contains("sensitive"), "{access}");
        assert!(access.contains("never extractable"), "{access}");
        assert!(
            !access.contains(" extractable,") || access.contains("never extractable"),
            "{access}"
        );
    }
}

#[test]
fn wrong_pin_says_so_and_is_in_the_audit_log() {
    let w = World::new();
    w.init_hsm("hsm");
    let out = w
        .keyward()
        .env("KEYWARD_PIN", "9999")
        .args(["key", "generate", "k", "--token", "hsm"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    let err = stderr(&out);
    assert!(err.contains("wrong PIN for hsm"), "{err}");
    assert!(err.contains("tries"), "{err}");
    assert!(!err.contains("9999"));
    let failed = w.ok(&[
        "audit",
        "show",
        "--event",
        "login",
        "--outcome",
        "failed",
        "--output",
        "json",
    ]);
    let entries: serde_json::Value = serde_json::from_str(&failed).unwrap();
    assert_eq!(entries.as_array().unwrap().len(), 1, "{failed}");
    assert!(!std::fs::read_to_string(w.audit_log())
        .unwrap()
        .contains("9999"));
    // No key was generated.
    assert!(w.ok(&["key", "list"]).contains("no keys yet"));
}

#[test]
fn batch_mode_never_waits_for_input() {
    let w = World::new();
    w.init_hsm("hsm");
    let start = Instant::now();
    let mut child = w
        .keyward()
        .env_remove("KEYWARD_PIN")
        .args(["--batch", "key", "generate", "k", "--token", "hsm"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Keep stdin open and silent: a prompt would hang here.
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("keyward --batch waited for input");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(4), "{err}");
    assert!(err.contains("KEYWARD_PIN"), "{err}");
}

#[test]
fn only_an_active_version_signs_and_activate_moves_it() {
    let w = World::new();
    w.init_hsm("hsm");
    w.ok(&["key", "generate", "staged", "--token", "hsm", "--inactive"]);
    let f = w.path().join("f");
    std::fs::write(&f, b"x").unwrap();
    let sig = w.path().join("f.sig");
    let args = [
        "key",
        "sign",
        "staged",
        "--input",
        f.to_str().unwrap(),
        "--output",
        sig.to_str().unwrap(),
    ];
    let out = w.run(&args);
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no active version"),
        "{}",
        stderr(&out)
    );
    assert!(!sig.exists());
    let out = w.run(&[
        "key",
        "sign",
        "staged/1",
        "--input",
        f.to_str().unwrap(),
        "--output",
        sig.to_str().unwrap(),
    ]);
    assert!(
        stderr(&out).contains("staged/1 is pre-active"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("keyward key activate staged/1"),
        "{}",
        stderr(&out)
    );
    w.ok(&["key", "activate", "staged/1"]);
    w.ok(&args);
    assert!(sig.exists());
    let show = w.ok(&["key", "show", "staged", "--output", "json"]);
    let v: serde_json::Value = serde_json::from_str(&show).unwrap();
    assert_eq!(v["versions"][0]["state"], "active");
    // Refusals are recorded too.
    let refused = w.ok(&["audit", "show", "--outcome", "refused", "--output", "json"]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&refused)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn software_keystore_works_with_zero_setup_and_says_it_is_software() {
    let w = World::new();
    let out = w.ok(&["key", "generate", "dev", "--token", "soft"]);
    assert!(out.contains("not hardware protected"), "{out}");
    let list = w.ok(&["token", "list"]);
    assert!(list.contains("software — not hardware protected"), "{list}");
    let f = w.path().join("f");
    std::fs::write(&f, b"x").unwrap();
    let sig = w.path().join("f.sig");
    w.ok(&[
        "key",
        "sign",
        "dev",
        "--input",
        f.to_str().unwrap(),
        "--output",
        sig.to_str().unwrap(),
    ]);
    // A wrong passphrase is refused and recorded.
    let out = w
        .keyward()
        .env("KEYWARD_PASSPHRASE", "nope nope nope")
        .args([
            "key",
            "sign",
            "dev",
            "--input",
            f.to_str().unwrap(),
            "--output",
            sig.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(
        stderr(&out).contains("wrong passphrase"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn keys_can_be_named_by_pkcs11_uri() {
    let w = World::new();
    w.init_hsm("urihsm");
    let uri = format!("pkcs11:token=urihsm?module-path={SOFTHSM_MODULE}");
    w.ok(&[
        "key",
        "generate",
        "viauri",
        "--token",
        &uri,
        "--algorithm",
        "p384",
    ]);
    let list = w.ok(&["key", "list", "--output", "json"]);
    assert!(list.contains("\"p384\""), "{list}");
}
