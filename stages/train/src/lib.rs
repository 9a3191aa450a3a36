//! `train`: a multi-label genre classifier with Burn: sigmoid outputs, binary cross-entropy with
//! logits (optional per-genre `pos_weight`), Adam or AdamW, early stopping that keeps the best
//! epoch, and a decision rule chosen on the validation split.
//!
//! Two families of networks, told apart by what their `data` input holds:
//! - heads (`linear`, `mlp`) read frozen backbone embeddings from an `embed` output; on 16,000
//!   posters an epoch takes about a second;
//! - image networks (`small-cnn`, `keras-baseline`, `efficientnet-lite0`) read image shards from a
//!   `split` output; `efficientnet-lite0` starts from the ImageNet weights bound as
//!   `files: {weights: ...}` and fine-tunes its last `finetune_blocks` blocks.
//!
//! Runs on Burn's pure-Rust `flex` CPU backend; built with the `tch` feature it can run on libtorch
//! (`PIPELINE_DEVICE=cuda` or `torch-cpu`). The device is a runtime knob and never part of the
//! cache key. Writes `model.bpk` (the weights of the kept epoch), `model.json` (what rebuilds the
//! network, and its decision rule) and `history.json` (per-epoch losses and validation F1).

pub mod augment;
pub mod batches;
pub mod checkpoint;
pub mod fit;
pub mod head;
pub mod model;
pub mod noise;
pub mod schedule;
pub mod trained;

use std::path::Path;

use burn::prelude::*;
use pipeline_api::{
    Kind, KindInfo, ParamError, ResultExt, RunSummary, StageContext, StageError, check_range,
    create_dir, write_json,
};
use serde::{Deserialize, Serialize};
use stage_backbone::BLOCKS;
use stage_metrics::{Decision, DecisionRule};
use stage_shards::embedding::{EmbeddingShard, load_embeddings};

/// The compute device type and its selection, for stages that run a trained model.
pub use burn::prelude::Device;
pub use fit::{EpochRecord, History};
pub use head::HeadNet;
pub use model::{
    Architecture, EmbeddingInput, ModelSpec, PosterNet, Reads, Standardize, image_input,
    images_to_tensor,
};
pub use stage_backbone::{choose_device, select_device, supported_devices};
pub use trained::{Scored, TrainedModel, split_labels};

use augment::Augment;
use batches::{Batch, BatchStream, ImageSplit, Pass};
use fit::{Fitted, Labels, Task};
use model::Lite0Classifier;
use schedule::Schedule;

/// The train stage kind.
pub struct Train;

/// The optimiser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Optimizer {
    /// Adam; `weight_decay` adds an L2 penalty to the gradients.
    Adam,
    /// AdamW; `weight_decay` is decoupled (with 0 it is Adam).
    Adamw,
    /// SGD with momentum 0.9; `weight_decay` is an L2 penalty on the gradients. On frozen
    /// embeddings it finds the regularised linear solution Adam's per-weight steps drift away from.
    Sgd,
}

/// The training loss. Validation loss (what `early_stopping` watches) is binary cross-entropy
/// whatever this is, so epochs stay comparable across losses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Loss {
    /// Binary cross-entropy with logits (PyTorch's `BCEWithLogitsLoss`).
    Bce,
    /// Focal loss (Lin et al. 2017): each term scaled by `(1 - p_t)^focal_gamma`, so the many easy
    /// negatives of a skewed multi-label set weigh less.
    Focal,
    /// Asymmetric loss (Ridnik et al. 2021) with the paper's settings: positives plain BCE,
    /// negatives scaled by `p_m^4` with `p_m = max(p - 0.05, 0)` (easy negatives drop out).
    Asymmetric,
}

/// What early stopping watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Monitor {
    /// The validation loss (lower is better).
    ValLoss,
    /// Validation macro-F1 under the decision rule (higher is better).
    ValMacroF1,
}

