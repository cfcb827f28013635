//! Sign 100 images in a local registry: keyward with a SoftHSM2 key in one batch vs the
//! sigstore-rs cosign client signing the same number of images one at a time with a software
//! key (the closest peer that runs here: cosign is not packaged, and Debian's skopeo cannot
//! sign sigstore signatures). Both measured in this run; goal: keyward >= 5x faster per image.
//!
//! Environment: `KEYWARD_BENCH_IMAGES` (default 100), `KEYWARD_BENCH_JOBS` (keyward's
//! `--jobs`), `KEYWARD_BENCH_REQUESTS=1` (the registry logs its requests; prints requests per
//! image by kind and the registry's CPU time per image for each side).
#![allow(clippy::unwrap_used)]

#[path = "../tests/support/registry.rs"]
mod registry;

use keyward::home::Home;
use keyward::images::{RegistryOptions, SignRequest};
use keyward::prompt::FixedPrompter;
use keyward::token::Algorithm;
use keyward::Keyward;
use sigstore::cosign::constraint::{Constraint, PrivateKeySigner};
use sigstore::cosign::{ClientBuilder, CosignCapabilities, SignatureLayer};
use sigstore::crypto::SigningScheme;
use sigstore::registry::{Auth, ClientConfig, ClientProtocol, OciReference};
use std::time::Instant;

fn main() {
    let n: usize = std::env::var("KEYWARD_BENCH_IMAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
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
    // KEYWARD_BENCH_REQUESTS=1: the registry logs its requests and the bench prints how many
    // each side made per image (the access log slows the registry a little for both sides).
    let count_requests = std::env::var("KEYWARD_BENCH_REQUESTS").is_ok_and(|v| v == "1");
    let reg = if count_requests {
        registry::TestRegistry::start_with_access_log()
    } else {
        registry::TestRegistry::start()
    };
    let host = reg.host();
    let ours: Vec<String> = (0..n)
        .map(|i| {
            reg.push_image("kw", &format!("i{i}"));
            reg.image("kw", &format!("i{i}"))
        })
        .collect();
    let theirs: Vec<String> = (0..n)
        .map(|i| {
            reg.push_image("ss", &format!("i{i}"));
            reg.image("ss", &format!("i{i}"))
        })
        .collect();

    // keyward: one batch, one login, key on SoftHSM2.
    let mut kw = Keyward::open(Home::at(dir.path().join("home"))).unwrap();
    let mut p = FixedPrompter {
        user_pin: Some("1234".into()),
        so_pin: Some("5678".into()),
        passphrase: None,
        confirm: false,
    };
    kw.init_pkcs11_token(
        std::path::Path::new("/usr/lib/softhsm/libsofthsm2.so"),
        "bench",
        "hsm",
        &mut p,
    )
    .unwrap();
    kw.generate("bench", "hsm", Algorithm::P256, false, &mut p)
        .unwrap();
    let req = SignRequest {
        keys: &["bench".to_string()],
        annotations: Default::default(),
        signer: None,
        registry: RegistryOptions {
            insecure: vec![host.clone()],
        },
        cancel: None,
        token: None,
        jobs: std::env::var("KEYWARD_BENCH_JOBS")
            .ok()
            .and_then(|v| v.parse().ok()),
    };
    let before_kw = reg.requests().len();
    let cpu_before_kw = reg.cpu_ms();
    let t = Instant::now();
    let reports = kw.sign_images(&ours, &req, &mut p, &mut |_, _| {}).unwrap();
    let kw_time = t.elapsed().as_secs_f64();
    let cpu_kw = reg.cpu_ms() - cpu_before_kw;
    assert_eq!(reports[0].report.succeeded(), n);

    // sigstore-rs: one image at a time, software P-256 key.
    if count_requests {
        // Let the registry write out its log.
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    let before_ss = reg.requests().len();
    let cpu_before_ss = reg.cpu_ms();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let signer = PrivateKeySigner::new_with_signer(
        SigningScheme::ECDSA_P256_SHA256_ASN1
            .create_signer()
            .unwrap(),
    );
    let t = Instant::now();
    rt.block_on(async {
        let mut client = ClientBuilder::default()
            .with_oci_client_config(ClientConfig {
                protocol: ClientProtocol::HttpsExcept(vec![host.clone()]),
                ..Default::default()
            })
            .build()
            .unwrap();
        for image in &theirs {
            let reference: OciReference = image.parse().unwrap();
            let (sig_ref, digest) = client
                .triangulate(&reference, &Auth::Anonymous)
                .await
                .unwrap();
            let mut layer = SignatureLayer::new_unsigned(&reference, &digest).unwrap();
            signer.add_constraint(&mut layer).unwrap();
            client
                .push_signature(None, &Auth::Anonymous, &sig_ref, vec![layer])
                .await
                .unwrap();
        }
    });
    let ss_time = t.elapsed().as_secs_f64();
    let cpu_ss = reg.cpu_ms() - cpu_before_ss;
    if count_requests {
        // Let the registry flush its log.
        std::thread::sleep(std::time::Duration::from_millis(300));
        let all = reg.requests();
        let kw_reqs = &all[before_kw..before_ss];
        let ss_reqs = &all[before_ss..];
        for (name, reqs, cpu) in [
            ("keyward", kw_reqs, cpu_kw),
            ("sigstore-rs", ss_reqs, cpu_ss),
        ] {
            println!(
                "{name}: {:.1} requests/image, registry CPU {:.1} ms/image",
                reqs.len() as f64 / n as f64,
                cpu as f64 / n as f64
            );
            let mut kinds = std::collections::BTreeMap::<String, usize>::new();
            for r in reqs {
                *kinds.entry(request_kind(r)).or_default() += 1;
            }
            for (k, c) in kinds {
                println!("    {:5.2}  {k}", c as f64 / n as f64);
            }
        }
    }
    println!("image signing, {n} images, local docker-registry:");
    println!(
        "  keyward batch (SoftHSM2 P-256, one login): {kw_time:.2} s  ({:.1} ms/image)",
        1000.0 * kw_time / n as f64
    );
    println!(
        "  sigstore-rs one at a time (software P-256): {ss_time:.2} s  ({:.1} ms/image)",
        1000.0 * ss_time / n as f64
    );
    println!(
        "  ratio: keyward is {:.1}x faster per image  (goal >= 5x)",
        ss_time / kw_time
    );
}

/// `GET /v2/kw/manifests/sha256-….sig` -> `GET manifests/<sig tag>`, and so on.
fn request_kind(r: &str) -> String {
    let (method, path) = r.split_once(' ').unwrap_or((r, ""));
    let what = if path == "/v2/" {
        "/v2/ (API probe)"
    } else if path.contains("/manifests/") && path.ends_with(".sig") {
        "manifests/<sig tag>"
    } else if path.contains("/manifests/") {
        "manifests/<image>"
    } else if path.ends_with("/blobs/uploads/") {
        "blobs/uploads/ (start)"
    } else if path.contains("/blobs/uploads/") {
        "blobs/uploads/<session>"
    } else if path.contains("/blobs/") {
        "blobs/<digest>"
    } else {
        path
    };
    format!("{method} {what}")
}
