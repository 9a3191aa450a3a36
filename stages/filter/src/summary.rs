//! `summary.json` of `filter` (what was considered, kept and dropped, by reason) and what the
//! report shows of it (`left-out.json`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use stage_shards::left_out::{LeftOut, LeftOutList, LeftOutRow};

/// Dropped movies listed per reason (all are counted).
pub const EXAMPLES_PER_REASON: usize = 50;

/// A movie that was dropped.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DroppedMovie {
    /// Movie id.
    pub id: i64,
    /// Title as in the CSV.
    pub title: String,
    /// Why.
    pub reason: String,
}

impl FilterSummary {
    /// What the report shows of it.
    pub fn left_out(&self) -> LeftOut {
        let rows = |movies: &[DroppedMovie]| -> Vec<LeftOutRow> {
            movies
                .iter()
                .map(|m| LeftOutRow {
                    id: m.id.to_string(),
                    what: m.title.clone(),
                    reason: m.reason.clone(),
                })
                .collect()
        };
        LeftOut {
            stage: "filter".into(),
            considered: self.considered,
            considered_what: "movies considered".into(),
            counts: self.dropped.clone(),
            lists: vec![
                LeftOutList::new(
                    "filter: broken posters (downloaded, do not decode)",
                    rows(&self.broken_posters),
                ),
                LeftOutList::new(
                    "filter: other movies left out (first 50 of each reason)",
                    rows(&self.dropped_movies),
                ),
            ],
        }
    }
}

/// `summary.json` of filter.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FilterSummary {
    /// Movies considered.
    pub considered: usize,
    /// Movies kept.
    pub kept: usize,
    /// Reason -> count.
    pub dropped: BTreeMap<String, usize>,
    /// Posters that were downloaded but do not decode (every one of them).
    pub broken_posters: Vec<DroppedMovie>,
    /// Other dropped movies: the first [`EXAMPLES_PER_REASON`] of each reason.
    pub dropped_movies: Vec<DroppedMovie>,
}

impl FilterSummary {
    /// Counts a dropped movie by its reason's class (the text before any `:`) and lists it: every
    /// broken poster, and the first [`EXAMPLES_PER_REASON`] of each other reason.
    pub fn drop_movie(&mut self, id: i64, title: &str, reason: String) {
        let class = pipeline_api::reason_class(&reason);
        *self.dropped.entry(class.clone()).or_default() += 1;
        let record = DroppedMovie {
            id,
            title: title.to_string(),
            reason,
        };
        if class == "broken poster" {
            self.broken_posters.push(record);
        } else if self.dropped[&class] <= EXAMPLES_PER_REASON {
            self.dropped_movies.push(record);
        }
    }
}
