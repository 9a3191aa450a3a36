//! Heads (`linear`, `mlp`) on the embeddings of an `embed` output: the task the loop trains, and
//! an ensemble's members merged into one head.

use burn::prelude::*;
use pipeline_api::{ResultExt, StageError, create_dir};
use stage_shards::embedding::{EmbeddingShard, load_embeddings};

use crate::fit;
use crate::head::HeadNet;
use crate::noise;
use crate::outcome::{Trained, announce, empty_training_split, fit_and_save};
use crate::params::TrainParams;
use crate::spec::{EmbeddingInput, HeadArchitecture, ModelSpec, Standardize};
use crate::task::{Labels, Task, TrainingRun};

/// Trains a head on the embeddings of an `embed` output.
pub fn train_head(
    architecture: HeadArchitecture,
    run: &TrainingRun<'_>,
) -> Result<Trained, StageError> {
    let TrainingRun {
        ctx,
        params,
        data,
        device,
        device_name,
    } = *run;
    let (meta, mut train) = load_embeddings(&data.join("train")).map_err(|e| {
        StageError::invalid(format!(
            "architecture `{}` reads embeddings: {e}",
            params.architecture.name()
        ))
    })?;
    let (_, mut val) = load_embeddings(&data.join("val"))?;
    if train.is_empty() {
        return Err(empty_training_split());
    }
    let standardize = Standardize::fit(&train.embeddings, meta.dim);
    standardize.apply(&mut train.embeddings);
    standardize.apply(&mut val.embeddings);
    let spec = ModelSpec {
        architecture: params.architecture,
        width: meta.input_width,
        height: meta.input_height,
        genres: meta.genres.clone(),
        hidden: params.hidden,
        dropout: params.dropout,
        embedding: Some(EmbeddingInput {
            backbone: meta.backbone.clone(),
            dim: meta.dim,
            standardize,
        }),
        decision: None,
        preparation: meta.preparation.clone(),
    };
    let autodiff = device.clone().autodiff();
    let task = HeadTask {
        train: &train,
        val: &val,
        dim: meta.dim,
        genres: meta.genres.len(),
        autodiff: &autodiff,
        inner: device,
        dropout: params.dropout,
        batch_size: params.batch_size,
    };
    let net = noise::initialise(&autodiff, params.seed, || {
        HeadNet::new(architecture, &spec, meta.dim, &autodiff)
    });
    announce(
        ctx,
        &spec,
        net.num_params(),
        device_name,
        train.len(),
        val.len(),
        params,
    );
    let labels = Labels {
        train: &train.labels,
        val: &val.labels,
        genres: meta.genres.len(),
    };
    if params.ensemble == 1 {
        return fit_and_save(&task, net, run, &labels, spec);
    }
    train_ensemble(architecture, run, &task, &labels, spec)
}

/// An ensemble: members from seeds `seed`, `seed + 1`, ..., each with its own early stopping and
/// checkpoints, merged into one head whose logit is their mean. The decision rule is then fitted
/// on the merged head's validation probabilities, as for a single head.
fn train_ensemble(
    architecture: HeadArchitecture,
    run: &TrainingRun<'_>,
    task: &HeadTask<'_>,
    labels: &Labels<'_>,
    mut spec: ModelSpec,
) -> Result<Trained, StageError> {
    let (ctx, params) = (run.ctx, run.params);
    let mut members = Vec::with_capacity(params.ensemble);
    let mut histories = Vec::with_capacity(params.ensemble);
    let mut timings = Vec::with_capacity(params.ensemble);
    for member in 0..params.ensemble {
        let member_params = TrainParams {
            seed: params.seed.wrapping_add(member as u64),
            ..params.clone()
        };
        let net = noise::initialise(task.autodiff, member_params.seed, || {
            HeadNet::new(architecture, &spec, task.dim, task.autodiff)
        });
        ctx.progress.detail(&format!(
            "ensemble member {}/{} (seed {})",
            member + 1,
            params.ensemble,
            member_params.seed
        ));
        let checkpoints = ctx.work_dir.join(format!("member-{}", member + 1));
        create_dir(&checkpoints)?;
        let fitted = fit::fit(
            task,
            net,
            &member_params,
            labels,
            run.device_name,
            ctx,
            &checkpoints,
        )?;
        members.push(fitted.net);
        histories.push(fitted.history);
        timings.push(fitted.timing);
    }
    let merged = noise::number_params(HeadNet::mean_of(&members));
    if architecture == HeadArchitecture::Mlp {
        spec.hidden = merged.hidden_units();
    }
    let val_probs = crate::loss::sigmoid_on_host(&task.val_logits(&merged)?);
    spec.decision = Some(fit::decide(params, &val_probs, labels));
    merged
        .save_file(ctx.out_dir.join("model"))
        .during("saving the model")?;
    let mut history = histories[0].clone();
    history.members = histories;
    Ok(Trained {
        spec,
        history,
        timings,
    })
}

