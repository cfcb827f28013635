//! Ceremonies as custodians run them: the real binary in batch mode with test participants,
//! SoftHSM2 tokens (private SOFTHSM2_CONF), the virtual PIV card, age identities made by the
//! Debian `age-keygen`, and third-party views (pkcs11-tool, yubico-piv-tool, openssl) of what
//! the ceremony left behind.
#![allow(clippy::unwrap_used)]

#[path = "support/piv.rs"]
mod piv;
mod support;

use piv::PivWorld;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use support::*;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn sha256_file(p: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(p).unwrap()))
}

/// Three custodians with age identities.
struct Custodians {
    people: Vec<(String, PathBuf, String)>,
}

impl Custodians {
    fn new(dir: &Path) -> Self {
        Custodians {
            people: ["alice", "bob", "carol"]
                .iter()
                .map(|n| {
                    let (id, r) = keygen(dir, n);
                    (n.to_string(), id, r)
                })
                .collect(),
        }
    }

    /// A participants file: ada administers, walter witnesses, the custodians hold shares;
    /// `acks` is the [acknowledgements] table's body.
    fn file(&self, dir: &Path, name: &str, acks: &str) -> PathBuf {
        let mut t = String::from("[[administrator]]\nname = \"ada\"\n\n");
        for (n, _, r) in &self.people {
            t.push_str(&format!(
                "[[custodians]]\nname = \"{n}\"\nrecipient = \"{r}\"\n\n"
            ));
        }
        t.push_str("[[witnesses]]\nname = \"walter\"\n\n[acknowledgements]\n");
        t.push_str(acks);
        let p = dir.join(name);
        std::fs::write(&p, t).unwrap();
        p
    }
}

const EVERYONE: &str = "\"*\" = [\"ada\", \"alice\", \"bob\", \"carol\", \"walter\"]\n";

fn audit(home: &Path) -> Vec<Value> {
    std::fs::read_to_string(home.join("audit.log"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn events<'a>(log: &'a [Value], kind: &str) -> Vec<&'a Value> {
    log.iter().filter(|e| e["event"]["type"] == kind).collect()
}

fn root_key_args<'a>(dir: &'a Path, people: &'a Path, tokens: &'a str) -> Vec<&'a str> {
    vec![
        "--batch",
        "--yes",
        "ceremony",
        "run",
        "root-key",
        "--dir",
        s(dir),
        "--participants",
        s(people),
        "--set",
        tokens,
        "--set",
        "scopes=registry.example.com/team/app",
        "--set",
        "require_offline=false",
    ]
}

fn transcript(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("transcript.json")).unwrap()).unwrap()
}

fn step<'a>(t: &'a Value, id: &str) -> &'a Value {
    t["transcript"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap()
}

/// Writes a copy of the transcript with `edit` applied, beside the original (so that the
/// recorded files are found), and runs `ceremony verify` on it.
fn verify_edited(w: &World, dir: &Path, name: &str, edit: impl Fn(&mut Vec<u8>)) -> Output {
    let mut bytes = std::fs::read(dir.join("transcript.json")).unwrap();
    edit(&mut bytes);
    let p = dir.join(name);
    std::fs::write(&p, &bytes).unwrap();
    w.run(&["ceremony", "verify", s(&p)])
}

