//! Embedding shards: one feature vector per poster, beside its labels.
//!
//! | column | type | content |
//! |---|---|---|
//! | `imdbId` | Int64 | the movie |
//! | `poster` | String | the poster's file in `download`'s output (names its content) |
//! | `embedding` | FixedSizeList(Float32, dim) | the backbone's features |
//! | `labels` | FixedSizeList(UInt8, genres) | multi-hot, in the order of `meta.json`'s `genres` |
//!
//! `meta.json` beside them has `layout: "embedding"`, so a reader can tell these from image shards.

use std::path::{Path, PathBuf};

use pipeline_api::{ResultExt, StageError, read_json, write_json};
use polars::prelude::*;
use serde::{Deserialize, Serialize};

use crate::preparation::Preparation;
use crate::{ShardFile, ids_and_posters, read_table, write_table};

/// `layout` of embedding shards' `meta.json`.
pub const EMBEDDING_LAYOUT: &str = "embedding";

/// Shape, vocabulary and provenance of a set of embedding shards (`meta.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EmbeddingMeta {
    /// Always [`EMBEDDING_LAYOUT`].
    pub layout: String,
    /// Values per embedding.
    pub dim: usize,
    /// The network that made them (`efficientnet-lite0`).
    pub backbone: String,
    /// The size posters were fitted into before the backbone saw them.
    pub input_width: usize,
    /// See `input_width`.
    pub input_height: usize,
    /// Genre vocabulary; `labels` follow this order.
    pub genres: Vec<String>,
    /// Shard files relative to `meta.json`, with their row counts.
    pub shards: Vec<ShardFile>,
    /// How the posters were prepared and embedded (absent in outputs of older builds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preparation: Option<Preparation>,
}

impl EmbeddingMeta {
    /// Total rows over all shards.
    pub fn rows(&self) -> usize {
        self.shards.iter().map(|s| s.rows).sum()
    }

