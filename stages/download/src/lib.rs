//! `download`: fetches every movie's poster into a content-addressed folder of the stage output.
//!
//! Sources may be `http://` or `https://` URLs (at most `max_in_flight` requests at once and
//! `max_per_host` to one host, timeouts, retries with backoff, `Retry-After`, a size cap),
//! `file://` URLs or plain paths, both resolved against the `root` directory and refused when they
//! point outside it. A poster that cannot be fetched is recorded as failed with its reason; it
//! never fails the stage. Failures are remembered and not requested again until
//! `retry_failed_after_hours` have passed: the output expires then, so the next run retries them.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};

use pipeline_api::{
    ItemCache, Kind, KindInfo, ParamError, ResultExt, RunSummary, StageContext, StageError,
    check_range, create_dir, item_key, unix_now, write_json,
};
use polars::prelude::*;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use stage_shards::{i64_column, poster, read_table, str_column, write_table};

/// The download stage kind.
pub struct Download;

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
const KNOBS: &[&str] = &["max_in_flight", "max_per_host"];

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

/// One movie's download result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fetched {
    /// Movie id.
    pub id: i64,
    /// Where the poster came from.
    pub source: String,
    /// `posters/<blake3>` when stored.
    pub file: Option<String>,
    /// Size in bytes when stored.
    pub bytes: Option<u64>,
    /// Why it failed.
    pub reason: Option<String>,
}

/// `summary.json` of download.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DownloadSummary {
    /// Movies considered.
    pub requested: usize,
    /// Posters stored.
    pub stored: usize,
    /// Distinct poster files (identical posters are stored once).
    pub distinct_files: usize,
    /// Failure reason -> count.
    pub failed_by_reason: BTreeMap<String, usize>,
    /// The first failures (up to 200) for the report.
    pub failures: Vec<Fetched>,
}

/// What the engine knows of the kind.
const INFO: KindInfo = KindInfo {
    inputs: &["movies"],
    input_kinds: &[("movies", &["ingest"])],
    files: &["root"],
    directories: &["root"],
    knob_params: KNOBS,
    remembers_failures: true,
    ..KindInfo::new(
        "download",
        // 2: failure reasons no longer contain the absolute data root.
        // 3: non-image and truncated bodies are failures; Retry-After; remembered failures.
        3,
        "fetch posters (http/https/file/path) into a content-addressed folder; failures are listed",
        pipeline_api::locked_dependencies!(),
    )
};

