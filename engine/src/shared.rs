//! Owns the contract of a cache shared with other machines (`run --pull`/`--push`): the engine
//! asks it for an entry before running a dirty stage and hands it each entry it commits. What
//! the shared cache is (an S3 bucket, a directory) is the caller's; the engine only knows that
//! it can bring an entry into the [`Store`] complete, or not at all.

use crate::store::Store;

/// Why a transfer with the shared cache failed (its message names the object and the cause).
pub type SharedError = Box<dyn std::error::Error + Send + Sync>;

/// What a pull brought in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pulled {
    /// Output files and per-item results written into the store.
    pub files: usize,
    /// Bytes that came over the network (blobs already here are not fetched again).
    pub bytes: u64,
}

/// What a push sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pushed {
    /// Blobs uploaded (those the shared cache had are skipped).
    pub blobs: usize,
    /// Bytes uploaded.
    pub bytes: u64,
    /// The shared cache had the entry already (from an earlier push or another machine).
    pub already_there: bool,
}

/// A cache shared with other machines, content-addressed like the local [`Store`].
pub trait SharedCache: Sync {
    /// Brings the entry for `key` (and the per-item results its run used) into `store`,
    /// verified against its blake3, complete or not at all. `Ok(None)`: the shared cache has
    /// no entry under `key`.
    fn pull(&self, store: &Store, key: &str) -> Result<Option<Pulled>, SharedError>;
    /// Sends the committed entry for `key` (and its per-item results) to the shared cache, the
    /// entry's record last, so nothing half-sent ever looks like an entry.
    fn push(&self, store: &Store, key: &str) -> Result<Pushed, SharedError>;
    /// Brings in the newest entry pushed by a stage named `stage`, whatever its key, with the
    /// per-item results its run used; its key, if there is one. A dirty stage the shared cache
    /// has no entry for takes it as an earlier output, so a machine that changed an input reuses
    /// what the others computed per item (posters, resized rows, embeddings) instead of redoing
    /// all of it. The stage checks whatever it takes, as it does with any earlier output.
    fn pull_latest(
        &self,
        _store: &Store,
        _stage: &str,
    ) -> Result<Option<(String, Pulled)>, SharedError> {
        Ok(None)
    }
}
