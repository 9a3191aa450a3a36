//! Owns `pull`: an entry's record, then every blob it names, each verified as it arrives, into a
//! pending entry that is committed only when all of it is there; and the per-item results its
//! run used, into the local item cache.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use pipeline_api::ItemCache;
use pipeline_engine::Pulled;
use pipeline_engine::fingerprint::CACHE_FORMAT;
use pipeline_engine::store::Store;

use crate::error::RemoteError;
use crate::record::{EntryRecord, ItemRef, RECORD_FORMAT, entry_name, is_hash};
use crate::remote::Remote;
use crate::transfer::Incoming;

impl Remote {
    /// The record of `key`, if the remote has one.
    pub fn record(&self, key: &str) -> Result<Option<EntryRecord>, RemoteError> {
        let name = entry_name(key);
        let Some(bytes) = self.get_small(&name)? else {
            return Ok(None);
        };
        let bad = |detail: String| RemoteError::BadRecord {
            object: self.location.path(&name).to_string(),
            detail,
        };
        // The format first, from a reading that asks for nothing else: a record a newer
        // version wrote is not damage, only not ours to read.
        #[derive(serde::Deserialize)]
        struct Versions {
            format: Option<u32>,
            manifest: Option<ManifestVersion>,
        }
        #[derive(serde::Deserialize)]
        struct ManifestVersion {
            format: Option<u32>,
        }
        if let Ok(versions) = serde_json::from_slice::<Versions>(&bytes) {
            let cache = versions.manifest.and_then(|m| m.format);
            if versions.format.is_some_and(|f| f != RECORD_FORMAT)
                || cache.is_some_and(|f| f != CACHE_FORMAT)
            {
                return Err(RemoteError::OtherFormat {
                    object: self.location.path(&name).to_string(),
                    detail: format!(
                        "record format {} with cache format {}, this pipeline reads {RECORD_FORMAT} with {CACHE_FORMAT}",
                        versions.format.map_or("?".into(), |f| f.to_string()),
                        cache.map_or("?".into(), |f| f.to_string()),
                    ),
                });
            }
        }
        let record: EntryRecord = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        if record.manifest.key != key {
            return Err(bad(format!("it is the record of {}", record.manifest.key)));
        }
        if let Some(rel) = record
            .manifest
            .files
            .keys()
            .find(|rel| !is_plain_relative(rel))
        {
            return Err(bad(format!("it names the file `{rel}`, outside its entry")));
        }
        if let Some((_, file)) = record
            .manifest
            .files
            .iter()
            .find(|(_, f)| !is_hash(&f.blake3))
        {
            return Err(bad(format!("`{}` is not a blake3 hash", file.blake3)));
        }
        // Every per-item result is checked here, before any is written: a record with one bad
        // item is refused whole, so none of its others (a forged decode verdict) gets in.
        for (item, found) in &record.items {
            if !is_hash(&found.blake3) {
                return Err(bad(format!(
                    "item {item} names `{}`, which is not a blake3 hash",
                    found.blake3
                )));
            }
            if let Some(text) = &found.text
                && (text.len() as u64 != found.size
                    || blake3::hash(text.as_bytes()).to_hex().as_str() != found.blake3)
            {
                return Err(RemoteError::Corrupt {
                    object: self.location.path(&name).to_string(),
                    what: format!("item {item} inside it"),
                });
            }
        }
        Ok(Some(record))
    }

