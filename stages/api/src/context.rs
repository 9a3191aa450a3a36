//! What a stage sees while it runs ([`StageContext`]) and the per-item cache it may keep results in.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::{Progress, StageError};

/// What a stage sees while it runs.
pub struct StageContext<'a> {
    /// The stage's name in `pipeline.yaml` (not its kind).
    pub name: &'a str,
    /// Canonical params, as produced by [`Stage::canonical_params`](crate::Stage::canonical_params).
    pub params: &'a serde_json::Value,
    /// Role -> output directory of the upstream stage bound to it.
    pub inputs: &'a BTreeMap<String, PathBuf>,
    /// Role -> absolute path of the workspace file or directory bound to it.
    pub files: &'a BTreeMap<String, PathBuf>,
    /// An empty directory that becomes the stage's output once `run` returns `Ok`.
    pub out_dir: &'a Path,
    /// Worker threads the stage may use (a runtime knob, never part of the cache key).
    pub threads: usize,
    /// Where to report progress.
    pub progress: &'a dyn Progress,
    /// Per-item results kept across runs, so a stage reruns only the items that changed.
    pub items: &'a dyn ItemCache,
    /// `pipeline run --retry-failed`: attempt again the items that failed in earlier runs instead
    /// of reusing their remembered failure.
    pub retry_failed: bool,
    /// Output directories of this stage's earlier successful runs that are still in the cache,
    /// newest first (other keys: other params, inputs or code). A stage may reuse per-item work
    /// from them instead of redoing it; it must check that what it takes was made the same way
    /// (record that in its own output) and treat anything unreadable as absent. Empty under
    /// `pipeline run --no-reuse`.
    pub earlier_outputs: &'a [PathBuf],
    /// A directory for resumable state (checkpoints) that survives a crash or a kill: the engine
    /// keys it by the stage's cache key, so what a stage finds there was written by an earlier
    /// attempt with the same code, params and inputs. It is removed once the output is committed.
    /// A stage must still treat anything unreadable in it as absent.
    pub work_dir: &'a Path,
    /// Set when the stage runs as one task of a fanned-out stage (a kind with
    /// [`KindInfo::shardable`](crate::KindInfo::shardable)): do only the items it owns.
    pub shard: Option<ItemShard>,
}

/// One of `count` disjoint parts of a stage's items, chosen by a stable hash of each item's
/// identity (a poster's source or file), so the same item always lands in the same shard
/// whatever else changed, and a task computes exactly what a local run would for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ItemShard {
    /// Which part, from 0.
    pub index: u32,
    /// How many parts (at least 1).
    pub count: u32,
}

impl ItemShard {
    /// Whether the item named `identity` belongs to this shard: the first 8 bytes of its blake3,
    /// modulo `count`.
    pub fn owns(&self, identity: &str) -> bool {
        Self::of(identity, self.count) == self.index
    }

    /// The shard of `count` that the item named `identity` falls in.
    pub fn of(identity: &str, count: u32) -> u32 {
        let hash = blake3::hash(identity.as_bytes());
        let first = u64::from_le_bytes(hash.as_bytes()[..8].try_into().expect("8 bytes"));
        (first % u64::from(count.max(1))) as u32
    }
}

/// Whether `shard` (when there is one) owns the item named `identity`: every item when the stage
/// runs whole.
pub fn owned(shard: Option<ItemShard>, identity: &str) -> bool {
    shard.is_none_or(|s| s.owns(identity))
}

/// Per-item results shared across runs of every stage, addressed by keys the stage derives from
/// everything the item depends on (use [`item_key`]). An item is written once and never changes,
/// so a stage may trust what it reads back only after checking it (size, or a content hash).
pub trait ItemCache: Sync {
    /// The bytes stored under `key`, if any.
    fn get(&self, key: &str) -> Option<Vec<u8>>;
    /// Stores `bytes` under `key` (atomically: readers see all or nothing).
    fn put(&self, key: &str, bytes: &[u8]) -> Result<(), StageError>;
    /// Makes `dest` a copy of the item, a hard link where the file system allows; `false` if absent.
    fn link(&self, key: &str, dest: &Path) -> Result<bool, StageError>;
    /// Stores `bytes` under `key`, replacing what is there (atomically). For records that are
    /// meant to change, such as when an item last failed; everything else is write-once.
    fn replace(&self, key: &str, bytes: &[u8]) -> Result<(), StageError>;
}

/// A key for [`ItemCache`]: blake3 over the parts, each length-prefixed so parts cannot run together.
pub fn item_key(parts: &[&[u8]]) -> String {
    let mut hasher = blake3::Hasher::new();
    for part in parts {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hasher.finalize().to_hex().to_string()
}

/// The part of a per-item reason that items share, for counting by reason: everything before
/// the first `:` (`wrong number of fields: 7 (...)`, `HTTP 429: the server asked ...`).
pub fn reason_class(reason: &str) -> String {
    reason
        .split(':')
        .next()
        .unwrap_or(reason)
        .trim()
        .to_string()
}

/// An item cache that keeps nothing (unit tests).
pub struct NoItems;

impl ItemCache for NoItems {
    fn get(&self, _key: &str) -> Option<Vec<u8>> {
        None
    }
    fn put(&self, _key: &str, _bytes: &[u8]) -> Result<(), StageError> {
        Ok(())
    }
    fn link(&self, _key: &str, _dest: &Path) -> Result<bool, StageError> {
        Ok(false)
    }
    fn replace(&self, _key: &str, _bytes: &[u8]) -> Result<(), StageError> {
        Ok(())
    }
}

impl StageContext<'_> {
    /// The params deserialised into the stage's typed struct.
    pub fn params<P: DeserializeOwned>(&self) -> Result<P, StageError> {
        serde_json::from_value(self.params.clone())
            .map_err(|err| StageError::invalid(format!("params of `{}`: {err}", self.name)))
    }

    /// The output directory of the upstream stage bound to `role`.
    pub fn input(&self, role: &str) -> Result<&Path, StageError> {
        self.inputs.get(role).map(PathBuf::as_path).ok_or_else(|| {
            StageError::invalid(format!("stage `{}` has no input `{role}`", self.name))
        })
    }

    /// The workspace path bound to `role`.
    pub fn file(&self, role: &str) -> Result<&Path, StageError> {
        self.files.get(role).map(PathBuf::as_path).ok_or_else(|| {
            StageError::invalid(format!("stage `{}` has no file `{role}`", self.name))
        })
    }
}
