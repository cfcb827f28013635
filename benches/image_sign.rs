//! Sign 100 images in a local registry: keyward with a SoftHSM2 key in one batch vs the
//! sigstore-rs cosign client signing the same number of images one at a time with a software
//! key (the closest peer that runs here: cosign is not packaged, and Debian's skopeo cannot
//! sign sigstore signatures). Both measured in this run; goal: keyward >= 5x faster per image.
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
    let reg = registry::TestRegistry::start();
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
        jobs: std::env::var("KEYWARD_BENCH_JOBS")
            .ok()
            .and_then(|v| v.parse().ok()),
    };
    let t = Instant::now();
    let reports = kw.sign_images(&ours, &req, &mut p, &mut |_, _| {}).unwrap();
    let kw_time = t.elapsed().as_secs_f64();
    assert_eq!(reports[0].report.succeeded(), n);

    // sigstore-rs: one image at a time, software P-256 key.
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