impl Kind for Download {
    type Params = DownloadParams;
    fn info(&self) -> &'static KindInfo {
        &INFO
    }
    fn check(p: &DownloadParams) -> Result<(), ParamError> {
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
    fn run(
        &self,
        ctx: &StageContext<'_>,
        params: DownloadParams,
    ) -> Result<RunSummary, StageError> {
        let movies_path = ctx.input("movies")?.join("movies.parquet");
        let movies = read_table(&movies_path)?;
        let ids = i64_column(&movies, "imdbId", &movies_path)?;
        let sources = str_column(&movies, "poster", &movies_path)?;
        let items: Vec<(i64, String)> = ids
            .iter()
            .zip(sources.iter())
            .map(|(id, src)| (id.unwrap_or_default(), src.unwrap_or_default().to_string()))
            .collect();
        let root = ctx.file("root")?;
        let posters = ctx.out_dir.join("posters");
        create_dir(&posters)?;
        let fetcher = Fetcher::new(&params, root)?;
        // Network-bound: one thread per request in flight, whatever the core count.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(params.max_in_flight)
            .build()
            .during("starting download threads")?;
        ctx.progress.start("download", items.len() as u64);
        let reused = AtomicUsize::new(0);
        let remembered = AtomicUsize::new(0);
        let now = unix_now();
        // Each result with, for a remote failure, when it was first seen failing.
        let results: Vec<(Fetched, Option<u64>)> = pool.install(|| {
            items
                .par_iter()
                .map(|(id, source)| {
                    let earlier_failure = if ctx.retry_failed {
                        None
                    } else {
                        remembered_failure(ctx.items, source, &params, now)
                    };
                    let mut failed_at = None;
                    let result = match reuse(ctx.items, source, &params, &posters) {
                        Some(stored) => {
                            reused.fetch_add(1, Ordering::Relaxed);
                            Ok(stored)
                        }
                        None => match earlier_failure {
                            Some(record) => {
                                remembered.fetch_add(1, Ordering::Relaxed);
                                failed_at = Some(record.at_unix);
                                Err(record.reason)
                            }
                            None => fetcher
                                .fetch(source)
                                .and_then(|bytes| {
                                    poster::sniff(&bytes)?;
                                    remember(ctx.items, source, &params, &bytes);
                                    store(&posters, &bytes)
                                })
                                .inspect_err(|reason| {
                                    if remember_failure(ctx.items, source, &params, reason, now) {
                                        failed_at = Some(now);
                                    }
                                }),
                        },
                    };
                    ctx.progress.advance(1);
                    let fetched = match result {
                        Ok((file, bytes)) => Fetched {
                            id: *id,
                            source: source.clone(),
                            file: Some(file),
                            bytes: Some(bytes),
                            reason: None,
                        },
                        Err(reason) => Fetched {
                            id: *id,
                            source: source.clone(),
                            file: None,
                            bytes: None,
                            reason: Some(reason),
                        },
                    };
                    (fetched, failed_at)
                })
                .collect()
        });
        // The output stays current until the oldest remembered failure may be retried. The
        // times stay out of the output itself, so an unchanged rerun changes nothing downstream.
        let remembered_failures = results.iter().filter(|(_, at)| at.is_some()).count();
        let retry_due = results
            .iter()
            .filter_map(|(_, at)| *at)
            .min()
            .map(|at| retry_due(at, params.retry_failed_after_hours));
        let results: Vec<Fetched> = results.into_iter().map(|(fetched, _)| fetched).collect();
        let summary = summarise(&results, &posters)?;
        write_results(&ctx.out_dir.join("downloads.parquet"), &results)?;
        write_json(&ctx.out_dir.join("summary.json"), &summary)?;
        let failed: usize = summary.failed_by_reason.values().sum();
        let (reused, remembered) = (reused.into_inner(), remembered.into_inner());
        let mut lines = vec![format!(
            "{} posters stored ({} distinct files), {failed} failed; {} fetched, {reused} reused from earlier runs",
            summary.stored,
            summary.distinct_files,
            items.len() - reused - remembered
        )];
        if remembered > 0 {
            lines.push(format!(
                "{remembered} failures remembered from earlier runs, not requested again (`pipeline run --retry-failed` retries them)"
            ));
        }
        for (reason, n) in &summary.failed_by_reason {
            lines.push(format!("{n} failed: {reason}"));
        }
        let summary = RunSummary::new(lines);
        Ok(match retry_due {
            Some(at) => summary.expiring(
                at,
                format!(
                    "{remembered_failures} remembered download failure(s); the oldest is now over `retry_failed_after_hours` ({} h) old and is retried",
                    params.retry_failed_after_hours
                ),
            ),
            None => summary,
        })
    }
}

fn summarise(results: &[Fetched], posters: &Path) -> Result<DownloadSummary, StageError> {
    let mut failed_by_reason: BTreeMap<String, usize> = BTreeMap::new();
    for r in results {
        if let Some(reason) = &r.reason {
            *failed_by_reason
                .entry(pipeline_api::reason_class(reason))
                .or_default() += 1;
        }
    }
    let distinct_files = std::fs::read_dir(posters)
        .map_err(|source| StageError::Read {
            path: posters.to_path_buf(),
            source,
        })?
        .count();
    Ok(DownloadSummary {
        requested: results.len(),
        stored: results.iter().filter(|r| r.file.is_some()).count(),
        distinct_files,
        failed_by_reason,
        failures: results
            .iter()
            .filter(|r| r.reason.is_some())
            .take(200)
            .cloned()
            .collect(),
    })
}

