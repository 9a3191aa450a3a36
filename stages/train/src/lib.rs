//! `train`: a multi-label poster CNN with Burn — sigmoid outputs, binary cross-entropy with logits, Adam.
//!
//! Runs on Burn's pure-Rust `flex` CPU backend; built with the `tch` feature it can run on libtorch
//! (`PIPELINE_DEVICE=cuda` or `PIPELINE_DEVICE=torch-cpu`). The device is a runtime knob and never
//! part of the cache key. Writes `model.bpk` (the weights of the epoch with the lowest validation
//! loss), `model.json` (what is needed to rebuild the network) and `history.json` (per-epoch losses).

pub mod model;

use std::path::Path;
use std::time::Instant;

use burn::nn::loss::BinaryCrossEntropyLossConfig;
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use pipeline_api::{
    ParamError, ResultExt, RunSummary, Stage, StageContext, StageError, canonicalize_checked,
    read_json, write_json,
};
use serde::{Deserialize, Serialize};
use stage_shards::{Shard, ShardMeta, read_shard};

pub use model::{Architecture, ModelSpec, PosterNet, images_to_tensor};

/// The train stage kind.
pub struct Train;

/// Params of `train`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainParams {
    /// `small-cnn` (default) or `keras-baseline`.
    pub architecture: Architecture,
    /// Passes over the training split.
    pub epochs: usize,
    /// Posters per gradient step.
    pub batch_size: usize,
    /// Adam learning rate.
    pub learning_rate: f64,
    /// Seed of weight initialisation and shuffling.
    pub seed: u64,
}

impl Default for TrainParams {
    fn default() -> Self {
        Self {
            architecture: Architecture::SmallCnn,
            epochs: 10,
            batch_size: 32,
            learning_rate: 1e-3,
            seed: 7,
        }
    }
}

/// One epoch of `history.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss over the epoch.
    pub train_loss: f64,
    /// Mean validation loss after the epoch.
    pub val_loss: f64,
    /// Seconds the epoch took.
    pub seconds: f64,
}

/// `history.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct History {
    /// Per-epoch losses.
    pub epochs: Vec<EpochRecord>,
    /// Epoch whose weights were kept (lowest validation loss).
    pub best_epoch: usize,
    /// Backend that trained it.
    pub device: String,
    /// Training and validation sizes.
    pub train_rows: usize,
    /// Validation rows.
    pub val_rows: usize,
}

impl Stage for Train {
    fn kind(&self) -> &'static str {
        "train"
    }
    fn version(&self) -> u32 {
        1
    }
    fn describe(&self) -> &'static str {
        "train a multi-label poster CNN with Burn (BCE with logits, Adam)"
    }
    fn input_roles(&self) -> &'static [&'static str] {
        &["data"]
    }
    fn canonical_params(&self, raw: &serde_json::Value) -> Result<serde_json::Value, ParamError> {
        canonicalize_checked::<TrainParams>(raw, |p| {
            if p.epochs == 0 {
                return Err(ParamError::at("epochs", "must be at least 1"));
            }
            if p.batch_size == 0 {
                return Err(ParamError::at("batch_size", "must be at least 1"));
            }
            if !(p.learning_rate > 0.0 && p.learning_rate < 1.0) {
                return Err(ParamError::at("learning_rate", "must be in (0, 1)"));
            }
            Ok(())
        })
    }
    fn run(&self, ctx: &StageContext<'_>) -> Result<RunSummary, StageError> {
        let params: TrainParams = ctx.params()?;
        let data = ctx.input("data")?;
        let (train_meta, train) = load_split(data, "train")?;
        let (_, val) = load_split(data, "val")?;
        if train.is_empty() {
            return Err(StageError::invalid(
                "the training split is empty; lower `filter.min_genre_count` or add movies",
            ));
        }
        let spec = ModelSpec {
            architecture: params.architecture,
            width: train_meta.width,
            height: train_meta.height,
            genres: train_meta.genres.clone(),
        };
        let (device, device_name) = select_device()?;
        let (net, history) = fit(&spec, &params, &train, &val, &device, &device_name, ctx)?;
        net.save_file(ctx.out_dir.join("model"))
            .during("saving the model")?;
        write_json(&ctx.out_dir.join("model.json"), &spec)?;
        write_json(&ctx.out_dir.join("history.json"), &history)?;
        let best = &history.epochs[history.best_epoch - 1];
        Ok(RunSummary::new([format!(
            "{} on {}: {} epochs over {} posters; best epoch {} (train loss {:.4}, val loss {:.4})",
            serde_json::to_value(params.architecture)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            history.device,
            history.epochs.len(),
            history.train_rows,
            history.best_epoch,
            best.train_loss,
            best.val_loss
        )]))
    }
}

