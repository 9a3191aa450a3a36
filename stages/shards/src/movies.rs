//! The tables the poster stages hand each other, typed: the movies table (`ingest` writes it,
//! `download` reads its posters' sources, `filter` writes the kept movies with their poster
//! files, `resize` and `evaluate` read those) and `download`'s outcome per movie. Every column is
//! named once, here; genres are a `list<utf8>`, so no reader splits a joined string.

use std::path::Path;

use pipeline_api::{ResultExt, StageError};
use polars::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{i64_column, read_table, str_column, typed_column, write_table};

/// The file a movies table is written to, in `ingest`'s and in `filter`'s output.
pub const MOVIES_FILE: &str = "movies.parquet";
/// The file `download` lists every movie's outcome in.
pub const DOWNLOADS_FILE: &str = "downloads.parquet";

/// Column names of the tables, and of the shards' movie id.
pub mod column {
    /// The movie's IMDb id, Int64; in every table and shard.
    pub const ID: &str = "imdbId";
    /// String, as in the CSV (with the trailing year).
    pub const TITLE: &str = "title";
    /// Int32, null when the title has none.
    pub const YEAR: &str = "year";
    /// Float64 IMDb score, null when missing.
    pub const SCORE: &str = "score";
    /// List of String, in the CSV's order.
    pub const GENRES: &str = "genres";
    /// String: where the poster comes from (the CSV's `Poster`: URL, `file://` or a path).
    pub const POSTER: &str = "poster";
    /// String: the poster's file in `download`'s output (`posters/<blake3>`); `filter`'s table.
    pub const POSTER_FILE: &str = "poster_file";
    /// String: the poster's source in `download`'s table.
    pub const SOURCE: &str = "source";
    /// String, null when nothing was stored: the stored file in `download`'s table.
    pub const FILE: &str = "file";
    /// UInt64, null when nothing was stored: the stored file's size.
    pub const BYTES: &str = "bytes";
    /// String, null when stored: why not.
    pub const REASON: &str = "reason";
}

/// One movie of the movies table.
#[derive(Debug, Clone, PartialEq)]
pub struct Movie {
    pub id: i64,
    pub title: String,
    pub year: Option<i32>,
    pub score: Option<f64>,
    /// At least one, each once.
    pub genres: Vec<String>,
    /// Where its poster comes from.
    pub poster: String,
}

/// A movie `filter` kept: its genres restricted to the vocabulary, and its stored poster.
#[derive(Debug, Clone, PartialEq)]
pub struct KeptMovie {
    pub movie: Movie,
    /// The poster's file in `download`'s output.
    pub poster_file: String,
}

/// What `download` made of one movie's poster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DownloadOutcome {
    pub id: i64,
    /// Where the poster came from.
    pub source: String,
    /// `posters/<blake3>` when stored.
    pub file: Option<String>,
    /// Size in bytes when stored.
    pub bytes: Option<u64>,
    /// Why it was not stored.
    pub reason: Option<String>,
}

/// Writes `movies` to `path`.
pub fn write_movies(path: &Path, movies: &[Movie]) -> Result<(), StageError> {
    let columns = movie_columns(movies.iter());
    write_columns(path, movies.len(), columns)
}

/// Reads a movies table (`ingest`'s, or `filter`'s without its poster files).
pub fn read_movies(path: &Path) -> Result<Vec<Movie>, StageError> {
    movies_of(&read_table(path)?, path)
}

/// Writes the kept movies to `path`: the movies table with a `poster_file` column.
pub fn write_kept(path: &Path, kept: &[KeptMovie]) -> Result<(), StageError> {
    let mut columns = movie_columns(kept.iter().map(|k| &k.movie));
    columns.push(Column::new(
        column::POSTER_FILE.into(),
        kept.iter()
            .map(|k| k.poster_file.as_str())
            .collect::<Vec<_>>(),
    ));
    write_columns(path, kept.len(), columns)
}

