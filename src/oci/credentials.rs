//! Registry credentials from the files `podman login` and `docker login` write.
//!
//! Looked up in this order, the first file with an entry for the registry wins (the order
//! containers/image uses):
//!
//! 1. `$REGISTRY_AUTH_FILE`, or else `$XDG_RUNTIME_DIR/containers/auth.json`
//! 2. `$XDG_CONFIG_HOME/containers/auth.json` (default `~/.config/containers/auth.json`)
//! 3. `$DOCKER_CONFIG/config.json` (default `~/.docker/config.json`)
//!
//! Within a file the most specific key wins: `registry/namespace/repo`, then `registry/namespace`,
//! then `registry`. Docker-style keys (`https://index.docker.io/v1/`) are normalised to their
//! host. Only the `auth` field (base64 `user:password`) is used: credential helpers
//! (`credsStore`, `credHelpers`) and `identitytoken` (OAuth refresh tokens) are not supported,
//! such entries are skipped.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use super::error::OciError;
use super::reference::{ImageRef, DOCKER_HUB};

/// Where the client takes credentials from.
#[derive(Clone, Debug, Default)]
pub enum CredentialSource {
    /// The standard files, located through the environment (see the module documentation).
    #[default]
    Environment,
    /// Exactly these files, in this order (docker `config.json` or containers `auth.json`
    /// format).
    Files(Vec<PathBuf>),
    /// No credentials: anonymous access only.
    Anonymous,
}

impl CredentialSource {
    /// The files this source reads, in lookup order.
    pub fn files(&self) -> Vec<PathBuf> {
        match self {
            CredentialSource::Anonymous => Vec::new(),
            CredentialSource::Files(f) => f.clone(),
            CredentialSource::Environment => environment_files(),
        }
    }
}

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

fn environment_files() -> Vec<PathBuf> {
    let home = env_path("HOME");
    let mut out = Vec::new();
    if let Some(f) = env_path("REGISTRY_AUTH_FILE") {
        out.push(f);
    } else if let Some(run) = env_path("XDG_RUNTIME_DIR") {
        out.push(run.join("containers/auth.json"));
    }
    if let Some(cfg) =
        env_path("XDG_CONFIG_HOME").or_else(|| home.as_ref().map(|h| h.join(".config")))
    {
        out.push(cfg.join("containers/auth.json"));
    }
    if let Some(d) = env_path("DOCKER_CONFIG") {
        out.push(d.join("config.json"));
    } else if let Some(h) = &home {
        out.push(h.join(".docker/config.json"));
    }
    out
}

/// A username and password for one registry. The password never appears in `Debug`.
#[derive(Clone)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    password: SecretString,
    /// The file they were read from.
    pub source: PathBuf,
}

impl Credentials {
    /// Credentials given directly (for instance from a CI secret).
    pub fn new(username: String, password: SecretString, source: PathBuf) -> Self {
        Credentials {
            username,
            password,
            source,
        }
    }

    /// The password. Only the HTTP layer should need this.
    pub fn password(&self) -> &SecretString {
        &self.password
    }

    pub(crate) fn to_registry_auth(&self) -> oci_client::secrets::RegistryAuth {
        // oci-client keeps credentials as plain Strings; this copy lives as long as the client.
        oci_client::secrets::RegistryAuth::Basic(
            self.username.clone(),
            self.password.expose_secret().to_string(),
        )
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("source", &self.source)
            .finish()
    }
}

/// Finds credentials for `image` in `files` (lookup order as in the module documentation).
/// A missing file is skipped; an unreadable or malformed one is an error, because silently
/// ignoring it would end in a confusing 401.
pub fn find_credentials(
    files: &[PathBuf],
    image: &ImageRef,
) -> Result<Option<Credentials>, OciError> {
    for file in files {
        let text = match std::fs::read(file) {
            Ok(t) => Zeroizing::new(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(OciError::CredentialsFile {
                    path: file.clone(),
                    reason: e.to_string(),
                })
            }
        };
        if let Some(c) = lookup_in(file, &text, image)? {
            return Ok(Some(c));
        }
    }
    Ok(None)
}

