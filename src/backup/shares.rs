//! M-of-N custodian shares. The backup is encrypted to a fresh age X25519 identity; the
//! identity's text (`AGE-SECRET-KEY-1…`) is split with Shamir's scheme over GF(256) (the
//! `vsss-rs` crate), and each share is age-encrypted to one custodian and written beside the
//! backup as `FILE.NAME.share`. Each share names the backup it belongs to (its backup id), so
//! a share of another backup is rejected before anything is combined.

use super::crypt;
use super::BackupError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use zeroize::{Zeroize, Zeroizing};

pub const SHARE_FORMAT: &str = "keyward-backup-share/1";

/// A custodian as given on the command line: `NAME=AGE_RECIPIENT`.
#[derive(Clone, Debug)]
pub struct Custodian {
    pub name: String,
    pub recipient: String,
}

impl FromStr for Custodian {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, recipient) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?}: expected NAME=AGE_RECIPIENT"))?;
        check_custodian_name(name)?;
        Ok(Custodian {
            name: name.to_owned(),
            recipient: recipient.trim().to_owned(),
        })
    }
}

/// Custodian names become part of a file name: letters, digits, `-`, `_`, `.` (not first).
pub fn check_custodian_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 64
        || name.starts_with(['.', '-'])
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!(
            "invalid custodian name {name:?}: use 1 to 64 letters, digits, '-', '_' or '.' (not first)"
        ));
    }
    Ok(())
}

/// The plaintext of a share file (inside the custodian's age encryption). Holds share material:
/// no Debug, no Clone, wiped on drop.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareRecord {
    pub format: String,
    /// The backup id (SHA-256 of the backup's age header) this share opens.
    pub backup_id: String,
    /// The backup's file name when it was created (for people; not checked).
    pub backup_file: String,
    pub custodian: String,
    pub threshold: u8,
    pub total: u8,
    /// Every custodian, in share order.
    pub custodians: Vec<String>,
    /// The Shamir share, hex: one byte of x coordinate, then one byte per secret byte.
    share: String,
}

impl Drop for ShareRecord {
    fn drop(&mut self) {
        self.share.zeroize();
    }
}

/// The share file written for `custodian` beside `backup`.
pub fn share_path(backup: &Path, custodian: &str) -> PathBuf {
    let name = backup
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "backup".into());
    backup.with_file_name(format!("{name}.{custodian}.share"))
}

/// Splits the fresh identity into one encrypted share per custodian. Returns (custodian name,
/// armoured age file) pairs in custodian order.
pub fn split(
    identity: &age::x25519::Identity,
    threshold: u8,
    custodians: &[Custodian],
    backup_id: &str,
    backup_file: &str,
) -> Result<Vec<(String, Vec<u8>)>, BackupError> {
    use age::secrecy::ExposeSecret;
    let total = custodians.len();
    check_threshold(threshold, total)?;
    let recipients = custodians
        .iter()
        .map(|c| crypt::parse_one_recipient(&c.recipient))
        .collect::<Result<Vec<_>, _>>()?;
    let secret = identity.to_string();
    let rng = getrandom::rand_core::UnwrapErr(getrandom::SysRng);
    let ids = (1..=total as u8).map(|i| vsss_rs::IdentifierGf256(vsss_rs::Gf256(i)));
    let shares = vsss_rs::Gf256::split_bytes_with_participant_ids_iter(
        threshold as usize,
        total,
        secret.expose_secret().as_bytes(),
        rng,
        ids,
    )
    .map_err(|e| BackupError::Other(format!("splitting the backup key: {e:?}")))?;
    let names: Vec<String> = custodians.iter().map(|c| c.name.clone()).collect();
    let mut out = Vec::with_capacity(total);
    for ((c, r), share) in custodians.iter().zip(&recipients).zip(shares) {
        let share = Zeroizing::new(share);
        let record = ShareRecord {
            format: SHARE_FORMAT.into(),
            backup_id: backup_id.into(),
            backup_file: backup_file.into(),
            custodian: c.name.clone(),
            threshold,
            total: total as u8,
            custodians: names.clone(),
            share: hex::encode(&*share),
        };
        let json = Zeroizing::new(
            serde_json::to_vec_pretty(&record).map_err(|e| BackupError::Other(e.to_string()))?,
        );
        out.push((
            c.name.clone(),
            crypt::encrypt_small_armored(r.as_ref(), &json)?,
        ));
    }
    Ok(out)
}

pub fn check_threshold(threshold: u8, total: usize) -> Result<(), BackupError> {
    if !(2..=255).contains(&total) {
        return Err(BackupError::Invalid(format!(
            "M-of-N needs 2 to 255 custodians (got {total})"
        )));
    }
    if threshold < 2 || threshold as usize > total {
        return Err(BackupError::Invalid(format!(
            "--shares {threshold} with {total} custodians: M must be between 2 and {total}"
        )));
    }
    Ok(())
}

