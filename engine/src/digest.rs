//! Owns content digests and file stamps: blake3 of a file and of a tree, canonical JSON, and the
//! (size, mtime, inode) stamp that stands in for a file's content while it is unchanged. A leaf
//! above [`crate::fsio`].

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::fsio::{Area, FsError, fs, list_files, relative};

/// One file as recorded in a manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileEntry {
    /// Size in bytes.
    pub size: u64,
    /// blake3 of the content, hex.
    pub blake3: String,
}

/// Size and blake3 of one file.
pub fn hash_file(path: &Path, area: Area) -> Result<FileEntry, FsError> {
    let mut hasher = blake3::Hasher::new();
    hasher
        .update_mmap(path)
        .map_err(|source| FsError::at(area, "read", path, source))?;
    let size = fs::metadata(path).map_err(area.err())?.len();
    Ok(FileEntry {
        size,
        blake3: hasher.finalize().to_hex().to_string(),
    })
}

/// Hashes every file below `dir`, keyed by its `/`-separated path relative to `dir`.
pub fn hash_tree(dir: &Path, area: Area) -> Result<BTreeMap<String, FileEntry>, FsError> {
    list_files(dir, area)?
        .par_iter()
        .map(|path| Ok((relative(path, dir), hash_file(path, area)?)))
        .collect()
}

/// One digest over relative paths and contents: equal iff the trees are byte-identical.
pub fn tree_digest(files: &BTreeMap<String, FileEntry>) -> String {
    let mut hasher = blake3::Hasher::new();
    for (rel, entry) in files {
        hasher.update(rel.as_bytes());
        hasher.update(&[0]);
        hasher.update(entry.blake3.as_bytes());
        hasher.update(b"\n");
    }
    hasher.finalize().to_hex().to_string()
}

/// Returns `value` with every object's keys sorted, whatever map type serde_json was built with.
pub fn sorted_json(value: &serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let sorted: BTreeMap<&String, serde_json::Value> =
                map.iter().map(|(k, v)| (k, sorted_json(v))).collect();
            serde_json::Value::Object(sorted.into_iter().map(|(k, v)| (k.clone(), v)).collect())
        }
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.iter().map(sorted_json).collect())
        }
        other => other.clone(),
    }
}

/// Files modified this recently are hashed but their stamp is not trusted.
pub const RACY_WINDOW: Duration = Duration::from_secs(2);

/// What identifies one version of a file or directory without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    /// Size in bytes.
    pub size: u64,
    mtime_ns: i128,
    inode: u64,
}

impl Stamp {
    /// The stamp from metadata.
    pub fn of(meta: &std::fs::Metadata) -> Self {
        #[cfg(unix)]
        let (mtime_ns, inode) = {
            use std::os::unix::fs::MetadataExt;
            (
                i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
                meta.ino(),
            )
        };
        #[cfg(not(unix))]
        let (mtime_ns, inode) = (
            meta.modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos() as i128),
            0,
        );
        Self {
            size: meta.len(),
            mtime_ns,
            inode,
        }
    }

    /// Modified so recently that a second write could share this mtime.
    pub fn is_racy(&self) -> bool {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128);
        now - self.mtime_ns < RACY_WINDOW.as_nanos() as i128
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_digest_depends_on_names_and_contents() {
        let entry = |h: &str| FileEntry {
            size: 1,
            blake3: h.into(),
        };
        let a = BTreeMap::from([("a".to_string(), entry("x"))]);
        let b = BTreeMap::from([("b".to_string(), entry("x"))]);
        let c = BTreeMap::from([("a".to_string(), entry("y"))]);
        assert_ne!(tree_digest(&a), tree_digest(&b));
        assert_ne!(tree_digest(&a), tree_digest(&c));
        assert_eq!(tree_digest(&a), tree_digest(&a.clone()));
    }

    #[test]
    fn sorted_json_orders_nested_keys() {
        let value = serde_json::json!({"b": {"y": 1, "x": 2}, "a": [{"d": 1, "c": 2}]});
        assert_eq!(
            serde_json::to_string(&sorted_json(&value)).unwrap(),
            r#"{"a":[{"c":2,"d":1}],"b":{"x":2,"y":1}}"#
        );
    }
}
