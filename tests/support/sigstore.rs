//! sigstore-rs (the `sigstore` crate's cosign client, key-based, no transparency log) as the
//! independent verifier of image signatures, against a registry over plain HTTP.
#![allow(dead_code, clippy::unwrap_used)]

use sigstore::cosign::verification_constraint::{PublicKeyVerifier, VerificationConstraintVec};
use sigstore::cosign::{verify_constraints, ClientBuilder, CosignCapabilities, SignatureLayer};
use sigstore::registry::{Auth, ClientConfig, ClientProtocol, OciReference};

/// The layers sigstore-rs trusts for `image` (a tag or digest reference) on `host`.
pub fn trusted_layers(host: &str, image: &str) -> Vec<SignatureLayer> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut client = ClientBuilder::default()
            .with_oci_client_config(ClientConfig {
                protocol: ClientProtocol::HttpsExcept(vec![host.to_string()]),
                ..Default::default()
            })
            .build()
            .expect("sigstore client");
        let reference: OciReference = image.parse().expect("sigstore reference");
        client
            .trusted_signature_layers(&Auth::Anonymous, &reference)
            .await
            .unwrap_or_default()
    })
}

/// A constraint: signed by this SPKI PEM key.
pub fn key_constraint(pem: &str) -> VerificationConstraintVec {
    vec![Box::new(
        PublicKeyVerifier::try_from(pem.as_bytes()).expect("sigstore public key"),
    )]
}

/// How many layers, each on its own, satisfy every constraint.
pub fn accepted(layers: &[SignatureLayer], constraints: &VerificationConstraintVec) -> usize {
    layers
        .iter()
        .filter(|l| verify_constraints(std::slice::from_ref(*l), constraints.iter()).is_ok())
        .count()
}

/// Whether sigstore-rs accepts `image` as signed by `pem`.
pub fn sigstore_accepts(host: &str, image: &str, pem: &str) -> bool {
    accepted(&trusted_layers(host, image), &key_constraint(pem)) > 0
}