    /// Takes the entry for `key` into `store`, complete or not at all. `Ok(None)`: the remote
    /// has no record for it.
    pub fn pull_entry(&self, store: &Store, key: &str) -> Result<Option<Pulled>, RemoteError> {
        let Some(record) = self.record(key)? else {
            return Ok(None);
        };
        let local = |path: &Path, e: &dyn std::fmt::Display| RemoteError::Transfer {
            object: path.display().to_string(),
            detail: e.to_string(),
        };
        let pending = store
            .begin(key)
            .map_err(|e| local(&store.entry_dir(key), &e))?;
        let out = pending.out_dir();
        let short = &key[..key.len().min(12)];
        let stage = &record.manifest.stage;
        // Each blob is fetched once, into its first file; the others are copies of it.
        let mut plan = Fetches::default();
        for (rel, file) in &record.manifest.files {
            let dest = out.join(rel);
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent).map_err(|e| local(parent, &e))?;
            }
            let what = format!("`{rel}` of entry {short}... ({stage})");
            plan.want(&file.blake3, file.size, dest, what);
        }
        // Per-item results this machine lacks: small ones are in the record, others are blobs
        // (often the same as an output file: a poster is both).
        let items = store.items();
        let items_dir = out.with_file_name("pulled-items");
        let mut item_blobs = Vec::new();
        let mut item_texts: Vec<(&str, &ItemRef)> = Vec::new();
        for (item, found) in &record.items {
            if items.file(item).is_some() {
                continue;
            }
            if found.text.is_some() {
                item_texts.push((item, found));
                continue;
            }
            // Usually the blob is an output file fetched anyway: the item is taken from it.
            let source = match plan.first.get(&found.blake3) {
                Some(fetched) => fetched.clone(),
                None => {
                    std::fs::create_dir_all(&items_dir).map_err(|e| local(&items_dir, &e))?;
                    let dest = items_dir.join(&found.blake3);
                    let what = format!("item {item} of entry {short}... ({stage})");
                    plan.want(&found.blake3, found.size, dest.clone(), what);
                    dest
                }
            };
            item_blobs.push((item.as_str(), source));
        }
        // Every file the pull writes: outputs (some copies of one blob) and per-item results.
        let fetched = record.manifest.files.len() + item_texts.len() + item_blobs.len();
        let taken = self
            .download("pull", std::mem::take(&mut plan.incoming))
            .and_then(|bytes| {
                plan.copy_the_rest()?;
                // Checked against their hashes when the record was read (see `record`).
                for (item, found) in item_texts {
                    let text = found.text.as_deref().unwrap_or_default();
                    items
                        .put(item, text.as_bytes())
                        .map_err(|e| local(Path::new(item), &e))?;
                }
                for (item, file) in &item_blobs {
                    items.put_file(item, file).map_err(|e| local(file, &e))?;
                }
                let _ = std::fs::remove_dir_all(&items_dir);
                Ok(bytes)
            });
        let bytes = match taken {
            Ok(bytes) => bytes,
            Err(err) => {
                pending.discard();
                return Err(err);
            }
        };
        let used: BTreeSet<String> = record.items.keys().cloned().collect();
        store
            .adopt(pending, &record.manifest, &used)
            .map_err(|e| RemoteError::BadRecord {
                object: self.location.path(&entry_name(key)).to_string(),
                detail: e.to_string(),
            })?;
        Ok(Some(Pulled {
            files: fetched,
            bytes,
        }))
    }
}

/// The blobs one pull fetches, each once, and the files that are copies of one fetched.
#[derive(Default)]
struct Fetches {
    incoming: Vec<Incoming>,
    /// Hash -> the file it is fetched into.
    first: BTreeMap<String, PathBuf>,
    /// (from, to) once everything is fetched.
    copies: Vec<(PathBuf, PathBuf)>,
}

impl Fetches {
    fn want(&mut self, hash: &str, size: u64, dest: PathBuf, what: String) {
        match self.first.get(hash) {
            Some(from) => self.copies.push((from.clone(), dest)),
            None => {
                self.first.insert(hash.to_string(), dest.clone());
                self.incoming.push(Incoming {
                    hash: hash.to_string(),
                    size,
                    dest,
                    what,
                });
            }
        }
    }

    fn copy_the_rest(&self) -> Result<(), RemoteError> {
        for (from, to) in &self.copies {
            std::fs::copy(from, to).map_err(|e| RemoteError::Transfer {
                object: to.display().to_string(),
                detail: e.to_string(),
            })?;
        }
        Ok(())
    }
}

/// Whether `rel` is a plain relative path that stays inside its directory.
fn is_plain_relative(rel: &str) -> bool {
    !rel.is_empty()
        && Path::new(rel)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}
