//! YubiKey PIV as custodians and release managers use it, end to end: the real keyward binary,
//! the real yubikey crate and pcsc-lite, a private pcscd with virtual cards
//! (scripts/virtual-piv), and yubico-piv-tool / openssl as independent checks.
#![allow(clippy::unwrap_used)]

#[path = "support/piv.rs"]
mod piv;
mod support;

use piv::*;
use serde_json::Value;

fn events<'a>(log: &'a [Value], kind: &str) -> Vec<&'a Value> {
    log.iter().filter(|e| e["event"]["type"] == kind).collect()
}

fn generate(w: &PivWorld, key: &str, token: &str, extra: &[&str]) -> Value {
    let mut args = vec!["key", "generate", key, "--token", token, "--output", "json"];
    args.extend_from_slice(extra);
    serde_json::from_str(&w.ok(&args)).unwrap()
}

/// Signs a file with `key` and checks the signature with openssl against the public key
/// keyward exports.
fn sign_and_verify(w: &PivWorld, key: &str) {
    let dir = w.world.path();
    let data = dir.join(format!("{key}.txt"));
    let sig = dir.join(format!("{key}.sig"));
    std::fs::write(&data, format!("release notes for {key}\n")).unwrap();
    w.ok(&[
        "key",
        "sign",
        key,
        "--input",
        data.to_str().unwrap(),
        "--output",
        sig.to_str().unwrap(),
    ]);
    let pem = w.ok(&["key", "public-key", key]);
    assert!(
        support::openssl_verify(
            dir,
            &pem,
            "p256",
            &std::fs::read(&data).unwrap(),
            &std::fs::read(&sig).unwrap()
        ),
        "openssl rejects the signature of {key}"
    );
}

#[test]
fn token_list_shows_the_card_with_tries_and_default_warnings() {
    // Firmware before 5.3 has no GET METADATA: keyward infers what it can.
    let w = PivWorld::with_options(&[31_000_001], &["--firmware", "5.2.7"]);
    let out = w.ok(&["token", "list"]);
    let line = out
        .lines()
        .find(|l| l.starts_with("yubikey:31000001"))
        .unwrap_or_else(|| panic!("card not listed:\n{out}"));
    assert!(line.contains("YubiKey 5 (PIV)"), "{line}");
    assert!(line.contains("3 tries left"), "{line}");
    assert!(line.contains("firmware 5.2.7"), "{line}");
    assert!(
        out.contains("WARNING: the PIN is probably still the factory default 123456"),
        "{out}"
    );
    assert!(
        out.contains("WARNING: the management key is still the factory default"),
        "{out}"
    );
    let json: Value = serde_json::from_str(&w.ok(&["token", "list", "--output", "json"])).unwrap();
    let card = json
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "yubikey:31000001")
        .unwrap();
    assert_eq!(card["kind"], "piv");
    assert_eq!(card["info"]["serial"], "31000001");
    assert_eq!(card["info"]["pin"]["tries_left"], 3);
    assert_eq!(card["info"]["warnings"].as_array().unwrap().len(), 2);
}

