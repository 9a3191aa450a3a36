//! The content-addressed stage cache under `cache/`.
//!
//! ```text
//! cache/
//!   CACHEDIR.TAG, .gitignore     backup tools and git skip the cache
//!   v1/entries/<key>/            one finished stage run, addressed by its key
//!     out/...                    what the stage wrote
//!     manifest.json              written last: every output file with size and blake3
//!     seal.json                  the stamp of every directory below out/, recorded once the
//!                                entry was found complete and its directories had settled
//!   v1/tmp/<key>.<pid>.<n>/      a run in progress; renamed into entries/ only after success
//!   v1/work/<key>/               resumable state of a stage run (training checkpoints): kept when
//!                                a run dies, so the next run with the same key resumes; removed
//!                                once the entry is committed, and by `gc`
//!   v1/run.lock                  held by the one `pipeline run` allowed at a time
//!   v1/runs.jsonl                one line per run: what ran, was fresh or failed, and why
//!   v1/items/<aa>/<key>          per-item results (a fetched poster, a resized image) that stages
//!                                reuse across runs; written once, atomically, never changed
//! ```
//!
//! An entry is fresh only if its manifest exists and every file it lists exists with the listed
//! size. Because the manifest is written last and the directory is renamed into place after it,
//! a crash at any point leaves either no entry or a complete one.
//!
//! Checking that costs one `stat` per output file (22,883 for a download of that many posters),
//! so, as git's index does for the work tree, the first check that finds an entry complete seals
//! it: it records the stamp (mtime, inode, size) of every directory below `out/`. Adding,
//! removing or renaming a file changes its directory's stamp, so while every directory still has
//! its recorded stamp, no file was added or deleted, and the check is one small read and one
//! `stat` per directory. A directory modified within [`crate::digest::RACY_WINDOW`] of sealing is not sealed
//! (a second change in the same timestamp tick would go unseen). What a seal cannot see is a
//! file rewritten in place, which keeps its directory's stamp: `pipeline verify` rehashes every
//! file, and a stage rehashes its inputs before it reads them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use pipeline_api::{Expiry, RunSummary};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::digest::{FileEntry, Stamp, hash_file, hash_tree, tree_digest};
use crate::fingerprint::CACHE_FORMAT;
use crate::fsio::{Area, FsError, fs, list_files, relative, sync_tree, write_atomic, write_synced};
use crate::items::ItemStore;

/// What a finished stage run produced; written last into its entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// [`CACHE_FORMAT`] when written.
    pub format: u32,
    /// The stage key this entry is stored under.
    pub key: String,
    /// Stage kind.
    pub kind: String,
    /// Name of the stage that produced it (informational; not part of the key).
    pub stage: String,
    /// Digest over all output paths and contents: what downstream keys use.
    pub output_digest: String,
    /// Output files relative to `out/`.
    pub files: BTreeMap<String, FileEntry>,
    /// What the stage said about its run.
    pub summary: Vec<String>,
    /// What only that run measured (timings, counts of reused work): kept here, beside the
    /// output and out of its digest (benchmarks read them here).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub measures: BTreeMap<String, serde_json::Value>,
    /// Seconds the stage took.
    pub seconds: f64,
    /// Unix time of completion.
    pub finished_unix: u64,
    /// When the stage said this output stops being current (not part of the output digest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<Expiry>,
}

impl Manifest {
    /// Total size of all outputs.
    pub fn total_bytes(&self) -> u64 {
        self.files.values().map(|f| f.size).sum()
    }

    /// What the engine needs of a committed entry.
    pub fn committed(&self) -> Committed {
        Committed {
            key: self.key.clone(),
            output_digest: self.output_digest.clone(),
            files: self.files.len(),
            bytes: self.total_bytes(),
            expires: self.expires.clone(),
        }
    }
}

/// A complete entry as the engine uses it: what its dependents key on and the lock records,
/// without the list of files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Committed {
    /// Its key.
    pub key: String,
    /// Digest over all output paths and contents.
    pub output_digest: String,
    /// Number of output files.
    pub files: usize,
    /// Their total size.
    pub bytes: u64,
    /// When the stage said it stops being current.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<Expiry>,
}

