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
//! host. Credential helpers are run as Docker and containers/image run them: `credHelpers`
//! (per registry) first, then the `auth` field (base64 `user:password`), then `credsStore`
//! (every registry): `docker-credential-NAME get` found on `PATH`, the registry on its stdin,
//! `{"Username","Secret"}` on its stdout. A helper that is not installed, or does not know the
//! registry, means no credentials from that file. `identitytoken` (OAuth refresh tokens) and
//! helper answers with the `<token>` user name are not supported and skipped.

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
    let path: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    find_credentials_in(files, image, &path)
}

/// As [`find_credentials`], looking for credential helpers in `helper_dirs`.
fn find_credentials_in(
    files: &[PathBuf],
    image: &ImageRef,
    helper_dirs: &[PathBuf],
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
        if let Some(c) = lookup_in(file, &text, image, helper_dirs)? {
            return Ok(Some(c));
        }
    }
    Ok(None)
}

#[derive(serde::Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: std::collections::BTreeMap<String, AuthEntry>,
    /// Registry -> helper name, for those registries only.
    #[serde(default, rename = "credHelpers")]
    cred_helpers: std::collections::BTreeMap<String, String>,
    /// The helper for every registry.
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

/// What `docker-credential-NAME get` prints.
#[derive(serde::Deserialize)]
struct HelperAnswer {
    #[serde(rename = "Username")]
    username: String,
    /// Moved into a `SecretString` at once (wiped on drop).
    #[serde(rename = "Secret")]
    secret: String,
}

