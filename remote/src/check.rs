//! Owns looking at the remote as a whole: `verify --remote` reads every record and rehashes every
//! blob they name; `--repair` deletes what is damaged so the next push sends it again.

use std::collections::BTreeMap;

use futures::StreamExt;
use object_store::ObjectStoreExt;

use crate::error::RemoteError;
use crate::progress::TransferBar;
use crate::record::{ENTRIES, EntryRecord, blob_name, entry_name, is_hash};
use crate::remote::Remote;

/// What `verify --remote` found.
#[derive(Debug, Default, serde::Serialize)]
pub struct RemoteVerify {
    /// Records read.
    pub entries: usize,
    /// Blobs rehashed.
    pub blobs: usize,
    /// Their bytes.
    pub bytes: u64,
    /// What is wrong.
    pub problems: Vec<RemoteProblem>,
    /// `--repair`: objects deleted.
    pub deleted: Vec<String>,
}

/// One damaged object.
#[derive(Debug, serde::Serialize)]
pub struct RemoteProblem {
    /// The object, below the prefix (`cas/<hash>`, `entries/<key>`).
    pub object: String,
    /// What refers to it.
    pub referred_by: String,
    /// What is wrong.
    pub problem: String,
    /// Whether its bytes were read and do not match (damage, which `--repair` deletes), or it
    /// could not be checked at all (no answer, a format this version does not read), which is
    /// reported and never deleted.
    pub damaged: bool,
    /// Records that name it (deleted with it on repair, so their stages run and push again).
    #[serde(skip)]
    pub entries: Vec<String>,
}

/// What rehashing one blob found.
enum Finding {
    Sound,
    /// Read, and wrong (or definitely not there).
    Damaged(String),
    /// Not read: the server did not answer, or the read broke off.
    Unchecked(String),
}

impl Remote {
    /// Keys of every record on the remote.
    pub fn entry_keys(&self) -> Result<Vec<String>, RemoteError> {
        let prefix = self.location.path(ENTRIES);
        let store = &self.location.store;
        let names = self.runtime.block_on(async {
            let mut listing = store.list(Some(&prefix));
            let mut names = Vec::new();
            while let Some(meta) = listing.next().await {
                if let Some(name) = meta?.location.filename() {
                    names.push(name.to_string());
                }
            }
            Ok::<_, object_store::Error>(names)
        });
        let mut keys: Vec<String> = names
            .map_err(|e| RemoteError::from_store(self.url(), prefix.as_ref(), e))?
            .into_iter()
            .filter(|n| is_hash(n))
            .collect();
        keys.sort();
        Ok(keys)
    }

    /// Reads every record and rehashes every blob one names; with `repair`, deletes each damaged
    /// blob and the records that name it.
    pub fn verify(&self, repair: bool) -> Result<RemoteVerify, RemoteError> {
        let mut report = RemoteVerify::default();
        // Hash -> (size, first referrer, every record naming it).
        let mut blobs: BTreeMap<String, (u64, String, Vec<String>)> = BTreeMap::new();
        for key in self.entry_keys()? {
            report.entries += 1;
            let record: EntryRecord = match self.record(&key) {
                Ok(Some(record)) => record,
                Ok(None) => continue, // deleted meanwhile
                Err(err) => {
                    report.problems.push(RemoteProblem {
                        object: self.location.path(&entry_name(&key)).to_string(),
                        referred_by: "itself".into(),
                        damaged: matches!(err, RemoteError::BadRecord { .. }),
                        problem: err.to_string(),
                        entries: vec![key.clone()],
                    });
                    continue;
                }
            };
            let stage = &record.manifest.stage;
            let mut name = |hash: &str, size: u64, what: String| {
                let found = blobs
                    .entry(hash.to_string())
                    .or_insert_with(|| (size, what, Vec::new()));
                found.2.push(key.clone());
            };
            for (rel, file) in &record.manifest.files {
                name(
                    &file.blake3,
                    file.size,
                    format!("`{rel}` of {stage} entry {}", &key[..12]),
                );
            }
            for (item, found) in &record.items {
                if found.text.is_none() {
                    name(
                        &found.blake3,
                        found.size,
                        format!("item {item} of {stage} entry {}", &key[..12]),
                    );
                }
            }
        }
        report.blobs = blobs.len();
        report.bytes = blobs.values().map(|(size, ..)| size).sum();
        let bar = self
            .transfers
            .bar("verify", report.blobs as u64, report.bytes);
        let bar = bar.as_ref();
        let checked: Vec<(String, Finding)> = self.runtime.block_on(async {
            futures::stream::iter(blobs.iter())
                .map(|(hash, (size, ..))| async move {
                    let problem = self.rehash(hash, *size, bar).await;
                    (hash.clone(), problem)
                })
                .buffer_unordered(self.jobs)
                .collect()
                .await
        });
        for (hash, finding) in checked {
            let (damaged, problem) = match finding {
                Finding::Sound => continue,
                Finding::Damaged(problem) => (true, problem),
                Finding::Unchecked(problem) => (false, problem),
            };
            let (_, what, entries) = &blobs[&hash];
            report.problems.push(RemoteProblem {
                object: self.location.path(&blob_name(&hash)).to_string(),
                referred_by: what.clone(),
                damaged,
                problem,
                entries: entries.clone(),
            });
        }
        report.problems.sort_by(|a, b| a.object.cmp(&b.object));
        if repair {
            // Records first: a record must never name a blob that is gone.
            let mut records: Vec<String> = Vec::new();
            let mut damaged_blobs: Vec<String> = Vec::new();
            for problem in report.problems.iter().filter(|p| p.damaged) {
                records.extend(problem.entries.iter().map(|k| entry_name(k)));
                if problem.referred_by != "itself" {
                    damaged_blobs.push(problem.object.clone());
                }
            }
            records.sort();
            records.dedup();
            damaged_blobs.sort();
            damaged_blobs.dedup();
            let doomed = records.iter().map(|name| self.location.path(name)).chain(
                damaged_blobs
                    .iter()
                    .map(|p| object_store::path::Path::from(p.as_str())),
            );
            for path in doomed {
                match self.runtime.block_on(self.location.store.delete(&path)) {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                        report.deleted.push(path.to_string());
                    }
                    Err(e) => return Err(RemoteError::from_store(self.url(), path.as_ref(), e)),
                }
            }
        }
        Ok(report)
    }

    /// What is wrong with the blob `hash`, if anything.
    async fn rehash(&self, hash: &str, size: u64, bar: &dyn TransferBar) -> Finding {
        let path = self.location.path(&blob_name(hash));
        let got = match self.location.get(&path).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Finding::Damaged("missing".into()),
            Err(e) => {
                return Finding::Unchecked(
                    RemoteError::from_store(self.url(), path.as_ref(), e).to_string(),
                );
            }
        };
        let mut hasher = blake3::Hasher::new();
        let mut seen = 0u64;
        let mut stream = got.into_stream();
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(chunk) => {
                    seen += chunk.len() as u64;
                    hasher.update(&chunk);
                    bar.advance(chunk.len() as u64);
                }
                Err(e) => return Finding::Unchecked(format!("the read broke off: {e}")),
            }
        }
        if seen != size {
            Finding::Damaged(format!("{seen} bytes where the record says {size}"))
        } else if hasher.finalize().to_hex().as_str() != hash {
            Finding::Damaged("does not match its blake3".into())
        } else {
            Finding::Sound
        }
    }
}