#[derive(serde::Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: std::collections::BTreeMap<String, AuthEntry>,
}

#[derive(serde::Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
}

/// Registry host names that are the same registry as `registry`.
fn registry_aliases(registry: &str) -> Vec<&str> {
    if registry == DOCKER_HUB {
        vec!["docker.io", "index.docker.io", "registry-1.docker.io"]
    } else {
        vec![registry]
    }
}

/// `https://index.docker.io/v1/` → `index.docker.io`; `reg.io/ns` stays.
fn normalise_key(key: &str) -> &str {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let k = k.trim_end_matches('/');
    k.strip_suffix("/v1")
        .or_else(|| k.strip_suffix("/v2"))
        .unwrap_or(k)
}

fn lookup_in(path: &Path, text: &[u8], image: &ImageRef) -> Result<Option<Credentials>, OciError> {
    let file: AuthFile = serde_json::from_slice(text).map_err(|e| OciError::CredentialsFile {
        path: path.to_path_buf(),
        reason: format!("not valid JSON: {e}"),
    })?;
    // Candidate keys, most specific first: registry/ns/repo, registry/ns, registry.
    let parts: Vec<&str> = image.repository().split('/').collect();
    for alias in registry_aliases(image.registry()) {
        for n in (0..=parts.len()).rev() {
            let want = if n == 0 {
                alias.to_string()
            } else {
                format!("{alias}/{}", parts[..n].join("/"))
            };
            for (key, entry) in &file.auths {
                if normalise_key(key) != want {
                    continue;
                }
                let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) else {
                    continue;
                };
                let decoded = Zeroizing::new(
                    base64::engine::general_purpose::STANDARD
                        .decode(auth.trim())
                        .map_err(|_| OciError::CredentialsFile {
                            path: path.to_path_buf(),
                            reason: format!("the auth entry for {key} is not valid base64"),
                        })?,
                );
                let text =
                    std::str::from_utf8(&decoded).map_err(|_| OciError::CredentialsFile {
                        path: path.to_path_buf(),
                        reason: format!("the auth entry for {key} is not UTF-8"),
                    })?;
                let Some((user, pass)) = text.split_once(':') else {
                    return Err(OciError::CredentialsFile {
                        path: path.to_path_buf(),
                        reason: format!("the auth entry for {key} is not user:password"),
                    });
                };
                return Ok(Some(Credentials {
                    username: user.to_string(),
                    password: SecretString::from(pass.to_string()),
                    source: path.to_path_buf(),
                }));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn finds_most_specific_entry_and_hides_password() {
        let dir = std::env::temp_dir().join(format!("keyward-creds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("auth.json");
        std::fs::write(
            &f,
            format!(
                r#"{{"auths":{{"reg.io":{{"auth":"{}"}},"reg.io/team":{{"auth":"{}"}},"https://index.docker.io/v1/":{{"auth":"{}"}},"helper.io":{{"identitytoken":"x"}}}},"credsStore":"desktop"}}"#,
                b64("all:pw1"),
                b64("team:pw:with:colons"),
                b64("hub:pw3")
            ),
        )
        .unwrap();
        let files = vec![dir.join("missing.json"), f.clone()];
        let c = find_credentials(&files, &ImageRef::parse("reg.io/team/app").unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(c.username, "team");
        assert_eq!(c.password().expose_secret(), "pw:with:colons");
        assert!(!format!("{c:?}").contains("pw:with"));
        let c = find_credentials(&files, &ImageRef::parse("reg.io/other/app").unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(c.username, "all");
        let c = find_credentials(&files, &ImageRef::parse("busybox").unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(c.username, "hub");
        assert!(
            find_credentials(&files, &ImageRef::parse("helper.io/app").unwrap())
                .unwrap()
                .is_none()
        );
        std::fs::write(&f, "{not json").unwrap();
        let err = find_credentials(&files, &ImageRef::parse("reg.io/app").unwrap()).unwrap_err();
        assert!(err.to_string().contains("auth.json"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
