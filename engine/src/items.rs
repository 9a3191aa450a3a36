//! Owns the per-item cache (`cache/v1/items/<aa>/<key>`): results a stage reuses across runs (a
//! fetched poster, a resized image), one file each, written once and atomically, never changed.

use std::io::Write;
use std::path::{Path, PathBuf};

use pipeline_api::{ItemCache, StageError};

use crate::fsio::fs;

/// The engine's [`ItemCache`]: one file per item.
pub struct ItemStore {
    dir: PathBuf,
}

impl ItemStore {
    /// The item cache in `dir`.
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// The file of the item `key`, if the cache has it.
    pub fn file(&self, key: &str) -> Option<PathBuf> {
        self.path(key).ok().filter(|p| p.is_file())
    }

    /// Stores the content of `file` under `key` unless the item is there: a hard link where the
    /// file system allows (both are write-once, as the links `link` makes into outputs are),
    /// else a copy written atomically.
    pub fn put_file(&self, key: &str, file: &Path) -> Result<(), StageError> {
        let path = self.path(key)?;
        if path.exists() {
            return Ok(());
        }
        let parent = path.parent().expect("items have a parent");
        std::fs::create_dir_all(parent).map_err(|source| StageError::Write {
            path: parent.to_path_buf(),
            source,
        })?;
        match std::fs::hard_link(file, &path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(_) => {
                let bytes = std::fs::read(file).map_err(|source| StageError::Write {
                    path: file.to_path_buf(),
                    source,
                })?;
                self.put(key, &bytes)
            }
        }
    }

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
        std::fs::create_dir_all(parent).map_err(write_err)?;
        // A temporary sibling renamed into place: a reader never sees half an item. (A run that
        // dies leaves `.tmp*` files, which `gc` removes as unused.)
        let mut tmp = crate::fsio::temp_file_in(parent, ".tmp").map_err(write_err)?;
        tmp.write_all(bytes).map_err(write_err)?;
        tmp.persist(&path).map_err(|e| write_err(e.error))?;
        Ok(())
    }

    fn link(&self, key: &str, dest: &Path) -> Result<bool, StageError> {
        let path = self.path(key)?;
        if !path.exists() {
            return Ok(false);
        }
        if dest.exists() {
            return Ok(true);
        }
        let write_err = |source| StageError::Write {
            path: dest.to_path_buf(),
            source,
        };
        match std::fs::hard_link(&path, dest) {
            Ok(()) => {}
            // Another thread linked the same item there first: it is the same bytes. (Copying
            // onto it instead would truncate the item itself, which that link now shares, under
            // every reader: the flake `download_gives_every_hostile_server_behaviour...` saw.)
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            // No hard links here: a copy, written beside and renamed, so no reader sees half.
            Err(_) => {
                let parent = dest.parent().unwrap_or(Path::new("."));
                let mut tmp = crate::fsio::temp_file_in(parent, ".tmp").map_err(write_err)?;
                let mut from = std::fs::File::open(&path).map_err(write_err)?;
                std::io::copy(&mut from, &mut tmp).map_err(write_err)?;
                tmp.persist(dest).map_err(|e| write_err(e.error))?;
            }
        }
        Ok(true)
    }
}
