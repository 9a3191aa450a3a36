//! What `download` says of a run: each movie's result, `summary.json`, and what the report shows.

use std::collections::BTreeMap;
use std::path::Path;

use pipeline_api::StageError;
use serde::{Deserialize, Serialize};
use stage_shards::left_out::{LeftOut, LeftOutList, LeftOutRow};
use stage_shards::movies::DownloadOutcome;

use crate::FetchError;

/// One movie's download result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fetched {
    /// What `downloads.parquet` holds of it.
    #[serde(flatten)]
    pub outcome: DownloadOutcome,
    /// What it is counted by ([`FetchError::class`]); not written out.
    #[serde(skip)]
    pub class: Option<String>,
}

impl Fetched {
    /// Movie `id`'s result from `source`: the stored file and its size, or why not.
    pub fn new(id: i64, source: &str, result: Result<(String, u64), FetchError>) -> Self {
        let (file, bytes, reason, class) = match result {
            Ok((file, bytes)) => (Some(file), Some(bytes), None, None),
            Err(error) => (None, None, Some(error.to_string()), Some(error.class())),
        };
        let outcome = DownloadOutcome {
            id,
            source: source.to_string(),
            file,
            bytes,
            reason,
        };
        Fetched { outcome, class }
    }
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

impl DownloadSummary {
    /// Counts `results`, whose stored files are in `posters`.
    pub fn of(results: &[Fetched], posters: &Path) -> Result<Self, StageError> {
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
            stored: results.iter().filter(|r| r.outcome.file.is_some()).count(),
            distinct_files,
            failed_by_reason,
            failures: results
                .iter()
                .filter(|r| r.outcome.reason.is_some())
                .take(200)
                .cloned()
                .collect(),
        })
    }

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
                    id: f.outcome.id.to_string(),
                    what: f.outcome.source.clone(),
                    reason: f.outcome.reason.clone().unwrap_or_default(),
                }),
            )],
        }
    }
}
