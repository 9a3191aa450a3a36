//! `download`: fetches every movie's poster into a content-addressed folder of the stage output.
//!
//! Sources may be `http://` or `https://` URLs (at most `max_in_flight` requests at once and
//! `max_per_host` to one host, timeouts, retries with backoff, `Retry-After`, a size cap),
//! `file://` URLs or plain paths, both resolved against the `root` directory and refused when they
//! point outside it. A poster that cannot be fetched is recorded as failed with its reason; it
//! never fails the stage. Failures are remembered and not requested again until
//! `retry_failed_after_hours` have passed: the output expires then, so the next run retries them.
//!
//! What lives where: this file holds the stage (params in `params`) and its summary; `source`
//! reads a poster source (shared with `predict`), `fetcher` fetches one with the limits,
//! `fetch_error` says why one failed (its `class()` is what failures are counted by), and
//! `memory` is what the stage keeps per poster across runs.

mod fetch_error;
mod fetcher;
mod memory;
mod params;
mod source;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use pipeline_api::{
    Kind, KindInfo, ParamError, ResultExt, RunSummary, StageContext, StageError, create_dir,
    unix_now, write_json,
};
use polars::prelude::*;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use stage_shards::left_out::{LeftOut, LeftOutList, LeftOutRow};
use stage_shards::{i64_column, poster, read_table, str_column, write_table};

pub use fetch_error::FetchError;
pub use fetcher::{Fetcher, read_capped};
pub use params::{DownloadParams, MAX_BYTES_LIMIT};
pub use source::Source;

/// The download stage kind.
pub struct Download;

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
    /// What it is counted by ([`FetchError::class`]); not written out.
    #[serde(skip)]
    pub class: Option<String>,
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
    knob_params: params::KNOBS,
    remembers_failures: true,
    ..KindInfo::new(
        "download",
        // 2: failure reasons no longer contain the absolute data root.
        // 3: non-image and truncated bodies are failures; Retry-After; remembered failures.
        // 4: failures counted by kind (`HTTP 503 (after 3 attempts)` counts as `HTTP 503`);
        // `left-out.json`, the shape the report reads.
        4,
        "fetch posters (http/https/file/path) into a content-addressed folder; failures are listed",
        pipeline_api::locked_dependencies!(),
    )
};

impl Kind for Download {
    type Params = DownloadParams;
    fn info(&self) -> &'static KindInfo {
        &INFO
    }
    fn check(params: &DownloadParams) -> Result<(), ParamError> {
        params.check()
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
                        memory::remembered_failure(ctx.items, source, &params, now)
                    };
                    let mut failed_at = None;
                    let result = match memory::reuse(ctx.items, source, &params, &posters) {
                        Some(stored) => {
                            reused.fetch_add(1, Ordering::Relaxed);
                            Ok(stored)
                        }
                        None => match earlier_failure {
                            Some(record) => {
                                remembered.fetch_add(1, Ordering::Relaxed);
                                failed_at = Some(record.at_unix);
                                Err(record.error)
                            }
                            None => fetcher
                                .fetch(Source::parse(source))
                                .and_then(|bytes| {
                                    poster::sniff(&bytes).map_err(FetchError::NotAnImage)?;
                                    memory::remember(ctx.items, source, &params, &bytes);
                                    memory::store(&posters, &bytes)
                                })
                                .inspect_err(|error| {
                                    if memory::remember_failure(
                                        ctx.items, source, &params, error, now,
                                    ) {
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
                            class: None,
                        },
                        Err(error) => Fetched {
                            id: *id,
                            source: source.clone(),
                            file: None,
                            bytes: None,
                            reason: Some(error.to_string()),
                            class: Some(error.class()),
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
            .map(|at| memory::retry_due(at, params.retry_failed_after_hours));
        let results: Vec<Fetched> = results.into_iter().map(|(fetched, _)| fetched).collect();
        let summary = summarise(&results, &posters)?;
        write_results(&ctx.out_dir.join("downloads.parquet"), &results)?;
        write_json(&ctx.out_dir.join("summary.json"), &summary)?;
        summary.left_out().save(ctx.out_dir)?;
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

impl DownloadSummary {
    /// What the report shows of it.
    pub fn left_out(&self) -> LeftOut {
        LeftOut {
            stage: "download".into(),
            considered: self.requested,
            considered_what: "posters requested".into(),
            counts: self.failed_by_reason.clone(),
            lists: vec![LeftOutList::new(
                "download: posters that could not be fetched",
                self.failures.iter().map(|f| LeftOutRow {
                    id: f.id.to_string(),
                    what: f.source.clone(),
                    reason: f.reason.clone().unwrap_or_default(),
                }),
            )],
        }
    }
}

fn summarise(results: &[Fetched], posters: &Path) -> Result<DownloadSummary, StageError> {
    let mut failed_by_reason: BTreeMap<String, usize> = BTreeMap::new();
    for r in results {
        if let Some(class) = &r.class {
            *failed_by_reason.entry(class.clone()).or_default() += 1;
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
