//! The audit log as the source of truth: tampering is detected and the first bad entry named;
//! an unwritable log makes operations refuse and leaves no orphan key; concurrent writers and
//! SIGKILL at random points lose nothing.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;
use support::*;

fn lines(w: &World) -> Vec<String> {
    std::fs::read_to_string(w.audit_log())
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(w: &World, lines: &[String]) {
    std::fs::write(w.audit_log(), lines.join("\n") + "\n").unwrap();
}

/// A home with a key on SoftHSM and about a dozen entries.
fn world_with_history() -> World {
    let w = World::new();
    w.init_hsm("hsm");
    w.ok(&["key", "generate", "audit", "--token", "hsm"]);
    for _ in 0..4 {
        w.ok(&["key", "public-key", "audit"]);
    }
    w
}

fn verify_fails_naming(w: &World, entry: u64, word: &str) {
    let out = w.run(&["audit", "verify"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(
        err.contains(&format!("first bad entry: {entry},")),
        "expected entry {entry}: {err}"
    );
    assert!(err.contains(word), "expected {word:?}: {err}");
    let json = w.run(&["audit", "verify", "--output", "json"]);
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["problem"]["seq"], entry);
}

#[test]
fn an_edit_is_detected() {
    let w = world_with_history();
    let mut l = lines(&w);
    l[5] = l[5].replace("\"outcome\":\"ok\"", "\"outcome\":\"failed\"");
    write_lines(&w, &l);
    verify_fails_naming(&w, 6, "modified");
}

#[test]
fn a_deletion_is_detected() {
    let w = world_with_history();
    let mut l = lines(&w);
    l.remove(4);
    write_lines(&w, &l);
    verify_fails_naming(&w, 5, "missing");
}

#[test]
fn an_insertion_is_detected() {
    let w = world_with_history();
    let mut l = lines(&w);
    let copy = l[1].clone();
    l.insert(4, copy);
    write_lines(&w, &l);
    verify_fails_naming(&w, 5, "reordered or duplicated");
}

#[test]
fn a_reordering_is_detected() {
    let w = world_with_history();
    let mut l = lines(&w);
    l.swap(3, 4);
    write_lines(&w, &l);
    verify_fails_naming(&w, 4, "out of order");
}

#[test]
fn truncation_behind_a_checkpoint_is_detected() {
    let w = world_with_history();
    let cp = w.ok(&["audit", "checkpoint", "--key", "audit", "--output", "json"]);
    let cp: serde_json::Value = serde_json::from_str(&cp).unwrap();
    let seq = cp["seq"].as_u64().unwrap();
    w.ok(&["key", "public-key", "audit"]);
    assert!(w.run(&["audit", "verify"]).status.success());
    // Cut the log two entries before the checkpointed head.
    let l = lines(&w);
    write_lines(&w, &l[..(seq as usize - 2)]);
    let out = w.run(&["audit", "verify"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains("were removed"), "{err}");
    assert!(
        err.contains(&format!("first bad entry: {},", seq - 1)),
        "{err}"
    );
    // Without the checkpoint file the cut would be invisible: keep a copy off the host.
    std::fs::rename(
        w.home().join("audit.checkpoints"),
        w.path().join("offhost.jsonl"),
    )
    .unwrap();
    assert!(w.run(&["audit", "verify"]).status.success());
    let off = w.path().join("offhost.jsonl");
    let out = w.run(&["audit", "verify", "--checkpoints", off.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(5));
}

#[test]
fn a_forged_checkpoint_signature_is_detected() {
    let w = world_with_history();
    w.ok(&["audit", "checkpoint", "--key", "audit"]);
    let p = w.home().join("audit.checkpoints");
    let text = std::fs::read_to_string(&p).unwrap();
    let mut rec: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    let mut sig = rec["signature"].as_str().unwrap().to_owned().into_bytes();
    sig[20] = if sig[20] == b'A' { b'B' } else { b'A' };
    rec["signature"] = String::from_utf8(sig).unwrap().into();
    std::fs::write(&p, serde_json::to_string(&rec).unwrap() + "\n").unwrap();
    let out = w.run(&["audit", "verify"]);
    assert_eq!(out.status.code(), Some(5));
    assert!(stderr(&out).contains("not valid"), "{}", stderr(&out));
}

fn token_labels(w: &World) -> Vec<String> {
    let objects = w.pkcs11_tool_objects("hsm");
    let mut labels: Vec<String> = objects
        .split("Public Key Object")
        .skip(1)
        .filter_map(|o| o.lines().find(|l| l.trim_start().starts_with("label:")))
        .map(|l| {
            l.trim_start()
                .trim_start_matches("label:")
                .trim()
                .to_owned()
        })
        .collect();
    labels.sort();
    labels
}

fn registry_labels(w: &World, token: &str) -> Vec<String> {
    let list = w.ok(&["key", "list", "--output", "json"]);
    let v: serde_json::Value = serde_json::from_str(&list).unwrap();
    let mut labels: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["token"] == token)
        .map(|v| format!("{}/{}", v["key"].as_str().unwrap(), v["version"]))
        .collect();
    labels.sort();
    labels
}

#[test]
fn a_full_audit_log_refuses_generate_and_leaves_no_key() {
    let w = World::new();
    w.init_hsm("hsm");
    // Leave room for the login and the intent, not for the completion record: the key is
    // created on the token, the log refuses the record, keyward destroys the key again.
    let size = std::fs::metadata(w.audit_log()).unwrap().len();
    let limit = size + 900;
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "trap '' XFSZ; exec prlimit --fsize={limit} \"$0\" key generate orphan --token hsm"
        ))
        .arg(env!("CARGO_BIN_EXE_keyward"))
        .env("KEYWARD_HOME", w.home())
        .env("SOFTHSM2_CONF", w.softhsm_conf())
        .env("KEYWARD_PIN", USER_PIN)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains("cannot write the audit log"), "{err}");
    assert!(token_labels(&w).is_empty(), "orphan key left on the token");
    // The interrupted intent is closed on the next run, and the log is whole.
    assert!(registry_labels(&w, "hsm").is_empty());
    assert!(w.run(&["audit", "verify"]).status.success());
    let aborted = w.ok(&[
        "audit",
        "show",
        "--event",
        "key_generation_aborted",
        "--output",
        "json",
    ]);
    assert!(!serde_json::from_str::<serde_json::Value>(&aborted)
        .unwrap()
        .as_array()
        .unwrap()
        .is_empty());

    // /dev/full: nothing at all can be appended.
    std::fs::remove_file(w.audit_log()).unwrap();
    std::os::unix::fs::symlink("/dev/full", w.audit_log()).unwrap();
    let out = w.run(&["key", "generate", "orphan2", "--token", "hsm"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(token_labels(&w).is_empty());
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// The keyward binary for `w` with its audit log made read-only: as nobody when running as
/// root (root ignores file modes), owning everything in the world but the log.
fn keyward_with_read_only_log(w: &World) -> Command {
    let log = w.audit_log();
    let mut perms = std::fs::metadata(&log).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o444);
    std::fs::set_permissions(&log, perms).unwrap();
    if is_root() {
        // root ignores file modes: run keyward as nobody, owning everything but the log.
        let st = Command::new("chown")
            .arg("-R")
            .arg("65534:65534")
            .arg(w.path())
            .status()
            .unwrap();
        assert!(st.success());
        std::os::unix::fs::chown(&log, Some(0), Some(0)).unwrap();
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            env!("CARGO_BIN_EXE_keyward"),
        ]);
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_keyward"))
    }
}

