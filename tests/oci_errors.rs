//! Error paths: a registry that is down, refuses credentials, fails, serves an oversized
//! manifest, holds a malformed signature manifest, or refuses writes. Each must give a clear
//! error and leave no partial signature manifest behind.

#[path = "support/registry.rs"]
mod registry;

use base64::Engine as _;
use keyward::oci::{
    self, list, sign_images, ClientOptions, CredentialSource, ImageRef, OciError, RegistryClient,
    SignOptions, Stage,
};
use registry::{closed_port_host, digest, FakeRegistry, P256Signer, TestRegistry};

fn client_for(host: &str, creds: CredentialSource) -> RegistryClient {
    RegistryClient::new(ClientOptions {
        insecure_registries: vec![host.to_string()],
        credentials: creds,
        ..Default::default()
    })
    .expect("client")
}

fn resolve_err(host: &str, creds: CredentialSource) -> OciError {
    let client = client_for(host, creds);
    client
        .resolve(&ImageRef::parse(&format!("{host}/app:v1")).expect("reference"))
        .expect_err("resolve must fail")
}

#[test]
fn registry_down_names_the_host() {
    let host = closed_port_host();
    let err = resolve_err(&host, CredentialSource::Anonymous);
    assert!(
        matches!(err, OciError::Unreachable { ref registry, .. } if *registry == host),
        "{err:?}"
    );
    assert!(err.to_string().contains(&host), "{err}");
    assert!(err.is_transient());
    // In a batch it is a per-image failure at the resolve stage.
    let client = client_for(&host, CredentialSource::Anonymous);
    let mut signer = P256Signer::new("k");
    let report = sign_images(
        &client,
        &[format!("{host}/app:v1")],
        &mut signer,
        &SignOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    let f = report.results[0].outcome.as_ref().unwrap_err();
    assert_eq!(f.stage, Stage::Resolve);
    assert!(f.transient && f.message.contains(&host), "{f:?}");
    assert_eq!(signer.sign_calls, 0);
}

#[test]
fn http_401_explains_where_credentials_come_from() {
    let fake = FakeRegistry::start(
        401,
        &[
            ("WWW-Authenticate", "Basic realm=\"test\""),
            ("Content-Type", "application/json"),
        ],
        br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#.to_vec(),
    );
    let host = fake.host();
    let err = resolve_err(&host, CredentialSource::Anonymous);
    assert!(
        matches!(err, OciError::Unauthorized { ref registry, credentials_from: None, .. } if *registry == host),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("401") && msg.contains(&host) && msg.contains("podman login"),
        "{msg}"
    );
    assert!(
        msg.contains("REGISTRY_AUTH_FILE") && msg.contains("config.json"),
        "{msg}"
    );

    // With credentials from a file: the error names the file, never the password.
    let dir = tempfile::tempdir().unwrap();
    let auth = dir.path().join("auth.json");
    let secret = "s3cret-pw";
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("ci:{secret}"));
    std::fs::write(
        &auth,
        format!(r#"{{"auths":{{"{host}":{{"auth":"{b64}"}}}}}}"#),
    )
    .unwrap();
    let err = resolve_err(&host, CredentialSource::Files(vec![auth.clone()]));
    let msg = err.to_string();
    assert!(msg.contains(&auth.display().to_string()), "{msg}");
    assert!(!msg.contains(secret) && !format!("{err:?}").contains(secret));
    // The credentials were sent (basic auth), and retried once.
    assert!(fake
        .requests
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("/v2/app/manifests/v1")));
}

