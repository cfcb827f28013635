//! Snapshots of every screen and modal on a fixed-size `TestBackend`, and `update` flows.
#![allow(clippy::unwrap_used)]

use crate::audit::{Actor, Entry, Event, Outcome};
use crate::error::Error;
use crate::keys::Version;
use crate::prompt::{Confirm, PromptError, SecretKind};
use crate::service::TokenEntry;
use crate::token::TokenError;
use crate::tui::action::Action;
use crate::tui::app::dispatch;
use crate::tui::components;
use crate::tui::job::Job;
use crate::tui::keymap::map_key;
use crate::tui::state::audit::AuditFilter;
use crate::tui::state::{
    Chain, ConfirmReply, ImageRow, ImageStatus, Load, Modal, SecretPrompt, SecretReply, State, Tab,
};
use crate::tui::worker;
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::backend::TestBackend;
use ratatui::Terminal;
use serde_json::json;
use std::sync::mpsc;

const NOW: i64 = 1_795_600_000; // 2026-11-25

const PEM: &str = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEq8nD2pW1bE3kq0Y4b1r7Wl2pQ5hX\n3g2Qm9x1u0lS8yq3n6H9r0Vb2Jp4F1c5T8kW0m3Zr7e2a6Q9d1x4s0oT5w==\n-----END PUBLIC KEY-----\n";

fn token(name: &str, hardware: bool, pin: serde_json::Value) -> TokenEntry {
    let info = json!({
        "kind": if hardware { "pkcs11" } else { "soft" },
        "label": name,
        "manufacturer": if hardware { "SoftHSM project" } else { "keyward" },
        "model": if hardware { "SoftHSM v2" } else { "age keystore" },
        "serial": if hardware { "8c2f1a3e9b7d4c21" } else { "-" },
        "firmware": "2.6",
        "pin": pin,
        "hardware": hardware,
        "algorithms": ["p256", "p384", "rsa3072", "rsa4096", "ed25519"],
    });
    TokenEntry {
        name: name.into(),
        kind: serde_json::from_value(info["kind"].clone()).unwrap(),
        source: if hardware { "keyward.toml" } else { "built-in" },
        module: hardware.then(|| "/usr/lib/softhsm/libsofthsm2.so".to_string()),
        info: Some(serde_json::from_value(info).unwrap()),
        error: None,
    }
}

fn pin_ok() -> serde_json::Value {
    json!({"tries_left": null, "count_low": false, "final_try": false, "locked": false, "not_initialized": false})
}

fn version(key: &str, n: u32, token: &str, state: &str, created: &str) -> Version {
    serde_json::from_value(json!({
        "key": key, "version": n, "token": token, "token_serial": "8c2f1a3e9b7d4c21",
        "object_id": format!("{n:032x}"), "algorithm": "p256",
        "key_id": format!("{:0>64}", format!("{key}{n}").len()).replace('0', "3e"),
        "public_key": PEM, "state": state, "created": created, "updated": created,
    }))
    .unwrap()
}

fn entry(seq: u64, event: Event, outcome: Outcome) -> Entry {
    Entry {
        seq,
        prev: String::new(),
        time: format!("2026-11-25T06:{:02}:{:02}.000Z", seq / 60 % 60, seq % 60),
        actor: Actor {
            user: "alice".into(),
            host: "vault".into(),
        },
        event,
        outcome,
        detail: None,
        hash: String::new(),
    }
}

/// A console with two tokens, three versions and a short log, everything loaded.
fn fixture(size: (u16, u16)) -> State {
    let mut s = State::new("/home/alice/.local/share/keyward".into(), size, NOW);
    s.no_color = true;
    s.tokens.entries = vec![
        token("soft", false, pin_ok()),
        token(
            "hsm",
            true,
            json!({"tries_left": null, "count_low": true, "final_try": false, "locked": false, "not_initialized": false}),
        ),
    ];
    s.tokens.load = Load::Ready;
    let versions = vec![
        version("ci", 1, "soft", "active", "2026-11-20T06:00:00.000Z"),
        version(
            "release",
            1,
            "hsm",
            "deactivated",
            "2026-09-01T06:00:00.000Z",
        ),
        version("release", 2, "hsm", "active", "2026-11-25T05:00:00.000Z"),
    ];
    s.keys.created = versions
        .iter()
        .map(|v| crate::tui::update::parse_time(&v.created))
        .collect();
    s.keys.versions = versions;
    s.keys.load = Load::Ready;
    let events = vec![
        (
            Event::Login {
                token: "hsm".into(),
                serial: "8c2f".into(),
                tries_left: None,
            },
            Outcome::Ok,
        ),
        (
            Event::PublicKeyRead {
                key: "release".into(),
                version: 2,
                key_id: "3e3e".into(),
            },
            Outcome::Ok,
        ),
        (
            Event::Login {
                token: "hsm".into(),
                serial: "8c2f".into(),
                tries_left: None,
            },
            Outcome::Failed,
        ),
        (
            Event::Signed {
                key: "release".into(),
                version: 2,
                key_id: "3e3e".into(),
                data_sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
                    .into(),
                subject: Some("file build-42.tar".into()),
            },
            Outcome::Ok,
        ),
    ];
    for (i, (e, o)) in events.into_iter().enumerate() {
        let seq = i as u64 + 1;
        s.audit.index.push(&entry(seq, e, o), seq * 300);
    }
    s.audit.load = Load::Ready;
    s.audit.chain = Chain::Verified {
        upto: 3,
        checkpoints: 0,
    };
    crate::tui::update::refresh_history(&mut s);
    s
}