fn write_results(path: &Path, results: &[Fetched]) -> Result<(), StageError> {
    let mut df = DataFrame::new(
        results.len(),
        vec![
            Column::new(
                "imdbId".into(),
                results.iter().map(|r| r.id).collect::<Vec<_>>(),
            ),
            Column::new(
                "source".into(),
                results
                    .iter()
                    .map(|r| r.source.as_str())
                    .collect::<Vec<_>>(),
            ),
            Column::new(
                "file".into(),
                results
                    .iter()
                    .map(|r| r.file.as_deref())
                    .collect::<Vec<_>>(),
            ),
            Column::new(
                "bytes".into(),
                results.iter().map(|r| r.bytes).collect::<Vec<_>>(),
            ),
            Column::new(
                "reason".into(),
                results
                    .iter()
                    .map(|r| r.reason.as_deref())
                    .collect::<Vec<_>>(),
            ),
        ],
    )
    .during("building the downloads table")?;
    write_table(path, &mut df)
}

/// Item key of a remote source: what it resolved to depends on the URL and the size cap.
fn source_key(source: &str, params: &DownloadParams) -> String {
    item_key(&[
        b"download-source-v1",
        source.as_bytes(),
        &params.max_bytes.to_le_bytes(),
    ])
}

/// Whether the source is remote (local files are re-read every run: cheap, and always current).
fn is_remote(source: &str) -> bool {
    let lower = source.trim().to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

/// A remote poster fetched by an earlier run, linked into `posters` after checking its hash.
fn reuse(
    items: &dyn ItemCache,
    source: &str,
    params: &DownloadParams,
    posters: &Path,
) -> Option<(String, u64)> {
    if !is_remote(source) {
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
fn remember(items: &dyn ItemCache, source: &str, params: &DownloadParams, bytes: &[u8]) {
    if !is_remote(source) {
        return;
    }
    let hash = blake3::hash(bytes).to_hex().to_string();
    if items.put(&hash, bytes).is_ok() {
        let _ = items.put(&source_key(source, params), hash.as_bytes());
    }
}

/// A remembered failure of a remote poster: why, and when.
#[derive(Debug, Serialize, Deserialize)]
struct FailureRecord {
    reason: String,
    at_unix: u64,
}

fn failure_key(source: &str, params: &DownloadParams) -> String {
    item_key(&[
        b"download-failure-v1",
        source.as_bytes(),
        &params.max_bytes.to_le_bytes(),
    ])
}

/// Unix time from which a failure seen at `at_unix` may be retried.
fn retry_due(at_unix: u64, hours: f64) -> u64 {
    // `as` saturates: an absurd number of hours means never, not a wrap-around.
    at_unix.saturating_add((hours * 3600.0).ceil() as u64)
}

/// Why the remote `source` failed in an earlier run, if that was recent enough to trust.
fn remembered_failure(
    items: &dyn ItemCache,
    source: &str,
    params: &DownloadParams,
    now: u64,
) -> Option<FailureRecord> {
    if !is_remote(source) {
        return None;
    }
    let record: FailureRecord =
        serde_json::from_slice(&items.get(&failure_key(source, params))?).ok()?;
    (now < retry_due(record.at_unix, params.retry_failed_after_hours)).then_some(record)
}

/// Remembers that a remote poster failed (best effort: forgetting only costs a request);
/// whether it is remembered.
fn remember_failure(
    items: &dyn ItemCache,
    source: &str,
    params: &DownloadParams,
    reason: &str,
    now: u64,
) -> bool {
    if !is_remote(source) {
        return false;
    }
    let record = FailureRecord {
        reason: reason.to_string(),
        at_unix: now,
    };
    serde_json::to_vec(&record)
        .is_ok_and(|bytes| items.replace(&failure_key(source, params), &bytes).is_ok())
}

/// Stores poster bytes under their blake3; identical posters share one file.
fn store(dir: &Path, bytes: &[u8]) -> Result<(String, u64), String> {
    let name = blake3::hash(bytes).to_hex().to_string();
    let path = dir.join(&name);
    if !path.exists() {
        // Write beside, then rename: a reader never sees half a poster under its final name.
        let tmp = dir.join(format!(".{name}.{:?}", std::thread::current().id()));
        std::fs::write(&tmp, bytes).map_err(|e| format!("cannot store poster: {e}"))?;
        std::fs::rename(&tmp, &path).map_err(|e| format!("cannot store poster: {e}"))?;
    }
    Ok((format!("posters/{name}"), bytes.len() as u64))
}

/// Fetches one source with the stage's limits.
pub struct Fetcher {
    agent: ureq::Agent,
    root: PathBuf,
    max_bytes: u64,
    retries: u32,
    backoff: Duration,
    max_retry_after: Duration,
    hosts: HostGate,
}

/// At most `limit` requests in flight to each host; a request to a busy host waits its turn.
struct HostGate {
    limit: usize,
    in_flight: Mutex<HashMap<String, usize>>,
    freed: Condvar,
}

/// A request slot for one host, given back on drop.
struct HostSlot<'a> {
    gate: &'a HostGate,
    host: String,
}

impl HostGate {
    fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            in_flight: Mutex::new(HashMap::new()),
            freed: Condvar::new(),
        }
    }

    fn enter(&self, host: &str) -> HostSlot<'_> {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        while in_flight.get(host).copied().unwrap_or(0) >= self.limit {
            in_flight = self
                .freed
                .wait(in_flight)
                .unwrap_or_else(|e| e.into_inner());
        }
        *in_flight.entry(host.to_string()).or_default() += 1;
        HostSlot {
            gate: self,
            host: host.to_string(),
        }
    }
}