#[test]
fn generate_p256_in_9c_sign_a_file_and_other_tools_see_the_slot() {
    let w = PivWorld::new(&[31_000_002]);
    let token = w.token(31_000_002);
    let v = generate(&w, "release", &token, &[]);
    assert_eq!(v["object_id"], "9c", "{v}");
    assert_eq!(v["algorithm"], "p256");
    assert_eq!(v["token_serial"], "31000002");
    sign_and_verify(&w, "release");

    // yubico-piv-tool sees keyward's certificate naming the version in 9c, with the same key.
    let status = w.cards.piv_tool(31_000_002, &["-a", "status"]);
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(status.contains("Slot 9c"), "{status}");
    assert!(status.contains("CN=release\\/1"), "{status}");
    assert!(status.contains("pin-always touch-cached"), "{status}");
    let cert = w
        .cards
        .piv_tool(31_000_002, &["-a", "read-certificate", "-s", "9c"]);
    assert!(cert.status.success());
    let dir = w.world.path();
    std::fs::write(dir.join("9c.pem"), &cert.stdout).unwrap();
    let pubkey = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-pubkey", "-in"])
        .arg(dir.join("9c.pem"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&pubkey.stdout),
        w.ok(&["key", "public-key", "release"])
    );

    // ykman too, and a signature verifies with openssl against the key ykman exports.
    let info = w.cards.ykman(31_000_002, &["piv", "info"]);
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(info.contains("Slot 9c:"), "{info}");
    assert!(
        info.contains("CN=release/1,OU=pin-always touch-cached,O=keyward"),
        "{info}"
    );
    let exported = w
        .cards
        .ykman(31_000_002, &["piv", "keys", "export", "9c", "-"]);
    assert!(exported.status.success());
    let exported = String::from_utf8_lossy(&exported.stdout).into_owned();
    let sig = std::fs::read(dir.join("release.sig")).unwrap();
    let data = std::fs::read(dir.join("release.txt")).unwrap();
    assert!(support::openssl_verify(dir, &exported, "p256", &data, &sig));

    // The next keys go to the retired slots; P-384 and RSA-2048 sign too.
    let v = generate(
        &w,
        "p384",
        &token,
        &["--algorithm", "p384", "--touch-policy", "never"],
    );
    assert_eq!(v["object_id"], "82");
    sign_and_verify(&w, "p384");
    let v = generate(
        &w,
        "rsa",
        &token,
        &["--algorithm", "rsa2048", "--slot", "9d"],
    );
    assert_eq!(v["object_id"], "9d");
    sign_and_verify(&w, "rsa");
    // A named slot that holds a key is refused, nothing overwritten.
    let e = err(&w.run(&[
        "key", "generate", "other", "--token", &token, "--slot", "9c",
    ]));
    assert!(e.contains("slot 9c"), "{e}");
    sign_and_verify(&w, "release");
    // Algorithms a PIV slot cannot hold are refused before the card is touched.
    let e = err(&w.run(&[
        "key",
        "generate",
        "big",
        "--token",
        &token,
        "--algorithm",
        "rsa4096",
    ]));
    assert!(e.contains("rsa4096"), "{e}");
}

#[test]
fn wrong_pin_shows_tries_the_last_try_needs_confirmation_and_the_puk_unblocks() {
    let w = PivWorld::new(&[31_000_003]);
    let token = w.token(31_000_003);
    generate(&w, "release", &token, &[]);
    let data = w.world.path().join("data");
    std::fs::write(&data, b"x").unwrap();
    let sig = w.world.path().join("sig");
    let sign = [
        "key",
        "sign",
        "release",
        "--input",
        data.to_str().unwrap(),
        "--output",
        sig.to_str().unwrap(),
    ];
    let wrong = [("KEYWARD_PIN", "654321")];

    let e = err(&w.run_env(&wrong, &sign));
    assert!(
        e.contains("wrong PIN for yubikey:31000003: 2 tries left"),
        "{e}"
    );
    let e = err(&w.run_env(&wrong, &sign));
    assert!(e.contains("1 try left before the PIN locks"), "{e}");
    // The audit log has both failed logins with the tries left, and never the PIN.
    let log = w.audit();
    let failed: Vec<_> = events(&log, "login")
        .into_iter()
        .filter(|e| e["outcome"] == "failed")
        .collect();
    assert_eq!(failed.len(), 2);
    assert_eq!(failed[0]["event"]["tries_left"], 2);
    assert_eq!(failed[1]["event"]["tries_left"], 1);
    let raw = std::fs::read_to_string(w.world.audit_log()).unwrap();
    assert!(!raw.contains("654321") && !raw.contains("123456"));

    // One try left: batch mode refuses without --allow-final-pin-try, and the card keeps it.
    let e = err(&w.run(&sign));
    assert!(e.contains("one PIN try left"), "{e}");
    let list = w.ok(&["token", "list"]);
    assert!(list.contains("1 tries left"), "{list}");
    // With the confirmation and the right PIN: signed, tries back to 3.
    let mut args = vec!["--allow-final-pin-try"];
    args.extend_from_slice(&sign);
    w.ok(&args);
    assert!(w.ok(&["token", "list"]).contains("3 tries left"));

    // Lock it for good, then unblock with the PUK and a new PIN.
    w.run_env(&wrong, &sign);
    w.run_env(&wrong, &sign);
    let mut args = vec!["--allow-final-pin-try"];
    args.extend_from_slice(&sign);
    let e = err(&w.run_env(&wrong, &args));
    assert!(e.contains("locked"), "{e}");
    let e = err(&w.run(&sign));
    assert!(e.contains("locked"), "{e}");
    let e = err(&w.run_env(
        &[("KEYWARD_PUK", "87654321"), ("KEYWARD_NEW_PIN", "24681357")],
        &["token", "piv", "unblock-pin", &token],
    ));
    assert!(e.contains("wrong PUK"), "{e}");
    w.ok_env(
        &[("KEYWARD_NEW_PIN", "24681357")],
        &["token", "piv", "unblock-pin", &token],
    );
    w.ok_env(&[("KEYWARD_PIN", "24681357")], &sign);
    let log = w.audit();
    let admin = events(&log, "piv_admin");
    assert!(admin
        .iter()
        .any(|e| e["event"]["action"] == "unblock_pin" && e["outcome"] == "ok"));
    assert!(admin.iter().any(|e| e["event"]["action"] == "unblock_pin"
        && e["outcome"] == "failed"
        && e["event"]["puk_tries_left"].is_u64()));
}

