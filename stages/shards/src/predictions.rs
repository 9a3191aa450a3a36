//! `predictions.parquet`: a model's scores on the test split, one row per movie, for readers
//! outside this tool (pandas, scikit-learn) and for re-scoring.
//!
//! | column | type | content |
//! |---|---|---|
//! | `imdbId` | Int64 | the movie |
//! | `labels` | FixedSizeList(UInt8, genres) | true genres, multi-hot |
//! | `probs` | FixedSizeList(Float32, genres) | the model's probabilities |
//!
//! Both lists are in the order of `metrics.json`'s `genres`.

use std::path::Path;

use pipeline_api::{ResultExt, StageError};
use polars::prelude::*;

use crate::embedding::{fixed_list, list_values};
use crate::{read_table, write_table};

/// One model's test predictions, row-major `[rows, genres]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Predictions {
    /// Movie ids.
    pub ids: Vec<i64>,
    /// 0/1 truth.
    pub labels: Vec<u8>,
    /// Probabilities.
    pub probs: Vec<f32>,
}

impl Predictions {
    /// Writes them to `path` with `genres` values per row.
    pub fn write(&self, path: &Path, genres: usize) -> Result<(), StageError> {
        let n = self.ids.len();
        if self.labels.len() != n * genres || self.probs.len() != n * genres {
            return Err(StageError::invalid(format!(
                "predictions for `{}`: {n} movies but {} labels and {} probabilities for {genres} genres",
                path.display(),
                self.labels.len(),
                self.probs.len()
            )));
        }
        let columns = vec![
            Column::new(crate::column::ID.into(), self.ids.clone()),
            fixed_list::<UInt8Type>("labels", self.labels.clone(), genres, n, &DataType::UInt8),
            fixed_list::<Float32Type>("probs", self.probs.clone(), genres, n, &DataType::Float32),
        ];
        let mut df = DataFrame::new(n, columns).during(format!("building `{}`", path.display()))?;
        write_table(path, &mut df)
    }

    /// Reads what [`Predictions::write`] wrote.
    pub fn read(path: &Path, genres: usize) -> Result<Self, StageError> {
        let df = read_table(path)?;
        let rows = df.height();
        let ids = crate::movies::ids(&df, path)?;
        Ok(Self {
            ids,
            labels: list_values::<UInt8Type>(&df, "labels", rows, genres, path)?,
            probs: list_values::<Float32Type>(&df, "probs", rows, genres, path)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predictions_round_trip_and_a_short_list_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("predictions.parquet");
        let p = Predictions {
            ids: vec![7, 9],
            labels: vec![1, 0, 0, 0, 1, 1],
            probs: vec![0.9, 0.1, 0.2, 0.3, 0.8, 0.7],
        };
        p.write(&path, 3).unwrap();
        assert_eq!(Predictions::read(&path, 3).unwrap(), p);
        let err = Predictions {
            probs: vec![0.5],
            ..p
        }
        .write(&path, 3)
        .unwrap_err();
        assert!(err.to_string().contains("1 probabilities"), "{err}");
    }
}