#[test]
fn a_read_only_audit_log_refuses_generate_and_leaves_no_key() {
    let w = World::new();
    w.init_hsm("hsm");
    let mut cmd = keyward_with_read_only_log(&w);
    let out = cmd
        .args(["key", "generate", "ro", "--token", "hsm"])
        .env("KEYWARD_HOME", w.home())
        .env("SOFTHSM2_CONF", w.softhsm_conf())
        .env("KEYWARD_PIN", USER_PIN)
        .env("HOME", w.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains("cannot write the audit log"), "{err}");
    assert!(token_labels(&w).is_empty(), "orphan key left on the token");
}

#[test]
fn a_bundle_the_audit_log_cannot_record_is_not_left_behind() {
    let w = World::new();
    w.ok(&["key", "generate", "release", "--token", "soft"]);
    let mut cmd = keyward_with_read_only_log(&w);
    let out_dir = w.path().join("bundle");
    let out = cmd
        .args([
            "bundle",
            "export",
            "--scope",
            "registry.example.com/app",
            "--tar",
        ])
        .arg("--output")
        .arg(&out_dir)
        .env("KEYWARD_HOME", w.home())
        .env("HOME", w.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains("cannot write the audit log"), "{err}");
    assert!(!out_dir.exists(), "an unrecorded bundle was left behind");
    assert!(!w.path().join("bundle.tar.gz").exists());
}

