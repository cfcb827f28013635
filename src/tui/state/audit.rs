//! A compact in-memory index of the audit log, built once by the worker, so the Audit screen
//! renders only the visible window and filters a million entries without parsing any again.

use crate::audit::{Entry, Outcome};
use std::collections::HashMap;

/// Interned strings (actors, key names, event kinds): a filter compares small integers.
#[derive(Clone, Debug, Default)]
pub struct Interner {
    names: Vec<String>,
    ids: HashMap<String, u32>,
}

impl Interner {
    pub fn intern(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.ids.get(s) {
            return id;
        }
        let id = self.names.len() as u32;
        self.names.push(s.to_owned());
        self.ids.insert(s.to_owned(), id);
        id
    }
    pub fn id(&self, s: &str) -> Option<u32> {
        self.ids.get(s).copied()
    }
    pub fn name(&self, id: u32) -> &str {
        self.names
            .get(id as usize)
            .map(String::as_str)
            .unwrap_or("")
    }
    /// Every name, sorted (for filter choices).
    pub fn sorted(&self) -> Vec<String> {
        let mut v = self.names.clone();
        v.sort();
        v
    }
    pub fn len(&self) -> usize {
        self.names.len()
    }
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// "No key" in [`AuditRow::key`].
pub const NO_KEY: u32 = u32::MAX;
/// Length of the stored time, `YYYY-MM-DD HH:MM:SS`.
pub const TIME_LEN: usize = 19;

/// One entry, in 32 bytes: numbers and interned ids, and where its text lives in the arena.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuditRow {
    pub seq: u64,
    start: u32,
    len: u32,
    pub actor: u32,
    pub key: u32,
    pub kind: u16,
    pub outcome: Outcome,
}

/// The index: rows in log order and one text arena holding each row's time and summary.
#[derive(Clone, Debug, Default)]
pub struct AuditIndex {
    rows: Vec<AuditRow>,
    text: String,
    pub actors: Interner,
    pub keys: Interner,
    pub kinds: Interner,
    /// Byte offset just past the last indexed entry (where the next read starts).
    pub end_offset: u64,
}

impl AuditIndex {
    pub fn len(&self) -> usize {
        self.rows.len()
    }
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
    pub fn row(&self, i: usize) -> Option<&AuditRow> {
        self.rows.get(i)
    }
    pub fn rows(&self) -> &[AuditRow] {
        &self.rows
    }
    /// The newest entry's seq (0 when empty).
    pub fn head_seq(&self) -> u64 {
        self.rows.last().map(|r| r.seq).unwrap_or(0)
    }

    /// Adds one entry read at byte offset `end` (just past its line).
    pub fn push(&mut self, entry: &Entry, end: u64) {
        let start = self.text.len();
        let time = entry.time.as_bytes();
        for i in 0..TIME_LEN {
            let c = match time.get(i) {
                Some(b'T') => ' ',
                Some(&b) if b.is_ascii() => b as char,
                _ => ' ',
            };
            self.text.push(c);
        }
        self.text.push_str(&entry.event.summary());
        if let Some(d) = &entry.detail {
            self.text.push_str(" — ");
            self.text.push_str(d);
        }
        // The arena is addressed with u32: beyond 4 GiB of text, rows keep no text.
        let (start32, len32) = match (u32::try_from(start), u32::try_from(self.text.len() - start))
        {
            (Ok(s), Ok(l)) => (s, l),
            _ => {
                self.text.truncate(start);
                (0, 0)
            }
        };
        let actor = self.actors.intern(&entry.actor.to_string());
        let key = entry
            .event
            .key()
            .map(|k| self.keys.intern(k))
            .unwrap_or(NO_KEY);
        let kind = self.kinds.intern(entry.event.kind()) as u16;
        self.rows.push(AuditRow {
            seq: entry.seq,
            start: start32,
            len: len32,
            actor,
            key,
            kind,
            outcome: entry.outcome,
        });
        self.end_offset = end;
    }

    /// `YYYY-MM-DD HH:MM:SS` of a row.
    pub fn time(&self, row: &AuditRow) -> &str {
        let s = row.start as usize;
        if row.len as usize >= TIME_LEN {
            self.text.get(s..s + TIME_LEN).unwrap_or("")
        } else {
            ""
        }
    }

    /// The one-line summary of a row (with its detail, if any).
    pub fn summary(&self, row: &AuditRow) -> &str {
        let s = row.start as usize;
        let e = s + row.len as usize;
        if row.len as usize >= TIME_LEN {
            self.text.get(s + TIME_LEN..e).unwrap_or("")
        } else {
            ""
        }
    }

    pub fn key_name(&self, row: &AuditRow) -> Option<&str> {
        (row.key != NO_KEY).then(|| self.keys.name(row.key))
    }
}

/// What the Audit screen shows: every field optional; `search` is case-insensitive.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub key: Option<String>,
    pub actor: Option<String>,
    pub kind: Option<String>,
    pub outcome: Option<Outcome>,
    pub search: String,
}

impl AuditFilter {
    pub fn is_empty(&self) -> bool {
        self == &AuditFilter::default()
    }