    /// Reads `dir/meta.json`, refusing image shards with a clear error.
    pub fn load(dir: &Path) -> Result<Self, StageError> {
        let path = dir.join("meta.json");
        let meta: serde_json::Value = read_json(&path)?;
        if meta.get("layout").and_then(|l| l.as_str()) != Some(EMBEDDING_LAYOUT) {
            return Err(StageError::invalid(format!(
                "`{}` describes image shards, not embeddings: bind this input to an `embed` stage",
                path.display()
            )));
        }
        serde_json::from_value(meta).during(format!("parsing `{}`", path.display()))
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

/// Whether `dir/meta.json` describes embedding shards (`false` when unreadable).
pub fn is_embedding_dir(dir: &Path) -> bool {
    read_json::<serde_json::Value>(&dir.join("meta.json"))
        .ok()
        .and_then(|m| m.get("layout").and_then(|l| l.as_str()).map(str::to_string))
        .is_some_and(|l| l == EMBEDDING_LAYOUT)
}

/// Rows of embedding shards in memory.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EmbeddingShard {
    /// Movie ids.
    pub ids: Vec<i64>,
    /// The poster file behind each row.
    pub posters: Vec<String>,
    /// `ids.len() * dim` values.
    pub embeddings: Vec<f32>,
    /// `ids.len() * genres` 0/1 values.
    pub labels: Vec<u8>,
}

impl EmbeddingShard {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether it has no rows.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Appends all rows of `other`.
    pub fn extend(&mut self, other: EmbeddingShard) {
        self.ids.extend(other.ids);
        self.posters.extend(other.posters);
        self.embeddings.extend(other.embeddings);
        self.labels.extend(other.labels);
    }
}

/// A `FixedSizeList(T, width)` column of `rows` rows from flat row-major `values`.
pub(crate) fn fixed_list<T: PolarsNumericType>(
    name: &str,
    values: Vec<T::Native>,
    width: usize,
    rows: usize,
    dtype: &DataType,
) -> Column {
    let values = ChunkedArray::<T>::from_vec(name.into(), values);
    ArrayChunked::from_aligned_values(name.into(), dtype, width, values.chunks().clone(), rows)
        .into_series()
        .into_column()
}

/// Writes `shard` to `path`; `dim` and `genres` are the list widths.
pub fn write_embedding_shard(
    path: &Path,
    shard: &EmbeddingShard,
    dim: usize,
    genres: usize,
) -> Result<(), StageError> {
    let n = shard.len();
    if shard.embeddings.len() != n * dim
        || shard.labels.len() != n * genres
        || shard.posters.len() != n
    {
        return Err(StageError::invalid(format!(
            "embedding shard `{}`: {n} rows but {} posters, {} values and {} labels",
            path.display(),
            shard.posters.len(),
            shard.embeddings.len(),
            shard.labels.len()
        )));
    }
    let columns = vec![
        Column::new(crate::column::ID.into(), shard.ids.clone()),
        Column::new("poster".into(), shard.posters.clone()),
        fixed_list::<Float32Type>(
            "embedding",
            shard.embeddings.clone(),
            dim,
            n,
            &DataType::Float32,
        ),
        fixed_list::<UInt8Type>("labels", shard.labels.clone(), genres, n, &DataType::UInt8),
    ];
    let mut df =
        DataFrame::new(n, columns).during(format!("building shard `{}`", path.display()))?;
    write_table(path, &mut df)
}

/// The flat values of the fixed-size list column `name`, checked to be `rows * width` long.
pub(crate) fn list_values<T: PolarsNumericType>(
    df: &DataFrame,
    name: &str,
    rows: usize,
    width: usize,
    path: &Path,
) -> Result<Vec<T::Native>, StageError> {
    let inner = crate::typed_column(df, name, path, |c| c.array())?
        .get_inner()
        .rechunk();
    let values: Vec<T::Native> = inner
        .unpack::<T>()
        .during(format!("values of `{name}` in `{}`", path.display()))?
        .iter()
        .map(|v| v.unwrap_or_default())
        .collect();
    if values.len() != rows * width {
        return Err(StageError::invalid(format!(
            "shard `{}`: {} `{name}` values for {rows} rows of {width}",
            path.display(),
            values.len()
        )));
    }
    Ok(values)
}

/// Reads an embedding shard written by [`write_embedding_shard`].
pub fn read_embedding_shard(
    path: &Path,
    dim: usize,
    genres: usize,
) -> Result<EmbeddingShard, StageError> {
    let df = read_table(path)?;
    let (ids, posters) = ids_and_posters(&df, path)?;
    let embeddings = list_values::<Float32Type>(&df, "embedding", ids.len(), dim, path)?;
    let labels = list_values::<UInt8Type>(&df, "labels", ids.len(), genres, path)?;
    Ok(EmbeddingShard {
        ids,
        posters,
        embeddings,
        labels,
    })
}

/// The labels `[rows, genres]` of an embedding shard, its vectors left unread.
pub fn read_embedding_labels(path: &Path, genres: usize) -> Result<Vec<u8>, StageError> {
    let df = crate::read_columns(path, &["labels"])?;
    list_values::<UInt8Type>(&df, "labels", df.height(), genres, path)
}

/// Every shard of the embedding set in `dir`, in memory (5 KB per poster at 1,280 values).
pub fn load_embeddings(dir: &Path) -> Result<(EmbeddingMeta, EmbeddingShard), StageError> {
    let meta = EmbeddingMeta::load(dir)?;
    let mut all = EmbeddingShard::default();
    for path in meta.paths(dir) {
        all.extend(read_embedding_shard(&path, meta.dim, meta.genres.len())?);
    }
    Ok((meta, all))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedding_shard_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.parquet");
        let shard = EmbeddingShard {
            ids: vec![3, 4],
            posters: vec!["posters/a".into(), "posters/b".into()],
            embeddings: vec![0.5, -1.25, 3.0, 6.0],
            labels: vec![1, 0, 0, 0, 1, 1],
        };
        write_embedding_shard(&path, &shard, 2, 3).unwrap();
        assert_eq!(read_embedding_shard(&path, 2, 3).unwrap(), shard);
        assert!(read_embedding_shard(&path, 3, 3).is_err(), "wrong width");
    }
}
