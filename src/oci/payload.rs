//! The simple-signing payload: the JSON document that a cosign key-based signature signs.
//!
//! ```json
//! {"critical":{"identity":{"docker-reference":"registry.example/app"},
//!              "image":{"docker-manifest-digest":"sha256:…"},
//!              "type":"cosign container image signature"},
//!  "optional":{"creator":"keyward 0.1.0","timestamp":1764000000,"keyward.key":"release/3"}}
//! ```
//!
//! [`Payload`] builds it; [`ParsedPayload::parse`] reads one leniently (as cosign does, for
//! verification); [`validate_containers_image`] applies containers/image's strict parser rules,
//! so keyward never writes a payload podman, skopeo or CRI-O would refuse.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::error::OciError;
use super::reference::{Digest, ImageRef};

/// `critical.type` of every cosign container image signature.
pub const SIMPLE_SIGNING_TYPE: &str = "cosign container image signature";

/// `optional` keys that containers/image interprets and that therefore have fixed types.
pub const RESERVED_OPTIONAL_KEYS: [&str; 2] = ["creator", "timestamp"];

/// A payload to be signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payload {
    /// `critical.identity.docker-reference`: the repository, without tag or digest.
    pub docker_reference: String,
    /// `critical.image.docker-manifest-digest`: what is signed.
    pub manifest_digest: Digest,
    /// `optional.creator`: the program that made the signature.
    pub creator: Option<String>,
    /// `optional.timestamp`: Unix seconds. Always an integer (sigstore-rs drops a signature
    /// whose timestamp is not one, containers/image rejects it).
    pub timestamp: Option<i64>,
    /// Other `optional` entries: provenance (signer, key, token, CI job) and user annotations.
    /// Must not use the keys in [`RESERVED_OPTIONAL_KEYS`].
    pub annotations: BTreeMap<String, String>,
}

impl Payload {
    /// A payload for `digest` in `image`'s repository, identity written as cosign does
    /// ([`ImageRef::docker_reference`]), no optional entries.
    pub fn new(image: &ImageRef, digest: &Digest) -> Self {
        Payload {
            docker_reference: image.docker_reference(),
            manifest_digest: digest.clone(),
            creator: None,
            timestamp: None,
            annotations: BTreeMap::new(),
        }
    }

    /// The payload bytes: compact JSON, keys sorted, so the same payload always gives the same
    /// bytes (and the same layer digest).
    pub fn to_bytes(&self) -> Result<Vec<u8>, OciError> {
        if self.docker_reference.is_empty() {
            return Err(OciError::InvalidPayload("empty docker-reference".into()));
        }
        let mut optional = Map::new();
        for (k, v) in &self.annotations {
            if RESERVED_OPTIONAL_KEYS.contains(&k.as_str()) {
                return Err(OciError::InvalidPayload(format!(
                    "annotation key {k:?} is reserved: containers/image interprets it (set the creator/timestamp fields instead)"
                )));
            }
            optional.insert(k.clone(), Value::String(v.clone()));
        }
        if let Some(c) = &self.creator {
            optional.insert("creator".into(), Value::String(c.clone()));
        }
        if let Some(t) = self.timestamp {
            optional.insert("timestamp".into(), Value::from(t));
        }
        let doc = serde_json::json!({
            "critical": {
                "identity": {"docker-reference": self.docker_reference},
                "image": {"docker-manifest-digest": self.manifest_digest.as_str()},
                "type": SIMPLE_SIGNING_TYPE,
            },
            "optional": Value::Object(optional),
        });
        let bytes = serde_json::to_vec(&doc)
            .map_err(|e| OciError::InvalidPayload(format!("cannot serialise: {e}")))?;
        validate_containers_image(&bytes).map_err(OciError::InvalidPayload)?;
        Ok(bytes)
    }
}

/// A payload read back for verification. Parsing is lenient like cosign's: unknown fields are
/// ignored. [`validate_containers_image`] is the strict check.
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedPayload {
    /// `critical.identity.docker-reference`.
    pub docker_reference: String,
    /// `critical.image.docker-manifest-digest`, as written (not necessarily a valid digest).
    pub manifest_digest: String,
    /// `critical.type`.
    pub signature_type: String,
    /// `optional`, empty when absent or null.
    pub optional: Map<String, Value>,
}

#[derive(serde::Deserialize)]
struct LenientPayload {
    critical: LenientCritical,
    #[serde(default)]
    optional: Option<Map<String, Value>>,
}

