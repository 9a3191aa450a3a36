//! `summary.json` of `ingest` (what was read, kept and dropped, by reason) and what the report
//! shows of it (`left-out.json`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use stage_shards::left_out::{LeftOut, LeftOutList, LeftOutRow};

use crate::genres;

/// A row that was dropped.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DroppedRow {
    /// 1-based data record (the header is record 0).
    pub row: usize,
    /// 1-based line in the file where the record starts (quoted newlines make it differ from `row`).
    pub line: u64,
    /// The raw id text.
    pub id: String,
    /// Why.
    pub reason: String,
}

impl IngestSummary {
    /// Nothing read yet, from text decoded as `encoding`.
    pub fn new(encoding: &str) -> Self {
        IngestSummary {
            encoding: encoding.to_string(),
            rows_read: 0,
            rows_kept: 0,
            dropped: BTreeMap::new(),
            dropped_rows: Vec::new(),
            without_year: 0,
            without_score: 0,
            merged_spellings: Vec::new(),
        }
    }

    /// Counts a dropped row by its reason's class; the first 200 are listed.
    pub fn drop_row(&mut self, row: usize, line: u64, id: &str, reason: String) {
        *self
            .dropped
            .entry(pipeline_api::reason_class(&reason))
            .or_default() += 1;
        if self.dropped_rows.len() < 200 {
            self.dropped_rows.push(DroppedRow {
                row,
                line,
                id: id.to_string(),
                reason,
            });
        }
    }

    /// What the report shows of it.
    pub fn left_out(&self) -> LeftOut {
        LeftOut {
            stage: "ingest".into(),
            considered: self.rows_read,
            considered_what: format!("CSV rows read ({})", self.encoding),
            counts: self.dropped.clone(),
            lists: vec![LeftOutList::new(
                "ingest: unusable CSV rows",
                self.dropped_rows.iter().map(|r| LeftOutRow {
                    id: r.id.clone(),
                    what: if r.line > 0 {
                        format!("CSV line {}", r.line)
                    } else {
                        format!("CSV row {}", r.row)
                    },
                    reason: r.reason.clone(),
                }),
            )],
        }
    }
}

/// `summary.json` of ingest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IngestSummary {
    /// Encoding actually used.
    pub encoding: String,
    /// Data rows in the file.
    pub rows_read: usize,
    /// Rows written to `movies.parquet`.
    pub rows_kept: usize,
    /// Reason -> count.
    pub dropped: BTreeMap<String, usize>,
    /// The first dropped rows (up to 200), for the report.
    pub dropped_rows: Vec<DroppedRow>,
    /// Rows kept without a year in the title.
    pub without_year: usize,
    /// Rows kept without a score.
    pub without_score: usize,
    /// Genre names that differed only in case, each merged into its most frequent spelling.
    #[serde(default)]
    pub merged_spellings: Vec<genres::MergedSpellings>,
}