#[test]
fn two_processes_appending_at_once_lose_nothing() {
    let w = World::new();
    w.ok(&["key", "generate", "k", "--token", "soft"]);
    let before = lines(&w).len();
    let per = 40;
    let spawn = || {
        let bin = env!("CARGO_BIN_EXE_keyward");
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "for i in $(seq {per}); do \"{bin}\" key public-key k >/dev/null || exit 1; done"
            ))
            .env("KEYWARD_HOME", w.home())
            .spawn()
            .unwrap()
    };
    let (mut a, mut b) = (spawn(), spawn());
    assert!(a.wait().unwrap().success());
    assert!(b.wait().unwrap().success());
    assert_eq!(lines(&w).len(), before + 2 * per);
    let out = w.run(&["audit", "verify"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn sigkill_at_random_points_leaves_a_consistent_log_and_token() {
    let w = World::new();
    let server = P11Server::start(&w, "crash", "hsm");
    let kw = || {
        let mut c = w.keyward();
        c.env("P11_KIT_SERVER_ADDRESS", &server.address);
        c
    };
    let ok = |args: &[&str]| {
        let out = kw().args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        stdout(&out)
    };
    ok(&["key", "generate", "base", "--token", "hsm"]);
    let f = w.path().join("f");
    std::fs::write(&f, b"data").unwrap();
    let sig = w.path().join("f.sig");
    let mut seed: u64 = 0x9e3779b97f4a7c15 ^ std::process::id() as u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let kills = 60;
    for i in 0..kills {
        let mut cmd = kw();
        if next() % 2 == 0 {
            cmd.args([
                "key",
                "generate",
                &format!("crash{}", i % 5),
                "--token",
                "hsm",
            ]);
        } else {
            cmd.args([
                "key",
                "sign",
                "base",
                "--input",
                f.to_str().unwrap(),
                "--output",
                sig.to_str().unwrap(),
            ]);
        }
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(next() % 90_000));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        if i % 10 == 9 {
            let out = kw().args(["audit", "verify"]).output().unwrap();
            assert!(out.status.success(), "after kill {i}: {}", stderr(&out));
        }
    }
    // Give the token time to finish requests whose client was killed, as an HSM would.
    std::thread::sleep(Duration::from_millis(500));
    let out = kw().args(["audit", "verify"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // `key list` closes interrupted generations (adopting keys the token did create); then the
    // log and the token agree exactly.
    let list = ok(&["key", "list", "--output", "json"]);
    let v: serde_json::Value = serde_json::from_str(&list).unwrap();
    let mut registry: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|v| format!("{}/{}", v["key"].as_str().unwrap(), v["version"]))
        .collect();
    registry.sort();
    assert_eq!(registry, server.labels());
    assert!(!ok(&["key", "list"]).contains("pending"));
    let out = kw().args(["audit", "verify"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let signed = ok(&["audit", "show", "--event", "signed", "--output", "json"]);
    let signed: serde_json::Value = serde_json::from_str(&signed).unwrap();
    // Every sign that reported success has its entry; entries are never half-written.
    assert!(signed
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["outcome"] == "ok" || e["outcome"] == "failed"));
}
