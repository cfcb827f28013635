//! Verifier configurations rendered from a bundle manifest: containers/image (podman, CRI-O,
//! skopeo), sigstore policy-controller, Kyverno. Transparency-log checks are off: keyward's
//! signatures are key-based and not uploaded to a transparency log.
//!
//! tests/bundle_verifiers.rs checks the output against containers-policy.json(5),
//! containers-registries.d(5) and the upstream policy-controller and Kyverno CRD schemas.

use super::Manifest;
use crate::error::{Error, Result};
use crate::keys::State;
use crate::oci::ImageRef;
use base64::Engine;
use serde_json::json;
use std::collections::BTreeMap;

pub const POLICY: &str = "containers/policy.json";
pub const POLICY_SINGLE: &str = "containers/policy-single-key.json";
pub const REGISTRIES_D: &str = "containers/registries.d/keyward.yaml";
pub const POLICY_CONTROLLER: &str = "kubernetes/policy-controller-clusterimagepolicy.yaml";
pub const KYVERNO: &str = "kubernetes/kyverno-clusterpolicy.yaml";

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
}

/// A YAML double-quoted scalar (JSON string syntax is valid YAML).
fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

fn block(pem: &str, indent: usize) -> String {
    let pad = " ".repeat(indent);
    pem.lines().map(|l| format!("{pad}{l}\n")).collect()
}

/// The registry host of a scope (`registry.example/team/app` → `registry.example`).
pub fn scope_registry(scope: &str) -> &str {
    scope.split('/').next().unwrap_or(scope)
}

/// A `--scope` repository spelled the way each verifier matches it.
struct Scope {
    /// `registry/repository` in the fully expanded form containers/image and Kyverno match
    /// (`docker.io/library/busybox`, not `busybox`).
    expanded: String,
    /// The same with Docker Hub spelled `index.docker.io`, as go-containerregistry's
    /// `Reference.Name()` (what policy-controller matches its globs against) spells it.
    ggcr: String,
}

/// The scopes, normalised and without duplicates (two spellings of one repository would
/// otherwise be two entries for one scope, which registries.d forbids), in the order given.
fn scopes(m: &Manifest) -> Result<Vec<Scope>> {
    let mut out: Vec<Scope> = Vec::new();
    for s in &m.scopes {
        let r =
            ImageRef::parse(s).map_err(|e| Error::Invalid(format!("invalid scope {s:?}: {e}")))?;
        let expanded = r.repository_name();
        if !out.iter().any(|o| o.expanded == expanded) {
            out.push(Scope {
                expanded,
                ggcr: r.docker_reference(),
            });
        }
    }
    Ok(out)
}

