//! `virtual-piv-card`: a virtual YubiKey-like PIV card for vpcd (vsmartcard).
//!
//! The card is Nitrokey's piv-authenticator on a software trussed platform, patched at the
//! APDU level so that the `yubikey` crate, ykman and yubico-piv-tool accept it. It connects
//! to vpcd (inside pcscd) and keeps reconnecting whenever vpcd goes away.
//! FOR TESTS ONLY: keys are kept in the clear in RAM or in the state directory.

#![forbid(unsafe_code)]

mod card;
mod host;
mod yubico;

use std::io;
use std::path::PathBuf;
use std::process::ExitCode;
use std::thread::sleep;
use std::time::Duration;

use piv_authenticator::{Authenticator, Options};
use rand_chacha::rand_core::SeedableRng as _;
use rand_chacha::ChaCha8Rng;
use trussed::virt::{StorageConfig, StoreConfig};

use card::{Card, Glue};

const USAGE: &str = "\
usage: virtual-piv-card [--serial N] [--firmware X.Y.Z] [--host ADDR] [--port P]
                        [--state-dir DIR] [--attestation-ca DIR] [--seed N] [-v]
       virtual-piv-card --attestation-ca DIR --init-ca

A virtual PIV card (YubiKey 5 look-alike) for vpcd from vsmartcard.

  --serial N           serial number answered to GET SERIAL (default 12345678)
  --firmware X.Y.Z     version answered to GET VERSION (default 5.4.3; GET METADATA from 5.3.0)
  --host ADDR          address of vpcd (default 127.0.0.1)
  --port P             port of vpcd's reader slot (default 35963)
  --state-dir DIR      keep the card's storage in DIR (default: RAM, lost on exit)
  --attestation-ca DIR test root CA for attestation: DIR/root-ca.pem and DIR/root-ca.key,
                       created when absent (default: a root that lives as long as the process)
  --init-ca            only create the test root CA in --attestation-ca, print its path, exit
  --seed N             seed the card's randomness (default: from /dev/urandom)
  -v, --verbose        log APDU headers and status words to stderr
";

struct Args {
    serial: u32,
    firmware: [u8; 3],
    attestation_ca: Option<PathBuf>,
    init_ca: bool,
    host: String,
    port: u16,
    state_dir: Option<PathBuf>,
    seed: Option<u64>,
    verbose: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        serial: 12_345_678,
        firmware: card::DEFAULT_FIRMWARE,
        attestation_ca: None,
        init_ca: false,
        host: "127.0.0.1".into(),
        port: 35963,
        state_dir: None,
        seed: None,
        verbose: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => {
                (name.to_string(), Some(value.to_string()))
            }
            _ => (arg.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match name.as_str() {
            "--serial" => args.serial = parse_number(&value()?)?,
            "--firmware" => args.firmware = parse_firmware(&value()?)?,
            "--attestation-ca" => args.attestation_ca = Some(PathBuf::from(value()?)),
            "--init-ca" => args.init_ca = true,
            "--host" => args.host = value()?,
            "--port" => args.port = value()?.parse().map_err(|e| format!("--port: {e}"))?,
            "--state-dir" => args.state_dir = Some(PathBuf::from(value()?)),
            "--seed" => args.seed = Some(value()?.parse().map_err(|e| format!("--seed: {e}"))?),
            "-v" | "--verbose" => args.verbose = true,
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

fn parse_firmware(s: &str) -> Result<[u8; 3], String> {
    let parts: Vec<u8> = s
        .split('.')
        .map(|p| p.parse::<u8>())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("--firmware {s:?}: {e}"))?;
    match parts.as_slice() {
        [major @ (4 | 5), minor, patch] => Ok([*major, *minor, *patch]),
        _ => Err(format!(
            "--firmware {s:?}: give X.Y.Z with X = 4 or 5 (what the yubikey crate accepts)"
        )),
    }
}

fn parse_number(s: &str) -> Result<u32, String> {
    let parsed = match s.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|e| format!("--serial {s:?}: {e}"))
}

/// RAM storage, or a file in the state directory (created and formatted on first use).
fn storage(state_dir: Option<&PathBuf>, name: &str) -> StorageConfig<'static> {
    match state_dir {
        Some(dir) => StorageConfig::filesystem(dir.join(name)),
        None => StorageConfig::ram(),
    }
}

/// Serves one vpcd connection until it fails; each power cycle gets a fresh session.
fn serve(conn: &mut vpicc::Connection, store: &mut StoreConfig<'_>, glue: &mut Glue) -> io::Error {
    loop {
        let seed = glue.next_seed();
        let result = store.with_store(|store| {
            let platform = host::CardPlatform::new(ChaCha8Rng::from_seed(seed), store);
            host::with_client(platform, |client| {
                let mut card = Card::new(Authenticator::new(client, Options::default()), glue);
                loop {
                    conn.poll(&mut card)?;
                    if card.glue().take_restart() {
                        return Ok::<(), io::Error>(());
                    }
                }
            })
        });
        // Persistent storage is formatted once; volatile storage at every power cycle.
        store.internal.format = false;
        store.external.format = false;
        if let Err(e) = result {
            return e;
        }
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("virtual-piv-card: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if args.init_ca {
        let Some(dir) = &args.attestation_ca else {
            eprintln!("virtual-piv-card: --init-ca needs --attestation-ca DIR");
            return ExitCode::from(2);
        };
        let mut rng = ChaCha8Rng::from_seed(Glue::urandom_seed().unwrap_or([7; 32]));
        return match yubico::root_ca(Some(dir), &mut rng) {
            Ok(_) => {
                println!("{}", dir.join(yubico::ROOT_CERT).display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!(
                    "virtual-piv-card: test attestation CA in {}: {e}",
                    dir.display()
                );
                ExitCode::FAILURE
            }
        };
    }
    if let Some(dir) = &args.state_dir {
        if let Err(e) = std::fs::create_dir_all(dir) {
            eprintln!("virtual-piv-card: cannot create {}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
    }
    let mut glue = match Glue::new(
        args.serial,
        args.firmware,
        args.seed,
        args.state_dir.clone(),
        args.attestation_ca.clone(),
        args.verbose,
    ) {
        Ok(glue) => glue,
        Err(e) => {
            eprintln!("virtual-piv-card: cannot load state: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut store = StoreConfig {
        internal: storage(args.state_dir.as_ref(), "internal.bin"),
        external: storage(args.state_dir.as_ref(), "external.bin"),
        volatile: StorageConfig::ram(),
    };

    let addr = format!("{}:{}", args.host, args.port);
    let mut waiting_logged = false;
    loop {
        match vpicc::connect_socket(addr.as_str()) {
            Ok(mut conn) => {
                eprintln!(
                    "virtual-piv-card: serial {} connected to vpcd at {addr}",
                    args.serial
                );
                waiting_logged = false;
                let e = serve(&mut conn, &mut store, &mut glue);
                eprintln!(
                    "virtual-piv-card: serial {}: vpcd connection ended: {e}",
                    args.serial
                );
            }
            Err(e) => {
                if !waiting_logged {
                    eprintln!("virtual-piv-card: waiting for vpcd at {addr}: {e}");
                    waiting_logged = true;
                }
            }
        }
        sleep(Duration::from_millis(250));
    }
}
