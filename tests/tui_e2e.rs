//! End to end: the real `keyward` console in tmux against a private SoftHSM2 token and a
//! private registry. Open it, see the token, generate a key through the PIN modal, see it on
//! the Keys screen, sign a file and an image, see the entries on the Audit screen, quit; then
//! `keyward audit verify` passes and `keyward image verify` accepts the image.
#![allow(clippy::unwrap_used)]

#[path = "support/piv.rs"]
mod piv;
#[path = "support/registry.rs"]
mod registry;
mod support;

use std::process::Command;
use std::time::{Duration, Instant};
use support::{World, USER_PIN};

/// A tmux server of our own (its own socket), killed when the test ends, however it ends.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(world: &World, width: u16, height: u16, insecure: &str) -> Tmux {
        Self::start_env(world, width, height, insecure, "")
    }

    /// With `extra` environment assignments (`NAME='value' ...`).
    fn start_env(world: &World, width: u16, height: u16, insecure: &str, extra: &str) -> Tmux {
        let socket = format!("keyward-e2e-{}", support::rand_suffix());
        let cmd = format!(
            "env -u KEYWARD_PIN -u KEYWARD_SO_PIN -u KEYWARD_PASSPHRASE -u KEYWARD_PUK TERM=xterm-256color {extra} KEYWARD_INSECURE_REGISTRIES='{insecure}' KEYWARD_HOME='{}' SOFTHSM2_CONF='{}' '{}'",
            world.home().display(),
            world.softhsm_conf().display(),
            env!("CARGO_BIN_EXE_keyward"),
        );
        let st = Command::new("tmux")
            .args(["-L", &socket, "-f", "/dev/null", "new-session", "-d"])
            .args(["-x", &width.to_string(), "-y", &height.to_string()])
            .arg(cmd)
            .status()
            .expect("tmux (apt-get install tmux)");
        assert!(st.success(), "tmux new-session failed");
        Tmux { socket }
    }

    fn tmux(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .unwrap()
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.tmux(&["capture-pane", "-p"]).stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys"];
        args.extend_from_slice(keys);
        assert!(self.tmux(&args).status.success());
    }

    /// Types text literally (no key-name lookup).
    fn type_text(&self, text: &str) {
        assert!(self.tmux(&["send-keys", "-l", text]).status.success());
    }

    /// Polls the screen until every needle is on it.
    fn wait_for(&self, needles: &[&str]) -> String {
        let start = Instant::now();
        loop {
            let s = self.screen();
            if needles.iter().all(|n| s.contains(n)) {
                return s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "timed out waiting for {needles:?}; the screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Polls the screen until the needle is gone.
    fn wait_gone(&self, needle: &str) {
        let start = Instant::now();
        while self.screen().contains(needle) {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "timed out waiting for {needle:?} to go"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn alive(&self) -> bool {
        self.tmux(&["has-session"]).status.success()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
    }
}

#[test]
fn console_generates_signs_and_audits_through_the_pin_modal() {
    let world = World::new();
    world.init_hsm("hsm");
    let data = world.path().join("release-notes.txt");
    std::fs::write(&data, b"keyward 1.0\n").unwrap();

    let reg = registry::TestRegistry::start();
    let digest = reg.push_image("app", "1.0");
    let image = reg.image("app", "1.0");

    let t = Tmux::start(&world, 100, 30, &reg.host());
    // Tokens: the SoftHSM2 token, hardware, and the software keystore with its badge.
    let s = t.wait_for(&["SoftHSM v2", "hardware", "SOFTWARE", "2 tokens"]);
    assert!(s.contains("software — not hardware protected"), "{s}");

    // Generate through the form and the PIN modal.
    t.keys(&["g"]);
    t.wait_for(&["Generate a key", "‹ hsm ›"]);
    t.type_text("release");
    t.keys(&["Enter"]);
    let s = t.wait_for(&["PIN for hsm", "status ok"]);
    assert!(!s.contains(USER_PIN));
    t.type_text(USER_PIN);
    let s = t.wait_for(&["••••"]);
    assert!(!s.contains(USER_PIN), "the PIN is masked:\n{s}");
    t.keys(&["Enter"]);
    let s = t.wait_for(&["generated release/1 (p256) on hsm", "Keys (1 version)"]);
    assert!(s.contains("release/1") && s.contains("active"), "{s}");
    assert!(s.contains("-----BEGIN PUBLIC KEY-----"), "{s}");

    // Sign a file with it: the worker kept its session, so no second PIN.
    t.keys(&["s"]);
    t.wait_for(&["Sign a file with release/1"]);
    t.type_text(&data.display().to_string());
    t.keys(&["Enter"]);
    t.wait_for(&["signed with release/1: signature in"]);
    let sig = world.path().join("release-notes.txt.sig");
    assert!(std::fs::metadata(&sig).unwrap().len() > 8);

    // Images: sign the image with the key; the registry is plain HTTP (prefilled).
    t.keys(&["3"]);
    t.wait_for(&["Image signatures"]);
    t.keys(&["s"]);
    t.wait_for(&["Sign container images", "‹ release ›"]);
    t.type_text(&image);
    t.keys(&["Enter"]);
    let start = Instant::now();
    loop {
        let s = t.screen();
        if s.contains("secret [") {
            // A second session on the token may ask again.
            t.type_text(USER_PIN);
            t.keys(&["Enter"]);
        }
        if s.contains("1 signed, 0 failed") {
            assert!(s.contains("signed and recorded"), "{s}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "image signing:\n{s}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // And verify it from the console: who signed, with the provenance.
    t.keys(&["v"]);
    t.wait_for(&["Verify a container image"]);
    t.type_text(&image);
    t.keys(&["Enter"]);
    let s = t.wait_for(&["✔ key id", "release/1 (active)"]);
    assert!(s.contains(&digest[..20]), "{s}");

    // Audit: the entries, newest first, and the chain badge.
    t.keys(&["4"]);
    let s = t.wait_for(&[
        "key_generated",
        "signed file",
        "image_signed",
        "chain verified up to entry",
    ]);
    let signed = s.find("signed file").unwrap();
    let generated = s.find("generated release/1").unwrap();
    assert!(signed < generated, "newest first:\n{s}");

    // Help lists this screen's bindings.
    t.keys(&["?"]);
    t.wait_for(&["Key bindings", "Audit screen", "filter by key"]);
    t.keys(&["Escape"]);
    // (Esc followed at once by a key would read as Alt+key.)
    t.wait_gone("Key bindings");

    t.keys(&["q"]);
    let start = Instant::now();
    while t.alive() {
        assert!(start.elapsed() < Duration::from_secs(10), "q did not quit");
        std::thread::sleep(Duration::from_millis(50));
    }

    let host = reg.host();
    world.ok(&[
        "image",
        "verify",
        &image,
        "--key",
        "release",
        "--insecure-registry",
        &host,
    ]);
    let out = world.ok(&["audit", "verify"]);
    assert!(
        out.contains("verified") || out.contains("OK") || out.contains("ok"),
        "{out}"
    );
    let list = world.ok(&["key", "list"]);
    assert!(
        list.contains("release/1") && list.contains("active"),
        "{list}"
    );
    // A third party sees the key on the token.
    assert!(world.pkcs11_tool_objects("hsm").contains("release/1"));
}

#[test]
fn console_wrong_pin_shows_tries_and_cancel_leaves_no_key() {
    let world = World::new();
    world.init_hsm("hsm");
    let t = Tmux::start(&world, 80, 24, "");
    t.wait_for(&["SoftHSM v2"]);
    t.keys(&["g"]);
    t.wait_for(&["Generate a key"]);
    t.type_text("ci");
    t.keys(&["Enter"]);
    t.wait_for(&["PIN for hsm"]);
    t.type_text("0000");
    t.keys(&["Enter"]);
    let s = t.wait_for(&["wrong PIN for hsm", "failed"]);
    assert!(
        s.contains("error: wrong PIN"),
        "status line names the error:\n{s}"
    );
    t.keys(&["Enter"]);
    // Again, and cancel at the PIN prompt: the PIN status now warns before typing.
    t.keys(&["g"]);
    t.wait_for(&["Generate a key"]);
    t.type_text("ci");
    t.keys(&["Enter"]);
    t.wait_for(&["PIN for hsm", "a wrong PIN was entered"]);
    t.keys(&["Escape"]);
    t.wait_for(&["cancelled"]);
    t.wait_gone("secret [");
    t.keys(&["C-c"]);
    let start = Instant::now();
    while t.alive() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "Ctrl-C did not quit"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let list = world.ok(&["key", "list"]);
    assert!(!list.contains("ci/"), "{list}");
    world.ok(&["audit", "verify"]);
}

#[test]
fn console_initialises_a_softhsm_token_from_the_tokens_screen() {
    let world = World::new();
    let t = Tmux::start(&world, 100, 30, "");
    t.wait_for(&["soft", "1 token"]);
    t.keys(&["i"]);
    t.wait_for(&["Initialise a PKCS#11 token", "libsofthsm2.so"]);
    t.keys(&["Enter"]);
    t.wait_for(&["SO PIN for hsm"]);
    t.type_text(support::SO_PIN);
    t.keys(&["Enter"]);
    t.wait_for(&["New user PIN for hsm", "repeat"]);
    t.type_text(USER_PIN);
    t.keys(&["Enter"]);
    t.type_text("9999");
    t.keys(&["Enter"]);
    t.wait_for(&["the two entries differ"]);
    t.type_text(USER_PIN);
    t.keys(&["Enter"]);
    t.type_text(USER_PIN);
    t.keys(&["Enter"]);
    t.wait_for(&["token hsm initialised", "2 tokens", "SoftHSM v2"]);
    t.keys(&["q"]);
    // The CLI sees it, and the user PIN works.
    let list = world.ok(&["token", "list"]);
    assert!(
        list.contains("hsm") && list.contains("SoftHSM v2"),
        "{list}"
    );
    world.ok(&["key", "generate", "k", "--token", "hsm"]);
    world.ok(&["audit", "verify"]);
}

/// Answers a PIN modal whenever one is up, until `done` is on the screen.
fn pin_until(t: &Tmux, done: &[&str]) -> String {
    let start = Instant::now();
    loop {
        let s = t.screen();
        if done.iter().all(|n| s.contains(n)) {
            return s;
        }
        if s.contains("PIN for hsm") && s.contains("secret [") && !s.contains("secret [•") {
            t.type_text(USER_PIN);
            t.keys(&["Enter"]);
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {done:?}; the screen:\n{s}"
        );
        std::thread::sleep(Duration::from_millis(150));
    }
}

#[test]
fn console_rotates_resigns_exports_a_bundle_and_marks_a_compromise() {
    let world = World::new();
    world.init_hsm("hsm");
    let reg = registry::TestRegistry::start();
    let host = reg.host();
    reg.push_image("app", "1.0");
    let image = reg.image("app", "1.0");
    world.ok(&["key", "generate", "release", "--token", "hsm"]);
    world.ok(&[
        "key",
        "policy",
        "release",
        "--rotate-every",
        "90d",
        "--overlap",
        "14d",
    ]);
    world.ok(&[
        "image",
        "sign",
        &image,
        "--key",
        "release",
        "--insecure-registry",
        &host,
    ]);

    let t = Tmux::start(&world, 150, 40, &host);
    t.wait_for(&["SoftHSM v2"]);
    t.keys(&["2"]);
    // The policy and the next rotation are on the Keys screen.
    let s = t.wait_for(&["Keys (1 version)", "DUE", "rotate in", "rotate every 90d"]);
    assert!(s.contains("overlap 14d"), "{s}");

    // Rotate: the form, then a confirmation naming the overlap, then the PIN.
    t.keys(&["R"]);
    t.wait_for(&["Rotate release", "‹ hsm ›", "‹ p256 ›"]);
    t.keys(&["Enter"]);
    let s = t.wait_for(&["Generate a new version of release (p256) on hsm"]);
    assert!(s.contains("release/1 stay(s) active for 14d"), "{s}");
    t.keys(&["y"]);
    let s = pin_until(&t, &["Rotated release", "release/1 stays active until"]);
    assert!(s.contains("release/2 is active on hsm"), "{s}");
    t.keys(&["Enter"]);
    let s = t.wait_for(&["Keys (2 versions)", "overlap 13d"]);
    assert!(!s.contains(USER_PIN), "{s}");

    // Re-sign: a dry run first, then a confirmation naming the image, then the signing.
    t.keys(&["S"]);
    t.wait_for(&["Re-sign images with the newest version of release"]);
    t.keys(&["Enter"]);
    let s = t.wait_for(&["Add release/2's signature to 1 image(s)"]);
    assert!(s.contains("signed by release/1"), "{s}");
    t.keys(&["y"]);
    pin_until(&t, &["Re-signed with release/2", "1 image(s) now carry"]);
    t.keys(&["Enter"]);
    t.wait_gone("Re-signed with release/2");

    // Export a bundle: the confirmation lists what it trusts.
    let dir = world.path().join("bundle-new");
    t.keys(&["b"]);
    t.wait_for(&["Export a distribution bundle"]);
    t.keys(&["Tab"]);
    t.type_text(&format!("{host}/app"));
    t.keys(&["Tab"]);
    for _ in 0..40 {
        t.keys(&["BSpace"]);
    }
    t.type_text(&dir.display().to_string());
    t.wait_for(&["bundle-new"]);
    t.keys(&["Enter"]);
    let s = t.wait_for(&["Export a bundle ", "Write a bundle to", "y yes"]);
    assert!(s.contains("trusts"), "{s}");
    t.keys(&["y"]);
    let s = t.wait_for(&["trusts  release/1", "trusts  release/2", "NOT signed"]);
    assert!(
        !s.contains("WARNING"),
        "every image carries release/2:\n{s}"
    );
    t.keys(&["Enter"]);

    // Mark release/1 compromised: a reason is required, and the confirmation says what it costs.
    t.keys(&["Home"]);
    t.keys(&["t"]);
    t.wait_for(&["Change the state of release/1 (active)", "‹ suspended ›"]);
    t.keys(&["Right", "Right"]);
    t.wait_for(&["‹ compromised ›"]);
    t.keys(&["Enter"]);
    t.wait_for(&["say why (Reason)"]);
    t.keys(&["Tab"]);
    t.type_text("laptop stolen");
    t.keys(&["Enter"]);
    let s = t.wait_for(&["Mark release/1 COMPROMISED since", "What is at stake"]);
    assert!(s.contains("revoked in every bundle"), "{s}");
    t.keys(&["y"]);
    t.wait_for(&["release/1 is now compromised"]);

    t.keys(&["q"]);
    let start = Instant::now();
    while t.alive() {
        assert!(start.elapsed() < Duration::from_secs(10), "q did not quit");
        std::thread::sleep(Duration::from_millis(50));
    }

    // What the console did, as the CLI and a verifier see it.
    let list: serde_json::Value =
        serde_json::from_str(&world.ok(&["key", "list", "--output", "json"])).unwrap();
    let state = |n: u64| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|v| v["key"] == "release" && v["version"] == n)
            .map(|v| v["state"].as_str().unwrap().to_owned())
            .unwrap()
    };
    assert_eq!(state(1), "compromised");
    assert_eq!(state(2), "active");
    let out = world.ok(&["bundle", "verify", dir.to_str().unwrap()]);
    assert!(out.contains("trusts 2 key version(s)"), "{out}");
    world.ok(&[
        "image",
        "verify",
        &image,
        "--bundle",
        dir.to_str().unwrap(),
        "--insecure-registry",
        &host,
    ]);
    // The image carries release/2's signature (added by the re-sign): release/2 alone admits it.
    world.ok(&[
        "image",
        "verify",
        &image,
        "--key",
        "release/2",
        "--insecure-registry",
        &host,
    ]);
    let audit = world.ok(&["audit", "show", "--output", "json"]);
    assert!(audit.contains("laptop stolen"), "the reason is audited");
    assert!(audit.contains("\"rotated\""), "{audit}");
    assert!(!audit.contains(USER_PIN));
    world.ok(&["audit", "verify"]);
}

#[test]
fn console_changes_a_yubikey_pin_and_shows_its_warnings() {
    let w = piv::PivWorld::new(&[32_000_001]);
    let card = w.token(32_000_001);
    w.trust_test_root();
    w.ok(&["key", "generate", "release", "--token", &card]);
    let t = Tmux::start_env(
        &w.world,
        120,
        36,
        "",
        &format!("PCSCLITE_CSOCK_NAME='{}'", w.cards.socket),
    );
    t.wait_for(&[&card]);
    // Select the card (it is also listed through the ykcs11 and OpenSC PKCS#11 modules).
    let name = format!("name       {card}");
    let start = Instant::now();
    while !t.screen().contains(&name) {
        assert!(start.elapsed() < Duration::from_secs(20), "{}", t.screen());
        t.keys(&["j"]);
        std::thread::sleep(Duration::from_millis(200));
    }
    // The card's state, with the loud default-credential warnings.
    let s = t.wait_for(&["YubiKey 5 (PIV)", "WARNING", "3 tries left"]);
    assert!(s.contains("factory default 123456"), "{s}");

    // Change the PIN: the current one, then the new one twice, all masked.
    t.keys(&["c"]);
    t.wait_for(&[&format!("PIN for {card}")]);
    t.type_text(piv::PIN);
    t.keys(&["Enter"]);
    t.wait_for(&[&format!("New user PIN for {card}"), "repeat"]);
    t.type_text("246810");
    t.keys(&["Enter"]);
    t.wait_for(&["repeat [▏"]);
    t.type_text("246810");
    let s = t.screen();
    assert!(!s.contains("246810"), "{s}");
    t.keys(&["Enter"]);
    t.wait_for(&[&format!("the PIN of {card} is changed")]);
    t.keys(&["Enter"]);
    t.wait_gone("Enter or Esc closes");

    // Attestation from the Keys screen: the card's chain to the (test) root the home trusts.
    t.keys(&["2"]);
    t.wait_for(&["Keys (1 version)", "release/1"]);
    t.keys(&["A"]);
    let start = Instant::now();
    loop {
        let s = t.screen();
        if s.contains("Attestation of release/1") {
            assert!(
                s.contains("VERIFIED: release/1 was generated on the YubiKey"),
                "{s}"
            );
            assert!(s.contains("attested serial 32000001"), "{s}");
            break;
        }
        if s.contains("PIN for") && s.contains("secret [▏") {
            t.type_text("246810");
            t.keys(&["Enter"]);
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{s}");
        std::thread::sleep(Duration::from_millis(150));
    }
    t.keys(&["Enter"]);
    t.wait_for(&["attested   verified"]);
    t.keys(&["q"]);
    let start = Instant::now();
    while t.alive() {
        assert!(start.elapsed() < Duration::from_secs(10), "q did not quit");
        std::thread::sleep(Duration::from_millis(50));
    }

    // The card took it: the new PIN signs, the old one is refused; the change is audited.
    let data = w.world.path().join("notes.txt");
    std::fs::write(&data, b"notes").unwrap();
    let sign = |pin: &str| {
        w.run_env(
            &[("KEYWARD_PIN", pin)],
            &[
                "key",
                "sign",
                "release",
                "--input",
                data.to_str().unwrap(),
                "--output",
                w.world.path().join("notes.sig").to_str().unwrap(),
            ],
        )
    };
    assert!(!sign(piv::PIN).status.success(), "the old PIN still works");
    let out = sign("246810");
    assert!(out.status.success(), "{}", support::stderr(&out));
    let audit = w.ok(&["audit", "show", "--output", "json"]);
    assert!(
        audit.contains("change_pin") || audit.contains("change-pin"),
        "{audit}"
    );
    assert!(!audit.contains("246810"));
}

/// Acknowledges the current ceremony step as `people`, each typing their own name.
fn acknowledge(t: &Tmux, people: &[&str]) {
    for p in people {
        t.keys(&["a"]);
        t.wait_for(&[&format!("‹ {p} ›"), "Type your name"]);
        t.keys(&["Tab"]);
        t.type_text(p);
        t.keys(&["Enter"]);
        t.wait_for(&[&format!("✔ {p} (")]);
    }
}

#[test]
fn console_walks_a_ceremony_through_a_failed_step_and_a_resume() {
    let world = World::new();
    world.init_hsm("hsm");
    world.ok(&["key", "generate", "release", "--token", "hsm"]);
    let people = world.path().join("people.toml");
    std::fs::write(
        &people,
        "[[administrator]]\nname = \"ada\"\n\n[[witnesses]]\nname = \"walter\"\n",
    )
    .unwrap();
    let dir = world.path().join("rotation-2026");

    let t = Tmux::start(&world, 120, 40, "");
    t.wait_for(&["SoftHSM v2"]);
    t.keys(&["5"]);
    t.wait_for(&["root-key", "rotate", "restore-drill", "How a ceremony runs"]);
    // Start the shipped `rotate` ceremony with the participants file and its parameters.
    t.keys(&["o"]);
    t.wait_for(&["Start a ceremony"]);
    for _ in 0..4 {
        if t.screen().contains("‹ rotate ›") {
            break;
        }
        t.keys(&["Right"]);
        std::thread::sleep(Duration::from_millis(150));
    }
    t.wait_for(&["‹ rotate ›"]);
    let clear = |t: &Tmux, n: usize| {
        for _ in 0..n {
            t.keys(&["BSpace"]);
        }
    };
    t.keys(&["Tab", "Tab"]);
    clear(&t, 30);
    t.type_text(people.to_str().unwrap());
    t.keys(&["Tab"]);
    t.type_text("key=release scopes=registry.example.com/team/app overlap=7d");
    t.keys(&["Tab"]);
    clear(&t, 30);
    t.type_text(dir.to_str().unwrap());
    t.keys(&["Enter"]);
    let s = t.wait_for(&[
        "rotate — step 1 of 4",
        "☐ ada (administrator)",
        "☐ walter (witness)",
    ]);
    assert!(s.contains("checklist"), "{s}");

    // A step runs only once everyone it names has acknowledged it.
    t.keys(&["n"]);
    t.wait_for(&["still needs the acknowledgement of ada (administrator), walter (witness)"]);
    // Someone typing another person's name is refused.
    t.keys(&["a"]);
    t.wait_for(&["‹ ada ›"]);
    t.keys(&["Tab"]);
    t.type_text("walter");
    t.keys(&["Enter"]);
    t.wait_for(&["that is not ada's name"]);
    t.keys(&["Escape"]);
    t.wait_gone("that is not ada's name");
    acknowledge(&t, &["ada", "walter"]);
    t.keys(&["n"]);
    t.wait_for(&["Run \"Agree on the rotation of release\" now?"]);
    t.keys(&["y"]);
    t.wait_for(&["rotate — step 2 of 4"]);

    // Step 2 fails: the PIN is not given. The ceremony stops with its state saved.
    acknowledge(&t, &["ada", "walter"]);
    t.keys(&["n"]);
    t.wait_for(&["Run \"Rotate release\" now?"]);
    t.keys(&["y"]);
    t.wait_for(&["PIN for hsm"]);
    t.keys(&["Escape"]);
    let s = t.wait_for(&["The ceremony stopped"]);
    assert!(s.contains("cancel"), "{s}");
    t.keys(&["Enter"]);
    t.wait_for(&["FAILED (attempt 1)"]);
    t.keys(&["q"]);
    let start = Instant::now();
    while t.alive() {
        assert!(start.elapsed() < Duration::from_secs(10), "q did not quit");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(t);

    // Later, in a new console: resume from the progress file and finish.
    let t = Tmux::start(&world, 120, 40, "");
    t.wait_for(&["SoftHSM v2"]);
    t.keys(&["5"]);
    t.keys(&["O"]);
    t.wait_for(&["Resume a ceremony"]);
    clear(&t, 40);
    t.type_text(dir.join("progress.json").to_str().unwrap());
    t.keys(&["Enter"]);
    t.wait_for(&["rotate — step 2 of 4", "FAILED (attempt 1)"]);
    acknowledge(&t, &["ada", "walter"]);
    t.keys(&["n"]);
    t.wait_for(&["Run \"Rotate release\" now?"]);
    t.keys(&["y"]);
    pin_until(&t, &["rotate — step 3 of 4"]);
    for (step, title) in [
        (4, "Export the bundle, signed by the new version"),
        (0, "Sign an audit checkpoint with the new version"),
    ] {
        // Close a step's result dialog, if it shows one.
        if t.screen().contains("Enter or Esc closes") {
            t.keys(&["Enter"]);
            t.wait_gone("Enter or Esc closes");
        }
        acknowledge(&t, &["ada", "walter"]);
        t.keys(&["n"]);
        t.wait_for(&[&format!("Run \"{title}\" now?")]);
        t.keys(&["y"]);
        if step == 4 {
            pin_until(&t, &["rotate — step 4 of 4"]);
        } else {
            pin_until(&t, &["every step done"]);
        }
    }
    if t.screen().contains("Enter or Esc closes") {
        t.keys(&["Enter"]);
        t.wait_gone("Enter or Esc closes");
    }
    t.keys(&["f"]);
    t.wait_for(&["Sign the transcript of rotate"]);
    t.keys(&["y"]);
    let s = pin_until(&t, &["Ceremony completed", "transcript.json"]);
    assert!(s.contains("chained into the audit log"), "{s}");
    t.keys(&["Enter"]);
    t.keys(&["q"]);
    let start = Instant::now();
    while t.alive() {
        assert!(start.elapsed() < Duration::from_secs(10), "q did not quit");
        std::thread::sleep(Duration::from_millis(50));
    }

    // The transcript verifies, records both attempts of the rotation, and is in the log.
    let out = world.ok(&[
        "ceremony",
        "verify",
        dir.join("transcript.json").to_str().unwrap(),
    ]);
    assert!(
        out.contains("verified") || out.contains("OK") || out.contains("ok"),
        "{out}"
    );
    let t: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("transcript.json")).unwrap())
            .unwrap();
    let rotate = t["transcript"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "rotate")
        .unwrap();
    let attempts = rotate["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{rotate}");
    assert_eq!(attempts[0]["outcome"], "failed");
    assert_eq!(attempts[1]["outcome"], "ok");
    assert!(attempts[1]["acknowledgements"]
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a["method"] == "typed"));
    let list = world.ok(&["key", "list"]);
    assert!(list.contains("release/2"), "{list}");
    world.ok(&["audit", "verify"]);
}