impl Monitor {
    /// The name used in `pipeline.yaml` and `history.json`.
    pub fn name(self) -> &'static str {
        match self {
            Self::ValLoss => "val-loss",
            Self::ValMacroF1 => "val-macro-f1",
        }
    }
}

/// `early_stopping:` of `train`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EarlyStopping {
    /// What decides the best epoch (kept whatever `patience` is).
    pub monitor: Monitor,
    /// Stop after this many epochs without improvement; 0 runs every epoch (0 to 10,000).
    pub patience: usize,
}

impl Default for EarlyStopping {
    fn default() -> Self {
        Self {
            monitor: Monitor::ValLoss,
            patience: 0,
        }
    }
}

/// Params of `train`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainParams {
    /// `small-cnn` (default), `keras-baseline`, `efficientnet-lite0` (images) or `linear`, `mlp`
    /// (embeddings).
    pub architecture: Architecture,
    /// Most passes over the training split (1 to 10,000).
    pub epochs: usize,
    /// Posters per gradient step (1 to 4096).
    pub batch_size: usize,
    /// Learning rate, in (0, 1).
    pub learning_rate: f64,
    /// Seed of weight initialisation and shuffling (any whole number up to 2^64 - 1).
    pub seed: u64,
    /// `adamw` (default) or `adam`.
    pub optimizer: Optimizer,
    /// Weight decay (decoupled for AdamW, L2 for Adam), in [0, 1).
    pub weight_decay: f64,
    /// Weight each genre's positives by negatives / positives of the training split (PyTorch's
    /// `BCEWithLogitsLoss(pos_weight=...)`).
    pub pos_weight: bool,
    /// `bce` (default), `focal` or `asymmetric`.
    pub loss: Loss,
    /// The focusing exponent of `loss: focal`, in [0, 10] (0 is BCE).
    pub focal_gamma: f64,
    /// Heads: train this many heads from seeds `seed`, `seed + 1`, ... and keep their mean logit
    /// as one head (an MLP of `ensemble x hidden` units), 1 to 16.
    pub ensemble: usize,
    /// Which epoch to keep, and when to stop.
    pub early_stopping: EarlyStopping,
    /// How probabilities become genres (`auto`, `per-genre-f1`, `global`, `top-k`, `micro-f1`).
    pub decision: DecisionRule,
    /// Hidden units of `mlp` (1 to 65,536).
    pub hidden: usize,
    /// Dropout before the output layer of `linear`, `mlp` and `efficientnet-lite0`, in [0, 1).
    pub dropout: f64,
    /// `efficientnet-lite0`: how many of its 16 blocks, counted from the end, are trained (the
    /// head conv and the new genre layer always are; the stem never).
    pub finetune_blocks: usize,
    /// The learning rate over the run: `{decay: constant|cosine|step, warmup_epochs, ...}`.
    pub schedule: Schedule,
    /// Image architectures: augmentation of the training split, on the fly.
    pub augment: Augment,
    /// Image architectures: posters read before a shuffle (the shard order is shuffled too).
    /// Bounds memory: this many decoded posters, whatever the size of the split (1 to 1,000,000).
    pub shuffle_window: usize,
}

impl Default for TrainParams {
    fn default() -> Self {
        Self {
            architecture: Architecture::SmallCnn,
            epochs: 10,
            batch_size: 32,
            learning_rate: 1e-3,
            seed: 7,
            optimizer: Optimizer::Adamw,
            weight_decay: 0.0,
            pos_weight: false,
            loss: Loss::Bce,
            focal_gamma: 2.0,
            ensemble: 1,
            early_stopping: EarlyStopping::default(),
            decision: DecisionRule::Auto,
            hidden: 512,
            dropout: 0.2,
            finetune_blocks: 2,
            schedule: Schedule::default(),
            augment: Augment::default(),
            shuffle_window: 2048,
        }
    }
}

