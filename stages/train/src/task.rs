//! What the training loop needs of an architecture family and its data ([`Task`]), the labels
//! it scores against ([`Labels`]), and what every training of a run shares ([`TrainingRun`]).

use std::path::Path;

use burn::module::Module;
use burn::prelude::*;
use pipeline_api::{StageContext, StageError};

use crate::TrainParams;
use crate::noise::Draws;

/// What the head and the image trainings of one `train` run both take.
pub struct TrainingRun<'a> {
    pub ctx: &'a StageContext<'a>,
    pub params: &'a TrainParams,
    /// The split's output: `train/`, `val/`, `test/`.
    pub data: &'a Path,
    pub device: &'a Device,
    /// As `history.json` names it.
    pub device_name: &'a str,
}

/// What the loop needs of an architecture and its data.
pub trait Task {
    /// The network.
    type Net: Module + Clone;
    /// One mini-batch, as the task's data source yields it.
    type Batch;
    /// Training rows.
    fn train_rows(&self) -> usize;
    /// The training batches of `epoch` (1-based), in the order drawn from `seed` (shuffled, and
    /// for images augmented).
    fn train_batches(
        &self,
        seed: u64,
        epoch: usize,
    ) -> Box<dyn Iterator<Item = Result<Self::Batch, StageError>> + '_>;
    /// Rows in `batch`.
    fn batch_rows(batch: &Self::Batch) -> usize;
    /// Logits and 0/1 targets of `batch` through `net` (on the autodiff device), dropout masks
    /// drawn from `dropout`.
    fn train_step(
        &self,
        net: &Self::Net,
        batch: Self::Batch,
        dropout: &mut Draws,
    ) -> (Tensor<2>, Tensor<2, Int>);
    /// Logits `[val rows, genres]` of the validation split through `net` (a validation copy).
    fn val_logits(&self, net: &Self::Net) -> Result<Vec<f32>, StageError>;
}

/// The labels the loop scores against, row-major `[rows, genres]`.
pub struct Labels<'a> {
    /// Training split.
    pub train: &'a [u8],
    /// Validation split.
    pub val: &'a [u8],
    /// Genres per row.
    pub genres: usize,
}

impl Labels<'_> {
    /// PyTorch's `pos_weight` from the training split: negatives / positives per genre (1 for a
    /// genre without positives).
    pub fn pos_weight(&self) -> Vec<f32> {
        let rows = self.train.len() / self.genres.max(1);
        (0..self.genres)
            .map(|g| {
                let pos = (0..rows)
                    .filter(|r| self.train[r * self.genres + g] == 1)
                    .count();
                if pos == 0 {
                    1.0
                } else {
                    (rows - pos) as f32 / pos as f32
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pos_weight_is_negatives_over_positives() {
        // 4 rows x 2 genres: genre 0 has 1 positive, genre 1 none.
        let train = [1, 0, 0, 0, 0, 0, 0, 0];
        let labels = Labels {
            train: &train,
            val: &[],
            genres: 2,
        };
        assert_eq!(labels.pos_weight(), [3.0, 1.0]);
    }
}