/// Opens share files with the identities at hand (every identity is tried on every share),
/// checks they all belong to `backup_id`, and combines them into the backup's identity.
pub fn combine(
    share_files: &[PathBuf],
    identities: &[Box<dyn age::Identity>],
    backup_id: &str,
    backup_path: &Path,
) -> Result<age::x25519::Identity, BackupError> {
    if identities.is_empty() {
        return Err(BackupError::Invalid(
            "shares are encrypted to their custodians: pass each custodian's --identity FILE"
                .into(),
        ));
    }
    let mut by_x: BTreeMap<u8, (PathBuf, Zeroizing<Vec<u8>>)> = BTreeMap::new();
    let mut threshold: Option<(u8, u8)> = None;
    for f in share_files {
        let bytes = std::fs::read(f).map_err(|e| BackupError::io(f, e))?;
        let plain = crypt::decrypt_small(&bytes, identities).map_err(|e| match e {
            age::DecryptError::NoMatchingKeys | age::DecryptError::DecryptionFailed => {
                BackupError::ShareUnreadable {
                    share: f.display().to_string(),
                    tried: identities.len(),
                }
            }
            other => BackupError::BadShare {
                share: f.display().to_string(),
                why: other.to_string(),
            },
        })?;
        let record: ShareRecord =
            serde_json::from_slice(&plain).map_err(|e| BackupError::BadShare {
                share: f.display().to_string(),
                why: format!("not a keyward share: {e}"),
            })?;
        if record.format != SHARE_FORMAT {
            return Err(BackupError::BadShare {
                share: f.display().to_string(),
                why: format!("unknown share format {:?}", record.format),
            });
        }
        if record.backup_id != backup_id {
            return Err(BackupError::ForeignShare {
                share: f.display().to_string(),
                share_backup: record.backup_id.clone(),
                backup: backup_path.display().to_string(),
                backup_id: backup_id.into(),
            });
        }
        match threshold {
            None => threshold = Some((record.threshold, record.total)),
            Some(t) if t != (record.threshold, record.total) => {
                return Err(BackupError::BadShare {
                    share: f.display().to_string(),
                    why: "its M-of-N differs from the other shares'".into(),
                })
            }
            Some(_) => {}
        }
        let share =
            Zeroizing::new(
                hex::decode(&record.share).map_err(|_| BackupError::BadShare {
                    share: f.display().to_string(),
                    why: "its share is not hex".into(),
                })?,
            );
        let Some(&x) = share.first() else {
            return Err(BackupError::BadShare {
                share: f.display().to_string(),
                why: "empty share".into(),
            });
        };
        if let Some((other, prev)) = by_x.get(&x) {
            if **prev != *share {
                return Err(BackupError::BadShare {
                    share: f.display().to_string(),
                    why: format!("it conflicts with {} (same share number)", other.display()),
                });
            }
            continue; // the same share twice counts once
        }
        by_x.insert(x, (f.clone(), share));
    }
    let Some((m, _n)) = threshold else {
        return Err(BackupError::Invalid("no share given".into()));
    };
    let have = by_x.len();
    if have < m as usize {
        return Err(BackupError::NeedMoreShares {
            have,
            threshold: m,
            need: m as usize - have,
        });
    }
    let shares: Vec<Vec<u8>> = by_x
        .into_values()
        .take(m as usize)
        .map(|(_, s)| s.to_vec())
        .collect();
    let combined = vsss_rs::Gf256::combine_bytes(&shares);
    for mut s in shares {
        s.zeroize();
    }
    let secret = Zeroizing::new(
        combined.map_err(|e| BackupError::Other(format!("combining shares: {e:?}")))?,
    );
    let text = std::str::from_utf8(&secret).map_err(|_| BackupError::SharesDoNotCombine)?;
    age::x25519::Identity::from_str(text).map_err(|_| BackupError::SharesDoNotCombine)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn custodians(n: usize) -> (Vec<Custodian>, Vec<Box<dyn age::Identity>>) {
        let mut cs = Vec::new();
        let mut ids: Vec<Box<dyn age::Identity>> = Vec::new();
        for i in 0..n {
            let id = age::x25519::Identity::generate();
            cs.push(Custodian {
                name: format!("c{i}"),
                recipient: id.to_public().to_string(),
            });
            ids.push(Box::new(id));
        }
        (cs, ids)
    }

    #[test]
    fn any_m_shares_combine_and_fewer_say_how_many_more() {
        use age::secrecy::ExposeSecret;
        let dir = tempfile::tempdir().unwrap();
        let (cs, ids) = custodians(5);
        let fresh = age::x25519::Identity::generate();
        let files = split(&fresh, 3, &cs, "id1", "b.age").unwrap();
        let paths: Vec<PathBuf> = files
            .iter()
            .map(|(n, bytes)| {
                let p = dir.path().join(format!("b.age.{n}.share"));
                std::fs::write(&p, bytes).unwrap();
                p
            })
            .collect();
        let back = Path::new("b.age");
        for subset in [[0, 1, 2], [0, 2, 4], [1, 3, 4], [2, 3, 4]] {
            let pick: Vec<PathBuf> = subset.iter().map(|&i| paths[i].clone()).collect();
            let got = combine(&pick, &ids, "id1", back).unwrap();
            assert_eq!(
                got.to_string().expose_secret(),
                fresh.to_string().expose_secret()
            );
        }
        let err = combine(&paths[..2], &ids, "id1", back).err().unwrap();
        assert!(err.to_string().contains("need 1 more share"), "{err}");
        let err = combine(&paths[..3], &ids, "id2", back).err().unwrap();
        assert!(matches!(err, BackupError::ForeignShare { .. }), "{err}");
    }

    #[test]
    fn custodian_parsing() {
        let c: Custodian = "alice=age1xyz".parse().unwrap();
        assert_eq!(c.name, "alice");
        assert!("../x=age1".parse::<Custodian>().is_err());
        assert!("alice".parse::<Custodian>().is_err());
    }
}