/// What the engine knows of the kind.
const INFO: KindInfo = KindInfo {
    inputs: &["data"],
    input_kinds: &[("data", &["split", "embed"])],
    optional_files: &["weights"],
    ..KindInfo::new(
        "train",
        // 5: shuffling, dropout and augmentation draw from ChaCha8 (rand_chacha), not splitmix64.
        // 6: dropout masks from a counter-based hash keyed by one draw, made on the GPU there.
        // 7: `auto` keeps the best macro-F1 among rules 0.05 micro-F1 above the baseline; `shrunk`.
        7,
        "train a multi-label genre classifier with Burn: a head on embeddings or a CNN on images",
        pipeline_api::locked_dependencies!(),
    )
};

impl Kind for Train {
    type Params = TrainParams;
    fn info(&self) -> &'static KindInfo {
        &INFO
    }
    fn check(p: &TrainParams) -> Result<(), ParamError> {
        check_range("epochs", p.epochs, 1..=10_000, "")?;
        check_range("batch_size", p.batch_size, 1..=4096, " posters")?;
        if !(p.learning_rate > 0.0 && p.learning_rate < 1.0) {
            return Err(ParamError::at("learning_rate", "must be in (0, 1)"));
        }
        if !(0.0..1.0).contains(&p.weight_decay) {
            return Err(ParamError::at("weight_decay", "must be in [0, 1)"));
        }
        if !(0.0..1.0).contains(&p.dropout) {
            return Err(ParamError::at("dropout", "must be in [0, 1)"));
        }
        check_range("hidden", p.hidden, 1..=65_536, " units")?;
        if !(0.0..=10.0).contains(&p.focal_gamma) {
            return Err(ParamError::at("focal_gamma", "must be in [0, 10]"));
        }
        check_range("ensemble", p.ensemble, 1..=16, " heads")?;
        if p.ensemble > 1 && p.architecture.reads() != Reads::Embeddings {
            return Err(ParamError::at(
                "ensemble",
                format!(
                    "`{}` trains on images for minutes an epoch: ensembles are for the heads (`linear`, `mlp`)",
                    p.architecture.name()
                ),
            ));
        }
        check_range(
            "shuffle_window",
            p.shuffle_window,
            1..=1_000_000,
            " posters",
        )?;
        check_range(
            "early_stopping.patience",
            p.early_stopping.patience,
            0..=10_000,
            " epochs",
        )?;
        p.schedule
            .check(p.epochs)
            .map_err(|(path, why)| ParamError::at(path, why))?;
        p.augment
            .check()
            .map_err(|(path, why)| ParamError::at(path, why))?;
        if p.augment.is_active() && p.architecture.reads() == Reads::Embeddings {
            return Err(ParamError::at(
                "augment",
                format!(
                    "`{}` reads embeddings, computed once per poster: augmentation needs an image architecture",
                    p.architecture.name()
                ),
            ));
        }
        // EfficientNet-Lite0 has BLOCKS blocks.
        check_range("finetune_blocks", p.finetune_blocks, 0..=BLOCKS, " blocks")?;
        Ok(())
    }
    fn run(&self, ctx: &StageContext<'_>, params: TrainParams) -> Result<RunSummary, StageError> {
        let data = ctx.input("data")?;
        let (device, device_name) =
            select_device().map_err(|e| StageError::invalid(e.to_string()))?;
        let (spec, history) = match params.architecture.reads() {
            Reads::Embeddings => train_head(ctx, &params, data, &device, &device_name)?,
            Reads::Images => train_images(ctx, &params, data, &device, &device_name)?,
        };
        write_json(&ctx.out_dir.join("model.json"), &spec)?;
        write_json(&ctx.out_dir.join("history.json"), &history)?;
        // Read back as evaluate and predict read it, then written for other tools.
        TrainedModel::load(ctx.out_dir, &device)?
            .export_safetensors(&ctx.out_dir.join("model.safetensors"))?;
        let best = &history.epochs[history.best_epoch - 1];
        let decision = spec.decision.as_ref().expect("train always decides");
        Ok(RunSummary::new([
            format!(
                "{} on {}: {} epochs over {} posters in {:.1}s; kept epoch {} by {} (train loss {:.4}, val loss {:.4}){}",
                spec.describe(),
                history.device,
                history.epochs.len(),
                history.train_rows,
                history.seconds,
                history.best_epoch,
                history.monitor,
                best.train_loss,
                best.val_loss,
                if history.stopped_early {
                    ", stopped early"
                } else {
                    ""
                }
            ),
            format!(
                "decision `{}` (val micro-F1 {:.3}, macro-F1 {:.3}; constant baseline {:.3} / {:.3})",
                decision.rule.name(),
                best.val_micro_f1,
                best.val_macro_f1,
                decision.baseline.micro_f1,
                decision.baseline.macro_f1
            ),
        ]))
    }
}