#[test]
fn two_cards_a_bare_name_is_refused_and_serials_select() {
    let w = PivWorld::new(&[31_000_004, 31_000_005]);
    let e = err(&w.run(&["key", "generate", "release", "--token", "yubikey"]));
    assert!(e.contains("2 YubiKeys are attached"), "{e}");
    assert!(e.contains("31000004") && e.contains("31000005"), "{e}");
    let v = generate(&w, "release", "yubikey:31000005", &[]);
    assert_eq!(v["token"], "yubikey:31000005");
    assert_eq!(v["token_serial"], "31000005");
    sign_and_verify(&w, "release");
    // Only the named card holds the key.
    let other = w.cards.piv_tool(31_000_004, &["-a", "status"]);
    assert!(!String::from_utf8_lossy(&other.stdout).contains("release"));
    // A keyward.toml name for the other card.
    std::fs::write(
        w.world.home().join("keyward.toml"),
        "[[token]]\nname = \"desk\"\nkind = \"piv\"\nserial = \"31000004\"\n",
    )
    .unwrap();
    let v = generate(&w, "desk-key", "desk", &[]);
    assert_eq!(v["token"], "desk");
    assert_eq!(v["token_serial"], "31000004");
    sign_and_verify(&w, "desk-key");
    let list = w.ok(&["token", "list"]);
    assert!(list.lines().any(|l| l.starts_with("desk ")), "{list}");
    assert!(!list.contains("yubikey:31000004"), "listed twice:\n{list}");
    assert!(list.contains("yubikey:31000005"), "{list}");
    // A serial that is not attached is a clear error.
    let e = err(&w.run(&["key", "generate", "x", "--token", "yubikey:1"]));
    assert!(e.contains("not found"), "{e}");
}

#[test]
fn change_pin_and_puk() {
    // Firmware 5.4.3 answers GET METADATA: keyward knows for sure which defaults are set.
    let w = PivWorld::new(&[31_000_006]);
    let token = w.token(31_000_006);
    let list = w.ok(&["token", "list"]);
    for warning in [
        "WARNING: the PIN is still the factory default 123456",
        "WARNING: the PUK is still the factory default 12345678",
        "WARNING: the management key is still the factory default",
    ] {
        assert!(list.contains(warning), "{warning}:\n{list}");
    }
    assert!(list.contains("firmware 5.4.3"), "{list}");
    let json: Value = serde_json::from_str(&w.ok(&["token", "list", "--output", "json"])).unwrap();
    let card = json
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == token.as_str())
        .unwrap();
    assert_eq!(card["info"]["puk_tries_left"], 5, "{card}");
    // Batch mode without a new PIN: refused, nothing changed.
    let e = err(&w.run(&["token", "piv", "change-pin", &token]));
    assert!(e.contains("KEYWARD_NEW_PIN"), "{e}");
    w.ok_env(
        &[("KEYWARD_NEW_PIN", "24681357")],
        &["token", "piv", "change-pin", &token],
    );
    // The old PIN no longer works; the new one does.
    let e = err(&w.run(&["key", "generate", "release", "--token", &token]));
    assert!(e.contains("2 tries left"), "{e}");
    w.ok_env(
        &[("KEYWARD_PIN", "24681357")],
        &["key", "generate", "release", "--token", &token],
    );
    let list = w.ok(&["token", "list"]);
    assert!(!list.contains("PIN is"), "{list}");
    assert!(list.contains("PUK is still the factory default"), "{list}");
    // A too-short PIN never reaches the card.
    let e = err(&w.run_env(
        &[("KEYWARD_PIN", "24681357"), ("KEYWARD_NEW_PIN", "123")],
        &["token", "piv", "change-pin", &token],
    ));
    assert!(e.contains("6 to 8"), "{e}");
    w.ok_env(
        &[("KEYWARD_NEW_PUK", "87654321")],
        &["token", "piv", "change-puk", &token],
    );
    let e = err(&w.run_env(
        &[("KEYWARD_NEW_PUK", "11223344")],
        &["token", "piv", "change-puk", &token],
    ));
    assert!(e.contains("wrong PUK"), "{e}");
    let list = w.ok(&["token", "list"]);
    assert!(!list.contains("PUK is still the factory default"), "{list}");
    let log = w.audit();
    let actions: Vec<_> = events(&log, "piv_admin")
        .iter()
        .map(|e| format!("{} {}", e["event"]["action"], e["outcome"]))
        .collect();
    assert_eq!(
        actions,
        [
            "\"change_pin\" \"started\"",
            "\"change_pin\" \"ok\"",
            "\"change_puk\" \"started\"",
            "\"change_puk\" \"ok\"",
            "\"change_puk\" \"started\"",
            "\"change_puk\" \"failed\"",
        ]
    );
    let raw = std::fs::read_to_string(w.world.audit_log()).unwrap();
    for secret in ["24681357", "87654321", "12345678", "11223344"] {
        assert!(!raw.contains(secret), "{secret} in the audit log");
    }
}

