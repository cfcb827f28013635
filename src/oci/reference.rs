//! Image references: `registry/repository:tag`, `…@sha256:digest`, Docker Hub defaults, and the
//! names cosign derives from them (the signed `docker-reference`, the `.sig` tag).
//!
//! The grammar is the one of `github.com/distribution/reference` (what docker, podman and
//! cosign accept), restricted to sha256 digests, which is what registries use for manifests.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

use super::error::OciError;

/// The registry name keyward uses for Docker Hub.
pub const DOCKER_HUB: &str = "docker.io";
/// The registry name cosign (go-containerregistry) writes for Docker Hub in `docker-reference`.
pub const DOCKER_HUB_COSIGN: &str = "index.docker.io";

const MAX_NAME_LEN: usize = 255;

/// A validated `sha256:<64 lowercase hex>` content digest.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest(String);

impl Digest {
    /// Parses `sha256:<64 lowercase hex digits>`.
    pub fn parse(s: &str) -> Result<Self, OciError> {
        let bad = || OciError::InvalidDigest {
            input: s.to_string(),
        };
        let hex = s.strip_prefix("sha256:").ok_or_else(bad)?;
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(bad());
        }
        Ok(Digest(s.to_string()))
    }

    /// The sha256 digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Digest(format!("sha256:{}", hex::encode(Sha256::digest(bytes))))
    }

    /// `sha256:…`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 64 hex digits.
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }

    /// The tag cosign stores signatures of this manifest under: `sha256-<hex>.sig`.
    pub fn signature_tag(&self) -> String {
        format!("sha256-{}.sig", self.hex())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.0)
    }
}

