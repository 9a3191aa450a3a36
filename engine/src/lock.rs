//! Owns `pipeline.lock`: a file a person can read (like `dvc.lock`) recording the fingerprint each
//! stage last ran with and what it produced.
//!
//! The lock is a record, not the source of truth: freshness is decided by the cache entry for a
//! stage's key. The lock is what lets `status` say *why* a stage is dirty (old -> new values).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::fingerprint::Fingerprint;
use crate::fsio::{Area, FsError, fs, write_atomic};

/// The whole lock file.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct LockFile {
    /// Lock format.
    pub version: u32,
    /// Stage name -> what it last ran with.
    #[serde(default)]
    pub stages: BTreeMap<String, LockedStage>,
}

/// One stage's last successful run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LockedStage {
    /// The cache key (`fingerprint.key()`, kept for readers and `gc`).
    pub key: String,
    /// What it ran with.
    #[serde(flatten)]
    pub fingerprint: Fingerprint,
    /// What the run produced.
    pub outputs: LockedOutputs,
}

/// Summary of a run's outputs.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LockedOutputs {
    /// Digest over all output files.
    pub digest: String,
    /// Number of files.
    pub files: usize,
    /// Total bytes.
    pub bytes: u64,
}

const HEADER: &str = "# pipeline.lock: written by `pipeline run` after each stage succeeds.\n# It records what every stage last ran with: read it and diff it, but do not edit it.\n";

impl LockFile {
    /// Reads the lock, or an empty one when there is none (or it cannot be parsed).
    pub fn load(path: &Path) -> Self {
        fs::read_to_string(path)
            .ok()
            .and_then(|text| serde_yaml_ng::from_str(&text).ok())
            .unwrap_or(Self {
                version: 1,
                stages: BTreeMap::new(),
            })
    }

    /// Writes the lock atomically.
    pub fn save(&self, path: &Path) -> Result<(), FsError> {
        let body = serde_yaml_ng::to_string(self).expect("lock serialises");
        write_atomic(path, format!("{HEADER}{body}").as_bytes(), Area::LockFile)
    }
}
