//! Owns the remote layout and its record: `cas/<blake3>` blobs and `entries/<key>` records, each
//! record the entry's manifest plus the per-item results its run used.

use std::collections::BTreeMap;

use pipeline_engine::store::Manifest;
use serde::{Deserialize, Serialize};

/// Where blobs live, below the prefix.
pub const CAS: &str = "cas";
/// Where records live, below the prefix.
pub const ENTRIES: &str = "entries";
/// Where the newest entry of each stage name is noted, below the prefix: `stages/<name>` holds
/// a key. A hint for machines whose key matches no record (see
/// [`pipeline_engine::SharedCache::pull_latest`]), overwritten by every push of that stage.
pub const STAGES: &str = "stages";
/// Version of [`EntryRecord`]; a record of another version is not read.
pub const RECORD_FORMAT: u32 = 1;
/// Per-item results up to this size that are UTF-8 travel inside the record (a poster's hash
/// under its URL, a decode verdict) rather than as a blob each.
pub const INLINE_MAX: u64 = 512;

/// One entry as the remote keeps it.
#[derive(Debug, Serialize, Deserialize)]
pub struct EntryRecord {
    /// [`RECORD_FORMAT`].
    pub format: u32,
    /// The manifest the run wrote: every output file with its size and blake3.
    pub manifest: Manifest,
    /// Item key -> the result the run used.
    #[serde(default)]
    pub items: BTreeMap<String, ItemRef>,
}

/// A per-item result: its content's size and blake3, and the content itself when small.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ItemRef {
    /// Size in bytes.
    pub size: u64,
    /// blake3 of the content, hex (the blob's name when not inline).
    pub blake3: String,
    /// The content, when small and UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// Name of a blob below the prefix.
pub fn blob_name(hash: &str) -> String {
    format!("{CAS}/{hash}")
}

/// Name of a record below the prefix.
pub fn entry_name(key: &str) -> String {
    format!("{ENTRIES}/{key}")
}

/// Name of the note of a stage's newest entry below the prefix, if the stage's name is safe as
/// an object name.
pub fn latest_name(stage: &str) -> Option<String> {
    let safe = !stage.is_empty()
        && stage.len() <= 128
        && stage
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        && !stage.starts_with('.');
    safe.then(|| format!("{STAGES}/{stage}"))
}

/// Whether `hash` is a blake3 hex digest (what may name a blob, and so a local file).
pub fn is_hash(hash: &str) -> bool {
    pipeline_engine::store::is_key(hash)
}