impl Drop for HostSlot<'_> {
    fn drop(&mut self) {
        let mut in_flight = self
            .gate
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = in_flight.get_mut(&self.host) {
            *n -= 1;
            if *n == 0 {
                in_flight.remove(&self.host);
            }
        }
        drop(in_flight);
        self.gate.freed.notify_all();
    }
}

/// The `host:port` part of an http(s) URL, lowercased, without user info (`a@b` -> `b`).
fn host_of(source: &str) -> String {
    // The `url` crate's parser (WHATWG): userinfo, case, IDNA and default ports are handled as
    // browsers do, so `http://a.com` and `http://A.com:80/x` share one per-host limit.
    match url::Url::parse(source) {
        Ok(url) => match (url.host_str(), url.port_or_known_default()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_string(),
            (None, _) => source.to_string(),
        },
        Err(_) => source.to_string(),
    }
}

impl Fetcher {
    /// A fetcher whose local paths resolve against `root`.
    pub fn new(params: &DownloadParams, root: &Path) -> Result<Self, StageError> {
        let root = root.canonicalize().map_err(|source| StageError::Read {
            path: root.to_path_buf(),
            source,
        })?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(params.timeout_secs.max(1))))
            .http_status_as_error(false)
            // Redirects are followed by `get`, which checks each `Location` first.
            .max_redirects(0)
            .max_redirects_will_error(false)
            .user_agent(concat!("pipeline/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Ok(Self {
            agent,
            root,
            max_bytes: params.max_bytes,
            retries: params.retries,
            backoff: Duration::from_millis(params.backoff_ms),
            max_retry_after: Duration::from_secs(params.max_retry_after_secs),
            hosts: HostGate::new(params.max_per_host),
        })
    }

    /// The poster bytes, or why they could not be had.
    pub fn fetch(&self, source: &str) -> Result<Vec<u8>, String> {
        let source = source.trim();
        let lower = source.to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            self.fetch_http(source)
        } else if let Some(path) = source.strip_prefix("file://") {
            self.read_local(path)
        } else if lower.contains("://") {
            Err(format!(
                "unsupported scheme: `{}` (only http, https, file and paths)",
                source.split("://").next().unwrap_or("")
            ))
        } else {
            self.read_local(source)
        }
    }

    fn read_local(&self, path: &str) -> Result<Vec<u8>, String> {
        let candidate = Path::new(path);
        let full = if candidate.is_absolute() {
            candidate.to_path_buf()
        } else {
            self.root.join(candidate)
        };
        // Refuse `..` escapes before touching the file system, then symlink escapes after.
        if !lexically_normal(&full).starts_with(&self.root) {
            // No absolute path in the reason: the output must not depend on where the project lives.
            return Err(format!(
                "refused: `{path}` is outside the data root (the stage's `files.root`)"
            ));
        }
        let resolved = full
            .canonicalize()
            .map_err(|e| format!("file not found: `{path}` ({e})"))?;
        if !resolved.starts_with(&self.root) {
            return Err(format!(
                "refused: `{path}` links outside the data root (the stage's `files.root`)"
            ));
        }
        read_capped(&resolved, self.max_bytes)
    }

    fn fetch_http(&self, url: &str) -> Result<Vec<u8>, String> {
        let mut last = String::new();
        // A server's `Retry-After` replaces the backoff before the next attempt.
        let mut asked_wait: Option<Duration> = None;
        let host = host_of(url);
        for attempt in 0..=self.retries {
            if attempt > 0 {
                let backoff = self
                    .backoff
                    .saturating_mul(2u32.saturating_pow(attempt - 1));
                std::thread::sleep(asked_wait.take().unwrap_or(backoff).max(backoff));
            }
            // Held for the request and its body, not across the waits between attempts.
            let _slot = self.hosts.enter(&host);
            // An outer error (a refused redirect, a loop) is final: not retried.
            match self.get(url)? {
                Ok(mut response) => {
                    let status = response.status();
                    if matches!(status.as_u16(), 429 | 503)
                        && let Some(wait) = retry_after(&response)
                    {
                        if wait > self.max_retry_after {
                            return Err(format!(
                                "HTTP {}: the server asked to retry after {} s, over the {} s limit (`max_retry_after_secs`)",
                                status.as_u16(),
                                wait.as_secs(),
                                self.max_retry_after.as_secs()
                            ));
                        }
                        asked_wait = Some(wait);
                    }
                    if status.is_success() {
                        let declared = response
                            .headers()
                            .get("content-length")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.parse::<u64>().ok());
                        if declared.is_some_and(|n| n > self.max_bytes) {
                            return Err(format!("too large: over {} bytes", self.max_bytes));
                        }
                        match response
                            .body_mut()
                            .with_config()
                            .limit(self.max_bytes)
                            .read_to_vec()
                        {
                            Ok(bytes) => return Ok(bytes),
                            Err(ureq::Error::BodyExceedsLimit(_)) => {
                                return Err(format!("too large: over {} bytes", self.max_bytes));
                            }
                            Err(ureq::Error::Timeout(_)) => {
                                last = "timed out while reading the body".into();
                            }
                            Err(err) => last = format!("transfer failed: {err}"),
                        }
                    } else if status.as_u16() == 429 || status.is_server_error() {
                        last = format!("HTTP {}", status.as_u16());
                    } else {
                        return Err(format!("HTTP {}", status.as_u16()));
                    }
                }
                Err(ureq::Error::Timeout(_)) => last = "timed out".to_string(),
                Err(err) => last = format!("transfer failed: {err}"),
            }
        }
        Err(format!("{last} (after {} attempts)", self.retries + 1))
    }
}