/// Reads what [`write_kept`] wrote.
pub fn read_kept(path: &Path) -> Result<Vec<KeptMovie>, StageError> {
    let table = read_table(path)?;
    let movies = movies_of(&table, path)?;
    let files = strings(&table, column::POSTER_FILE, path)?;
    Ok(movies
        .into_iter()
        .zip(files)
        .map(|(movie, poster_file)| KeptMovie {
            movie,
            poster_file: poster_file.unwrap_or_default(),
        })
        .collect())
}

/// Writes `download`'s table.
pub fn write_downloads(path: &Path, outcomes: &[DownloadOutcome]) -> Result<(), StageError> {
    let columns = vec![
        Column::new(
            column::ID.into(),
            outcomes.iter().map(|o| o.id).collect::<Vec<_>>(),
        ),
        Column::new(
            column::SOURCE.into(),
            outcomes
                .iter()
                .map(|o| o.source.as_str())
                .collect::<Vec<_>>(),
        ),
        Column::new(
            column::FILE.into(),
            outcomes
                .iter()
                .map(|o| o.file.as_deref())
                .collect::<Vec<_>>(),
        ),
        Column::new(
            column::BYTES.into(),
            outcomes.iter().map(|o| o.bytes).collect::<Vec<_>>(),
        ),
        Column::new(
            column::REASON.into(),
            outcomes
                .iter()
                .map(|o| o.reason.as_deref())
                .collect::<Vec<_>>(),
        ),
    ];
    write_columns(path, outcomes.len(), columns)
}

/// Reads what [`write_downloads`] wrote.
pub fn read_downloads(path: &Path) -> Result<Vec<DownloadOutcome>, StageError> {
    let table = read_table(path)?;
    let ids = ids(&table, path)?;
    let sources = strings(&table, column::SOURCE, path)?;
    let files = strings(&table, column::FILE, path)?;
    let bytes = typed(&table, column::BYTES, path, |c| c.u64())?;
    let reasons = strings(&table, column::REASON, path)?;
    Ok(ids
        .into_iter()
        .zip(sources)
        .zip(files)
        .zip(bytes)
        .zip(reasons)
        .map(|((((id, source), file), bytes), reason)| DownloadOutcome {
            id,
            source: source.unwrap_or_default(),
            file,
            bytes,
            reason,
        })
        .collect())
}

/// The movie id column of a table or shard.
pub fn ids(table: &DataFrame, path: &Path) -> Result<Vec<i64>, StageError> {
    Ok(i64_column(table, column::ID, path)?
        .iter()
        .map(Option::unwrap_or_default)
        .collect())
}

fn movie_columns<'a>(movies: impl Iterator<Item = &'a Movie> + Clone) -> Vec<Column> {
    let genres: Vec<Series> = movies
        .clone()
        .map(|m| Series::new(PlSmallStr::EMPTY, &m.genres))
        .collect();
    vec![
        Column::new(
            column::ID.into(),
            movies.clone().map(|m| m.id).collect::<Vec<_>>(),
        ),
        Column::new(
            column::TITLE.into(),
            movies.clone().map(|m| m.title.as_str()).collect::<Vec<_>>(),
        ),
        Column::new(
            column::YEAR.into(),
            movies.clone().map(|m| m.year).collect::<Vec<_>>(),
        ),
        Column::new(
            column::SCORE.into(),
            movies.clone().map(|m| m.score).collect::<Vec<_>>(),
        ),
        Column::new(column::GENRES.into(), genres),
        Column::new(
            column::POSTER.into(),
            movies.map(|m| m.poster.as_str()).collect::<Vec<_>>(),
        ),
    ]
}

fn movies_of(table: &DataFrame, path: &Path) -> Result<Vec<Movie>, StageError> {
    let ids = ids(table, path)?;
    let titles = strings(table, column::TITLE, path)?;
    let years = typed(table, column::YEAR, path, |c| c.i32())?;
    let scores = typed(table, column::SCORE, path, |c| c.f64())?;
    let posters = strings(table, column::POSTER, path)?;
    let genres = genre_lists(table, path)?;
    Ok(ids
        .into_iter()
        .zip(titles)
        .zip(years)
        .zip(scores)
        .zip(genres)
        .zip(posters)
        .map(|(((((id, title), year), score), genres), poster)| Movie {
            id,
            title: title.unwrap_or_default(),
            year,
            score,
            genres,
            poster: poster.unwrap_or_default(),
        })
        .collect())
}

