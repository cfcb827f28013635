//! Independent verification of keyward's signatures with sigstore-rs (the `sigstore` crate's
//! cosign client, key-based, no transparency log) against a real registry over plain HTTP.
//!
//! sigstore-rs returns an empty list of trusted layers for every failure (no `.sig` tag,
//! digest mismatch, bad annotation) and reports reasons only through `tracing`; and
//! `verify_constraints` is satisfied when different layers meet different constraints, so
//! these tests check one layer at a time where that matters.

#[path = "support/registry.rs"]
mod registry;

use std::collections::BTreeMap;

use keyward::oci::{
    self, sign_images, sign_offline, AttachOptions, ImageRef, SignOptions, VerifyOptions,
};
use registry::{P256Signer, TestRegistry};
use sigstore::cosign::verification_constraint::{
    AnnotationVerifier, PublicKeyVerifier, VerificationConstraintVec,
};
use sigstore::cosign::{verify_constraints, ClientBuilder, CosignCapabilities, SignatureLayer};
use sigstore::registry::{Auth, ClientConfig, ClientProtocol, OciReference};

/// The layers sigstore-rs trusts for `image` (a tag or digest reference).
fn trusted_layers(reg: &TestRegistry, image: &str) -> Vec<SignatureLayer> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut client = ClientBuilder::default()
            .with_oci_client_config(ClientConfig {
                protocol: ClientProtocol::HttpsExcept(vec![reg.host()]),
                ..Default::default()
            })
            .build()
            .expect("sigstore client");
        let reference: OciReference = image.parse().expect("sigstore reference");
        client
            .trusted_signature_layers(&Auth::Anonymous, &reference)
            .await
            .expect("trusted_signature_layers")
    })
}

fn key_constraint(signer: &P256Signer) -> VerificationConstraintVec {
    vec![Box::new(
        PublicKeyVerifier::try_from(signer.public_pem().as_bytes()).expect("sigstore public key"),
    )]
}

/// Layers that, each on its own, satisfy every constraint.
fn accepted(layers: &[SignatureLayer], constraints: &VerificationConstraintVec) -> usize {
    layers
        .iter()
        .filter(|l| verify_constraints(std::slice::from_ref(*l), constraints.iter()).is_ok())
        .count()
}

fn sign_one(reg: &TestRegistry, image: &str, signer: &mut P256Signer, opts: &SignOptions) {
    let client = reg.client();
    let report =
        sign_images(&client, &[image.to_string()], signer, opts, &mut |_| {}).expect("batch");
    assert_eq!(report.succeeded(), 1, "{report:#?}");
}

#[test]
fn sigstore_accepts_keyward_signatures_and_rejects_the_rest() {
    let reg = TestRegistry::start();
    let signed_digest = reg.push_image("app", "signed");
    reg.push_image("app", "unsigned");
    let mut signer = P256Signer::new("release/1");
    let mut opts = SignOptions::default();
    opts.annotations.insert("env".into(), "prod".into());
    sign_one(&reg, &reg.image("app", "signed"), &mut signer, &opts);

    // Signed image: accepted by key, by tag and by digest, with the annotation constraint.
    let layers = trusted_layers(&reg, &reg.image("app", "signed"));
    assert_eq!(layers.len(), 1);
    assert_eq!(accepted(&layers, &key_constraint(&signer)), 1);
    let by_digest = trusted_layers(&reg, &format!("{}/app@{signed_digest}", reg.host()));
    assert_eq!(accepted(&by_digest, &key_constraint(&signer)), 1);
    let mut with_annotation = key_constraint(&signer);
    with_annotation.push(Box::new(AnnotationVerifier {
        annotations: BTreeMap::from([("env".to_string(), "prod".to_string())]),
    }));
    assert_eq!(accepted(&layers, &with_annotation), 1);
    let mut wrong_annotation = key_constraint(&signer);
    wrong_annotation.push(Box::new(AnnotationVerifier {
        annotations: BTreeMap::from([("env".to_string(), "dev".to_string())]),
    }));
    assert_eq!(accepted(&layers, &wrong_annotation), 0);

    // Unsigned image: nothing trusted.
    assert!(trusted_layers(&reg, &reg.image("app", "unsigned")).is_empty());

    // Another key: layers exist, but the key constraint fails.
    let other = P256Signer::new("other");
    assert!(verify_constraints(&layers, key_constraint(&other).iter()).is_err());
}

