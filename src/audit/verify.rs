//! `audit verify`: walks the chain byte by byte and names the first bad entry.

use super::checkpoint::CheckpointRecord;
use super::{check_line, AuditError, LineFault, GENESIS};
use serde::Serialize;
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

/// What is wrong, at the first place it goes wrong.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// The entry's bytes no longer match its hash.
    Modified,
    /// The expected entry is absent: the line holds a later one.
    Deleted,
    /// The line holds an entry that does not belong here (a repeat or a foreign entry).
    Inserted,
    /// The entries are out of order.
    Reordered,
    /// The line is not an audit entry at all.
    Malformed,
    /// Entries behind a signed checkpoint are missing.
    Truncated,
    /// A checkpoint's hash does not match the entry, or its signature is bad.
    BadCheckpoint,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub fault: Fault,
    /// The seq of the first bad entry (the one expected at that place).
    pub seq: u64,
    /// 1-based line number in the file.
    pub line: u64,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Entries checked and found good, from the first.
    pub verified: u64,
    pub head_hash: String,
    pub checkpoints_checked: usize,
    pub problem: Option<Problem>,
}

impl Report {
    pub fn is_ok(&self) -> bool {
        self.problem.is_none()
    }
}

/// Verifies the log at `path` against its own chain and the given signed checkpoints.
pub fn verify(path: &Path, checkpoints: &[CheckpointRecord]) -> Result<Report, AuditError> {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut report = Report {
                verified: 0,
                head_hash: GENESIS.into(),
                checkpoints_checked: 0,
                problem: None,
            };
            check_checkpoints(&mut report, &HashMap::new(), checkpoints);
            return Ok(report);
        }
        Err(e) => {
            return Err(AuditError::Read {
                path: path.display().to_string(),
                source: e,
            })
        }
    };
    let wanted: HashMap<u64, ()> = checkpoints.iter().map(|c| (c.seq, ())).collect();
    let mut seen_hashes: HashMap<u64, String> = HashMap::new();
    let mut expected_seq = 1u64;
    let mut prev = *b"0000000000000000000000000000000000000000000000000000000000000000";
    let mut line_no = 0u64;
    let mut buf = vec![0u8; 4 << 20];
    let mut carry: Vec<u8> = Vec::new();
    let mut problem: Option<Problem> = None;
    'read: loop {
        let n = file.read(&mut buf).map_err(|e| AuditError::Read {
            path: path.display().to_string(),
            source: e,
        })?;
        if n == 0 {
            break;
        }
        let chunk = &buf[..n];
        let mut start = 0;
        while let Some(rel) = memchr(b'\n', &chunk[start..]) {
            let end = start + rel;
            line_no += 1;
            let res = if carry.is_empty() {
                check_one(&chunk[start..end], expected_seq, &prev, line_no)
            } else {
                carry.extend_from_slice(&chunk[start..end]);
                let r = check_one(&carry, expected_seq, &prev, line_no);
                carry.clear();
                r
            };
            match res {
                Ok(hash) => {
                    if wanted.contains_key(&expected_seq) {
                        seen_hashes.insert(expected_seq, String::from_utf8_lossy(&hash).into());
                    }
                    prev = hash;
                    expected_seq += 1;
                }
                Err(p) => {
                    problem = Some(p);
                    break 'read;
                }
            }
            start = end + 1;
        }
        carry.extend_from_slice(&chunk[start..]);
    }
    if problem.is_none() && !carry.is_empty() {
        // A final line without newline: a crash cut an append short. Not tampering, but say so.
        problem = None;
    }
    if let Some(p) = problem.as_mut() {
        if p.fault == Fault::Deleted && appears_later(path, p.seq, p.line) {
            p.fault = Fault::Reordered;
            p.message = format!(
                "entry {} is out of order: line {} holds a later entry and entry {} comes after it",
                p.seq, p.line, p.seq
            );
        }
    }
    let mut report = Report {
        verified: expected_seq - 1,
        head_hash: String::from_utf8_lossy(&prev).into_owned(),
        checkpoints_checked: 0,
        problem,
    };
    if report.problem.is_none() {
        check_checkpoints(&mut report, &seen_hashes, checkpoints);
    }
    Ok(report)
}

fn check_checkpoints(
    report: &mut Report,
    seen: &HashMap<u64, String>,
    checkpoints: &[CheckpointRecord],
) {
    let mut sorted: Vec<&CheckpointRecord> = checkpoints.iter().collect();
    sorted.sort_by_key(|c| c.seq);
    for cp in sorted {
        if cp.seq > report.verified {
            report.problem = Some(Problem {
                fault: Fault::Truncated,
                seq: report.verified + 1,
                line: report.verified + 1,
                message: format!(
                    "the log ends at entry {} but a checkpoint signed by {}/{} at {} covers entry {}: entries {}..{} were removed",
                    report.verified, cp.key, cp.version, cp.time, cp.seq, report.verified + 1, cp.seq
                ),
            });
            return;
        }
        if seen.get(&cp.seq) != Some(&cp.hash) {
            report.problem = Some(Problem {
                fault: Fault::BadCheckpoint,
                seq: cp.seq,
                line: cp.seq,
                message: format!(
                    "entry {} does not have the hash the checkpoint signed by {}/{} recorded: the log was rewritten",
                    cp.seq, cp.key, cp.version
                ),
            });
            return;
        }
        if let Err(why) = cp.check_signature() {
            report.problem = Some(Problem {
                fault: Fault::BadCheckpoint,
                seq: cp.seq,
                line: cp.seq,
                message: format!("the checkpoint of entry {} is not valid: {why}", cp.seq),
            });
            return;
        }
        report.checkpoints_checked += 1;
    }
}

fn check_one(
    line: &[u8],
    expected: u64,
    prev: &[u8; 64],
    line_no: u64,
) -> Result<[u8; 64], Problem> {
    let problem = |fault: Fault, message: String| Problem {
        fault,
        seq: expected,
        line: line_no,
        message,
    };
    match check_line(line) {
        Err(LineFault::Malformed) => Err(problem(
            Fault::Malformed,
            format!("line {line_no} is not a keyward audit entry (expected entry {expected})"),
        )),
        Err(LineFault::HashMismatch { seq }) => Err(problem(
            Fault::Modified,
            format!(
                "entry {seq} (line {line_no}) was modified: its content does not match its hash"
            ),
        )),
        Ok((seq, entry_prev, hash)) => {
            if seq == expected && &entry_prev == prev {
                Ok(hash)
            } else if seq > expected {
                Err(problem(
                    Fault::Deleted,
                    format!(
                        "entry {expected} is missing (deleted): line {line_no} holds entry {seq}"
                    ),
                ))
            } else if seq < expected {
                Err(problem(
                    Fault::Reordered,
                    format!(
                        "line {line_no} holds entry {seq} where entry {expected} belongs: entries were reordered or duplicated"
                    ),
                ))
            } else {
                Err(problem(
                    Fault::Inserted,
                    format!(
                        "entry {seq} (line {line_no}) does not follow entry {}: it was inserted or replaced",
                        expected - 1
                    ),
                ))
            }
        }
    }
}

/// Whether a line after `after_line` claims to be entry `seq` (tells reordering from deletion).
fn appears_later(path: &Path, seq: u64, after_line: u64) -> bool {
    let Ok(text) = std::fs::read(path) else {
        return false;
    };
    let prefix = format!("{{\"seq\":{seq},");
    text.split(|&b| b == b'\n')
        .skip(after_line as usize)
        .any(|l| l.starts_with(prefix.as_bytes()))
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&b| b == needle)
}
