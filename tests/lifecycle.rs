//! Lifecycle: every legal and illegal SP 800-57 transition through the CLI, replay of the log
//! equals what is shown, rotation with an overlap window, cryptoperiod warnings, destroy.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use support::*;

const STATES: [&str; 6] = [
    "pre-active",
    "active",
    "suspended",
    "deactivated",
    "compromised",
    "destroyed",
];

fn legal(from: &str, to: &str) -> bool {
    matches!(
        (from, to),
        ("pre-active", "active")
            | ("pre-active", "compromised")
            | ("pre-active", "destroyed")
            | ("active", "suspended")
            | ("active", "deactivated")
            | ("active", "compromised")
            | ("suspended", "active")
            | ("suspended", "deactivated")
            | ("suspended", "compromised")
            | ("deactivated", "compromised")
            | ("deactivated", "destroyed")
            | ("compromised", "destroyed")
    )
}

fn to_args(state: &str, v: &str) -> Vec<String> {
    let mut a: Vec<String> = match state {
        "active" => vec!["key".into(), "activate".into()],
        "suspended" => vec!["key".into(), "suspend".into()],
        "deactivated" => vec!["key".into(), "deactivate".into()],
        "compromised" => vec!["key".into(), "compromise".into()],
        "destroyed" => vec!["--yes".into(), "key".into(), "destroy".into()],
        _ => unreachable!(),
    };
    a.push(v.into());
    if state == "compromised" {
        a.extend(
            [
                "--since",
                "2026-11-01T00:00:00Z",
                "--reason",
                "laptop stolen",
            ]
            .map(String::from),
        );
    }
    a
}

fn bring_to(w: &World, key: &str, state: &str) -> String {
    let inactive = matches!(state, "pre-active" | "destroyed");
    let mut args = vec!["key", "generate", key, "--token", "hsm"];
    if inactive {
        args.push("--inactive");
    }
    w.ok(&args);
    let v = format!("{key}/1");
    if !matches!(state, "pre-active" | "active") {
        let a = to_args(state, &v);
        w.ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    }
    v
}

/// Folds the log the way FORMATS.md says, independently of keyward's code.
fn replay(w: &World) -> BTreeMap<String, String> {
    let mut states = BTreeMap::new();
    for line in std::fs::read_to_string(w.audit_log()).unwrap().lines() {
        let e: serde_json::Value = serde_json::from_str(line).unwrap();
        if e["outcome"] != "ok" {
            continue;
        }
        let ev = &e["event"];
        let name = format!("{}/{}", ev["key"].as_str().unwrap_or(""), ev["version"]);
        match ev["type"].as_str().unwrap() {
            "key_generated" => {
                states.insert(name, ev["state"].as_str().unwrap().to_owned());
            }
            "state_changed" => {
                states.insert(name, ev["to"].as_str().unwrap().to_owned());
            }
            _ => {}
        }
    }
    states
}