/// Reads a local poster of at most `max_bytes`: a regular file only (a FIFO or a device would
/// block or never end, and the request timeout does not cover local reads).
pub fn read_capped(path: &Path, max_bytes: u64) -> Result<Vec<u8>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("unreadable: {e}"))?;
    if let Some(kind) = pipeline_api::odd_file_type(&meta) {
        return Err(format!("not a regular file: it is {kind}"));
    }
    if meta.len() > max_bytes {
        return Err(format!("too large: over {max_bytes} bytes"));
    }
    let file = std::fs::File::open(path).map_err(|e| format!("unreadable: {e}"))?;
    let mut bytes = Vec::new();
    file.take(max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("unreadable: {e}"))?;
    if bytes.len() as u64 > max_bytes {
        return Err(format!("too large: over {max_bytes} bytes"));
    }
    Ok(bytes)
}

/// Redirects followed before a poster fails as a loop.
const MAX_REDIRECTS: usize = 5;

impl Fetcher {
    /// GETs `url`, following up to [`MAX_REDIRECTS`] redirects itself: ureq would read a
    /// `Location` in another scheme (`file:///etc/passwd`) as a path on the same host. The inner
    /// result is the last response or ureq's error (retried as such); the outer error is final.
    #[allow(clippy::result_large_err)]
    fn get(
        &self,
        url: &str,
    ) -> Result<Result<ureq::http::Response<ureq::Body>, ureq::Error>, String> {
        let mut current = url.to_string();
        for _ in 0..=MAX_REDIRECTS {
            let response = match self.agent.get(&current).call() {
                Ok(response) => response,
                Err(err) => return Ok(Err(err)),
            };
            let location = response
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok());
            match location {
                Some(location) if response.status().is_redirection() => {
                    current = redirect_target(&current, location)?;
                }
                _ => return Ok(Ok(response)),
            }
        }
        Err(format!(
            "too many redirects: a loop, or a chain over {MAX_REDIRECTS} hops (not retried)"
        ))
    }
}