    /// A short description, e.g. `key=release outcome=failed "v2"`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(k) = &self.key {
            parts.push(format!("key={k}"));
        }
        if let Some(a) = &self.actor {
            parts.push(format!("actor={a}"));
        }
        if let Some(k) = &self.kind {
            parts.push(format!("event={k}"));
        }
        if let Some(o) = &self.outcome {
            parts.push(format!("outcome={o}"));
        }
        if !self.search.is_empty() {
            parts.push(format!("/{}", self.search));
        }
        parts.join(" ")
    }
}

/// A filter resolved against an index: ids instead of names. `None` = matches nothing.
#[derive(Clone, Debug)]
pub struct Compiled {
    key: Option<u32>,
    actor: Option<u32>,
    kind: Option<u16>,
    outcome: Option<Outcome>,
    needle: Vec<u8>,
}

impl Compiled {
    pub fn new(f: &AuditFilter, index: &AuditIndex) -> Option<Self> {
        let key = match &f.key {
            Some(k) => Some(index.keys.id(k)?),
            None => None,
        };
        let actor = match &f.actor {
            Some(a) => Some(index.actors.id(a)?),
            None => None,
        };
        let kind = match &f.kind {
            Some(k) => Some(index.kinds.id(k)? as u16),
            None => None,
        };
        Some(Compiled {
            key,
            actor,
            kind,
            outcome: f.outcome,
            needle: f.search.to_ascii_lowercase().into_bytes(),
        })
    }

    /// Whether a row matches.
    pub fn matches(&self, index: &AuditIndex, row: &AuditRow) -> bool {
        if self.key.is_some_and(|k| k != row.key)
            || self.actor.is_some_and(|a| a != row.actor)
            || self.kind.is_some_and(|k| k != row.kind)
            || self.outcome.is_some_and(|o| o != row.outcome)
        {
            return false;
        }
        if self.needle.is_empty() {
            return true;
        }
        let s = row.start as usize;
        let hay = index
            .text
            .as_bytes()
            .get(s..s + row.len as usize)
            .unwrap_or(&[]);
        contains_ignore_ascii_case(hay, &self.needle)
            || contains_ignore_ascii_case(row.seq.to_string().as_bytes(), &self.needle)
    }

    pub fn has_search(&self) -> bool {
        !self.needle.is_empty()
    }
}

/// Case-insensitive (ASCII) substring test; `needle` is already lowercase.
fn contains_ignore_ascii_case(hay: &[u8], needle: &[u8]) -> bool {
    let Some((&first, rest)) = needle.split_first() else {
        return true;
    };
    if hay.len() < needle.len() {
        return false;
    }
    let last_start = hay.len() - needle.len();
    let mut i = 0;
    while i <= last_start {
        if hay[i].to_ascii_lowercase() == first
            && hay[i + 1..i + needle.len()]
                .iter()
                .zip(rest)
                .all(|(a, b)| a.to_ascii_lowercase() == *b)
        {
            return true;
        }
        i += 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Actor, Event};

    pub(crate) fn entry(seq: u64, event: Event, outcome: Outcome) -> Entry {
        Entry {
            seq,
            prev: String::new(),
            time: "2026-11-25T06:00:00.000Z".into(),
            actor: Actor {
                user: if seq.is_multiple_of(2) {
                    "alice"
                } else {
                    "bob"
                }
                .into(),
                host: "h".into(),
            },
            event,
            outcome,
            detail: None,
            hash: String::new(),
        }
    }

    #[test]
    fn rows_keep_time_summary_and_filter_by_ids_and_text() {
        let mut idx = AuditIndex::default();
        for seq in 1..=10u64 {
            let e = entry(
                seq,
                Event::PublicKeyRead {
                    key: if seq < 5 { "release" } else { "ci" }.into(),
                    version: seq as u32,
                    key_id: "00".into(),
                },
                if seq == 7 {
                    Outcome::Failed
                } else {
                    Outcome::Ok
                },
            );
            idx.push(&e, seq * 100);
        }
        assert_eq!(idx.len(), 10);
        assert_eq!(idx.end_offset, 1000);
        let r = *idx.row(0).unwrap();
        assert_eq!(idx.time(&r), "2026-11-25 06:00:00");
        assert_eq!(idx.summary(&r), "public key of release/1 read");
        let count = |f: AuditFilter| {
            let c = Compiled::new(&f, &idx);
            idx.rows()
                .iter()
                .filter(|r| c.as_ref().is_some_and(|c| c.matches(&idx, r)))
                .count()
        };
        assert_eq!(
            count(AuditFilter {
                key: Some("release".into()),
                ..Default::default()
            }),
            4
        );
        assert_eq!(
            count(AuditFilter {
                outcome: Some(Outcome::Failed),
                ..Default::default()
            }),
            1
        );
        assert_eq!(
            count(AuditFilter {
                actor: Some("alice@h".into()),
                search: "CI/".into(),
                ..Default::default()
            }),
            3
        );
        assert_eq!(
            count(AuditFilter {
                key: Some("nope".into()),
                ..Default::default()
            }),
            0
        );
    }
}
