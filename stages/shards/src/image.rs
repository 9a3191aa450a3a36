//! Image shards: resized posters as Parquet, and the `meta.json` beside them.
//!
//! A shard is a Parquet file with one row per movie:
//!
//! | column | type | content |
//! |---|---|---|
//! | `imdbId` | Int64 | the movie |
//! | `poster` | String | the poster's file in `download`'s output (`posters/<blake3 of its bytes>`) |
//! | `image` | Binary | `height * width * 3` u8 values, row-major HWC, RGB |
//! | `labels` | FixedSizeList(UInt8, genres) | multi-hot, in the order of `meta.json`'s `genres` |
//!
//! `meta.json` beside the shards gives `width`, `height`, `channels`, `layout`, `genres`, the fit
//! `mode` and the shard files with their row counts. Images are `Binary` because Parquet has no
//! 8-bit physical type: a list of u8 would be stored as 4-byte ints.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use pipeline_api::{ResultExt, StageError, read_json, write_json};
use polars::frame::chunk_df_for_writing;
use polars::io::parquet::write::get_encodings;
use polars::prelude::*;
use polars_arrow::array::{BinaryViewArray, View};
use polars_arrow::datatypes::ArrowDataType;
use polars_buffer::Buffer;
use polars_parquet::write::{
    CompressionOptions, Encoding, FileWriter, Version, WriteOptions, ZstdLevel, row_group_iter,
};
use serde::{Deserialize, Serialize};

use crate::preparation::{Mode, Preparation};
use crate::{column, create, read_columns, read_table, str_column, typed_column};

/// How shards are compressed: zstd level 1. Measured on 5,000 posters at 224x224
/// (`bench/resize-vs-pillow.sh`): the default level 3 made the resize stage ~20 % slower for a
/// 2 % smaller output; lz4 was as fast and 20 % larger; uncompressed shards were 12x larger and
/// twice as slow (the disk became the limit).
fn shard_zstd_level() -> ZstdLevel {
    ZstdLevel::try_new(1).expect("1 is a valid zstd level")
}

/// Rows per row group of a shard: polars' default, so a shard of up to this many rows is one group.
const SHARD_ROW_GROUP_ROWS: usize = 512 * 512;

/// Min/max statistics of 150 KB image values cost time and help no reader; null counts stay.
fn shard_statistics() -> StatisticsOptions {
    StatisticsOptions {
        min_value: false,
        max_value: false,
        distinct_count: false,
        null_count: true,
        binary_statistics_truncate_length: None,
    }
}

/// Shape and vocabulary of a set of shards (`meta.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ShardMeta {
    /// Image width in pixels.
    pub width: usize,
    /// Image height in pixels.
    pub height: usize,
    /// Always 3 (RGB).
    pub channels: usize,
    /// Always `HWC`.
    pub layout: String,
    /// Genre vocabulary; `labels` follow this order.
    pub genres: Vec<String>,
    /// Shard files relative to `meta.json`, with their row counts.
    pub shards: Vec<ShardFile>,
    /// How posters were fitted into `width` x `height` (absent in shards of older builds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
}

/// One shard file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ShardFile {
    /// File name relative to the directory of `meta.json`.
    pub file: String,
    /// Rows in it.
    pub rows: usize,
}

impl ShardMeta {
    /// How its images were made, when recorded.
    pub fn preparation(&self) -> Option<Preparation> {
        self.mode.map(|mode| Preparation {
            width: self.width,
            height: self.height,
            mode,
            backbones: Vec::new(),
            flip: false,
        })
    }

    /// u8 values per image.
    pub fn pixels(&self) -> usize {
        self.width * self.height * self.channels
    }

    /// Total rows over all shards.
    pub fn rows(&self) -> usize {
        self.shards.iter().map(|s| s.rows).sum()
    }

    /// Reads `dir/meta.json`.
    pub fn load(dir: &Path) -> Result<Self, StageError> {
        read_json(&dir.join("meta.json"))
    }

    /// Writes `dir/meta.json`.
    pub fn save(&self, dir: &Path) -> Result<(), StageError> {
        write_json(&dir.join("meta.json"), self)
    }

    /// Paths of all shards below `dir`.
    pub fn paths(&self, dir: &Path) -> Vec<PathBuf> {
        self.shards.iter().map(|s| dir.join(&s.file)).collect()
    }
}

