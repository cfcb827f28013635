//! The audit log: append-only JSON lines, hash-chained, with signed checkpoints of the head.
//!
//! It is the source of truth for key state (see `keys`). The canonical encoding is in
//! docs/FORMATS.md: each line is `{"seq":N,"prev":"<hex>",...,"hash":"<hex>"}`, where `hash`
//! is SHA-256 over the line's bytes without the trailing `,"hash":"<hex>"` member.

pub mod checkpoint;
pub mod event;
pub mod verify;

pub use event::{Actor, Event, Outcome};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The `prev` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// `,"hash":"` + 64 hex + `"}`
const HASH_SUFFIX_LEN: usize = 9 + 64 + 2;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot write the audit log {path}: {source}. The operation was refused; fix the file (permissions, disk space) and retry")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the audit log {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the audit log {path} is damaged at line {line}: {detail}. Run `keyward audit verify` for details")]
    Corrupt {
        path: String,
        line: u64,
        detail: String,
    },
}

/// One entry as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub seq: u64,
    pub prev: String,
    pub time: String,
    pub actor: Actor,
    pub event: Event,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub hash: String,
}

/// The fields that are hashed, in their fixed order.
#[derive(Serialize)]
struct Body<'a> {
    seq: u64,
    prev: &'a str,
    time: &'a str,
    actor: &'a Actor,
    event: &'a Event,
    outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
}

/// Splits a stored line (without newline) into (seq, prev, hash) and checks its own hash.
/// Returns `Err(reason)` for a line that is not a well-formed entry or whose hash is wrong.
pub(crate) fn check_line(line: &[u8]) -> Result<(u64, [u8; 64], [u8; 64]), LineFault> {
    const PREFIX: &[u8] = b"{\"seq\":";
    if line.len() < PREFIX.len() + HASH_SUFFIX_LEN + 80 || !line.starts_with(PREFIX) {
        return Err(LineFault::Malformed);
    }
    let split = line.len() - HASH_SUFFIX_LEN;
    let suffix = &line[split..];
    if !suffix.starts_with(b",\"hash\":\"") || !suffix.ends_with(b"\"}") {
        return Err(LineFault::Malformed);
    }
    let mut hash = [0u8; 64];
    hash.copy_from_slice(&suffix[9..73]);
    if !hash.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(LineFault::Malformed);
    }
    let rest = &line[PREFIX.len()..];
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 19 {
        return Err(LineFault::Malformed);
    }
    let seq: u64 = std::str::from_utf8(&rest[..digits])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(LineFault::Malformed)?;
    let rest = &rest[digits..];
    const PREV: &[u8] = b",\"prev\":\"";
    if !rest.starts_with(PREV) || rest.len() < PREV.len() + 65 || rest[PREV.len() + 64] != b'"' {
        return Err(LineFault::Malformed);
    }
    let mut prev = [0u8; 64];
    prev.copy_from_slice(&rest[PREV.len()..PREV.len() + 64]);
    let mut h = Sha256::new();
    h.update(&line[..split]);
    h.update(b"}");
    let digest = h.finalize();
    let mut computed = [0u8; 64];
    hex::encode_to_slice(digest, &mut computed).map_err(|_| LineFault::Malformed)?;
    if computed != hash {
        return Err(LineFault::HashMismatch { seq });
    }
    Ok((seq, prev, hash))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LineFault {
    Malformed,
    HashMismatch { seq: u64 },
}

/// Encodes one entry line (without newline) exactly as `append` writes it; returns the line
/// and its hash. Public for tools and benchmarks that build logs.
#[allow(clippy::too_many_arguments)]
pub fn encode_entry(
    seq: u64,
    prev: &str,
    time: &str,
    actor: &Actor,
    event: &Event,
    outcome: Outcome,
    detail: Option<&str>,
) -> Result<(String, String), serde_json::Error> {
    seal(&Body {
        seq,
        prev,
        time,
        actor,
        event,
        outcome,
        detail,
    })
}

/// Serializes an entry body and seals it with its hash.
fn seal(body: &Body<'_>) -> Result<(String, String), serde_json::Error> {
    let json = serde_json::to_string(body)?;
    let hash = hex::encode(Sha256::digest(json.as_bytes()));
    let mut line = String::with_capacity(json.len() + HASH_SUFFIX_LEN + 1);
    line.push_str(&json[..json.len() - 1]);
    line.push_str(",\"hash\":\"");
    line.push_str(&hash);
    line.push_str("\"}");
    Ok((line, hash))
}

/// The audit log file of a home directory.
#[derive(Clone, Debug)]
pub struct AuditLog {
    path: PathBuf,
    actor: Actor,
}

