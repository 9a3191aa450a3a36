//! `pipeline.lock`: a file a person can read (like `dvc.lock`) recording what each stage last ran with.
//!
//! The lock is a record, not the source of truth: freshness is decided by the cache entry for a
//! stage's key. The lock is what lets `status` say *why* a stage is dirty (old -> new values).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::store::{StoreError, write_atomic};

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
    /// Stage kind.
    pub kind: String,
    /// Code version of the kind.
    pub version: u32,
    /// The cache key.
    pub key: String,
    /// Canonical params.
    pub params: serde_json::Value,
    /// Input role -> upstream stage and its output digest.
    #[serde(default)]
    pub inputs: BTreeMap<String, LockedInput>,
    /// File role -> path and content digest.
    #[serde(default)]
    pub files: BTreeMap<String, LockedFile>,
    /// What the run produced.
    pub outputs: LockedOutputs,
}

/// An upstream output as consumed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LockedInput {
    /// Upstream stage name.
    pub stage: String,
    /// Its output digest.
    pub digest: String,
}

/// A workspace file as consumed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LockedFile {
    /// Path relative to the project root.
    pub path: String,
    /// Content digest.
    pub digest: String,
}

/// Summary of a run's outputs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
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
        std::fs::read_to_string(path)
            .ok()
            .and_then(|text| serde_yaml_ng::from_str(&text).ok())
            .unwrap_or(Self {
                version: 1,
                stages: BTreeMap::new(),
            })
    }

    /// Writes the lock atomically.
    pub fn save(&self, path: &Path) -> Result<(), StoreError> {
        let body = serde_yaml_ng::to_string(self).expect("lock serialises");
        write_atomic(path, format!("{HEADER}{body}").as_bytes())
    }
}
