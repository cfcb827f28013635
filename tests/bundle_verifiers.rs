//! Conformance of the verifier configurations a distribution bundle carries (issue 7), for a
//! bundle exported through the CLI with two trusted versions, one compromised version and two
//! scopes:
//! - the policy-controller `ClusterImagePolicy` and the Kyverno `ClusterPolicy` are validated
//!   structurally against the upstream CRD schemas kept in tests/fixtures/crds (see its
//!   README for sources and licences), made as strict as the API server is about unknown
//!   fields, and then checked for what they mean: one authority / attestor entry per trusted
//!   version, no compromised key, image patterns covering exactly the scopes, `count: 1`, no
//!   transparency log;
//! - `containers/policy.json`, `containers/policy-single-key.json` and
//!   `containers/registries.d/keyward.yaml` are checked against the rules of
//!   containers-policy.json(5) and containers-registries.d(5) (containers/image 5.33+),
//!   written out below as checkers;
//! - `bundle verify` catches a changed, added or removed file and a wrong signing key.
#![allow(clippy::unwrap_used)]

mod support;

use base64::Engine;
use serde::de::{DeserializeSeed, Error as _, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use support::*;

const SCOPES: [&str; 2] = ["registry.example.com/team/app", "localhost:5000/ops/tool"];
const POLICY_CONTROLLER_CRD: &str = "policy-controller-clusterimagepolicies.yaml";
const KYVERNO_CRD: &str = "kyverno-clusterpolicies.yaml";
const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

// ---------------------------------------------------------------------------------------------
// The bundle under test

struct Bundle {
    w: World,
    dir: PathBuf,
    /// Key id → `NAME-VERSION` of each version the bundle must trust, from `key public-key`.
    trusted: BTreeMap<String, String>,
    /// Key id of the version `policy-single-key.json` must hold (release/3).
    newest: String,
    revoked_pem: String,
    revoked_id: String,
    signer_pem: String,
    other_pem: String,
}

impl Bundle {
    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.dir.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }
    fn manifest(&self) -> Value {
        serde_json::from_str(&self.read("bundle.json")).unwrap()
    }
}

/// release/1, /2, /3 on SoftHSM2 (two rotations with an overlap: all three active), then
/// release/1 compromised; a bundle of `release` for `scopes`, signed on the token.
fn export(scopes: &[&str]) -> Bundle {
    let w = World::new();
    w.init_hsm("hsm");
    w.ok(&["key", "generate", "release", "--token", "hsm"]);
    w.ok(&["key", "rotate", "release", "--overlap", "30d"]);
    w.ok(&["key", "rotate", "release", "--overlap", "30d"]);
    w.ok(&[
        "key",
        "compromise",
        "release/1",
        "--since",
        "2026-01-01T00:00:00Z",
        "--reason",
        "laptop stolen",
    ]);
    w.ok(&["key", "generate", "bundle-signing", "--token", "hsm"]);
    w.ok(&["key", "generate", "other", "--token", "hsm"]);
    let dir = w.path().join("bundle");
    let mut args = vec!["bundle", "export", "--key", "release"];
    for s in scopes {
        args.extend(["--scope", s]);
    }
    let out = dir.to_str().unwrap().to_owned();
    args.extend(["--output", out.as_str(), "--sign-with", "bundle-signing"]);
    w.ok(&args);

    let pem = |v: &str| w.ok(&["key", "public-key", v]);
    let trusted: BTreeMap<String, String> = ["2", "3"]
        .iter()
        .map(|v| {
            (
                key_id(&pem(&format!("release/{v}"))),
                format!("release-{v}"),
            )
        })
        .collect();
    let newest = key_id(&pem("release/3"));
    let revoked_pem = pem("release/1");
    Bundle {
        revoked_id: key_id(&revoked_pem),
        revoked_pem,
        signer_pem: pem("bundle-signing"),
        other_pem: pem("other"),
        trusted,
        newest,
        dir,
        w,
    }
}

/// The key id keyward uses: SHA-256 of the SubjectPublicKeyInfo DER, in hex.
fn key_id(pem: &str) -> String {
    assert!(
        pem.starts_with("-----BEGIN PUBLIC KEY-----\n"),
        "not an SPKI PEM: {pem:?}"
    );
    assert!(
        pem.trim_end().ends_with("-----END PUBLIC KEY-----"),
        "{pem:?}"
    );
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap();
    hex::encode(Sha256::digest(der))
}

fn pem_body(pem: &str) -> String {
    pem.lines().filter(|l| !l.starts_with("-----")).collect()
}