/// Trusted PEMs, oldest activation first, revoked ones excluded; and the index of the one
/// `policy-single-key.json` holds. That is the version `image resign` puts on every image:
/// the newest *active* version of a key (the newest trusted one when none is active); across
/// several keys, the most recently activated of those.
fn trusted_pems<'a>(
    m: &Manifest,
    pems: &'a BTreeMap<String, String>,
) -> (Vec<(String, &'a str)>, Option<usize>) {
    let trusted = m.trusted_ids();
    let mut keys: Vec<_> = m
        .keys
        .iter()
        .filter(|k| trusted.contains(&k.key_id) && pems.contains_key(&k.file))
        .collect();
    keys.sort_by_key(|k| (k.activated.clone().unwrap_or_default(), k.version));
    let any_active = keys.iter().any(|k| k.state == State::Active);
    let candidate = |k: &super::TrustedKey| !any_active || k.state == State::Active;
    let newest = keys
        .iter()
        .enumerate()
        .filter(|(_, k)| candidate(k))
        .filter(|(_, k)| {
            !keys
                .iter()
                .any(|o| candidate(o) && o.key == k.key && o.version > k.version)
        })
        .map(|(i, _)| i)
        .next_back();
    let out = keys
        .iter()
        .filter_map(|k| {
            pems.get(&k.file)
                .map(|p| (format!("{}-{}", k.key, k.version), p.as_str()))
        })
        .collect();
    (out, newest)
}

/// A Kubernetes object name from the bundle's key names: an RFC 1123 subdomain (lowercase
/// letters, digits and `-`, at most 253 characters, a letter or digit at each end).
fn object_name(m: &Manifest) -> String {
    let mut names: Vec<&str> = m.keys.iter().map(|k| k.key.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let mut out = String::from("keyward");
    for c in names
        .iter()
        .flat_map(|n| std::iter::once('-').chain(n.chars()))
    {
        let c = if c.is_ascii_alphanumeric() {
            c.to_ascii_lowercase()
        } else {
            '-'
        };
        if !(c == '-' && out.ends_with('-')) {
            out.push(c);
        }
    }
    out.truncate(253);
    out.trim_end_matches('-').to_owned()
}

pub fn render(m: &Manifest, pems: &BTreeMap<String, String>) -> Result<Vec<(String, Vec<u8>)>> {
    let (keys, newest) = trusted_pems(m, pems);
    let newest = newest
        .and_then(|i| keys.get(i))
        .ok_or_else(|| Error::Invalid("no trusted key to render verifier configurations".into()))?;
    let scopes = scopes(m)?;
    let mut out = Vec::new();

    // containers-policy.json(5): one sigstoreSigned requirement per scope; keyDatas = any one
    // key admits (containers/image >= 5.33). Scopes in the fully expanded form.
    let requirement = |datas: serde_json::Value| {
        let mut r = json!({
            "type": "sigstoreSigned",
            "signedIdentity": {"type": "matchRepository"},
        });
        if let (Some(obj), Some(d)) = (r.as_object_mut(), datas.as_object()) {
            for (k, v) in d {
                obj.insert(k.clone(), v.clone());
            }
        }
        r
    };
    let policy = |req: serde_json::Value| {
        let mut map = serde_json::Map::new();
        for s in &scopes {
            map.insert(s.expanded.clone(), json!([req.clone()]));
        }
        json!({
            "default": [{"type": "reject"}],
            "transports": {"docker": map},
        })
    };
    let all =
        requirement(json!({"keyDatas": keys.iter().map(|(_, p)| b64(p)).collect::<Vec<_>>()}));
    let single = requirement(json!({"keyData": b64(newest.1)}));
    let pretty = |v: serde_json::Value| {
        serde_json::to_vec_pretty(&v).map_err(|e| Error::Other(e.to_string()))
    };
    out.push((POLICY.to_string(), pretty(policy(all))?));
    out.push((POLICY_SINGLE.to_string(), pretty(policy(single))?));

    // containers-registries.d(5): turn on sigstore attachments for each scope.
    let mut reg = String::from(
        "# keyward: look for cosign-style signatures (sha256-<digest>.sig tags)\ndocker:\n",
    );
    for s in &scopes {
        reg.push_str(&format!(
            "  {}:\n    use-sigstore-attachments: true\n",
            q(&s.expanded)
        ));
    }
    out.push((REGISTRIES_D.to_string(), reg.into_bytes()));

    let name = object_name(m);

    // sigstore policy-controller: one key authority per trusted version; any one admits.
    // Globs match go-containerregistry's `Name()` of the image: `REPO:TAG` (`:latest` when
    // untagged) or `REPO@DIGEST`. `**` matches anything, `/` included, so `REPO**` would also
    // claim `REPO-other` and `REPO/sub`: each scope gets exactly its tags and its digests.
    // No `ctlog`: a key authority without one skips the transparency log.
    let mut cip = format!(
        "# keyward bundle {}: any one authority admits an image; no transparency log\napiVersion: policy.sigstore.dev/v1beta1\nkind: ClusterImagePolicy\nmetadata:\n  name: {name}\nspec:\n  images:\n",
        m.created,
    );
    for s in &scopes {
        for sep in [":", "@"] {
            cip.push_str(&format!(
                "    - glob: {}\n",
                q(&format!("{}{sep}**", s.ggcr))
            ));
        }
    }
    cip.push_str("  authorities:\n");
    for (n, pem) in &keys {
        cip.push_str(&format!(
            "    - name: {}\n      key:\n        hashAlgorithm: sha256\n        data: |\n{}",
            q(n),
            block(pem, 10)
        ));
    }
    out.push((POLICY_CONTROLLER.to_string(), cip.into_bytes()));

    // Kyverno: verifyImages with one keys attestor entry per trusted version, count 1.
    // imageReferences are matched against Kyverno's normalised `REGISTRY/REPO:TAG` or
    // `REGISTRY/REPO@DIGEST`, `*` matching anything: `REPO:*` and `REPO@*` are exactly the
    // scope's images.
    let mut ky = format!(
        "# keyward bundle {}: one signature by any trusted key admits an image\napiVersion: kyverno.io/v1\nkind: ClusterPolicy\nmetadata:\n  name: {name}\nspec:\n  webhookTimeoutSeconds: 30\n  rules:\n    - name: keyward-signatures\n      match:\n        any:\n          - resources:\n              kinds:\n                - Pod\n      verifyImages:\n        - imageReferences:\n",
        m.created,
    );
    for s in &scopes {
        for sep in [":", "@"] {
            ky.push_str(&format!(
                "            - {}\n",
                q(&format!("{}{sep}*", s.expanded))
            ));
        }
    }
    ky.push_str("          failureAction: Enforce\n          mutateDigest: true\n          verifyDigest: true\n          attestors:\n            - count: 1\n              entries:\n");
    for (_, pem) in &keys {
        ky.push_str(&format!(
            "                - keys:\n                    publicKeys: |-\n{}                    rekor:\n                      ignoreTlog: true\n                    ctlog:\n                      ignoreSCT: true\n",
            block(pem, 22)
        ));
    }
    out.push((KYVERNO.to_string(), ky.into_bytes()));

    // The plain PEM set for `cosign verify --key`.
    let mut readme = String::from("# cosign\n\nVerify with any one trusted key:\n\n");
    for (n, _) in &keys {
        readme.push_str(&format!(
            "    cosign verify --insecure-ignore-tlog --key keys/{n}.pem IMAGE\n"
        ));
    }
    out.push(("cosign/README.md".to_string(), readme.into_bytes()));
    Ok(out)
}