#[derive(serde::Deserialize)]
struct LenientCritical {
    identity: LenientIdentity,
    image: LenientImage,
    #[serde(rename = "type")]
    signature_type: String,
}

#[derive(serde::Deserialize)]
struct LenientIdentity {
    #[serde(rename = "docker-reference")]
    docker_reference: String,
}

#[derive(serde::Deserialize)]
struct LenientImage {
    #[serde(rename = "docker-manifest-digest")]
    docker_manifest_digest: String,
}

impl ParsedPayload {
    /// Parses a payload; fails when the critical fields are missing or not strings.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let p: LenientPayload = serde_json::from_slice(bytes)
            .map_err(|e| format!("not a simple-signing payload: {e}"))?;
        Ok(ParsedPayload {
            docker_reference: p.critical.identity.docker_reference,
            manifest_digest: p.critical.image.docker_manifest_digest,
            signature_type: p.critical.signature_type,
            optional: p.optional.unwrap_or_default(),
        })
    }

    /// `optional` as strings: string values as they are, others as compact JSON
    /// (`timestamp` becomes `"1764000000"`).
    pub fn provenance(&self) -> BTreeMap<String, String> {
        self.optional
            .iter()
            .map(|(k, v)| {
                let s = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), s)
            })
            .collect()
    }
}

/// Checks `payload` against containers/image's parser for cosign payloads
/// (`signature/internal/sigstore_payload.go`, `strictUnmarshalJSON`), rule for rule:
///
/// - the document is one JSON object with exactly the keys `critical` and `optional`, each once;
/// - `optional` is `null` or an object without duplicate keys; in it `creator`, if present, is
///   a string (or null) and `timestamp`, if present, a number with an integer value that fits
///   an int64 (or null); other keys may hold anything;
/// - `critical` is an object with exactly `type`, `image` and `identity`, each once;
/// - `type` is the string `cosign container image signature`;
/// - `image` is an object with exactly `docker-manifest-digest`, a valid digest string
///   (`sha256:` + 64, `sha384:` + 96 or `sha512:` + 128 lowercase hex digits);
/// - `identity` is an object with exactly `docker-reference`, a string (or null).
///
/// Unknown and duplicate keys are rejected at every one of these levels. As in Go, `null` is
/// accepted where a string or number is expected (it leaves the Go variable at its zero value),
/// and duplicate keys nested inside other `optional` values are not looked at. Whether the
/// digest and reference match the image is the policy's business, not the parser's.
///
/// The error text follows containers/image's messages.
pub fn validate_containers_image(payload: &[u8]) -> Result<(), String> {
    let root: Json = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
    let top = exact_fields(&root, &["critical", "optional"])?;
    let critical = top["critical"];
    let optional = top["optional"];

    if !matches!(optional, Json::Null) {
        let entries = object(optional)?;
        no_duplicates(entries)?;
        for (k, v) in entries {
            match k.as_str() {
                "creator" => string_or_null(v, "creator")?,
                "timestamp" => match v {
                    Json::Null => {}
                    Json::Number(n) => {
                        // Go decodes into float64 and requires float64(int64(t)) == t.
                        const TWO_63: f64 = 9_223_372_036_854_775_808.0;
                        if !(n.is_finite() && n.trunc() == *n && *n >= -TWO_63 && *n < TWO_63) {
                            return Err("Field optional.timestamp is not is not an integer".into());
                        }
                    }
                    other => {
                        return Err(format!(
                            "json: cannot unmarshal {} into Go value of type float64",
                            other.kind()
                        ))
                    }
                },
                _ => {}
            }
        }
    }

    let crit = exact_fields(critical, &["type", "image", "identity"])?;
    string_or_null(crit["type"], "type")?;
    let t = match crit["type"] {
        Json::String(s) => s.as_str(),
        _ => "",
    };
    if t != SIMPLE_SIGNING_TYPE {
        return Err(format!("Unrecognized signature type {t}"));
    }

    let image = exact_fields(crit["image"], &["docker-manifest-digest"])?;
    string_or_null(image["docker-manifest-digest"], "docker-manifest-digest")?;
    let digest = match image["docker-manifest-digest"] {
        Json::String(s) => s.as_str(),
        _ => "",
    };
    go_digest_parse(digest)
        .map_err(|e| format!("invalid docker-manifest-digest value {digest:?}: {e}"))?;

    let identity = exact_fields(crit["identity"], &["docker-reference"])?;
    string_or_null(identity["docker-reference"], "docker-reference")?;
    Ok(())
}