/// The head of the log: the last entry's seq and hash (seq 0 and GENESIS when empty).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    pub seq: u64,
    pub hash: String,
    /// Byte length of the log up to and including the last entry's newline.
    pub offset: u64,
}

impl AuditLog {
    pub fn new(path: PathBuf) -> Self {
        AuditLog {
            path,
            actor: Actor::current(),
        }
    }

    pub fn with_actor(mut self, actor: Actor) -> Self {
        self.actor = actor;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write_err(&self, source: std::io::Error) -> AuditError {
        AuditError::Write {
            path: self.path.display().to_string(),
            source,
        }
    }

    fn read_err(&self, source: std::io::Error) -> AuditError {
        AuditError::Read {
            path: self.path.display().to_string(),
            source,
        }
    }

    /// Appends one entry under an exclusive lock, fsyncs it, and returns it. If this fails the
    /// caller must refuse the operation the entry records.
    pub fn append(
        &self,
        event: Event,
        outcome: Outcome,
        detail: Option<String>,
    ) -> Result<Entry, AuditError> {
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&self.path)
            .map_err(|e| self.write_err(e))?;
        file.lock().map_err(|e| self.write_err(e))?;
        let result = self.append_locked(&mut file, event, outcome, detail);
        let _ = file.unlock();
        result
    }

    fn append_locked(
        &self,
        file: &mut File,
        event: Event,
        outcome: Outcome,
        detail: Option<String>,
    ) -> Result<Entry, AuditError> {
        let (mut head, torn) = self.tail(file)?;
        if let Some(torn) = torn {
            // A crash cut an append short. Cut the torn bytes off and say so in the log.
            file.set_len(head.offset).map_err(|e| self.write_err(e))?;
            let repaired = self.write_entry(
                file,
                &head,
                Event::TornTailRepaired {
                    bytes: torn.len() as u64,
                    sha256: hex::encode(Sha256::digest(&torn)),
                },
                Outcome::Ok,
                None,
            )?;
            head = Head {
                seq: repaired.seq,
                hash: repaired.hash.clone(),
                offset: head.offset,
            };
        }
        self.write_entry(file, &head, event, outcome, detail)
    }

    fn write_entry(
        &self,
        file: &mut File,
        head: &Head,
        event: Event,
        outcome: Outcome,
        detail: Option<String>,
    ) -> Result<Entry, AuditError> {
        let time = now_rfc3339();
        let seq = head.seq + 1;
        let body = Body {
            seq,
            prev: &head.hash,
            time: &time,
            actor: &self.actor,
            event: &event,
            outcome,
            detail: detail.as_deref(),
        };
        let (mut line, hash) = seal(&body).map_err(|e| self.write_err(std::io::Error::other(e)))?;
        line.push('\n');
        if let Err(e) = file
            .write_all(line.as_bytes())
            .and_then(|()| file.sync_data())
        {
            // Take back a partial line (disk full, file size limit) so the log stays whole.
            let _ = file.set_len(head.offset);
            let _ = file.sync_data();
            return Err(self.write_err(e));
        }
        Ok(Entry {
            seq,
            prev: head.hash.clone(),
            time,
            actor: self.actor.clone(),
            event,
            outcome,
            detail,
            hash,
        })
    }

    /// Reads the head from the end of the file. Returns the torn bytes after the last newline,
    /// if any.
    fn tail(&self, file: &mut File) -> Result<(Head, Option<Vec<u8>>), AuditError> {
        let len = file.metadata().map_err(|e| self.read_err(e))?.len();
        if len == 0 {
            return Ok((
                Head {
                    seq: 0,
                    hash: GENESIS.into(),
                    offset: 0,
                },
                None,
            ));
        }
        let mut window: u64 = 16 * 1024;
        loop {
            let start = len.saturating_sub(window);
            file.seek(SeekFrom::Start(start))
                .map_err(|e| self.read_err(e))?;
            let mut buf = Vec::with_capacity((len - start) as usize);
            Read::by_ref(file)
                .take(len - start)
                .read_to_end(&mut buf)
                .map_err(|e| self.read_err(e))?;
            let (complete, torn) = match buf.iter().rposition(|&b| b == b'\n') {
                Some(i) => (&buf[..=i], &buf[i + 1..]),
                None if start == 0 => (&buf[..0], &buf[..]),
                None => {
                    window *= 4;
                    continue;
                }
            };
            let torn = (!torn.is_empty()).then(|| torn.to_vec());
            let offset = start + complete.len() as u64;
            if complete.is_empty() {
                if start == 0 {
                    return Ok((
                        Head {
                            seq: 0,
                            hash: GENESIS.into(),
                            offset: 0,
                        },
                        torn,
                    ));
                }
                window *= 4;
                continue;
            }
            let body = &complete[..complete.len() - 1];
            let line_start = match body.iter().rposition(|&b| b == b'\n') {
                Some(i) => i + 1,
                None if start == 0 => 0,
                None => {
                    window *= 4;
                    continue;
                }
            };
            let last = &body[line_start..];
            let (seq, _, hash) = check_line(last).map_err(|f| AuditError::Corrupt {
                path: self.path.display().to_string(),
                line: 0,
                detail: format!(
                    "the last entry is not intact ({f:?}); keyward will not append after it"
                ),
            })?;
            return Ok((
                Head {
                    seq,
                    hash: String::from_utf8_lossy(&hash).into_owned(),
                    offset,
                },
                torn,
            ));
        }
    }