#[test]
fn root_key_end_to_end_onto_two_softhsm_tokens_then_a_restore_drill() {
    let w = World::new();
    w.init_hsm("hsm-a");
    w.init_hsm("hsm-b");
    let c = Custodians::new(w.path());
    let people = c.file(w.path(), "people.toml", EVERYONE);
    let dir = w.path().join("root-2026");
    let out = w.ok(&root_key_args(&dir, &people, "tokens=hsm-a,hsm-b"));
    assert!(out.contains("ceremony complete"), "{out}");

    // The key lives on the tokens now, not in the software keystore.
    let list = w.ok(&["key", "list"]);
    assert!(list.contains("root/1") && list.contains("hsm-a"), "{list}");
    let soft_keys: Vec<_> = std::fs::read_dir(w.home().join("soft/keys"))
        .unwrap()
        .collect();
    assert!(soft_keys.is_empty(), "the software copy is still there");
    for label in ["hsm-a", "hsm-b"] {
        let objects = w.pkcs11_tool_objects(label);
        assert!(objects.contains("label:      root/1"), "{label}: {objects}");
        assert!(objects.contains("Private Key Object"), "{label}: {objects}");
    }
    let pem = std::fs::read_to_string(dir.join("root-1.pub.pem")).unwrap();
    let data = b"signed by the root key after the ceremony";
    let input = w.path().join("data");
    std::fs::write(&input, data).unwrap();
    let sig = w.path().join("data.sig");
    w.ok(&[
        "key",
        "sign",
        "root",
        "--input",
        s(&input),
        "--output",
        s(&sig),
    ]);
    assert!(openssl_verify(
        w.path(),
        &pem,
        "p256",
        data,
        &std::fs::read(&sig).unwrap()
    ));

    // The transcript: every step, who acknowledged it, the digests of what it produced.
    let t = transcript(&dir);
    let steps = t["transcript"]["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 8);
    for st in steps {
        let attempts = st["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 1, "{st}");
        assert_eq!(attempts[0]["outcome"], "ok");
        assert!(!attempts[0]["acknowledgements"]
            .as_array()
            .unwrap()
            .is_empty());
    }
    let backup = step(&t, "backup");
    let acks: Vec<&str> = backup["attempts"][0]["acknowledgements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["person"].as_str().unwrap())
        .collect();
    assert_eq!(acks, ["ada", "alice", "bob", "carol", "walter"]);
    assert_eq!(
        backup["attempts"][0]["acknowledgements"][1]["role"],
        "custodian"
    );
    assert_eq!(
        backup["attempts"][0]["acknowledgements"][1]["method"],
        "declared"
    );
    let mut checked = 0;
    for st in steps {
        for a in st["artifacts"].as_array().unwrap() {
            let f = dir.join(a["path"].as_str().unwrap());
            assert_eq!(a["sha256"], sha256_file(&f), "{}", f.display());
            checked += 1;
        }
    }
    assert!(checked >= 6, "{checked} files recorded");
    let shares: Vec<&Value> = backup["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "share")
        .collect();
    assert_eq!(shares.len(), 3);
    let generated = step(&t, "generate");
    let key_id = generated["outputs"]["key_id"].as_str().unwrap();
    assert_eq!(step(&t, "import")["outputs"]["hsm-b.key_id"], key_id);
    assert_eq!(step(&t, "destroy-soft")["outputs"]["now_on"], "hsm-a");
    assert_eq!(t["signature"]["key_id"], key_id);
    let md = std::fs::read_to_string(dir.join("transcript.md")).unwrap();
    assert!(md.contains("is a rendering of `transcript.json`"), "{md}");
    assert!(md.contains("acknowledged by bob (custodian)"), "{md}");

    // Chained into the audit log before success was reported.
    let log = audit(&w.home());
    let done = events(&log, "ceremony_completed");
    assert_eq!(done.len(), 1);
    assert_eq!(
        done[0]["event"]["transcript_sha256"],
        sha256_file(&dir.join("transcript.json"))
    );
    assert_eq!(events(&log, "key_copy_destroyed").len(), 2); // started, ok
    assert_eq!(
        events(&log, "ceremony_step")
            .iter()
            .filter(|e| e["outcome"] == "ok")
            .count(),
        8
    );

    // It verifies: signature, files, audit log; and with the root key as the anchor.
    let v = w.ok(&["ceremony", "verify", s(&dir.join("transcript.json"))]);
    assert!(v.contains("transcript verified"), "{v}");
    assert!(v.contains("16 of 16") || v.contains("of 16 match"), "{v}");
    assert!(v.contains("ceremony_completed"), "{v}");
    let v = w.ok(&[
        "ceremony",
        "verify",
        s(&dir.join("transcript.json")),
        "--trust",
        s(&dir.join("root-1.pub.pem")),
    ]);
    assert!(v.contains("the --trust key"), "{v}");
    // The bundle is signed by the root key.
    w.ok(&[
        "bundle",
        "verify",
        s(&dir.join("bundle")),
        "--trust",
        s(&dir.join("root-1.pub.pem")),
    ]);

    // Editing bytes of the JSON breaks verify: content, whitespace, anywhere in the file.
    let e = verify_edited(&w, &dir, "edit-name.json", |b| {
        let text = String::from_utf8(b.clone()).unwrap();
        *b = text
            .replacen("\"person\": \"walter\"", "\"person\": \"walker\"", 1)
            .into_bytes();
    });
    assert!(!e.status.success());
    assert!(stderr(&e).contains("does not verify"), "{}", stderr(&e));
    let e = verify_edited(&w, &dir, "edit-space.json", |b| b.insert(1, b' '));
    assert!(!e.status.success());
    assert!(stderr(&e).contains("byte for byte"), "{}", stderr(&e));
    let len = std::fs::read(dir.join("transcript.json")).unwrap().len();
    for i in (0..len).step_by(len / 23) {
        let e = verify_edited(&w, &dir, "edit-byte.json", |b| {
            b[i] = if b[i] == b'0' { b'1' } else { b'0' };
        });
        assert!(!e.status.success(), "editing byte {i} went unnoticed");
    }
    // A changed file fails; a share taken away by its custodian is reported, not failed.
    std::fs::remove_file(dir.join("root.kwb.bob.share")).unwrap();
    let v = w.ok(&["ceremony", "verify", s(&dir.join("transcript.json"))]);
    assert!(v.contains("missing  root.kwb.bob.share"), "{v}");
    let readme = dir.join("bundle/cosign/README.md");
    let original = std::fs::read(&readme).unwrap();
    std::fs::write(&readme, b"trust me\n").unwrap();
    let e = w.run(&["ceremony", "verify", s(&dir.join("transcript.json"))]);
    assert!(!e.status.success());
    assert!(
        stdout(&e).contains("changed  bundle/cosign/README.md"),
        "{}",
        stdout(&e)
    );
    std::fs::write(&readme, original).unwrap();

    // The custodians' backup: any 2 of 3 open it; then the restore-drill ceremony.
    let (alice, carol) = (&c.people[0], &c.people[2]);
    let kwb = dir.join("root.kwb");
    let ok = w.ok(&[
        "backup",
        "verify",
        s(&kwb),
        "--share",
        s(&dir.join("root.kwb.alice.share")),
        "--share",
        s(&dir.join("root.kwb.carol.share")),
        "--identity",
        s(&alice.1),
        "--identity",
        s(&carol.1),
    ]);
    assert!(ok.contains("is intact"), "{ok}");
    let drill_people = w.path().join("drill.toml");
    std::fs::write(
        &drill_people,
        format!(
            "[[administrator]]\nname = \"ada\"\n\n[[custodians]]\nname = \"alice\"\nshare = \"{}\"\nidentity = \"{}\"\n\n[[custodians]]\nname = \"carol\"\nshare = \"{}\"\nidentity = \"{}\"\n\n[[witnesses]]\nname = \"walter\"\n\n[acknowledgements]\n\"*\" = [\"ada\", \"alice\", \"carol\", \"walter\"]\n",
            s(&dir.join("root.kwb.alice.share")),
            s(&alice.1),
            s(&dir.join("root.kwb.carol.share")),
            s(&carol.1)
        ),
    )
    .unwrap();
    let drill_dir = w.path().join("drill-2026");
    let out = w.ok(&[
        "--batch",
        "ceremony",
        "run",
        "restore-drill",
        "--dir",
        s(&drill_dir),
        "--participants",
        s(&drill_people),
        "--set",
        &format!("backup={}", s(&kwb)),
        "--set",
        "sign_with=root",
    ]);
    assert!(out.contains("ceremony complete"), "{out}");
    let t = transcript(&drill_dir);
    assert_eq!(step(&t, "drill")["outputs"]["differences"], "0");
    assert_eq!(step(&t, "drill")["outputs"]["keys_checked"], "1");
    assert_eq!(step(&t, "verify")["outputs"]["shares_from"], "alice, carol");
    let log = audit(&w.home());
    assert_eq!(
        events(&log, "backup_drilled").last().unwrap()["outcome"],
        "ok"
    );
    let v = w.ok(&["ceremony", "verify", s(&drill_dir.join("transcript.json"))]);
    assert!(v.contains("transcript verified"), "{v}");
}

#[test]
fn a_failed_step_stops_with_its_state_saved_and_resume_completes_it() {
    let w = World::new();
    w.init_hsm("hsm-a");
    let c = Custodians::new(w.path());
    let people = c.file(w.path(), "people.toml", EVERYONE);
    let dir = w.path().join("root");
    // hsm-b is not set up yet: the import stops after copying onto hsm-a.
    let out = w.run(&root_key_args(&dir, &people, "tokens=hsm-a,hsm-b"));
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("step 4/8 import failed") && err.contains("hsm-b"),
        "{err}"
    );
    assert!(err.contains("--resume"), "{err}");
    let progress: Value =
        serde_json::from_slice(&std::fs::read(dir.join("progress.json")).unwrap()).unwrap();
    let statuses: Vec<&str> = progress["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["done", "done", "done", "failed", "pending", "pending", "pending", "pending"]
    );
    assert_eq!(progress["stopped"]["step"], "import");
    assert!(progress["steps"][3]["outputs"]["hsm-a.object_id"].is_string());
    let log = audit(&w.home());
    assert_eq!(
        events(&log, "ceremony_step").last().unwrap()["outcome"],
        "failed"
    );
    assert!(!dir.join("root.kwb").exists());
    // Starting it again in the same directory is refused: it must be resumed.
    let again = w.run(&root_key_args(&dir, &people, "tokens=hsm-a,hsm-b"));
    assert!(stderr(&again).contains("--resume"), "{}", stderr(&again));

    w.init_hsm("hsm-b");
    let progress_file = dir.join("progress.json");
    // The same command line with --resume continues it; changed parameters are refused.
    let mut changed = root_key_args(&dir, &people, "tokens=hsm-b,hsm-a");
    changed.extend(["--resume", s(&progress_file)]);
    let e = w.run(&changed);
    assert!(
        stderr(&e).contains("parameter tokens was \"hsm-a,hsm-b\""),
        "{}",
        stderr(&e)
    );
    let mut args = root_key_args(&dir, &people, "tokens=hsm-a,hsm-b");
    args.extend(["--resume", s(&progress_file)]);
    let out = w.ok(&args);
    assert!(out.contains("ceremony complete"), "{out}");
    // Completed work was not redone: one generation, one copy onto each token.
    let log = audit(&w.home());
    assert_eq!(
        events(&log, "key_generated").len(),
        1,
        "the key was generated again"
    );
    let imports: Vec<&str> = events(&log, "key_imported")
        .iter()
        .filter(|e| e["outcome"] == "ok")
        .map(|e| e["event"]["token"].as_str().unwrap())
        .collect();
    assert_eq!(imports, ["hsm-a", "hsm-b"]);
    let t = transcript(&dir);
    let import = step(&t, "import");
    let attempts = import["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0]["outcome"], "failed");
    assert!(attempts[0]["error"].as_str().unwrap().contains("hsm-b"));
    assert_eq!(attempts[1]["outcome"], "ok");
    assert_eq!(
        step(&t, "generate")["attempts"].as_array().unwrap().len(),
        1
    );
    let v = w.ok(&["ceremony", "verify", s(&dir.join("transcript.json"))]);
    assert!(v.contains("transcript verified"), "{v}");
    // A finished ceremony does not run again.
    let out = w.ok(&["--batch", "ceremony", "run", "--resume", s(&progress_file)]);
    assert!(out.contains("ceremony complete"), "{out}");
    assert_eq!(events(&audit(&w.home()), "ceremony_completed").len(), 1);
}

#[test]
fn a_missing_acknowledgement_is_refused_before_the_step_does_anything() {
    let w = World::new();
    w.init_hsm("hsm-a");
    let c = Custodians::new(w.path());
    // bob confirms who is present, but never acknowledges the backup.
    let people = c.file(
        w.path(),
        "people.toml",
        "\"*\" = [\"ada\", \"alice\", \"carol\", \"walter\"]\nparticipants = [\"bob\"]\n",
    );
    let dir = w.path().join("root");
    let out = w.run(&root_key_args(&dir, &people, "tokens=hsm-a"));
    assert_eq!(out.status.code(), Some(8), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("step backup") && err.contains("bob (custodian)"),
        "{err}"
    );
    assert!(err.contains("[acknowledgements]"), "{err}");
    assert!(!dir.join("root.kwb").exists(), "the backup was written");
    let log = audit(&w.home());
    assert!(events(&log, "backup_created").is_empty());
    assert!(!events(&log, "ceremony_step")
        .iter()
        .any(|e| e["event"]["step"] == "backup"));
    let progress: Value =
        serde_json::from_slice(&std::fs::read(dir.join("progress.json")).unwrap()).unwrap();
    assert_eq!(progress["stopped"]["step"], "backup");

    // New people are refused on resume; new acknowledgements are taken.
    let other = Custodians {
        people: c.people[..2].to_vec(),
    }
    .file(w.path(), "fewer.toml", EVERYONE);
    let e = w.run(&[
        "--batch",
        "ceremony",
        "run",
        "--resume",
        s(&dir.join("progress.json")),
        "--participants",
        s(&other),
    ]);
    assert!(
        stderr(&e).contains("differ from the ones declared"),
        "{}",
        stderr(&e)
    );
    let fixed = c.file(w.path(), "fixed.toml", EVERYONE);
    let out = w.ok(&[
        "--batch",
        "--yes",
        "ceremony",
        "run",
        "--resume",
        s(&dir.join("progress.json")),
        "--participants",
        s(&fixed),
    ]);
    assert!(out.contains("ceremony complete"), "{out}");
}

#[test]
fn rotate_ceremony_rotates_publishes_and_checkpoints() {
    let w = World::new();
    w.init_hsm("hsm");
    w.ok(&["key", "generate", "release", "--token", "hsm"]);
    let people = w.path().join("people.toml");
    std::fs::write(
        &people,
        "[[administrator]]\nname = \"ada\"\n\n[[witnesses]]\nname = \"walter\"\n\n[acknowledgements]\n\"*\" = [\"ada\", \"walter\"]\n",
    )
    .unwrap();
    // Parameters from a file (a list becomes comma-separated), one more on the command line.
    let params = w.path().join("params.toml");
    std::fs::write(
        &params,
        "key = \"release\"\nscopes = [\"registry.example.com/app\", \"registry.example.com/other\"]\nreason = \"overridden below\"\n",
    )
    .unwrap();
    let dir = w.path().join("rotate");
    let out = w.ok(&[
        "--batch",
        "ceremony",
        "run",
        "rotate",
        "--dir",
        s(&dir),
        "--participants",
        s(&people),
        "--params",
        s(&params),
        "--set",
        "reason=annual rotation",
    ]);
    assert!(out.contains("ceremony complete"), "{out}");
    let list = w.ok(&["key", "list"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with("release/2") && l.contains("active")),
        "{list}"
    );
    assert!(
        list.lines()
            .any(|l| l.starts_with("release/1") && l.contains("deactivated")),
        "{list}"
    );
    let t = transcript(&dir);
    assert_eq!(t["signature"]["version"], 2);
    assert!(step(&t, "agree")["instructions"]
        .as_str()
        .unwrap()
        .contains("annual rotation"));
    assert_eq!(
        t["transcript"]["params"]["scopes"],
        "registry.example.com/app,registry.example.com/other"
    );
    let cp = step(&t, "checkpoint");
    assert_eq!(cp["outputs"]["signed_by"], "release/2");
    let pem = dir.join("release-2.pub.pem");
    w.ok(&[
        "bundle",
        "verify",
        s(&dir.join("bundle")),
        "--trust",
        s(&pem),
    ]);
    let v = w.ok(&[
        "ceremony",
        "verify",
        s(&dir.join("transcript.json")),
        "--trust",
        s(&pem),
    ]);
    assert!(v.contains("transcript verified"), "{v}");
    // Anchored on the old version instead, it is refused.
    std::fs::write(
        w.path().join("old.pem"),
        w.ok(&["key", "public-key", "release/1"]),
    )
    .unwrap();
    let e = w.run(&[
        "ceremony",
        "verify",
        s(&dir.join("transcript.json")),
        "--trust",
        s(&w.path().join("old.pem")),
    ]);
    assert!(!e.status.success());
    assert!(
        stdout(&e).contains("not by the --trust key"),
        "{}",
        stdout(&e)
    );
}

#[test]
fn root_key_onto_softhsm_and_the_virtual_piv_card() {
    // The card gets the P-256 root key by import (emulated since the piv branch), carries the
    // version once the software copy is gone, and signs the transcript.
    let serial = 31_000_120u32;
    let pw = PivWorld::new(&[serial]);
    let card = pw.token(serial);
    // SoftHSM2 gets the card's PIN so that one KEYWARD_PIN serves both in batch mode.
    pw.ok(&[
        "token",
        "init",
        "--module",
        SOFTHSM_MODULE,
        "--label",
        "hsm-a",
        "--name",
        "hsm-a",
    ]);
    let c = Custodians::new(pw.world.path());
    let people = c.file(pw.world.path(), "people.toml", EVERYONE);
    let dir = pw.world.path().join("root");
    let tokens = format!("tokens={card},hsm-a");
    let mut args = root_key_args(&dir, &people, &tokens);
    args.retain(|a| *a != "--batch");
    let out = pw.ok(&args);
    assert!(out.contains("ceremony complete"), "{out}");
    // The card holds the key (a third-party view) and now carries the version.
    let cert = pw
        .cards
        .piv_tool(serial, &["-a", "read-certificate", "-s", "9c"]);
    std::fs::write(pw.world.path().join("9c.pem"), &cert.stdout).unwrap();
    let pubkey = Command::new("openssl")
        .args(["x509", "-noout", "-pubkey", "-in"])
        .arg(pw.world.path().join("9c.pem"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&pubkey.stdout),
        std::fs::read_to_string(dir.join("root-1.pub.pem")).unwrap()
    );
    let objects = Command::new("pkcs11-tool")
        .env("SOFTHSM2_CONF", pw.world.softhsm_conf())
        .args([
            "--module",
            SOFTHSM_MODULE,
            "--token-label",
            "hsm-a",
            "--login",
        ])
        .args(["--pin", piv::PIN, "--list-objects"])
        .output()
        .unwrap();
    let objects = stdout(&objects);
    assert!(objects.contains("root/1"), "{objects}");
    let t = transcript(&dir);
    assert_eq!(step(&t, "destroy-soft")["outputs"]["now_on"], card.as_str());
    assert_eq!(
        step(&t, "import")["outputs"][format!("{card}.object_id")],
        "9c"
    );
    assert_eq!(t["signature"]["algorithm"], "p256");
    // The card made the transcript's signature, and signs with the root key from now on.
    let log = piv::audit_of(&pw.world);
    let signed = log
        .iter()
        .rfind(|e| e["event"]["type"] == "signed")
        .unwrap();
    assert!(signed["event"]["subject"]
        .as_str()
        .unwrap()
        .starts_with("ceremony root-key transcript"));
    let list = pw.ok(&["key", "list"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with("root/1") && l.contains(&card)),
        "{list}"
    );
    let data = pw.world.path().join("data");
    std::fs::write(&data, b"after the ceremony").unwrap();
    let sig = pw.world.path().join("data.sig");
    pw.ok(&[
        "key",
        "sign",
        "root",
        "--input",
        s(&data),
        "--output",
        s(&sig),
    ]);
    assert!(openssl_verify(
        pw.world.path(),
        &std::fs::read_to_string(dir.join("root-1.pub.pem")).unwrap(),
        "p256",
        b"after the ceremony",
        &std::fs::read(&sig).unwrap()
    ));
    let v = pw.ok(&["ceremony", "verify", s(&dir.join("transcript.json"))]);
    assert!(v.contains("transcript verified"), "{v}");
}

#[test]
fn list_show_and_clear_errors_before_anything_runs() {
    let w = World::new();
    let list = w.ok(&["ceremony", "list"]);
    for name in ["root-key", "rotate", "restore-drill"] {
        assert!(list.contains(name), "{list}");
    }
    let show = w.ok(&["ceremony", "show", "root-key"]);
    assert!(show.contains("destroy-software-copy"), "{show}");
    let e = w.run(&["--batch", "ceremony", "run", "root-kee"]);
    assert!(stderr(&e).contains("no ceremony named"), "{}", stderr(&e));
    let dir = w.path().join("x");
    let e = w.run(&[
        "--batch",
        "ceremony",
        "run",
        "root-key",
        "--dir",
        s(&dir),
        "--administrator",
        "ada",
        "--witness",
        "walter",
    ]);
    let err = stderr(&e);
    assert!(err.contains("tokens") && err.contains("scopes"), "{err}");
    let e = w.run(&[
        "--batch",
        "ceremony",
        "run",
        "root-key",
        "--dir",
        s(&dir),
        "--set",
        "tokens=hsm",
        "--set",
        "scopes=r.example/a",
        "--administrator",
        "ada",
        "--witness",
        "walter",
        "--custodian",
        "alice=age1notarecipient",
        "--custodian",
        "bob=age1notarecipient",
    ]);
    let err = stderr(&e);
    assert!(err.contains("the recipient of alice"), "{err}");
    assert!(!dir.exists(), "a refused ceremony left {}", dir.display());
    assert!(!w.audit_log().exists() || events(&audit(&w.home()), "ceremony_started").is_empty());
}

#[test]
fn the_offline_check_refuses_while_an_interface_is_up() {
    // What the machine's interfaces say, read here independently of keyward.
    let up: Vec<String> = std::fs::read_dir("/sys/class/net")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.file_name() != "lo")
                .filter(|e| {
                    let st =
                        std::fs::read_to_string(e.path().join("operstate")).unwrap_or_default();
                    let carrier =
                        std::fs::read_to_string(e.path().join("carrier")).unwrap_or_default();
                    st.trim() == "up" || (st.trim() == "unknown" && carrier.trim() == "1")
                })
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let w = World::new();
    let people = w.path().join("people.toml");
    std::fs::write(
        &people,
        "[[administrator]]\nname = \"ada\"\n\n[[witnesses]]\nname = \"walter\"\n\n[acknowledgements]\n\"*\" = [\"ada\", \"walter\"]\n",
    )
    .unwrap();
    let script = w.path().join("offline.toml");
    std::fs::write(
        &script,
        "format = \"keyward-ceremony/1\"\nname = \"offline\"\ntitle = \"Offline check\"\n\n[roles.administrator]\nmin = \"1\"\n[roles.witnesses]\nmin = \"1\"\n\n[transcript]\nsign_with = \"nobody\"\n\n[[step]]\nid = \"offline\"\nkind = \"check-offline\"\ntitle = \"Offline?\"\nacknowledge = [\"administrator\", \"witnesses\"]\n",
    )
    .unwrap();
    let dir = w.path().join("off");
    let out = w.run(&[
        "--batch",
        "ceremony",
        "run",
        s(&script),
        "--dir",
        s(&dir),
        "--participants",
        s(&people),
    ]);
    let progress: Value =
        serde_json::from_slice(&std::fs::read(dir.join("progress.json")).unwrap()).unwrap();
    let recorded = progress["steps"][0]["outputs"]["interfaces_up"]
        .as_str()
        .unwrap();
    if up.is_empty() {
        assert_eq!(recorded, "none");
        assert_eq!(progress["steps"][0]["status"], "done");
        // The only failure left is the transcript key this script names on purpose.
        assert!(stderr(&out).contains("nobody"), "{}", stderr(&out));
    } else {
        assert_eq!(recorded, up.join(", "));
        assert_eq!(progress["steps"][0]["status"], "failed");
        let err = stderr(&out);
        assert!(
            err.contains("the machine is online") && err.contains(&up[0]),
            "{err}"
        );
    }
}

/// A tmux server of our own, killed when the test ends.
struct Tmux(String);

impl Tmux {
    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .args(["-L", &self.0])
            .args(args)
            .output()
            .unwrap()
    }
    fn screen(&self) -> String {
        stdout(&self.run(&["capture-pane", "-p", "-S", "-200"]))
    }
    fn type_line(&self, text: &str) {
        assert!(self.run(&["send-keys", "-l", text]).status.success());
        assert!(self.run(&["send-keys", "Enter"]).status.success());
    }
    /// Waits until `needle` is on the screen `times` times.
    fn wait_for(&self, needle: &str, times: usize) -> String {
        let start = std::time::Instant::now();
        loop {
            let s = self.screen();
            if s.matches(needle).count() >= times {
                return s;
            }
            assert!(
                start.elapsed().as_secs() < 60,
                "timed out waiting for {needle:?}; the screen:\n{s}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.0, "kill-server"])
            .status();
    }
}

#[test]
fn interactive_participants_acknowledge_by_typing_their_names() {
    let w = World::new();
    let script = w.path().join("tiny.toml");
    std::fs::write(
        &script,
        r#"format = "keyward-ceremony/1"
name = "tiny"
title = "Tiny"

[roles.administrator]
min = "1"
[roles.witnesses]
min = "1"

[transcript]
sign_with = "tiny"

[[step]]
id = "gen"
kind = "generate"
title = "Generate tiny"
checklist = ["The key id is read aloud"]
acknowledge = ["administrator", "witnesses"]
[step.with]
key = "tiny"
algorithm = "ed25519"

[[step]]
id = "look"
kind = "confirm"
title = "Look at {{gen.key_id}}"
acknowledge = ["witnesses"]
"#,
    )
    .unwrap();
    let dir = w.path().join("tiny-run");
    let t = Tmux(format!("keyward-ceremony-{}", rand_suffix()));
    let cmd = format!(
        "env -u KEYWARD_PIN TERM=xterm KEYWARD_HOME='{}' KEYWARD_PASSPHRASE='correct horse battery' '{}' ceremony run '{}' --dir '{}' --administrator ada --witness walter; echo EXIT=$?; sleep 60",
        w.home().display(),
        env!("CARGO_BIN_EXE_keyward"),
        s(&script),
        s(&dir)
    );
    let st = Command::new("tmux")
        .args([
            "-L",
            &t.0,
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-x",
            "200",
            "-y",
            "50",
        ])
        .arg(cmd)
        .status()
        .expect("tmux (apt-get install tmux)");
    assert!(st.success());
    let screen = t.wait_for("ada (administrator): type your name", 1);
    assert!(screen.contains("[ ] The key id is read aloud"), "{screen}");
    t.type_line("Ada Lovelace");
    t.wait_for("must type their own name", 1);
    t.wait_for("ada (administrator): type your name", 2);
    t.type_line("ada");
    t.wait_for("walter (witness): type your name", 1);
    t.type_line("walter");
    t.wait_for("walter (witness): type your name", 2);
    t.type_line("walter");
    let screen = t.wait_for("EXIT=", 1);
    assert!(screen.contains("EXIT=0"), "{screen}");
    assert!(screen.contains("ceremony complete"), "{screen}");
    let tr = transcript(&dir);
    let acks = &step(&tr, "gen")["attempts"][0]["acknowledgements"];
    assert_eq!(acks[0]["person"], "ada");
    assert_eq!(acks[0]["method"], "typed");
    assert_eq!(acks[1]["person"], "walter");
    let v = w.ok(&["ceremony", "verify", s(&dir.join("transcript.json"))]);
    assert!(v.contains("transcript verified"), "{v}");

    // An empty answer stops the ceremony before its step; nothing runs.
    let dir2 = w.path().join("tiny-stop");
    let t2 = Tmux(format!("keyward-ceremony-{}", rand_suffix()));
    let cmd = format!(
        "env -u KEYWARD_PIN TERM=xterm KEYWARD_HOME='{}' KEYWARD_PASSPHRASE='correct horse battery' '{}' ceremony run '{}' --dir '{}' --administrator ada --witness walter; echo EXIT=$?; sleep 60",
        w.home().display(),
        env!("CARGO_BIN_EXE_keyward"),
        s(&script),
        s(&dir2)
    );
    let st = Command::new("tmux")
        .args([
            "-L",
            &t2.0,
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-x",
            "200",
            "-y",
            "50",
        ])
        .arg(cmd)
        .status()
        .unwrap();
    assert!(st.success());
    t2.wait_for("ada (administrator): type your name", 1);
    t2.type_line("");
    let screen = t2.wait_for("EXIT=", 1);
    assert!(screen.contains("EXIT=8"), "{screen}");
    assert!(
        screen.contains("needs the acknowledgement of ada (administrator), walter (witness)"),
        "{screen}"
    );
    let log = audit(&w.home());
    assert_eq!(
        events(&log, "ceremony_started").len(),
        1,
        "the stopped one started"
    );
}