/// Runs `docker-credential-NAME get` for `server`. `Ok(None)`: the helper is not installed,
/// does not know the server, or holds an identity token (not supported).
fn run_helper(
    file: &Path,
    name: &str,
    server: &str,
    helper_dirs: &[PathBuf],
) -> Result<Option<Credentials>, OciError> {
    use std::io::Write as _;
    let bad = |reason: String| OciError::CredentialsFile {
        path: file.to_path_buf(),
        reason,
    };
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        || name.starts_with('.')
    {
        return Err(bad(format!(
            "credential helper name {name:?} is not a plain name (docker-credential-NAME)"
        )));
    }
    let program = format!("docker-credential-{name}");
    let Some(exe) = helper_dirs
        .iter()
        .map(|d| d.join(&program))
        .find(|p| p.is_file())
    else {
        return Ok(None);
    };
    let mut child = std::process::Command::new(&exe)
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| bad(format!("cannot run {}: {e}", exe.display())))?;
    if let Some(mut stdin) = child.stdin.take() {
        // The protocol: the server URL, no newline; then end of input.
        let _ = stdin.write_all(server.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| bad(format!("{program} failed: {e}")))?;
    let stdout = Zeroizing::new(out.stdout);
    if !out.status.success() {
        // Docker's helpers say "credentials not found" on stdout; only stderr is ever shown,
        // so nothing a helper printed on stdout can leak into a message.
        let not_found = |b: &[u8]| {
            String::from_utf8_lossy(b)
                .to_lowercase()
                .contains("credentials not found")
        };
        if not_found(&stdout) || not_found(&out.stderr) {
            return Ok(None);
        }
        return Err(bad(format!(
            "{program} get {server} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
                .trim()
                .chars()
                .take(200)
                .collect::<String>()
        )));
    }
    let answer: HelperAnswer = serde_json::from_slice(&stdout).map_err(|e| {
        bad(format!(
            "{program} printed something that is not its JSON: {e}"
        ))
    })?;
    let password = SecretString::from(answer.secret);
    if answer.username == "<token>" {
        return Ok(None);
    }
    Ok(Some(Credentials {
        username: answer.username,
        password,
        source: file.to_path_buf(),
    }))
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

fn lookup_in(
    path: &Path,
    text: &[u8],
    image: &ImageRef,
    helper_dirs: &[PathBuf],
) -> Result<Option<Credentials>, OciError> {
    let file: AuthFile = serde_json::from_slice(text).map_err(|e| OciError::CredentialsFile {
        path: path.to_path_buf(),
        reason: format!("not valid JSON: {e}"),
    })?;
    // A helper named for this registry comes first.
    for alias in registry_aliases(image.registry()) {
        for (key, helper) in &file.cred_helpers {
            if normalise_key(key) == alias {
                return run_helper(path, helper, key, helper_dirs);
            }
        }
    }
    if let Some(c) = lookup_auths(path, &file, image)? {
        return Ok(Some(c));
    }
    // Then the store for every registry, asked with the key `docker login` used.
    if let Some(store) = &file.creds_store {
        let server = if image.registry() == DOCKER_HUB {
            "https://index.docker.io/v1/".to_owned()
        } else {
            file.auths
                .keys()
                .find(|k| normalise_key(k) == image.registry())
                .cloned()
                .unwrap_or_else(|| image.registry().to_owned())
        };
        return run_helper(path, store, &server, helper_dirs);
    }
    Ok(None)
}

fn lookup_auths(
    path: &Path,
    file: &AuthFile,
    image: &ImageRef,
) -> Result<Option<Credentials>, OciError> {
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
        // helper.io has only an identity token, and the `desktop` store is not installed.
        assert!(
            find_credentials_in(&files, &ImageRef::parse("helper.io/app").unwrap(), &[])
                .unwrap()
                .is_none()
        );
        std::fs::write(&f, "{not json").unwrap();
        let err = find_credentials(&files, &ImageRef::parse("reg.io/app").unwrap()).unwrap_err();
        assert!(err.to_string().contains("auth.json"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn credential_helpers_per_registry_then_auths_then_the_store() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        // A helper that answers for two servers and logs what it was asked (never a secret).
        let helper = |name: &str| {
            let p = bin.join(format!("docker-credential-{name}"));
            std::fs::write(
                &p,
                format!(
                    r#"#!/bin/sh
[ "$1" = get ] || exit 3
read -r server || true
echo "$server" >> '{log}'
case "$server" in
  ci.example.com) echo '{{"ServerURL":"ci.example.com","Username":"robot","Secret":"s3cret-{name}"}}' ;;
  https://index.docker.io/v1/) echo '{{"ServerURL":"x","Username":"hubuser","Secret":"hub-{name}"}}' ;;
  tok.example.com) echo '{{"ServerURL":"x","Username":"<token>","Secret":"refresh"}}' ;;
  *) echo "credentials not found in native keychain"; exit 1 ;;
esac
"#,
                    log = dir.path().join("asked.log").display()
                ),
            )
            .unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        helper("pass");
        helper("ecr");
        let f = dir.path().join("config.json");
        std::fs::write(
            &f,
            format!(
                r#"{{"auths":{{"plain.example.com":{{"auth":"{}"}},"ci.example.com":{{}}}},"credHelpers":{{"ci.example.com":"ecr","gone.example.com":"missing"}},"credsStore":"pass"}}"#,
                b64("alice:pw")
            ),
        )
        .unwrap();
        let files = vec![f.clone()];
        let dirs = vec![bin.clone()];
        let get = |image: &str| {
            find_credentials_in(&files, &ImageRef::parse(image).unwrap(), &dirs).unwrap()
        };
        let c = get("ci.example.com/team/app").unwrap();
        assert_eq!(c.username, "robot");
        assert_eq!(
            c.password().expose_secret(),
            "s3cret-ecr",
            "credHelpers wins"
        );
        assert!(!format!("{c:?}").contains("s3cret"));
        assert_eq!(get("plain.example.com/app").unwrap().username, "alice");
        let hub = get("library/busybox").unwrap();
        assert_eq!(
            hub.password().expose_secret(),
            "hub-pass",
            "the store, asked with Hub's key"
        );
        assert!(
            get("other.example.com/app").is_none(),
            "the store does not know it"
        );
        assert!(
            get("tok.example.com/app").is_none(),
            "identity tokens are skipped"
        );
        assert!(
            get("gone.example.com/app").is_none(),
            "helper not installed"
        );
        let asked = std::fs::read_to_string(dir.path().join("asked.log")).unwrap();
        assert!(asked.contains("https://index.docker.io/v1/"), "{asked}");
        // A helper that fails for another reason is an error naming the file.
        std::fs::write(&f, r#"{"credHelpers":{"ci.example.com":"../evil"}}"#).unwrap();
        let err = find_credentials_in(&files, &ImageRef::parse("ci.example.com/a").unwrap(), &dirs)
            .unwrap_err();
        assert!(err.to_string().contains("config.json"), "{err}");
    }
}
