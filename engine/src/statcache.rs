//! Owns the stat cache: content digests of workspace files, reused while a file's stamp is unchanged.
//!
//! Like git's index and DVC's state database, it maps a path to (size, mtime, inode) and the
//! blake3 of the content seen with that stamp. A file whose stamp still matches is not reread, so
//! `pipeline status` and a no-op `pipeline run` cost one `stat` per workspace file.
//!
//! What it cannot see: a content change that keeps size, mtime (to the nanosecond) and inode, e.g.
//! a tool that rewrites in place and then restores the old mtime. `pipeline verify` rehashes every
//! workspace file and names such files; `--repair` records the new digests.
//!
//! Two guards keep it honest:
//! - a file modified within [`crate::digest::RACY_WINDOW`] of being hashed is not recorded (git's "racy clean"
//!   problem: a second write in the same timestamp tick would otherwise go unseen);
//! - ctime is not part of the stamp on purpose: hard-linking a file (which the item cache does)
//!   changes it without changing the content, and DVC leaves it out for the same reason.
//!
//! Stored in `cache/v1/stat-cache.json`, written atomically; a lost or unreadable file only costs
//! one full rehash.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::digest::{FileEntry, Stamp, hash_file, tree_digest};
use crate::fsio::{Area, FsError, fs, list_files, relative, write_atomic};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Known {
    stamp: Stamp,
    blake3: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Stored {
    version: u32,
    /// Path relative to the project root (absolute when outside it) -> last known content.
    files: BTreeMap<String, Known>,
}

const VERSION: u32 = 1;

/// Workspace file digests keyed by stamp, for one project.
pub struct StatCache {
    root: PathBuf,
    path: PathBuf,
    known: Mutex<BTreeMap<String, Known>>,
    changed: AtomicBool,
}

/// A workspace file whose content changed while its stamp did not.
#[derive(Debug, Clone, Serialize)]
pub struct StaleStamp {
    /// Path relative to the project root.
    pub path: String,
}

impl StatCache {
    /// Loads the cache at `path` for the project at `root` (empty when absent or unreadable).
    pub fn load(root: &Path, path: PathBuf) -> Self {
        let stored: Stored = fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .filter(|s: &Stored| s.version == VERSION)
            .unwrap_or_default();
        Self {
            root: root.to_path_buf(),
            path,
            known: Mutex::new(stored.files),
            changed: AtomicBool::new(false),
        }
    }

    /// Writes the cache back if anything changed. Atomic: readers see the old or the new file.
    pub fn save(&self) -> Result<(), FsError> {
        if !self.changed.swap(false, Ordering::Relaxed) {
            return Ok(());
        }
        let stored = Stored {
            version: VERSION,
            files: self.known.lock().expect("not poisoned").clone(),
        };
        if let Some(dir) = self.path.parent() {
            fs::create_dir_all(dir).map_err(Area::Cache.err())?;
        }
        write_atomic(
            &self.path,
            &serde_json::to_vec(&stored).expect("the stat cache serialises"),
            Area::Cache,
        )
    }

    /// Content digest of a workspace file or directory (a directory hashes like an output tree).
    pub fn path_digest(&self, path: &Path) -> Result<String, FsError> {
        let meta = fs::metadata(path).map_err(Area::Workspace.err())?;
        if !meta.is_dir() {
            return Ok(self.file_entry(path, &meta)?.blake3);
        }
        let files = list_files(path, Area::Workspace)?;
        let entries: BTreeMap<String, FileEntry> = files
            .par_iter()
            .map(|file| {
                let meta = fs::metadata(file).map_err(Area::Workspace.err())?;
                Ok((relative(file, path), self.file_entry(file, &meta)?))
            })
            .collect::<Result<_, FsError>>()?;
        self.forget_missing_below(path, &files);
        Ok(tree_digest(&entries))
    }

    /// Rehashes every file below `path`; returns how many it rehashed and those whose recorded
    /// digest is wrong although their stamp matches. With `repair`, records the true digests.
    pub fn verify(&self, path: &Path, repair: bool) -> Result<(usize, Vec<StaleStamp>), FsError> {
        let meta = fs::metadata(path).map_err(Area::Workspace.err())?;
        let files = if meta.is_dir() {
            list_files(path, Area::Workspace)?
        } else {
            vec![path.to_path_buf()]
        };
        let mut stale: Vec<StaleStamp> = files
            .par_iter()
            .map(|file| {
                let meta = fs::metadata(file).map_err(Area::Workspace.err())?;
                let stamp = Stamp::of(&meta);
                let actual = hash_file(file, Area::Workspace)?.blake3;
                let name = self.name(file);
                let mut known = self.known.lock().expect("not poisoned");
                let Some(entry) = known.get(&name) else {
                    return Ok(None);
                };
                if entry.stamp != stamp || entry.blake3 == actual {
                    return Ok(None);
                }
                if repair {
                    known.insert(
                        name.clone(),
                        Known {
                            stamp,
                            blake3: actual,
                        },
                    );
                    self.changed.store(true, Ordering::Relaxed);
                }
                Ok(Some(StaleStamp { path: name }))
            })
            .filter_map(Result::transpose)
            .collect::<Result<_, FsError>>()?;
        stale.sort_by(|a, b| a.path.cmp(&b.path));
        Ok((files.len(), stale))
    }

    fn file_entry(&self, file: &Path, meta: &std::fs::Metadata) -> Result<FileEntry, FsError> {
        let stamp = Stamp::of(meta);
        let name = self.name(file);
        if let Some(known) = self.known.lock().expect("not poisoned").get(&name)
            && known.stamp == stamp
        {
            return Ok(FileEntry {
                size: stamp.size,
                blake3: known.blake3.clone(),
            });
        }
        let entry = hash_file(file, Area::Workspace)?;
        // Re-stat after reading: a file written while we hashed it must not be recorded.
        let after = fs::metadata(file).map(|m| Stamp::of(&m)).ok();
        if after == Some(stamp) && entry.size == stamp.size && !stamp.is_racy() {
            self.known.lock().expect("not poisoned").insert(
                name,
                Known {
                    stamp,
                    blake3: entry.blake3.clone(),
                },
            );
            self.changed.store(true, Ordering::Relaxed);
        }
        Ok(entry)
    }

    /// Drops entries for files that used to be below `dir` and are gone.
    fn forget_missing_below(&self, dir: &Path, present: &[PathBuf]) {
        let prefix = format!("{}/", self.name(dir));
        let present: BTreeSet<String> = present.iter().map(|p| self.name(p)).collect();
        let mut known = self.known.lock().expect("not poisoned");
        let before = known.len();
        known.retain(|name, _| !name.starts_with(&prefix) || present.contains(name));
        if known.len() != before {
            self.changed.store(true, Ordering::Relaxed);
        }
    }

    /// The key of `path`: relative to the project root when below it, so moving the project
    /// keeps the cache (the inode check still applies).
    fn name(&self, path: &Path) -> String {
        if path.starts_with(&self.root) {
            relative(path, &self.root)
        } else {
            path.to_string_lossy().into_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn set_mtime(path: &Path, mtime: SystemTime) {
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
    }

    #[test]
    fn unchanged_stamp_reuses_the_digest_and_verify_catches_a_hidden_edit() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        fs::create_dir_all(&data).unwrap();
        let file = data.join("a.txt");
        fs::write(&file, b"hello").unwrap();
        let old = SystemTime::now() - Duration::from_secs(60);
        set_mtime(&file, old);
        let cache_path = dir.path().join("cache/stat.json");

        let cache = StatCache::load(dir.path(), cache_path.clone());
        let first = cache.path_digest(&data).unwrap();
        cache.save().unwrap();

        // Same size, same mtime, same inode, other content: the stat cache cannot tell...
        fs::write(&file, b"jello").unwrap();
        set_mtime(&file, old);
        let cache = StatCache::load(dir.path(), cache_path.clone());
        assert_eq!(cache.path_digest(&data).unwrap(), first);
        // ...verify can, and repair records the truth.
        let stale = cache.verify(&data, false).unwrap().1;
        assert_eq!(stale.len(), 1);
        assert_eq!(stale[0].path, "data/a.txt");
        assert_eq!(cache.verify(&data, true).unwrap().1.len(), 1);
        assert!(cache.verify(&data, false).unwrap().1.is_empty());
        assert_ne!(cache.path_digest(&data).unwrap(), first);

        // A visible change (new mtime) is rehashed without any help.
        let cache = StatCache::load(dir.path(), cache_path);
        fs::write(&file, b"hello").unwrap();
        set_mtime(&file, old - Duration::from_secs(5));
        assert_eq!(cache.path_digest(&data).unwrap(), first);
    }

    #[test]
    fn a_file_written_just_now_is_hashed_but_not_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("fresh.txt");
        fs::write(&file, b"x").unwrap();
        let cache = StatCache::load(dir.path(), dir.path().join("stat.json"));
        cache.path_digest(&file).unwrap();
        assert!(cache.known.lock().unwrap().is_empty());
        set_mtime(&file, SystemTime::now() - Duration::from_secs(10));
        cache.path_digest(&file).unwrap();
        assert_eq!(cache.known.lock().unwrap().len(), 1);
    }

    #[test]
    fn removed_files_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        fs::create_dir_all(&data).unwrap();
        for name in ["a", "b"] {
            fs::write(data.join(name), name).unwrap();
            set_mtime(
                &data.join(name),
                SystemTime::now() - Duration::from_secs(60),
            );
        }
        let cache = StatCache::load(dir.path(), dir.path().join("stat.json"));
        cache.path_digest(&data).unwrap();
        assert_eq!(cache.known.lock().unwrap().len(), 2);
        fs::remove_file(data.join("b")).unwrap();
        cache.path_digest(&data).unwrap();
        let known = cache.known.lock().unwrap();
        assert_eq!(known.keys().collect::<Vec<_>>(), ["data/a"]);
    }
}
