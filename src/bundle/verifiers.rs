//! Verifier configurations rendered from a bundle manifest: containers/image (podman, CRI-O,
//! skopeo), sigstore policy-controller, Kyverno. Transparency-log checks are off: keyward's
//! signatures are key-based and not uploaded to a transparency log.

use super::Manifest;
use crate::error::{Error, Result};
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

/// Trusted PEMs in manifest order (newest last), revoked ones excluded.
fn trusted_pems<'a>(m: &Manifest, pems: &'a BTreeMap<String, String>) -> Vec<(String, &'a str)> {
    let trusted = m.trusted_ids();
    let mut keys: Vec<_> = m
        .keys
        .iter()
        .filter(|k| trusted.contains(&k.key_id))
        .collect();
    keys.sort_by_key(|k| (k.activated.clone().unwrap_or_default(), k.version));
    keys.iter()
        .filter_map(|k| {
            pems.get(&k.file)
                .map(|p| (format!("{}-{}", k.key, k.version), p.as_str()))
        })
        .collect()
}

pub fn render(m: &Manifest, pems: &BTreeMap<String, String>) -> Result<Vec<(String, Vec<u8>)>> {
    let keys = trusted_pems(m, pems);
    let newest = keys
        .last()
        .ok_or_else(|| Error::Invalid("no trusted key to render verifier configurations".into()))?;
    let mut out = Vec::new();

    // containers-policy.json(5): one sigstoreSigned requirement per scope; keyDatas = any one
    // key admits (containers/image >= 5.33).
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
        let mut scopes = serde_json::Map::new();
        for s in &m.scopes {
            scopes.insert(s.clone(), json!([req.clone()]));
        }
        json!({
            "default": [{"type": "reject"}],
            "transports": {"docker": scopes},
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
    for s in &m.scopes {
        reg.push_str(&format!(
            "  {}:\n    use-sigstore-attachments: true\n",
            q(s)
        ));
    }
    out.push((REGISTRIES_D.to_string(), reg.into_bytes()));

    let name = |suffix: &str| {
        let base: String = m
            .keys
            .first()
            .map(|k| k.key.to_lowercase())
            .unwrap_or_else(|| "keys".into())
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        format!("keyward-{base}{suffix}")
    };

    // sigstore policy-controller: one key authority per trusted version; any one admits.
    let mut cip = format!(
        "# keyward bundle {}: any one authority admits an image; no transparency log\napiVersion: policy.sigstore.dev/v1beta1\nkind: ClusterImagePolicy\nmetadata:\n  name: {}\nspec:\n  images:\n",
        m.created,
        name("")
    );
    for s in &m.scopes {
        cip.push_str(&format!("    - glob: {}\n", q(&format!("{s}**"))));
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
    let mut ky = format!(
        "# keyward bundle {}: one signature by any trusted key admits an image\napiVersion: kyverno.io/v1\nkind: ClusterPolicy\nmetadata:\n  name: {}\nspec:\n  webhookTimeoutSeconds: 30\n  rules:\n    - name: keyward-signatures\n      match:\n        any:\n          - resources:\n              kinds:\n                - Pod\n      verifyImages:\n        - imageReferences:\n",
        m.created,
        name("")
    );
    for s in &m.scopes {
        ky.push_str(&format!("            - {}\n", q(&format!("{s}*"))));
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
