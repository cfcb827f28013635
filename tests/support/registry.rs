//! Test support: a real OCI registry (Debian's `docker-registry`) on 127.0.0.1, a raw HTTP
//! client to build fixtures without the code under test, tiny fake registries for error
//! paths, and a software P-256 signer.
//!
//! Every process started here is killed by its PID when its guard is dropped; every server
//! listens on loopback only.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use keyward::oci::{
    BatchSigner, ClientOptions, CredentialSource, Digest, ImageSignResult, RegistryClient,
};
use p256::pkcs8::EncodePublicKey as _;
use sha2::Digest as _;

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// A private `docker-registry` on 127.0.0.1:<random port> with its own storage directory.
pub struct TestRegistry {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    access_log: bool,
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

impl TestRegistry {
    /// Starts a registry with a fresh storage directory.
    pub fn start() -> TestRegistry {
        Self::start_with(false)
    }

    /// Starts a registry that logs every request it serves (see [`TestRegistry::requests`]).
    pub fn start_with_access_log() -> TestRegistry {
        Self::start_with(true)
    }

    fn start_with(access_log: bool) -> TestRegistry {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut r = TestRegistry {
            child: None,
            port: 0,
            dir,
            access_log,
        };
        r.launch(false);
        r
    }

    /// The requests served so far as `METHOD PATH` (query string cut off), in order. Empty
    /// unless started with [`TestRegistry::start_with_access_log`].
    pub fn requests(&self) -> Vec<String> {
        let log = std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default();
        log.lines()
            .filter_map(|l| {
                // Combined log format: ... "METHOD PATH HTTP/1.1" STATUS ...
                let start = l.find('"')? + 1;
                let mut parts = l[start..].split(' ');
                let method = parts.next()?;
                let path = parts.next()?;
                let path = path.split('?').next()?;
                matches!(method, "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE")
                    .then(|| format!("{method} {path}"))
            })
            .collect()
    }

