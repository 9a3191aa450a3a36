//! The params of `download`: limits per request and per host, retries, and how long a failure
//! is remembered.

use pipeline_api::{ParamError, check_range};
use serde::{Deserialize, Serialize};

/// Params of `download`. All but the two concurrency knobs can change which posters end up
/// stored, so those are keyed; `max_in_flight` and `max_per_host` are not (see `knob_params`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DownloadParams {
    /// Whole-request time limit per attempt, in seconds (1 to 3600).
    pub timeout_secs: u64,
    /// Largest poster accepted, in bytes (1 to [`MAX_BYTES_LIMIT`]).
    pub max_bytes: u64,
    /// Extra attempts after a timeout, connection error, 429 or 5xx (0 to 10).
    pub retries: u32,
    /// First backoff between attempts, in milliseconds (doubles each attempt; 0 to 60,000).
    pub backoff_ms: u64,
    /// Longest wait a server may ask for with `Retry-After` (on 429 or 503) before the poster is
    /// recorded as failed instead, in seconds (0 to 3600).
    pub max_retry_after_secs: u64,
    /// A failed remote poster is remembered and not requested again until this many hours have
    /// passed (the stage's output then expires, so the next `pipeline run` retries it) or
    /// `pipeline run --retry-failed` asks. 0 to 8760 (a year).
    pub retry_failed_after_hours: f64,
    /// Requests in flight at once, over all hosts (1 to 256; a knob: not part of the cache key).
    pub max_in_flight: usize,
    /// Requests in flight at once to one host (`host:port` of the poster URL; redirects count
    /// against the first host; 1 to 256). A knob: not part of the cache key.
    pub max_per_host: usize,
}

/// The largest `max_bytes` accepted: 1 GiB, far above any poster, far below memory.
pub const MAX_BYTES_LIMIT: u64 = 1 << 30;

/// Param names that only tune concurrency.
pub const KNOBS: &[&str] = &["max_in_flight", "max_per_host"];

impl Default for DownloadParams {
    fn default() -> Self {
        Self {
            timeout_secs: 20,
            max_bytes: 5_000_000,
            retries: 2,
            backoff_ms: 250,
            max_retry_after_secs: 30,
            retry_failed_after_hours: 24.0,
            max_in_flight: 16,
            max_per_host: 8,
        }
    }
}

impl DownloadParams {
    /// The checks serde cannot express; each error names its key.
    pub fn check(&self) -> Result<(), ParamError> {
        let p = self;
        check_range("timeout_secs", p.timeout_secs, 1..=3600, " seconds")?;
        check_range("max_bytes", p.max_bytes, 1..=MAX_BYTES_LIMIT, " bytes")?;
        check_range("retries", p.retries, 0..=10, "")?;
        check_range("backoff_ms", p.backoff_ms, 0..=60_000, " milliseconds")?;
        check_range(
            "max_retry_after_secs",
            p.max_retry_after_secs,
            0..=3600,
            " seconds",
        )?;
        check_range(
            "retry_failed_after_hours",
            p.retry_failed_after_hours,
            0.0..=8760.0,
            " hours",
        )?;
        check_range("max_in_flight", p.max_in_flight, 1..=256, "")?;
        check_range("max_per_host", p.max_per_host, 1..=256, "")?;
        Ok(())
    }
}