fn b64decode_utf8(s: &str) -> String {
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .unwrap_or_else(|e| panic!("not base64 ({e}): {s:?}")),
    )
    .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Parsing: JSON and YAML without duplicate keys (policy.json(5) rejects duplicated fields,
// registries.d(5) allows one instance of any key)

/// Walks a document and fails on a mapping that repeats a key.
struct NoDuplicateKeys;

impl<'de> DeserializeSeed<'de> for NoDuplicateKeys {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NoDuplicateKeys {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<(), A::Error> {
        while a.next_element_seed(NoDuplicateKeys)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<(), A::Error> {
        let mut seen = BTreeSet::new();
        while let Some(k) = a.next_key::<String>()? {
            if !seen.insert(k.clone()) {
                return Err(A::Error::custom(format!("duplicate key {k:?}")));
            }
            a.next_value_seed(NoDuplicateKeys)?;
        }
        Ok(())
    }
}

fn parse_json(text: &str) -> Result<Value, String> {
    NoDuplicateKeys
        .deserialize(&mut serde_json::Deserializer::from_str(text))
        .map_err(|e| e.to_string())?;
    serde_json::from_str(text).map_err(|e| e.to_string())
}

/// A single-document YAML file.
fn parse_yaml(text: &str) -> Result<Value, String> {
    NoDuplicateKeys
        .deserialize(serde_norway::Deserializer::from_str(text))
        .map_err(|e| e.to_string())?;
    serde_norway::from_str(text).map_err(|e| e.to_string())
}

fn yaml_documents(text: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).unwrap())
        .collect()
}

fn keys_of(v: &Value) -> BTreeSet<&str> {
    v.as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// CRD schemas

fn fixture(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/crds")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The `openAPIV3Schema` of the CRD version that `manifest`'s `apiVersion` and `kind` name,
/// after checking that the CRD is cluster-scoped and the version served and not deprecated.
fn crd_schema(fixture_name: &str, manifest: &Value) -> Value {
    let (group, version) = manifest["apiVersion"]
        .as_str()
        .unwrap()
        .split_once('/')
        .unwrap();
    let kind = manifest["kind"].as_str().unwrap();
    let crds: Vec<Value> = yaml_documents(&fixture(fixture_name))
        .into_iter()
        .filter(|d| {
            d["kind"] == "CustomResourceDefinition"
                && d["spec"]["group"] == group
                && d["spec"]["names"]["kind"] == kind
        })
        .collect();
    assert_eq!(
        crds.len(),
        1,
        "one CRD for {group} {kind} in {fixture_name}"
    );
    let crd = &crds[0];
    assert_eq!(crd["apiVersion"], "apiextensions.k8s.io/v1");
    assert_eq!(crd["spec"]["scope"], "Cluster", "{kind} is cluster-scoped");
    let v = crd["spec"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == version)
        .unwrap_or_else(|| panic!("{fixture_name} has no version {version}"));
    assert_eq!(v["served"], true, "{group}/{version} is served");
    assert_ne!(v["deprecated"], true, "{group}/{version} is deprecated");
    v["schema"]["openAPIV3Schema"].clone()
}

/// Turns a CRD's structural OpenAPI v3 schema into a draft-4 JSON Schema that rejects what the
/// API server rejects with strict field validation (kubectl's default): an object that lists
/// `properties` accepts no other field unless it is marked `x-kubernetes-preserve-unknown-fields`.
/// `nullable` becomes a `null` type. Other `x-kubernetes-*` extensions are ignored (CEL
/// `x-kubernetes-validations` cannot be evaluated here). `apiVersion`, `kind` and `metadata`
/// are always allowed at the root, as the API server allows them. Value validations
/// (`allOf`/`anyOf`/`oneOf`/`not`) are left as they are: structural schemas may only repeat
/// fields there.
fn strict_schema(schema: &mut Value, root: bool) {
    let Some(obj) = schema.as_object_mut() else {
        return;
    };
    if obj.get("nullable") == Some(&Value::Bool(true)) {
        if let Some(Value::String(t)) = obj.get("type").cloned() {
            obj.insert("type".into(), json!([t, "null"]));
        }
    }
    let preserve = obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    obj.retain(|k, _| !k.starts_with("x-kubernetes-") && k != "nullable");
    if root {
        let props = obj
            .entry("properties")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .unwrap();
        for (k, t) in [
            ("apiVersion", "string"),
            ("kind", "string"),
            ("metadata", "object"),
        ] {
            props.entry(k).or_insert_with(|| json!({ "type": t }));
        }
    }
    if obj.contains_key("properties") && !obj.contains_key("additionalProperties") && !preserve {
        obj.insert("additionalProperties".into(), Value::Bool(false));
    }
    if let Some(Value::Object(props)) = obj.get_mut("properties") {
        for p in props.values_mut() {
            strict_schema(p, false);
        }
    }
    for k in ["items", "additionalProperties"] {
        match obj.get_mut(k) {
            Some(Value::Array(items)) => items.iter_mut().for_each(|i| strict_schema(i, false)),
            Some(v @ Value::Object(_)) => strict_schema(v, false),
            _ => {}
        }
    }
}

struct CrdValidator(jsonschema::Validator);

impl CrdValidator {
    fn new(fixture_name: &str, manifest: &Value) -> Self {
        let mut schema = crd_schema(fixture_name, manifest);
        strict_schema(&mut schema, true);
        CrdValidator(jsonschema::draft4::new(&schema).expect("the CRD schema compiles as draft 4"))
    }
    fn errors(&self, doc: &Value) -> Vec<String> {
        self.0
            .iter_errors(doc)
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect()
    }
    fn assert_valid(&self, what: &str, doc: &Value) {
        let errors = self.errors(doc);
        assert!(
            errors.is_empty(),
            "{what} violates its CRD schema:\n{}",
            errors.join("\n")
        );
    }
    /// A broken copy of a valid document must be rejected: the schema check is not vacuous.
    fn assert_rejects(&self, what: &str, doc: &Value, pointer: &str, value: Value) {
        let mut bad = doc.clone();
        let (parent, field) = pointer.rsplit_once('/').unwrap();
        bad.pointer_mut(parent)
            .and_then(Value::as_object_mut)
            .unwrap_or_else(|| panic!("{parent} in {what}"))
            .insert(field.into(), value.clone());
        assert!(
            !self.errors(&bad).is_empty(),
            "the {what} schema accepts {pointer} = {value}"
        );
    }
}

/// Kubernetes object metadata as keyward writes it: a valid cluster-scoped object name.
fn check_metadata(what: &str, doc: &Value) {
    let meta = &doc["metadata"];
    let extra: Vec<_> = keys_of(meta)
        .into_iter()
        .filter(|k| !["name", "labels", "annotations"].contains(k))
        .collect();
    assert!(
        extra.is_empty(),
        "{what} metadata has {extra:?} (cluster-scoped: no namespace)"
    );
    let name = meta["name"].as_str().unwrap();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    assert!(
        name.len() <= 253 && name.split('.').all(label_ok),
        "{what} name {name:?} is not an RFC 1123 subdomain"
    );
}

/// Scope images that a pattern covering `scope` must match, and near misses it must not.
fn scope_probes(scope: &str) -> (Vec<String>, Vec<String>) {
    let must = vec![
        format!("{scope}:1.0"),
        format!("{scope}:latest"),
        format!("{scope}@{DIGEST}"),
    ];
    let (host, path) = scope.split_once('/').unwrap();
    let must_not = vec![
        format!("{scope}-evil:1.0"),
        format!("{scope}evil@{DIGEST}"),
        format!("{scope}/sub:1.0"),
        format!("{host}/other/{path}:1.0"),
        format!("evil.example/{path}:1.0"),
        format!("{host}.evil.example/{path}:1.0"),
    ];
    (must, must_not)
}

/// Every image of each scope matches some pattern; no near miss matches any.
fn assert_patterns_cover_exactly(
    what: &str,
    patterns: &[String],
    scopes: &[&str],
    matches: impl Fn(&str, &str) -> bool,
) {
    for scope in scopes {
        let (must, must_not) = scope_probes(scope);
        for image in &must {
            assert!(
                patterns.iter().any(|p| matches(p, image)),
                "{what}: no pattern of {patterns:?} covers {image}"
            );
        }
        for image in &must_not {
            if scopes.iter().any(|s| image.starts_with(&format!("{s}:"))) {
                continue;
            }
            let hit: Vec<_> = patterns.iter().filter(|p| matches(p, image)).collect();
            assert!(
                hit.is_empty(),
                "{what}: {hit:?} also claim {image}, outside the scopes"
            );
        }
    }
}

/// policy-controller's glob (pkg/apis/glob): `**` matches anything, `*` anything but `/`, the
/// whole name must match.
fn policy_controller_glob(glob: &str, image: &str) -> bool {
    fn m(p: &[u8], s: &[u8]) -> bool {
        match p {
            [] => s.is_empty(),
            [b'*', b'*', rest @ ..] => (0..=s.len()).any(|i| m(rest, &s[i..])),
            [b'*', rest @ ..] => (0..=s.len())
                .take_while(|&i| !s[..i].contains(&b'/'))
                .any(|i| m(rest, &s[i..])),
            [c, rest @ ..] => s.first() == Some(c) && m(rest, &s[1..]),
        }
    }
    m(glob.as_bytes(), image.as_bytes())
}

/// Kyverno's wildcard match (go-wildcard): `*` matches anything, `?` one character.
fn kyverno_wildcard(pattern: &str, image: &str) -> bool {
    fn m(p: &[u8], s: &[u8]) -> bool {
        match p {
            [] => s.is_empty(),
            [b'*', rest @ ..] => (0..=s.len()).any(|i| m(rest, &s[i..])),
            [b'?', rest @ ..] => !s.is_empty() && m(rest, &s[1..]),
            [c, rest @ ..] => s.first() == Some(c) && m(rest, &s[1..]),
        }
    }
    m(pattern.as_bytes(), image.as_bytes())
}

/// Key ids of PEM strings, each checked to be one of the bundle's key files byte for byte.
fn pem_ids(b: &Bundle, pems: &[String]) -> Vec<String> {
    let manifest = b.manifest();
    pems.iter()
        .map(|pem| {
            let id = key_id(pem);
            let file = manifest["keys"]
                .as_array()
                .unwrap()
                .iter()
                .find(|k| k["key_id"] == id.as_str())
                .unwrap_or_else(|| panic!("key {id} is not in bundle.json"))["file"]
                .as_str()
                .unwrap()
                .to_owned();
            assert_eq!(pem.trim_end(), b.read(&file).trim_end(), "{file}");
            id
        })
        .collect()
}

fn assert_trusts_exactly(b: &Bundle, what: &str, ids: &[String]) {
    let set: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(set.len(), ids.len(), "{what}: a key appears twice");
    assert!(
        !set.contains(&b.revoked_id),
        "{what} trusts the compromised release/1"
    );
    assert_eq!(
        set,
        b.trusted.keys().collect::<BTreeSet<_>>(),
        "{what}: not exactly the trusted versions {:?}",
        b.trusted
    );
}

// ---------------------------------------------------------------------------------------------
// Kubernetes manifests

#[test]
fn policy_controller_cluster_image_policy_conforms_to_the_upstream_crd() {
    let b = export(&SCOPES);
    let text = b.read("kubernetes/policy-controller-clusterimagepolicy.yaml");
    let cip = parse_yaml(&text).unwrap();
    assert_eq!(cip["apiVersion"], "policy.sigstore.dev/v1beta1");
    assert_eq!(cip["kind"], "ClusterImagePolicy");

    let v = CrdValidator::new(POLICY_CONTROLLER_CRD, &cip);
    v.assert_valid("ClusterImagePolicy", &cip);
    check_metadata("ClusterImagePolicy", &cip);
    v.assert_rejects(
        "ClusterImagePolicy",
        &cip,
        "/spec/authorities/0/key/unknown",
        json!("x"),
    );
    v.assert_rejects("ClusterImagePolicy", &cip, "/spec/images/0/glob", json!(5));
    v.assert_rejects(
        "ClusterImagePolicy",
        &cip,
        "/spec/authorities",
        json!({"name": "x"}),
    );
    v.assert_rejects("ClusterImagePolicy", &cip, "/spec/typo", json!(true));

    let spec = &cip["spec"];
    // Admission enforces (the default mode) and only the key authorities decide.
    assert!(
        spec.get("mode").is_none() || spec["mode"] == "enforce",
        "{spec}"
    );
    assert!(
        spec.get("policy").is_none() && spec.get("match").is_none(),
        "{spec}"
    );

    // One key authority per trusted version, any one admitting; no transparency log (a key
    // authority without `ctlog` skips it), no keyless, no static, no timestamp authority.
    let authorities = spec["authorities"].as_array().unwrap();
    assert_eq!(authorities.len(), 2, "{authorities:?}");
    let mut names = BTreeSet::new();
    let mut pems = Vec::new();
    for a in authorities {
        assert_eq!(keys_of(a), BTreeSet::from(["name", "key"]), "{a}");
        assert!(
            names.insert(a["name"].as_str().unwrap()),
            "duplicate authority name"
        );
        assert_eq!(
            keys_of(&a["key"]),
            BTreeSet::from(["data", "hashAlgorithm"])
        );
        assert_eq!(a["key"]["hashAlgorithm"], "sha256");
        pems.push(a["key"]["data"].as_str().unwrap().to_owned());
    }
    let ids = pem_ids(&b, &pems);
    assert_trusts_exactly(&b, "ClusterImagePolicy", &ids);
    let names: BTreeSet<String> = names.into_iter().map(str::to_owned).collect();
    assert_eq!(names, b.trusted.values().cloned().collect::<BTreeSet<_>>());

    // Globs: exactly each scope's tags and digests.
    let globs: Vec<String> = spec["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            assert_eq!(keys_of(i), BTreeSet::from(["glob"]));
            i["glob"].as_str().unwrap().to_owned()
        })
        .collect();
    for g in &globs {
        assert!(
            g.bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"-_:/*.@".contains(&c)),
            "policy-controller rejects the glob {g:?}"
        );
    }
    let expected: BTreeSet<String> = SCOPES
        .iter()
        .flat_map(|s| [format!("{s}:**"), format!("{s}@**")])
        .collect();
    assert_patterns_cover_exactly(
        "ClusterImagePolicy",
        &globs,
        &SCOPES,
        policy_controller_glob,
    );
    assert_eq!(globs.iter().cloned().collect::<BTreeSet<_>>(), expected);
}

#[test]
fn kyverno_cluster_policy_conforms_to_the_upstream_crd() {
    let b = export(&SCOPES);
    let text = b.read("kubernetes/kyverno-clusterpolicy.yaml");
    let cp = parse_yaml(&text).unwrap();
    assert_eq!(cp["apiVersion"], "kyverno.io/v1");
    assert_eq!(cp["kind"], "ClusterPolicy");

    let v = CrdValidator::new(KYVERNO_CRD, &cp);
    v.assert_valid("ClusterPolicy", &cp);
    check_metadata("ClusterPolicy", &cp);
    let vi = "/spec/rules/0/verifyImages/0";
    v.assert_rejects(
        "ClusterPolicy",
        &cp,
        &format!("{vi}/failureAction"),
        json!("Deny"),
    );
    v.assert_rejects(
        "ClusterPolicy",
        &cp,
        &format!("{vi}/attestors/0/count"),
        json!("1"),
    );
    v.assert_rejects(
        "ClusterPolicy",
        &cp,
        &format!("{vi}/attestors/0/entries/0/keys/unknown"),
        json!(true),
    );
    v.assert_rejects("ClusterPolicy", &cp, "/spec/rules/0/verifyImage", json!([]));

    let rules = cp["spec"]["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 1, "{rules:?}");
    let rule = &rules[0];
    assert_eq!(
        rule["match"]["any"][0]["resources"]["kinds"],
        json!(["Pod"])
    );
    let verify = rule["verifyImages"].as_array().unwrap();
    assert_eq!(verify.len(), 1);
    let verify = &verify[0];
    assert_eq!(verify["failureAction"], "Enforce");
    assert_ne!(verify["verifyDigest"], false);
    assert_ne!(verify["required"], false);
    assert!(verify.get("attestations").is_none() && verify.get("image").is_none());

    // One attestor, count 1, one keys entry per trusted version; no Rekor, no SCT.
    let attestors = verify["attestors"].as_array().unwrap();
    assert_eq!(attestors.len(), 1, "{attestors:?}");
    assert_eq!(attestors[0]["count"], 1);
    let entries = attestors[0]["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{entries:?}");
    let mut pems = Vec::new();
    for e in entries {
        assert_eq!(keys_of(e), BTreeSet::from(["keys"]), "{e}");
        let k = &e["keys"];
        assert_eq!(k["rekor"]["ignoreTlog"], true, "{k}");
        assert_eq!(k["ctlog"]["ignoreSCT"], true, "{k}");
        assert!(k["rekor"].get("url").is_none());
        assert!(k.get("kms").is_none() && k.get("secret").is_none());
        let pem = k["publicKeys"].as_str().unwrap();
        assert_eq!(
            pem.matches("BEGIN PUBLIC KEY").count(),
            1,
            "one key per entry"
        );
        pems.push(pem.to_owned());
    }
    let ids = pem_ids(&b, &pems);
    assert_trusts_exactly(&b, "ClusterPolicy", &ids);

    let refs: Vec<String> = verify["imageReferences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    let expected: BTreeSet<String> = SCOPES
        .iter()
        .flat_map(|s| [format!("{s}:*"), format!("{s}@*")])
        .collect();
    assert_patterns_cover_exactly("ClusterPolicy", &refs, &SCOPES, kyverno_wildcard);
    assert_eq!(refs.iter().cloned().collect::<BTreeSet<_>>(), expected);
}

// ---------------------------------------------------------------------------------------------
// containers-policy.json(5) and containers-registries.d(5)

/// Transports containers/image knows (containers-policy.json(5), "Supported transports").
const TRANSPORTS: [&str; 10] = [
    "atomic",
    "containers-storage",
    "dir",
    "docker",
    "docker-archive",
    "docker-daemon",
    "oci",
    "oci-archive",
    "sif",
    "tarball",
];

/// `docker:` scopes are Docker references in the fully expanded form (`docker.io/library/x`,
/// not `x`) or prefixes of one, or `*.domain` wildcards.
fn check_docker_scope(scope: &str) -> Result<(), String> {
    if scope.is_empty() {
        return Ok(());
    }
    if let Some(domain) = scope.strip_prefix("*.") {
        return if domain.contains('*') || domain.contains('/') {
            Err(format!("bad wildcard scope {scope:?}"))
        } else {
            Ok(())
        };
    }
    let host = scope.split('/').next().unwrap();
    let expanded = host.contains('.') || host.contains(':') || host == "localhost";
    let path_ok = scope.split('/').skip(1).all(|c| {
        !c.is_empty()
            && c.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-:@".contains(&b))
    });
    if !expanded || !path_ok || scope.contains('*') {
        return Err(format!("{scope:?} is not a fully expanded docker scope"));
    }
    Ok(())
}

fn check_identity(id: &Value) -> Result<(), String> {
    let t = id["type"].as_str().ok_or("signedIdentity without type")?;
    let allowed: &[&str] = match t {
        "matchExact" | "matchRepoDigestOrExact" | "matchRepository" => &["type"],
        "exactReference" => &["type", "dockerReference"],
        "exactRepository" => &["type", "dockerRepository"],
        "remapIdentity" => &["type", "prefix", "signedPrefix"],
        _ => return Err(format!("unknown signedIdentity type {t:?}")),
    };
    if keys_of(id) != allowed.iter().copied().collect::<BTreeSet<_>>() {
        return Err(format!(
            "signedIdentity {t} must have exactly {allowed:?}: {id}"
        ));
    }
    Ok(())
}

fn check_string_list(v: &Value, field: &str) -> Result<(), String> {
    match v.as_array() {
        Some(a) if !a.is_empty() && a.iter().all(Value::is_string) => Ok(()),
        _ => Err(format!("{field} must be a non-empty list of strings")),
    }
}

fn check_requirement(r: &Value) -> Result<(), String> {
    let t = r["type"]
        .as_str()
        .ok_or_else(|| format!("requirement without type: {r}"))?;
    let keys = keys_of(r);
    let only = |allowed: &[&str]| -> Result<(), String> {
        let extra: Vec<_> = keys.iter().filter(|k| !allowed.contains(*k)).collect();
        if extra.is_empty() {
            Ok(())
        } else {
            Err(format!("{t} does not know {extra:?}"))
        }
    };
    let exactly_one = |fields: &[&str]| -> Result<(), String> {
        let n = fields.iter().filter(|f| keys.contains(*f)).count();
        if n == 1 {
            Ok(())
        } else {
            Err(format!(
                "{t}: exactly one of {fields:?} must be present, found {n}"
            ))
        }
    };
    match t {
        "insecureAcceptAnything" | "reject" => only(&["type"]),
        "signedBy" => {
            only(&[
                "type",
                "keyType",
                "keyPath",
                "keyPaths",
                "keyData",
                "signedIdentity",
            ])?;
            if r["keyType"] != "GPGKeys" {
                return Err("signedBy keyType must be GPGKeys".into());
            }
            exactly_one(&["keyPath", "keyPaths", "keyData"])?;
            if let Some(id) = r.get("signedIdentity") {
                check_identity(id)?;
            }
            Ok(())
        }
        "sigstoreSigned" => {
            only(&[
                "type",
                "keyPath",
                "keyPaths",
                "keyData",
                "keyDatas",
                "fulcio",
                "rekorPublicKeyPath",
                "rekorPublicKeyData",
                "rekorPublicKeyPaths",
                "rekorPublicKeyDatas",
                "pki",
                "signedIdentity",
            ])?;
            exactly_one(&[
                "keyPath", "keyPaths", "keyData", "keyDatas", "fulcio", "pki",
            ])?;
            let rekor = [
                "rekorPublicKeyPath",
                "rekorPublicKeyPaths",
                "rekorPublicKeyData",
                "rekorPublicKeyDatas",
            ];
            let n_rekor = rekor.iter().filter(|f| keys.contains(*f)).count();
            if n_rekor > 1 {
                return Err("at most one rekorPublicKey* field".into());
            }
            if keys.contains("fulcio") && n_rekor == 0 {
                return Err("fulcio needs a rekorPublicKey* field".into());
            }
            for f in [
                "keyPaths",
                "keyDatas",
                "rekorPublicKeyPaths",
                "rekorPublicKeyDatas",
            ] {
                if let Some(v) = r.get(f) {
                    check_string_list(v, f)?;
                }
            }
            for f in [
                "keyPath",
                "keyData",
                "rekorPublicKeyPath",
                "rekorPublicKeyData",
            ] {
                if r.get(f).is_some_and(|v| !v.is_string()) {
                    return Err(format!("{f} must be a string"));
                }
            }
            let datas = r.get("keyData").into_iter().chain(
                r.get("keyDatas")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten(),
            );
            for d in datas {
                base64::engine::general_purpose::STANDARD
                    .decode(d.as_str().unwrap_or_default())
                    .map_err(|e| format!("key data is not base64: {e}"))?;
            }
            if let Some(id) = r.get("signedIdentity") {
                check_identity(id)?;
            }
            Ok(())
        }
        _ => Err(format!("unknown requirement type {t:?}")),
    }
}

fn check_requirements(v: &Value, at: &str) -> Result<(), String> {
    let a = v
        .as_array()
        .filter(|a| !a.is_empty())
        .ok_or_else(|| format!("{at}: requirements must be a non-empty list"))?;
    a.iter()
        .try_for_each(|r| check_requirement(r).map_err(|e| format!("{at}: {e}")))
}

/// containers-policy.json(5): returns the `docker` transport's scopes and requirements.
fn check_policy_json(text: &str) -> Result<BTreeMap<String, Vec<Value>>, String> {
    let p = parse_json(text)?;
    let extra: Vec<_> = keys_of(&p)
        .into_iter()
        .filter(|k| !["default", "transports"].contains(k))
        .collect();
    if !extra.is_empty() {
        return Err(format!("unknown top-level fields {extra:?}"));
    }
    check_requirements(p.get("default").ok_or("`default` is mandatory")?, "default")?;
    let mut docker = BTreeMap::new();
    if let Some(t) = p.get("transports") {
        let t = t.as_object().ok_or("transports must be an object")?;
        for (name, scopes) in t {
            if !TRANSPORTS.contains(&name.as_str()) {
                return Err(format!("unknown transport {name:?}"));
            }
            let scopes = scopes
                .as_object()
                .ok_or_else(|| format!("transport {name} must map scopes to requirements"))?;
            for (scope, reqs) in scopes {
                check_requirements(reqs, &format!("{name}:{scope}"))?;
                if name == "docker" {
                    check_docker_scope(scope)?;
                    docker.insert(scope.clone(), reqs.as_array().unwrap().clone());
                }
            }
        }
    }
    Ok(docker)
}

/// containers-registries.d(5): returns each `docker` scope's section.
fn check_registries_d(text: &str) -> Result<BTreeMap<String, Value>, String> {
    let y = parse_yaml(text)?;
    let obj = y.as_object().ok_or("a registries.d file holds a mapping")?;
    let section = |at: &str, s: &Value| -> Result<(), String> {
        let s = s
            .as_object()
            .ok_or_else(|| format!("{at}: a section is a mapping"))?;
        for (k, v) in s {
            match k.as_str() {
                "lookaside" | "lookaside-staging" | "sigstore" | "sigstore-staging" => {
                    let url = v.as_str().ok_or_else(|| format!("{at}.{k} is a URL"))?;
                    if !["http://", "https://", "file://"]
                        .iter()
                        .any(|p| url.starts_with(p))
                    {
                        return Err(format!("{at}.{k}: {url:?} is not a URL"));
                    }
                }
                "use-sigstore-attachments" => {
                    if !v.is_boolean() {
                        return Err(format!("{at}.{k} is a boolean"));
                    }
                }
                _ => return Err(format!("{at}: unknown key {k:?}")),
            }
        }
        Ok(())
    };
    let mut docker = BTreeMap::new();
    for (k, v) in obj {
        match k.as_str() {
            "default-docker" => section("default-docker", v)?,
            "docker" => {
                let m = v.as_object().ok_or("docker maps scopes to sections")?;
                for (scope, s) in m {
                    if scope.is_empty() || scope.starts_with("*.") {
                        return Err(format!("{scope:?} is not a registries.d scope"));
                    }
                    check_docker_scope(scope)?;
                    section(scope, s)?;
                    docker.insert(scope.clone(), s.clone());
                }
            }
            _ => return Err(format!("unknown top-level key {k:?}")),
        }
    }
    Ok(docker)
}

#[test]
fn the_checkers_reject_what_the_man_pages_forbid() {
    let ok = json!({"default": [{"type": "reject"}], "transports": {"docker": {
        "reg.example/a": [{"type": "sigstoreSigned", "keyData": "AA==",
                           "signedIdentity": {"type": "matchRepository"}}]}}});
    check_policy_json(&ok.to_string()).unwrap();
    let mutate = |f: &dyn Fn(&mut Value)| {
        let mut v = ok.clone();
        f(&mut v);
        v.to_string()
    };
    let req = "/transports/docker/reg.example~1a/0";
    for (what, bad) in [
        (
            "no default",
            mutate(&|v| {
                v.as_object_mut().unwrap().remove("default");
            }),
        ),
        ("unknown top-level", mutate(&|v| v["extra"] = json!(1))),
        (
            "unknown transport",
            mutate(&|v| v["transports"]["ftp"] = json!({})),
        ),
        ("empty requirements", mutate(&|v| v["default"] = json!([]))),
        (
            "two key fields",
            mutate(&|v| v.pointer_mut(req).unwrap()["keyDatas"] = json!(["AA=="])),
        ),
        (
            "no key field",
            mutate(&|v| {
                v.pointer_mut(req)
                    .unwrap()
                    .as_object_mut()
                    .unwrap()
                    .remove("keyData");
            }),
        ),
        (
            "unknown requirement key",
            mutate(&|v| v.pointer_mut(req).unwrap()["keyID"] = json!("x")),
        ),
        (
            "bad identity",
            mutate(&|v| {
                v.pointer_mut(req).unwrap()["signedIdentity"] =
                    json!({"type": "matchRepository", "x": 1})
            }),
        ),
        (
            "short scope",
            mutate(&|v| v["transports"]["docker"]["busybox"] = json!([{"type": "reject"}])),
        ),
        (
            "empty keyDatas",
            mutate(&|v| {
                let r = v.pointer_mut(req).unwrap().as_object_mut().unwrap();
                r.remove("keyData");
                r.insert("keyDatas".into(), json!([]));
            }),
        ),
    ] {
        assert!(
            check_policy_json(&bad).is_err(),
            "policy.json checker accepts: {what}"
        );
    }
    assert!(
        check_policy_json(r#"{"default":[{"type":"reject"}],"default":[{"type":"reject"}]}"#)
            .is_err(),
        "duplicate fields"
    );

    check_registries_d("docker:\n  reg.example/a:\n    use-sigstore-attachments: true\n").unwrap();
    for bad in [
        "docker:\n  reg.example/a:\n    use-sigstore-attachments: yes please\n",
        "docker:\n  reg.example/a:\n    attachments: true\n",
        "dockers:\n  reg.example/a:\n    use-sigstore-attachments: true\n",
        "docker:\n  reg.example/a:\n    use-sigstore-attachments: true\n  reg.example/a:\n    lookaside: https://x\n",
        "docker:\n  busybox:\n    use-sigstore-attachments: true\n",
    ] {
        assert!(check_registries_d(bad).is_err(), "registries.d checker accepts {bad:?}");
    }
}

#[test]
fn containers_policy_and_registries_d_follow_their_man_pages() {
    let b = export(&SCOPES);
    let scopes: BTreeSet<String> = SCOPES.iter().map(|s| s.to_string()).collect();
    let expected_single = json!([b.newest.clone()]);

    for (file, field) in [
        ("containers/policy.json", "keyDatas"),
        ("containers/policy-single-key.json", "keyData"),
    ] {
        let text = b.read(file);
        let docker = check_policy_json(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        let p: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            p["default"],
            json!([{"type": "reject"}]),
            "{file}: reject by default"
        );
        assert_eq!(
            keys_of(&p["transports"]),
            BTreeSet::from(["docker"]),
            "{file}"
        );
        assert_eq!(
            docker.keys().cloned().collect::<BTreeSet<_>>(),
            scopes,
            "{file}: scopes are the --scope repositories"
        );
        for (scope, reqs) in &docker {
            // One requirement (requirements of a scope are ANDed), cosign-compatible identity,
            // no Rekor key (no transparency log), the trusted keys inline.
            assert_eq!(reqs.len(), 1, "{file} {scope}: {reqs:?}");
            let r = &reqs[0];
            assert_eq!(r["type"], "sigstoreSigned");
            assert_eq!(r["signedIdentity"], json!({"type": "matchRepository"}));
            assert_eq!(
                keys_of(r),
                BTreeSet::from(["type", "signedIdentity", field]),
                "{file} {scope}"
            );
            let pems: Vec<String> = match field {
                "keyDatas" => r[field]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| b64decode_utf8(d.as_str().unwrap()))
                    .collect(),
                _ => vec![b64decode_utf8(r[field].as_str().unwrap())],
            };
            let ids = pem_ids(&b, &pems);
            if field == "keyDatas" {
                assert_trusts_exactly(&b, file, &ids);
            } else {
                assert_eq!(
                    json!(ids),
                    expected_single,
                    "{file}: the newest version, release/3"
                );
            }
        }
    }

    let docker = check_registries_d(&b.read("containers/registries.d/keyward.yaml")).unwrap();
    assert_eq!(docker.keys().cloned().collect::<BTreeSet<_>>(), scopes);
    for (scope, s) in &docker {
        assert_eq!(s, &json!({"use-sigstore-attachments": true}), "{scope}");
    }
}

#[test]
fn no_file_carries_the_compromised_key_and_cosign_gets_the_trusted_pems() {
    let b = export(&SCOPES);
    let m = b.manifest();
    assert_eq!(m["revoked"][0]["key_id"], b.revoked_id.as_str());
    let ids: Vec<&str> = m["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids.iter().copied().collect::<BTreeSet<_>>(),
        b.trusted.keys().map(String::as_str).collect()
    );
    let body = pem_body(&b.revoked_pem);
    let b64_pem = base64::engine::general_purpose::STANDARD.encode(&b.revoked_pem);
    let mut files = Vec::new();
    walk(&b.dir, &b.dir, &mut files);
    for f in &files {
        let text = b.read(f);
        let flat: String = text.split_whitespace().collect();
        assert!(
            !flat.contains(&body) && !text.contains(&b64_pem),
            "{f} holds release/1"
        );
        if *f != "bundle.json" && *f != "SHA256SUMS" && *f != "SHA256SUMS.sig" {
            assert!(!text.contains(&b.revoked_id), "{f} names release/1");
        }
    }
    let key_files: BTreeSet<&str> = files
        .iter()
        .filter(|f| f.starts_with("keys/"))
        .map(String::as_str)
        .collect();
    let expected: BTreeSet<String> = b
        .trusted
        .values()
        .map(|n| format!("keys/{n}.pem"))
        .collect();
    assert_eq!(key_files, expected.iter().map(String::as_str).collect());
    for f in &key_files {
        assert!(b.trusted.contains_key(&key_id(&b.read(f))), "{f}");
    }
    let readme = b.read("cosign/README.md");
    for f in &expected {
        assert!(
            readme.contains(&format!("cosign verify --insecure-ignore-tlog --key {f} ")),
            "{readme}"
        );
    }
    assert_eq!(readme.matches("cosign verify").count(), expected.len());
}

#[test]
fn docker_hub_and_repeated_scopes_are_spelled_as_each_verifier_matches_them() {
    let b = export(&["busybox", "docker.io/library/busybox", "ghcr.io/org/app"]);
    let want = ["docker.io/library/busybox", "ghcr.io/org/app"];
    let policy = check_policy_json(&b.read("containers/policy.json")).unwrap();
    assert_eq!(policy.keys().map(String::as_str).collect::<Vec<_>>(), want);
    let reg = check_registries_d(&b.read("containers/registries.d/keyward.yaml")).unwrap();
    assert_eq!(reg.keys().map(String::as_str).collect::<Vec<_>>(), want);

    let cp = parse_yaml(&b.read("kubernetes/kyverno-clusterpolicy.yaml")).unwrap();
    let refs: Vec<String> = serde_json::from_value(
        cp["spec"]["rules"][0]["verifyImages"][0]["imageReferences"].clone(),
    )
    .unwrap();
    assert_patterns_cover_exactly("ClusterPolicy", &refs, &want, kyverno_wildcard);
    assert_eq!(refs.len(), 4, "{refs:?}");

    // go-containerregistry names Docker Hub images index.docker.io/...
    let cip = parse_yaml(&b.read("kubernetes/policy-controller-clusterimagepolicy.yaml")).unwrap();
    let globs: Vec<String> = cip["spec"]["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["glob"].as_str().unwrap().to_owned())
        .collect();
    let ggcr = ["index.docker.io/library/busybox", "ghcr.io/org/app"];
    assert_patterns_cover_exactly("ClusterImagePolicy", &globs, &ggcr, policy_controller_glob);
    assert_eq!(globs.len(), 4, "{globs:?}");
    CrdValidator::new(POLICY_CONTROLLER_CRD, &cip).assert_valid("ClusterImagePolicy", &cip);
    CrdValidator::new(KYVERNO_CRD, &cp).assert_valid("ClusterPolicy", &cp);
}

// ---------------------------------------------------------------------------------------------
// bundle verify

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(root, &p, out);
        } else {
            out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
        }
    }
    out.sort();
}

fn copy_of(b: &Bundle, name: &str) -> PathBuf {
    let to = b.w.path().join(name);
    let mut files = Vec::new();
    walk(&b.dir, &b.dir, &mut files);
    for f in files {
        let dst = to.join(&f);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(b.dir.join(&f), dst).unwrap();
    }
    to
}

fn verify_fails(b: &Bundle, dir: &Path, extra: &[&str], expect: &[&str]) {
    let mut args = vec!["bundle", "verify", dir.to_str().unwrap()];
    args.extend(extra);
    let out = b.w.run(&args);
    assert!(
        !out.status.success(),
        "bundle verify {extra:?} accepted {}",
        dir.display()
    );
    let err = stderr(&out);
    for e in expect {
        assert!(err.contains(e), "{e:?} not in: {err}");
    }
}

#[test]
fn bundle_verify_catches_changed_added_removed_files_and_a_wrong_signing_key() {
    let b = export(&SCOPES);
    let trust = b.w.path().join("signer.pem");
    std::fs::write(&trust, &b.signer_pem).unwrap();
    let wrong = b.w.path().join("other.pem");
    std::fs::write(&wrong, &b.other_pem).unwrap();
    let dir = b.dir.to_str().unwrap();
    let trust_arg = trust.to_str().unwrap();
    let ok = b.w.ok(&["bundle", "verify", dir, "--trust", trust_arg]);
    assert!(ok.contains("signed by the trusted key"), "{ok}");

    // Changed: a verifier configuration widened by hand.
    let changed = copy_of(&b, "changed");
    let p = changed.join("containers/policy.json");
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, text.replace("\"reject\"", "\"insecureAcceptAnything\"")).unwrap();
    verify_fails(&b, &changed, &[], &["containers/policy.json", "changed"]);

    // Added: an extra key dropped into keys/.
    let added = copy_of(&b, "added");
    std::fs::write(added.join("keys/release-1.pem"), &b.revoked_pem).unwrap();
    verify_fails(&b, &added, &[], &["keys/release-1.pem", "added"]);

    // Removed: one of the trusted keys.
    let removed = copy_of(&b, "removed");
    let gone = format!("keys/{}.pem", b.trusted.values().next().unwrap());
    std::fs::remove_file(removed.join(&gone)).unwrap();
    verify_fails(&b, &removed, &[], &[&gone, "removed"]);

    // Changed with SHA256SUMS recomputed to match: the signature no longer does.
    let resummed = copy_of(&b, "resummed");
    let p = resummed.join("kubernetes/kyverno-clusterpolicy.yaml");
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, text.replace("Enforce", "Audit")).unwrap();
    let sums: String = std::fs::read_to_string(resummed.join("SHA256SUMS"))
        .unwrap()
        .lines()
        .map(|l| {
            let (_, f) = l.split_once("  ").unwrap();
            let h = hex::encode(Sha256::digest(std::fs::read(resummed.join(f)).unwrap()));
            format!("{h}  {f}\n")
        })
        .collect();
    std::fs::write(resummed.join("SHA256SUMS"), sums).unwrap();
    verify_fails(&b, &resummed, &["--trust", trust_arg], &["SHA256SUMS"]);
    verify_fails(&b, &resummed, &[], &["SHA256SUMS"]);

    // Wrong signing key: the bundle is intact but was not signed by the key the caller trusts.
    verify_fails(
        &b,
        &b.dir,
        &["--trust", wrong.to_str().unwrap()],
        &["not signed by the trusted key"],
    );

    // Unsigned but --trust given.
    let unsigned = copy_of(&b, "unsigned");
    std::fs::remove_file(unsigned.join("SHA256SUMS.sig")).unwrap();
    verify_fails(&b, &unsigned, &["--trust", trust_arg], &["not signed"]);

    // The untouched bundle still verifies.
    b.w.ok(&["bundle", "verify", dir, "--trust", trust_arg]);
}