#[test]
fn protected_management_key_then_generate_with_only_the_pin() {
    let w = PivWorld::new(&[31_000_007]);
    let token = w.token(31_000_007);
    w.ok(&["token", "piv", "set-management-key", &token]);
    let list = w.ok(&["token", "list"]);
    assert!(
        !list.contains("management key is still the factory default"),
        "{list}"
    );
    // The default management key no longer opens the card for yubico-piv-tool.
    let out = w
        .cards
        .piv_tool(31_000_007, &["-a", "generate", "-s", "9a", "-A", "ECCP256"]);
    assert!(
        !out.status.success(),
        "the default management key still works"
    );
    // keyward needs only the PIN.
    let v = generate(&w, "release", &token, &[]);
    assert_eq!(v["object_id"], "9c");
    sign_and_verify(&w, "release");
    let log = w.audit();
    assert!(events(&log, "piv_admin")
        .iter()
        .any(|e| e["event"]["action"] == "set_management_key" && e["outcome"] == "ok"));
}

#[test]
fn reset_requires_confirmation_and_loses_the_keys() {
    let w = PivWorld::new(&[31_000_008]);
    let token = w.token(31_000_008);
    generate(&w, "release", &token, &[]);
    w.ok_env(
        &[("KEYWARD_NEW_PIN", "24681357")],
        &["token", "piv", "change-pin", &token],
    );
    let e = err(&w.run(&["token", "piv", "reset", &token]));
    assert!(e.contains("pass --yes"), "{e}");
    // Nothing happened: the key still signs.
    let status = w.cards.piv_tool(31_000_008, &["-a", "status"]);
    assert!(String::from_utf8_lossy(&status.stdout).contains("release"));

    let out = w.ok(&["--yes", "token", "piv", "reset", &token]);
    assert!(out.contains("lost release/1 (slot 9c)"), "{out}");
    let status = w.cards.piv_tool(31_000_008, &["-a", "status"]);
    assert!(!String::from_utf8_lossy(&status.stdout).contains("Slot 9c"));
    // Factory defaults again: the default PIN works, the version is destroyed in the log.
    let show: Value =
        serde_json::from_str(&w.ok(&["key", "show", "release", "--output", "json"])).unwrap();
    assert_eq!(show["versions"][0]["state"], "destroyed");
    let list = w.ok(&["token", "list"]);
    assert!(
        list.contains("management key is still the factory default"),
        "{list}"
    );
    generate(&w, "release", &token, &[]);
    let log = w.audit();
    let reset = events(&log, "piv_admin")
        .into_iter()
        .find(|e| e["outcome"] == "ok" && e["event"]["action"]["reset"].is_object())
        .expect("reset recorded");
    assert_eq!(reset["event"]["serial"], "31000008");
}