    fn launch(&mut self, readonly: bool) {
        assert!(
            Path::new(REGISTRY_BIN).exists(),
            "{REGISTRY_BIN} missing: apt-get install docker-registry"
        );
        let storage = self.dir.path().join("storage");
        std::fs::create_dir_all(&storage).expect("storage dir");
        let mut last_log = String::new();
        for _ in 0..5 {
            let port = free_port();
            let config = self.dir.path().join("config.yml");
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: {}\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: false\n    readonly:\n      enabled: {readonly}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                    !self.access_log,
                    storage.display()
                ),
            )
            .expect("write config");
            let log = self.dir.path().join("registry.log");
            let out = std::fs::File::create(&log).expect("log file");
            let err = out.try_clone().expect("log file");
            let child = Command::new(REGISTRY_BIN)
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .expect("start docker-registry");
            self.child = Some(child);
            self.port = port;
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(resp) = http(&self.host(), "GET", "/v2/", &[], &[]) {
                    if resp.status == 200 {
                        return;
                    }
                }
                if let Some(c) = self.child.as_mut() {
                    if let Ok(Some(_)) = c.try_wait() {
                        break; // exited, e.g. port taken: try another port
                    }
                }
                std::thread::sleep(Duration::from_millis(30));
            }
            last_log = std::fs::read_to_string(&log).unwrap_or_default();
            self.kill();
        }
        panic!("docker-registry did not start: {last_log}");
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            // Child::kill sends SIGKILL to exactly this PID.
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Restarts the registry on the same storage, read-only (every write is refused).
    pub fn restart_readonly(&mut self) {
        self.kill();
        self.launch(true);
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// CPU time (user + system) the registry process has used so far, in milliseconds
    /// (Linux only; 0 elsewhere).
    pub fn cpu_ms(&self) -> u64 {
        let Some(pid) = self.pid() else { return 0 };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the command name; utime and stime are the 12th and 13th, in ticks.
        let after = stat.rfind(')').map(|i| &stat[i + 1..]).unwrap_or("");
        let f: Vec<u64> = after
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
        // USER_HZ is 100 on every Linux the tests run on.
        ticks * 10
    }

    /// The PID of the registry process.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// A keyward client for this registry: plain HTTP, anonymous.
    pub fn client(&self) -> RegistryClient {
        RegistryClient::new(self.options()).expect("client")
    }

    /// Client options for this registry.
    pub fn options(&self) -> ClientOptions {
        ClientOptions {
            insecure_registries: vec![self.host()],
            credentials: CredentialSource::Anonymous,
            ..Default::default()
        }
    }

    /// `127.0.0.1:PORT/repo:tag`.
    pub fn image(&self, repo: &str, tag: &str) -> String {
        format!("{}/{repo}:{tag}", self.host())
    }

    /// Uploads a blob with the registry API (monolithic POST+PUT).
    pub fn put_blob(&self, repo: &str, data: &[u8]) -> String {
        let digest = sha256(data);
        let resp = http(
            &self.host(),
            "POST",
            &format!("/v2/{repo}/blobs/uploads/"),
            &[],
            &[],
        )
        .expect("start upload");
        assert_eq!(resp.status, 202, "start upload: {}", resp.text());
        let location = resp.header("location").expect("Location header");
        let path = match location.find("/v2/") {
            Some(i) => &location[i..],
            None => location.as_str(),
        };
        let sep = if path.contains('?') { '&' } else { '?' };
        let resp = http(
            &self.host(),
            "PUT",
            &format!("{path}{sep}digest={digest}"),
            &[("Content-Type", "application/octet-stream")],
            data,
        )
        .expect("finish upload");
        assert_eq!(resp.status, 201, "finish upload: {}", resp.text());
        digest
    }

    /// Uploads a manifest under `reference` (tag or digest); returns its digest.
    pub fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> String {
        let resp = http(
            &self.host(),
            "PUT",
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("Content-Type", media_type)],
            body,
        )
        .expect("put manifest");
        assert_eq!(resp.status, 201, "put manifest: {}", resp.text());
        sha256(body)
    }

    /// Reads a manifest: `(status, body)`.
    pub fn get_manifest(&self, repo: &str, reference: &str) -> (u16, Vec<u8>) {
        let resp = http(
            &self.host(),
            "GET",
            &format!("/v2/{repo}/manifests/{reference}"),
            &[(
                "Accept",
                "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json",
            )],
            &[],
        )
        .expect("get manifest");
        (resp.status, resp.body)
    }

    /// Pushes a small random single-layer image (random layer, config, OCI manifest) under
    /// `repo:tag`; returns the manifest digest.
    pub fn push_image(&self, repo: &str, tag: &str) -> String {
        let layer: Vec<u8> = (0..512).map(|_| rand::random::<u8>()).collect();
        let layer_digest = self.put_blob(repo, &layer);
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{layer_digest}"]}},"config":{{}}}}"#
        );
        let config_digest = self.put_blob(repo, config.as_bytes());
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer_digest}","size":{}}}]}}"#,
            config.len(),
            layer.len()
        );
        self.put_manifest(
            repo,
            tag,
            "application/vnd.oci.image.manifest.v1+json",
            manifest.as_bytes(),
        )
    }

    /// Pushes an OCI index of the given manifests under `repo:tag`; returns its digest.
    pub fn push_index(&self, repo: &str, tag: &str, manifests: &[String]) -> String {
        let entries: Vec<String> = manifests
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let (_, body) = self.get_manifest(repo, d);
                let arch = if i % 2 == 0 { "amd64" } else { "arm64" };
                format!(
                    r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{d}","size":{},"platform":{{"architecture":"{arch}","os":"linux"}}}}"#,
                    body.len()
                )
            })
            .collect();
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{}]}}"#,
            entries.join(",")
        );
        self.put_manifest(
            repo,
            tag,
            "application/vnd.oci.image.index.v1+json",
            index.as_bytes(),
        )
    }

    /// The layers of the signature manifest of `digest` (empty when there is none).
    pub fn signature_layers(&self, repo: &str, digest: &str) -> Vec<serde_json::Value> {
        let tag = format!("{}.sig", digest.replace(':', "-"));
        let (status, body) = self.get_manifest(repo, &tag);
        if status == 404 {
            return Vec::new();
        }
        assert_eq!(status, 200);
        let v: serde_json::Value = serde_json::from_slice(&body).expect("sig manifest JSON");
        v["layers"].as_array().cloned().unwrap_or_default()
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.kill();
    }
}

