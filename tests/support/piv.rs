//! Virtual YubiKeys for the PIV tests: `scripts/virtual-piv start --serial N...` with a private
//! state directory (its own pcscd in its own mount and network namespaces, one emulator per
//! card), stopped by the PIDs it recorded when dropped. The script builds the emulator
//! (tools/virtual-piv) when needed.
#![allow(dead_code, clippy::unwrap_used)]

use crate::support::World;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const PIN: &str = "123456";
pub const PUK: &str = "12345678";

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/virtual-piv")
}

/// A set of virtual cards behind a private pcscd.
pub struct VirtualPiv {
    dir: tempfile::TempDir,
    /// The private pcscd's socket: clients need it as PCSCLITE_CSOCK_NAME.
    pub socket: String,
    pub serials: Vec<u32>,
}

impl VirtualPiv {
    /// Cards with the emulator's default firmware (5.4.3: GET METADATA answered).
    pub fn start(serials: &[u32]) -> Self {
        Self::start_with(serials, &[])
    }

    /// Cards started with extra `scripts/virtual-piv start` options (e.g. `--firmware 5.2.7`).
    pub fn start_with(serials: &[u32], options: &[&str]) -> Self {
        // Short path: libpcsclite's socket path must fit in a sockaddr_un.
        let dir = tempfile::Builder::new()
            .prefix("vpiv")
            .tempdir_in("/tmp")
            .unwrap();
        let mut cmd = Command::new("bash");
        cmd.arg(script()).arg("start");
        for s in serials {
            cmd.arg("--serial").arg(s.to_string());
        }
        cmd.args(options);
        let out = cmd
            .env("VIRTUAL_PIV_DIR", dir.path())
            .output()
            .expect("scripts/virtual-piv (needs bash)");
        assert!(
            out.status.success(),
            "scripts/virtual-piv start failed (apt-get install pcscd vsmartcard-vpcd libclang-dev; scripts/install-deps):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let env = std::fs::read_to_string(dir.path().join("env")).unwrap();
        let socket = env
            .trim()
            .strip_prefix("export PCSCLITE_CSOCK_NAME=")
            .unwrap()
            .to_owned();
        VirtualPiv {
            dir,
            socket,
            serials: serials.to_vec(),
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The cards' TEST attestation root (scripts/virtual-piv made it in the state dir).
    pub fn attestation_root(&self) -> PathBuf {
        self.dir.path().join("attestation-ca/root-ca.pem")
    }

    /// The full PC/SC reader name of a card (for ykman / yubico-piv-tool `--reader`).
    pub fn reader(&self, serial: u32) -> String {
        format!("Yubico YubiKey CCID vpiv-{serial} 00 00")
    }

    /// `yubico-piv-tool` against one card: a third-party view of what keyward did.
    pub fn piv_tool(&self, serial: u32, args: &[&str]) -> Output {
        Command::new("yubico-piv-tool")
            .env("PCSCLITE_CSOCK_NAME", &self.socket)
            .arg("-r")
            .arg(format!("vpiv-{serial} 00 00"))
            .args(args)
            .output()
            .expect("yubico-piv-tool (apt-get install yubico-piv-tool)")
    }
}

impl VirtualPiv {
    /// `ykman --reader ... ARGS` against one card: Yubico's own tool as a cross-check.
    pub fn ykman(&self, serial: u32, args: &[&str]) -> Output {
        Command::new("ykman")
            .env("PCSCLITE_CSOCK_NAME", &self.socket)
            .arg("--reader")
            .arg(format!("vpiv-{serial} 00 00"))
            .args(args)
            .output()
            .expect("ykman (apt-get install yubikey-manager)")
    }
}

impl Drop for VirtualPiv {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .env("VIRTUAL_PIV_DIR", self.dir.path())
            .output();
    }
}

/// A keyward home plus virtual cards; runs the real binary against them.
pub struct PivWorld {
    pub world: World,
    pub cards: VirtualPiv,
}

impl PivWorld {
    pub fn new(serials: &[u32]) -> Self {
        Self::with_options(serials, &[])
    }

    pub fn with_options(serials: &[u32], options: &[&str]) -> Self {
        PivWorld {
            world: World::new(),
            cards: VirtualPiv::start_with(serials, options),
        }
    }

    /// Trusts the cards' test attestation root in keyward.toml (`[piv] attestation_roots`).
    pub fn trust_test_root(&self) {
        let root = self.cards.attestation_root();
        std::fs::write(
            self.world.home().join("keyward.toml"),
            format!(
                "[piv]\nattestation_roots = [{:?}]\n",
                root.to_str().unwrap()
            ),
        )
        .unwrap();
    }

    /// Another keyward home on the same cards (a lost home directory, a second operator).
    pub fn fresh_home(&self) -> World {
        World::new()
    }

    pub fn token(&self, serial: u32) -> String {
        format!("yubikey:{serial}")
    }

    /// keyward in `world` with this card set, PIN and PUK in the environment (never argv).
    pub fn kw_in(&self, world: &World) -> Command {
        let mut c = world.keyward();
        c.env("PCSCLITE_CSOCK_NAME", &self.cards.socket)
            .env("KEYWARD_PIN", PIN)
            .env("KEYWARD_PUK", PUK)
            .env_remove("KEYWARD_NEW_PIN")
            .env_remove("KEYWARD_NEW_PUK");
        c
    }

    pub fn kw(&self) -> Command {
        self.kw_in(&self.world)
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.kw().arg("--batch").args(args).output().unwrap()
    }

    pub fn run_env(&self, env: &[(&str, &str)], args: &[&str]) -> Output {
        let mut c = self.kw();
        for (k, v) in env {
            c.env(k, v);
        }
        c.arg("--batch").args(args).output().unwrap()
    }

    pub fn ok(&self, args: &[&str]) -> String {
        ok(self.run(args), args)
    }

    pub fn ok_env(&self, env: &[(&str, &str)], args: &[&str]) -> String {
        ok(self.run_env(env, args), args)
    }

    /// The audit log's entries, parsed.
    pub fn audit(&self) -> Vec<serde_json::Value> {
        audit_of(&self.world)
    }
}

pub fn audit_of(world: &World) -> Vec<serde_json::Value> {
    std::fs::read_to_string(world.audit_log())
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub fn ok(out: Output, args: &[&str]) -> String {
    assert!(
        out.status.success(),
        "keyward {args:?} failed ({:?}):\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn err(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "expected a failure, got success:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}