#[test]
fn sigstore_rejects_a_moved_tag_and_a_replayed_signature_manifest() {
    let reg = TestRegistry::start();
    let a = reg.push_image("app", "v1");
    let mut signer = P256Signer::new("k");
    sign_one(
        &reg,
        &reg.image("app", "v1"),
        &mut signer,
        &SignOptions::default(),
    );
    assert_eq!(
        accepted(
            &trusted_layers(&reg, &reg.image("app", "v1")),
            &key_constraint(&signer)
        ),
        1
    );

    // The tag is moved to another manifest after signing.
    let b = reg.push_image("app", "v1");
    assert_ne!(a, b);
    assert!(trusted_layers(&reg, &reg.image("app", "v1")).is_empty());

    // Someone copies A's signature manifest to B's signature tag: the payload names A.
    let (status, sig_manifest) = reg.get_manifest("app", &format!("{}.sig", a.replace(':', "-")));
    assert_eq!(status, 200);
    reg.put_manifest(
        "app",
        &format!("{}.sig", b.replace(':', "-")),
        "application/vnd.oci.image.manifest.v1+json",
        &sig_manifest,
    );
    assert!(trusted_layers(&reg, &reg.image("app", "v1")).is_empty());
    // keyward's verifier says why.
    let client = reg.client();
    let v = oci::verify_image(
        &client,
        &ImageRef::parse(&reg.image("app", "v1")).unwrap(),
        &[signer.public_key()],
        &VerifyOptions::default(),
    )
    .unwrap();
    assert!(!v.verified());
    assert!(
        matches!(v.reports[0].verdict, oci::Verdict::DigestMismatch { .. }),
        "{v:#?}"
    );
}

#[test]
fn sigstore_accepts_each_of_two_keys_one_layer_at_a_time() {
    let reg = TestRegistry::start();
    reg.push_image("app", "v1");
    let image = reg.image("app", "v1");
    let mut a = P256Signer::new("a");
    let mut b = P256Signer::new("b");
    sign_one(&reg, &image, &mut a, &SignOptions::default());
    sign_one(&reg, &image, &mut b, &SignOptions::default());
    let layers = trusted_layers(&reg, &image);
    assert_eq!(layers.len(), 2);
    assert_eq!(accepted(&layers, &key_constraint(&a)), 1);
    assert_eq!(accepted(&layers, &key_constraint(&b)), 1);
    // Both keys required of one single signature: no layer satisfies that.
    let mut both = key_constraint(&a);
    both.extend(key_constraint(&b));
    assert_eq!(accepted(&layers, &both), 0);
}

#[test]
fn sigstore_accepts_an_offline_signature_attached_later() {
    let reg = TestRegistry::start();
    let d = reg.push_image("app", "v1");
    let pinned = ImageRef::parse(&format!("{}/app@{d}", reg.host())).unwrap();
    let mut signer = P256Signer::new("offline");
    let file = sign_offline(&pinned, &mut signer, &SignOptions::default()).unwrap();
    assert!(trusted_layers(&reg, &reg.image("app", "v1")).is_empty());
    let client = reg.client();
    oci::attach_file(&client, &file, None, &AttachOptions::default()).unwrap();
    assert_eq!(
        accepted(
            &trusted_layers(&reg, &reg.image("app", "v1")),
            &key_constraint(&signer)
        ),
        1
    );
}

#[test]
fn sigstore_accepts_concurrently_attached_signatures() {
    let reg = TestRegistry::start();
    reg.push_image("app", "v1");
    let image = reg.image("app", "v1");
    let signers: Vec<P256Signer> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|i| {
                let (reg, image) = (&reg, image.clone());
                s.spawn(move || {
                    let mut signer = P256Signer::new(&format!("k{i}"));
                    sign_one(reg, &image, &mut signer, &SignOptions::default());
                    signer
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let layers = trusted_layers(&reg, &image);
    assert_eq!(layers.len(), 4);
    for s in &signers {
        assert_eq!(accepted(&layers, &key_constraint(s)), 1);
    }
}
