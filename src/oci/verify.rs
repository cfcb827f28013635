//! Verifying cosign key-based signatures, with the rules every verifier shares:
//!
//! - the hash is always SHA-256 over the raw payload bytes, whatever the key (containers/image
//!   hard-codes it; sigstore-rs uses SHA-384 for P-384 keys, so a P-384 signature cannot
//!   satisfy both: prefer P-256);
//! - ECDSA P-256 and P-384 signatures in DER, raw `r||s` also accepted; RSA PKCS#1 v1.5;
//!   Ed25519 (pure, over the payload);
//! - the payload must name the image's manifest digest and, unless disabled, its repository;
//! - annotation constraints `KEY=VALUE` must equal `optional[KEY]`.

use std::collections::BTreeMap;

use base64::Engine as _;
use ecdsa::signature::hazmat::PrehashVerifier as _;
use sha2::{Digest as _, Sha256};
use signature::Verifier as _;
use spki::der::Decode as _;
use spki::{DecodePublicKey as _, ObjectIdentifier};

use super::error::OciError;
use super::payload::{validate_containers_image, ParsedPayload, SIMPLE_SIGNING_TYPE};
use super::reference::{Digest, ImageRef};
use super::registry::RegistryClient;
use super::signature::{list_async, StoredSignature};

const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const ID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

#[derive(Clone)]
enum KeyKind {
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    Rsa(Box<rsa::pkcs1v15::VerifyingKey<Sha256>>),
    Ed25519(ed25519_dalek::VerifyingKey),
}

/// A public key to verify signatures with, parsed from a SubjectPublicKeyInfo.
#[derive(Clone)]
pub struct PublicKey {
    kind: KeyKind,
    spki_der: Vec<u8>,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicKey")
            .field("algorithm", &self.algorithm())
            .field("key_id", &self.key_id())
            .finish()
    }
}

impl PublicKey {
    /// Parses a DER SubjectPublicKeyInfo: EC P-256 or P-384, RSA, or Ed25519.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, OciError> {
        let bad = |e: &dyn std::fmt::Display| OciError::PublicKey(e.to_string());
        let info = spki::SubjectPublicKeyInfoRef::from_der(der).map_err(|e| bad(&e))?;
        let oid = info.algorithm.oid;
        let kind = if oid == ID_EC_PUBLIC_KEY {
            let curve = info.algorithm.parameters_oid().map_err(|e| bad(&e))?;
            if curve == SECP256R1 {
                KeyKind::P256(
                    p256::ecdsa::VerifyingKey::from_public_key_der(der).map_err(|e| bad(&e))?,
                )
            } else if curve == SECP384R1 {
                KeyKind::P384(
                    p384::ecdsa::VerifyingKey::from_public_key_der(der).map_err(|e| bad(&e))?,
                )
            } else {
                return Err(OciError::PublicKey(format!(
                    "unsupported elliptic curve {curve} (P-256 and P-384 are supported)"
                )));
            }
        } else if oid == RSA_ENCRYPTION {
            let key = rsa::RsaPublicKey::from_public_key_der(der).map_err(|e| bad(&e))?;
            KeyKind::Rsa(Box::new(rsa::pkcs1v15::VerifyingKey::<Sha256>::new(key)))
        } else if oid == ID_ED25519 {
            KeyKind::Ed25519(
                ed25519_dalek::VerifyingKey::from_public_key_der(der).map_err(|e| bad(&e))?,
            )
        } else {
            return Err(OciError::PublicKey(format!(
                "unsupported key algorithm {oid}"
            )));
        };
        Ok(PublicKey {
            kind,
            spki_der: der.to_vec(),
        })
    }

    /// Parses a `-----BEGIN PUBLIC KEY-----` PEM (what `cosign verify --key` reads).
    pub fn from_pem(pem: &str) -> Result<Self, OciError> {
        let (label, doc) =
            spki::Document::from_pem(pem).map_err(|e| OciError::PublicKey(e.to_string()))?;
        if label != "PUBLIC KEY" {
            return Err(OciError::PublicKey(format!(
                "PEM label {label:?}, expected \"PUBLIC KEY\""
            )));
        }
        PublicKey::from_spki_der(doc.as_bytes())
    }

    /// The DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// The key id keyward shows: SHA-256 of the DER SubjectPublicKeyInfo, hex.
    pub fn key_id(&self) -> String {
        hex::encode(Sha256::digest(&self.spki_der))
    }

    /// `ecdsa-p256`, `ecdsa-p384`, `rsa` or `ed25519`.
    pub fn algorithm(&self) -> &'static str {
        match self.kind {
            KeyKind::P256(_) => "ecdsa-p256",
            KeyKind::P384(_) => "ecdsa-p384",
            KeyKind::Rsa(_) => "rsa",
            KeyKind::Ed25519(_) => "ed25519",
        }
    }

    /// Verifies `signature` over `payload` with the cosign/containers rules (SHA-256 always).
    pub fn verify(&self, payload: &[u8], signature: &[u8]) -> Result<(), String> {
        let prehash = Sha256::digest(payload);
        match &self.kind {
            KeyKind::P256(vk) => {
                let sig = p256::ecdsa::Signature::from_der(signature)
                    .or_else(|_| p256::ecdsa::Signature::from_slice(signature))
                    .map_err(|_| "not an ECDSA P-256 signature (DER or r||s)".to_string())?;
                vk.verify_prehash(&prehash, &sig)
                    .map_err(|_| "signature does not verify".to_string())
            }
            KeyKind::P384(vk) => {
                let sig = p384::ecdsa::Signature::from_der(signature)
                    .or_else(|_| p384::ecdsa::Signature::from_slice(signature))
                    .map_err(|_| "not an ECDSA P-384 signature (DER or r||s)".to_string())?;
                vk.verify_prehash(&prehash, &sig)
                    .map_err(|_| "signature does not verify".to_string())
            }
            KeyKind::Rsa(vk) => {
                let sig = rsa::pkcs1v15::Signature::try_from(signature)
                    .map_err(|_| "not an RSA signature".to_string())?;
                vk.verify(payload, &sig)
                    .map_err(|_| "signature does not verify".to_string())
            }
            KeyKind::Ed25519(vk) => {
                let sig = ed25519_dalek::Signature::from_slice(signature)
                    .map_err(|_| "not an Ed25519 signature".to_string())?;
                vk.verify(payload, &sig)
                    .map_err(|_| "signature does not verify".to_string())
            }
        }
    }
}