/// `github.com/opencontainers/go-digest`'s `Parse`, for the algorithms Go links in.
fn go_digest_parse(s: &str) -> Result<(), &'static str> {
    let Some((alg, hex)) = s.split_once(':') else {
        return Err("invalid checksum digest format");
    };
    if alg.is_empty() || hex.is_empty() {
        return Err("invalid checksum digest format");
    }
    let len = match alg {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return Err("unsupported digest algorithm"),
    };
    if hex.len() != len || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err("invalid checksum digest format");
    }
    Ok(())
}

fn object(v: &Json) -> Result<&[(String, Json)], String> {
    match v {
        Json::Object(entries) => Ok(entries),
        other => Err(format!("JSON object expected, got {}", other.kind())),
    }
}

fn no_duplicates(entries: &[(String, Json)]) -> Result<(), String> {
    let mut seen = std::collections::BTreeSet::new();
    for (k, _) in entries {
        if !seen.insert(k.as_str()) {
            return Err(format!("Duplicate key {k:?}"));
        }
    }
    Ok(())
}

/// `ParanoidUnmarshalJSONObjectExactFields`: an object with each of `fields` exactly once and
/// nothing else.
fn exact_fields<'a>(
    v: &'a Json,
    fields: &[&'static str],
) -> Result<BTreeMap<&'static str, &'a Json>, String> {
    let entries = object(v)?;
    let mut out = BTreeMap::new();
    let mut seen = std::collections::BTreeSet::new();
    for (k, val) in entries {
        if !seen.insert(k.as_str()) {
            return Err(format!("Duplicate key {k:?}"));
        }
        match fields.iter().find(|f| **f == k.as_str()) {
            Some(f) => {
                out.insert(*f, val);
            }
            None => return Err(format!("Unknown key {k:?}")),
        }
    }
    for f in fields {
        if !out.contains_key(f) {
            return Err(format!("Key {f:?} missing in a JSON object"));
        }
    }
    Ok(out)
}

fn string_or_null(v: &Json, field: &str) -> Result<(), String> {
    match v {
        Json::String(_) | Json::Null => Ok(()),
        other => Err(format!(
            "json: cannot unmarshal {} into Go value of type string (field {field})",
            other.kind()
        )),
    }
}

/// A JSON value that keeps every object entry, duplicates included, in document order.
#[derive(Debug)]
enum Json {
    Null,
    Bool,
    Number(f64),
    String(String),
    Array,
    Object(Vec<(String, Json)>),
}