#[test]
fn token_scan_rebuilds_a_lost_home_from_the_card() {
    let w = PivWorld::new(&[31_000_009]);
    let token = w.token(31_000_009);
    let v1 = generate(&w, "release", &token, &[]);
    let v2 = generate(&w, "audit", &token, &["--algorithm", "p384"]);

    // A fresh home knows nothing; scanning the card adopts both versions, pre-active.
    let fresh = w.fresh_home();
    let scan = ok(
        w.kw_in(&fresh)
            .args(["--batch", "token", "scan", &token, "--output", "json"])
            .output()
            .unwrap(),
        &["token", "scan"],
    );
    let report: Value = serde_json::from_str(&scan).unwrap();
    let keys = report["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2, "{report}");
    assert!(keys.iter().all(|k| k["status"] == "adopted"), "{report}");
    let show: Value = serde_json::from_str(&ok(
        w.kw_in(&fresh)
            .args(["key", "show", "release", "--output", "json"])
            .output()
            .unwrap(),
        &["key", "show"],
    ))
    .unwrap();
    assert_eq!(show["versions"][0]["key_id"], v1["key_id"]);
    assert_eq!(show["versions"][0]["state"], "pre-active");
    assert_eq!(show["versions"][0]["object_id"], "9c");
    // Activated after checking, it signs again.
    ok(
        w.kw_in(&fresh)
            .args(["--batch", "key", "activate", "release/1"])
            .output()
            .unwrap(),
        &["key", "activate"],
    );
    let data = fresh.path().join("d");
    std::fs::write(&data, b"after the home was lost").unwrap();
    let sig = fresh.path().join("d.sig");
    ok(
        w.kw_in(&fresh)
            .args(["--batch", "key", "sign", "release", "--input"])
            .arg(&data)
            .arg("--output")
            .arg(&sig)
            .output()
            .unwrap(),
        &["key", "sign"],
    );
    assert!(support::openssl_verify(
        fresh.path(),
        v1["public_key"].as_str().unwrap(),
        "p256",
        b"after the home was lost",
        &std::fs::read(&sig).unwrap()
    ));
    // Scanning again changes nothing; the original home sees its keys as known.
    let again: Value = serde_json::from_str(&ok(
        w.kw_in(&fresh)
            .args(["--batch", "token", "scan", &token, "--output", "json"])
            .output()
            .unwrap(),
        &["token", "scan"],
    ))
    .unwrap();
    assert!(again["keys"]
        .as_array()
        .unwrap()
        .iter()
        .all(|k| k["status"] == "known"));
    let log = audit_of(&fresh);
    let scans = events(&log, "token_scanned");
    assert_eq!(scans.len(), 2);
    assert_eq!(scans[0]["event"]["adopted"].as_array().unwrap().len(), 2);
    assert_eq!(scans[0]["event"]["serial"], "31000009");
    let _ = v2;
}

/// `openssl verify` of the PEMs `token piv attest --pem` prints (slot certificate, then f9)
/// against `root`.
fn openssl_verifies_attestation(dir: &std::path::Path, pems: &str, root: &std::path::Path) -> bool {
    let certs: Vec<String> = pems
        .split_inclusive("-----END CERTIFICATE-----\n")
        .filter(|c| c.contains("BEGIN CERTIFICATE"))
        .map(|c| c[c.find("-----BEGIN").unwrap()..].to_owned())
        .collect();
    assert_eq!(certs.len(), 2, "{pems}");
    std::fs::write(dir.join("slot.pem"), &certs[0]).unwrap();
    std::fs::write(dir.join("f9.pem"), &certs[1]).unwrap();
    std::process::Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(root)
        .arg("-untrusted")
        .arg(dir.join("f9.pem"))
        .arg(dir.join("slot.pem"))
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn attestation_verifies_to_a_configured_root_only() {
    let w = PivWorld::new(&[31_000_010]);
    let token = w.token(31_000_010);
    let v = generate(&w, "release", &token, &[]);

    // Yubico's roots only (no keyward.toml entry): the virtual card's chain is refused, and
    // the message says how to trust a test CA.
    let e = err(&w.run(&["token", "piv", "attest", "release/1"]));
    assert!(e.contains("does not verify"), "{e}");
    let out = String::from_utf8_lossy(&w.run(&["token", "piv", "attest", "release/1"]).stdout)
        .into_owned();
    assert!(out.contains("NOT VERIFIED"), "{out}");
    assert!(
        out.contains("keyward.toml [piv] attestation_roots"),
        "{out}"
    );

    // With the test root listed in keyward.toml: verified, and the root is named.
    w.trust_test_root();
    let out = w.ok(&["token", "piv", "attest", "release/1", "--pem"]);
    assert!(out.contains("attestation VERIFIED"), "{out}");
    assert!(out.contains("serial       31000010"), "{out}");
    assert!(out.contains("firmware     5.4.3"), "{out}");
    assert!(out.contains("pin policy   always"), "{out}");
    assert!(out.contains("touch policy cached"), "{out}");
    assert!(
        out.contains("root         O=NOT A YUBICO CA,CN=keyward virtual-piv test attestation root")
            || out.contains("root         CN=keyward virtual-piv test attestation root"),
        "{out}"
    );
    assert!(out.contains("not a Yubico root"), "{out}");
    // openssl agrees, from the same certificates and the same root.
    assert!(openssl_verifies_attestation(
        w.world.path(),
        &out,
        &w.cards.attestation_root()
    ));

    // The log has both checks, with the serial and, for the good one, the root's source.
    let log = w.audit();
    let attested = events(&log, "key_attested");
    assert_eq!(attested.len(), 3, "{attested:?}");
    assert_eq!(attested[0]["outcome"], "failed");
    assert_eq!(attested[2]["outcome"], "ok");
    assert_eq!(attested[2]["event"]["serial"], "31000010");
    assert_eq!(attested[2]["event"]["attested_serial"], 31_000_010);
    assert_eq!(attested[2]["event"]["key_id"], v["key_id"]);
    let detail = attested[2]["detail"].as_str().unwrap();
    assert!(detail.starts_with("root: "), "{detail}");
    assert!(
        detail.contains("trusted as: keyward.toml [piv] attestation_roots"),
        "{detail}"
    );
    assert!(detail.contains("root-ca.pem (sha256 "), "{detail}");

    // `key show` reports the latest check and its root.
    let show = w.ok(&["key", "show", "release"]);
    assert!(show.contains("release/1 attestation verified"), "{show}");
    assert!(show.contains("YubiKey 31000010"), "{show}");
    assert!(
        show.contains("keyward virtual-piv test attestation root"),
        "{show}"
    );
    let json: Value =
        serde_json::from_str(&w.ok(&["key", "show", "release", "--output", "json"])).unwrap();
    assert_eq!(json["attestations"][0]["verified"], true, "{json}");
    assert_eq!(json["attestations"][0]["token"], token.as_str());

    // A configured root that cannot be read is an error, not a silent fallback.
    std::fs::write(
        w.world.home().join("keyward.toml"),
        "[piv]\nattestation_roots = [\"missing.pem\"]\n",
    )
    .unwrap();
    let e = err(&w.run(&["token", "piv", "attest", "release/1"]));
    assert!(e.contains("missing.pem"), "{e}");
}

#[test]
fn attestation_detects_a_key_that_is_not_the_versions() {
    let w = PivWorld::new(&[31_000_012]);
    let token = w.token(31_000_012);
    generate(&w, "release", &token, &[]);
    w.trust_test_root();
    // Someone replaces the key in 9c behind keyward's back (the certificate still names
    // release/1): the card attests the new key, and keyward sees it is not the version's.
    let out = w
        .cards
        .piv_tool(31_000_012, &["-a", "generate", "-s", "9c", "-A", "ECCP256"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = w.run(&["token", "piv", "attest", "release/1"]);
    let e = err(&run);
    assert!(e.contains("does not verify"), "{e}");
    let out = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(out.contains("the attested key is not release/1"), "{out}");
    let log = w.audit();
    let attested = events(&log, "key_attested");
    assert_eq!(attested[0]["outcome"], "failed");
    assert_eq!(attested[0]["event"]["verified"], false);
    // The chain itself was fine: only the key is wrong.
    assert!(attested[0]["detail"]
        .as_str()
        .unwrap()
        .contains("trusted as: keyward.toml"));
}

#[test]
fn an_rsa_keystore_key_is_imported_into_a_slot() {
    // piv-authenticator itself imports RSA keys, into 9a only.
    let w = PivWorld::new(&[31_000_011]);
    let token = w.token(31_000_011);
    let v = generate(&w, "ceremony", "soft", &["--algorithm", "rsa2048"]);
    let out = w.ok(&[
        "token",
        "piv",
        "import",
        "ceremony/1",
        "--token",
        &token,
        "--slot",
        "9a",
    ]);
    assert!(out.contains("into yubikey:31000011 slot 9a"), "{out}");
    let cert = w
        .cards
        .piv_tool(31_000_011, &["-a", "read-certificate", "-s", "9a"]);
    let dir = w.world.path();
    std::fs::write(dir.join("9a.pem"), &cert.stdout).unwrap();
    let pubkey = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-pubkey", "-in"])
        .arg(dir.join("9a.pem"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&pubkey.stdout),
        v["public_key"].as_str().unwrap()
    );
    let log = w.audit();
    let imported = events(&log, "key_imported");
    assert_eq!(imported.last().unwrap()["outcome"], "ok");
    assert_eq!(imported.last().unwrap()["event"]["object_id"], "9a");
    // A scan of the card recognises the copy as a known version.
    let scan: Value =
        serde_json::from_str(&w.ok(&["token", "scan", &token, "--output", "json"])).unwrap();
    assert_eq!(scan["keys"][0]["status"], "known", "{scan}");
}

/// Signs a file with `key` on `token` and checks the signature with openssl against `pem`.
fn sign_on(w: &PivWorld, key: &str, token: &str, pem: &str, alg: &str) {
    let dir = w.world.path();
    let data = dir.join(format!("{key}-{alg}.txt"));
    let sig = dir.join(format!("{key}-{alg}.sig"));
    std::fs::write(&data, format!("signed on {token}\n")).unwrap();
    w.ok(&[
        "key",
        "sign",
        key,
        "--token",
        token,
        "--input",
        data.to_str().unwrap(),
        "--output",
        sig.to_str().unwrap(),
    ]);
    assert!(
        support::openssl_verify(
            dir,
            pem,
            alg,
            &std::fs::read(&data).unwrap(),
            &std::fs::read(&sig).unwrap()
        ),
        "openssl rejects the signature of {key} made on {token}"
    );
}

#[test]
fn ec_keystore_keys_are_imported_sign_from_the_card_and_are_never_attested() {
    let w = PivWorld::new(&[31_000_013]);
    let token = w.token(31_000_013);
    let p256 = generate(&w, "ceremony", "soft", &["--algorithm", "p256"]);
    let p384 = generate(&w, "audit", "soft", &["--algorithm", "p384"]);
    let out = w.ok(&["token", "piv", "import", "ceremony/1", "--token", &token]);
    assert!(out.contains("into yubikey:31000013 slot 9c"), "{out}");
    let out = w.ok(&[
        "token",
        "piv",
        "import",
        "audit/1",
        "--token",
        &token,
        "--slot",
        "83",
        "--pin-policy",
        "once",
    ]);
    assert!(out.contains("slot 83"), "{out}");
    // A second copy of the same version on the same card is refused.
    let e = err(&w.run(&[
        "token",
        "piv",
        "import",
        "ceremony/1",
        "--token",
        &token,
        "--slot",
        "84",
    ]));
    assert!(e.contains("already has a copy"), "{e}");

    // The registry knows both bindings; `key show` lists the copy.
    let show: Value =
        serde_json::from_str(&w.ok(&["key", "show", "ceremony", "--output", "json"])).unwrap();
    let version = &show["versions"][0];
    assert_eq!(version["token"], "soft");
    assert_eq!(version["copies"][0]["token"], token.as_str());
    assert_eq!(version["copies"][0]["token_serial"], "31000013");
    assert_eq!(version["copies"][0]["object_id"], "9c");
    let text = w.ok(&["key", "show", "ceremony"]);
    assert!(
        text.contains("copy       yubikey:31000013 (serial 31000013) object id 9c"),
        "{text}"
    );

    // The card signs with the imported keys (PIN-always and PIN-once slots); the signatures
    // verify with the keystore's public keys. The keystore copy still signs too.
    let p256_pem = p256["public_key"].as_str().unwrap();
    let p384_pem = p384["public_key"].as_str().unwrap();
    sign_on(&w, "ceremony", &token, p256_pem, "p256");
    sign_on(&w, "audit", &token, p384_pem, "p384");
    sign_on(&w, "ceremony", "soft", p256_pem, "p256");
    let log = w.audit();
    let signed = events(&log, "signed");
    assert_eq!(signed.len(), 3);
    assert_eq!(
        signed[0]["detail"],
        "with the copy on yubikey:31000013 (slot 9c)"
    );
    assert!(signed[2]["detail"].is_null());
    // A token that holds no copy is refused with the places that do.
    let data = w.world.path().join("ceremony-p256.txt");
    let e = err(&w.run(&[
        "key",
        "sign",
        "ceremony",
        "--token",
        "yubikey:1",
        "--input",
        data.to_str().unwrap(),
        "--output",
        "never.sig",
    ]));
    assert!(e.contains("no key on yubikey:1"), "{e}");

    // ykman sees the imported keys: its metadata export gives the keystore's public keys.
    for (slot, pem) in [("9c", p256_pem), ("83", p384_pem)] {
        let exported = w
            .cards
            .ykman(31_000_013, &["piv", "keys", "export", slot, "-"]);
        assert!(
            exported.status.success(),
            "{}",
            String::from_utf8_lossy(&exported.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&exported.stdout),
            pem,
            "slot {slot}"
        );
    }
    let info = w.cards.ykman(31_000_013, &["piv", "info"]);
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(
        info.contains("Slot 83:") && info.contains("CN=audit/1"),
        "{info}"
    );

    // GET METADATA tells imported from generated keys, and finds keys without certificates.
    let gen = generate(&w, "ondevice", &token, &[]);
    let out = w
        .cards
        .piv_tool(31_000_013, &["-a", "generate", "-s", "9e", "-A", "ECCP256"]);
    assert!(out.status.success());
    let slots: Value =
        serde_json::from_str(&w.ok(&["token", "piv", "slots", &token, "--output", "json"]))
            .unwrap();
    let slot = |s: &str| {
        slots["slots"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["slot"] == s)
            .unwrap_or_else(|| panic!("slot {s} missing: {slots}"))
            .clone()
    };
    assert_eq!(slot("9c")["origin"], "imported");
    assert_eq!(slot("9c")["label"], "ceremony/1");
    assert_eq!(slot("9c")["key_id"], p256["key_id"]);
    assert_eq!(slot("83")["origin"], "imported");
    assert_eq!(slot("83")["pin_policy"], "once");
    assert_eq!(
        slot(gen["object_id"].as_str().unwrap())["origin"],
        "generated"
    );
    assert_eq!(slot("9e")["status"], "key without certificate");
    let text = w.ok(&["token", "piv", "slots", &token]);
    assert!(text.contains("9c  ceremony/1"), "{text}");

    // An imported key is never attested, even with the test root trusted.
    w.trust_test_root();
    let e = err(&w.run(&["token", "piv", "attest", "ceremony/1"]));
    assert!(e.contains("refused to attest slot 9c"), "{e}");
    assert!(e.contains("imported keys cannot be attested"), "{e}");
    let log = w.audit();
    let refused = events(&log, "key_attested");
    assert_eq!(refused.last().unwrap()["outcome"], "failed");
    assert_eq!(refused.last().unwrap()["event"]["serial"], "31000013");
    assert_eq!(refused.last().unwrap()["event"]["object_id"], "9c");

    // Destroying the version destroys the card's copy too; the slot reads as free again.
    w.ok(&["key", "deactivate", "audit/1"]);
    w.ok(&["--yes", "key", "destroy", "audit/1"]);
    let log = w.audit();
    let removed = events(&log, "key_copy_removed");
    assert_eq!(removed.last().unwrap()["outcome"], "ok");
    assert_eq!(removed.last().unwrap()["event"]["object_id"], "83");
    let show: Value =
        serde_json::from_str(&w.ok(&["key", "show", "audit", "--output", "json"])).unwrap();
    assert_eq!(show["versions"][0]["state"], "destroyed");
    assert!(show["versions"][0]["copies"].is_null(), "{show}");
    let exported = w
        .cards
        .ykman(31_000_013, &["piv", "keys", "export", "83", "-"]);
    assert_ne!(String::from_utf8_lossy(&exported.stdout), p384_pem);
    let v = generate(&w, "next", &token, &["--slot", "83"]);
    assert_eq!(v["object_id"], "83");
}

#[test]
fn a_destroyed_slot_is_free_again_on_firmware_with_metadata() {
    // From 5.3 the card's metadata still reports the throwaway key that overwrote a destroyed
    // one; keyward's marker certificate says the slot is free.
    let w = PivWorld::new(&[31_000_014]);
    let token = w.token(31_000_014);
    generate(&w, "release", &token, &["--inactive"]);
    w.ok(&["--yes", "key", "destroy", "release/1"]);
    let v = generate(&w, "release", &token, &[]);
    assert_eq!(v["object_id"], "9c", "{v}");
    assert_eq!(v["version"], 2);
    sign_and_verify(&w, "release");
    // After a reset, keyward's versions on the card are destroyed and the card's copies of
    // keystore keys are forgotten.
    let k = generate(&w, "ceremony", "soft", &[]);
    w.ok(&["token", "piv", "import", "ceremony/1", "--token", &token]);
    let out = w.ok(&["--yes", "token", "piv", "reset", &token]);
    assert!(out.contains("lost the copy of ceremony/1"), "{out}");
    let show: Value =
        serde_json::from_str(&w.ok(&["key", "show", "ceremony", "--output", "json"])).unwrap();
    assert!(show["versions"][0]["copies"].is_null(), "{show}");
    assert_eq!(show["versions"][0]["state"], "active");
    sign_on(
        &w,
        "ceremony",
        "soft",
        k["public_key"].as_str().unwrap(),
        "p256",
    );
}
