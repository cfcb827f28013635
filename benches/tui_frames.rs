//! Console frame times on a big home: 10,000 key versions and a 1,000,000-entry audit log,
//! on a 120x40 `TestBackend`. Prints the time to the first frame, how long the workers take to
//! load keys and index the log, and key-press-to-rendered-frame latencies (p50/p99/max) while
//! scrolling and filtering the Audit screen. Targets: first frame < 150 ms, p99 < 16 ms.
#![allow(clippy::unwrap_used)]

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use keyward::audit::{encode_entry, Actor, Event, Outcome, GENESIS};
use keyward::home::Home;
use keyward::keys::State as KeyState;
use keyward::token::Algorithm;
use keyward::tui::app::dispatch;
use keyward::tui::components;
use keyward::tui::job::Job;
use keyward::tui::keymap::map_key;
use keyward::tui::state::{State, Tab};
use keyward::tui::{update, worker, Action};
use ratatui::backend::TestBackend;
use ratatui::Terminal;
use std::io::Write;
use std::time::{Duration, Instant};

const PEM: &str = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEQPS+VV+nDUvShjzEUZOUrKljnOm3\n/EKrsgshoiFuT+G0JicZtwZ4TJwr8RsSzaCAkNHg0gGBhtMR/YoclPoqRg==\n-----END PUBLIC KEY-----\n";