/// Where a redirect from `base` to `location` leads: an http(s) URL, or why it is refused.
fn redirect_target(base: &str, location: &str) -> Result<String, String> {
    let location = location.trim();
    let scheme = location
        .split_once(':')
        .map(|(scheme, _)| scheme)
        .filter(|s| {
            s.starts_with(|c: char| c.is_ascii_alphabetic())
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        });
    if let Some(scheme) = scheme {
        let lower = scheme.to_ascii_lowercase();
        return if lower == "http" || lower == "https" {
            Ok(location.to_string())
        } else {
            Err(format!(
                "refused: redirected to a `{lower}:` URL; only http and https redirects are followed (not retried)"
            ))
        };
    }
    let uri: ureq::http::Uri = base
        .parse()
        .map_err(|_| format!("redirected from an unreadable URL `{base}`"))?;
    let scheme = uri.scheme_str().unwrap_or("http");
    let authority = uri.authority().map_or("", |a| a.as_str());
    if let Some(network) = location.strip_prefix("//") {
        Ok(format!("{scheme}://{network}"))
    } else if location.starts_with('/') {
        Ok(format!("{scheme}://{authority}{location}"))
    } else {
        let dir = uri.path().rsplit_once('/').map_or("", |(dir, _)| dir);
        Ok(format!("{scheme}://{authority}{dir}/{location}"))
    }
}

