//! Signing images on a real registry (Debian's docker-registry, started by each test) and
//! checking the signature manifests with keyward's verifier and containers/image's rules.

#[path = "support/registry.rs"]
mod registry;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Barrier};

use keyward::oci::{
    self, attach_file, list, sign_images, sign_offline, validate_containers_image, verify_image,
    AttachOptions, ImageRef, ProgressEvent, Published, SignOptions, SignatureFile, Stage, Verdict,
    VerifyOptions,
};
use registry::{digest, P256Signer, TestRegistry};

fn sign(
    reg: &TestRegistry,
    images: &[String],
    signer: &mut P256Signer,
    opts: &SignOptions,
) -> oci::BatchReport {
    let client = reg.client();
    let log = Arc::clone(&signer.log);
    let mut progress = |e: ProgressEvent| {
        if let ProgressEvent::Finished { index, ok } = e {
            log.lock()
                .expect("lock")
                .push(format!("finished {index} {ok}"));
        }
    };
    sign_images(&client, images, signer, opts, &mut progress).expect("batch")
}

#[test]
fn resolves_tags_to_manifest_and_index_digests() {
    let reg = TestRegistry::start();
    let a = reg.push_image("team/app", "amd64");
    let b = reg.push_image("team/app", "arm64");
    let idx = reg.push_index("team/app", "multi", &[a.clone(), b]);
    let client = reg.client();
    let img = ImageRef::parse(&reg.image("team/app", "amd64")).unwrap();
    assert_eq!(client.resolve(&img).unwrap().as_str(), a);
    let multi = ImageRef::parse(&reg.image("team/app", "multi")).unwrap();
    assert_eq!(
        client.resolve(&multi).unwrap().as_str(),
        idx,
        "an index resolves to the index digest"
    );
    let m = client.fetch_manifest(&multi).unwrap();
    assert!(m.is_index());
    let pinned = ImageRef::parse(&format!("{}/team/app@{a}", reg.host())).unwrap();
    assert_eq!(client.resolve(&pinned).unwrap().as_str(), a);
    let missing = ImageRef::parse(&reg.image("team/app", "nope")).unwrap();
    let err = client.resolve(&missing).unwrap_err();
    assert!(
        matches!(err, oci::OciError::ManifestNotFound { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("team/app:nope"), "{err}");
}

#[test]
fn batch_signs_verifies_and_records_before_reporting() {
    let reg = TestRegistry::start();
    let d1 = reg.push_image("app", "v1");
    let d2 = reg.push_image("other/app", "v2");
    let idx = reg.push_index("app", "multi", std::slice::from_ref(&d1));
    let mut signer = P256Signer::new("release/1");
    let images = vec![
        reg.image("app", "v1"),
        reg.image("other/app", "v2"),
        reg.image("app", "multi"),
    ];
    let mut opts = SignOptions::default();
    opts.annotations.insert("ci.job".into(), "build-42".into());
    let report = sign(&reg, &images, &mut signer, &opts);
    assert_eq!(report.succeeded(), 3, "{report:#?}");
    for (r, want) in report.results.iter().zip([&d1, &d2, &idx]) {
        assert_eq!(r.digest.as_ref().unwrap().as_str(), want.as_str());
        assert!(matches!(&r.outcome, Ok(Published::Attached(o)) if o.added == 1));
    }
    // record happened for every image, each before its Finished event.
    let log = signer.log.lock().unwrap().clone();
    for i in 0..3 {
        let rec = log
            .iter()
            .position(|l| *l == format!("record {i}"))
            .unwrap();
        let fin = log
            .iter()
            .position(|l| *l == format!("finished {i} true"))
            .unwrap();
        assert!(rec < fin, "{log:?}");
    }
    assert_eq!(signer.records.len(), 3);

    let client = reg.client();
    let key = signer.public_key();
    let mut vopts = VerifyOptions::default();
    vopts.annotations.insert("ci.job".into(), "build-42".into());
    for (img, d) in [(&images[0], &d1), (&images[1], &d2), (&images[2], &idx)] {
        let image = ImageRef::parse(img).unwrap();
        let v = verify_image(&client, &image, std::slice::from_ref(&key), &vopts).unwrap();
        assert!(v.verified(), "{v:#?}");
        assert_eq!(v.digest.as_str(), d.as_str());
        let rep = &v.reports[0];
        assert_eq!(rep.provenance["keyward.key"], "release/1");
        assert_eq!(rep.provenance["ci.job"], "build-42");
        assert!(rep.provenance["timestamp"].parse::<i64>().is_ok());
        assert_eq!(rep.containers_image, Ok(()));
        // Every payload written passes containers/image's parser, and names the repository.
        let listing = list(&client, &image, &digest(d)).unwrap();
        assert_eq!(listing.signatures.len(), 1);
        validate_containers_image(&listing.signatures[0].payload).unwrap();
        let p: serde_json::Value = serde_json::from_slice(&listing.signatures[0].payload).unwrap();
        assert_eq!(
            p["critical"]["identity"]["docker-reference"],
            image.docker_reference()
        );
        assert!(p["optional"]["timestamp"].is_i64());
    }
    // The per-platform instance was not signed (only what was asked).
    let plain = list(&client, &ImageRef::parse(&images[0]).unwrap(), &digest(&d1)).unwrap();
    assert_eq!(plain.signatures.len(), 1);
    let layers = reg.signature_layers("app", &d1);
    assert_eq!(
        layers[0]["mediaType"],
        "application/vnd.dev.cosign.simplesigning.v1+json"
    );
}

#[test]
fn failures_do_not_stop_the_batch_and_failed_records_fail_the_image() {
    let reg = TestRegistry::start();
    reg.push_image("app", "a");
    reg.push_image("app", "b");
    reg.push_image("app", "c");
    let mut signer = P256Signer::new("k");
    let images = vec![
        "Not A Reference".to_string(),
        reg.image("app", "missing"),
        reg.image("app", "a"),
        reg.image("app", "b"),
        reg.image("app", "c"),
    ];
    signer.fail_record_for = vec![3];
    signer.fail_sign_calls = vec![2]; // the third signature made: image 4 (resolved in order)
    let opts = SignOptions {
        resolve_concurrency: Some(1),
        ..Default::default()
    };
    let report = sign(&reg, &images, &mut signer, &opts);
    let stages: Vec<Option<Stage>> = report
        .results
        .iter()
        .map(|r| r.outcome.as_ref().err().map(|f| f.stage))
        .collect();
    assert_eq!(
        stages,
        vec![
            Some(Stage::Parse),
            Some(Stage::Resolve),
            None,
            Some(Stage::Record),
            Some(Stage::Sign)
        ],
        "{report:#?}"
    );
    assert!(report.results[1]
        .outcome
        .as_ref()
        .unwrap_err()
        .message
        .contains("not found"));
    assert!(report.results[4]
        .outcome
        .as_ref()
        .unwrap_err()
        .message
        .contains("token removed"));
    assert_eq!((report.succeeded(), report.failed()), (1, 4));
    assert_eq!(signer.records.len(), 5, "record is called for every image");
    // Image 3's signature reached the registry but its record failed: reported as failed,
    // with the signature kept in the result so the caller can act on it.
    assert!(report.results[3].signature_b64.is_some());
    assert!(signer
        .log
        .lock()
        .unwrap()
        .contains(&"finished 3 false".to_string()));
}

#[test]
fn cancellation_fails_remaining_images() {
    let reg = TestRegistry::start();
    reg.push_image("app", "a");
    let mut signer = P256Signer::new("k");
    let opts = SignOptions {
        cancel: Some(Arc::new(AtomicBool::new(true))),
        ..Default::default()
    };
    let report = sign(&reg, &[reg.image("app", "a")], &mut signer, &opts);
    assert_eq!(
        report.results[0].outcome.as_ref().unwrap_err().stage,
        Stage::Cancelled
    );
    assert_eq!(signer.sign_calls, 0);
    assert!(reg
        .signature_layers("app", &reg.push_image("app", "a"))
        .is_empty());
}

#[test]
fn two_keys_append_layers_and_each_key_verifies_its_own() {
    let reg = TestRegistry::start();
    let d = reg.push_image("app", "v1");
    let img = reg.image("app", "v1");
    let mut a = P256Signer::new("a");
    let mut b = P256Signer::new("b");
    assert_eq!(
        sign(
            &reg,
            std::slice::from_ref(&img),
            &mut a,
            &SignOptions::default()
        )
        .succeeded(),
        1
    );
    assert_eq!(
        sign(
            &reg,
            std::slice::from_ref(&img),
            &mut b,
            &SignOptions::default()
        )
        .succeeded(),
        1
    );
    assert_eq!(reg.signature_layers("app", &d).len(), 2);
    let client = reg.client();
    let image = ImageRef::parse(&img).unwrap();
    for (signer, name) in [(&a, "a"), (&b, "b")] {
        let v = verify_image(
            &client,
            &image,
            &[signer.public_key()],
            &VerifyOptions::default(),
        )
        .unwrap();
        let verdicts: Vec<&Verdict> = v.reports.iter().map(|r| &r.verdict).collect();
        assert_eq!(
            verdicts
                .iter()
                .filter(|v| ***v == Verdict::Verified)
                .count(),
            1,
            "{verdicts:?}"
        );
        assert_eq!(
            verdicts
                .iter()
                .filter(|v| ***v == Verdict::BadSignature)
                .count(),
            1,
            "{verdicts:?}"
        );
        let ok = v.reports.iter().find(|r| r.verified()).unwrap();
        assert_eq!(ok.provenance["keyward.key"], name);
    }
    let other = P256Signer::new("c");
    let v = verify_image(
        &client,
        &image,
        &[other.public_key()],
        &VerifyOptions::default(),
    )
    .unwrap();
    assert!(!v.verified());
}

#[test]
fn identical_signature_is_not_duplicated() {
    let reg = TestRegistry::start();
    let d = reg.push_image("app", "v1");
    let img = reg.image("app", "v1");
    let mut signer = P256Signer::new("k");
    // No timestamp: the payload bytes are identical; RFC 6979 makes the signature identical.
    let opts = SignOptions {
        timestamp: false,
        ..Default::default()
    };
    let first = sign(&reg, std::slice::from_ref(&img), &mut signer, &opts);
    let second = sign(&reg, std::slice::from_ref(&img), &mut signer, &opts);
    assert_eq!(
        first.results[0].payload_digest,
        second.results[0].payload_digest
    );
    match &second.results[0].outcome {
        Ok(Published::Attached(o)) => {
            assert_eq!((o.added, o.already_present, o.writes), (0, 1, 0));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(reg.signature_layers("app", &d).len(), 1);
}

#[test]
fn concurrent_signers_lose_nothing() {
    const N: usize = 8;
    let reg = TestRegistry::start();
    let d = reg.push_image("app", "v1");
    let img = reg.image("app", "v1");
    let barrier = Arc::new(Barrier::new(N));
    let keys: Vec<oci::PublicKey> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..N)
            .map(|i| {
                let (barrier, img, reg) = (Arc::clone(&barrier), img.clone(), &reg);
                s.spawn(move || {
                    let mut signer = P256Signer::new(&format!("k{i}"));
                    let client = reg.client();
                    let image = ImageRef::parse(&img).unwrap();
                    let d = client.resolve(&image).unwrap();
                    let payload = {
                        let mut p = oci::Payload::new(&image, &d);
                        p.annotations.insert("keyward.key".into(), format!("k{i}"));
                        p.to_bytes().unwrap()
                    };
                    let sig = oci::BatchSigner::sign(&mut signer, &payload).unwrap();
                    barrier.wait();
                    oci::attach(
                        &client,
                        &image,
                        &d,
                        &[oci::NewSignature::new(payload, &sig)],
                        &AttachOptions::default(),
                    )
                    .unwrap();
                    signer.public_key()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(reg.signature_layers("app", &d).len(), N);
    let client = reg.client();
    let image = ImageRef::parse(&img).unwrap();
    for (i, k) in keys.iter().enumerate() {
        let v = verify_image(
            &client,
            &image,
            std::slice::from_ref(k),
            &VerifyOptions::default(),
        )
        .unwrap();
        let ok: Vec<_> = v.reports.iter().filter(|r| r.verified()).collect();
        assert_eq!(ok.len(), 1, "key {i}: {v:#?}");
        assert_eq!(ok[0].provenance["keyward.key"], format!("k{i}"));
    }
}

#[test]
fn concurrent_batches_over_the_same_images_lose_nothing() {
    // Batches attach through a shared gate, wait out their settle times without holding it
    // and check after a wait instead of reading back at once: three batches racing over the
    // same images must still leave every signature on every image.
    const BATCHES: usize = 3;
    const IMAGES: usize = 12;
    let reg = TestRegistry::start();
    let digests: Vec<String> = (0..IMAGES)
        .map(|i| reg.push_image("app", &format!("v{i}")))
        .collect();
    let images: Vec<String> = (0..IMAGES)
        .map(|i| reg.image("app", &format!("v{i}")))
        .collect();
    let barrier = Arc::new(Barrier::new(BATCHES));
    let signers: Vec<P256Signer> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..BATCHES)
            .map(|b| {
                let (barrier, images, reg) = (Arc::clone(&barrier), images.clone(), &reg);
                s.spawn(move || {
                    let mut signer = P256Signer::new(&format!("k{b}"));
                    let opts = SignOptions {
                        // Fewer permits than images: attachments queue at the gate.
                        push_concurrency: Some(1 + 2 * b),
                        ..Default::default()
                    };
                    barrier.wait();
                    let report = sign(reg, &images, &mut signer, &opts);
                    assert_eq!(report.succeeded(), IMAGES, "batch {b}: {report:#?}");
                    signer
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let client = reg.client();
    for (i, d) in digests.iter().enumerate() {
        assert_eq!(reg.signature_layers("app", d).len(), BATCHES, "image {i}");
        let image = ImageRef::parse(&images[i]).unwrap();
        for signer in &signers {
            assert_eq!(signer.records.len(), IMAGES);
            let v = verify_image(
                &client,
                &image,
                &[signer.public_key()],
                &VerifyOptions::default(),
            )
            .unwrap();
            assert!(v.verified(), "image {i}, key {}: {v:#?}", signer.name);
        }
    }
}

#[test]
fn signature_manifests_share_their_config_and_a_vanished_config_is_uploaded_again() {
    let reg = TestRegistry::start();
    let d1 = reg.push_image("app", "v1");
    let d2 = reg.push_image("app", "v2");
    let client = reg.client();
    let mut signer = P256Signer::new("k");
    let mut batch = |image: String| {
        let r = sign_images(
            &client,
            &[image],
            &mut signer,
            &SignOptions::default(),
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(r.succeeded(), 1, "{r:#?}");
    };
    let config_of = |d: &str| {
        let (status, body) = reg.get_manifest("app", &format!("{}.sig", d.replace(':', "-")));
        assert_eq!(status, 200);
        let m: serde_json::Value = serde_json::from_slice(&body).unwrap();
        m["config"]["digest"].as_str().unwrap().to_string()
    };
    batch(reg.image("app", "v1"));
    let config = config_of(&d1);
    // The registry loses the config blob; the client still believes it is there.
    let resp = registry::http(
        &reg.host(),
        "DELETE",
        &format!("/v2/app/blobs/{config}"),
        &[],
        &[],
    )
    .unwrap();
    assert_eq!(resp.status, 202, "{}", resp.text());
    // The manifest write is refused for the missing blob; keyward uploads it again.
    batch(reg.image("app", "v2"));
    assert_eq!(config_of(&d2), config, "one layer each: the same config");
    let head = registry::http(
        &reg.host(),
        "HEAD",
        &format!("/v2/app/blobs/{config}"),
        &[],
        &[],
    )
    .unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(reg.signature_layers("app", &d2).len(), 1);
}

#[test]
fn offline_signature_file_round_trip_and_attach() {
    let reg = TestRegistry::start();
    let d = reg.push_image("app", "v1");
    let image = ImageRef::parse(&format!("{}/app@{d}", reg.host())).unwrap();
    let mut signer = P256Signer::new("offline");
    let file = sign_offline(&image, &mut signer, &SignOptions::default()).unwrap();
    assert!(matches!(signer.records[0].outcome, Ok(Published::Offline)));
    assert!(
        reg.signature_layers("app", &d).is_empty(),
        "offline signing contacts no registry"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.sig.json");
    file.write(&path).unwrap();
    let back = SignatureFile::read(&path).unwrap();
    assert_eq!(back, file);
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    for k in ["format", "reference", "digest", "payload", "signature"] {
        assert!(json.get(k).is_some(), "{k}");
    }
    // A file whose signature does not verify with the given key is refused before upload.
    let other = P256Signer::new("other");
    let client = reg.client();
    let err = attach_file(
        &client,
        &back,
        Some(&other.public_key()),
        &AttachOptions::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("does not verify"), "{err}");
    assert!(reg.signature_layers("app", &d).is_empty());
    let out = attach_file(
        &client,
        &back,
        Some(&signer.public_key()),
        &AttachOptions::default(),
    )
    .unwrap();
    assert_eq!(out.added, 1);
    let v = verify_image(
        &client,
        &image,
        &[signer.public_key()],
        &VerifyOptions::default(),
    )
    .unwrap();
    assert!(v.verified());
    // Tag-only references cannot be signed offline.
    let tagged = ImageRef::parse(&reg.image("app", "v1")).unwrap();
    assert!(matches!(
        sign_offline(&tagged, &mut signer, &SignOptions::default()),
        Err(oci::OciError::DigestRequired { .. })
    ));
    // Tampered files are refused.
    let mut bad = back.clone();
    bad.digest = digest(&reg.push_image("app", "v2"));
    assert!(SignatureFile::from_json(&bad.to_json()).is_err());
    let mut junk = json.clone();
    junk["extra"] = "x".into();
    assert!(SignatureFile::from_json(junk.to_string().as_bytes()).is_err());
}

#[test]
fn user_annotations_cannot_override_provenance_or_reserved_keys() {
    let reg = TestRegistry::start();
    reg.push_image("app", "v1");
    let client = reg.client();
    let mut signer = P256Signer::new("k");
    for key in ["keyward.key", "timestamp", "creator"] {
        let opts = SignOptions {
            annotations: BTreeMap::from([(key.to_string(), "x".to_string())]),
            ..Default::default()
        };
        let err = sign_images(
            &client,
            &[reg.image("app", "v1")],
            &mut signer,
            &opts,
            &mut |_| {},
        )
        .unwrap_err();
        assert!(err.to_string().contains(key), "{err}");
    }
    assert_eq!(signer.sign_calls, 0);
}