#[test]
fn the_single_key_policy_holds_the_version_that_signs_now() {
    // With release/3 suspended, `image sign` and `image resign` use release/2: the single-key
    // policy must hold release/2, while the any-key policy still lists both.
    let b = export(&SCOPES);
    b.w.ok(&[
        "key",
        "suspend",
        "release/3",
        "--reason",
        "token maintenance",
    ]);
    let dir = b.w.path().join("bundle-suspended");
    let mut args = vec!["bundle", "export", "--key", "release"];
    for s in SCOPES {
        args.extend(["--scope", s]);
    }
    args.extend(["--output", dir.to_str().unwrap()]);
    b.w.ok(&args);
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    let release_2 = key_id(&b.w.ok(&["key", "public-key", "release/2"]));

    let single = check_policy_json(&read("containers/policy-single-key.json")).unwrap();
    for (scope, reqs) in &single {
        let pem = b64decode_utf8(reqs[0]["keyData"].as_str().unwrap());
        assert_eq!(key_id(&pem), release_2, "{scope}");
    }
    let all = check_policy_json(&read("containers/policy.json")).unwrap();
    for (scope, reqs) in &all {
        let ids: BTreeSet<String> = reqs[0]["keyDatas"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| key_id(&b64decode_utf8(d.as_str().unwrap())))
            .collect();
        assert_eq!(ids, b.trusted.keys().cloned().collect(), "{scope}");
    }
}