impl FromStr for Digest {
    type Err = OciError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::parse(s)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A parsed image reference.
///
/// `registry` is `HOST[:PORT]` (`docker.io` for Docker Hub, whichever way it was spelled),
/// `repository` the path inside it (`library/` added for official Docker Hub images).
/// At most one of tag and digest is kept: when both are given (`repo:tag@sha256:…`) the digest
/// wins, as in docker and podman, and the tag is dropped.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct ImageRef {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl ImageRef {
    /// Parses an image reference such as `busybox`, `ghcr.io/org/app:1.2`,
    /// `localhost:5000/app@sha256:…`.
    pub fn parse(input: &str) -> Result<Self, OciError> {
        let fail = |reason: &str| OciError::InvalidReference {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        if input.is_empty() {
            return Err(fail("empty"));
        }
        if input.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(fail("contains whitespace"));
        }
        let (rest, digest) = match input.rsplit_once('@') {
            Some((rest, d)) => (
                rest,
                Some(Digest::parse(d).map_err(|_| {
                    fail("the part after @ must be sha256:<64 lowercase hex digits>")
                })?),
            ),
            None => (input, None),
        };
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let split = last_slash + i;
                (&rest[..split], Some(&rest[split + 1..]))
            }
            None => (rest, None),
        };
        if let Some(tag) = tag {
            if !valid_tag(tag) {
                return Err(fail(
                    "invalid tag: 1 to 128 characters of [A-Za-z0-9_.-], not starting with . or -",
                ));
            }
        }
        if name.len() > MAX_NAME_LEN {
            return Err(fail("name longer than 255 characters"));
        }
        let (domain, path) = match name.split_once('/') {
            Some((first, remainder))
                if first.contains(['.', ':'])
                    || first == "localhost"
                    || first.chars().any(|c| c.is_ascii_uppercase()) =>
            {
                (Some(first), remainder)
            }
            _ => (None, name),
        };
        let registry = match domain {
            None | Some(DOCKER_HUB) | Some(DOCKER_HUB_COSIGN) => DOCKER_HUB.to_string(),
            Some(d) => {
                if !valid_domain(d) {
                    return Err(fail("invalid registry host[:port]"));
                }
                d.to_string()
            }
        };
        if path.is_empty() || !path.split('/').all(valid_path_component) {
            return Err(fail(
                "invalid repository: lowercase letters, digits and single separators (. _ __ -) between path components",
            ));
        }
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_string()
        };
        let tag = if digest.is_some() {
            None
        } else {
            tag.map(str::to_string)
        };
        Ok(ImageRef {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// Builds a reference from parts that are already known to be valid (for instance taken
    /// from another `ImageRef`).
    fn from_parts(
        registry: &str,
        repository: &str,
        tag: Option<String>,
        digest: Option<Digest>,
    ) -> Self {
        ImageRef {
            registry: registry.to_string(),
            repository: repository.to_string(),
            tag,
            digest,
        }
    }

    /// `HOST[:PORT]`, `docker.io` for Docker Hub.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The `host[:port]` to send HTTP requests to (`index.docker.io` for Docker Hub).
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_COSIGN
        } else {
            &self.registry
        }
    }

    /// The repository path inside the registry.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if the reference has one (and no digest).
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if the reference is pinned.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// `registry/repository`, the repository without tag or digest, as keyward shows it.
    pub fn repository_name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The `critical.identity.docker-reference` cosign writes: the repository without tag or
    /// digest, with Docker Hub spelled `index.docker.io` as go-containerregistry does.
    pub fn docker_reference(&self) -> String {
        format!("{}/{}", self.api_host(), self.repository)
    }

    /// The same repository pinned to `digest`.
    pub fn with_digest(&self, digest: &Digest) -> ImageRef {
        ImageRef::from_parts(&self.registry, &self.repository, None, Some(digest.clone()))
    }

    /// The same repository at `tag`. The tag must be valid (`sha256-….sig` tags are).
    pub fn with_tag(&self, tag: &str) -> ImageRef {
        ImageRef::from_parts(
            &self.registry,
            &self.repository,
            Some(tag.to_string()),
            None,
        )
    }

    /// Where cosign keeps the signatures of `digest`: `registry/repository:sha256-<hex>.sig`.
    pub fn signature_ref(&self, digest: &Digest) -> ImageRef {
        self.with_tag(&digest.signature_tag())
    }

    /// The tag or digest part used in `/v2/<repo>/manifests/<reference>` (`latest` when the
    /// reference has neither, as docker does).
    pub fn manifest_reference(&self) -> &str {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.as_str(),
            (None, Some(t)) => t,
            (None, None) => "latest",
        }
    }

    /// True when `docker_reference` (as found in a signature payload) names this repository.
    /// Docker Hub spellings (`docker.io`, `index.docker.io`, none) are equivalent; a tag or
    /// digest in `docker_reference` is ignored, as containers/image's `matchRepository` does.
    pub fn same_repository(&self, docker_reference: &str) -> bool {
        match ImageRef::parse(docker_reference) {
            Ok(other) => other.registry == self.registry && other.repository == self.repository,
            Err(_) => false,
        }
    }

    pub(crate) fn to_oci(&self) -> oci_client::Reference {
        match &self.digest {
            Some(d) => oci_client::Reference::with_digest(
                self.registry.clone(),
                self.repository.clone(),
                d.to_string(),
            ),
            None => oci_client::Reference::with_tag(
                self.registry.clone(),
                self.repository.clone(),
                self.manifest_reference().to_string(),
            ),
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(d) = &self.digest {
            write!(f, "@{d}")
        } else if let Some(t) = &self.tag {
            write!(f, ":{t}")
        } else {
            Ok(())
        }
    }
}

impl FromStr for ImageRef {
    type Err = OciError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImageRef::parse(s)
    }
}

fn valid_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