/// Reads every shard of one split into memory (u8, so 12 KB per 64x64 poster).
pub fn load_split(split_output: &Path, split: &str) -> Result<(ShardMeta, Shard), StageError> {
    let dir = split_output.join(split);
    let meta = ShardMeta::load(&dir)?;
    let mut all = Shard::default();
    for path in meta.paths(&dir) {
        let shard = read_shard(&path, meta.pixels(), meta.genres.len())?;
        all.ids.extend(shard.ids);
        all.posters.extend(shard.posters);
        all.images.extend(shard.images);
        all.labels.extend(shard.labels);
    }
    Ok((meta, all))
}

/// The compute device: `PIPELINE_DEVICE` = `flex` (default), or with the `tch` feature `cuda` / `torch-cpu`.
pub fn select_device() -> Result<(Device, String), StageError> {
    let wanted = std::env::var("PIPELINE_DEVICE").unwrap_or_else(|_| "flex".into());
    match wanted.as_str() {
        "flex" | "cpu" => Ok((Device::flex(), "flex (CPU)".into())),
        #[cfg(feature = "tch")]
        "cuda" => {
            #[allow(deprecated)]
            let device = Device::libtorch_cuda(0);
            Ok((device, "libtorch CUDA:0".into()))
        }
        #[cfg(feature = "tch")]
        "torch-cpu" => {
            #[allow(deprecated)]
            let device = Device::libtorch();
            Ok((device, "libtorch CPU".into()))
        }
        other => Err(StageError::invalid(format!(
            "unknown PIPELINE_DEVICE `{other}`; this build supports: flex{}",
            if cfg!(feature = "tch") {
                ", cuda, torch-cpu"
            } else {
                " (build with `--features tch` for libtorch)"
            }
        ))),
    }
}

/// A small deterministic generator (splitmix64) for shuffling.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

fn batch_tensors(
    data: &Shard,
    rows: &[usize],
    spec: &ModelSpec,
    device: &Device,
) -> (Tensor<4>, Tensor<2, Int>) {
    let pixels = spec.width * spec.height * 3;
    let genres = spec.genres.len();
    let mut images = Vec::with_capacity(rows.len() * pixels);
    let mut labels = Vec::with_capacity(rows.len() * genres);
    for &r in rows {
        images.extend_from_slice(&data.images[r * pixels..(r + 1) * pixels]);
        labels.extend(
            data.labels[r * genres..(r + 1) * genres]
                .iter()
                .map(|&l| l as i64),
        );
    }
    let x = images_to_tensor(&images, rows.len(), spec.height, spec.width, device);
    let y = Tensor::<2, Int>::from_data(TensorData::new(labels, [rows.len(), genres]), device);
    (x, y)
}

/// Mean loss of `net` over `data` (no gradients).
pub fn mean_loss(
    net: &PosterNet,
    data: &Shard,
    spec: &ModelSpec,
    batch: usize,
    device: &Device,
) -> f64 {
    let rows: Vec<usize> = (0..data.len()).collect();
    let loss_fn = BinaryCrossEntropyLossConfig::new()
        .with_logits(true)
        .init(device);
    let mut total = 0.0;
    for chunk in rows.chunks(batch.max(1)) {
        let (x, y) = batch_tensors(data, chunk, spec, device);
        let loss = loss_fn.forward(net.forward(x), y).into_scalar::<f32>() as f64;
        total += loss * chunk.len() as f64;
    }
    total / data.len().max(1) as f64
}

/// Sigmoid probabilities `[rows * genres]` of `net` on `data`.
pub fn predict(
    net: &PosterNet,
    data: &Shard,
    spec: &ModelSpec,
    batch: usize,
    device: &Device,
) -> Result<Vec<f32>, StageError> {
    let rows: Vec<usize> = (0..data.len()).collect();
    let mut out = Vec::with_capacity(data.len() * spec.genres.len());
    for chunk in rows.chunks(batch.max(1)) {
        let (x, _) = batch_tensors(data, chunk, spec, device);
        let probs = burn::tensor::activation::sigmoid(net.forward(x));
        out.extend(
            probs
                .try_into_vec_as::<f32>()
                .during("reading predictions")?,
        );
    }
    Ok(out)
}

/// Loads a trained network from a `train` stage output onto `device` (inference mode).
pub fn load_trained(
    train_output: &Path,
    device: &Device,
) -> Result<(PosterNet, ModelSpec), StageError> {
    let spec: ModelSpec = read_json(&train_output.join("model.json"))?;
    let net = PosterNet::new(&spec, device)
        .try_load_file(train_output.join("model"))
        .during(format!(
            "loading `{}`",
            train_output.join("model.bpk").display()
        ))?;
    Ok((net, spec))
}