fn build_home(dir: &std::path::Path, entries: u64, versions: u64) {
    let actors = [
        Actor {
            user: "alice".into(),
            host: "vault-1".into(),
        },
        Actor {
            user: "release-bot".into(),
            host: "ci-runner-17".into(),
        },
        Actor {
            user: "bob".into(),
            host: "vault-2".into(),
        },
    ];
    let mut w = std::io::BufWriter::new(std::fs::File::create(dir.join("audit.log")).unwrap());
    let mut prev = GENESIS.to_string();
    let keys = versions / 10;
    for seq in 1..=entries {
        let (event, outcome) = if seq <= versions {
            let (k, v) = ((seq - 1) % keys, (seq - 1) / keys + 1);
            (
                Event::KeyGenerated {
                    key: format!("key-{k:04}"),
                    version: v as u32,
                    token: "hsm".into(),
                    token_serial: "9b96444e51705e21".into(),
                    object_id: format!("{seq:032x}"),
                    algorithm: Algorithm::P256,
                    key_id: format!("{seq:064x}"),
                    public_key: PEM.into(),
                    state: KeyState::Active,
                    wrappable: false,
                },
                Outcome::Ok,
            )
        } else if seq % 3 == 0 {
            (
                Event::Signed {
                    key: format!("key-{:04}", seq % keys),
                    version: 10,
                    key_id: format!("{seq:064x}"),
                    data_sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
                        .into(),
                    subject: Some(format!("file build-{seq}.tar")),
                },
                if seq % 97 == 0 {
                    Outcome::Failed
                } else {
                    Outcome::Ok
                },
            )
        } else {
            (
                Event::PublicKeyRead {
                    key: format!("key-{:04}", seq % keys),
                    version: 10,
                    key_id: format!("{seq:064x}"),
                },
                Outcome::Ok,
            )
        };
        let actor = &actors[(seq % 3) as usize];
        let (line, hash) = encode_entry(
            seq,
            &prev,
            "2026-11-25T06:00:00.000Z",
            actor,
            &event,
            outcome,
            None,
        )
        .unwrap();
        w.write_all(line.as_bytes()).unwrap();
        w.write_all(b"\n").unwrap();
        prev = hash;
    }
    w.flush().unwrap();
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

struct Lat(Vec<Duration>);

impl Lat {
    fn report(&mut self, what: &str) -> f64 {
        self.0.sort();
        let n = self.0.len();
        let p = |q: f64| ms(self.0[((n as f64 * q) as usize).min(n - 1)]);
        let p99 = p(0.99);
        println!(
            "  {what:<44} n={n:<5} p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>6.2} ms",
            p(0.5),
            p99,
            ms(self.0[n - 1])
        );
        p99
    }
}

fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

/// A key press handled the way the event loop does, then one frame drawn.
fn press(state: &mut State, term: &mut Terminal<TestBackend>, k: KeyEvent) -> Duration {
    let t = Instant::now();
    if let Some(a) = map_key(state, k) {
        dispatch(state, a);
    }
    if state.audit.scan.is_some() {
        dispatch(state, Action::ContinueScan);
    }
    term.draw(|f| components::render(f, state)).unwrap();
    t.elapsed()
}

/// Frames until a running filter scan is finished; returns the time.
fn finish_scan(state: &mut State, term: &mut Terminal<TestBackend>, lat: &mut Lat) -> Duration {
    let t = Instant::now();
    while state.audit.scan.is_some() {
        let f = Instant::now();
        dispatch(state, Action::ContinueScan);
        term.draw(|fr| components::render(fr, state)).unwrap();
        lat.0.push(f.elapsed());
    }
    t.elapsed()
}

fn main() {
    let entries: u64 = std::env::var("KEYWARD_BENCH_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let versions: u64 = 10_000;
    let dir = tempfile::tempdir().unwrap();
    let t = Instant::now();
    build_home(dir.path(), entries, versions);
    println!("console frames: home with {versions} key versions and {entries} audit entries (built in {:.1} s), TestBackend 120x40", t.elapsed().as_secs_f64());
    let home = Home::at(dir.path());
    // The state snapshot a long-lived home has.
    keyward::Keyward::open(home.clone())
        .unwrap()
        .registry()
        .unwrap();
    let _ = std::fs::read(dir.path().join("audit.log")).unwrap();

    // Time to first frame: open the home, build the state, queue the loads, draw.
    let t0 = Instant::now();
    drop(keyward::Keyward::open(home.clone()).unwrap());
    let mut state = State::new(home.dir().display().to_string(), (120, 40), 1_795_600_000);
    state.no_color = true;
    update::init(&mut state);
    let mut term = Terminal::new(TestBackend::new(120, 40)).unwrap();
    term.draw(|f| components::render(f, &state)).unwrap();
    let first = t0.elapsed();
    println!(
        "  time to first frame: {:.2} ms (target < 150 ms); the loads run on workers meanwhile",
        ms(first)
    );

    // The workers' loads (run here one after the other; the console runs them in parallel).
    let reqs: Vec<_> = state.outbox.drain(..).collect();
    for r in reqs {
        let t = Instant::now();
        let label = r.job.label();
        let result = worker::run_sync(&home, r.id, r.job.clone());
        let took = t.elapsed();
        let t2 = Instant::now();
        dispatch(&mut state, result);
        term.draw(|f| components::render(f, &state)).unwrap();
        println!(
            "  worker: {label:<28} {:>8.1} ms, then applied and drawn in {:.2} ms",
            ms(took),
            ms(t2.elapsed())
        );
    }
    state.outbox.clear();
    assert_eq!(state.keys.versions.len() as u64, versions);
    assert_eq!(state.audit.index.len() as u64, entries);

    // Keys screen: scrolling 10,000 versions (each move recomputes the key's audit history).
    state.tab = Tab::Keys;
    let mut lat = Lat(Vec::new());
    for i in 0..400 {
        let k = match i % 40 {
            0..=29 => key(KeyCode::Char('j')),
            30..=35 => key(KeyCode::PageDown),
            _ => key(KeyCode::Char('k')),
        };
        lat.0.push(press(&mut state, &mut term, k));
    }
    lat.report("Keys: j/k/PgDn over 10,000 versions");

    // Audit screen: scrolling.
    state.tab = Tab::Audit;
    let mut scroll = Lat(Vec::new());
    for i in 0..2000 {
        let k = match i % 100 {
            0 => key(KeyCode::End),
            1 => key(KeyCode::Home),
            2..=20 => key(KeyCode::PageDown),
            21..=30 => key(KeyCode::PageUp),
            31..=65 => key(KeyCode::Char('j')),
            _ => key(KeyCode::Char('k')),
        };
        scroll.0.push(press(&mut state, &mut term, k));
    }
    let p99_scroll = scroll.report("Audit: scrolling (j/k/PgUp/PgDn/Home/End)");

    // Audit screen: filtering (f, choose a key, Enter; c clears) and searching (/ text Enter).
    let mut filt = Lat(Vec::new());
    let mut frames = Lat(Vec::new());
    let mut complete = Vec::new();
    for round in 0..10 {
        filt.0
            .push(press(&mut state, &mut term, key(KeyCode::Char('f'))));
        for _ in 0..(round + 1) {
            filt.0
                .push(press(&mut state, &mut term, key(KeyCode::Right)));
        }
        if round % 2 == 1 {
            // Outcome: failed.
            for _ in 0..3 {
                filt.0.push(press(&mut state, &mut term, key(KeyCode::Tab)));
            }
            filt.0
                .push(press(&mut state, &mut term, key(KeyCode::Right)));
            filt.0
                .push(press(&mut state, &mut term, key(KeyCode::Right)));
        }
        filt.0
            .push(press(&mut state, &mut term, key(KeyCode::Enter)));
        complete.push(("filter", finish_scan(&mut state, &mut term, &mut frames)));
        for _ in 0..20 {
            filt.0
                .push(press(&mut state, &mut term, key(KeyCode::PageDown)));
        }
        filt.0
            .push(press(&mut state, &mut term, key(KeyCode::Char('c'))));
        filt.0
            .push(press(&mut state, &mut term, key(KeyCode::Char('/'))));
        for c in format!("build-{}7", round).chars() {
            filt.0
                .push(press(&mut state, &mut term, key(KeyCode::Char(c))));
        }
        filt.0
            .push(press(&mut state, &mut term, key(KeyCode::Enter)));
        complete.push(("search", finish_scan(&mut state, &mut term, &mut frames)));
        for _ in 0..10 {
            filt.0
                .push(press(&mut state, &mut term, key(KeyCode::Char('j'))));
        }
        filt.0
            .push(press(&mut state, &mut term, key(KeyCode::Char('c'))));
    }
    let p99_filter = filt.report("Audit: filtering and searching (key presses)");
    let p99_frames = frames.report("Audit: frames while a filter scan runs");
    let worst = |what: &str| {
        complete
            .iter()
            .filter(|(w, _)| *w == what)
            .map(|(_, d)| ms(*d))
            .fold(0.0, f64::max)
    };
    println!(
        "  a filter over {entries} entries completes within {:.1} ms, a text search within {:.1} ms (results stream in from the newest)",
        worst("filter"),
        worst("search")
    );
    let p99 = p99_scroll.max(p99_filter).max(p99_frames);
    println!(
        "  summary: first frame {:.2} ms (target < 150), p99 key press to frame {:.2} ms (target < 16)",
        ms(first),
        p99
    );
    let _ = Job::ListTokens;
}