/// Training and validation embeddings for a head.
pub(crate) struct HeadTask<'a> {
    pub(crate) train: &'a EmbeddingShard,
    pub(crate) val: &'a EmbeddingShard,
    pub(crate) dim: usize,
    pub(crate) genres: usize,
    pub(crate) autodiff: &'a Device,
    pub(crate) inner: &'a Device,
    pub(crate) dropout: f64,
    pub(crate) batch_size: usize,
}

fn rows_tensor(values: &[f32], rows: &[usize], dim: usize, device: &Device) -> Tensor<2> {
    let mut x = Vec::with_capacity(rows.len() * dim);
    for &r in rows {
        x.extend_from_slice(&values[r * dim..(r + 1) * dim]);
    }
    Tensor::<2>::from_data(TensorData::new(x, [rows.len(), dim]), device)
}

fn targets_tensor(labels: &[u8], rows: &[usize], genres: usize, device: &Device) -> Tensor<2, Int> {
    let mut y = Vec::with_capacity(rows.len() * genres);
    for &r in rows {
        y.extend(
            labels[r * genres..(r + 1) * genres]
                .iter()
                .map(|&l| l as i64),
        );
    }
    Tensor::<2, Int>::from_data(TensorData::new(y, [rows.len(), genres]), device)
}

impl Task for HeadTask<'_> {
    type Net = HeadNet;
    /// Row numbers of the training embeddings (all in memory: 5 KB per poster).
    type Batch = Vec<usize>;
    fn train_rows(&self) -> usize {
        self.train.len()
    }
    fn train_batches(
        &self,
        seed: u64,
        epoch: usize,
    ) -> Box<dyn Iterator<Item = Result<Vec<usize>, StageError>> + '_> {
        let mut order: Vec<usize> = (0..self.train.len()).collect();
        noise::Draws::for_epoch(seed, noise::Stream::Shuffle, epoch).shuffle(&mut order);
        let batches: Vec<Vec<usize>> = order
            .chunks(self.batch_size)
            .map(<[usize]>::to_vec)
            .collect();
        Box::new(batches.into_iter().map(Ok))
    }
    fn batch_rows(batch: &Vec<usize>) -> usize {
        batch.len()
    }
    fn train_step(
        &self,
        net: &HeadNet,
        rows: Vec<usize>,
        dropout: &mut noise::Draws,
    ) -> (Tensor<2>, Tensor<2, Int>) {
        let x = rows_tensor(&self.train.embeddings, &rows, self.dim, self.autodiff);
        let y = targets_tensor(&self.train.labels, &rows, self.genres, self.autodiff);
        let logits = net.forward_train(x, self.dropout, dropout);
        (logits, y)
    }
    fn val_logits(&self, net: &HeadNet) -> Result<Vec<f32>, StageError> {
        let rows: Vec<usize> = (0..self.val.len()).collect();
        let mut out = Vec::with_capacity(self.val.len() * self.genres);
        for chunk in rows.chunks(1024) {
            let x = rows_tensor(&self.val.embeddings, chunk, self.dim, self.inner);
            out.extend(
                net.forward(x)
                    .try_into_vec_as::<f32>()
                    .during("reading validation logits")?,
            );
        }
        Ok(out)
    }
}