#[allow(clippy::too_many_arguments)]
fn fit(
    spec: &ModelSpec,
    params: &TrainParams,
    train: &Shard,
    val: &Shard,
    device: &Device,
    device_name: &str,
    ctx: &StageContext<'_>,
) -> Result<(PosterNet, History), StageError> {
    device.seed(params.seed);
    let autodiff = device.clone().autodiff();
    let mut net = PosterNet::new(spec, &autodiff);
    let mut optim = AdamConfig::new().init();
    let loss_fn = BinaryCrossEntropyLossConfig::new()
        .with_logits(true)
        .init(&autodiff);
    let mut rng = SplitMix(params.seed);
    let mut order: Vec<usize> = (0..train.len()).collect();
    let mut history = History {
        epochs: Vec::new(),
        best_epoch: 0,
        device: device_name.to_string(),
        train_rows: train.len(),
        val_rows: val.len(),
    };
    let mut best: Option<(f64, PosterNet)> = None;
    let steps = train.len().div_ceil(params.batch_size);
    ctx.progress.start("train", (steps * params.epochs) as u64);
    for epoch in 1..=params.epochs {
        let started = Instant::now();
        rng.shuffle(&mut order);
        let mut total = 0.0;
        for chunk in order.chunks(params.batch_size) {
            let (x, y) = batch_tensors(train, chunk, spec, &autodiff);
            let loss = loss_fn.forward(net.forward(x), y);
            let value = loss.clone().into_scalar::<f32>() as f64;
            if !value.is_finite() {
                return Err(StageError::invalid(format!(
                    "training diverged at epoch {epoch} (loss {value}); lower `learning_rate`"
                )));
            }
            total += value * chunk.len() as f64;
            let grads = GradientsParams::from_grads(loss.backward(), &net);
            net = optim.step(params.learning_rate, net, grads);
            ctx.progress.advance(1);
        }
        let train_loss = total / train.len() as f64;
        let eval_net = net.valid();
        let val_loss = if val.is_empty() {
            train_loss
        } else {
            mean_loss(&eval_net, val, spec, params.batch_size * 2, device)
        };
        ctx.progress.message(&format!(
            "epoch {epoch}/{}: train loss {train_loss:.4}, val loss {val_loss:.4}",
            params.epochs
        ));
        history.epochs.push(EpochRecord {
            epoch,
            train_loss,
            val_loss,
            seconds: started.elapsed().as_secs_f64(),
        });
        if best.as_ref().is_none_or(|(loss, _)| val_loss < *loss) {
            history.best_epoch = epoch;
            best = Some((val_loss, eval_net));
        }
    }
    let (_, net) = best.expect("at least one epoch");
    Ok((net, history))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipeline_api::{NoItems, NoProgress};

    /// Two genres, each tied to a colour: a few epochs must bring the loss well down.
    #[test]
    fn learns_a_colour_to_genre_mapping_and_round_trips_through_disk() {
        let (w, h) = (16, 16);
        let mut data = Shard::default();
        for i in 0..64 {
            let red = i % 2 == 0;
            data.ids.push(i);
            let px = if red { [220, 30, 30] } else { [30, 30, 220] };
            for _ in 0..w * h {
                data.images.extend_from_slice(&px);
            }
            data.labels
                .extend_from_slice(if red { &[1, 0] } else { &[0, 1] });
        }
        let spec = ModelSpec {
            architecture: Architecture::SmallCnn,
            width: w,
            height: h,
            genres: vec!["red".into(), "blue".into()],
        };
        let params = TrainParams {
            epochs: 4,
            batch_size: 16,
            learning_rate: 0.01,
            ..TrainParams::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let inputs = Default::default();
        let ctx = StageContext {
            name: "train",
            params: &serde_json::Value::Null,
            inputs: &inputs,
            files: &inputs,
            out_dir: dir.path(),
            threads: 2,
            progress: &NoProgress,
            items: &NoItems,
            retry_failed: false,
            earlier_outputs: &[],
        };
        let device = Device::flex();
        let (net, history) = fit(&spec, &params, &data, &data, &device, "flex", &ctx).unwrap();
        let first = history.epochs[0].train_loss;
        let best = history.epochs[history.best_epoch - 1].val_loss;
        assert!(best < first * 0.5, "loss {first} -> {best}");

        net.save_file(dir.path().join("model")).unwrap();
        write_json(&dir.path().join("model.json"), &spec).unwrap();
        let (loaded, _) = load_trained(dir.path(), &device).unwrap();
        let a = predict(&loaded, &data, &spec, 16, &device).unwrap();
        assert!(
            a[0] > 0.5 && a[1] < 0.5,
            "red poster predicted red: {:?}",
            &a[..2]
        );
        assert!(
            a[2] < 0.5 && a[3] > 0.5,
            "blue poster predicted blue: {:?}",
            &a[2..4]
        );
    }
}