fn shown(w: &World) -> BTreeMap<String, String> {
    let list: serde_json::Value =
        serde_json::from_str(&w.ok(&["key", "list", "--output", "json"])).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                format!("{}/{}", v["key"].as_str().unwrap(), v["version"]),
                v["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn every_transition_is_allowed_or_refused_as_sp800_57_says() {
    let w = World::new();
    w.init_hsm("hsm");
    let mut n = 0;
    for from in STATES {
        for to in STATES.iter().copied().filter(|t| *t != "pre-active") {
            n += 1;
            let key = format!("t{n}");
            let v = bring_to(&w, &key, from);
            let out = w.run(
                &to_args(to, &v)
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>(),
            );
            if legal(from, to) {
                assert!(
                    out.status.success(),
                    "{from} -> {to} should be allowed: {}",
                    stderr(&out)
                );
                let shown = shown(&w);
                assert_eq!(shown[&v], to, "{from} -> {to}");
            } else {
                assert_eq!(
                    out.status.code(),
                    Some(6),
                    "{from} -> {to} should be refused: {}",
                    stderr(&out)
                );
                let err = stderr(&out);
                assert!(
                    err.contains(&format!("cannot go from {from} to {to}")),
                    "{err}"
                );
                assert!(err.contains("it can become"), "{err}");
                assert_eq!(shown(&w)[&v], from);
            }
        }
    }
    // The state after replaying the log equals the state shown, with and without the cache.
    assert_eq!(replay(&w), shown(&w));
    std::fs::remove_file(w.home().join("state.json")).ok();
    assert_eq!(replay(&w), shown(&w));
    assert!(w.run(&["audit", "verify"]).status.success());
}

#[test]
fn destroy_removes_the_private_key_and_needs_a_confirmation() {
    let w = World::new();
    w.init_hsm("hsm");
    w.ok(&["key", "generate", "old", "--token", "hsm"]);
    w.ok(&["key", "deactivate", "old/1", "--reason", "retired"]);
    let out = w.run(&["--batch", "key", "destroy", "old/1"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("--yes"), "{}", stderr(&out));
    assert!(w.pkcs11_tool_objects("hsm").contains("Private Key Object"));
    w.ok(&["--yes", "key", "destroy", "old/1"]);
    let objects = w.pkcs11_tool_objects("hsm");
    assert!(!objects.contains("Private Key Object"), "{objects}");
    // The public key stays available for verifying old signatures.
    assert!(w
        .ok(&["key", "public-key", "old/1"])
        .contains("BEGIN PUBLIC KEY"));
    assert_eq!(shown(&w)["old/1"], "destroyed");
}

#[test]
fn rotation_keeps_the_old_version_active_for_the_overlap_then_deactivates_it() {
    let w = World::new();
    w.init_hsm("hsm");
    w.ok(&["key", "generate", "release", "--token", "hsm"]);
    w.ok(&[
        "key",
        "policy",
        "release",
        "--rotate-every",
        "90d",
        "--overlap",
        "14d",
    ]);
    let out = w.ok(&["key", "rotate", "release"]);
    assert!(out.contains("release/2"), "{out}");
    assert!(out.contains("release/1 stays active until"), "{out}");
    let s = shown(&w);
    assert_eq!(s["release/1"], "active");
    assert_eq!(s["release/2"], "active");
    // Signing uses the newest active version.
    let f = w.path().join("f");
    std::fs::write(&f, b"x").unwrap();
    let sig = w.path().join("f.sig");
    let out = w.run(&[
        "--output",
        "json",
        "key",
        "sign",
        "release",
        "--input",
        f.to_str().unwrap(),
        "--output",
        sig.to_str().unwrap(),
    ]);
    assert!(stdout(&out).contains("\"version\": 2"), "{}", stdout(&out));
    // Nothing overdue yet; the overlap deadline is listed.
    let due = w.ok(&["key", "due", "--output", "json"]);
    let due: serde_json::Value = serde_json::from_str(&due).unwrap();
    let actions: Vec<&str> = due["due"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&"deactivate") && actions.contains(&"rotate"),
        "{due}"
    );

    // A rotation with no overlap deactivates the old versions at once.
    let out = w.ok(&[
        "key",
        "rotate",
        "release",
        "--overlap",
        "0s",
        "--algorithm",
        "p384",
    ]);
    assert!(out.contains("release/3"), "{out}");
    let s = shown(&w);
    assert_eq!(s["release/1"], "deactivated");
    assert_eq!(s["release/2"], "deactivated");
    assert_eq!(s["release/3"], "active");
    assert_eq!(replay(&w), s);
}

#[test]
fn an_ended_overlap_is_deactivated_by_key_due_apply_and_overdue_exits_9() {
    let w = World::new();
    w.init_hsm("hsm");
    w.ok(&["key", "generate", "fast", "--token", "hsm"]);
    // A one-second cryptoperiod: overdue almost at once.
    w.ok(&[
        "key",
        "policy",
        "fast",
        "--rotate-every",
        "2s",
        "--overlap",
        "1s",
    ]);
    w.ok(&["key", "rotate", "fast"]);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let out = w.run(&["key", "due"]);
    assert_eq!(out.status.code(), Some(9), "{}", stdout(&out));
    assert!(stdout(&out).contains("overdue"), "{}", stdout(&out));
    let out = w.run(&["key", "due", "--apply"]);
    assert!(
        stdout(&out).contains("deactivated fast/1"),
        "{}",
        stdout(&out)
    );
    assert_eq!(shown(&w)["fast/1"], "deactivated");
    let events = w.ok(&["audit", "show", "--key", "fast", "--event", "state_changed"]);
    assert!(events.contains("rotation overlap ended"), "{events}");
    // Rotating clears the overdue rotation.
    w.ok(&["key", "rotate", "fast", "--overlap", "0s"]);
    assert!(w.run(&["key", "due"]).status.success());
}

#[test]
fn a_key_can_be_rotated_onto_another_token() {
    let w = World::new();
    w.init_hsm("hsm");
    w.ok(&["key", "generate", "moving", "--token", "hsm"]);
    w.ok(&[
        "key",
        "rotate",
        "moving",
        "--token",
        "soft",
        "--overlap",
        "0s",
    ]);
    let list: serde_json::Value =
        serde_json::from_str(&w.ok(&["key", "list", "--output", "json"])).unwrap();
    let v2 = list
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["version"] == 2)
        .unwrap();
    assert_eq!(v2["token"], "soft");
    assert_eq!(v2["state"], "active");
}

#[test]
fn token_scan_rebuilds_a_lost_home_from_an_hsm_and_keeps_wrappable_keys_wrappable() {
    let w = World::new();
    w.init_hsm("hsm");
    w.ok(&["key", "generate", "vault", "--token", "hsm", "--wrappable"]);
    w.ok(&["key", "generate", "plain", "--token", "hsm"]);
    // The home is lost but for its keyward.toml (which names the token).
    for f in ["audit.log", "state.json", "audit.checkpoints"] {
        let _ = std::fs::remove_file(w.home().join(f));
    }
    let scan: serde_json::Value =
        serde_json::from_str(&w.ok(&["--batch", "token", "scan", "hsm", "--output", "json"]))
            .unwrap();
    let key = |label: &str| {
        scan["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["label"] == label)
            .unwrap_or_else(|| panic!("{label} not found: {scan}"))
            .clone()
    };
    assert_eq!(key("vault/1")["status"], "adopted");
    assert_eq!(key("vault/1")["wrappable"], true, "{scan}");
    assert_eq!(key("plain/1")["wrappable"], false, "{scan}");
    let list = w.ok(&["key", "list"]);
    let line = |v: &str| list.lines().find(|l| l.starts_with(v)).unwrap().to_owned();
    assert!(line("vault/1").contains("wrappable"), "{list}");
    assert!(!line("plain/1").contains("wrappable"), "{list}");
    assert!(line("vault/1").contains("pre-active"), "{list}");
}