fn valid_path_component(c: &str) -> bool {
    // [a-z0-9]+ ( ( [._] | __ | -+ ) [a-z0-9]+ )*
    let b = c.as_bytes();
    if b.is_empty() {
        return false;
    }
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn valid_domain(d: &str) -> bool {
    let (host_ok, port) = if let Some(rest) = d.strip_prefix('[') {
        // [IPv6]:port
        let Some((h, after)) = rest.split_once(']') else {
            return false;
        };
        let port = match after {
            "" => None,
            p => match p.strip_prefix(':') {
                Some(p) => Some(p),
                None => return false,
            },
        };
        let ok = !h.is_empty() && h.bytes().all(|c| c.is_ascii_hexdigit() || c == b':');
        (ok, port)
    } else {
        let (h, port) = match d.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (d, None),
        };
        (valid_hostname(h), port)
    };
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|c| c.is_ascii_digit()));
    host_ok && port_ok
}

fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn docker_hub_defaults() {
        let r = ImageRef::parse("busybox").unwrap();
        assert_eq!(r.registry(), "docker.io");
        assert_eq!(r.repository(), "library/busybox");
        assert_eq!(r.tag(), None);
        assert_eq!(r.manifest_reference(), "latest");
        assert_eq!(r.docker_reference(), "index.docker.io/library/busybox");
        let r = ImageRef::parse("docker.io/org/app:1").unwrap();
        assert_eq!(r.repository(), "org/app");
        assert_eq!(r.tag(), Some("1"));
        let r = ImageRef::parse("index.docker.io/alpine:3").unwrap();
        assert_eq!(r.registry(), "docker.io");
        assert_eq!(r.repository(), "library/alpine");
    }

    #[test]
    fn registries_ports_digests() {
        let r = ImageRef::parse(&format!("localhost:5000/team/app:v1.2@{D}")).unwrap();
        assert_eq!(r.registry(), "localhost:5000");
        assert_eq!(r.repository(), "team/app");
        assert_eq!(r.tag(), None, "digest wins over tag");
        assert_eq!(r.digest().unwrap().as_str(), D);
        assert_eq!(r.docker_reference(), "localhost:5000/team/app");
        assert_eq!(r.to_string(), format!("localhost:5000/team/app@{D}"));
        let r = ImageRef::parse("127.0.0.1:5000/app").unwrap();
        assert_eq!(r.registry(), "127.0.0.1:5000");
        let r = ImageRef::parse("localhost/app:x").unwrap();
        assert_eq!(r.registry(), "localhost");
        let r = ImageRef::parse("[::1]:5000/app:x").unwrap();
        assert_eq!(r.registry(), "[::1]:5000");
        let r = ImageRef::parse("ghcr.io/a/b/c").unwrap();
        assert_eq!(r.repository(), "a/b/c");
        assert_eq!(
            r.signature_ref(&Digest::parse(D).unwrap()).to_string(),
            "ghcr.io/a/b/c:sha256-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.sig"
        );
    }

    #[test]
    fn rejects_bad_references() {
        for bad in [
            "",
            "App:1",
            "reg.io/App",
            "app:",
            "app:-x",
            "a//b",
            "app@sha256:abc",
            "app@md5:0123",
            "reg.io/-app",
            "reg.io/app_",
            "reg.io/a..b",
            "reg.io:x/app",
            "with space",
            &format!("app@{}", D.to_uppercase()),
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(ImageRef::parse("reg.io/a__b/c-d/e.f/g---h").is_ok());
    }

    #[test]
    fn same_repository_normalises_docker_hub() {
        let r = ImageRef::parse("busybox:1").unwrap();
        assert!(r.same_repository("index.docker.io/library/busybox"));
        assert!(r.same_repository("docker.io/library/busybox"));
        assert!(r.same_repository("busybox"));
        assert!(!r.same_repository("ghcr.io/library/busybox"));
        assert!(!r.same_repository("not a reference"));
    }

    #[test]
    fn digest_parsing() {
        assert!(Digest::parse(D).is_ok());
        assert!(Digest::parse("sha512:00").is_err());
        assert_eq!(
            Digest::of(b"").as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