impl Json {
    fn kind(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool => "bool",
            Json::Number(_) => "number",
            Json::String(_) => "string",
            Json::Array => "array",
            Json::Object(_) => "object",
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Json, E> {
        Ok(Json::Bool)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Json, E> {
        Ok(Json::Number(v as f64))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Json, E> {
        Ok(Json::Number(v as f64))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Json, E> {
        Ok(Json::Number(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        while seq.next_element::<Json>()?.is_some() {}
        Ok(Json::Array)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut entries = Vec::new();
        while let Some(k) = map.next_key::<String>()? {
            let v = map.next_value::<Json>()?;
            entries.push((k, v));
        }
        Ok(Json::Object(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn good() -> String {
        format!(
            r#"{{"critical":{{"identity":{{"docker-reference":"reg.io/app"}},"image":{{"docker-manifest-digest":"{D}"}},"type":"cosign container image signature"}},"optional":{{"creator":"x","timestamp":1700000000,"k":"v"}}}}"#
        )
    }

    fn with(from: &str, to: &str) -> String {
        let g = good();
        assert!(g.contains(from), "{from}");
        g.replacen(from, to, 1)
    }

    #[test]
    fn builder_output_is_valid_and_deterministic() {
        let image = ImageRef::parse("reg.io/team/app:1").unwrap();
        let mut p = Payload::new(&image, &Digest::parse(D).unwrap());
        p.creator = Some("keyward test".into());
        p.timestamp = Some(1_764_000_000);
        p.annotations
            .insert("keyward.key".into(), "release/3".into());
        let a = p.to_bytes().unwrap();
        assert_eq!(a, p.to_bytes().unwrap());
        validate_containers_image(&a).unwrap();
        let parsed = ParsedPayload::parse(&a).unwrap();
        assert_eq!(parsed.docker_reference, "reg.io/team/app");
        assert_eq!(parsed.manifest_digest, D);
        assert_eq!(parsed.provenance()["timestamp"], "1764000000");
        assert_eq!(parsed.provenance()["keyward.key"], "release/3");
        assert!(parsed.optional["timestamp"].is_i64());
    }

    #[test]
    fn builder_refuses_reserved_annotation_keys() {
        let image = ImageRef::parse("reg.io/app").unwrap();
        let mut p = Payload::new(&image, &Digest::parse(D).unwrap());
        p.annotations.insert("timestamp".into(), "yesterday".into());
        assert!(p.to_bytes().is_err());
    }

    #[test]
    fn accepts_what_containers_image_accepts() {
        validate_containers_image(good().as_bytes()).unwrap();
        for ok in [
            with(
                r#""optional":{"creator":"x","timestamp":1700000000,"k":"v"}"#,
                r#""optional":null"#,
            ),
            with(
                r#""optional":{"creator":"x","timestamp":1700000000,"k":"v"}"#,
                r#""optional":{}"#,
            ),
            with("1700000000", "1.7e9"),
            with("1700000000", "1700000000.0"),
            with("1700000000", "null"),
            with(r#""creator":"x""#, r#""creator":null"#),
            with(r#""k":"v""#, r#""k":{"a":1,"a":2}"#),
            with(r#""k":"v""#, r#""k":[1,true,null]"#),
            format!(" \n{} \n", good()),
        ] {
            validate_containers_image(ok.as_bytes()).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    #[test]
    fn rejects_what_containers_image_rejects() {
        let cases = [
            (
                with(
                    r#","optional":{"creator":"x","timestamp":1700000000,"k":"v"}"#,
                    "",
                ),
                "missing",
            ),
            (
                with(
                    r#""type":"cosign container image signature""#,
                    r#""type":"cosign container image signature","extra":1"#,
                ),
                "Unknown key",
            ),
            (
                with(
                    r#""docker-reference":"reg.io/app""#,
                    r#""docker-reference":"reg.io/app","tag":"1""#,
                ),
                "Unknown key",
            ),
            (with(r#""image":{"#, r#""image":{"x":1,"#), "Unknown key"),
            (
                with(
                    r#""critical":{"#,
                    r#""critical":{"type":"cosign container image signature","#,
                ),
                "Duplicate key",
            ),
            (
                with(r#""optional":{"#, r#""optional":{"k":"w","#),
                "Duplicate key",
            ),
            (
                format!(r#"{{"critical":1,{}"#, &good()[1..]),
                "Duplicate key",
            ),
            (with(r#""k":"v"}"#, r#""k":"v"},"extra":1"#), "Unknown key"),
            (with("1700000000", "1700000000.5"), "integer"),
            (with("1700000000", r#""1700000000""#), "float64"),
            (with("1700000000", "1e300"), "integer"),
            (with(r#""creator":"x""#, r#""creator":5"#), "string"),
            (
                with(
                    r#""optional":{"creator":"x","timestamp":1700000000,"k":"v"}"#,
                    r#""optional":[]"#,
                ),
                "object expected",
            ),
            (
                with(
                    r#""optional":{"creator":"x","timestamp":1700000000,"k":"v"}"#,
                    r#""optional":"x""#,
                ),
                "object expected",
            ),
            (
                with(
                    "cosign container image signature",
                    "atomic container signature",
                ),
                "Unrecognized",
            ),
            (
                with(
                    r#""type":"cosign container image signature""#,
                    r#""type":null"#,
                ),
                "Unrecognized",
            ),
            (with(D, "sha256:ABC"), "docker-manifest-digest"),
            (with(D, "md5:0123"), "docker-manifest-digest"),
            (
                with(
                    r#""docker-reference":"reg.io/app""#,
                    r#""docker-reference":7"#,
                ),
                "string",
            ),
            (
                with(
                    r#""identity":{"docker-reference":"reg.io/app"}"#,
                    r#""identity":"reg.io/app""#,
                ),
                "object expected",
            ),
            (format!("{}x", good()), "trailing"),
            ("[]".to_string(), "object expected"),
            ("".to_string(), "EOF"),
        ];
        for (doc, why) in cases {
            let err = validate_containers_image(doc.as_bytes())
                .err()
                .unwrap_or_else(|| panic!("accepted: {doc}"));
            assert!(err.contains(why), "{doc}: {err} (expected {why})");
        }
    }

    #[test]
    fn lenient_parse_ignores_unknown_fields() {
        let doc = with(
            r#""type":"cosign container image signature""#,
            r#""type":"cosign container image signature","extra":1"#,
        );
        assert!(ParsedPayload::parse(doc.as_bytes()).is_ok());
        assert!(ParsedPayload::parse(b"{}").is_err());
    }
}
