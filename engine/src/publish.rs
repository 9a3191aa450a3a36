//! Owns publishing: copies of cached outputs in the workspace (`publish: reports`), one folder per
//! run that made the output and the latest copy at the top.
//!
//! ```text
//! reports/
//!   index.html, metrics.json, ...     the latest publication (replaced file by file)
//!   run.json                          the run that made it
//!   20261201-164806/                  every run that ran the stage keeps its own copy
//!     index.html, ..., run.json
//! ```
//!
//! Only files the engine put at the top are ever replaced or removed there: run folders and
//! anything a person adds are left alone.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pipeline_api::RunContext;
use serde::{Deserialize, Serialize};

use crate::digest::Stamp;
use crate::fsio::{Area, FsError, fs, list_files, relative, write_atomic};
use crate::store::Store;

/// The file beside every published copy that says which run made it.
pub const RUN_FILE: &str = "run.json";

/// What was last published to a directory's top: the entry's key and the stamp of every file
/// copied there, so an untouched publication is not copied again.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
struct PublishRecord {
    key: String,
    files: BTreeMap<String, Stamp>,
}

impl PublishRecord {
    /// Whether every file this publication put at the top of `to` is still as it left it.
    fn intact(&self, to: &Path) -> bool {
        !self.files.is_empty()
            && self.files.iter().all(|(rel, stamp)| {
                fs::metadata(to.join(rel)).is_ok_and(|meta| Stamp::of(&meta) == *stamp)
            })
    }
}

/// Copies every file below `from` into the new folder `to`, replacing `to` as a whole: a
/// half-made copy is only ever a `*.publishing` sibling. An existing `to` is replaced only when it
/// is a copy this function made (it holds [`RUN_FILE`]); anything else there is a person's.
pub fn copy_tree(from: &Path, to: &Path) -> Result<(), PublishError> {
    if fs::symlink_metadata(to).is_ok() && !to.join(RUN_FILE).is_file() {
        return Err(PublishError::Foreign(to.to_path_buf()));
    }
    let staging = to.with_extension("publishing");
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(&staging).map_err(Area::Published.err())?;
    for file in list_files(from, Area::Published)? {
        let dest = staging.join(relative(&file, from));
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(Area::Published.err())?;
        }
        crate::fsio::link_or_copy(&file, &dest)
            .map_err(|e| FsError::at(Area::Published, "copy", &dest, e))?;
    }
    if to.exists() {
        fs::remove_dir_all(to).map_err(Area::Published.err())?;
    }
    fs::rename(&staging, to).map_err(Area::Published.err())?;
    Ok(())
}

/// Why a copy could not be published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Reading or writing failed.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// A file the copy would replace was not put there by the pipeline.
    #[error(
        "`{}` is in the way of a published copy, and the pipeline did not put it there: it is left as it is\n  help: move it elsewhere (or delete it), or publish to another folder",
        .0.display()
    )]
    Foreign(PathBuf),
}

/// The run folders below a publication directory, oldest first (ids sort by time).
pub fn run_folders(to: &Path) -> Vec<(String, PathBuf)> {
    let mut found: Vec<(String, PathBuf)> = fs::read_dir(to)
        .into_iter()
        .flatten()
        .flatten()
        // A hidden folder is a run's copy still being made (or one a failed publish left).
        .filter(|entry| !entry.file_name().to_string_lossy().starts_with('.'))
        .filter(|entry| entry.path().join(RUN_FILE).is_file())
        .filter_map(|entry| Some((entry.file_name().into_string().ok()?, entry.path())))
        .collect();
    found.sort();
    found
}

/// In a publication directory: what the engine put at its top ([`PublishRecord`]). It lives with
/// the files it describes, so the pipeline still knows its own files after the cache is cleared,
/// and never mistakes a person's file for one of them.
pub const RECORD_FILE: &str = ".pipeline-published.json";

impl Store {
    /// Where records were kept before they moved into the publication directory.
    fn legacy_record_path(&self, to: &Path) -> PathBuf {
        self.versioned().join("published").join(format!(
            "{}.json",
            blake3::hash(to.to_string_lossy().as_bytes()).to_hex()
        ))
    }

