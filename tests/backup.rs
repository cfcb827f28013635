//! Backups as a custodian uses them: the real binary, the Debian `age` tool decrypting what
//! keyward wrote, `tar` reading the archive, openssl verifying signatures by restored keys,
//! and M-of-N custodian shares.
#![allow(clippy::unwrap_used)]

mod support;

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;
use support::*;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A home with two software keys (p256, ed25519), a SoftHSM2 key and a signed checkpoint.
fn populated() -> World {
    let w = World::new();
    w.init_hsm("hsm");
    w.ok(&["key", "generate", "release", "--token", "soft"]);
    w.ok(&[
        "key",
        "generate",
        "edkey",
        "--token",
        "soft",
        "--algorithm",
        "ed25519",
    ]);
    w.ok(&["key", "generate", "hsmkey", "--token", "hsm"]);
    w.ok(&["audit", "checkpoint", "--key", "release"]);
    w
}

fn key_list(w: &World, home: &Path) -> String {
    let out = w
        .keyward()
        .env("KEYWARD_HOME", home)
        .args(["key", "list"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
}

/// Runs keyward against another home.
fn run_in(w: &World, home: &Path, args: &[&str]) -> std::process::Output {
    w.keyward()
        .env("KEYWARD_HOME", home)
        .args(args)
        .output()
        .unwrap()
}

/// Nothing named like `into` (the home, or a temporary directory beside it) exists.
fn nothing_written(into: &Path) {
    assert!(!into.exists(), "{} was created", into.display());
    let name = into.file_name().unwrap().to_string_lossy().into_owned();
    for e in std::fs::read_dir(into.parent().unwrap()).unwrap() {
        let n = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!n.contains(&name), "left behind: {n}");
    }
}

#[test]
fn round_trip_age_decrypts_restore_gives_same_keys_and_head_and_a_restored_key_signs() {
    let w = populated();
    let (id, recipient) = keygen(w.path(), "owner");
    let file = w.path().join("home.kwb");
    let out = w.ok(&[
        "backup",
        "create",
        "--output",
        s(&file),
        "--recipient",
        &recipient,
    ]);
    assert!(
        out.contains("2 private key(s) inside, 1 listed only"),
        "{out}"
    );
    let original_log = std::fs::read(w.audit_log()).unwrap();

    // The standard tool opens it into the documented archive.
    let tar = w.path().join("home.tar");
    let st = Command::new("age")
        .args(["-d", "-i", s(&id), "-o", s(&tar), s(&file)])
        .status()
        .unwrap();
    assert!(st.success());
    let x = w.path().join("x");
    std::fs::create_dir(&x).unwrap();
    let st = Command::new("tar")
        .args(["-xf", s(&tar), "-C", s(&x)])
        .status()
        .unwrap();
    assert!(st.success());
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(x.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["format"], "keyward-backup/1");
    for e in manifest["entries"].as_array().unwrap() {
        let bytes = std::fs::read(x.join(e["name"].as_str().unwrap())).unwrap();
        assert_eq!(e["size"].as_u64().unwrap(), bytes.len() as u64);
        assert_eq!(e["sha256"], hex::encode(Sha256::digest(&bytes)));
    }
    let keys = manifest["keys"].as_array().unwrap();
    let hsm = keys.iter().find(|k| k["key"] == "hsmkey").unwrap();
    assert_eq!(hsm["material"], "not-extractable");
    assert!(hsm["recovery"].as_str().unwrap().contains("rotate"));
    // The software keys are plain PKCS#8 that openssl reads.
    let release = keys.iter().find(|k| k["key"] == "release").unwrap();
    let der = x.join(release["entry"].as_str().unwrap());
    let o = Command::new("openssl")
        .args(["pkey", "-inform", "DER", "-pubout", "-in", s(&der)])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        release["public_key"].as_str().unwrap()
    );
    // The archived log is the live log up to the head the manifest names.
    let archived = std::fs::read(x.join("audit.log")).unwrap();
    assert_eq!(&original_log[..archived.len()], &archived[..]);

    let ok = w.ok(&["backup", "verify", s(&file), "--identity", s(&id)]);
    assert!(ok.contains("is intact"), "{ok}");

    // Restore into an empty home: same key list, same log up to the head, then the restore.
    let into = w.path().join("restored");
    let o = w
        .keyward()
        .env("KEYWARD_PASSPHRASE", "a new passphrase")
        .args([
            "--batch",
            "backup",
            "restore",
            s(&file),
            "--identity",
            s(&id),
            "--into",
            s(&into),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(key_list(&w, &into), key_list(&w, &w.home()));
    let restored_log = std::fs::read(into.join("audit.log")).unwrap();
    assert_eq!(&restored_log[..archived.len()], &archived[..]);
    let head_seq = manifest["audit"]["seq"].as_u64().unwrap();
    let v = run_in(&w, &into, &["audit", "verify", "--output", "json"]);
    assert!(v.status.success(), "{}", stderr(&v));
    let after = String::from_utf8_lossy(&restored_log[archived.len()..]).into_owned();
    assert!(after.contains("\"type\":\"backup_restored\""), "{after}");
    assert!(
        after.contains(&format!("\"head_seq\":{head_seq}")),
        "{after}"
    );
    assert!(after.contains(manifest["audit"]["hash"].as_str().unwrap()));
    assert!(after.contains("\"type\":\"key_restored\""));

    // A restored software key signs; the original public key verifies it.
    let pem = w.ok(&["key", "public-key", "release"]);
    let data = w.path().join("artefact");
    std::fs::write(&data, b"release 1.0\n").unwrap();
    let sig = w.path().join("artefact.sig");
    let o = w
        .keyward()
        .env("KEYWARD_HOME", &into)
        .env("KEYWARD_PASSPHRASE", "a new passphrase")
        .args([
            "key",
            "sign",
            "release",
            "--input",
            s(&data),
            "--output",
            s(&sig),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(openssl_verify(
        w.path(),
        &pem,
        "p256",
        b"release 1.0\n",
        &std::fs::read(&sig).unwrap()
    ));
    // The ed25519 one too.
    let pem = w.ok(&["key", "public-key", "edkey"]);
    let o = w
        .keyward()
        .env("KEYWARD_HOME", &into)
        .env("KEYWARD_PASSPHRASE", "a new passphrase")
        .args([
            "key",
            "sign",
            "edkey",
            "--input",
            s(&data),
            "--output",
            s(&sig),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(openssl_verify(
        w.path(),
        &pem,
        "ed25519",
        b"release 1.0\n",
        &std::fs::read(&sig).unwrap()
    ));

    // The live log records the backup.
    let live = std::fs::read_to_string(w.audit_log()).unwrap();
    assert!(live.contains("\"type\":\"backup_created\""));
}

#[test]
fn three_of_five_any_three_restore_two_say_how_many_more_foreign_share_rejected() {
    let w = World::new();
    w.ok(&["key", "generate", "release", "--token", "soft"]);
    let names = ["alice", "bob", "carol", "dave", "erin"];
    let people: Vec<(PathBuf, String)> = names.iter().map(|n| keygen(w.path(), n)).collect();
    let file = w.path().join("root.kwb");
    let mut args: Vec<String> = ["backup", "create", "--output", s(&file), "--shares", "3"]
        .iter()
        .map(|a| a.to_string())
        .collect();
    for (n, (_, r)) in names.iter().zip(&people) {
        args.push("--custodian".into());
        args.push(format!("{n}={r}"));
    }
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = w.ok(&a);
    assert!(out.contains("3-of-5"), "{out}");
    let share = |n: &str| w.path().join(format!("root.kwb.{n}.share"));
    for n in names {
        let p = share(n);
        assert!(p.exists());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    // A share alone reveals nothing: its custodian opens it with the standard tool and finds a
    // Shamir share, not the key.
    let o = Command::new("age")
        .args(["-d", "-i", s(&people[0].0), s(&share("alice"))])
        .output()
        .unwrap();
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("\"threshold\": 3") && !text.contains("AGE-SECRET-KEY"),
        "{text}"
    );
    // Nor does the backup open with one custodian's identity.
    let e = w.run(&["backup", "verify", s(&file), "--identity", s(&people[0].0)]);
    assert!(!e.status.success());

    let pem = w.ok(&["key", "public-key", "release"]);
    let mut n = 0;
    for i in 0..5 {
        for j in i + 1..5 {
            for k in j + 1..5 {
                let into = w.path().join(format!("r{i}{j}{k}"));
                let mut args: Vec<String> = vec![
                    "--batch".into(),
                    "backup".into(),
                    "restore".into(),
                    s(&file).into(),
                    "--into".into(),
                    s(&into).into(),
                ];
                for x in [i, j, k] {
                    args.extend(["--share".into(), s(&share(names[x])).into()]);
                }
                // Every identity present is tried on every share, in any order.
                for (p, _) in people.iter().rev() {
                    args.extend(["--identity".into(), s(p).into()]);
                }
                let a: Vec<&str> = args.iter().map(String::as_str).collect();
                w.ok(&a);
                assert!(key_list(&w, &into).contains("release/1"));
                n += 1;
                if n == 1 {
                    let o = run_in(&w, &into, &["key", "public-key", "release"]);
                    assert_eq!(stdout(&o), pem);
                }
            }
        }
    }
    assert_eq!(n, 10);

    // Two shares: a clear message, nothing written.
    let into = w.path().join("two");
    let o = w.run(&[
        "--batch",
        "backup",
        "restore",
        s(&file),
        "--into",
        s(&into),
        "--share",
        s(&share("bob")),
        "--share",
        s(&share("erin")),
        "--identity",
        s(&people[1].0),
        "--identity",
        s(&people[4].0),
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("need 1 more share(s)"),
        "{}",
        stderr(&o)
    );
    nothing_written(&into);

    // A share of another backup (same custodians) is rejected by name.
    let other = w.path().join("other.kwb");
    let mut args: Vec<String> = ["backup", "create", "--output", s(&other), "--shares", "3"]
        .iter()
        .map(|a| a.to_string())
        .collect();
    for (n, (_, r)) in names.iter().zip(&people) {
        args.extend(["--custodian".into(), format!("{n}={r}")]);
    }
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    w.ok(&a);
    let foreign = w.path().join("other.kwb.carol.share");
    let o = w.run(&[
        "--batch",
        "backup",
        "restore",
        s(&file),
        "--into",
        s(&into),
        "--share",
        s(&share("alice")),
        "--share",
        s(&share("bob")),
        "--share",
        s(&foreign),
        "--identity",
        s(&people[0].0),
        "--identity",
        s(&people[1].0),
        "--identity",
        s(&people[2].0),
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("belongs to another backup"),
        "{}",
        stderr(&o)
    );
    nothing_written(&into);
}

/// Decrypts `file` with the age CLI, lets `edit` change the extracted archive, and writes a new
/// backup encrypted to `recipient` with the age CLI.
fn reseal(w: &World, file: &Path, id: &Path, recipient: &str, edit: impl Fn(&Path)) -> PathBuf {
    let dir = w.path().join(format!("reseal-{}", rand_suffix()));
    std::fs::create_dir(&dir).unwrap();
    let tar = dir.join("a.tar");
    assert!(Command::new("age")
        .args(["-d", "-i", s(id), "-o", s(&tar), s(file)])
        .status()
        .unwrap()
        .success());
    let x = dir.join("x");
    std::fs::create_dir(&x).unwrap();
    assert!(Command::new("tar")
        .args(["-xf", s(&tar), "-C", s(&x)])
        .status()
        .unwrap()
        .success());
    let names = String::from_utf8(
        Command::new("tar")
            .args(["-tf", s(&tar)])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    edit(&x);
    let tar2 = dir.join("b.tar");
    let mut c = Command::new("tar");
    c.args(["--format=ustar", "-cf", s(&tar2), "-C", s(&x)]);
    for n in names.lines() {
        c.arg(n);
    }
    assert!(c.status().unwrap().success());
    let out = dir.join("tampered.kwb");
    assert!(Command::new("age")
        .args(["-r", recipient, "-o", s(&out), s(&tar2)])
        .status()
        .unwrap()
        .success());
    out
}

fn edit_audit_line(x: &Path) {
    let p = x.join("audit.log");
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(
        &p,
        text.replacen("\"outcome\":\"ok\"", "\"outcome\":\"failed\"", 1),
    )
    .unwrap();
}

#[test]
fn corrupt_truncated_tampered_and_wrong_identity_give_clear_errors_and_write_nothing() {
    let w = World::new();
    w.ok(&["key", "generate", "release", "--token", "soft"]);
    let (id, recipient) = keygen(w.path(), "owner");
    let (stranger, _) = keygen(w.path(), "stranger");
    let file = w.path().join("home.kwb");
    w.ok(&["backup", "create", "--output", s(&file), "-r", &recipient]);
    let bytes = std::fs::read(&file).unwrap();
    let into = w.path().join("new-home");
    let restore = |f: &Path, ident: &Path| {
        w.keyward()
            .args([
                "--batch",
                "backup",
                "restore",
                s(f),
                "--identity",
                s(ident),
                "--into",
                s(&into),
            ])
            .output()
            .unwrap()
    };

    let corrupt = w.path().join("corrupt.kwb");
    let mut b = bytes.clone();
    let mid = b.len() / 2;
    b[mid] ^= 0x40;
    std::fs::write(&corrupt, &b).unwrap();
    let o = restore(&corrupt, &id);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("is corrupt") && stderr(&o).contains("nothing was written"),
        "{}",
        stderr(&o)
    );
    nothing_written(&into);

    let truncated = w.path().join("truncated.kwb");
    std::fs::write(&truncated, &bytes[..bytes.len() - 300]).unwrap();
    let o = restore(&truncated, &id);
    assert!(
        stderr(&o).contains("damaged or cut short"),
        "{}",
        stderr(&o)
    );
    nothing_written(&into);
    let o = w.run(&["backup", "verify", s(&truncated), "--identity", s(&id)]);
    assert!(!o.status.success());

    let not_age = w.path().join("notes.txt");
    std::fs::write(&not_age, "hello\n").unwrap();
    let o = restore(&not_age, &id);
    assert!(
        stderr(&o).contains("not an age-encrypted keyward backup"),
        "{}",
        stderr(&o)
    );

    let o = restore(&file, &stranger);
    assert!(
        stderr(&o).contains("none of the 1 identities given opens"),
        "{}",
        stderr(&o)
    );
    nothing_written(&into);

    // Decrypted and re-encrypted unchanged: the backup id no longer matches the file.
    let t0 = reseal(&w, &file, &id, &recipient, |_| {});
    let o = restore(&t0, &id);
    assert!(stderr(&o).contains("re-encrypted"), "{}", stderr(&o));
    nothing_written(&into);

    // An entry changed after the backup (and re-encrypted to the same recipient): its digest.
    let t1 = reseal(&w, &file, &id, &recipient, edit_audit_line);
    let o = restore(&t1, &id);
    assert!(
        stderr(&o).contains("\"audit.log\" does not match its SHA-256"),
        "{}",
        stderr(&o)
    );
    nothing_written(&into);

    // The same with the manifest's digest fixed up: the audit chain names the entry.
    let t2 = reseal(&w, &file, &id, &recipient, |x| {
        edit_audit_line(x);
        let mp = x.join("manifest.json");
        let mut m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&mp).unwrap()).unwrap();
        let log = std::fs::read(x.join("audit.log")).unwrap();
        for e in m["entries"].as_array_mut().unwrap() {
            if e["name"] == "audit.log" {
                e["sha256"] = hex::encode(Sha256::digest(&log)).into();
                e["size"] = log.len().into();
            }
        }
        std::fs::write(&mp, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    });
    let o = restore(&t2, &id);
    assert!(stderr(&o).contains("was modified"), "{}", stderr(&o));
    nothing_written(&into);

    // A private key swapped for another: it no longer matches its public key.
    let t3 = reseal(&w, &file, &id, &recipient, |x| {
        let keys = x.join("soft/keys");
        let f = std::fs::read_dir(&keys)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let o = Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-outform",
                "DER",
            ])
            .output()
            .unwrap();
        std::fs::write(&f, o.stdout).unwrap();
        let mp = x.join("manifest.json");
        let mut m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&mp).unwrap()).unwrap();
        let name = format!("soft/keys/{}", f.file_name().unwrap().to_string_lossy());
        let bytes = std::fs::read(&f).unwrap();
        for e in m["entries"].as_array_mut().unwrap() {
            if e["name"] == name.as_str() {
                e["sha256"] = hex::encode(Sha256::digest(&bytes)).into();
                e["size"] = bytes.len().into();
            }
        }
        std::fs::write(&mp, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    });
    let o = restore(&t3, &id);
    assert!(
        stderr(&o).contains("the private key of release/1"),
        "{}",
        stderr(&o)
    );
    nothing_written(&into);

    // The intact file still restores; a second restore into the now non-empty home is refused
    // in batch mode without --yes, and with --yes the old home is moved aside, not deleted.
    let o = w
        .keyward()
        .env("KEYWARD_PASSPHRASE", "another passphrase")
        .args([
            "--batch",
            "backup",
            "restore",
            s(&file),
            "-i",
            s(&id),
            "--into",
            s(&into),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let before = std::fs::read(into.join("audit.log")).unwrap();
    let o = restore(&file, &id);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("replace the keyward home") && stderr(&o).contains("--yes"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read(into.join("audit.log")).unwrap(), before);
    let o = w
        .keyward()
        .args([
            "--batch",
            "--yes",
            "backup",
            "restore",
            s(&file),
            "-i",
            s(&id),
            "--into",
            s(&into),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("moved to"), "{}", stdout(&o));
}

#[test]
fn passphrase_backup_inspect_and_drill_are_audited() {
    let w = World::new();
    w.ok(&["key", "generate", "release", "--token", "soft"]);
    let file = w.path().join("p.kwb");
    let o = w
        .keyward()
        .env("KEYWARD_BACKUP_PASSPHRASE", "backup passphrase 1")
        .args([
            "--batch",
            "backup",
            "create",
            "--output",
            s(&file),
            "--passphrase",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    // Without the passphrase in batch mode: a clear refusal.
    let o = w.run(&["--batch", "backup", "verify", s(&file)]);
    assert!(
        stderr(&o).contains("KEYWARD_BACKUP_PASSPHRASE"),
        "{}",
        stderr(&o)
    );
    let o = w
        .keyward()
        .env("KEYWARD_BACKUP_PASSPHRASE", "wrong passphrase")
        .args(["--batch", "backup", "verify", s(&file)])
        .output()
        .unwrap();
    assert!(stderr(&o).contains("wrong passphrase"), "{}", stderr(&o));
    let inspect = w.ok(&["--batch", "backup", "inspect", s(&file)]);
    assert!(inspect.contains("scrypt"), "{inspect}");
    assert!(!inspect.contains("release/1"), "{inspect}");
    let o = w
        .keyward()
        .env("KEYWARD_BACKUP_PASSPHRASE", "backup passphrase 1")
        .args(["--batch", "backup", "inspect", s(&file)])
        .output()
        .unwrap();
    assert!(
        stdout(&o).contains("release/1") && stdout(&o).contains("private key inside"),
        "{}",
        stdout(&o)
    );
    assert!(!stdout(&o).contains("PRIVATE KEY"));

    // A key made after the backup shows in the drill as a note; the drill passes and is logged.
    w.ok(&["key", "generate", "later", "--token", "soft"]);
    let o = w
        .keyward()
        .env("KEYWARD_BACKUP_PASSPHRASE", "backup passphrase 1")
        .args(["--batch", "backup", "drill", s(&file)])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains("1 restored private key(s) signed and verified"),
        "{text}"
    );
    assert!(
        text.contains("later/1 was created after the backup"),
        "{text}"
    );
    let log = std::fs::read_to_string(w.audit_log()).unwrap();
    assert!(log.contains("\"type\":\"backup_drilled\""));
    assert!(w.run(&["audit", "verify"]).status.success());
}

#[test]
fn a_backup_the_log_cannot_record_is_refused_and_not_left_behind() {
    let w = World::new();
    w.init_hsm("hsm");
    w.ok(&["key", "generate", "hsmkey", "--token", "hsm"]);
    let (_, recipient) = keygen(w.path(), "owner");
    let log = w.audit_log();
    let mut perms = std::fs::metadata(&log).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o444);
    std::fs::set_permissions(&log, perms).unwrap();
    let root = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap();
    let mut cmd = if root {
        // root ignores file modes: run keyward as nobody, owning everything but the log.
        assert!(Command::new("chown")
            .args(["-R", "65534:65534", s(w.path())])
            .status()
            .unwrap()
            .success());
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
    };
    let file = w.path().join("b.kwb");
    let o = cmd
        .args(["backup", "create", "--output", s(&file), "-r", &recipient])
        .env("KEYWARD_HOME", w.home())
        .env("HOME", w.path())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("cannot write the audit log"),
        "{}",
        stderr(&o)
    );
    nothing_written(&file);
}

#[test]
fn restore_onto_a_softhsm2_token_imports_the_software_key_and_records_the_binding() {
    let w = World::new();
    w.init_hsm("hsm2");
    w.ok(&[
        "key",
        "generate",
        "release",
        "--token",
        "soft",
        "--algorithm",
        "p384",
    ]);
    w.ok(&[
        "key",
        "generate",
        "edkey",
        "--token",
        "soft",
        "--algorithm",
        "ed25519",
    ]);
    let (id, recipient) = keygen(w.path(), "owner");
    let file = w.path().join("home.kwb");
    w.ok(&["backup", "create", "--output", s(&file), "-r", &recipient]);
    let into = w.path().join("onto");
    let o = w.run(&[
        "--batch",
        "backup",
        "restore",
        s(&file),
        "-i",
        s(&id),
        "--into",
        s(&into),
        "--onto",
        "hsm2",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("release/1 -> hsm2"), "{}", stdout(&o));
    let list = key_list(&w, &into);
    let line = list.lines().find(|l| l.starts_with("release/1")).unwrap();
    assert!(line.contains("hsm2"), "{list}");
    let log = std::fs::read_to_string(into.join("audit.log")).unwrap();
    assert!(
        log.contains(
            "\"type\":\"key_restored\",\"key\":\"release\",\"version\":1,\"token\":\"hsm2\""
        ),
        "{log}"
    );
    // The token holds it, sensitive, as pkcs11-tool sees it.
    let objects = w.pkcs11_tool_objects("hsm2");
    assert!(
        objects.contains("release/1") && objects.contains("sensitive"),
        "{objects}"
    );
    // It signs on the token, and the original public keys verify.
    let data = w.path().join("f");
    std::fs::write(&data, b"signed on the HSM\n").unwrap();
    for (key, alg) in [("release", "p384"), ("edkey", "ed25519")] {
        let pem = w.ok(&["key", "public-key", key]);
        let sig = w.path().join(format!("{key}.sig"));
        let o = run_in(
            &w,
            &into,
            &["key", "sign", key, "--input", s(&data), "--output", s(&sig)],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(openssl_verify(
            w.path(),
            &pem,
            alg,
            b"signed on the HSM\n",
            &std::fs::read(&sig).unwrap()
        ));
    }
}

/// Decrypts a backup with the age CLI and unpacks it with tar into a fresh directory.
fn unpack_with_age(w: &World, file: &Path, id: &Path) -> PathBuf {
    let x = w.path().join(format!("x-{}", rand_suffix()));
    std::fs::create_dir(&x).unwrap();
    let tar = x.join("a.tar");
    assert!(Command::new("age")
        .args(["-d", "-i", s(id), "-o", s(&tar), s(file)])
        .status()
        .unwrap()
        .success());
    assert!(Command::new("tar")
        .args(["-xf", s(&tar), "-C", s(&x)])
        .status()
        .unwrap()
        .success());
    x
}

/// Another machine: its own SoftHSM2 token directory with one token, initialised by
/// softhsm2-util (not by keyward), and a pkcs11: URI naming it.
fn second_machine(label: &str) -> (World, String) {
    let b = World::new();
    let st = Command::new("softhsm2-util")
        .env("SOFTHSM2_CONF", b.softhsm_conf())
        .args([
            "--init-token",
            "--free",
            "--label",
            label,
            "--so-pin",
            SO_PIN,
            "--pin",
            USER_PIN,
        ])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("softhsm2-util");
    assert!(st.success());
    let uri = format!("pkcs11:token={label}?module-path={SOFTHSM_MODULE}");
    (b, uri)
}

#[test]
fn softhsm2_to_softhsm2_a_wrappable_key_restored_onto_a_second_token_signs() {
    let w = World::new();
    w.init_hsm("hsm");
    w.ok(&[
        "key",
        "generate",
        "release",
        "--token",
        "hsm",
        "--wrappable",
    ]);
    w.ok(&[
        "key",
        "generate",
        "legacy",
        "--token",
        "hsm",
        "--algorithm",
        "rsa2048",
        "--wrappable",
    ]);
    w.ok(&["key", "generate", "root", "--token", "hsm"]);
    // Ed25519 cannot be wrapped by PKCS#11 2.40 modules: refused up front, nothing generated.
    let o = w.run(&[
        "key",
        "generate",
        "ed",
        "--token",
        "hsm",
        "--algorithm",
        "ed25519",
        "--wrappable",
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("cannot wrap an Ed25519"),
        "{}",
        stderr(&o)
    );
    // Nor does a YubiKey or the software keystore make wrappable keys.
    let o = w.run(&["key", "generate", "s", "--token", "soft", "--wrappable"]);
    assert!(
        stderr(&o).contains("--wrappable applies to PKCS#11 tokens only"),
        "{}",
        stderr(&o)
    );
    let list = w.ok(&["key", "list"]);
    let line = |l: &str, k: &str| {
        l.lines()
            .find(|x| x.starts_with(k))
            .unwrap_or_else(|| panic!("{k} in {l}"))
            .to_owned()
    };
    assert!(line(&list, "release/1").contains("wrappable"), "{list}");
    assert!(line(&list, "root/1").contains("public"), "{list}");
    assert!(!list.contains("ed/1") && !list.contains("s/1"), "{list}");
    let show = w.ok(&["key", "show", "release"]);
    assert!(show.contains("backup     wrappable"), "{show}");
    let json: serde_json::Value =
        serde_json::from_str(&w.ok(&["key", "list", "--output", "json"])).unwrap();
    let wrappable: Vec<&str> = json
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["wrappable"] == true)
        .map(|v| v["key"].as_str().unwrap())
        .collect();
    assert_eq!(wrappable, ["legacy", "release"]);
    // pkcs11-tool's view of the source token: sensitive; extractable (only when wrapped).
    let objects = w.pkcs11_tool_objects("hsm");
    assert!(
        objects.contains("sensitive, extractable"),
        "a wrappable key is extractable (under a trusted key only): {objects}"
    );

    let (id, recipient) = keygen(w.path(), "owner");
    // Wrapping out needs the token's SO: without the SO PIN in batch mode, a clear refusal.
    let file = w.path().join("home.kwb");
    let o = w
        .keyward()
        .env_remove("KEYWARD_SO_PIN")
        .args([
            "--batch",
            "backup",
            "create",
            "--output",
            s(&file),
            "-r",
            &recipient,
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("KEYWARD_SO_PIN"), "{}", stderr(&o));
    nothing_written(&file);
    // A wrong SO PIN: refused, and the log says so.
    let o = w
        .keyward()
        .env("KEYWARD_SO_PIN", "0000")
        .args([
            "--batch",
            "backup",
            "create",
            "--output",
            s(&file),
            "-r",
            &recipient,
        ])
        .output()
        .unwrap();
    assert!(stderr(&o).contains("wrong SO PIN"), "{}", stderr(&o));
    nothing_written(&file);
    let log = std::fs::read_to_string(w.audit_log()).unwrap();
    assert!(
        log.contains("\"type\":\"wrapping_key_installed\"")
            && log.contains("\"outcome\":\"failed\"")
    );

    let out = w.ok(&[
        "--batch",
        "backup",
        "create",
        "--output",
        s(&file),
        "-r",
        &recipient,
    ]);
    assert!(
        out.contains("2 private key(s) inside (2 wrapped), 1 listed only"),
        "{out}"
    );
    // The live log records the SO's wrapping key and each wrap, never a key's value.
    let x = unpack_with_age(&w, &file, &id);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(x.join("manifest.json")).unwrap()).unwrap();
    let wk = &manifest["wrapping_keys"][0];
    let wk_id = wk["id"].as_str().unwrap();
    assert_eq!(wk["mechanism"], "CKM_AES_KEY_WRAP_PAD");
    let wk_value = std::fs::read(x.join(wk["entry"].as_str().unwrap())).unwrap();
    assert_eq!(wk_value.len(), 32);
    let log = std::fs::read_to_string(w.audit_log()).unwrap();
    let wrapped_lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"type\":\"key_wrapped\"") && l.contains(wk_id))
        .collect();
    assert_eq!(wrapped_lines.len(), 2, "{log}");
    assert!(log.contains("\"type\":\"wrapping_key_installed\",\"token\":\"hsm\""));
    assert!(!log.contains(&hex::encode(&wk_value)));
    // The blob is standard RFC 5649 over PKCS#8: openssl unwraps it (id-aes256-wrap-pad) into a
    // private key whose public half is the recorded one.
    let keys = manifest["keys"].as_array().unwrap();
    for name in ["release", "legacy"] {
        let k = keys.iter().find(|k| k["key"] == name).unwrap();
        assert_eq!(k["material"], "wrapped");
        assert_eq!(k["wrapping_key_id"], wk_id);
        let der = x.join(format!("{name}.der"));
        let st = Command::new("openssl")
            .args(["enc", "-d", "-id-aes256-wrap-pad", "-iv", "A65959A6", "-K"])
            .arg(hex::encode(&wk_value))
            .args([
                "-in",
                s(&x.join(k["entry"].as_str().unwrap())),
                "-out",
                s(&der),
            ])
            .status()
            .unwrap();
        assert!(st.success());
        let o = Command::new("openssl")
            .args(["pkey", "-inform", "DER", "-pubout", "-in", s(&der)])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            k["public_key"].as_str().unwrap()
        );
    }
    let root = keys.iter().find(|k| k["key"] == "root").unwrap();
    assert_eq!(root["material"], "not-extractable");
    // inspect: the wrapped keys and the wrapping key id, no secret.
    let inspect = w.ok(&["backup", "inspect", s(&file), "--identity", s(&id)]);
    assert!(
        inspect.contains(&format!("under wrapping key {wk_id}"))
            && inspect.contains(&format!("wrapping key {wk_id} (aes-256"))
            && !inspect.contains(&hex::encode(&wk_value)),
        "{inspect}"
    );
    let v = w.ok(&["backup", "verify", s(&file), "--identity", s(&id)]);
    assert!(v.contains("2 private key(s) match"), "{v}");
    // A blob changed inside (its digest fixed up): it no longer opens; nothing is written.
    let blob_entry = keys.iter().find(|k| k["key"] == "release").unwrap()["entry"]
        .as_str()
        .unwrap()
        .to_owned();
    let tampered = reseal(&w, &file, &id, &recipient, |x| {
        let p = x.join(&blob_entry);
        let mut b = std::fs::read(&p).unwrap();
        b[20] ^= 1;
        std::fs::write(&p, &b).unwrap();
        let mp = x.join("manifest.json");
        let mut m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&mp).unwrap()).unwrap();
        for e in m["entries"].as_array_mut().unwrap() {
            if e["name"] == blob_entry.as_str() {
                e["sha256"] = hex::encode(Sha256::digest(&b)).into();
            }
        }
        std::fs::write(&mp, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    });
    let bad_into = w.path().join("bad-restore");
    let o = w.run(&[
        "--batch",
        "backup",
        "restore",
        s(&tampered),
        "-i",
        s(&id),
        "--into",
        s(&bad_into),
    ]);
    assert!(
        stderr(&o).contains("the private key of release/1")
            && stderr(&o).contains("does not open with wrapping key"),
        "{}",
        stderr(&o)
    );
    nothing_written(&bad_into);

    // Without --onto, a wrapped key stays in the backup: the restore says how to place it.
    let plain = w.path().join("plain-restore");
    let o = w.run(&[
        "--batch",
        "backup",
        "restore",
        s(&file),
        "-i",
        s(&id),
        "--into",
        s(&plain),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("release/1: wrapped in this backup"),
        "{}",
        stdout(&o)
    );
    assert!(stdout(&o).contains("--onto TOKEN"), "{}", stdout(&o));

    // The second machine: a new home, a fresh SoftHSM2 token.
    let (b, uri) = second_machine("hsm2");
    let into = b.path().join("restored");
    let o = b
        .keyward()
        .args([
            "--batch",
            "backup",
            "restore",
            s(&file),
            "-i",
            s(&id),
            "--into",
            s(&into),
            "--onto",
            &uri,
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("release/1 -> pkcs11:token=hsm2"), "{text}");
    assert!(text.contains("C_UnwrapKey"), "{text}");
    // The non-extractable key: listed, with a plain statement that it cannot be restored.
    assert!(
        text.contains(&format!("root/1: cannot be restored onto {uri}")) && text.contains("rotate"),
        "{text}"
    );
    // The new binding and the unwrap are in the restored home's log, which verifies.
    let log = std::fs::read_to_string(into.join("audit.log")).unwrap();
    let restored: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["event"]["type"] == "key_restored")
        .collect();
    assert_eq!(restored.len(), 2, "{log}");
    for e in &restored {
        assert_eq!(e["event"]["token"], uri.as_str());
        assert_eq!(e["event"]["wrapping_key_id"], wk_id);
        assert_eq!(e["event"]["wrappable"], true);
    }
    let o = b
        .keyward()
        .env("KEYWARD_HOME", &into)
        .args(["audit", "verify"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let o = b
        .keyward()
        .env("KEYWARD_HOME", &into)
        .args(["key", "list"])
        .output()
        .unwrap();
    let list = stdout(&o);
    assert!(
        line(&list, "release/1").contains("pkcs11:token=hsm2"),
        "{list}"
    );
    assert!(line(&list, "release/1").contains("wrappable"), "{list}");

    // pkcs11-tool on the new token: each private key is there, sensitive (never readable in
    // plain), for signing only.
    let objects = b.pkcs11_tool_objects("hsm2");
    for label in ["release/1", "legacy/1"] {
        let private = private_key_block(&objects, label);
        assert!(private.contains("Access:     sensitive"), "{objects}");
        assert!(private.contains("Usage:      sign"), "{objects}");
        assert!(
            !private.contains("decrypt") && !private.contains("unwrap"),
            "{objects}"
        );
    }
    // Both restored keys sign on the new token; the original public keys verify (openssl).
    std::fs::write(b.path().join("artefact"), b"release 2.0\n").unwrap();
    for (key, alg) in [("release", "p256"), ("legacy", "rsa2048")] {
        let pem = w.ok(&["key", "public-key", key]);
        let o = b
            .keyward()
            .env("KEYWARD_HOME", &into)
            .current_dir(b.path())
            .args([
                "key",
                "sign",
                key,
                "--input",
                "artefact",
                "--output",
                "artefact.sig",
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        let sig = std::fs::read(b.path().join("artefact.sig")).unwrap();
        assert!(
            openssl_verify(b.path(), &pem, alg, b"release 2.0\n", &sig),
            "{key}"
        );
    }
    // The restored keys stay wrappable: the new home backs them up in turn (its SO installs
    // a new wrapping key on the new token).
    let again = b.path().join("again.kwb");
    let o = b
        .keyward()
        .env("KEYWARD_HOME", &into)
        .args([
            "--batch",
            "backup",
            "create",
            "--output",
            s(&again),
            "-r",
            &recipient,
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("(2 wrapped)"), "{}", stdout(&o));
    let v = w.ok(&["backup", "verify", s(&again), "--identity", s(&id)]);
    assert!(v.contains("2 private key(s) match"), "{v}");
    // `key rotate --wrappable` on the new token: the next version is wrappable too.
    let o = b
        .keyward()
        .env("KEYWARD_HOME", &into)
        .args(["key", "rotate", "release", "--wrappable"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let o = b
        .keyward()
        .env("KEYWARD_HOME", &into)
        .args(["key", "list"])
        .output()
        .unwrap();
    let list = stdout(&o);
    assert!(line(&list, "release/2").contains("wrappable"), "{list}");
}

/// The lines of `pkcs11-tool --list-objects` describing the private key labelled `label`.
fn private_key_block(objects: &str, label: &str) -> String {
    let mut blocks = Vec::new();
    let mut cur = String::new();
    for l in objects.lines() {
        if !l.starts_with(' ') && !cur.is_empty() {
            blocks.push(std::mem::take(&mut cur));
        }
        cur.push_str(l);
        cur.push('\n');
    }
    blocks.push(cur);
    blocks
        .into_iter()
        .find(|b| {
            b.starts_with("Private Key Object") && b.contains(&format!("label:      {label}\n"))
        })
        .unwrap_or_else(|| panic!("no private key {label} in {objects}"))
}