/// Rows of a shard in memory.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Shard {
    /// Movie ids.
    pub ids: Vec<i64>,
    /// The poster file each row was made from (its content hash), one per id.
    pub posters: Vec<String>,
    /// `ids.len() * pixels` u8 values.
    pub images: Vec<u8>,
    /// `ids.len() * genres` 0/1 values.
    pub labels: Vec<u8>,
}

impl Shard {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether it has no rows.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Keeps the rows whose poster `keep` accepts, in order.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        let n = self.len();
        if n == 0 {
            return;
        }
        let (pixels, genres) = (self.images.len() / n, self.labels.len() / n);
        let mut kept = Shard::default();
        for i in 0..n {
            if keep(&self.posters[i]) {
                kept.push_row(self, i, pixels, genres);
            }
        }
        *self = kept;
    }

    /// Appends row `i` of `other`.
    pub fn push_row(&mut self, other: &Shard, i: usize, pixels: usize, genres: usize) {
        self.ids.push(other.ids[i]);
        self.posters.push(other.posters[i].clone());
        self.images
            .extend_from_slice(&other.images[i * pixels..(i + 1) * pixels]);
        self.labels
            .extend_from_slice(&other.labels[i * genres..(i + 1) * genres]);
    }
}

/// Writes `shard` to `path`; `genres` is the label width.
pub fn write_shard(
    path: &Path,
    shard: &Shard,
    pixels: usize,
    genres: usize,
) -> Result<(), StageError> {
    let n = shard.len();
    if shard.images.len() != n * pixels
        || shard.labels.len() != n * genres
        || shard.posters.len() != n
    {
        return Err(StageError::invalid(format!(
            "shard `{}`: {n} rows but {} posters, {} pixel values and {} labels",
            path.display(),
            shard.posters.len(),
            shard.images.len(),
            shard.labels.len()
        )));
    }
    let file = create(path)?;
    // The image column borrows `shard.images` instead of copying 150 MB per shard; everything
    // built on the borrowed buffer is dropped before `with_slice` returns.
    Buffer::with_slice(&shard.images, |images| {
        let ids = Column::new(column::ID.into(), shard.ids.clone());
        let posters = Column::new("poster".into(), shard.posters.clone());
        let images = image_column(images, pixels, n)
            .during(format!("building shard `{}`", path.display()))?;
        let label_values = UInt8Chunked::from_vec("labels".into(), shard.labels.clone());
        let labels = ArrayChunked::from_aligned_values(
            "labels".into(),
            &DataType::UInt8,
            genres,
            label_values.chunks().clone(),
            n,
        )
        .into_series()
        .into_column();
        let mut df = DataFrame::new(n, vec![ids, posters, images, labels])
            .during(format!("building shard `{}`", path.display()))?;
        write_shard_table(file, &mut df).during(format!("writing `{}`", path.display()))
    })
}

/// The `image` column over `images` (`rows * pixels` values) without copying them: one view per
/// row into the buffer, split into parts under 4 GiB because a view's offset is 32 bits.
fn image_column(images: Buffer<u8>, pixels: usize, rows: usize) -> PolarsResult<Column> {
    let rows_per_part = (u32::MAX as usize / pixels.max(1)).max(1);
    let parts: Vec<Buffer<u8>> = (0..rows)
        .step_by(rows_per_part)
        .map(|start| {
            let end = (start + rows_per_part).min(rows);
            images.clone().sliced(start * pixels..end * pixels)
        })
        .collect();
    let views: Vec<View> = (0..rows)
        .map(|row| {
            let (part, at) = (row / rows_per_part, row % rows_per_part);
            let bytes = &parts[part][at * pixels..(at + 1) * pixels];
            View::new_from_bytes(bytes, part as u32, (at * pixels) as u32)
        })
        .collect();
    let array = BinaryViewArray::try_new(
        ArrowDataType::BinaryView,
        Buffer::from(views),
        Buffer::from(parts),
        None,
    )?;
    Ok(BinaryChunked::with_chunk("image".into(), array)
        .into_series()
        .into_column())
}