/// `seal.json`: the entry's [`Committed`] summary and the stamp of every directory below `out/`
/// (see the module docs).
#[derive(Debug, Serialize, Deserialize)]
struct Seal {
    format: u32,
    entry: Committed,
    /// `/`-separated path below `out/` (`""` for `out/` itself) -> stamp.
    dirs: BTreeMap<String, Stamp>,
}

/// In an entry directory: the seal.
const SEAL: &str = "seal.json";

/// The cache of one project.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// A run in progress: its output directory is handed to the stage.
#[derive(Debug)]
pub struct Pending {
    dir: PathBuf,
    key: String,
}

impl Pending {
    /// Where the stage writes its outputs.
    pub fn out_dir(&self) -> PathBuf {
        self.dir.join("out")
    }

    /// Records which per-item results the run used, so `gc` keeps them while this entry lives.
    /// Written beside `out/` (not inside it: it is not part of the output digest).
    pub fn record_items(&self, keys: &BTreeSet<String>) -> Result<(), FsError> {
        let mut text = String::new();
        for key in keys {
            text.push_str(key);
            text.push('\n');
        }
        write_synced(&self.dir.join(ITEMS_USED), text.as_bytes(), Area::Cache)
    }

    /// Removes everything the failed run wrote.
    pub fn discard(self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

static PENDING_COUNTER: AtomicU64 = AtomicU64::new(0);

/// In an entry directory: the item keys the run used, one per line.
const ITEMS_USED: &str = "items.txt";

/// What [`Store::collect_items`] did.
#[derive(Debug, Default)]
pub struct ItemsCollected {
    /// Items removed.
    pub removed: usize,
    /// Items kept.
    pub kept: usize,
    /// Bytes freed.
    pub freed_bytes: u64,
}

impl Store {
    /// The store rooted at `cache_dir` (created on first write).
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        Self {
            root: cache_dir.into(),
        }
    }

    pub(crate) fn versioned(&self) -> PathBuf {
        self.root.join(format!("v{CACHE_FORMAT}"))
    }

    /// The directory of the entry for `key`.
    pub fn entry_dir(&self, key: &str) -> PathBuf {
        self.versioned().join("entries").join(key)
    }

    /// The output directory of the entry for `key`.
    pub fn out_dir(&self, key: &str) -> PathBuf {
        self.entry_dir(key).join("out")
    }

    /// The working area of a run of `key` (see [`pipeline_api::StageContext::work_dir`]), created
    /// if missing.
    pub fn work_dir(&self, key: &str) -> Result<PathBuf, FsError> {
        let dir = self.versioned().join("work").join(key);
        fs::create_dir_all(&dir).map_err(Area::Cache.err())?;
        Ok(dir)
    }

    /// Drops the working area of `key` (its entry is committed: nothing there is needed again).
    pub fn remove_work_dir(&self, key: &str) {
        let _ = fs::remove_dir_all(self.versioned().join("work").join(key));
    }

    /// Drops every working area (resumable state of runs that did not finish). Call only while
    /// holding the run lock.
    pub fn clear_work(&self) -> Result<usize, FsError> {
        remove_children(&self.versioned().join("work"))
    }

    /// The per-item cache shared by all stages.
    pub fn items(&self) -> ItemStore {
        ItemStore::new(self.versioned().join("items"))
    }

    /// The directory of a stage's cluster job (its scripts, task logs and state), named by stage
    /// and key (`jobs/embed-44037f5aa740`), created if missing.
    pub fn job_dir(&self, stage: &str, key: &str) -> Result<PathBuf, FsError> {
        let dir = self
            .versioned()
            .join("jobs")
            .join(format!("{stage}-{}", &key[..key.len().min(12)]));
        fs::create_dir_all(&dir).map_err(Area::Cache.err())?;
        Ok(dir)
    }

    /// The directory of every stage's cluster jobs.
    pub fn jobs_dir(&self) -> PathBuf {
        self.versioned().join("jobs")
    }

    /// Path of the stat cache of workspace files.
    pub fn stat_cache_path(&self) -> PathBuf {
        self.versioned().join("stat-cache.json")
    }

    /// Whether the cache has been created.
    pub fn exists(&self) -> bool {
        self.versioned().is_dir()
    }

    /// Path of the run record.
    pub fn runs_path(&self) -> PathBuf {
        self.versioned().join("runs.jsonl")
    }

    /// Keys of every entry in the store: the directories of `entries/` named like a key. Anything
    /// else there (a `.DS_Store`, a file a person left) is not an entry and is never touched.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = fs::read_dir(self.versioned().join("entries"))
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|name| is_key(name))
                    .collect()
            })
            .unwrap_or_default();
        keys.sort();
        keys
    }

    /// The manifest of an entry, complete or not.
    pub fn manifest(&self, key: &str) -> Option<Manifest> {
        serde_json::from_slice(&fs::read(self.entry_dir(key).join("manifest.json")).ok()?).ok()
    }

    /// Rehashes every output of an entry; returns what does not match its manifest (empty: intact).
    pub fn verify(&self, key: &str) -> Vec<String> {
        let Some(manifest) = self.manifest(key) else {
            return vec!["no readable manifest".into()];
        };
        let out = self.out_dir(key);
        let mut problems: Vec<String> = manifest
            .files
            .par_iter()
            .filter_map(
                |(rel, expected)| match hash_file(&out.join(rel), Area::Cache) {
                    Err(_) => Some(format!("`{rel}` is missing")),
                    Ok(actual) if actual != *expected => {
                        Some(format!("`{rel}` does not match its hash"))
                    }
                    Ok(_) => None,
                },
            )
            .collect();
        problems.sort();
        problems
    }

    /// Bytes used by an entry.
    pub fn entry_bytes(&self, key: &str) -> u64 {
        list_files(&self.entry_dir(key), Area::Cache)
            .unwrap_or_default()
            .iter()
            .filter_map(|p| fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    }

    /// Removes an entry: first renamed out of `entries/` so it stops looking fresh at once.
    pub fn evict(&self, key: &str) -> Result<(), FsError> {
        let dir = self.entry_dir(key);
        let tmp = self.versioned().join("tmp");
        fs::create_dir_all(&tmp).map_err(Area::Cache.err())?;
        let aside = tmp.join(format!("{key}.evicted.{}", std::process::id()));
        fs::rename(&dir, &aside).map_err(Area::Cache.err())?;
        fs::remove_dir_all(&aside).map_err(Area::Cache.err())
    }

    /// Removes every item that no remaining entry used. Entries written before items were
    /// recorded have no list; while one exists, nothing is removed (`None`).
    pub fn collect_items(&self) -> Result<Option<ItemsCollected>, FsError> {
        let mut used: BTreeSet<String> = BTreeSet::new();
        for key in self.keys() {
            let Ok(text) = fs::read_to_string(self.entry_dir(&key).join(ITEMS_USED)) else {
                return Ok(None);
            };
            used.extend(text.lines().map(str::to_string));
        }
        let mut report = ItemsCollected::default();
        let dir = self.versioned().join("items");
        if !dir.exists() {
            return Ok(Some(report));
        }
        for file in list_files(&dir, Area::Cache)? {
            let name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if used.contains(&name) {
                report.kept += 1;
                continue;
            }
            // Unused items and temporary files of runs that died mid-write.
            report.freed_bytes += fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
            fs::remove_file(&file).map_err(Area::Cache.err())?;
            report.removed += 1;
        }
        Ok(Some(report))
    }

    /// Path of the lock that serialises runs.
    pub fn lock_path(&self) -> PathBuf {
        self.versioned().join("run.lock")
    }

    /// Creates the cache root with its tag files.
    pub fn init(&self) -> Result<(), FsError> {
        let versioned = self.versioned();
        for dir in [versioned.join("entries"), versioned.join("tmp")] {
            fs::create_dir_all(&dir).map_err(Area::Cache.err())?;
        }
        let tag = self.root.join("CACHEDIR.TAG");
        if !tag.exists() {
            fs::write(
                &tag,
                "Signature: 8a477f597d28d172789f06886806bc55\n# This is the cache of `pipeline`; see README.md.\n",
            )
            .map_err(Area::Cache.err())?;
        }
        let ignore = self.root.join(".gitignore");
        if !ignore.exists() {
            fs::write(&ignore, "*\n").map_err(Area::Cache.err())?;
        }
        Ok(())
    }

    /// Removes leftovers of runs that died. Call only while holding the run lock.
    pub fn clear_pending(&self) -> Result<usize, FsError> {
        remove_children(&self.versioned().join("tmp"))
    }

    /// The committed entry for `key`, or `None` if it is missing or incomplete. A sealed entry
    /// whose directories all keep their stamps is answered from its seal; otherwise every output
    /// is checked, and a complete entry is sealed for next time.
    pub fn fresh(&self, key: &str) -> Option<Committed> {
        if let Some(entry) = self.sealed(key) {
            return Some(entry);
        }
        let manifest = self.manifest(key)?;
        if manifest.key != key || manifest.format != CACHE_FORMAT {
            return None;
        }
        if self.incomplete_output(key, &manifest).is_some() {
            return None;
        }
        let entry = manifest.committed();
        // Best effort: an unsealed entry is only slower to check.
        let _ = self.seal(key, &entry);
        Some(entry)
    }

    /// The entry from its seal, when every directory below `out/` keeps its recorded stamp.
    fn sealed(&self, key: &str) -> Option<Committed> {
        let bytes = fs::read(self.entry_dir(key).join(SEAL)).ok()?;
        let seal: Seal = serde_json::from_slice(&bytes).ok()?;
        if seal.format != CACHE_FORMAT || seal.entry.key != key || seal.dirs.is_empty() {
            return None;
        }
        let out = self.out_dir(key);
        let intact = seal.dirs.iter().all(|(rel, stamp)| {
            let dir = if rel.is_empty() {
                out.clone()
            } else {
                out.join(rel)
            };
            std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir() && Stamp::of(&m) == *stamp)
        });
        intact.then_some(seal.entry)
    }

    /// Records the stamps of the directories below the entry's `out/`, unless one changed too
    /// recently to be trusted.
    fn seal(&self, key: &str, entry: &Committed) -> Result<(), FsError> {
        let out = self.out_dir(key);
        let mut dirs = BTreeMap::new();
        let mut todo = vec![out.clone()];
        while let Some(dir) = todo.pop() {
            let meta = fs::symlink_metadata(&dir).map_err(Area::Cache.err())?;
            let stamp = Stamp::of(&meta);
            if stamp.is_racy() {
                return Ok(());
            }
            for child in fs::read_dir(&dir).map_err(Area::Cache.err())? {
                let child = child.map_err(Area::Cache.err())?;
                if child.file_type().map_err(Area::Cache.err())?.is_dir() {
                    todo.push(child.path());
                }
            }
            dirs.insert(relative(&dir, &out), stamp);
        }
        let seal = Seal {
            format: CACHE_FORMAT,
            entry: entry.clone(),
            dirs,
        };
        write_atomic(
            &self.entry_dir(key).join(SEAL),
            &serde_json::to_vec(&seal).expect("a seal serialises"),
            Area::Cache,
        )
    }

    /// Why the entry for `key` is not fresh, when something of it exists.
    pub fn damage(&self, key: &str) -> Option<String> {
        let dir = self.entry_dir(key);
        if !dir.exists() {
            return None;
        }
        let Ok(bytes) = fs::read(dir.join("manifest.json")) else {
            return Some("cache entry has no manifest".into());
        };
        let Ok(manifest) = serde_json::from_slice::<Manifest>(&bytes) else {
            return Some("cache entry manifest is unreadable".into());
        };
        self.incomplete_output(key, &manifest)
    }

    /// The first output the manifest lists that is missing or has another size (the cheap check;
    /// [`Store::verify`] rehashes).
    fn incomplete_output(&self, key: &str, manifest: &Manifest) -> Option<String> {
        self.incomplete_in(&self.out_dir(key), manifest)
    }

    /// The first file `manifest` lists that `out` lacks or has at another size.
    fn incomplete_in(&self, out: &std::path::Path, manifest: &Manifest) -> Option<String> {
        manifest
            .files
            .iter()
            .find_map(|(rel, entry)| match fs::metadata(out.join(rel)) {
                Ok(m) if m.is_file() && m.len() == entry.size => None,
                Ok(m) if m.is_file() => Some(format!("output changed size: `{rel}`")),
                _ => Some(format!("output missing: `{rel}`")),
            })
    }

    /// Starts a run for `key` in a fresh temporary directory.
    pub fn begin(&self, key: &str) -> Result<Pending, FsError> {
        let n = PENDING_COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = self
            .versioned()
            .join("tmp")
            .join(format!("{key}.{}.{n}", std::process::id()));
        let out = dir.join("out");
        fs::create_dir_all(&out).map_err(Area::Cache.err())?;
        Ok(Pending {
            dir,
            key: key.to_string(),
        })
    }

    /// Hashes what the stage wrote, writes the manifest last and moves the entry into place.
    pub fn commit(
        &self,
        pending: Pending,
        stage: &str,
        kind: &str,
        summary: &RunSummary,
        seconds: f64,
    ) -> Result<Manifest, FsError> {
        let files = hash_tree(&pending.out_dir(), Area::Cache)?;
        let manifest = Manifest {
            format: CACHE_FORMAT,
            key: pending.key.clone(),
            kind: kind.to_string(),
            stage: stage.to_string(),
            output_digest: tree_digest(&files),
            files,
            summary: summary.lines.clone(),
            measures: summary.measures.clone(),
            seconds,
            finished_unix: pipeline_api::unix_now(),
            expires: summary.expires.clone(),
        };
        self.seal_and_move(pending, &manifest)?;
        Ok(manifest)
    }

    /// Commits an entry made elsewhere (pulled from a shared cache): `manifest` is the one its
    /// run wrote, and the files below `out/` must be exactly the ones it lists, with their sizes
    /// (each was checked against its blake3 as it arrived). `items` are the per-item results its
    /// run used, recorded for `gc` as a local run's are.
    pub fn adopt(
        &self,
        pending: Pending,
        manifest: &Manifest,
        items: &BTreeSet<String>,
    ) -> Result<(), AdoptError> {
        if manifest.key != pending.key || manifest.format != CACHE_FORMAT {
            return Err(AdoptError::Mismatch(format!(
                "the manifest is for key {} (format {}), not {} (format {CACHE_FORMAT})",
                manifest.key, manifest.format, pending.key
            )));
        }
        if tree_digest(&manifest.files) != manifest.output_digest {
            return Err(AdoptError::Mismatch(
                "the manifest's output digest does not match its files".into(),
            ));
        }
        let out = pending.out_dir();
        let present = list_files(&out, Area::Cache)?;
        if present.len() != manifest.files.len() {
            return Err(AdoptError::Mismatch(format!(
                "{} files arrived, the manifest lists {}",
                present.len(),
                manifest.files.len()
            )));
        }
        if let Some(problem) = self.incomplete_in(&out, manifest) {
            return Err(AdoptError::Mismatch(problem));
        }
        pending.record_items(items)?;
        self.seal_and_move(pending, manifest)?;
        Ok(())
    }

    /// The per-item results the run of an entry used (`None` for entries from before they were
    /// recorded).
    pub fn items_used(&self, key: &str) -> Option<Vec<String>> {
        let text = fs::read_to_string(self.entry_dir(key).join(ITEMS_USED)).ok()?;
        Some(text.lines().map(str::to_string).collect())
    }

    /// Writes the manifest last (synced, with everything below `out/`) and moves the entry into
    /// place.
    fn seal_and_move(&self, pending: Pending, manifest: &Manifest) -> Result<(), FsError> {
        sync_tree(&pending.out_dir())?;
        let manifest_path = pending.dir.join("manifest.json");
        write_synced(
            &manifest_path,
            &serde_json::to_vec_pretty(manifest).expect("manifest serialises"),
            Area::Cache,
        )?;
        let target = self.entry_dir(&pending.key);
        if target.exists() {
            // An incomplete or damaged entry under the same key: move it aside, then drop it.
            let aside = pending.dir.with_extension("old");
            fs::rename(&target, &aside).map_err(Area::Cache.err())?;
            let _ = fs::remove_dir_all(&aside);
        }
        fs::rename(&pending.dir, &target).map_err(Area::Cache.err())?;
        if let Some(parent) = target.parent()
            && let Ok(dir) = fs::File::open(parent)
        {
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

/// Why [`Store::adopt`] refused an entry.
#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    /// The files or the manifest are not one complete entry.
    #[error("{0}")]
    Mismatch(String),
    /// Writing the entry failed.
    #[error(transparent)]
    Fs(#[from] FsError),
}

/// Whether `name` is an entry key: 64 lowercase hex digits, as [`crate::fingerprint`] makes them.
pub fn is_key(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Removes everything in `dir` (nothing when `dir` is missing): the work areas of dead runs, and
/// any stray file or link found among them (a link is removed, never followed). Returns how many.
fn remove_children(dir: &std::path::Path) -> Result<usize, FsError> {
    let mut removed = 0;
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if is_dir {
                fs::remove_dir_all(&path).map_err(Area::Cache.err())?;
            } else {
                fs::remove_file(&path).map_err(Area::Cache.err())?;
            }
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_makes_an_entry_fresh_and_a_missing_file_stale() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path().join("cache"));
        store.init().unwrap();
        let pending = store.begin("k1").unwrap();
        fs::create_dir_all(pending.out_dir().join("sub")).unwrap();
        fs::write(pending.out_dir().join("sub/a.txt"), b"hello").unwrap();
        assert!(
            store.fresh("k1").is_none(),
            "nothing is fresh before commit"
        );
        let manifest = store
            .commit(pending, "s", "kind", &RunSummary::default(), 0.0)
            .unwrap();
        assert_eq!(manifest.files["sub/a.txt"].size, 5);
        assert!(store.fresh("k1").is_some());
        fs::remove_file(store.out_dir("k1").join("sub/a.txt")).unwrap();
        assert!(store.fresh("k1").is_none());
        assert_eq!(store.damage("k1").unwrap(), "output missing: `sub/a.txt`");
    }

    /// Sets a directory's mtime an hour back, as if it had settled long ago.
    fn settle(dir: &std::path::Path) {
        std::fs::File::open(dir)
            .unwrap()
            .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(3600))
            .unwrap();
    }

    #[test]
    fn a_settled_entry_is_sealed_and_a_deleted_file_breaks_the_seal() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path().join("cache"));
        store.init().unwrap();
        let pending = store.begin("k1").unwrap();
        fs::create_dir_all(pending.out_dir().join("sub")).unwrap();
        fs::write(pending.out_dir().join("sub/a.txt"), b"hello").unwrap();
        fs::write(pending.out_dir().join("b.txt"), b"world").unwrap();
        store
            .commit(pending, "s", "kind", &RunSummary::default(), 0.0)
            .unwrap();
        let seal = store.entry_dir("k1").join(SEAL);
        let entry = store.fresh("k1").unwrap();
        assert_eq!((entry.files, entry.bytes), (2, 10));
        assert!(
            !seal.exists(),
            "directories written just now are not sealed"
        );

        let out = store.out_dir("k1");
        settle(&out.join("sub"));
        settle(&out);
        assert_eq!(store.fresh("k1"), Some(entry.clone()));
        assert!(seal.exists(), "a complete, settled entry is sealed");
        assert_eq!(store.sealed("k1"), Some(entry.clone()));

        // Rewritten in place, a file keeps its directory's stamp: the seal cannot see it, verify
        // does.
        fs::write(out.join("b.txt"), b"w").unwrap();
        assert_eq!(store.fresh("k1"), Some(entry));
        assert_eq!(store.verify("k1"), ["`b.txt` does not match its hash"]);

        // A deleted file changes its directory: the seal no longer holds, the full check runs.
        fs::write(out.join("b.txt"), b"world").unwrap();
        fs::remove_file(out.join("sub/a.txt")).unwrap();
        assert_eq!(store.sealed("k1"), None);
        assert_eq!(store.fresh("k1"), None);
        assert_eq!(store.damage("k1").unwrap(), "output missing: `sub/a.txt`");
    }
}
