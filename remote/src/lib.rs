//! The shared cache: the engine's entries and the per-item results their runs used, kept in an
//! object store (S3 or anything that speaks its protocol, GCS, Azure, or a directory) so that
//! machines that share it compute each thing once.
//!
//! ```text
//! <prefix>/
//!   cas/<blake3>      every output file and per-item result, once, named by its content
//!   entries/<key>     one record per stage key (JSON: the entry's manifest and the items its
//!                     run used), written last and only if absent (`If-None-Match: *`)
//!   stages/<name>     the key of the newest entry pushed for a stage name: a hint for machines
//!                     whose own key matches no record
//! ```
//!
//! As in Bazel's remote cache, content and records are apart: a blob is the same bytes whoever
//! writes it, so writers never conflict on `cas/`, and a record is created once, after every blob
//! it names is in place. Two machines that finish the same key at once both upload the same
//! blobs; one record create wins and the other is told it exists, which is success for both. A
//! push that dies leaves only blobs, never a record, and the next push finds them and completes.
//! Everything that comes back is checked against its blake3 before it is used.
//!
//! Modules: `remote` (the opened cache, [`Remote`], and the engine's [`SharedCache`] over it),
//! `error` ([`RemoteError`], classified), [`location`] (the URL, the store, credentials;
//! [`profile`] reads an AWS profile),
//! [`record`] (the layout and the record), `progress` (how transfers are shown), [`transfer`]
//! (bounded, verified uploads and downloads), [`push`], [`pull`] and [`check`] (`status --remote`, `verify --remote`).
//!
//! [`SharedCache`]: pipeline_engine::SharedCache

pub mod check;
mod error;
pub mod location;
pub mod profile;
mod progress;
pub mod pull;
pub mod push;
pub mod record;
mod remote;
pub mod transfer;

pub use check::{RemoteProblem, RemoteVerify};
pub use error::RemoteError;
pub use location::{Location, Missing, REMOTE_VAR, TIMEOUT_VAR, redacted};
pub use progress::{Quiet, TransferBar, Transfers};
pub use push::PushReport;
pub use remote::Remote;

#[cfg(test)]
mod tests;
