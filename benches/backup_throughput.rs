//! `keyward backup create` and `keyward backup restore` throughput on a home with a large
//! audit log (1 GB by default; KEYWARD_BENCH_BACKUP_MB scales it) vs the `age` command-line
//! tool encrypting and decrypting the same bytes, all measured in this run on this machine.
//! Goal: >= 70 % of age's throughput for both.
#![allow(clippy::unwrap_used)]

use keyward::audit::{encode_entry, Actor, Event, Outcome, GENESIS};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

fn build_log(path: &Path, target: u64) -> u64 {
    let actor = Actor {
        user: "release-bot".into(),
        host: "ci-runner-17".into(),
    };
    let mut w = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    let mut prev = GENESIS.to_string();
    let mut written = 0u64;
    let mut seq = 0u64;
    while written < target {
        seq += 1;
        let event = Event::Signed {
            key: "release".into(),
            version: 3,
            key_id: "343e7c7520e765f5ee07c6234408226163b18ac80b6c1dc307ebe7366ed6bd06".into(),
            data_sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
            subject: Some(format!("file build-{seq}.tar")),
        };
        let (line, hash) = encode_entry(
            seq,
            &prev,
            "2026-11-25T06:00:00.000Z",
            &actor,
            &event,
            Outcome::Ok,
            None,
        )
        .unwrap();
        w.write_all(line.as_bytes()).unwrap();
        w.write_all(b"\n").unwrap();
        written += line.len() as u64 + 1;
        prev = hash;
    }
    w.flush().unwrap();
    seq
}

fn time(mut c: Command) -> f64 {
    let t = Instant::now();
    let out = c.stdout(Stdio::null()).output().unwrap();
    let dt = t.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{:?}: {}",
        c,
        String::from_utf8_lossy(&out.stderr)
    );
    dt
}

fn main() {
    let mb: u64 = std::env::var("KEYWARD_BENCH_BACKUP_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let runs: usize = std::env::var("KEYWARD_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let exe = env!("CARGO_BIN_EXE_keyward");
    // KEYWARD_BENCH_DIR keeps the home and files there (for profiling); else a temp dir.
    let tmp = tempfile::tempdir().unwrap();
    let dir_path = std::env::var_os("KEYWARD_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_owned());
    let dir = &dir_path;
    let home = dir.join("home");
    std::fs::create_dir(&home).unwrap();
    let log = home.join("audit.log");
    let t = Instant::now();
    let entries = build_log(&log, mb * 1_000_000);
    let size = std::fs::metadata(&log).unwrap().len();
    eprintln!(
        "built a {entries}-entry audit log ({:.0} MB) in {:.1} s",
        size as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    let id = dir.join("id.txt");
    assert!(Command::new("age-keygen")
        .arg("-o")
        .arg(&id)
        .stderr(Stdio::null())
        .status()
        .expect("age-keygen (apt-get install age)")
        .success());
    let recipient = String::from_utf8(
        Command::new("age-keygen")
            .arg("-y")
            .arg(&id)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_owned();
    let _ = std::fs::read(&log).unwrap(); // warm the page cache

    let backup = dir.join("home.kwb");
    let aged = dir.join("audit.log.age");
    let plain = dir.join("audit.log.out");
    let into = dir.join("restored");
    let (mut kc, mut ac, mut kr, mut ar) = (f64::MAX, f64::MAX, f64::MAX, f64::MAX);
    // keyward fsyncs what it writes (a backup or a restored home must survive a crash); age
    // does not. The `sync FILE` time after age is shown apart, for a like-for-like view.
    let (mut acs, mut ars) = (f64::MAX, f64::MAX);
    let sync = |p: &Path| {
        let mut c = Command::new("sync");
        c.arg(p);
        time(c)
    };
    for _ in 0..runs {
        let _ = std::fs::remove_file(&backup);
        let mut c = Command::new(exe);
        c.env("KEYWARD_HOME", &home)
            .args(["--batch", "backup", "create", "--output"])
            .arg(&backup)
            .args(["--recipient", &recipient]);
        kc = kc.min(time(c));

        let _ = std::fs::remove_file(&aged);
        let mut c = Command::new("age");
        c.args(["-r", &recipient, "-o"]).arg(&aged).arg(&log);
        let t = time(c);
        ac = ac.min(t);
        acs = acs.min(t + sync(&aged));

        let _ = std::fs::remove_dir_all(&into);
        let mut c = Command::new(exe);
        c.env("KEYWARD_HOME", &home)
            .args(["--batch", "backup", "restore"])
            .arg(&backup)
            .arg("--identity")
            .arg(&id)
            .arg("--into")
            .arg(&into);
        kr = kr.min(time(c));

        let _ = std::fs::remove_file(&plain);
        let mut c = Command::new("age");
        c.arg("-d")
            .arg("-i")
            .arg(&id)
            .arg("-o")
            .arg(&plain)
            .arg(&aged);
        let t = time(c);
        ar = ar.min(t);
        ars = ars.min(t + sync(&plain));
    }
    let mb = size as f64 / 1e6;
    println!("backup throughput: audit log of {entries} entries, {mb:.0} MB; best of {runs}");
    println!(
        "  keyward backup create  : {kc:.3} s  ({:.0} MB/s)",
        mb / kc
    );
    println!(
        "  age -r (encrypt)       : {ac:.3} s  ({:.0} MB/s)",
        mb / ac
    );
    println!(
        "  age -r, then sync      : {acs:.3} s  ({:.0} MB/s)",
        mb / acs
    );
    println!(
        "  create ratio (keyward/age throughput): {:.0} %  (goal >= 70 %); vs age + sync: {:.0} %",
        100.0 * ac / kc,
        100.0 * acs / kc
    );
    println!(
        "  keyward backup restore : {kr:.3} s  ({:.0} MB/s)",
        mb / kr
    );
    println!(
        "  age -d (decrypt)       : {ar:.3} s  ({:.0} MB/s)",
        mb / ar
    );
    println!(
        "  age -d, then sync      : {ars:.3} s  ({:.0} MB/s)",
        mb / ars
    );
    println!(
        "  restore ratio (keyward/age throughput): {:.0} %  (goal >= 70 %); vs age + sync: {:.0} %",
        100.0 * ar / kr,
        100.0 * ars / kr
    );
}