    /// The current head, without locking (a snapshot read).
    pub fn head(&self) -> Result<Head, AuditError> {
        let mut file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Head {
                    seq: 0,
                    hash: GENESIS.into(),
                    offset: 0,
                })
            }
            Err(e) => return Err(self.read_err(e)),
        };
        Ok(self.tail(&mut file)?.0)
    }

    /// Reads and parses entries from byte `offset` on, calling `f` for each.
    pub fn for_each_from(
        &self,
        offset: u64,
        mut f: impl FnMut(Entry, u64),
    ) -> Result<(), AuditError> {
        let file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.read_err(e)),
        };
        let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
        reader
            .seek(SeekFrom::Start(offset))
            .map_err(|e| self.read_err(e))?;
        let mut pos = offset;
        let mut line = Vec::new();
        let mut n = 0u64;
        loop {
            line.clear();
            let read = std::io::BufRead::read_until(&mut reader, b'\n', &mut line)
                .map_err(|e| self.read_err(e))?;
            if read == 0 || line.last() != Some(&b'\n') {
                // End, or a torn tail that the next append will repair.
                return Ok(());
            }
            n += 1;
            pos += read as u64;
            let entry: Entry = serde_json::from_slice(&line[..line.len() - 1]).map_err(|e| {
                AuditError::Corrupt {
                    path: self.path.display().to_string(),
                    line: n,
                    detail: format!("not a keyward audit entry: {e}"),
                }
            })?;
            f(entry, pos);
        }
    }

    /// All entries (for `audit show` and export).
    pub fn entries(&self) -> Result<Vec<Entry>, AuditError> {
        let mut out = Vec::new();
        self.for_each_from(0, |e, _| out.push(e))?;
        Ok(out)
    }
}

/// Now as RFC 3339 UTC with seconds and milliseconds.
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    now.format(&fmt)
        .unwrap_or_else(|_| now.unix_timestamp().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(dir: &Path) -> AuditLog {
        AuditLog::new(dir.join("audit.log")).with_actor(Actor {
            user: "alice".into(),
            host: "h".into(),
        })
    }

    fn ev(n: u32) -> Event {
        Event::PublicKeyRead {
            key: "k".into(),
            version: n,
            key_id: "00".into(),
        }
    }

    #[test]
    fn append_chains_entries_and_parses_back() {
        let dir = tempfile::tempdir().unwrap();
        let log = log(dir.path());
        let a = log.append(ev(1), Outcome::Ok, None).unwrap();
        let b = log
            .append(ev(2), Outcome::Failed, Some("why".into()))
            .unwrap();
        assert_eq!(a.seq, 1);
        assert_eq!(a.prev, GENESIS);
        assert_eq!(b.prev, a.hash);
        let all = log.entries().unwrap();
        assert_eq!(all, vec![a, b.clone()]);
        assert_eq!(log.head().unwrap().hash, b.hash);
    }

    #[test]
    fn torn_tail_is_cut_and_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let log = log(dir.path());
        log.append(ev(1), Outcome::Ok, None).unwrap();
        let mut f = OpenOptions::new().append(true).open(log.path()).unwrap();
        f.write_all(b"{\"seq\":2,\"pr").unwrap();
        drop(f);
        let e = log.append(ev(2), Outcome::Ok, None).unwrap();
        assert_eq!(e.seq, 3);
        let all = log.entries().unwrap();
        assert_eq!(all[1].event.kind(), "torn_tail_repaired");
        assert!(verify::verify(log.path(), &[]).unwrap().is_ok());
    }

    #[test]
    fn the_pin_never_appears_in_an_entry() {
        // Events carry no secret fields at all; this guards against someone adding one.
        let dir = tempfile::tempdir().unwrap();
        let log = log(dir.path());
        log.append(
            Event::Login {
                token: "hsm".into(),
                serial: "1".into(),
                tries_left: Some(2),
            },
            Outcome::Failed,
            Some("wrong PIN".into()),
        )
        .unwrap();
        let text = std::fs::read_to_string(log.path()).unwrap();
        assert!(!text.to_lowercase().contains("\"pin\""));
    }
}