#[test]
fn http_403_and_500_are_distinct_errors() {
    let fake = FakeRegistry::start(
        403,
        &[],
        br#"{"errors":[{"code":"DENIED","message":"denied"}]}"#.to_vec(),
    );
    let err = resolve_err(&fake.host(), CredentialSource::Anonymous);
    assert!(matches!(err, OciError::Forbidden { .. }), "{err:?}");
    assert!(err.to_string().contains("403"), "{err}");

    let fake = FakeRegistry::start(500, &[], b"database on fire".to_vec());
    let err = resolve_err(&fake.host(), CredentialSource::Anonymous);
    assert!(
        matches!(err, OciError::ServerError { status: 500, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("500") && msg.contains(&fake.host()) && msg.contains("database on fire"),
        "{msg}"
    );
    assert!(err.is_transient());
}

#[test]
fn oversized_manifests_are_refused() {
    // Announced size over the default 4 MiB limit.
    let body = vec![b' '; 4 * 1024 * 1024 + 1];
    let fake = FakeRegistry::start(
        200,
        &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
        body,
    );
    let err = resolve_err(&fake.host(), CredentialSource::Anonymous);
    assert!(
        matches!(err, OciError::ManifestTooLarge { limit: 4194304, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("larger than the limit"), "{err}");

    // A real registry and a small configured limit.
    let reg = TestRegistry::start();
    reg.push_image("app", "v1");
    let client = RegistryClient::new(ClientOptions {
        max_manifest_bytes: 100,
        ..reg.options()
    })
    .unwrap();
    let err = client
        .resolve(&ImageRef::parse(&reg.image("app", "v1")).unwrap())
        .unwrap_err();
    assert!(
        matches!(err, OciError::ManifestTooLarge { limit: 100, .. }),
        "{err:?}"
    );
}

#[test]
fn malformed_signature_manifest_is_never_overwritten() {
    let reg = TestRegistry::start();
    let d = reg.push_image("app", "v1");
    // Someone put an index under the signature tag.
    let sig_tag = format!("{}.sig", d.replace(':', "-"));
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{d}","size":{}}}]}}"#,
        reg.get_manifest("app", &d).1.len()
    );
    reg.put_manifest(
        "app",
        &sig_tag,
        "application/vnd.oci.image.index.v1+json",
        index.as_bytes(),
    );
    let client = reg.client();
    let mut signer = P256Signer::new("k");
    let report = sign_images(
        &client,
        &[reg.image("app", "v1")],
        &mut signer,
        &SignOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    let f = report.results[0].outcome.as_ref().unwrap_err();
    assert_eq!(f.stage, Stage::Attach);
    assert!(
        f.message.contains("malformed")
            && f.message.contains(&sig_tag)
            && f.message.contains("will not overwrite"),
        "{f:?}"
    );
    assert_eq!(
        reg.get_manifest("app", &sig_tag).1,
        index.as_bytes(),
        "left untouched"
    );
    let image = ImageRef::parse(&reg.image("app", "v1")).unwrap();
    assert!(matches!(
        list(&client, &image, &digest(&d)),
        Err(OciError::MalformedSignatureManifest { .. })
    ));
}

#[test]
fn refused_writes_leave_no_signature_manifest() {
    let mut reg = TestRegistry::start();
    let d = reg.push_image("app", "v1");
    reg.restart_readonly();
    let client = reg.client();
    let mut signer = P256Signer::new("k");
    let report = sign_images(
        &client,
        &[reg.image("app", "v1")],
        &mut signer,
        &SignOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    let f = report.results[0].outcome.as_ref().unwrap_err();
    assert_eq!(f.stage, Stage::Attach);
    assert!(
        f.message.contains(&reg.host()) && f.message.contains("blob upload"),
        "{f:?}"
    );
    assert_eq!(signer.records.len(), 1, "the failure is recorded");
    assert!(reg.signature_layers("app", &d).is_empty());
    let (status, _) = reg.get_manifest("app", &format!("{}.sig", d.replace(':', "-")));
    assert_eq!(status, 404);
}

#[test]
fn tampered_payload_blob_is_rejected_when_listing() {
    let reg = TestRegistry::start();
    let d = reg.push_image("app", "v1");
    let mut signer = P256Signer::new("k");
    let client = reg.client();
    let report = sign_images(
        &client,
        &[reg.image("app", "v1")],
        &mut signer,
        &SignOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(report.succeeded(), 1);
    // Rewrite the .sig manifest so its layer descriptor claims a size that does not match.
    let sig_tag = format!("{}.sig", d.replace(':', "-"));
    let (_, body) = reg.get_manifest("app", &sig_tag);
    let mut m: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let size = m["layers"][0]["size"].as_u64().unwrap();
    m["layers"][0]["size"] = (size + 1).into();
    reg.put_manifest(
        "app",
        &sig_tag,
        "application/vnd.oci.image.manifest.v1+json",
        m.to_string().as_bytes(),
    );
    let image = ImageRef::parse(&reg.image("app", "v1")).unwrap();
    let listing = list(&client, &image, &digest(&d)).unwrap();
    assert!(listing.signatures.is_empty());
    assert_eq!(listing.rejected.len(), 1, "{listing:?}");
    let v =
        oci::verify_image(&client, &image, &[signer.public_key()], &Default::default()).unwrap();
    assert!(!v.verified());
    assert!(matches!(
        v.reports[0].verdict,
        oci::Verdict::LayerRejected(_)
    ));
}
