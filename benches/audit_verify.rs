//! `audit verify` throughput on a 1,000,000-entry log vs `sha256sum` of the same file, both
//! measured in this run. Goal: >= 50 % of sha256sum's throughput, and under 3 s.
#![allow(clippy::unwrap_used)]

use keyward::audit::{encode_entry, verify, Actor, Event, Outcome, GENESIS};
use std::io::Write;
use std::time::Instant;

fn main() {
    let n: u64 = std::env::var("KEYWARD_BENCH_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let actor = Actor {
        user: "release-bot".into(),
        host: "ci-runner-17".into(),
    };
    let mut w = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut prev = GENESIS.to_string();
    for seq in 1..=n {
        let event = if seq % 3 == 0 {
            Event::Signed {
                key: "release".into(),
                version: 3,
                key_id: "343e7c7520e765f5ee07c6234408226163b18ac80b6c1dc307ebe7366ed6bd06".into(),
                data_sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
                    .into(),
                subject: Some(format!("file build-{seq}.tar")),
            }
        } else {
            Event::PublicKeyRead {
                key: "release".into(),
                version: 3,
                key_id: "343e7c7520e765f5ee07c6234408226163b18ac80b6c1dc307ebe7366ed6bd06".into(),
            }
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
        prev = hash;
    }
    w.flush().unwrap();
    drop(w);
    let size = std::fs::metadata(&path).unwrap().len();
    // Warm the page cache for both.
    let _ = std::fs::read(&path).unwrap();

    let mut best_verify = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        let report = verify::verify(&path, &[]).unwrap();
        best_verify = best_verify.min(t.elapsed().as_secs_f64());
        assert!(report.is_ok() && report.verified == n);
    }
    let mut best_sum = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        let st = std::process::Command::new("sha256sum")
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        best_sum = best_sum.min(t.elapsed().as_secs_f64());
        assert!(st.success());
    }
    let mb = size as f64 / 1e6;
    println!("audit verify: {n} entries, {mb:.0} MB");
    println!(
        "  keyward audit verify : {best_verify:.3} s  ({:.0} MB/s)",
        mb / best_verify
    );
    println!(
        "  sha256sum            : {best_sum:.3} s  ({:.0} MB/s)",
        mb / best_sum
    );
    println!(
        "  ratio (keyward/sha256sum throughput): {:.0} %  (goal >= 50 %, and < 3 s)",
        100.0 * best_sum / best_verify
    );
}
