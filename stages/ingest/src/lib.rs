//! `ingest`: reads the movie CSV (Kaggle "Movie Genre from its Poster" layout) into a clean Parquet table.
//!
//! Rows that cannot be used are dropped, counted by reason and listed in `summary.json`; nothing
//! is dropped silently. Duplicate `imdbId`s keep their first row.

use std::collections::{BTreeMap, HashSet};
use std::io::Cursor;
use std::path::Path;

use pipeline_api::{
    ParamError, ResultExt, RunSummary, Stage, StageContext, StageError, canonicalize, read_file,
    write_json,
};
use polars::prelude::*;
use serde::{Deserialize, Serialize};
use stage_shards::write_table;

/// The ingest stage kind.
pub struct Ingest;

/// Columns the CSV must have.
pub const REQUIRED_COLUMNS: [&str; 6] = [
    "imdbId",
    "Imdb Link",
    "Title",
    "IMDB Score",
    "Genre",
    "Poster",
];

/// How the CSV bytes are decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Encoding {
    /// UTF-8 if the file is valid UTF-8, otherwise latin-1 (what the real Kaggle file is).
    Auto,
    /// Strict UTF-8.
    #[serde(rename = "utf-8")]
    Utf8,
    /// ISO-8859-1: every byte is one character.
    #[serde(rename = "latin-1")]
    Latin1,
}

/// Params of `ingest`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestParams {
    /// `auto` (default), `utf-8` or `latin-1`.
    pub encoding: Encoding,
}

impl Default for IngestParams {
    fn default() -> Self {
        Self {
            encoding: Encoding::Auto,
        }
    }
}

/// A row that was dropped.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DroppedRow {
    /// 1-based data row (the header is row 0).
    pub row: usize,
    /// The raw id text.
    pub id: String,
    /// Why.
    pub reason: String,
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
}

impl Stage for Ingest {
    fn kind(&self) -> &'static str {
        "ingest"
    }
    fn version(&self) -> u32 {
        1
    }
    fn describe(&self) -> &'static str {
        "read the movie CSV into movies.parquet, counting unusable rows by reason"
    }
    fn file_roles(&self) -> &'static [&'static str] {
        &["csv"]
    }
    fn canonical_params(&self, raw: &serde_json::Value) -> Result<serde_json::Value, ParamError> {
        canonicalize::<IngestParams>(raw)
    }
    fn run(&self, ctx: &StageContext<'_>) -> Result<RunSummary, StageError> {
        let params: IngestParams = ctx.params()?;
        let csv = ctx.file("csv")?;
        ctx.progress.message("reading CSV");
        let (mut movies, summary) = ingest(csv, params.encoding)?;
        write_table(&ctx.out_dir.join("movies.parquet"), &mut movies)?;
        write_json(&ctx.out_dir.join("summary.json"), &summary)?;
        let dropped: Vec<String> = summary
            .dropped
            .iter()
            .map(|(reason, n)| format!("{n} {reason}"))
            .collect();
        Ok(RunSummary::new([
            format!(
                "{} rows read ({}), {} kept",
                summary.rows_read, summary.encoding, summary.rows_kept
            ),
            if dropped.is_empty() {
                "no rows dropped".to_string()
            } else {
                format!("dropped: {}", dropped.join(", "))
            },
        ]))
    }
}

/// Decodes the CSV bytes as asked.
pub fn decode(bytes: Vec<u8>, encoding: Encoding) -> Result<(String, &'static str), String> {
    match encoding {
        Encoding::Utf8 => String::from_utf8(bytes)
            .map(|s| (s, "utf-8"))
            .map_err(|e| format!("not valid UTF-8 ({e}); try `encoding: latin-1`")),
        Encoding::Latin1 => Ok((bytes.iter().map(|&b| b as char).collect(), "latin-1")),
        Encoding::Auto => match String::from_utf8(bytes) {
            Ok(text) => Ok((text, "utf-8")),
            Err(err) => Ok((
                err.into_bytes().iter().map(|&b| b as char).collect(),
                "latin-1",
            )),
        },
    }
}

/// The release year at the end of a title: `Toy Story (1995)` -> 1995.
pub fn year_from_title(title: &str) -> Option<i32> {
    let trimmed = title.trim_end();
    let open = trimmed.rfind('(')?;
    let inner = trimmed[open + 1..].strip_suffix(')')?;
    (inner.len() == 4 && inner.bytes().all(|b| b.is_ascii_digit()))
        .then(|| inner.parse().ok())
        .flatten()
}

