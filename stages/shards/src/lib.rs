//! Parquet tables and image tensor shards shared by the poster stages.
//!
//! Image shards (`image`) are Parquet files of resized posters, one row per movie, with a
//! `meta.json` beside them; embedding shards (`embedding`) hold feature vectors instead.
//!
//! What lives where: this file holds Parquet reading and writing and typed column access;
//! `image` the image shards and their `meta.json`; `movies` the typed tables the stages hand
//! each other (movies, kept movies, downloads) and every column name; `embedding` the embedding
//! shards; `earlier` reuse of an earlier output's rows by poster; `poster` decoding and
//! sniffing; `predictions` evaluate's `predictions.parquet`; `left_out` the `left-out.json`
//! every data stage writes for the report; `preparation` how a poster is made into a model's
//! input (`Mode`, `Preparation`).

pub mod earlier;
pub mod embedding;
mod image;
pub mod left_out;
pub mod movies;
pub mod poster;
pub mod predictions;
mod preparation;

pub use image::{
    Shard, ShardFile, ShardMeta, ids_and_posters, read_shard, read_shard_labels, write_shard,
};
pub use movies::column;
pub use preparation::{BackboneUse, Mode, Preparation};

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use pipeline_api::{ResultExt, StageError};
use polars::prelude::*;

/// Reads a whole Parquet table.
pub fn read_table(path: &Path) -> Result<DataFrame, StageError> {
    read_parquet(path, None)
}

/// Reads only `columns` of a Parquet table (the others are not decoded).
pub fn read_columns(path: &Path, columns: &[&str]) -> Result<DataFrame, StageError> {
    read_parquet(path, Some(columns.iter().map(|c| c.to_string()).collect()))
}

fn read_parquet(path: &Path, columns: Option<Vec<String>>) -> Result<DataFrame, StageError> {
    let file = File::open(path).map_err(|source| StageError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    ParquetReader::new(file)
        .with_columns(columns)
        .finish()
        .during(format!("reading `{}`", path.display()))
}

/// Writes a Parquet table (zstd, default level).
pub fn write_table(path: &Path, df: &mut DataFrame) -> Result<(), StageError> {
    ParquetWriter::new(BufWriter::new(create(path)?))
        .with_compression(ParquetCompression::Zstd(None))
        .finish(df)
        .during(format!("writing `{}`", path.display()))?;
    Ok(())
}

/// Creates (or truncates) `path`, naming it in the error.
fn create(path: &Path) -> Result<File, StageError> {
    File::create(path).map_err(|source| StageError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Column `name` as `cast` reads it, with a clear error naming the column and the file when it
/// is missing or of another type.
pub fn typed_column<'a, T: PolarsDataType>(
    df: &'a DataFrame,
    name: &str,
    path: &Path,
    cast: impl FnOnce(&'a Column) -> PolarsResult<&'a ChunkedArray<T>>,
) -> Result<&'a ChunkedArray<T>, StageError> {
    df.column(name)
        .and_then(cast)
        .during(format!("column `{name}` of `{}`", path.display()))
}

/// The string column `name`.
pub fn str_column<'a>(
    df: &'a DataFrame,
    name: &str,
    path: &Path,
) -> Result<&'a StringChunked, StageError> {
    typed_column(df, name, path, |c| c.str())
}

/// The i64 column `name`.
pub fn i64_column<'a>(
    df: &'a DataFrame,
    name: &str,
    path: &Path,
) -> Result<&'a Int64Chunked, StageError> {
    typed_column(df, name, path, |c| c.i64())
}
