//! What `download` remembers per poster across runs, in the engine's item cache: a fetched remote
//! poster by URL and size cap (its bytes under their blake3), and a remote failure with when it
//! happened, so it is not asked again until `retry_failed_after_hours` have passed. Local files
//! are read again every run. Also where a poster's bytes go in the output.

use std::path::Path;

use pipeline_api::{ItemCache, item_key};
use serde::{Deserialize, Serialize};

use crate::fetch_error::FetchError;
use crate::params::DownloadParams;
use crate::source::Source;

/// Item key of a remote source: what it resolved to depends on the URL and the size cap.
fn source_key(source: &str, params: &DownloadParams) -> String {
    item_key(&[
        b"download-source-v1",
        source.as_bytes(),
        &params.max_bytes.to_le_bytes(),
    ])
}

/// A remote poster fetched by an earlier run, linked into `posters` after checking its hash.
pub fn reuse(
    items: &dyn ItemCache,
    source: &str,
    params: &DownloadParams,
    posters: &Path,
) -> Option<(String, u64)> {
    if !Source::parse(source).is_remote() {
        return None;
    }
    let hash = String::from_utf8(items.get(&source_key(source, params))?).ok()?;
    let dest = posters.join(&hash);
    if !items.link(&hash, &dest).ok()? {
        return None;
    }
    let bytes = std::fs::read(&dest).ok()?;
    if blake3::hash(&bytes).to_hex().as_str() != hash {
        let _ = std::fs::remove_file(&dest); // a damaged item is refetched, never used
        return None;
    }
    Some((format!("posters/{hash}"), bytes.len() as u64))
}

/// Keeps a fetched remote poster for later runs (best effort: a failure only costs a refetch).
pub fn remember(items: &dyn ItemCache, source: &str, params: &DownloadParams, bytes: &[u8]) {
    if !Source::parse(source).is_remote() {
        return;
    }
    let hash = blake3::hash(bytes).to_hex().to_string();
    if items.put(&hash, bytes).is_ok() {
        let _ = items.put(&source_key(source, params), hash.as_bytes());
    }
}

/// A remembered failure of a remote poster: why, and when.
#[derive(Debug, Serialize, Deserialize)]
pub struct FailureRecord {
    /// Why it failed.
    pub error: FetchError,
    /// When (Unix time).
    pub at_unix: u64,
}

fn failure_key(source: &str, params: &DownloadParams) -> String {
    // v2: the typed error (v1 records, a reason string, are not read: those posters are asked
    // again once).
    item_key(&[
        b"download-failure-v2",
        source.as_bytes(),
        &params.max_bytes.to_le_bytes(),
    ])
}

/// Unix time from which a failure seen at `at_unix` may be retried.
pub fn retry_due(at_unix: u64, hours: f64) -> u64 {
    // `as` saturates: an absurd number of hours means never, not a wrap-around.
    at_unix.saturating_add((hours * 3600.0).ceil() as u64)
}

/// Why the remote `source` failed in an earlier run, if that was recent enough to trust.
pub fn remembered_failure(
    items: &dyn ItemCache,
    source: &str,
    params: &DownloadParams,
    now: u64,
) -> Option<FailureRecord> {
    if !Source::parse(source).is_remote() {
        return None;
    }
    let record: FailureRecord =
        serde_json::from_slice(&items.get(&failure_key(source, params))?).ok()?;
    (now < retry_due(record.at_unix, params.retry_failed_after_hours)).then_some(record)
}

/// Remembers that a remote poster failed (best effort: forgetting only costs a request);
/// whether it is remembered.
pub fn remember_failure(
    items: &dyn ItemCache,
    source: &str,
    params: &DownloadParams,
    error: &FetchError,
    now: u64,
) -> bool {
    if !Source::parse(source).is_remote() {
        return false;
    }
    let record = FailureRecord {
        error: error.clone(),
        at_unix: now,
    };
    serde_json::to_vec(&record)
        .is_ok_and(|bytes| items.replace(&failure_key(source, params), &bytes).is_ok())
}

/// Stores poster bytes under their blake3; identical posters share one file.
pub fn store(dir: &Path, bytes: &[u8]) -> Result<(String, u64), FetchError> {
    let name = blake3::hash(bytes).to_hex().to_string();
    let path = dir.join(&name);
    if !path.exists() {
        // Write beside, then rename: a reader never sees half a poster under its final name.
        let tmp = dir.join(format!(".{name}.{:?}", std::thread::current().id()));
        let failed = |e: std::io::Error| FetchError::Store(e.to_string());
        std::fs::write(&tmp, bytes).map_err(failed)?;
        std::fs::rename(&tmp, &path).map_err(failed)?;
    }
    Ok((format!("posters/{name}"), bytes.len() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_due_after_the_configured_hours() {
        assert_eq!(retry_due(1000, 1.0), 4600);
        assert_eq!(retry_due(1000, 0.0), 1000);
        assert_eq!(retry_due(1000, 0.0001), 1001, "rounded up to whole seconds");
        assert_eq!(retry_due(1000, 1e30), u64::MAX, "never, not a wrap-around");
    }
}