/// What to require of a signature beyond the cryptography and the digest.
#[derive(Clone, Debug)]
pub struct VerifyOptions {
    /// `KEY=VALUE` constraints: `optional[KEY]` must equal `VALUE` (non-string values compare
    /// as their JSON text, so `timestamp=1764000000` works).
    pub annotations: BTreeMap<String, String>,
    /// Require `docker-reference` to name the image's repository (default true; cosign itself
    /// does not check it, containers/image with `matchRepository` does).
    pub check_identity: bool,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            annotations: BTreeMap::new(),
            check_identity: true,
        }
    }
}

/// Why a signature was or was not accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Signed by one of the keys, for this digest and repository, constraints met.
    Verified,
    /// The layer has no signature annotation, or it is not base64.
    MalformedSignature(String),
    /// The signature does not verify with any of the keys: signed by another key, or the
    /// payload was altered.
    BadSignature,
    /// Signed by a key, but the payload is not a simple-signing payload.
    MalformedPayload(String),
    /// Signed by a key, but for another manifest (e.g. the tag was moved).
    DigestMismatch {
        /// The digest in the payload.
        signed: String,
        /// The digest of the image being verified.
        expected: Digest,
    },
    /// Signed by a key, but for another repository.
    IdentityMismatch {
        /// The docker-reference in the payload.
        signed: String,
        /// The repository being verified.
        expected: String,
    },
    /// Signed by a key, but an annotation constraint is not met.
    AnnotationMismatch {
        /// The annotation.
        key: String,
        /// The required value.
        expected: String,
        /// The signed value, if any.
        actual: Option<String>,
    },
    /// The layer's blob could not be fetched or does not match its descriptor.
    LayerRejected(String),
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Verified => write!(f, "verified"),
            Verdict::MalformedSignature(r) => write!(f, "malformed signature: {r}"),
            Verdict::BadSignature => write!(
                f,
                "bad signature: not made by the given key(s), or the payload was altered"
            ),
            Verdict::MalformedPayload(r) => write!(f, "malformed payload: {r}"),
            Verdict::DigestMismatch { signed, expected } => {
                write!(f, "digest mismatch: signed {signed}, image is {expected}")
            }
            Verdict::IdentityMismatch { signed, expected } => {
                write!(
                    f,
                    "identity mismatch: signed for {signed}, image is in {expected}"
                )
            }
            Verdict::AnnotationMismatch {
                key,
                expected,
                actual,
            } => match actual {
                Some(a) => write!(f, "annotation {key}={a:?}, required {expected:?}"),
                None => write!(f, "annotation {key} missing, required {expected:?}"),
            },
            Verdict::LayerRejected(r) => write!(f, "layer rejected: {r}"),
        }
    }
}

