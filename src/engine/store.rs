//! The content-addressed stage cache under `cache/`.
//!
//! ```text
//! cache/
//!   CACHEDIR.TAG, .gitignore     backup tools and git skip the cache
//!   v1/entries/<key>/            one finished stage run, addressed by its key
//!     out/...                    what the stage wrote
//!     manifest.json              written last: every output file with size and blake3
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

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use pipeline_api::{Expiry, ItemCache, RunSummary, StageError};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::key::CACHE_FORMAT;
use super::record::unix_now;

/// An error of the cache store, naming the path involved.
#[derive(Debug, thiserror::Error)]
#[error("cache: cannot {action} `{}`: {source}", path.display())]
pub struct StoreError {
    /// What was being done (`read`, `create`, `rename`, ...).
    pub action: &'static str,
    /// The path.
    pub path: PathBuf,
    /// The cause.
    pub source: io::Error,
}

/// Wraps an I/O error with what was being done to which path.
pub(crate) fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// One output file as recorded in a manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileEntry {
    /// Size in bytes.
    pub size: u64,
    /// blake3 of the content, hex.
    pub blake3: String,
}

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
}

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
    pub fn record_items(&self, keys: &BTreeSet<String>) -> Result<(), StoreError> {
        let mut text = String::new();
        for key in keys {
            text.push_str(key);
            text.push('\n');
        }
        write_synced(&self.dir.join(ITEMS_USED), text.as_bytes())
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
    pub fn work_dir(&self, key: &str) -> Result<PathBuf, StoreError> {
        let dir = self.versioned().join("work").join(key);
        fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        Ok(dir)
    }

    /// Drops the working area of `key` (its entry is committed: nothing there is needed again).
    pub fn remove_work_dir(&self, key: &str) {
        let _ = fs::remove_dir_all(self.versioned().join("work").join(key));
    }

    /// Drops every working area (resumable state of runs that did not finish). Call only while
    /// holding the run lock.
    pub fn clear_work(&self) -> Result<usize, StoreError> {
        let work = self.versioned().join("work");
        let mut removed = 0;
        if let Ok(entries) = fs::read_dir(&work) {
            for entry in entries.flatten() {
                fs::remove_dir_all(entry.path()).map_err(io_err("remove", &entry.path()))?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The per-item cache shared by all stages.
    pub fn items(&self) -> ItemStore {
        ItemStore {
            dir: self.versioned().join("items"),
        }
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

    /// Keys of every entry in the store.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = fs::read_dir(self.versioned().join("entries"))
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().to_string())
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
            .filter_map(|(rel, expected)| match hash_file(&out.join(rel)) {
                Err(_) => Some(format!("`{rel}` is missing")),
                Ok(actual) if actual != *expected => {
                    Some(format!("`{rel}` does not match its hash"))
                }
                Ok(_) => None,
            })
            .collect();
        problems.sort();
        problems
    }

    /// Bytes used by an entry.
    pub fn entry_bytes(&self, key: &str) -> u64 {
        list_files(&self.entry_dir(key))
            .unwrap_or_default()
            .iter()
            .filter_map(|p| fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    }

    /// Removes an entry: first renamed out of `entries/` so it stops looking fresh at once.
    pub fn evict(&self, key: &str) -> Result<(), StoreError> {
        let dir = self.entry_dir(key);
        let aside = self
            .versioned()
            .join("tmp")
            .join(format!("{key}.evicted.{}", std::process::id()));
        fs::rename(&dir, &aside).map_err(io_err("rename", &dir))?;
        fs::remove_dir_all(&aside).map_err(io_err("remove", &aside))
    }

    /// Removes every item that no remaining entry used. Entries written before items were
    /// recorded have no list; while one exists, nothing is removed (`None`).
    pub fn collect_items(&self) -> Result<Option<ItemsCollected>, StoreError> {
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
        for file in list_files(&dir)? {
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
            fs::remove_file(&file).map_err(io_err("remove", &file))?;
            report.removed += 1;
        }
        Ok(Some(report))
    }

    /// Path of the lock that serialises runs.
    pub fn lock_path(&self) -> PathBuf {
        self.versioned().join("run.lock")
    }

    /// Creates the cache root with its tag files.
    pub fn init(&self) -> Result<(), StoreError> {
        let versioned = self.versioned();
        for dir in [versioned.join("entries"), versioned.join("tmp")] {
            fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        }
        let tag = self.root.join("CACHEDIR.TAG");
        if !tag.exists() {
            fs::write(
                &tag,
                "Signature: 8a477f597d28d172789f06886806bc55\n# This is the cache of `pipeline`; see README.md.\n",
            )
            .map_err(io_err("write", &tag))?;
        }
        let ignore = self.root.join(".gitignore");
        if !ignore.exists() {
            fs::write(&ignore, "*\n").map_err(io_err("write", &ignore))?;
        }
        Ok(())
    }

    /// Removes leftovers of runs that died. Call only while holding the run lock.
    pub fn clear_pending(&self) -> Result<usize, StoreError> {
        let tmp = self.versioned().join("tmp");
        let mut removed = 0;
        if let Ok(entries) = fs::read_dir(&tmp) {
            for entry in entries.flatten() {
                fs::remove_dir_all(entry.path()).map_err(io_err("remove", &entry.path()))?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The manifest of a complete entry, or `None` if the entry is missing or incomplete.
    pub fn fresh(&self, key: &str) -> Option<Manifest> {
        let manifest = self.manifest(key)?;
        if manifest.key != key || manifest.format != CACHE_FORMAT {
            return None;
        }
        self.incomplete_output(key, &manifest)
            .is_none()
            .then_some(manifest)
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
        let out = self.out_dir(key);
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
    pub fn begin(&self, key: &str) -> Result<Pending, StoreError> {
        let n = PENDING_COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = self
            .versioned()
            .join("tmp")
            .join(format!("{key}.{}.{n}", std::process::id()));
        let out = dir.join("out");
        fs::create_dir_all(&out).map_err(io_err("create", &out))?;
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
    ) -> Result<Manifest, StoreError> {
        let files = hash_tree(&pending.out_dir())?;
        let manifest = Manifest {
            format: CACHE_FORMAT,
            key: pending.key.clone(),
            kind: kind.to_string(),
            stage: stage.to_string(),
            output_digest: tree_digest(&files),
            files,
            summary: summary.lines.clone(),
            seconds,
            finished_unix: unix_now(),
            expires: summary.expires.clone(),
        };
        sync_tree(&pending.out_dir())?;
        let manifest_path = pending.dir.join("manifest.json");
        write_synced(
            &manifest_path,
            &serde_json::to_vec_pretty(&manifest).expect("manifest serialises"),
        )?;
        let target = self.entry_dir(&pending.key);
        if target.exists() {
            // An incomplete or damaged entry under the same key: move it aside, then drop it.
            let aside = pending.dir.with_extension("old");
            fs::rename(&target, &aside).map_err(io_err("rename", &target))?;
            let _ = fs::remove_dir_all(&aside);
        }
        fs::rename(&pending.dir, &target).map_err(io_err("rename", &pending.dir))?;
        if let Some(parent) = target.parent()
            && let Ok(dir) = fs::File::open(parent)
        {
            let _ = dir.sync_all();
        }
        Ok(manifest)
    }
}

/// The engine's [`ItemCache`]: one file per item under `cache/v1/items/`.
pub struct ItemStore {
    dir: PathBuf,
}

impl ItemStore {
    fn path(&self, key: &str) -> Result<PathBuf, StageError> {
        if key.len() < 3 || !key.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(StageError::invalid(format!("item key `{key}` is not hex")));
        }
        Ok(self.dir.join(&key[..2]).join(key))
    }
}

impl ItemCache for ItemStore {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        fs::read(self.path(key).ok()?).ok()
    }

    fn put(&self, key: &str, bytes: &[u8]) -> Result<(), StageError> {
        // Write-once: an item already there is by construction the same bytes.
        if self.path(key)?.exists() {
            return Ok(());
        }
        self.replace(key, bytes)
    }

    fn replace(&self, key: &str, bytes: &[u8]) -> Result<(), StageError> {
        let path = self.path(key)?;
        let parent = path.parent().expect("items have a parent");
        let write_err = |source| StageError::Write {
            path: path.clone(),
            source,
        };
        fs::create_dir_all(parent).map_err(write_err)?;
        let n = PENDING_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = parent.join(format!(".{key}.{}.{n}", std::process::id()));
        fs::write(&tmp, bytes).map_err(write_err)?;
        fs::rename(&tmp, &path).map_err(write_err)
    }

    fn link(&self, key: &str, dest: &Path) -> Result<bool, StageError> {
        let path = self.path(key)?;
        if !path.exists() {
            return Ok(false);
        }
        if dest.exists() {
            return Ok(true);
        }
        fs::hard_link(&path, dest)
            .or_else(|_| fs::copy(&path, dest).map(|_| ()))
            .map_err(|source| StageError::Write {
                path: dest.to_path_buf(),
                source,
            })?;
        Ok(true)
    }
}

/// Writes a file and flushes it to disk before returning.
pub fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let mut file = fs::File::create(path).map_err(io_err("create", path))?;
    file.write_all(bytes).map_err(io_err("write", path))?;
    file.sync_all().map_err(io_err("sync", path))
}

/// Writes a file atomically: a temporary sibling, flushed, then renamed over the target.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    write_synced(&tmp, bytes)?;
    fs::rename(&tmp, path).map_err(io_err("rename", &tmp))
}

/// Makes everything below `dir` durable before the manifest is written.
///
/// On Linux one `syncfs` flushes the whole file system the cache lives on: a single journal
/// commit instead of one per file (20,000 per-file `fsync`s of a download output took 1.1-1.4 s
/// here; `syncfs` with nothing else dirty takes milliseconds). Elsewhere, one `fsync` per file.
fn sync_tree(dir: &Path) -> Result<(), StoreError> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let handle = fs::File::open(dir).map_err(io_err("open", dir))?;
        // SAFETY: `syncfs` only reads the descriptor, which `handle` keeps open for the call.
        if unsafe { libc::syncfs(handle.as_raw_fd()) } == 0 {
            return Ok(());
        }
        // Fall through to per-file syncs if the file system refuses.
    }
    for path in list_files(dir)? {
        let file = fs::File::open(&path).map_err(io_err("open", &path))?;
        file.sync_all().map_err(io_err("sync", &path))?;
    }
    Ok(())
}

/// All regular files below `dir`, sorted.
pub fn list_files(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let mut files = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(current) = todo.pop() {
        for entry in fs::read_dir(&current).map_err(io_err("list", &current))? {
            let entry = entry.map_err(io_err("list", &current))?;
            let kind = entry.file_type().map_err(io_err("stat", &entry.path()))?;
            if kind.is_dir() {
                todo.push(entry.path());
            } else if kind.is_file() {
                files.push(entry.path());
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Hashes every file below `dir`, keyed by its `/`-separated path relative to `dir`.
pub fn hash_tree(dir: &Path) -> Result<BTreeMap<String, FileEntry>, StoreError> {
    let files = list_files(dir)?;
    files
        .par_iter()
        .map(|path| {
            let rel = path
                .strip_prefix(dir)
                .expect("listed below dir")
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            Ok((rel, hash_file(path)?))
        })
        .collect()
}

/// Size and blake3 of one file.
pub fn hash_file(path: &Path) -> Result<FileEntry, StoreError> {
    let mut hasher = blake3::Hasher::new();
    hasher.update_mmap(path).map_err(io_err("read", path))?;
    let size = fs::metadata(path).map_err(io_err("stat", path))?.len();
    Ok(FileEntry {
        size,
        blake3: hasher.finalize().to_hex().to_string(),
    })
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

    #[test]
    fn digest_depends_on_names_and_contents() {
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
}
