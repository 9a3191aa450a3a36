//! Owns the opened shared cache: its location, the runtime its requests run on, how many run at
//! once and where their progress goes; and the engine's [`SharedCache`] over it.

use std::sync::Arc;

use pipeline_engine::store::Store;
use pipeline_engine::{Pulled, Pushed, SharedCache, SharedError};

use crate::error::RemoteError;
use crate::location::{Location, Missing};
use crate::progress::Transfers;
use crate::record;

/// An opened shared cache.
pub struct Remote {
    pub(crate) location: Location,
    pub(crate) runtime: tokio::runtime::Runtime,
    pub(crate) jobs: usize,
    pub(crate) transfers: Arc<dyn Transfers + Send>,
}

impl Remote {
    /// Opens the remote at `url`; `jobs` transfers run at once, and `transfers` shows them; a
    /// directory remote that is not there is made only when `missing` says so.
    pub fn open(
        url: &str,
        missing: Missing,
        jobs: usize,
        transfers: Arc<dyn Transfers + Send>,
    ) -> Result<Self, RemoteError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| RemoteError::config(url, e))?;
        // The store's HTTP client must be made inside the runtime it will run on.
        let location = runtime.block_on(async { Location::open(url, missing) })?;
        Ok(Self {
            location,
            runtime,
            jobs: jobs.max(1),
            transfers,
        })
    }

    /// The URL as given.
    pub fn url(&self) -> &str {
        &self.location.url
    }

    /// Asks the remote once, so that wrong credentials, a missing bucket or a server that is
    /// down are found before anything runs.
    pub fn check(&self) -> Result<(), RemoteError> {
        let path = self.location.path(record::ENTRIES);
        // The first page of a listing only: a remote of a million entries answers as fast.
        let first = self.runtime.block_on(async {
            use futures::StreamExt;
            self.location.store.list(Some(&path)).next().await
        });
        match first {
            None | Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(RemoteError::from_store(self.url(), path.as_ref(), e)),
        }
    }
}

impl SharedCache for Remote {
    fn pull_latest(
        &self,
        store: &Store,
        stage: &str,
    ) -> Result<Option<(String, Pulled)>, SharedError> {
        let Some(name) = record::latest_name(stage) else {
            return Ok(None);
        };
        let Some(bytes) = self.get_small(&name)? else {
            return Ok(None);
        };
        let key = String::from_utf8_lossy(&bytes).trim().to_string();
        if !record::is_hash(&key) {
            return Ok(None);
        }
        if store.fresh(&key).is_some() {
            return Ok(Some((key, Pulled::default())));
        }
        Ok(self.pull_entry(store, &key)?.map(|pulled| (key, pulled)))
    }

    fn pull(&self, store: &Store, key: &str) -> Result<Option<Pulled>, SharedError> {
        Ok(self.pull_entry(store, key)?)
    }

    fn push(&self, store: &Store, key: &str) -> Result<Pushed, SharedError> {
        let stage = store.manifest(key).map(|m| m.stage).unwrap_or_default();
        let entries = [(stage, key.to_string())];
        let report = self.push_entries(store, &entries)?;
        // Just made: the newest entry of its stage.
        self.mark_latest(&entries);
        Ok(Pushed {
            blobs: report.blobs_sent,
            bytes: report.bytes_sent,
            already_there: report.entries_sent == 0,
        })
    }
}