    fn publish_record(&self, to: &Path) -> PublishRecord {
        fs::read(to.join(RECORD_FILE))
            .or_else(|_| fs::read(self.legacy_record_path(to)))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    /// The key whose output the top of `to` was last made from, and whether every file that
    /// publication put there is still as it left it: one read of the record, then one stat per
    /// file, without listing the run folders.
    pub fn shown(&self, to: &Path) -> Option<(String, bool)> {
        let record = self.publish_record(to);
        (!record.key.is_empty()).then(|| {
            let intact = record.intact(to);
            (record.key, intact)
        })
    }

    /// Makes the files at the top of `to` those below `from` (the output of `key`, or a run's
    /// copy of it), unless `force` is off and `to` still holds exactly what the last publication
    /// of `key` put there (same files with the same size, mtime and inode). Returns whether
    /// anything was copied. Each file is replaced atomically. A file in the way that the last
    /// publication did not put there (a person's `index.html`) stops it before anything is
    /// written, unless it already has the very bytes it would get.
    pub fn publish_latest(
        &self,
        key: &str,
        from: &Path,
        to: &Path,
        force: bool,
    ) -> Result<bool, PublishError> {
        let recorded = self.publish_record(to);
        if !force && recorded.key == key && recorded.intact(to) {
            // Nothing to copy: `from` may be the cached output while the top holds a run's
            // dressed copy of the same key.
            return Ok(false);
        }
        let sources = list_files(from, Area::Published)?;
        for file in &sources {
            let rel = relative(file, from);
            let dest = to.join(&rel);
            let ours = recorded.files.contains_key(&rel)
                || fs::read(&dest).is_ok_and(|there| fs::read(file).is_ok_and(|new| new == there));
            if fs::symlink_metadata(&dest).is_ok() && !ours {
                return Err(PublishError::Foreign(dest));
            }
        }
        fs::create_dir_all(to).map_err(Area::Published.err())?;
        let mut files = BTreeMap::new();
        for file in &sources {
            let rel = relative(file, from);
            let dest = to.join(&rel);
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent).map_err(Area::Published.err())?;
            }
            let staging = dest.with_extension("publishing");
            let _ = fs::remove_file(&staging);
            crate::fsio::link_or_copy(file, &staging)
                .map_err(|e| FsError::at(Area::Published, "copy", &staging, e))?;
            fs::rename(&staging, &dest).map_err(Area::Published.err())?;
            let meta = fs::metadata(&dest).map_err(Area::Published.err())?;
            files.insert(rel, Stamp::of(&meta));
        }
        for rel in recorded.files.keys() {
            if !files.contains_key(rel) {
                let _ = fs::remove_file(to.join(rel));
            }
        }
        let record = PublishRecord {
            key: key.to_string(),
            files,
        };
        write_atomic(
            &to.join(RECORD_FILE),
            &serde_json::to_vec(&record).expect("a publish record serialises"),
            Area::Published,
        )?;
        let _ = fs::remove_file(self.legacy_record_path(to));
        Ok(true)
    }

    /// Copies the output of `key` into a hidden `to/.<run id>.staged/` with the run's
    /// `run.json`; returns the folder, which [`finish_run_copy`] names `to/<run id>/` once the
    /// latest copy is published from it (no command ever reads a hidden one).
    pub fn stage_run_copy(
        &self,
        key: &str,
        to: &Path,
        run: &RunContext,
    ) -> Result<PathBuf, PublishError> {
        let folder = to.join(format!(".{}.staged", run.id));
        copy_tree(&self.out_dir(key), &folder)?;
        write_atomic(
            &folder.join(RUN_FILE),
            &serde_json::to_vec_pretty(run).expect("a run context serialises"),
            Area::Published,
        )?;
        Ok(folder)
    }
}

/// Gives a run's staged copy its name, `to/<run id>/`; returns it.
pub fn finish_run_copy(
    staged: &Path,
    to: &Path,
    run: &RunContext,
) -> Result<PathBuf, PublishError> {
    let folder = to.join(&run.id);
    if fs::symlink_metadata(&folder).is_ok() && !folder.join(RUN_FILE).is_file() {
        return Err(PublishError::Foreign(folder));
    }
    if folder.exists() {
        fs::remove_dir_all(&folder).map_err(Area::Published.err())?;
    }
    fs::rename(staged, &folder).map_err(Area::Published.err())?;
    Ok(folder)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipeline_api::RunSummary;

    fn store_with_report(dir: &Path) -> Store {
        let store = Store::new(dir.join("cache"));
        store.init().unwrap();
        let pending = store.begin("k1").unwrap();
        fs::create_dir_all(pending.out_dir()).unwrap();
        fs::write(pending.out_dir().join("index.html"), b"<p>report</p>").unwrap();
        store
            .commit(pending, "s", "kind", &RunSummary::default(), 0.0)
            .unwrap();
        store
    }

    #[test]
    fn the_latest_is_copied_once_and_again_after_it_is_touched() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_report(dir.path());
        let from = store.out_dir("k1");
        let target = dir.path().join("reports");
        assert!(store.publish_latest("k1", &from, &target, false).unwrap());
        assert!(
            !store.publish_latest("k1", &from, &target, false).unwrap(),
            "unchanged: nothing to copy"
        );
        fs::write(target.join("index.html"), b"edited by hand").unwrap();
        assert!(
            store.publish_latest("k1", &from, &target, false).unwrap(),
            "a touched copy is replaced"
        );
        assert_eq!(
            fs::read(target.join("index.html")).unwrap(),
            b"<p>report</p>"
        );
        fs::remove_file(target.join("index.html")).unwrap();
        assert!(store.publish_latest("k1", &from, &target, false).unwrap());
        assert!(
            target.join("index.html").is_file(),
            "a deleted copy is restored"
        );
    }

    #[test]
    fn run_copies_accumulate_and_the_latest_leaves_them_and_foreign_files_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_report(dir.path());
        let target = dir.path().join("reports");
        let mut folders = Vec::new();
        for id in ["20261201-100000", "20261201-110000"] {
            let run = RunContext {
                id: id.into(),
                ..RunContext::default()
            };
            let staged = store.stage_run_copy("k1", &target, &run).unwrap();
            assert!(run_folders(&target).iter().all(|(id, _)| id != &run.id));
            store.publish_latest("k1", &staged, &target, true).unwrap();
            folders.push(finish_run_copy(&staged, &target, &run).unwrap());
        }
        fs::write(target.join("notes.txt"), b"mine").unwrap();
        let listed: Vec<String> = run_folders(&target).into_iter().map(|(id, _)| id).collect();
        assert_eq!(listed, ["20261201-100000", "20261201-110000"]);
        for folder in &folders {
            assert_eq!(
                fs::read(folder.join("index.html")).unwrap(),
                b"<p>report</p>"
            );
        }
        let latest: RunContext =
            serde_json::from_slice(&fs::read(target.join(RUN_FILE)).unwrap()).unwrap();
        assert_eq!(latest.id, "20261201-110000");
        // A later output without run.json: the stale run.json at the top goes, the rest stays.
        store
            .publish_latest("k1", &store.out_dir("k1"), &target, true)
            .unwrap();
        assert!(!target.join(RUN_FILE).exists());
        assert!(target.join("notes.txt").is_file());
        assert_eq!(run_folders(&target).len(), 2);
    }
}