fn genre_lists(table: &DataFrame, path: &Path) -> Result<Vec<Vec<String>>, StageError> {
    let lists = typed_column(table, column::GENRES, path, |c| c.list())?;
    let context = || format!("column `{}` of `{}`", column::GENRES, path.display());
    let mut out = Vec::with_capacity(lists.len());
    for list in lists.amortized_iter() {
        let genres = match list {
            Some(series) => series
                .as_ref()
                .str()
                .during(context())?
                .iter()
                .flatten()
                .map(str::to_string)
                .collect(),
            None => Vec::new(),
        };
        out.push(genres);
    }
    Ok(out)
}

fn strings(table: &DataFrame, name: &str, path: &Path) -> Result<Vec<Option<String>>, StageError> {
    Ok(str_column(table, name, path)?
        .iter()
        .map(|s| s.map(str::to_string))
        .collect())
}

/// The values of a numeric column, nulls as `None`.
fn typed<'a, T: PolarsNumericType>(
    table: &'a DataFrame,
    name: &str,
    path: &Path,
    cast: impl FnOnce(&'a Column) -> PolarsResult<&'a ChunkedArray<T>>,
) -> Result<Vec<Option<T::Native>>, StageError> {
    Ok(typed_column(table, name, path, cast)?.iter().collect())
}

fn write_columns(path: &Path, rows: usize, columns: Vec<Column>) -> Result<(), StageError> {
    let mut table =
        DataFrame::new(rows, columns).during(format!("building `{}`", path.display()))?;
    write_table(path, &mut table)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn movie(id: i64, genres: &[&str]) -> Movie {
        Movie {
            id,
            title: format!("Movie {id} (2001)"),
            year: (id % 2 == 0).then_some(2001),
            score: (id % 3 != 0).then_some(6.5),
            genres: genres.iter().map(|g| g.to_string()).collect(),
            poster: format!("https://example.com/{id}.jpg"),
        }
    }

    #[test]
    fn every_table_reads_back_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let movies = vec![
            movie(1, &["Drama"]),
            movie(2, &["Sci-Fi", "Drama|Odd"]),
            movie(3, &["Comedy", "Drama", "Horror"]),
        ];
        let path = dir.path().join(MOVIES_FILE);
        write_movies(&path, &movies).unwrap();
        assert_eq!(read_movies(&path).unwrap(), movies);

        let kept: Vec<KeptMovie> = movies
            .iter()
            .map(|m| KeptMovie {
                movie: m.clone(),
                poster_file: format!("posters/{}", m.id),
            })
            .collect();
        write_kept(&path, &kept).unwrap();
        assert_eq!(read_kept(&path).unwrap(), kept);
        assert_eq!(
            read_movies(&path).unwrap(),
            movies,
            "a kept table is a movies table"
        );

        let outcomes = vec![
            DownloadOutcome {
                id: 1,
                source: "a.jpg".into(),
                file: Some("posters/ab".into()),
                bytes: Some(1234),
                reason: None,
            },
            DownloadOutcome {
                id: 2,
                source: "http://x/b.jpg".into(),
                file: None,
                bytes: None,
                reason: Some("HTTP 404".into()),
            },
        ];
        let path = dir.path().join(DOWNLOADS_FILE);
        write_downloads(&path, &outcomes).unwrap();
        assert_eq!(read_downloads(&path).unwrap(), outcomes);
    }

    #[test]
    fn a_table_without_a_column_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(MOVIES_FILE);
        write_movies(&path, &[movie(1, &["Drama"])]).unwrap();
        let err = read_kept(&path).unwrap_err().to_string();
        assert!(
            err.contains("poster_file") && err.contains(MOVIES_FILE),
            "{err}"
        );
    }
}