/// The wait a `Retry-After` header asks for, in seconds (HTTP dates are not honoured: the backoff
/// applies).
fn retry_after<B>(response: &ureq::http::Response<B>) -> Option<Duration> {
    let value = response.headers().get("retry-after")?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// `path` with `.` and `..` components resolved without the file system.
fn lexically_normal(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_resolve_against_the_url_and_other_schemes_are_refused() {
        let base = "http://127.0.0.1:8080/posters/a.jpg?x=1";
        for (location, expected) in [
            ("https://cdn.example/b.jpg", "https://cdn.example/b.jpg"),
            ("/other/b.jpg", "http://127.0.0.1:8080/other/b.jpg"),
            ("b.jpg", "http://127.0.0.1:8080/posters/b.jpg"),
            ("//cdn.example/c.jpg", "http://cdn.example/c.jpg"),
        ] {
            assert_eq!(redirect_target(base, location).unwrap(), expected);
        }
        for location in [
            "file:///etc/passwd",
            "FTP://x/y",
            "data:image/png;base64,AA",
        ] {
            let err = redirect_target(base, location).unwrap_err();
            assert!(err.starts_with("refused: redirected to a `"), "{err}");
        }
    }

    #[test]
    fn hosts_are_the_authority_of_the_url() {
        assert_eq!(
            host_of("http://User:pw@Images.Example.com:8080/a/b.jpg?x=1"),
            "images.example.com:8080"
        );
        assert_eq!(host_of("https://example.org?q=/x"), "example.org:443");
        assert_eq!(host_of("https://example.org#frag"), "example.org:443");
        assert_eq!(
            host_of("http://example.org/a"),
            host_of("HTTP://Example.ORG:80/b"),
            "the default port is the same host"
        );
        assert_eq!(host_of("http://[::1]:8080/p.jpg"), "[::1]:8080");
        assert_eq!(host_of("not a url"), "not a url");
    }

    #[test]
    fn a_host_gate_admits_the_limit_and_then_waits() {
        let gate = HostGate::new(2);
        let a1 = gate.enter("a");
        let _a2 = gate.enter("a");
        let _b = gate.enter("b"); // another host is not held up
        let admitted = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let _a3 = gate.enter("a");
                admitted.fetch_add(1, Ordering::SeqCst);
            });
            std::thread::sleep(Duration::from_millis(100));
            assert_eq!(admitted.load(Ordering::SeqCst), 0, "a third `a` waits");
            drop(a1);
        });
        assert_eq!(
            admitted.load(Ordering::SeqCst),
            1,
            "and enters once a slot is free"
        );
    }

    #[test]
    fn failures_are_due_after_the_configured_hours() {
        assert_eq!(retry_due(1000, 1.0), 4600);
        assert_eq!(retry_due(1000, 0.0), 1000);
        assert_eq!(retry_due(1000, 0.0001), 1001, "rounded up to whole seconds");
        assert_eq!(retry_due(1000, 1e30), u64::MAX, "never, not a wrap-around");
    }

    #[test]
    fn local_paths_outside_the_root_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("a.jpg"), b"poster").unwrap();
        std::fs::write(dir.path().join("secret"), b"x").unwrap();
        let fetcher = Fetcher::new(&DownloadParams::default(), &root).unwrap();
        assert_eq!(fetcher.fetch("a.jpg").unwrap(), b"poster");
        let file_url = format!("file://{}", root.join("a.jpg").display());
        assert_eq!(fetcher.fetch(&file_url).unwrap(), b"poster");
        assert!(
            fetcher
                .fetch("../secret")
                .unwrap_err()
                .starts_with("refused")
        );
        let refused = fetcher.fetch("../../etc/passwd").unwrap_err();
        assert!(refused.starts_with("refused"), "{refused}");
        assert!(
            !refused.contains(&dir.path().display().to_string()),
            "the reason is part of the output, so it must not name where the project lives: {refused}"
        );
        assert!(
            fetcher
                .fetch("ftp://x/y")
                .unwrap_err()
                .starts_with("unsupported scheme")
        );
        assert!(
            fetcher
                .fetch("missing.jpg")
                .unwrap_err()
                .starts_with("file not found")
        );
    }

    #[test]
    fn oversized_local_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("big"), vec![0u8; 100]).unwrap();
        let params = DownloadParams {
            max_bytes: 10,
            ..DownloadParams::default()
        };
        let fetcher = Fetcher::new(&params, dir.path()).unwrap();
        assert!(fetcher.fetch("big").unwrap_err().starts_with("too large"));
    }
}
