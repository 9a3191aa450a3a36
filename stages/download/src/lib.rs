//! `download`: fetches every movie's poster into a content-addressed folder of the stage output.
//!
//! Sources may be `http://` or `https://` URLs (at most `max_in_flight` requests at once and
//! `max_per_host` to one host, timeouts, retries with backoff, `Retry-After`, a size cap),
//! `file://` URLs or plain paths, both resolved against the `root` directory and refused when they
//! point outside it. A poster that cannot be fetched is recorded as failed with its reason; it
//! never fails the stage. Failures are remembered and not requested again until
//! `retry_failed_after_hours` have passed: the output expires then, so the next run retries them.
//!
//! What lives where: this file holds the stage, run in named steps; `params` its params,
//! `summary` its `summary.json` and what the report shows of it; `source` reads a poster source
//! (shared with `predict`), `fetcher` fetches one with the limits (`host_gate` the per-host
//! one), `fetch_error` says why one failed (its `class()` is what failures are counted by), and
//! `memory` is what the stage keeps per poster across runs.

mod fetch_error;
mod fetcher;
mod host_gate;
mod memory;
mod params;
mod source;
mod summary;

use std::path::Path;

use pipeline_api::{
    Kind, KindInfo, ParamError, ResultExt, RunSummary, StageContext, StageError, create_dir,
    unix_now, write_json,
};
use rayon::prelude::*;
use stage_shards::movies::{
    DOWNLOADS_FILE, DownloadOutcome, MOVIES_FILE, read_movies, write_downloads,
};
use stage_shards::poster;

pub use fetch_error::FetchError;
pub use fetcher::{Fetcher, read_capped};
pub use params::{DownloadParams, MAX_BYTES_LIMIT};
pub use source::Source;
pub use summary::{DownloadSummary, Fetched};

/// The download stage kind.
pub struct Download;

