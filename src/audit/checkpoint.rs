//! Signed checkpoints of the log head, kept in `audit.checkpoints` (JSON lines) and as
//! `checkpoint` entries in the log itself. A checkpoint makes truncation detectable: the log
//! must reach the checkpointed entry with the checkpointed hash. Copy checkpoints off the host
//! (`keyward audit checkpoint --output json`) so that an attacker who can rewrite the home
//! directory cannot rewrite them too.

use crate::token::PublicKey;
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointRecord {
    pub seq: u64,
    pub hash: String,
    pub time: String,
    pub key: String,
    pub version: u32,
    pub key_id: String,
    /// SPKI PEM of the signing key.
    pub public_key: String,
    /// Base64 signature over [`message`].
    pub signature: String,
}

/// The exact bytes a checkpoint signature covers.
pub fn message(seq: u64, hash: &str) -> Vec<u8> {
    format!("keyward audit checkpoint v1\nseq {seq}\nhash {hash}\n").into_bytes()
}

impl CheckpointRecord {
    pub fn check_signature(&self) -> Result<(), String> {
        use base64::Engine;
        let pk = PublicKey::from_pem(&self.public_key).map_err(|e| e.to_string())?;
        if pk.key_id() != self.key_id {
            return Err(format!(
                "its public key does not match key id {}",
                self.key_id
            ));
        }
        let sig = base64::engine::general_purpose::STANDARD
            .decode(&self.signature)
            .map_err(|e| format!("signature is not base64: {e}"))?;
        if pk.verify(&message(self.seq, &self.hash), &sig) {
            Ok(())
        } else {
            Err(format!("bad signature by {}/{}", self.key, self.version))
        }
    }
}

/// Reads checkpoint records (a missing file is an empty list).
pub fn load(path: &Path) -> Result<Vec<CheckpointRecord>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| format!("{} line {}: {e}", path.display(), i + 1))
        })
        .collect()
}

/// Appends a record with fsync.
pub fn append(path: &Path, record: &CheckpointRecord) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    f.lock()?;
    let mut line = serde_json::to_string(record).map_err(std::io::Error::other)?;
    line.push('\n');
    f.write_all(line.as_bytes())?;
    f.sync_data()
}