/// sha256 digest string of `data`.
pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// A raw HTTP response.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A minimal HTTP/1.1 client (one request per connection), independent of the code under test.
pub fn http(
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let mut s = TcpStream::connect(host)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no header end"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("bad status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(i) = b.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(String::from_utf8_lossy(&b[..i]).trim(), 16).unwrap_or(0);
        if n == 0 || b.len() < i + 2 + n {
            break;
        }
        out.extend_from_slice(&b[i + 2..i + 2 + n]);
        b = &b[(i + 2 + n + 2).min(b.len())..];
    }
    out
}

/// A fake registry on 127.0.0.1 that answers every request with the same response; it counts
/// the requests. Stops (thread joined) on drop.
pub struct FakeRegistry {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub requests: Arc<Mutex<Vec<String>>>,
}

impl FakeRegistry {
    /// Serves `status` with `headers` and `body` to every request.
    pub fn start(status: u16, headers: &[(&str, &str)], body: Vec<u8>) -> FakeRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let mut head = format!(
            "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let (stop2, reqs) = (Arc::clone(&stop), Arc::clone(&requests));
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            while !stop2.load(Ordering::SeqCst) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                        let mut buf = vec![0u8; 65536];
                        let mut got = Vec::new();
                        // Read the request head (bodies are small or absent).
                        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                            match s.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => got.extend_from_slice(&buf[..n]),
                            }
                        }
                        let line = String::from_utf8_lossy(&got)
                            .lines()
                            .next()
                            .unwrap_or("")
                            .to_string();
                        reqs.lock().expect("lock").push(line);
                        let _ = s.write_all(head.as_bytes());
                        let _ = s.write_all(&body);
                        let _ = s.flush();
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FakeRegistry {
            port,
            stop,
            thread: Some(thread),
            requests,
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A port on 127.0.0.1 that nothing listens on (bound, then released).
pub fn closed_port_host() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// A software P-256 signer for tests: signs with RFC 6979 (deterministic), records results.
pub struct P256Signer {
    pub key: p256::ecdsa::SigningKey,
    pub name: String,
    pub records: Vec<ImageSignResult>,
    /// Indexes whose `record` call fails.
    pub fail_record_for: Vec<usize>,
    /// Indexes (in signing order) whose `sign` call fails.
    pub fail_sign_calls: Vec<usize>,
    pub sign_calls: usize,
    /// Shared event log to check ordering against progress events.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl P256Signer {
    pub fn new(name: &str) -> P256Signer {
        P256Signer {
            key: p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng),
            name: name.to_string(),
            records: Vec::new(),
            fail_record_for: Vec::new(),
            fail_sign_calls: Vec::new(),
            sign_calls: 0,
            log: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// SubjectPublicKeyInfo PEM.
    pub fn public_pem(&self) -> String {
        self.key
            .verifying_key()
            .to_public_key_pem(p256::pkcs8::LineEnding::LF)
            .expect("pem")
    }

    pub fn public_key(&self) -> keyward::oci::PublicKey {
        keyward::oci::PublicKey::from_pem(&self.public_pem()).expect("public key")
    }
}

impl BatchSigner for P256Signer {
    fn sign(&mut self, payload: &[u8]) -> Result<Vec<u8>, String> {
        let n = self.sign_calls;
        self.sign_calls += 1;
        if self.fail_sign_calls.contains(&n) {
            return Err("token removed".into());
        }
        let sig: p256::ecdsa::Signature = signature::Signer::sign(&self.key, payload);
        Ok(sig.to_der().as_bytes().to_vec())
    }

    fn provenance(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("keyward.signer".to_string(), "test-custodian".to_string()),
            ("keyward.key".to_string(), self.name.clone()),
            ("keyward.token".to_string(), "software".to_string()),
        ])
    }

    fn record(&mut self, result: &ImageSignResult) -> Result<(), String> {
        self.log
            .lock()
            .expect("lock")
            .push(format!("record {}", result.index));
        self.records.push(result.clone());
        if self.fail_record_for.contains(&result.index) {
            return Err("audit log is read-only".into());
        }
        Ok(())
    }
}

/// A temp path helper.
pub fn temp_path(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

/// Parses a digest.
pub fn digest(s: &str) -> Digest {
    Digest::parse(s).expect("digest")
}