impl Kind for Download {
    type Params = DownloadParams;
    const INFO: KindInfo = KindInfo {
        inputs: &["movies"],
        input_kinds: &[("movies", &["ingest"])],
        files: &["root"],
        directories: &["root"],
        knob_params: params::KNOBS,
        remembers_failures: true,
        shardable: true,
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
    fn check(params: &DownloadParams) -> Result<(), ParamError> {
        params.check()
    }
    fn run(
        &self,
        ctx: &StageContext<'_>,
        params: DownloadParams,
    ) -> Result<RunSummary, StageError> {
        let movies = read_movies(&ctx.input("movies")?.join(MOVIES_FILE))?;
        // Run as one shard of a fanned-out stage, only the posters whose source it owns.
        let sources: Vec<(i64, String)> = movies
            .into_iter()
            .filter(|m| pipeline_api::owned(ctx.shard, &m.poster))
            .map(|m| (m.id, m.poster))
            .collect();
        let posters = ctx.out_dir.join("posters");
        create_dir(&posters)?;
        let fetching = fetch_all(ctx, &params, &posters, &sources)?;
        // The output stays current until the oldest remembered failure may be retried. The
        // times stay out of the output itself, so an unchanged rerun changes nothing downstream.
        let remembered_failures = fetching.failed_at().count();
        let retry_due = fetching
            .failed_at()
            .min()
            .map(|at| memory::retry_due(at, params.retry_failed_after_hours));
        let summary = DownloadSummary::of(&fetching.results, &posters)?;
        let outcomes: Vec<DownloadOutcome> =
            fetching.results.iter().map(|f| f.outcome.clone()).collect();
        write_downloads(&ctx.out_dir.join(DOWNLOADS_FILE), &outcomes)?;
        write_json(&ctx.out_dir.join("summary.json"), &summary)?;
        summary.left_out().save(ctx.out_dir)?;
        let summary = RunSummary::new(report(&summary, &fetching));
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

/// Every poster's result, and how each came about.
struct Fetching {
    results: Vec<Fetched>,
    /// Per result.
    came: Vec<Came>,
}

impl Fetching {
    /// When each remote failure among the results was first seen.
    fn failed_at(&self) -> impl Iterator<Item = u64> + '_ {
        self.came.iter().filter_map(Came::failed_at)
    }

    /// Results stored by an earlier run and still current.
    fn reused(&self) -> usize {
        self.came
            .iter()
            .filter(|c| matches!(c, Came::Reused))
            .count()
    }

    /// Failures of earlier runs, not requested again.
    fn remembered(&self) -> usize {
        self.came
            .iter()
            .filter(|c| matches!(c, Came::Remembered(_)))
            .count()
    }
}

/// Fetches every `(movie, source)`, `max_in_flight` at a time.
fn fetch_all(
    ctx: &StageContext<'_>,
    params: &DownloadParams,
    posters: &Path,
    sources: &[(i64, String)],
) -> Result<Fetching, StageError> {
    let fetcher = Fetcher::new(params, ctx.file("root")?)?;
    // Network-bound: one thread per request in flight, whatever the core count.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(params.max_in_flight)
        .build()
        .during("starting download threads")?;
    ctx.progress.start("download", sources.len() as u64);
    let now = unix_now();
    let (results, came) = pool.install(|| {
        sources
            .par_iter()
            .map(|(id, source)| {
                let (result, came) = fetch_one(ctx, params, &fetcher, posters, source, now);
                ctx.progress.advance(1);
                (Fetched::new(*id, source, result), came)
            })
            .unzip()
    });
    Ok(Fetching { results, came })
}

/// How a poster's result came about.
enum Came {
    /// Stored by an earlier run.
    Reused,
    /// A failure of an earlier run (first seen at the time given), not requested again.
    Remembered(u64),
    /// Requested now; a remembered failure carries the time.
    Fetched(Option<u64>),
}

impl Came {
    fn failed_at(&self) -> Option<u64> {
        match self {
            Came::Reused => None,
            Came::Remembered(at) => Some(*at),
            Came::Fetched(at) => *at,
        }
    }
}

/// One poster: reused when an earlier run stored it, a remembered failure while it is not yet
/// due again, fetched otherwise (and remembered either way).
fn fetch_one(
    ctx: &StageContext<'_>,
    params: &DownloadParams,
    fetcher: &Fetcher,
    posters: &Path,
    source: &str,
    now: u64,
) -> (Result<(String, u64), FetchError>, Came) {
    if let Some(stored) = memory::reuse(ctx.items, source, params, posters) {
        return (Ok(stored), Came::Reused);
    }
    if !ctx.retry_failed
        && let Some(record) = memory::remembered_failure(ctx.items, source, params, now)
    {
        return (Err(record.error), Came::Remembered(record.at_unix));
    }
    let result = fetcher.fetch(Source::parse(source)).and_then(|bytes| {
        poster::sniff(&bytes).map_err(FetchError::NotAnImage)?;
        memory::remember(ctx.items, source, params, &bytes);
        memory::store(posters, &bytes)
    });
    let failed_at = match &result {
        Err(error) if memory::remember_failure(ctx.items, source, params, error, now) => Some(now),
        _ => None,
    };
    (result, Came::Fetched(failed_at))
}

/// The lines the console shows.
fn report(summary: &DownloadSummary, fetching: &Fetching) -> Vec<String> {
    let failed: usize = summary.failed_by_reason.values().sum();
    let (reused, remembered) = (fetching.reused(), fetching.remembered());
    let mut lines = vec![format!(
        "{} posters stored ({} distinct files), {failed} failed; {} fetched, {reused} reused from earlier runs",
        summary.stored,
        summary.distinct_files,
        fetching.results.len() - reused - remembered
    )];
    if remembered > 0 {
        lines.push(format!(
            "{remembered} failures remembered from earlier runs, not requested again (`pipeline run --retry-failed` retries them)"
        ));
    }
    for (reason, n) in &summary.failed_by_reason {
        lines.push(format!("{n} failed: {reason}"));
    }
    lines
}