/// Reads and cleans the CSV at `path`.
pub fn ingest(path: &Path, encoding: Encoding) -> Result<(DataFrame, IngestSummary), StageError> {
    let (text, used) = decode(read_file(path)?, encoding)
        .map_err(|e| StageError::invalid(format!("`{}`: {e}", path.display())))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text).to_string();
    let raw = CsvReadOptions::default()
        .with_has_header(true)
        .with_infer_schema_length(Some(0)) // every column as text; rows are validated below
        .map_parse_options(|p| {
            p.with_truncate_ragged_lines(true)
                .with_missing_is_null(true)
        })
        .into_reader_with_file_handle(Cursor::new(text.into_bytes()))
        .finish()
        .during(format!("parsing CSV `{}`", path.display()))?;
    let present: Vec<String> = raw
        .get_column_names()
        .iter()
        .map(|s| s.to_string())
        .collect();
    for column in REQUIRED_COLUMNS {
        if !present.iter().any(|p| p == column) {
            return Err(StageError::invalid(format!(
                "`{}` has no column `{column}`; expected the Kaggle layout `{}` but found `{}`",
                path.display(),
                REQUIRED_COLUMNS.join(","),
                present.join(",")
            )));
        }
    }
    let text_col = |name: &str| -> Result<Vec<Option<String>>, StageError> {
        Ok(raw
            .column(name)
            .and_then(|c| c.str().cloned())
            .during(format!("column `{name}` of `{}`", path.display()))?
            .iter()
            .map(|v| {
                v.map(str::trim)
                    .filter(|v| !v.is_empty())
                    .map(str::to_string)
            })
            .collect())
    };
    let (ids, titles, scores, genres, posters) = (
        text_col("imdbId")?,
        text_col("Title")?,
        text_col("IMDB Score")?,
        text_col("Genre")?,
        text_col("Poster")?,
    );

    let mut summary = IngestSummary {
        encoding: used.to_string(),
        rows_read: raw.height(),
        rows_kept: 0,
        dropped: BTreeMap::new(),
        dropped_rows: Vec::new(),
        without_year: 0,
        without_score: 0,
    };
    let mut seen = HashSet::new();
    let (mut out_id, mut out_title, mut out_year, mut out_score, mut out_genres, mut out_poster) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for row in 0..raw.height() {
        let id_text = ids[row].clone().unwrap_or_default();
        let reason = match parse_id(&id_text) {
            None => Some("bad imdbId"),
            Some(id) if !seen.insert(id) => Some("duplicate imdbId"),
            Some(_) => None,
        };
        let genre_list: Vec<&str> = genres[row]
            .as_deref()
            .unwrap_or("")
            .split('|')
            .map(str::trim)
            .filter(|g| !g.is_empty())
            .collect();
        let reason = reason
            .or_else(|| genre_list.is_empty().then_some("no genre"))
            .or_else(|| posters[row].is_none().then_some("no poster"));
        if let Some(reason) = reason {
            *summary.dropped.entry(reason.to_string()).or_default() += 1;
            if summary.dropped_rows.len() < 200 {
                summary.dropped_rows.push(DroppedRow {
                    row: row + 1,
                    id: id_text,
                    reason: reason.to_string(),
                });
            }
            continue;
        }
        let title = titles[row].clone().unwrap_or_default();
        let year = year_from_title(&title);
        let score = scores[row].as_deref().and_then(|s| s.parse::<f64>().ok());
        summary.without_year += usize::from(year.is_none());
        summary.without_score += usize::from(score.is_none());
        out_id.push(parse_id(&id_text).expect("validated"));
        out_title.push(title);
        out_year.push(year);
        out_score.push(score);
        out_genres.push(genre_list.join("|"));
        out_poster.push(posters[row].clone().unwrap_or_default());
    }
    summary.rows_kept = out_id.len();
    let height = out_id.len();
    let df = DataFrame::new(
        height,
        vec![
            Column::new("imdbId".into(), out_id),
            Column::new("title".into(), out_title),
            Column::new("year".into(), out_year),
            Column::new("score".into(), out_score),
            Column::new("genres".into(), out_genres),
            Column::new("poster".into(), out_poster),
        ],
    )
    .during("building the movies table")?;
    Ok((df, summary))
}

fn parse_id(text: &str) -> Option<i64> {
    text.trim().parse::<i64>().ok().filter(|id| *id > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn year_comes_from_the_end_of_the_title() {
        assert_eq!(year_from_title("Toy Story (1995)"), Some(1995));
        assert_eq!(year_from_title("Se7en (1995) "), Some(1995));
        assert_eq!(year_from_title("No Year Movie"), None);
        assert_eq!(year_from_title("Odd (19a5)"), None);
    }

    #[test]
    fn latin1_is_detected_and_decoded() {
        let bytes = b"Am\xe9lie (2001)".to_vec();
        let (text, used) = decode(bytes, Encoding::Auto).unwrap();
        assert_eq!(text, "Amélie (2001)");
        assert_eq!(used, "latin-1");
        assert!(decode(b"Am\xe9lie".to_vec(), Encoding::Utf8).is_err());
    }

    #[test]
    fn bad_rows_are_counted_by_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.csv");
        std::fs::write(
            &path,
            b"imdbId,Imdb Link,Title,IMDB Score,Genre,Poster\n\
              1,l,\"Crouching Tiger, Hidden Dragon (2000)\",7.9,Action|Drama,p1.jpg\n\
              1,l,Duplicate (2000),5,Drama,p1.jpg\n\
              x,l,Bad Id (2000),5,Drama,p.jpg\n\
              3,l,No Genre (2001),5,,p3.jpg\n\
              4,l,No Poster (2001),,Comedy,\n\
              5,l,Caf\xe9 (2003),,Comedy,p5.jpg\n",
        )
        .unwrap();
        let (df, summary) = ingest(&path, Encoding::Auto).unwrap();
        assert_eq!(summary.rows_read, 6);
        assert_eq!(summary.rows_kept, 2);
        assert_eq!(summary.dropped["duplicate imdbId"], 1);
        assert_eq!(summary.dropped["bad imdbId"], 1);
        assert_eq!(summary.dropped["no genre"], 1);
        assert_eq!(summary.dropped["no poster"], 1);
        let titles = df.column("title").unwrap().str().unwrap().clone();
        assert_eq!(titles.get(0), Some("Crouching Tiger, Hidden Dragon (2000)"));
        assert_eq!(titles.get(1), Some("Café (2003)"));
        assert_eq!(summary.without_score, 1);
    }
}
