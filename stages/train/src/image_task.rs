//! Image networks (`small-cnn`, `keras-baseline`, `efficientnet-lite0`) on the shards of a
//! `split` output, streamed: the task the loop trains.

use burn::prelude::*;
use pipeline_api::{ResultExt, StageError};
use stage_backbone::BLOCKS;

use crate::augment::{self, Augment};
use crate::batches::{Batch, BatchStream, ImageSplit, Pass};
use crate::model::{self, Lite0Classifier, PosterNet};
use crate::noise;
use crate::outcome::{Trained, announce, empty_training_split, fit_and_save};
use crate::spec::{ImageArchitecture, ModelSpec};
use crate::task::{Labels, Task, TrainingRun};

/// What a fine-tuned efficientnet-lite0 needs, said by the plan before anything runs.
pub(crate) const LITE0_WEIGHTS: &str = "architecture `efficientnet-lite0` starts from ImageNet weights: add `files: {weights: models/efficientnet-lite0/efficientnet-lite0-57934424.pth}` to the stage";

/// Trains an image network on the shards of a `split` output, streaming them.
pub fn train_images(
    architecture: ImageArchitecture,
    run: &TrainingRun<'_>,
) -> Result<Trained, StageError> {
    let TrainingRun {
        ctx,
        params,
        data,
        device,
        device_name,
    } = *run;
    let train = ImageSplit::open(data, "train")?;
    let val = ImageSplit::open(data, "val")?;
    if train.rows() == 0 {
        return Err(empty_training_split());
    }
    let meta = &train.meta;
    let spec = ModelSpec {
        architecture: params.architecture,
        width: meta.width,
        height: meta.height,
        genres: meta.genres.clone(),
        hidden: 0,
        dropout: params.dropout,
        embedding: None,
        decision: None,
        preparation: meta.preparation(),
    };
    let autodiff = device.clone().autodiff();
    let (net, frozen) = if architecture == ImageArchitecture::EfficientnetLite0 {
        let weights = ctx
            .files
            .get("weights")
            .ok_or_else(|| StageError::invalid(LITE0_WEIGHTS))?;
        let backbone = stage_backbone::load(weights, stage_backbone::Variant::Lite0, &autodiff)
            .map_err(|e| StageError::invalid(e.to_string()))?;
        let net = noise::initialise(&autodiff, params.seed, || {
            PosterNet::new(architecture, &spec, Some(backbone), &autodiff)
        });
        // The blocks before `first` never change: one validation copy runs them outside autodiff.
        let frozen = match &net {
            PosterNet::Lite0(lite0) => lite0.valid(),
            _ => unreachable!("efficientnet-lite0 builds a Lite0 classifier"),
        };
        (net, Some((frozen, BLOCKS - params.finetune_blocks)))
    } else {
        let net = noise::initialise(&autodiff, params.seed, || {
            PosterNet::new(architecture, &spec, None, &autodiff)
        });
        (net, None)
    };
    announce(
        ctx,
        &spec,
        net.parameter_count(),
        device_name,
        train.rows(),
        val.rows(),
        params,
    );
    let train_labels = train.labels()?;
    let val_labels = val.labels()?;
    let task = ImageTask {
        train: &train,
        val: &val,
        spec: &spec,
        autodiff: &autodiff,
        inner: device,
        frozen,
        batch_size: params.batch_size,
        window_rows: params.shuffle_window,
        augment: params.augment.clone(),
        normalize: model::normalize(architecture),
    };
    let labels = Labels {
        train: &train_labels,
        val: &val_labels,
        genres: spec.genres.len(),
    };
    fit_and_save(&task, net, run, &labels, spec.clone())
}

/// Training and validation images for an image network, streamed from their shards.
pub(crate) struct ImageTask<'a> {
    pub(crate) train: &'a ImageSplit,
    pub(crate) val: &'a ImageSplit,
    pub(crate) spec: &'a ModelSpec,
    pub(crate) autodiff: &'a Device,
    pub(crate) inner: &'a Device,
    /// Fine-tuning: the frozen copy and the first trained block.
    pub(crate) frozen: Option<(Lite0Classifier, usize)>,
    pub(crate) batch_size: usize,
    pub(crate) window_rows: usize,
    pub(crate) augment: Augment,
    pub(crate) normalize: augment::Normalize,
}

impl ImageTask<'_> {
    fn pass(&self, shuffle: Option<(u64, usize)>, batch_size: usize) -> Pass {
        Pass {
            batch_size,
            shuffle,
            window_rows: self.window_rows,
            augment: self.augment.clone(),
            normalize: self.normalize,
        }
    }

    fn input(&self, batch: Vec<f32>, rows: usize, device: &Device) -> Tensor<4> {
        let shape = [rows, 3, self.spec.height, self.spec.width];
        Tensor::<4>::from_data(TensorData::new(batch, shape), device)
    }
}

impl Task for ImageTask<'_> {
    type Net = PosterNet;
    type Batch = Batch;
    fn train_rows(&self) -> usize {
        self.train.rows()
    }
    fn train_batches(
        &self,
        seed: u64,
        epoch: usize,
    ) -> Box<dyn Iterator<Item = Result<Batch, StageError>> + '_> {
        Box::new(BatchStream::start(
            self.train,
            self.pass(Some((seed, epoch)), self.batch_size),
        ))
    }
    fn batch_rows(batch: &Batch) -> usize {
        batch.rows
    }
    fn train_step(
        &self,
        net: &PosterNet,
        batch: Batch,
        dropout: &mut noise::Draws,
    ) -> (Tensor<2>, Tensor<2, Int>) {
        let genres = self.spec.genres.len();
        let y = Tensor::<2, Int>::from_data(
            TensorData::new(batch.labels, [batch.rows, genres]),
            self.autodiff,
        );
        let logits = match (&self.frozen, net) {
            (Some((frozen, first)), PosterNet::Lite0(lite0)) => {
                let x = self.input(batch.input, batch.rows, self.inner);
                let activations = frozen.frozen_prefix(x, *first).autodiff();
                lite0.forward_from(activations, *first, Some(dropout))
            }
            _ => net.forward_train(
                self.input(batch.input, batch.rows, self.autodiff),
                Some(dropout),
            ),
        };
        (logits, y)
    }
    fn val_logits(&self, net: &PosterNet) -> Result<Vec<f32>, StageError> {
        let mut out = Vec::with_capacity(self.val.rows() * self.spec.genres.len());
        for batch in BatchStream::start(self.val, self.pass(None, self.batch_size * 2)) {
            let batch = batch?;
            let x = self.input(batch.input, batch.rows, self.inner);
            out.extend(
                net.forward(x)
                    .try_into_vec_as::<f32>()
                    .during("reading validation logits")?,
            );
        }
        Ok(out)
    }
}
