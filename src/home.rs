//! The home directory: where the audit log, the state snapshot, the config and the software
//! keystore live.

use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
pub struct Home {
    dir: PathBuf,
}

impl Home {
    /// `--home DIR`, else `KEYWARD_HOME`, else the platform data dir.
    pub fn resolve(flag: Option<PathBuf>) -> Result<Self, String> {
        if let Some(dir) = flag {
            return Ok(Home { dir });
        }
        if let Some(dir) = std::env::var_os("KEYWARD_HOME").filter(|v| !v.is_empty()) {
            return Ok(Home { dir: dir.into() });
        }
        directories::ProjectDirs::from("dev", "keyward", "keyward")
            .map(|p| Home {
                dir: p.data_dir().to_owned(),
            })
            .ok_or_else(|| {
                "cannot find a home directory for keyward; pass --home DIR or set KEYWARD_HOME"
                    .to_string()
            })
    }

    pub fn at(dir: impl Into<PathBuf>) -> Self {
        Home { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn audit_log(&self) -> PathBuf {
        self.dir.join("audit.log")
    }
    pub fn checkpoints(&self) -> PathBuf {
        self.dir.join("audit.checkpoints")
    }
    pub fn snapshot(&self) -> PathBuf {
        self.dir.join("state.json")
    }
    pub fn config(&self) -> PathBuf {
        self.dir.join("keyward.toml")
    }
}
