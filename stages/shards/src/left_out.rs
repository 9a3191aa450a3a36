//! `left-out.json`: what a data stage left out, in one shape that `ingest`, `download` and
//! `filter` write and the report reads from whatever is bound to it. The report then needs none
//! of those kinds' own types, so their crates (and what they depend on: `csv`, `ureq`, `url`)
//! stay out of `evaluate`'s cache key.

use std::collections::BTreeMap;
use std::path::Path;

use pipeline_api::{StageError, read_json, write_json};
use serde::{Deserialize, Serialize};

/// The file name in a data stage's output.
pub const LEFT_OUT_FILE: &str = "left-out.json";

/// How many rows of one list are written (the counts cover them all).
pub const LISTED_ROWS: usize = 200;

/// What one data stage left out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LeftOut {
    /// The kind that wrote it (`ingest`).
    pub stage: String,
    /// How many rows it considered.
    pub considered: usize,
    /// What those were, in words (`CSV rows read (utf-8)`).
    pub considered_what: String,
    /// Why rows were left out -> how many, over every row.
    pub counts: BTreeMap<String, usize>,
    /// Named lists of left-out rows, at most [`LISTED_ROWS`] each.
    pub lists: Vec<LeftOutList>,
}

/// A titled list of left-out rows (`download: posters that could not be fetched`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LeftOutList {
    /// What the rows are.
    pub title: String,
    /// The rows.
    pub rows: Vec<LeftOutRow>,
}

/// One row someone should know was left out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LeftOutRow {
    /// The movie id, as text (a row that did not parse may have none).
    pub id: String,
    /// Title, source or CSV line: what identifies it to a person.
    pub what: String,
    /// Why.
    pub reason: String,
}

impl LeftOutList {
    /// A list titled `title` of the first [`LISTED_ROWS`] of `rows`.
    pub fn new(title: impl Into<String>, rows: impl IntoIterator<Item = LeftOutRow>) -> Self {
        Self {
            title: title.into(),
            rows: rows.into_iter().take(LISTED_ROWS).collect(),
        }
    }
}

impl LeftOut {
    /// Writes it into a stage's output folder.
    pub fn save(&self, out_dir: &Path) -> Result<(), StageError> {
        write_json(&out_dir.join(LEFT_OUT_FILE), self)
    }

    /// Reads it from a stage's output folder.
    pub fn load(dir: &Path) -> Result<Self, StageError> {
        read_json(&dir.join(LEFT_OUT_FILE))
    }
}