/// The verification of one signature layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureReport {
    /// The layer digest.
    pub layer_digest: String,
    /// The outcome.
    pub verdict: Verdict,
    /// Key id ([`PublicKey::key_id`]) of the key whose signature verified, if any.
    pub key_id: Option<String>,
    /// The signed docker-reference, when the signature verified.
    pub docker_reference: Option<String>,
    /// The payload's `optional` map as strings (signer, time, key, token, CI job,
    /// annotations), only when the signature verified: before that it is untrusted text.
    pub provenance: BTreeMap<String, String>,
    /// Whether containers/image (podman, skopeo, CRI-O) would parse this payload.
    pub containers_image: Result<(), String>,
}

impl SignatureReport {
    /// True when the verdict is [`Verdict::Verified`].
    pub fn verified(&self) -> bool {
        self.verdict == Verdict::Verified
    }
}

/// Verifies one stored signature against `keys` for `digest` in `image`'s repository.
pub fn verify_stored(
    sig: &StoredSignature,
    keys: &[PublicKey],
    image: &ImageRef,
    digest: &Digest,
    opts: &VerifyOptions,
) -> SignatureReport {
    let mut report = SignatureReport {
        layer_digest: sig.layer_digest.to_string(),
        verdict: Verdict::BadSignature,
        key_id: None,
        docker_reference: None,
        provenance: BTreeMap::new(),
        containers_image: validate_containers_image(&sig.payload),
    };
    let Some(b64) = &sig.signature_b64 else {
        report.verdict =
            Verdict::MalformedSignature("no dev.cosignproject.cosign/signature annotation".into());
        return report;
    };
    let raw = match base64::engine::general_purpose::STANDARD.decode(b64.trim()) {
        Ok(r) => r,
        Err(e) => {
            report.verdict = Verdict::MalformedSignature(format!("signature is not base64: {e}"));
            return report;
        }
    };
    let Some(key) = keys.iter().find(|k| k.verify(&sig.payload, &raw).is_ok()) else {
        return report;
    };
    report.key_id = Some(key.key_id());
    let parsed = match ParsedPayload::parse(&sig.payload) {
        Ok(p) => p,
        Err(e) => {
            report.verdict = Verdict::MalformedPayload(e);
            return report;
        }
    };
    report.docker_reference = Some(parsed.docker_reference.clone());
    report.provenance = parsed.provenance();
    report.verdict = judge(&parsed, image, digest, opts);
    report
}

fn judge(p: &ParsedPayload, image: &ImageRef, digest: &Digest, opts: &VerifyOptions) -> Verdict {
    if p.signature_type != SIMPLE_SIGNING_TYPE {
        return Verdict::MalformedPayload(format!("critical.type is {:?}", p.signature_type));
    }
    if p.manifest_digest != digest.as_str() {
        return Verdict::DigestMismatch {
            signed: p.manifest_digest.clone(),
            expected: digest.clone(),
        };
    }
    if opts.check_identity && !image.same_repository(&p.docker_reference) {
        return Verdict::IdentityMismatch {
            signed: p.docker_reference.clone(),
            expected: image.docker_reference(),
        };
    }
    let prov = p.provenance();
    for (k, want) in &opts.annotations {
        let actual = prov.get(k);
        if actual != Some(want) {
            return Verdict::AnnotationMismatch {
                key: k.clone(),
                expected: want.clone(),
                actual: actual.cloned(),
            };
        }
    }
    Verdict::Verified
}

/// The verification of every signature attached to an image.
#[derive(Clone, Debug)]
pub struct ImageVerification {
    /// The image as given.
    pub image: ImageRef,
    /// The manifest digest that was verified (the tag resolved now).
    pub digest: Digest,
    /// One report per simple-signing layer, in manifest order.
    pub reports: Vec<SignatureReport>,
}

