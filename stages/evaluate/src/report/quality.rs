//! What the data stages left out, read from their `summary.json`, for the report's summary and
//! its "What was left out" section.

use std::path::Path;

use pipeline_api::{StageError, read_json};
use serde::Deserialize;
use stage_download::DownloadSummary;
use stage_filter::{DroppedMovie, FilterSummary};
use stage_ingest::IngestSummary;

/// A row someone should know was left out.
#[derive(Debug, Clone, Deserialize)]
pub struct Skip {
    /// Movie id as text.
    pub id: String,
    /// Title or source, when known.
    pub what: String,
    /// Why.
    pub reason: String,
}

/// What each data stage dropped, read from their `summary.json`.
#[derive(Debug, Clone, Default)]
pub struct DataQuality {
    /// Rows in the CSV.
    pub rows_read: usize,
    /// Encoding used for the CSV.
    pub encoding: String,
    /// (stage, reason, count).
    pub counts: Vec<(String, String, usize)>,
    /// (stage, skipped rows), at most 200 per stage.
    pub rows: Vec<(String, Vec<Skip>)>,
}

impl DataQuality {
    /// Reads the summaries of the ingest, download and filter outputs.
    pub fn load(ingest: &Path, download: &Path, filter: &Path) -> Result<Self, StageError> {
        let i: IngestSummary = read_json(&ingest.join("summary.json"))?;
        let d: DownloadSummary = read_json(&download.join("summary.json"))?;
        let f: FilterSummary = read_json(&filter.join("summary.json"))?;
        let mut counts = Vec::new();
        counts.extend(
            i.dropped
                .into_iter()
                .map(|(r, n)| ("ingest".to_string(), r, n)),
        );
        counts.extend(
            d.failed_by_reason
                .into_iter()
                .map(|(r, n)| ("download".to_string(), r, n)),
        );
        counts.extend(
            f.dropped
                .into_iter()
                .map(|(r, n)| ("filter".to_string(), r, n)),
        );
        let rows = vec![
            (
                "ingest: unusable CSV rows".to_string(),
                i.dropped_rows
                    .into_iter()
                    .map(|r| Skip {
                        id: r.id,
                        what: if r.line > 0 {
                            format!("CSV line {}", r.line)
                        } else {
                            format!("CSV row {}", r.row)
                        },
                        reason: r.reason,
                    })
                    .collect(),
            ),
            (
                "download: posters that could not be fetched".to_string(),
                d.failures
                    .into_iter()
                    .map(|r| Skip {
                        id: r.id.to_string(),
                        what: r.source,
                        reason: r.reason.unwrap_or_default(),
                    })
                    .collect(),
            ),
            (
                "filter: broken posters (downloaded, do not decode)".to_string(),
                f.broken_posters.into_iter().map(filter_skip).collect(),
            ),
            (
                "filter: other movies left out (first 50 of each reason)".to_string(),
                f.dropped_movies.into_iter().map(filter_skip).collect(),
            ),
        ];
        Ok(Self {
            rows_read: i.rows_read,
            encoding: i.encoding,
            counts,
            rows,
        })
    }
}

fn filter_skip(r: DroppedMovie) -> Skip {
    Skip {
        id: r.id.to_string(),
        what: r.title,
        reason: r.reason,
    }
}