fn render(state: &State) -> String {
    let mut t = Terminal::new(TestBackend::new(state.size.0, state.size.1)).unwrap();
    t.draw(|f| components::render(f, state)).unwrap();
    let buf = t.backend().buffer().clone();
    let mut out = String::new();
    for y in 0..buf.area.height {
        let mut line = String::new();
        for x in 0..buf.area.width {
            line.push_str(buf[(x, y)].symbol());
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn key(state: &mut State, code: KeyCode) {
    if let Some(a) = map_key(state, KeyEvent::new(code, KeyModifiers::NONE)) {
        dispatch(state, a);
    }
}

fn typing(state: &mut State, text: &str) {
    for c in text.chars() {
        key(state, KeyCode::Char(c));
    }
}

fn secret_needed(
    state: &mut State,
    id: u64,
    kind: SecretKind,
    status: &str,
    risky: bool,
) -> mpsc::Receiver<Option<crate::secret::Pin>> {
    let (tx, rx) = mpsc::sync_channel(1);
    dispatch(
        state,
        Action::SecretNeeded {
            id,
            prompt: SecretPrompt {
                kind,
                token: "hsm".into(),
                status: Some(status.into()),
                risky,
                puk: false,
            },
            reply: SecretReply(tx),
        },
    );
    rx
}

fn last_job(state: &State) -> (u64, Job) {
    let r = state.outbox.last().unwrap();
    (r.id, r.job.clone())
}

// ---- snapshots ---------------------------------------------------------------------------------

#[test]
fn snapshot_tokens_screen() {
    insta::assert_snapshot!(render(&fixture((80, 24))));
}

#[test]
fn snapshot_keys_screen() {
    let mut s = fixture((80, 24));
    s.tab = Tab::Keys;
    key(&mut s, KeyCode::Char('G'));
    insta::assert_snapshot!(render(&s));
}

#[test]
fn snapshot_keys_screen_wide() {
    let mut s = fixture((150, 40));
    s.tab = Tab::Keys;
    key(&mut s, KeyCode::Char('G'));
    insta::assert_snapshot!(render(&s));
}

#[test]
fn snapshot_images_screen() {
    let mut s = fixture((80, 24));
    s.tab = Tab::Images;
    s.images.key = Some("release".into());
    s.images.rows = vec![
        ImageRow {
            image: "registry.example/app:1.4".into(),
            digest: Some(
                "sha256:4bc453b53cb3d914b45f4b250294236adba2c0e09ff6f03793949e7e39fd4cc1".into(),
            ),
            status: ImageStatus::Done,
        },
        ImageRow {
            image: "registry.example/api:2.0".into(),
            digest: None,
            status: ImageStatus::Failed("manifest unknown: no tag 2.0".into()),
        },
    ];
    s.images.summary = Some((1, 1));
    insta::assert_snapshot!(render(&s));
}

#[test]
fn snapshot_audit_screen() {
    let mut s = fixture((80, 24));
    s.tab = Tab::Audit;
    insta::assert_snapshot!(render(&s));
}

#[test]
fn snapshot_audit_filtered_and_broken() {
    let mut s = fixture((100, 30));
    s.tab = Tab::Audit;
    dispatch(
        &mut s,
        Action::ApplyFilter(AuditFilter {
            outcome: Some(Outcome::Failed),
            ..Default::default()
        }),
    );
    s.audit.chain = Chain::Broken {
        at: 3,
        message: "entry 3 (line 3) was modified: its content does not match its hash".into(),
    };
    insta::assert_snapshot!(render(&s));
}

#[test]
fn snapshot_help() {
    let mut s = fixture((80, 24));
    s.tab = Tab::Keys;
    key(&mut s, KeyCode::Char('?'));
    insta::assert_snapshot!(render(&s));
}

#[test]
fn snapshot_pin_modal_shows_tries_before_typing() {
    let mut s = fixture((80, 24));
    let (id, _) = {
        s.tab = Tab::Keys;
        dispatch(
            &mut s,
            Action::GenerateKey {
                name: "release".into(),
                token: "hsm".into(),
                algorithm: crate::token::Algorithm::P256,
                inactive: false,
                wrappable: false,
            },
        );
        last_job(&s)
    };
    let _rx = secret_needed(&mut s, id, SecretKind::UserPin, "2 tries left", false);
    typing(&mut s, "12");
    let screen = render(&s);
    assert!(screen.contains("2 tries left"));
    assert!(screen.contains("••") && !screen.contains("12]"));
    insta::assert_snapshot!(screen);
}

#[test]
fn snapshot_new_pin_modal() {
    let mut s = fixture((80, 24));
    let id = s.request(Job::InitToken {
        module: "/usr/lib/softhsm/libsofthsm2.so".into(),
        label: "keyward".into(),
        name: "hsm".into(),
    });
    let _rx = secret_needed(&mut s, id, SecretKind::NewUserPin, "not set up", false);
    insta::assert_snapshot!(render(&s));
}

#[test]
fn snapshot_final_try_confirmation() {
    let mut s = fixture((80, 24));
    let id = s.request(Job::LoadKeys);
    let (tx, _rx) = mpsc::sync_channel(1);
    dispatch(
        &mut s,
        Action::ConfirmNeeded {
            id,
            confirm: Confirm::FinalPinTry {
                token: "hsm".into(),
            },
            reply: ConfirmReply(tx),
        },
    );
    insta::assert_snapshot!(render(&s));
}

#[test]
fn snapshot_generate_form() {
    let mut s = fixture((80, 24));
    key(&mut s, KeyCode::Char('g'));
    typing(&mut s, "release");
    insta::assert_snapshot!(render(&s));
}

#[test]
fn snapshot_filter_form_and_error() {
    let mut s = fixture((80, 24));
    s.tab = Tab::Audit;
    key(&mut s, KeyCode::Char('f'));
    key(&mut s, KeyCode::Right);
    insta::assert_snapshot!("filter_form", render(&s));
    key(&mut s, KeyCode::Esc);
    let id = s.request(Job::Generate {
        key: "release".into(),
        token: "hsm".into(),
        algorithm: crate::token::Algorithm::P256,
        inactive: false,
        wrappable: false,
    });
    dispatch(
        &mut s,
        worker::failed(
            id,
            &Error::Token(TokenError::PinIncorrect {
                token: "hsm".into(),
                tries_left: Some(2),
            }),
        ),
    );
    insta::assert_snapshot!("error_modal", render(&s));
}

#[test]
fn renders_at_tiny_and_odd_sizes_without_panicking() {
    for size in [(20, 5), (80, 24), (81, 25), (200, 60), (1, 1)] {
        let mut s = fixture(size);
        for tab in Tab::ALL {
            s.tab = tab;
            render(&s);
        }
        key(&mut s, KeyCode::Char('?'));
        render(&s);
    }
}

// ---- update flows ------------------------------------------------------------------------------

/// Generate through the form, the PIN modal and the worker's answer.
#[test]
fn generate_with_pin() {
    let mut s = fixture((80, 24));
    s.tab = Tab::Keys;
    s.keys.cursor = Default::default();
    key(&mut s, KeyCode::Char('g'));
    // The form proposes the selected key's name and the hardware token.
    typing(&mut s, "-x");
    for _ in 0..2 {
        key(&mut s, KeyCode::Backspace);
    }
    let before = s.outbox.len();
    key(&mut s, KeyCode::Enter);
    assert!(s.modals.is_empty());
    assert_eq!(s.outbox.len(), before + 1);
    let (id, job) = last_job(&s);
    assert_eq!(
        job,
        Job::Generate {
            key: "ci".into(),
            token: "hsm".into(),
            algorithm: crate::token::Algorithm::P256,
            inactive: false,
            wrappable: false
        }
    );
    let rx = secret_needed(&mut s, id, SecretKind::UserPin, "ok", false);
    assert!(matches!(s.modal(), Some(Modal::Pin(_))));
    typing(&mut s, "1234");
    key(&mut s, KeyCode::Enter);
    assert!(s.modals.is_empty(), "the PIN modal closes on submit");
    let pin = rx.try_recv().unwrap().unwrap();
    assert_eq!(pin.expose(), "1234");
    drop(pin);
    let v = version("ci", 2, "hsm", "active", "2026-11-25T06:59:00.000Z");
    s.outbox.clear();
    dispatch(
        &mut s,
        Action::KeyGenerated {
            id,
            version: Box::new(v),
        },
    );
    assert!(s.message.as_deref().unwrap().contains("generated ci/2"));
    assert!(
        s.outbox.iter().any(|r| r.job == Job::LoadKeys),
        "keys reload after a generation"
    );
    assert!(s
        .outbox
        .iter()
        .any(|r| matches!(r.job, Job::AuditTail { .. })));
    assert_eq!(s.keys.select, Some(("ci".into(), 2)));
}

#[test]
fn wrong_pin_shows_the_core_error_with_tries_left() {
    let mut s = fixture((80, 24));
    let id = s.request(Job::Generate {
        key: "release".into(),
        token: "hsm".into(),
        algorithm: crate::token::Algorithm::P256,
        inactive: false,
        wrappable: false,
    });
    let rx = secret_needed(&mut s, id, SecretKind::UserPin, "ok", false);
    typing(&mut s, "0000");
    key(&mut s, KeyCode::Enter);
    assert!(rx.try_recv().unwrap().is_some());
    dispatch(
        &mut s,
        worker::failed(
            id,
            &Error::Token(TokenError::PinIncorrect {
                token: "hsm".into(),
                tries_left: Some(2),
            }),
        ),
    );
    let Some(Modal::Error { message, .. }) = s.modal() else {
        panic!("an error popup")
    };
    assert!(
        message.contains("wrong PIN for hsm: 2 tries left"),
        "{message}"
    );
    assert!(message.contains("keyward never retries"));
    assert!(s.last_error.as_deref().unwrap().contains("wrong PIN"));
    let screen = render(&s);
    assert!(
        screen.contains("error: wrong PIN for hsm"),
        "status line: {screen}"
    );
    // Enter closes the popup.
    key(&mut s, KeyCode::Enter);
    assert!(s.modals.is_empty());
}

#[test]
fn cancelling_the_pin_modal_cancels_the_job_quietly() {
    let mut s = fixture((80, 24));
    let id = s.request(Job::SignFile {
        key: "release".into(),
        version: 2,
        token: "hsm".into(),
        input: "/tmp/a".into(),
        output: "/tmp/a.sig".into(),
    });
    let rx = secret_needed(&mut s, id, SecretKind::UserPin, "ok", false);
    typing(&mut s, "12");
    key(&mut s, KeyCode::Esc);
    assert!(s.modals.is_empty());
    assert!(
        rx.try_recv().unwrap().is_none(),
        "the worker is told: cancelled"
    );
    dispatch(
        &mut s,
        worker::failed(id, &Error::Prompt(PromptError::Cancelled)),
    );
    assert!(s.modals.is_empty(), "a cancel is not an error popup");
    assert!(s.last_error.is_none());
    assert!(s.message.as_deref().unwrap().starts_with("cancelled"));
}

#[test]
fn cancel_job_answers_a_waiting_prompt_and_drops_the_late_result() {
    let mut s = fixture((80, 24));
    let id = s.request(Job::Generate {
        key: "release".into(),
        token: "hsm".into(),
        algorithm: crate::token::Algorithm::P256,
        inactive: false,
        wrappable: false,
    });
    let cancel = s.jobs[&id].cancel.clone();
    let rx = secret_needed(&mut s, id, SecretKind::UserPin, "ok", false);
    // `x` is a modal key while the PIN modal is open; cancel from the job list instead.
    dispatch(&mut s, Action::CancelJob);
    assert!(cancel.is_cancelled());
    assert!(rx.try_recv().unwrap().is_none());
    assert!(s.modals.is_empty());
    let v = version("release", 3, "hsm", "active", "2026-11-25T06:59:00.000Z");
    dispatch(
        &mut s,
        Action::KeyGenerated {
            id,
            version: Box::new(v),
        },
    );
    assert!(
        s.keys.select.is_none(),
        "a cancelled job's result is dropped"
    );
}

#[test]
fn final_pin_try_needs_an_explicit_yes() {
    let mut s = fixture((80, 24));
    let id = s.request(Job::LoadKeys);
    let (tx, rx) = mpsc::sync_channel(1);
    dispatch(
        &mut s,
        Action::ConfirmNeeded {
            id,
            confirm: Confirm::FinalPinTry {
                token: "hsm".into(),
            },
            reply: ConfirmReply(tx),
        },
    );
    key(&mut s, KeyCode::Enter);
    assert!(rx.try_recv().is_err(), "Enter is not a yes");
    key(&mut s, KeyCode::Char('n'));
    assert!(!rx.try_recv().unwrap());
    assert!(s.modals.is_empty());
}

#[test]
fn sign_a_file_from_the_keys_screen() {
    let mut s = fixture((80, 24));
    s.tab = Tab::Keys;
    key(&mut s, KeyCode::Char('G')); // release/2, active, on hsm
    key(&mut s, KeyCode::Char('s'));
    typing(&mut s, "/tmp/build.tar");
    key(&mut s, KeyCode::Enter);
    let (id, job) = last_job(&s);
    assert_eq!(
        job,
        Job::SignFile {
            key: "release".into(),
            version: 2,
            token: "hsm".into(),
            input: "/tmp/build.tar".into(),
            output: "/tmp/build.tar.sig".into(),
        }
    );
    assert_eq!(crate::tui::worker::lane(&job), "token:hsm");
    dispatch(
        &mut s,
        Action::FileSigned {
            id,
            key: "release/2".into(),
            output: "/tmp/build.tar.sig".into(),
        },
    );
    assert!(s.message.as_deref().unwrap().contains("/tmp/build.tar.sig"));
}

#[test]
fn sign_images_shows_progress_and_a_summary() {
    let mut s = fixture((80, 24));
    s.tab = Tab::Images;
    key(&mut s, KeyCode::Char('s'));
    typing(&mut s, "reg.example/app:1 reg.example/api:2");
    key(&mut s, KeyCode::Tab);
    key(&mut s, KeyCode::Right); // ci -> release
    key(&mut s, KeyCode::Enter);
    let (id, job) = last_job(&s);
    assert_eq!(
        job,
        Job::SignImages {
            key: "release".into(),
            token: "hsm".into(),
            images: vec!["reg.example/app:1".into(), "reg.example/api:2".into()],
            insecure: vec![],
        }
    );
    assert_eq!(s.images.running, Some(id));
    assert_eq!(s.images.rows.len(), 2);
    let done = ImageRow {
        image: "reg.example/app:1".into(),
        digest: Some("sha256:4bc4".into()),
        status: ImageStatus::Done,
    };
    dispatch(
        &mut s,
        Action::ImageProgressed {
            id,
            index: 0,
            row: done.clone(),
        },
    );
    assert_eq!(s.images.rows[0], done);
    let failed = ImageRow {
        image: "reg.example/api:2".into(),
        digest: None,
        status: ImageStatus::Failed("manifest unknown".into()),
    };
    dispatch(
        &mut s,
        Action::ImagesSigned {
            id,
            rows: vec![done, failed],
        },
    );
    assert_eq!(s.images.summary, Some((1, 1)));
    assert_eq!(s.images.running, None);
    assert!(render(&s).contains("1 signed, 1 failed"));
}

#[test]
fn stale_background_results_are_dropped() {
    let mut s = fixture((80, 24));
    let old = s.request(Job::ListTokens);
    let new = s.request(Job::ListTokens);
    dispatch(
        &mut s,
        Action::TokensListed {
            id: old,
            tokens: vec![],
        },
    );
    assert_eq!(s.tokens.entries.len(), 2, "the older listing is stale");
    dispatch(
        &mut s,
        Action::TokensListed {
            id: new,
            tokens: vec![token("soft", false, pin_ok())],
        },
    );
    assert_eq!(s.tokens.entries.len(), 1);
}

#[test]
fn filter_scans_in_slices_newest_first_and_appends_keep_the_selection() {
    let mut s = State::new("/h".into(), (80, 24), NOW);
    for seq in 1..=250_000u64 {
        let e = entry(
            seq,
            Event::PublicKeyRead {
                key: if seq % 10 == 0 { "release" } else { "ci" }.into(),
                version: 1,
                key_id: "00".into(),
            },
            Outcome::Ok,
        );
        s.audit.index.push(&e, seq);
    }
    s.audit.load = Load::Ready;
    s.tab = Tab::Audit;
    dispatch(
        &mut s,
        Action::ApplyFilter(AuditFilter {
            key: Some("release".into()),
            search: "KEY OF".into(),
            ..Default::default()
        }),
    );
    assert!(
        s.audit.scan.is_some(),
        "a text search over 250,000 rows takes slices"
    );
    let first = s.audit.matches.as_ref().unwrap().clone();
    assert_eq!(s.audit.index.row(first[0] as usize).unwrap().seq, 250_000);
    let mut steps = 1;
    while s.audit.scan.is_some() {
        dispatch(&mut s, Action::ContinueScan);
        steps += 1;
    }
    assert!(steps > 1);
    assert_eq!(s.audit.visible_len(), 25_000);
    // Select the third match, then two new entries arrive (one matches).
    key(&mut s, KeyCode::Char('j'));
    key(&mut s, KeyCode::Char('j'));
    let selected_seq = s.audit.row_at(s.audit.cursor.selected).unwrap();
    let id = s.request(Job::AuditTail { from: 250_000 });
    let new = |seq, k: &str| {
        (
            entry(
                seq,
                Event::PublicKeyRead {
                    key: k.into(),
                    version: 1,
                    key_id: "00".into(),
                },
                Outcome::Ok,
            ),
            seq,
        )
    };
    dispatch(
        &mut s,
        Action::AuditAppended {
            id,
            from: 250_000,
            entries: vec![new(250_001, "release"), new(250_002, "ci")],
        },
    );
    assert_eq!(s.audit.visible_len(), 25_001);
    assert_eq!(
        s.audit.row_at(s.audit.cursor.selected).unwrap(),
        selected_seq
    );
    assert_eq!(
        s.audit.row_at(0).unwrap(),
        250_000,
        "the new match is on top"
    );
}

#[test]
fn quitting_answers_every_waiting_worker() {
    let mut s = fixture((80, 24));
    let id = s.request(Job::LoadKeys);
    let rx = secret_needed(&mut s, id, SecretKind::UserPin, "ok", false);
    if let Some(a) = map_key(&s, KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)) {
        dispatch(&mut s, a);
    }
    assert!(s.quit);
    assert!(rx.try_recv().unwrap().is_none());
}

#[test]
fn destroy_goes_through_the_cores_confirmation_naming_what_is_lost() {
    let mut s = fixture((80, 24));
    s.tab = Tab::Keys;
    // ci/1 is active: SP 800-57 wants it deactivated first.
    key(&mut s, KeyCode::Char('D'));
    assert!(s
        .outbox
        .iter()
        .all(|r| !matches!(r.job, Job::Destroy { .. })));
    assert!(s.message.as_deref().unwrap().contains("deactivate it"));
    key(&mut s, KeyCode::Char('j')); // release/1, deactivated
    key(&mut s, KeyCode::Char('D'));
    let (id, job) = last_job(&s);
    assert_eq!(
        job,
        Job::Destroy {
            key: "release".into(),
            version: 1,
            token: "hsm".into()
        }
    );
    let (tx, rx) = mpsc::sync_channel(1);
    dispatch(
        &mut s,
        Action::ConfirmNeeded {
            id,
            confirm: Confirm::Destructive {
                what: "destroy the private key of release/1 (key id 3e3e3e3e) on token hsm".into(),
            },
            reply: ConfirmReply(tx),
        },
    );
    let screen = render(&s);
    assert!(screen.contains("What is at stake"), "{screen}");
    assert!(
        screen.contains("destroy the private key of release/1"),
        "{screen}"
    );
    key(&mut s, KeyCode::Char('y'));
    assert!(rx.try_recv().unwrap());
}

#[test]
fn a_new_passphrase_is_typed_twice_and_checked_before_it_leaves_the_modal() {
    let mut s = fixture((80, 24));
    let id = s.request(Job::Generate {
        key: "dev".into(),
        token: "soft".into(),
        algorithm: crate::token::Algorithm::P256,
        inactive: false,
        wrappable: false,
    });
    let rx = secret_needed(&mut s, id, SecretKind::NewPassphrase, "not set up", false);
    for (a, b, err) in [
        ("short", "short", "at least 8"),
        ("correct horse", "correct hose", "differ"),
    ] {
        typing(&mut s, a);
        key(&mut s, KeyCode::Enter);
        typing(&mut s, b);
        key(&mut s, KeyCode::Enter);
        let Some(Modal::Pin(p)) = s.modal() else {
            panic!("the modal stays open")
        };
        assert!(p.error.as_deref().unwrap().contains(err));
        assert_eq!(p.lengths(), vec![0, 0], "both fields wiped");
        assert_eq!(p.focus, 0);
        assert!(rx.try_recv().is_err(), "nothing reached the worker");
    }
    typing(&mut s, "correct horse");
    key(&mut s, KeyCode::Enter);
    typing(&mut s, "correct horse");
    key(&mut s, KeyCode::Enter);
    assert_eq!(rx.try_recv().unwrap().unwrap().expose(), "correct horse");
    assert!(s.modals.is_empty());
}

// ---- lifecycle from the Keys screen ------------------------------------------------------------

fn with_policy(mut s: State) -> State {
    s.keys.policies.insert(
        "release".into(),
        crate::keys::Policy {
            rotate_every: 90 * 86400,
            overlap: 14 * 86400,
        },
    );
    s.keys.due = vec![crate::keys::Due {
        key: "release".into(),
        version: 2,
        action: "rotate",
        due: crate::keys::format_time(NOW + 5 * 86400),
        status: "soon",
    }];
    s
}

#[test]
fn snapshot_keys_screen_with_policy_and_due() {
    let mut s = with_policy(fixture((150, 40)));
    s.tab = Tab::Keys;
    key(&mut s, KeyCode::Char('G'));
    let screen = render(&s);
    assert!(screen.contains("rotate in 5d"), "{screen}");
    assert!(
        screen.contains("rotate every 90d · overlap 14d"),
        "{screen}"
    );
    insta::assert_snapshot!(screen);
}

#[test]
fn overdue_rotation_and_ended_overlap_are_flagged() {
    let mut s = with_policy(fixture((150, 40)));
    s.tab = Tab::Keys;
    s.keys.due = vec![
        crate::keys::Due {
            key: "release".into(),
            version: 2,
            action: "rotate",
            due: crate::keys::format_time(NOW - 3 * 86400),
            status: "overdue",
        },
        crate::keys::Due {
            key: "ci".into(),
            version: 1,
            action: "deactivate",
            due: crate::keys::format_time(NOW - 60),
            status: "overdue",
        },
    ];
    let screen = render(&s);
    assert!(screen.contains("OVERDUE 3d"), "{screen}");
    assert!(screen.contains("overlap ended"), "{screen}");
    // `d` asks before deactivating, naming the version.
    key(&mut s, KeyCode::Char('d'));
    let Some(Modal::Confirm(c)) = s.modal() else {
        panic!("a confirmation")
    };
    assert!(c.question.contains("ci/1"), "{}", c.question);
    assert!(s.outbox.iter().all(|r| r.job != Job::ApplyDue));
    key(&mut s, KeyCode::Char('y'));
    assert_eq!(last_job(&s).1, Job::ApplyDue);
}

#[test]
fn a_state_change_offers_only_legal_targets_and_asks_first() {
    let mut s = fixture((100, 30));
    s.tab = Tab::Keys;
    // ci/1 is active: suspended, deactivated, compromised.
    key(&mut s, KeyCode::Char('t'));
    let Some(Modal::Form(f)) = s.modal() else {
        panic!("a form")
    };
    assert_eq!(
        f.fields[0].kind,
        crate::tui::state::FieldKind::Choice {
            options: vec![
                "suspended".into(),
                "deactivated".into(),
                "compromised".into()
            ],
            index: 0
        }
    );
    key(&mut s, KeyCode::Tab);
    typing(&mut s, "maintenance window");
    key(&mut s, KeyCode::Enter);
    let screen = render(&s);
    assert!(screen.contains("Suspend ci/1?"), "{screen}");
    // Esc: nothing happens.
    key(&mut s, KeyCode::Esc);
    assert!(s
        .outbox
        .iter()
        .all(|r| !matches!(r.job, Job::SetState { .. })));
    assert!(s.message.as_deref().unwrap().contains("nothing was done"));
    // Again, with yes.
    key(&mut s, KeyCode::Char('t'));
    key(&mut s, KeyCode::Tab);
    typing(&mut s, "maintenance window");
    key(&mut s, KeyCode::Enter);
    key(&mut s, KeyCode::Char('y'));
    assert_eq!(
        last_job(&s).1,
        Job::SetState {
            key: "ci".into(),
            version: 1,
            to: crate::keys::State::Suspended,
            reason: Some("maintenance window".into()),
            since: None,
        }
    );
}

#[test]
fn a_compromise_needs_a_reason_and_names_the_revocation() {
    let mut s = fixture((100, 30));
    s.tab = Tab::Keys;
    key(&mut s, KeyCode::Char('t'));
    key(&mut s, KeyCode::Right);
    key(&mut s, KeyCode::Right);
    key(&mut s, KeyCode::Enter);
    let Some(Modal::Form(f)) = s.modal() else {
        panic!("the form stays")
    };
    assert!(f.error.as_deref().unwrap().contains("say why"));
    key(&mut s, KeyCode::Tab);
    typing(&mut s, "key file leaked");
    key(&mut s, KeyCode::Enter);
    let Some(Modal::Confirm(c)) = s.modal() else {
        panic!("a confirmation")
    };
    assert!(c.question.contains("COMPROMISED"));
    assert!(c
        .loses
        .as_deref()
        .unwrap()
        .contains("revoked in every bundle"));
    key(&mut s, KeyCode::Char('y'));
    let Job::SetState {
        to, since, reason, ..
    } = last_job(&s).1
    else {
        panic!("a state change")
    };
    assert_eq!(to, crate::keys::State::Compromised);
    assert_eq!(
        since.as_deref(),
        Some(crate::keys::format_time(NOW).as_str())
    );
    assert_eq!(reason.as_deref(), Some("key file leaked"));
}

#[test]
fn rotation_asks_first_naming_the_overlap_and_runs_on_the_tokens_worker() {
    let mut s = with_policy(fixture((100, 30)));
    s.tab = Tab::Keys;
    key(&mut s, KeyCode::Char('G')); // release/2
    key(&mut s, KeyCode::Char('R'));
    let Some(Modal::Form(f)) = s.modal() else {
        panic!("a form")
    };
    assert_eq!(f.fields[0].value(), "hsm");
    assert_eq!(f.fields[2].value(), "14d");
    key(&mut s, KeyCode::Enter);
    let Some(Modal::Confirm(c)) = s.modal() else {
        panic!("a confirmation")
    };
    assert!(
        c.question.contains("release/2 stay(s) active for 14d"),
        "{}",
        c.question
    );
    key(&mut s, KeyCode::Char('y'));
    let job = last_job(&s).1;
    assert_eq!(
        job,
        Job::Rotate {
            key: "release".into(),
            token: "hsm".into(),
            algorithm: crate::token::Algorithm::P256,
            overlap: 14 * 86400,
            wrappable: false,
        }
    );
    assert_eq!(worker::lane(&job), "token:hsm");
    // A zero overlap says what stops signing.
    key(&mut s, KeyCode::Char('R'));
    key(&mut s, KeyCode::Up); // Wrappable
    key(&mut s, KeyCode::Up); // Overlap
    for _ in 0..10 {
        key(&mut s, KeyCode::Backspace);
    }
    typing(&mut s, "0s");
    key(&mut s, KeyCode::Enter);
    let Some(Modal::Confirm(c)) = s.modal() else {
        panic!("a confirmation")
    };
    assert!(c
        .loses
        .as_deref()
        .unwrap()
        .contains("release/2 stop signing now"));
}

#[test]
fn bundle_export_lists_what_it_trusts_and_revokes_before_writing() {
    let mut s = fixture((100, 30));
    s.keys.versions[0] = version("ci", 1, "soft", "compromised", "2026-11-20T06:00:00.000Z");
    s.tab = Tab::Keys;
    key(&mut s, KeyCode::Char('b'));
    // No scope: refused in the form.
    key(&mut s, KeyCode::Enter);
    let Some(Modal::Form(f)) = s.modal() else {
        panic!("the form stays")
    };
    assert!(f.error.as_deref().unwrap().contains("scope"));
    // Every key (empty Keys), one scope.
    for _ in 0..10 {
        key(&mut s, KeyCode::Backspace);
    }
    key(&mut s, KeyCode::Tab);
    typing(&mut s, "registry.example.com/team/app");
    key(&mut s, KeyCode::Enter);
    let Some(Modal::Confirm(c)) = s.modal() else {
        panic!("a confirmation")
    };
    assert!(
        c.question.contains("trusts release/2 (active)"),
        "{}",
        c.question
    );
    assert!(!c.question.contains("release/1"), "deactivated: left out");
    assert!(
        c.question.contains("revokes ci/1 (compromised)"),
        "{}",
        c.question
    );
    assert!(c.question.contains("NOT signed"));
    key(&mut s, KeyCode::Char('y'));
    let Job::ExportBundle {
        keys,
        scopes,
        sign_with,
        keep_deactivated,
        ..
    } = last_job(&s).1
    else {
        panic!("an export")
    };
    assert!(keys.is_empty());
    assert_eq!(scopes, vec!["registry.example.com/team/app".to_string()]);
    assert_eq!(sign_with, None);
    assert!(!keep_deactivated);
}

#[test]
fn resign_plans_first_then_asks_naming_the_images() {
    let mut s = fixture((100, 30));
    s.tab = Tab::Keys;
    key(&mut s, KeyCode::Char('G'));
    key(&mut s, KeyCode::Char('S'));
    key(&mut s, KeyCode::Enter);
    let (id, job) = last_job(&s);
    assert!(matches!(job, Job::PlanResign { ref key, .. } if key == "release"));
    assert_eq!(worker::lane(&job), "network");
    let newest = s.keys.versions[2].clone();
    dispatch(
        &mut s,
        Action::ResignPlanned {
            id,
            key: "release".into(),
            newest: Box::new(newest),
            insecure: vec![],
            items: vec![
                crate::images::ResignItem {
                    image: "registry.example.com/app@sha256:aa".into(),
                    signed_by: vec!["release/1".into()],
                    action: "would sign".into(),
                },
                crate::images::ResignItem {
                    image: "registry.example.com/app@sha256:bb".into(),
                    signed_by: vec!["release/1".into()],
                    action: "gone".into(),
                },
            ],
        },
    );
    let Some(Modal::Confirm(c)) = s.modal() else {
        panic!("a confirmation")
    };
    assert!(c
        .question
        .contains("Add release/2's signature to 1 image(s)"));
    assert!(c.question.contains("sha256:aa") && !c.question.contains("sha256:bb"));
    key(&mut s, KeyCode::Char('y'));
    let job = last_job(&s).1;
    assert_eq!(
        job,
        Job::Resign {
            key: "release".into(),
            token: "hsm".into(),
            insecure: vec![]
        }
    );
    assert_eq!(worker::lane(&job), "token:hsm");
}

// ---- YubiKey administration from the Tokens screen ---------------------------------------------

fn yubikey(serial: u32) -> TokenEntry {
    let info = json!({
        "kind": "piv", "label": format!("YubiKey {serial}"), "manufacturer": "Yubico",
        "model": "YubiKey 5 (PIV)", "serial": serial.to_string(), "firmware": "5.4.3",
        "pin": {"tries_left": 3, "count_low": false, "final_try": false, "locked": false, "not_initialized": false},
        "hardware": true, "algorithms": ["p256", "p384", "rsa2048"], "puk_tries_left": 1,
        "warnings": ["the factory default PIN (123456) is still set: change it (c)"],
    });
    TokenEntry {
        name: format!("yubikey:{serial}"),
        kind: crate::token::TokenKind::Piv,
        source: "discovered",
        module: None,
        info: Some(serde_json::from_value(info).unwrap()),
        error: None,
    }
}

#[test]
fn yubikey_administration_from_the_tokens_screen() {
    let mut s = fixture((120, 36));
    s.tokens.entries.push(yubikey(12345678));
    // On a PKCS#11 token the PIV keys explain themselves and do nothing.
    key(&mut s, KeyCode::Char('c'));
    assert!(s.outbox.iter().all(|r| !matches!(r.job, Job::Piv { .. })));
    assert!(s.message.as_deref().unwrap().contains("not a YubiKey"));
    key(&mut s, KeyCode::Char('G'));
    let screen = render(&s);
    assert!(screen.contains("1 tries left"), "{screen}");
    assert!(
        screen.contains("WARNING    the factory default PIN"),
        "{screen}"
    );
    key(&mut s, KeyCode::Char('c'));
    let (_, job) = last_job(&s);
    assert_eq!(
        job,
        Job::Piv {
            token: "yubikey:12345678".into(),
            op: crate::tui::job::PivOp::ChangePin
        }
    );
    assert_eq!(worker::lane(&job), "token:yubikey:12345678");
    // A new management key asks first.
    key(&mut s, KeyCode::Char('m'));
    let Some(Modal::Confirm(c)) = s.modal() else {
        panic!("a confirmation")
    };
    assert!(c.question.contains("new random one"));
    key(&mut s, KeyCode::Char('y'));
    assert!(matches!(
        last_job(&s).1,
        Job::Piv {
            op: crate::tui::job::PivOp::SetManagementKey,
            ..
        }
    ));
    // Retry counts: validated in the form.
    key(&mut s, KeyCode::Char('n'));
    key(&mut s, KeyCode::Backspace);
    typing(&mut s, "0");
    key(&mut s, KeyCode::Enter);
    let Some(Modal::Form(f)) = s.modal() else {
        panic!("the form stays")
    };
    assert!(f.error.as_deref().unwrap().contains("PIN tries"));
    key(&mut s, KeyCode::Backspace);
    typing(&mut s, "5");
    key(&mut s, KeyCode::Enter);
    assert_eq!(
        last_job(&s).1,
        Job::Piv {
            token: "yubikey:12345678".into(),
            op: crate::tui::job::PivOp::SetRetries { pin: 5, puk: 3 }
        }
    );
    // A PUK prompt is called a PUK, and a new PUK is typed twice.
    let id = s.request(Job::Piv {
        token: "yubikey:12345678".into(),
        op: crate::tui::job::PivOp::ChangePuk,
    });
    let (tx, _rx) = mpsc::sync_channel(1);
    dispatch(
        &mut s,
        Action::SecretNeeded {
            id,
            prompt: SecretPrompt {
                kind: SecretKind::NewPuk,
                token: "yubikey:12345678".into(),
                status: None,
                risky: false,
                puk: true,
            },
            reply: SecretReply(tx),
        },
    );
    let screen = render(&s);
    assert!(screen.contains("New PUK for yubikey:12345678"), "{screen}");
    assert!(screen.contains("repeat"), "{screen}");
}

#[test]
fn attestation_is_offered_for_yubikey_versions_only() {
    let mut s = fixture((100, 30));
    s.tokens.entries.push(yubikey(12345678));
    s.keys.versions.push(version(
        "release",
        3,
        "yubikey:12345678",
        "active",
        "2026-11-25T05:30:00.000Z",
    ));
    s.keys.created.push(NOW - 3600);
    s.tab = Tab::Keys;
    key(&mut s, KeyCode::Char('A')); // ci/1, software
    assert!(s
        .message
        .as_deref()
        .unwrap()
        .contains("only YubiKeys attest"));
    key(&mut s, KeyCode::Char('G'));
    let attested = entry(
        5,
        Event::KeyAttested {
            key: "release".into(),
            version: 3,
            key_id: "3e3e".into(),
            token: "yubikey:12345678".into(),
            serial: "12345678".into(),
            object_id: "9c".into(),
            verified: true,
            attested_serial: Some(12_345_678),
            firmware: Some("5.4.3".into()),
            pin_policy: Some("always".into()),
            touch_policy: Some("cached".into()),
            problems: vec![],
        },
        Outcome::Ok,
    );
    s.audit.index.push(&attested, 1500);
    s.keys.history_for = None;
    crate::tui::update::refresh_history(&mut s);
    let screen = render(&s);
    assert!(
        screen.contains("attested   verified (YubiKey 12345678)"),
        "{screen}"
    );
    key(&mut s, KeyCode::Char('A'));
    assert_eq!(
        last_job(&s).1,
        Job::Attest {
            key: "release".into(),
            version: 3,
            token: "yubikey:12345678".into()
        }
    );
}

// ---- the Ceremony screen -----------------------------------------------------------------------

fn rotate_ceremony() -> crate::ceremony::Ceremony {
    use crate::ceremony::participants::{Participants, Person};
    let person = |n: &str| Person {
        name: n.into(),
        recipient: None,
        share: None,
        identity: None,
    };
    let people = Participants {
        administrator: vec![person("ada")],
        custodians: vec![],
        witnesses: vec![person("walter")],
    };
    let params = [
        ("key".to_string(), "release".to_string()),
        ("scopes".to_string(), "registry.example.com/app".to_string()),
    ]
    .into_iter()
    .collect();
    crate::ceremony::Ceremony::load(
        crate::ceremony::Source::resolve("rotate").unwrap(),
        &params,
        people,
        std::path::Path::new("/nonexistent/keyward-ceremony"),
    )
    .unwrap()
}

#[test]
fn the_ceremony_screen_lists_scripts_then_walks_steps_with_acknowledgements() {
    let mut s = fixture((120, 36));
    key(&mut s, KeyCode::Char('5'));
    assert_eq!(s.tab, Tab::Ceremony);
    let screen = render(&s);
    for name in ["root-key", "rotate", "restore-drill"] {
        assert!(screen.contains(name), "{screen}");
    }
    // Nothing open: the step keys explain themselves.
    key(&mut s, KeyCode::Char('n'));
    assert!(s.message.as_deref().unwrap().contains("no ceremony open"));

    let id = s.request(Job::CeremonyResume {
        progress: "/nonexistent/keyward-ceremony/progress.json".into(),
    });
    s.ceremony.running = Some(id);
    dispatch(
        &mut s,
        Action::CeremonyLoaded {
            id,
            ceremony: Box::new(rotate_ceremony()),
            failed: None,
            info: None,
        },
    );
    assert_eq!(s.ceremony.running, None);
    let screen = render(&s);
    assert!(screen.contains("rotate — step 1 of 4"), "{screen}");
    assert!(
        screen.contains("☐ ada (administrator) — press a"),
        "{screen}"
    );
    assert!(screen.contains("checklist"), "{screen}");
    insta::assert_snapshot!("ceremony_screen", screen);
    // Running needs every acknowledgement first.
    key(&mut s, KeyCode::Char('n'));
    assert!(s
        .message
        .as_deref()
        .unwrap()
        .contains("still needs the acknowledgement of ada (administrator), walter (witness)"));
    // The acknowledgement form: the person must type their own name.
    key(&mut s, KeyCode::Char('a'));
    key(&mut s, KeyCode::Tab);
    typing(&mut s, "walter");
    key(&mut s, KeyCode::Enter);
    let Some(Modal::Form(f)) = s.modal() else {
        panic!("the form stays")
    };
    assert!(f.error.as_deref().unwrap().contains("not ada's name"));
    for _ in 0..6 {
        key(&mut s, KeyCode::Backspace);
    }
    typing(&mut s, "ada");
    key(&mut s, KeyCode::Enter);
    let Job::CeremonyAck { person, typed, .. } = last_job(&s).1 else {
        panic!("an acknowledgement job")
    };
    assert_eq!((person.as_str(), typed.as_str()), ("ada", "ada"));
    assert_eq!(worker::lane(&last_job(&s).1), "ceremony");
    // A failed step comes back with the saved state and the error.
    let id = s.request(Job::CeremonyStep {
        progress: "/nonexistent/keyward-ceremony/progress.json".into(),
    });
    dispatch(
        &mut s,
        Action::CeremonyLoaded {
            id,
            ceremony: Box::new(rotate_ceremony()),
            failed: Some((
                "step rotate failed: cancelled".into(),
                Some("run it again".into()),
            )),
            info: None,
        },
    );
    let Some(Modal::Error { title, message }) = s.modal() else {
        panic!("an error")
    };
    assert_eq!(title, "The ceremony stopped");
    assert!(message.contains("run it again"));
}

#[test]
fn a_touch_request_shows_on_the_job_line_while_the_screen_stays_live() {
    let mut s = fixture((100, 30));
    s.tokens.entries.push(yubikey(12345678));
    s.tab = Tab::Keys;
    let id = s.request(Job::SignFile {
        key: "release".into(),
        version: 3,
        token: "yubikey:12345678".into(),
        input: "notes.txt".into(),
        output: "notes.sig".into(),
    });
    dispatch(
        &mut s,
        Action::Notified {
            id,
            message: "touch your YubiKey (serial 12345678) if it blinks; keyward waits about 15 s"
                .into(),
        },
    );
    let screen = render(&s);
    assert!(
        screen.contains("signing with release/3: touch your YubiKey (serial 12345678)"),
        "{screen}"
    );
    // The person can still move and switch screens while the card waits.
    key(&mut s, KeyCode::Char('j'));
    assert_eq!(s.keys.cursor.selected, 1);
    key(&mut s, KeyCode::Char('4'));
    assert_eq!(s.tab, Tab::Audit);
    assert!(render(&s).contains("touch your YubiKey"));
    // A notice for a job that is gone is dropped.
    dispatch(
        &mut s,
        Action::Notified {
            id: id + 100,
            message: "stale".into(),
        },
    );
    assert!(!render(&s).contains("stale"));
}
