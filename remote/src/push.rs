//! Owns `push`: the blobs a record names go up first (those the remote lacks), then the record,
//! created only if absent.

use std::collections::BTreeMap;
use std::time::Instant;

use object_store::{ObjectStoreExt, PutPayload};
use pipeline_engine::store::Store;

use crate::error::RemoteError;
use crate::record::{EntryRecord, INLINE_MAX, ItemRef, RECORD_FORMAT, entry_name, latest_name};
use crate::remote::Remote;
use crate::transfer::Outgoing;

/// What a push did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct PushReport {
    /// Records created.
    pub entries_sent: usize,
    /// Entries the remote had already (or another writer created first).
    pub entries_there: usize,
    /// Blobs uploaded.
    pub blobs_sent: usize,
    /// Blobs the remote had.
    pub blobs_there: usize,
    /// Bytes uploaded.
    pub bytes_sent: u64,
    /// Seconds it took.
    pub seconds: f64,
}

/// One entry ready to go: its record and the blobs it names.
struct Outbound {
    key: String,
    record: EntryRecord,
    blobs: Vec<Outgoing>,
}

impl Remote {
    /// Whether the remote has a record for `key`.
    pub fn has_entry(&self, key: &str) -> Result<bool, RemoteError> {
        let name = entry_name(key);
        match self
            .runtime
            .block_on(self.location.store.head(&self.location.path(&name)))
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(RemoteError::from_store(self.url(), &name, e)),
        }
    }

    /// Sends the entries `(stage, key)` that the remote lacks: their blobs, then their records.
    pub fn push_entries(
        &self,
        store: &Store,
        entries: &[(String, String)],
    ) -> Result<PushReport, RemoteError> {
        let started = Instant::now();
        let mut report = PushReport::default();
        let mut outbound = Vec::new();
        for (stage, key) in entries {
            if self.has_entry(key)? {
                report.entries_there += 1;
                continue;
            }
            outbound.push(outbound_entry(store, stage, key)?);
        }
        // Each blob once, whatever entries name it.
        let mut blobs: BTreeMap<String, Outgoing> = BTreeMap::new();
        for entry in &outbound {
            for blob in &entry.blobs {
                blobs
                    .entry(blob.hash.clone())
                    .or_insert_with(|| blob.clone());
            }
        }
        let wanted: Vec<(&str, u64)> = blobs.values().map(|b| (b.hash.as_str(), b.size)).collect();
        let present = self.blobs_present(&wanted)?;
        let missing: Vec<Outgoing> = blobs
            .values()
            .filter(|b| present.get(&b.hash) != Some(&b.size))
            .cloned()
            .collect();
        report.blobs_there = blobs.len() - missing.len();
        report.blobs_sent = missing.len();
        report.bytes_sent = self.upload(missing)?;
        // Records last: a record is only ever seen with every blob it names in place.
        for entry in outbound {
            let bytes = serde_json::to_vec(&entry.record).expect("a record serialises");
            if self.create(&entry_name(&entry.key), bytes)? {
                report.entries_sent += 1;
            } else {
                report.entries_there += 1;
            }
        }
        report.seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }
}

impl Remote {
    /// Notes each `(stage, key)` as its stage's newest entry (`stages/<stage>`), for machines
    /// whose own key matches no record. Best effort: a note that fails only costs that reuse.
    pub fn mark_latest(&self, entries: &[(String, String)]) {
        for (stage, key) in entries {
            let Some(name) = latest_name(stage) else {
                continue;
            };
            let path = self.location.path(&name);
            let payload = PutPayload::from(key.clone().into_bytes());
            if let Err(err) = self
                .runtime
                .block_on(self.location.store.put(&path, payload))
            {
                warn_unnoted(&name, &err);
            }
        }
    }
}

/// A note that could not be written is not worth failing a push for; it is said once.
fn warn_unnoted(name: &str, err: &object_store::Error) {
    eprintln!("warning: could not note `{name}` on the remote: {err}");
}

/// The record of a complete local entry and the blobs it names: its output files, and the
/// per-item results its run used that are too big to go inline.
fn outbound_entry(store: &Store, stage: &str, key: &str) -> Result<Outbound, RemoteError> {
    let not_local = || RemoteError::NotLocal {
        stage: stage.to_string(),
        key: key.to_string(),
    };
    store.fresh(key).ok_or_else(not_local)?;
    let manifest = store.manifest(key).ok_or_else(not_local)?;
    let out = store.out_dir(key);
    let mut blobs: Vec<Outgoing> = manifest
        .files
        .iter()
        .map(|(rel, file)| Outgoing {
            hash: file.blake3.clone(),
            size: file.size,
            file: out.join(rel),
        })
        .collect();
    let item_store = store.items();
    let mut items = BTreeMap::new();
    for item in store.items_used(key).unwrap_or_default() {
        // An item `gc` removed, or one a later run replaced and dropped, is simply not shared.
        let Some(file) = item_store.file(&item) else {
            continue;
        };
        let Ok(content) = std::fs::read(&file) else {
            continue;
        };
        let hash = blake3::hash(&content).to_hex().to_string();
        let size = content.len() as u64;
        let text = (size <= INLINE_MAX)
            .then(|| String::from_utf8(content).ok())
            .flatten();
        if text.is_none() {
            blobs.push(Outgoing {
                hash: hash.clone(),
                size,
                file,
            });
        }
        items.insert(
            item,
            ItemRef {
                size,
                blake3: hash,
                text,
            },
        );
    }
    Ok(Outbound {
        key: key.to_string(),
        record: EntryRecord {
            format: RECORD_FORMAT,
            manifest,
            items,
        },
        blobs,
    })
}