impl ImageVerification {
    /// True when at least one signature verified (one accepted signature admits an image).
    pub fn verified(&self) -> bool {
        self.reports.iter().any(SignatureReport::verified)
    }
}

/// Resolves `image` and verifies every signature attached to its digest against `keys`.
/// Registry errors are errors; a missing `.sig` tag gives an empty report list.
pub fn verify_image(
    client: &RegistryClient,
    image: &ImageRef,
    keys: &[PublicKey],
    opts: &VerifyOptions,
) -> Result<ImageVerification, OciError> {
    client.runtime().block_on(async {
        let inner = client.inner();
        let digest = inner.resolve(image).await?;
        let listing = list_async(inner, image, &digest).await?;
        let mut reports: Vec<SignatureReport> = listing
            .signatures
            .iter()
            .map(|s| verify_stored(s, keys, image, &digest, opts))
            .collect();
        reports.extend(listing.rejected.into_iter().map(|r| SignatureReport {
            layer_digest: r.layer_digest,
            verdict: Verdict::LayerRejected(r.reason),
            key_id: None,
            docker_reference: None,
            provenance: BTreeMap::new(),
            containers_image: Err("layer not readable".into()),
        }));
        Ok(ImageVerification {
            image: image.clone(),
            digest,
            reports,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::payload::Payload;
    use p256::pkcs8::EncodePublicKey as _;

    fn stored(payload: Vec<u8>, sig: &[u8]) -> StoredSignature {
        StoredSignature {
            layer_digest: Digest::of(&payload),
            signature_b64: Some(base64::engine::general_purpose::STANDARD.encode(sig)),
            payload,
            annotations: BTreeMap::new(),
        }
    }

    fn p256_pair(seed: u8) -> (p256::ecdsa::SigningKey, PublicKey) {
        let sk = p256::ecdsa::SigningKey::from_slice(&[seed; 32]).unwrap();
        let der = sk.verifying_key().to_public_key_der().unwrap();
        (sk, PublicKey::from_spki_der(der.as_bytes()).unwrap())
    }

    #[test]
    fn verdicts() {
        let image = ImageRef::parse("reg.io/app:1").unwrap();
        let digest = Digest::of(b"manifest");
        let mut p = Payload::new(&image, &digest);
        p.annotations.insert("env".into(), "prod".into());
        p.timestamp = Some(5);
        let payload = p.to_bytes().unwrap();
        let (sk, pk) = p256_pair(7);
        let (_, other) = p256_pair(9);
        let sig: p256::ecdsa::Signature = signature::Signer::sign(&sk, &payload);
        let opts = VerifyOptions::default();
        let pks = [pk.clone()];
        let others = [other.clone()];

        let ok = verify_stored(
            &stored(payload.clone(), sig.to_der().as_bytes()),
            &pks,
            &image,
            &digest,
            &opts,
        );
        assert_eq!(ok.verdict, Verdict::Verified);
        assert_eq!(ok.provenance["env"], "prod");
        assert_eq!(ok.key_id, Some(pk.key_id()));
        // raw r||s
        let raw = verify_stored(
            &stored(payload.clone(), &sig.to_bytes()),
            &pks,
            &image,
            &digest,
            &opts,
        );
        assert!(raw.verified());
        // wrong key
        let wrong = verify_stored(
            &stored(payload.clone(), sig.to_der().as_bytes()),
            &others,
            &image,
            &digest,
            &opts,
        );
        assert_eq!(wrong.verdict, Verdict::BadSignature);
        assert!(wrong.provenance.is_empty());
        // any of several keys
        assert!(verify_stored(
            &stored(payload.clone(), sig.to_der().as_bytes()),
            &[other, pk.clone()],
            &image,
            &digest,
            &opts
        )
        .verified());
        // digest mismatch
        let moved = verify_stored(
            &stored(payload.clone(), sig.to_der().as_bytes()),
            &pks,
            &image,
            &Digest::of(b"x"),
            &opts,
        );
        assert!(matches!(moved.verdict, Verdict::DigestMismatch { .. }));
        // identity mismatch
        let elsewhere = ImageRef::parse("reg.io/other").unwrap();
        let id = verify_stored(
            &stored(payload.clone(), sig.to_der().as_bytes()),
            &pks,
            &elsewhere,
            &digest,
            &opts,
        );
        assert!(matches!(id.verdict, Verdict::IdentityMismatch { .. }));
        // annotations
        let mut want = VerifyOptions::default();
        want.annotations.insert("env".into(), "prod".into());
        want.annotations.insert("timestamp".into(), "5".into());
        assert!(verify_stored(
            &stored(payload.clone(), sig.to_der().as_bytes()),
            &pks,
            &image,
            &digest,
            &want
        )
        .verified());
        want.annotations.insert("env".into(), "dev".into());
        let ann = verify_stored(
            &stored(payload.clone(), sig.to_der().as_bytes()),
            &pks,
            &image,
            &digest,
            &want,
        );
        assert!(matches!(ann.verdict, Verdict::AnnotationMismatch { .. }));
        // malformed payload, correctly signed
        let junk = b"{\"not\":\"a payload\"}".to_vec();
        let jsig: p256::ecdsa::Signature = signature::Signer::sign(&sk, &junk);
        let mp = verify_stored(
            &stored(junk, jsig.to_der().as_bytes()),
            &pks,
            &image,
            &digest,
            &opts,
        );
        assert!(matches!(mp.verdict, Verdict::MalformedPayload(_)));
        // tampered payload
        let mut tampered = payload.clone();
        tampered[10] ^= 1;
        let t = verify_stored(
            &stored(tampered, sig.to_der().as_bytes()),
            &pks,
            &image,
            &digest,
            &opts,
        );
        assert_eq!(t.verdict, Verdict::BadSignature);
        // no annotation / bad base64
        let mut s = stored(payload.clone(), b"");
        s.signature_b64 = None;
        assert!(matches!(
            verify_stored(&s, &pks, &image, &digest, &opts).verdict,
            Verdict::MalformedSignature(_)
        ));
        s.signature_b64 = Some("%%%".into());
        assert!(matches!(
            verify_stored(&s, &pks, &image, &digest, &opts).verdict,
            Verdict::MalformedSignature(_)
        ));
    }

    #[test]
    fn other_key_types_hash_with_sha256() {
        use rand::rngs::OsRng;
        let payload = b"payload bytes".to_vec();
        // P-384 over SHA-256 (not SHA-384)
        let sk = p384::ecdsa::SigningKey::random(&mut OsRng);
        let pk =
            PublicKey::from_spki_der(sk.verifying_key().to_public_key_der().unwrap().as_bytes())
                .unwrap();
        let sig: p384::ecdsa::Signature =
            ecdsa::signature::hazmat::PrehashSigner::sign_prehash(&sk, &Sha256::digest(&payload))
                .unwrap();
        assert!(pk.verify(&payload, sig.to_der().as_bytes()).is_ok());
        assert_eq!(pk.algorithm(), "ecdsa-p384");
        let sha384_sig: p384::ecdsa::Signature = signature::Signer::sign(&sk, &payload);
        assert!(pk.verify(&payload, sha384_sig.to_der().as_bytes()).is_err());
        // Ed25519
        let sk = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        let pk = PublicKey::from_spki_der(
            ed25519_dalek::pkcs8::EncodePublicKey::to_public_key_der(&sk.verifying_key())
                .unwrap()
                .as_bytes(),
        )
        .unwrap();
        let sig = signature::Signer::<ed25519_dalek::Signature>::sign(&sk, &payload);
        assert!(pk.verify(&payload, &sig.to_bytes()).is_ok());
        assert!(pk.verify(b"other", &sig.to_bytes()).is_err());
        // RSA PKCS#1 v1.5 SHA-256
        let rsk = rsa::RsaPrivateKey::new(&mut OsRng, 2048).unwrap();
        let der = rsa::pkcs8::EncodePublicKey::to_public_key_der(&rsk.to_public_key()).unwrap();
        let pk = PublicKey::from_spki_der(der.as_bytes()).unwrap();
        let signer = rsa::pkcs1v15::SigningKey::<Sha256>::new(rsk);
        let sig = signature::Signer::sign(&signer, &payload);
        assert!(pk
            .verify(&payload, &signature::SignatureEncoding::to_vec(&sig))
            .is_ok());
        assert!(pk
            .verify(b"other", &signature::SignatureEncoding::to_vec(&sig))
            .is_err());
        assert!(PublicKey::from_spki_der(b"junk").is_err());
    }
}
