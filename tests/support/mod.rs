//! Test parts shared by the integration tests: a private SoftHSM2, a fresh keyward home, and a
//! runner for the real `keyward` binary.
#![allow(dead_code, clippy::unwrap_used)]

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
            "token",
            "init",
            "--module",
            SOFTHSM_MODULE,
            "--label",
            name,
            "--name",
            name,
        ]);
    }

    /// Lines of `pkcs11-tool --list-objects` for the token labelled `label` (a third-party view).
    pub fn pkcs11_tool_objects(&self, label: &str) -> String {
        let out = Command::new("pkcs11-tool")
            .env("SOFTHSM2_CONF", self.softhsm_conf())
            .args([
                "--module",
                SOFTHSM_MODULE,
                "--token-label",
                label,
                "--login",
                "--pin",
                USER_PIN,
                "--list-objects",
            ])
            .output()
            .expect("pkcs11-tool (apt-get install opensc)");
        assert!(
            out.status.success(),
            "pkcs11-tool: {}",
            String::from_utf8_lossy(&out.stderr)
        );
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
        c.args([
            "pkeyutl", "-verify", "-pubin", "-inkey", "pub.pem", "-rawin", "-in", "data",
            "-sigfile", "sig",
        ]);
    } else {
        c.args([
            "dgst",
            "-sha256",
            "-verify",
            "pub.pem",
            "-signature",
            "sig",
            "data",
        ]);
    }
    let out = c.current_dir(&p).output().expect("openssl");
    let text = String::from_utf8_lossy(&out.stdout);
    out.status.success()
        && (text.contains("Verified OK") || text.contains("Signature Verified Successfully"))
}

pub fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

pub const P11KIT_CLIENT: &str = "/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so";

/// SoftHSM2 served by `p11-kit server` in its own process, the way a network HSM runs apart
/// from its clients: killing a client does not kill the token in the middle of a write.
pub struct P11Server {
    pub pid: u32,
    pub address: String,
    child: std::process::Child,
}

impl P11Server {
    /// Initialises a SoftHSM2 token `label` in `world` with softhsm2-util, serves it, and
    /// registers it in keyward.toml as `name` through p11-kit's client module.
    pub fn start(world: &World, label: &str, name: &str) -> Self {
        let st = Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", world.softhsm_conf())
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
            .stdout(Stdio::null())
            .status()
            .expect("softhsm2-util");
        assert!(st.success());
        let sock = world.path().join("p11.sock");
        let child = Command::new("p11-kit")
            .env("SOFTHSM2_CONF", world.softhsm_conf())
            .args(["server", "-f", "--provider", SOFTHSM_MODULE, "-n"])
            .arg(&sock)
            .arg(format!("pkcs11:token={label}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("p11-kit server (apt-get install p11-kit p11-kit-modules)");
        let start = std::time::Instant::now();
        while !sock.exists() {
            assert!(
                start.elapsed().as_secs() < 20,
                "p11-kit server did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        std::fs::write(
            world.home().join("keyward.toml"),
            format!("[[token]]\nname = \"{name}\"\nkind = \"pkcs11\"\nmodule = \"{P11KIT_CLIENT}\"\nlabel = \"{label}\"\n"),
        )
        .unwrap();
        P11Server {
            pid: child.id(),
            address: format!("unix:path={}", sock.display()),
            child,
        }
    }

    /// Labels of the public key objects on the served token, as pkcs11-tool sees them.
    pub fn labels(&self) -> Vec<String> {
        let out = Command::new("pkcs11-tool")
            .env("P11_KIT_SERVER_ADDRESS", &self.address)
            .args([
                "--module",
                P11KIT_CLIENT,
                "--list-objects",
                "--type",
                "pubkey",
            ])
            .output()
            .expect("pkcs11-tool");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut labels: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.trim_start().strip_prefix("label:"))
            .map(|l| l.trim().to_owned())
            .collect();
        labels.sort();
        labels
    }
}

impl Drop for P11Server {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.pid.to_string()).status();
        let _ = self.child.wait();
    }
}

/// An age identity made by the Debian `age-keygen` in `dir`; returns (identity file, recipient).
pub fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let p = dir.join(format!("{name}.key"));
    let out = Command::new("age-keygen")
        .arg("-o")
        .arg(&p)
        .output()
        .expect("age-keygen (apt-get install age)");
    assert!(out.status.success(), "{}", stderr(&out));
    let r = Command::new("age-keygen")
        .arg("-y")
        .arg(&p)
        .output()
        .unwrap();
    (p, String::from_utf8(r.stdout).unwrap().trim().to_owned())
}