fn empty_training_split() -> StageError {
    StageError::invalid("the training split is empty; lower `filter.min_genre_count` or add movies")
}

/// Trains a head on the embeddings of an `embed` output.
fn train_head(
    ctx: &StageContext<'_>,
    params: &TrainParams,
    data: &Path,
    device: &Device,
    device_name: &str,
) -> Result<(ModelSpec, History), StageError> {
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
    let mut spec = ModelSpec {
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
        HeadNet::new(&spec, meta.dim, &autodiff)
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
        let (history, decision) = fit_and_save(&task, net, params, &labels, device_name, ctx)?;
        spec.decision = Some(decision);
        return Ok((spec, history));
    }
    // An ensemble: members from seeds `seed`, `seed + 1`, ..., each with its own early stopping
    // and checkpoints, merged into one head whose logit is their mean. The decision rule is then
    // fitted on the merged head's validation probabilities, as for a single head.
    let mut members = Vec::with_capacity(params.ensemble);
    let mut histories = Vec::with_capacity(params.ensemble);
    for member in 0..params.ensemble {
        let member_params = TrainParams {
            seed: params.seed.wrapping_add(member as u64),
            ..params.clone()
        };
        let net = noise::initialise(&autodiff, member_params.seed, || {
            HeadNet::new(&spec, meta.dim, &autodiff)
        });
        ctx.progress.note(&format!(
            "ensemble member {}/{} (seed {})",
            member + 1,
            params.ensemble,
            member_params.seed
        ));
        let checkpoints = ctx.work_dir.join(format!("member-{}", member + 1));
        create_dir(&checkpoints)?;
        let fitted = fit::fit(
            &task,
            net,
            &member_params,
            &labels,
            device_name,
            ctx,
            &checkpoints,
        )?;
        members.push(fitted.net);
        histories.push(fitted.history);
    }
    let merged = HeadNet::mean_of(&members);
    if spec.architecture == Architecture::Mlp {
        spec.hidden = merged.hidden_units();
    }
    let val_probs = fit::sigmoid_on_host(&task.val_logits(&merged)?);
    spec.decision = Some(fit::decide(params, &val_probs, &labels));
    merged
        .save_file(ctx.out_dir.join("model"))
        .during("saving the model")?;
    let mut history = histories[0].clone();
    history.seconds = histories.iter().map(|h| h.seconds).sum();
    history.members = histories;
    Ok((spec, history))
}

/// Fits `net` (with the decision rule of its kept epoch) and saves the
/// weights as `model.bpk`.
fn fit_and_save<T: Task>(
    task: &T,
    net: T::Net,
    params: &TrainParams,
    labels: &Labels<'_>,
    device_name: &str,
    ctx: &StageContext<'_>,
) -> Result<(History, Decision), StageError> {
    let Fitted {
        net,
        decision,
        history,
        ..
    } = fit::fit(task, net, params, labels, device_name, ctx, ctx.work_dir)?;
    net.save_file(ctx.out_dir.join("model"))
        .during("saving the model")?;
    Ok((history, decision))
}