/// Writes a shard's table as polars' `ParquetWriter` would (see [`write_table`]), but with the
/// `image` column plain-encoded: polars tries dictionary encoding for every binary column, which
/// first hashes every 150 KB image to estimate how many are distinct (they all are).
fn write_shard_table(file: File, df: &mut DataFrame) -> PolarsResult<()> {
    let df = chunk_df_for_writing(df, SHARD_ROW_GROUP_ROWS)?;
    let schema = df.schema().to_arrow(CompatLevel::newest());
    let encodings: Vec<Vec<Encoding>> = schema
        .iter()
        .zip(get_encodings(&schema).iter())
        .map(|((name, _), encodings)| {
            if name.as_str() == "image" {
                vec![Encoding::Plain]
            } else {
                encodings.clone()
            }
        })
        .collect();
    let options = WriteOptions {
        statistics: shard_statistics(),
        compression: CompressionOptions::Zstd(Some(shard_zstd_level())),
        version: Version::V1,
        data_page_size: None,
    };
    let encodings = Buffer::from(encodings);
    let mut writer = FileWriter::try_new(BufWriter::new(file), schema, options)?;
    let fields = writer.parquet_schema().fields().to_vec();
    // Like polars' own writer, an empty shard gets no row group at all.
    for batch in df.iter_chunks(CompatLevel::newest(), false) {
        if batch.is_empty() {
            continue;
        }
        let rows = batch.len() as u64;
        writer.write(
            rows,
            row_group_iter(batch, encodings.clone(), fields.clone(), options),
        )?;
    }
    writer.end(None)?;
    Ok(())
}

/// Reads a shard written by [`write_shard`], checking every row's size.
pub fn read_shard(path: &Path, pixels: usize, genres: usize) -> Result<Shard, StageError> {
    let df = read_table(path)?;
    let (ids, posters) = ids_and_posters(&df, path)?;
    let mut images = Vec::with_capacity(ids.len() * pixels);
    let binary = typed_column(&df, "image", path, |c| c.binary())?;
    for (row, value) in binary.iter().enumerate() {
        let value = value.unwrap_or_default();
        if value.len() != pixels {
            return Err(StageError::invalid(format!(
                "shard `{}` row {row}: image has {} values, expected {pixels}",
                path.display(),
                value.len()
            )));
        }
        images.extend_from_slice(value);
    }
    let labels = labels_column(&df, ids.len(), genres, path)?;
    Ok(Shard {
        ids,
        posters,
        images,
        labels,
    })
}

/// Reads a shard's ids, posters and labels, leaving its images unread (`images` stays empty).
pub fn read_shard_labels(path: &Path, genres: usize) -> Result<Shard, StageError> {
    let df = read_columns(path, &[column::ID, "poster", "labels"])?;
    let (ids, posters) = ids_and_posters(&df, path)?;
    let labels = labels_column(&df, ids.len(), genres, path)?;
    Ok(Shard {
        ids,
        posters,
        images: Vec::new(),
        labels,
    })
}

/// The `imdbId` and `poster` columns of a shard (images or embeddings).
pub fn ids_and_posters(df: &DataFrame, path: &Path) -> Result<(Vec<i64>, Vec<String>), StageError> {
    let ids = crate::movies::ids(df, path)?;
    let posters = str_column(df, "poster", path)?
        .iter()
        .map(|p| p.unwrap_or_default().to_string())
        .collect();
    Ok((ids, posters))
}

fn labels_column(
    df: &DataFrame,
    rows: usize,
    genres: usize,
    path: &Path,
) -> Result<Vec<u8>, StageError> {
    let inner = typed_column(df, "labels", path, |c| c.array())?
        .get_inner()
        .rechunk();
    let labels = inner
        .u8()
        .during(format!("labels of `{}`", path.display()))?
        .iter()
        .map(|v| v.unwrap_or_default())
        .collect::<Vec<u8>>();
    if labels.len() != rows * genres {
        return Err(StageError::invalid(format!(
            "shard `{}`: {} label values for {rows} rows of {genres} genres",
            path.display(),
            labels.len(),
        )));
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.parquet");
        let shard = Shard {
            ids: vec![7, 9],
            posters: vec!["posters/a".into(), "posters/b".into()],
            images: (0..24).collect(),
            labels: vec![1, 0, 1, 0, 0, 1],
        };
        write_shard(&path, &shard, 12, 3).unwrap();
        assert_eq!(read_shard(&path, 12, 3).unwrap(), shard);
    }

    #[test]
    fn an_empty_shard_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.parquet");
        write_shard(&path, &Shard::default(), 12, 3).unwrap();
        assert_eq!(read_shard(&path, 12, 3).unwrap(), Shard::default());
    }

    #[test]
    fn wrong_pixel_count_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.parquet");
        let shard = Shard {
            ids: vec![7],
            posters: vec!["posters/a".into()],
            images: (0..12).collect(),
            labels: vec![1, 0, 1],
        };
        write_shard(&path, &shard, 12, 3).unwrap();
        assert!(read_shard(&path, 10, 3).is_err());
    }
}
