//! Sign rate through keyward's token layer vs a raw cryptoki loop on the same SoftHSM2 key,
//! measured in the same run. Goal: keyward >= 90 % of raw.
#![allow(clippy::unwrap_used)]

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use keyward::secret::Pin;
use keyward::token::pkcs11::{initialize_token, Pkcs11Token, TokenSelector};
use keyward::token::{Algorithm, GenerateRequest, ObjectId, Token};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::Instant;

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

fn main() {
    let n: usize = std::env::var("KEYWARD_BENCH_SIGNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("tokens")).unwrap();
    let conf = dir.path().join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\n",
            dir.path().join("tokens").display()
        ),
    )
    .unwrap();
    std::env::set_var("SOFTHSM2_CONF", &conf);
    initialize_token(
        Path::new(MODULE),
        "bench",
        &Pin::new("5678".into()),
        &Pin::new("1234".into()),
    )
    .unwrap();
    let sel = TokenSelector {
        label: Some("bench".into()),
        ..Default::default()
    };
    let mut token = Pkcs11Token::open("bench", Path::new(MODULE), &sel).unwrap();
    token.login(&Pin::new("1234".into())).unwrap();
    let id = ObjectId("beef".into());
    token
        .generate(&GenerateRequest {
            label: "bench/1".into(),
            object_id: id.clone(),
            algorithm: Algorithm::P256,
        })
        .unwrap();
    let data = vec![0x5au8; 512];

    // Raw cryptoki: its own session on the same token and key.
    let pkcs11 = Pkcs11::new(MODULE).unwrap();
    let _ = pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
    let slot = pkcs11
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| {
            pkcs11
                .get_token_info(*s)
                .map(|i| i.label().trim() == "bench")
                .unwrap_or(false)
        })
        .unwrap();
    let session = pkcs11.open_ro_session(slot).unwrap();
    let _ = session.login(UserType::User, Some(&AuthPin::from("1234".to_string())));
    let key = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Id(vec![0xbe, 0xef]),
        ])
        .unwrap()[0];

    let mut raw_best = f64::MAX;
    let mut kw_best = f64::MAX;
    for _round in 0..3 {
        let t = Instant::now();
        for _ in 0..n {
            let sig = session
                .sign(&Mechanism::Ecdsa, key, &Sha256::digest(&data))
                .unwrap();
            std::hint::black_box(sig);
        }
        raw_best = raw_best.min(t.elapsed().as_secs_f64());
        let t = Instant::now();
        for _ in 0..n {
            let sig = token.sign(&id, &data).unwrap();
            std::hint::black_box(sig);
        }
        kw_best = kw_best.min(t.elapsed().as_secs_f64());
    }
    let raw_rate = n as f64 / raw_best;
    let kw_rate = n as f64 / kw_best;
    println!("sign rate, ECDSA P-256 on SoftHSM2, {n} signatures, best of 3:");
    println!("  raw cryptoki loop      : {raw_rate:.0} signatures/s");
    println!("  keyward Token::sign    : {kw_rate:.0} signatures/s (adds DER encoding)");
    println!(
        "  ratio (keyward/raw): {:.1} %  (goal >= 90 %)",
        100.0 * kw_rate / raw_rate
    );
}