/// Training and validation embeddings for a head.
struct HeadTask<'a> {
    train: &'a EmbeddingShard,
    val: &'a EmbeddingShard,
    dim: usize,
    genres: usize,
    autodiff: &'a Device,
    inner: &'a Device,
    dropout: f64,
    batch_size: usize,
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

/// The line printed as training starts: what is trained, on what, how big.
fn announce(
    ctx: &StageContext<'_>,
    spec: &ModelSpec,
    parameters: usize,
    device_name: &str,
    train_rows: usize,
    val_rows: usize,
    params: &TrainParams,
) {
    let augment = if params.augment.is_active() {
        format!(
            ", augment {}",
            serde_json::to_string(&params.augment).unwrap_or_default()
        )
    } else {
        String::new()
    };
    let decay = serde_json::to_value(params.schedule.decay)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    ctx.progress.note(&format!(
        "{} ({parameters} parameters) on {device_name}: {train_rows} train / {val_rows} val posters, batch {}, up to {} epochs, lr {} ({decay} schedule){augment}",
        spec.describe(),
        params.batch_size,
        params.epochs,
        params.learning_rate,
    ));
}

/// Trains an image network on the shards of a `split` output, streaming them.
fn train_images(
    ctx: &StageContext<'_>,
    params: &TrainParams,
    data: &Path,
    device: &Device,
    device_name: &str,
) -> Result<(ModelSpec, History), StageError> {
    let train = ImageSplit::open(data, "train")?;
    let val = ImageSplit::open(data, "val")?;
    if train.rows() == 0 {
        return Err(empty_training_split());
    }
    let meta = &train.meta;
    let mut spec = ModelSpec {
        architecture: params.architecture,
        width: meta.width,
        height: meta.height,
        genres: meta.genres.clone(),
        hidden: 0,
        dropout: params.dropout,
        embedding: None,
        decision: None,
    };
    let autodiff = device.clone().autodiff();
    let (net, frozen) = if params.architecture == Architecture::EfficientnetLite0 {
        let weights = ctx.files.get("weights").ok_or_else(|| {
            StageError::invalid(
                "architecture `efficientnet-lite0` starts from ImageNet weights: add `files: {weights: models/efficientnet-lite0/efficientnet-lite0-57934424.pth}` to the stage",
            )
        })?;
        let backbone = stage_backbone::load(weights, stage_backbone::Variant::Lite0, &autodiff)
            .map_err(|e| StageError::invalid(e.to_string()))?;
        let net = noise::initialise(&autodiff, params.seed, || {
            PosterNet::new(&spec, Some(backbone), &autodiff)
        });
        // The blocks before `first` never change: one validation copy runs them outside autodiff.
        let frozen = match &net {
            PosterNet::Lite0(lite0) => lite0.valid(),
            _ => unreachable!("efficientnet-lite0 builds a Lite0 classifier"),
        };
        (net, Some((frozen, BLOCKS - params.finetune_blocks)))
    } else {
        let net = noise::initialise(&autodiff, params.seed, || {
            PosterNet::new(&spec, None, &autodiff)
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
        normalize: model::normalize(params.architecture),
    };
    let labels = Labels {
        train: &train_labels,
        val: &val_labels,
        genres: spec.genres.len(),
    };
    let (history, decision) = fit_and_save(&task, net, params, &labels, device_name, ctx)?;
    spec.decision = Some(decision);
    Ok((spec, history))
}

/// Training and validation images for an image network, streamed from their shards.
struct ImageTask<'a> {
    train: &'a ImageSplit,
    val: &'a ImageSplit,
    spec: &'a ModelSpec,
    autodiff: &'a Device,
    inner: &'a Device,
    /// Fine-tuning: the frozen copy and the first trained block.
    frozen: Option<(Lite0Classifier, usize)>,
    batch_size: usize,
    window_rows: usize,
    augment: Augment,
    normalize: augment::Normalize,
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

#[cfg(test)]
mod tests;
