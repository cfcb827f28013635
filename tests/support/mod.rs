//! Test parts shared by the integration tests: a private SoftHSM2, a fresh keyward home, and a
//! runner for the real `keyward` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
pub const USER_PIN: &str = "1234";
pub const SO_PIN: &str = "5678";

/// A temporary world: a keyward home and a SoftHSM2 token directory with its own config.
pub struct World {
    pub dir: tempfile::TempDir,
}

impl World {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("tokens")).unwrap();
        std::fs::create_dir_all(dir.path().join("home")).unwrap();
        std::fs::write(
            dir.path().join("softhsm2.conf"),
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                dir.path().join("tokens").display()
            ),
        )
        .unwrap();
        World { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }
    pub fn softhsm_conf(&self) -> PathBuf {
        self.dir.path().join("softhsm2.conf")
    }
    pub fn audit_log(&self) -> PathBuf {
        self.home().join("audit.log")
    }

    /// The keyward binary with this world's environment (PINs in the environment, never argv).
    pub fn keyward(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_keyward"));
        c.env_remove("KEYWARD_PIN")
            .env_remove("KEYWARD_SO_PIN")
            .env_remove("KEYWARD_PASSPHRASE")
            .env("KEYWARD_HOME", self.home())
            .env("SOFTHSM2_CONF", self.softhsm_conf())
            .env("KEYWARD_PIN", USER_PIN)
            .env("KEYWARD_SO_PIN", SO_PIN)
            .env("KEYWARD_PASSPHRASE", "correct horse battery")
            .stdin(Stdio::null());
        c
    }

    /// Runs keyward with `args`; returns the output whatever the exit code.
    pub fn run(&self, args: &[&str]) -> Output {
        self.keyward().args(args).output().expect("run keyward")
    }

    /// Runs keyward and panics with its stderr unless it succeeds.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "keyward {args:?} failed ({:?}):\nstdout: {}\nstderr: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `token init` of a SoftHSM2 token registered as `name`.
    pub fn init_hsm(&self, name: &str) {
        self.ok(&[
            "token", "init", "--module", SOFTHSM_MODULE, "--label", name, "--name", name,
        ]);
    }

    /// Lines of `pkcs11-tool --list-objects` for the token labelled `label` (a third-party view).
    pub fn pkcs11_tool_objects(&self, label: &str) -> String {
        let out = Command::new("pkcs11-tool")
            .env("SOFTHSM2_CONF", self.softhsm_conf())
            .args(["--module", SOFTHSM_MODULE, "--token-label", label, "--login", "--pin", USER_PIN, "--list-objects"])
            .output()
            .expect("pkcs11-tool (apt-get install opensc)");
        assert!(out.status.success(), "pkcs11-tool: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `openssl` verification of a signature over `data` made by keyward's rules.
pub fn openssl_verify(dir: &Path, pem: &str, algorithm: &str, data: &[u8], sig: &[u8]) -> bool {
    let p = dir.join(format!("ossl-{}", rand_suffix()));
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(p.join("pub.pem"), pem).unwrap();
    std::fs::write(p.join("data"), data).unwrap();
    std::fs::write(p.join("sig"), sig).unwrap();
    let mut c = Command::new("openssl");
    if algorithm == "ed25519" {
        c.args(["pkeyutl", "-verify", "-pubin", "-inkey", "pub.pem", "-rawin", "-in", "data", "-sigfile", "sig"]);
    } else {
        c.args(["dgst", "-sha256", "-verify", "pub.pem", "-signature", "sig", "data"]);
    }
    let out = c.current_dir(&p).output().expect("openssl");
    let text = String::from_utf8_lossy(&out.stdout);
    out.status.success() && (text.contains("Verified OK") || text.contains("Signature Verified Successfully"))
}

pub fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst))
}
