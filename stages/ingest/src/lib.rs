//! `ingest`: reads the movie CSV (Kaggle "Movie Genre from its Poster" layout) into a clean Parquet table.
//!
//! Rows that cannot be used are dropped, counted by reason and listed in `summary.json`; nothing
//! is dropped silently. Duplicate `imdbId`s keep their first row.
//!
//! What lives where: this file holds the stage; `params`, `summary`
//! (`summary.json`, `left-out.json`); `reader` reads and checks the CSV into the movies table;
//! `genres` cleans genre names.

pub mod genres;
mod params;
mod reader;
mod summary;

use pipeline_api::{Kind, KindInfo, RunSummary, StageContext, StageError, write_json};
use stage_shards::movies::{MOVIES_FILE, write_movies};

pub use params::{Encoding, IngestParams};
pub use reader::{REQUIRED_COLUMNS, decode, ingest, year_from_title};
pub use summary::{DroppedRow, IngestSummary};

/// The ingest stage kind.
pub struct Ingest;

impl Kind for Ingest {
    type Params = IngestParams;
    const INFO: KindInfo = KindInfo {
        files: &["csv"],
        ..KindInfo::new(
            "ingest",
            // 2: records of the wrong width are dropped (polars used to truncate them); line numbers.
            // 3: genre names cleaned of invisible characters, each once a movie, case variants merged.
            // 4: `left-out.json`, the shape the report reads (no serde_json in the key either).
            // 5: `genres` is a list of strings, no longer `|`-joined.
            5,
            "read the movie CSV into movies.parquet, counting unusable rows by reason",
            pipeline_api::locked_dependencies!(),
        )
    };
    fn run(&self, ctx: &StageContext<'_>, params: IngestParams) -> Result<RunSummary, StageError> {
        let csv = ctx.file("csv")?;
        ctx.progress.message("reading CSV");
        let (movies, summary) = ingest(csv, params.encoding)?;
        write_movies(&ctx.out_dir.join(MOVIES_FILE), &movies)?;
        write_json(&ctx.out_dir.join("summary.json"), &summary)?;
        summary.left_out().save(ctx.out_dir)?;
        let dropped: Vec<String> = summary
            .dropped
            .iter()
            .map(|(reason, n)| format!("{n} {reason}"))
            .collect();
        let mut lines = vec![
            format!(
                "{} rows read ({}), {} kept",
                summary.rows_read, summary.encoding, summary.rows_kept
            ),
            if dropped.is_empty() {
                "no rows dropped".to_string()
            } else {
                format!("dropped: {}", dropped.join(", "))
            },
        ];
        for merged in &summary.merged_spellings {
            let line = format!(
                "warning: genres that differ only in case are one genre: {}",
                merged.describe()
            );
            lines.push(line);
        }
        Ok(RunSummary::new(lines))
    }
}
