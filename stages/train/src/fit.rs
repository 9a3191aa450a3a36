//! The training loop every architecture shares: shuffled mini-batches, binary cross-entropy with
//! logits or a focal or asymmetric variant (optionally weighting each genre's positives, PyTorch's
//! `pos_weight`), Adam, AdamW or SGD
//! under a learning-rate schedule, per-epoch validation, early stopping that keeps the best
//! epoch, a checkpoint after every epoch that a killed run resumes from, and `history.json`.

use std::path::Path;
use std::time::{Duration, Instant};

use burn::module::Module;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamConfig, AdamWConfig, GradientsParams, ModuleOptimizer, SgdConfig};
use burn::prelude::*;
use burn::tensor::activation::{log_sigmoid, sigmoid};
use pipeline_api::{ResultExt, StageContext, StageError};
use serde::{Deserialize, Serialize};
use stage_metrics::{Decision, DecisionRule};

use crate::checkpoint::{self, BestEpoch, LoopState};
use crate::noise::{Draws, Stream};
use crate::{Loss, Monitor, Optimizer, TrainParams};

/// One epoch of `history.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss over the epoch.
    pub train_loss: f64,
    /// Mean validation loss after the epoch.
    pub val_loss: f64,
    /// Validation micro-F1 under the decision rule fitted on that epoch's validation scores.
    #[serde(default)]
    pub val_micro_f1: f64,
    /// Validation macro-F1, likewise.
    #[serde(default)]
    pub val_macro_f1: f64,
    /// Learning rate of the epoch.
    #[serde(default)]
    pub learning_rate: f64,
    /// Seconds the epoch took.
    pub seconds: f64,
    /// Of which the training steps (data, forward, backward, update; not validation): what
    /// `bench/train-vs-pytorch.sh` divides the training rows by.
    #[serde(default)]
    pub train_seconds: f64,
}

/// `history.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct History {
    /// Per-epoch losses.
    pub epochs: Vec<EpochRecord>,
    /// Epoch whose weights were kept.
    pub best_epoch: usize,
    /// What chose it: `val-loss` (lowest) or `val-macro-f1` (highest).
    #[serde(default)]
    pub monitor: String,
    /// Whether training stopped before `epochs` because the monitor stopped improving.
    #[serde(default)]
    pub stopped_early: bool,
    /// Backend that trained it.
    pub device: String,
    /// Training rows.
    pub train_rows: usize,
    /// Validation rows.
    pub val_rows: usize,
    /// Seconds of the whole fit.
    #[serde(default)]
    pub seconds: f64,
    /// `ensemble > 1`: every member's own history (this one's fields are the first member's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<History>,
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

/// `pos_weight` as a `[1, genres]` row on `device`, made once per training: a tensor made from
/// host data is a host-to-device copy, which on a GPU waits for every queued kernel first.
pub fn pos_weight_row(pos_weight: &[f32], device: &Device) -> Tensor<2> {
    Tensor::<1>::from_data(
        TensorData::new(pos_weight.to_vec(), [pos_weight.len()]),
        device,
    )
    .unsqueeze_dim::<2>(0)
}

/// Mean BCE with logits, `pos_weight` (a [`pos_weight_row`]) scaling each genre's positive term:
/// `-(w * y * log(sigmoid(x)) + (1 - y) * log(1 - sigmoid(x)))`.
pub fn bce_with_logits(
    logits: Tensor<2>,
    targets: Tensor<2, Int>,
    pos_weight: Tensor<2>,
) -> Tensor<1> {
    let y = targets.float();
    let positive = y.clone() * pos_weight * log_sigmoid(logits.clone());
    let negative = (y.neg() + 1.0) * log_sigmoid(logits.neg());
    (positive + negative).neg().mean()
}

/// The training loss `params.loss` names, on logits and 0/1 targets, `pos_weight` scaling each
/// genre's positive term as in [`bce_with_logits`].
pub fn training_loss(
    params: &TrainParams,
    logits: Tensor<2>,
    targets: Tensor<2, Int>,
    pos_weight: Tensor<2>,
) -> Tensor<1> {
    match params.loss {
        Loss::Bce => bce_with_logits(logits, targets, pos_weight),
        Loss::Focal => {
            // -(w y (1-p)^g log p + (1-y) p^g log(1-p))
            let gamma = params.focal_gamma as f32;
            let y = targets.float();
            let p = sigmoid(logits.clone());
            let positive = y.clone()
                * pos_weight
                * (p.clone().neg() + 1.0).powf_scalar(gamma)
                * log_sigmoid(logits.clone());
            let negative = (y.neg() + 1.0) * p.powf_scalar(gamma) * log_sigmoid(logits.neg());
            (positive + negative).neg().mean()
        }
        Loss::Asymmetric => {
            // -(w y log p + (1-y) p_m^4 log(1-p_m)), p_m = max(p - 0.05, 0); 1 - p_m >= 0.05.
            let y = targets.float();
            let p = sigmoid(logits.clone());
            let shifted = (p - ASL_MARGIN).clamp_min(0.0);
            let positive = y.clone() * pos_weight * log_sigmoid(logits);
            let negative = (y.neg() + 1.0)
                * shifted.clone().powf_scalar(ASL_GAMMA_NEG)
                * (shifted.neg() + 1.0).log();
            (positive + negative).neg().mean()
        }
    }
}

/// The asymmetric loss's probability margin and negative focusing exponent (the paper's values).
const ASL_MARGIN: f32 = 0.05;
const ASL_GAMMA_NEG: f32 = 4.0;

/// How often an epoch's training losses are read from the device (see [`EpochLoss`]).
const LOSS_READ_INTERVAL: Duration = Duration::from_millis(500);

/// The training losses of an epoch, read from the device a few at a time. Reading a value waits
/// for every kernel queued before it, so a read per step would leave a GPU idle while the host
/// queues each backward pass; the losses are read when the progress line is due and at the end
/// of the epoch instead. The values, their sum and the divergence check are those of a read per
/// step; a diverged run is only noticed up to one interval later.
struct EpochLoss {
    pending: Vec<Tensor<1>>,
    rows: Vec<usize>,
    total: f64,
    seen: usize,
    read_at: Instant,
}

impl EpochLoss {
    fn new() -> Self {
        Self {
            pending: Vec::new(),
            rows: Vec::new(),
            total: 0.0,
            seen: 0,
            read_at: Instant::now(),
        }
    }

    /// Keeps the mean loss of a batch of `rows` rows, detached from its graph, to read later.
    fn push(&mut self, loss: &Tensor<1>, rows: usize) {
        self.pending.push(loss.clone().detach());
        self.rows.push(rows);
    }

    /// Whether the progress line is due for a fresh mean.
    fn due(&self) -> bool {
        self.read_at.elapsed() >= LOSS_READ_INTERVAL
    }

    /// Reads the pending losses into the running sum and returns the mean so far; a loss that is
    /// not finite means training diverged.
    fn read(&mut self, epoch: usize) -> Result<f64, StageError> {
        self.read_at = Instant::now();
        if !self.pending.is_empty() {
            let values = Tensor::cat(std::mem::take(&mut self.pending), 0)
                .try_into_vec_as::<f32>()
                .during("reading training losses")?;
            for (value, n) in values.into_iter().zip(self.rows.drain(..)) {
                let value = value as f64;
                if !value.is_finite() {
                    return Err(StageError::invalid(format!(
                        "training diverged at epoch {epoch} (loss {value}); lower `learning_rate`"
                    )));
                }
                self.total += value * n as f64;
                self.seen += n;
            }
        }
        Ok(self.total / self.seen.max(1) as f64)
    }
}

/// The same loss on the CPU in f64, for validation logits.
pub fn bce_on_host(logits: &[f32], targets: &[u8], pos_weight: &[f32]) -> f64 {
    let genres = pos_weight.len().max(1);
    // log(sigmoid(x)) = -softplus(-x), computed stably.
    let log_sigmoid = |x: f64| -((-x).max(0.0) + (-(x.abs())).exp().ln_1p());
    let total: f64 = logits
        .iter()
        .zip(targets)
        .enumerate()
        .map(|(i, (&x, &t))| {
            let (x, w) = (x as f64, pos_weight[i % genres] as f64);
            if t == 1 {
                -w * log_sigmoid(x)
            } else {
                -log_sigmoid(-x)
            }
        })
        .sum();
    total / logits.len().max(1) as f64
}

/// Element-wise sigmoid on the host.
pub fn sigmoid_on_host(logits: &[f32]) -> Vec<f32> {
    logits.iter().map(|&x| 1.0 / (1.0 + (-x).exp())).collect()
}

/// What a fit produced: the kept network (a validation copy), its validation probabilities, the
/// decision rule fitted on them and the history.
pub struct Fitted<N> {
    /// The network of the best epoch.
    pub net: N,
    /// Its validation probabilities.
    pub val_probs: Vec<f32>,
    /// The decision rule fitted on them.
    pub decision: Decision,
    /// Per-epoch record.
    pub history: History,
}

/// The optimiser `params` name.
fn optimizer(params: &TrainParams) -> ModuleOptimizer {
    match params.optimizer {
        Optimizer::Adamw => AdamWConfig::new()
            .with_weight_decay(params.weight_decay as f32)
            .init(),
        Optimizer::Adam => AdamConfig::new()
            .with_weight_decay(
                (params.weight_decay > 0.0)
                    .then(|| WeightDecayConfig::new(params.weight_decay as f32)),
            )
            .init(),
        Optimizer::Sgd => SgdConfig::new()
            .with_momentum(Some(MomentumConfig::new().with_momentum(0.9)))
            .with_weight_decay(
                (params.weight_decay > 0.0)
                    .then(|| WeightDecayConfig::new(params.weight_decay as f32)),
            )
            .init(),
    }
}

/// Trains `net` (on the autodiff device) for up to `params.epochs`, keeping the best epoch.
///
/// After every epoch the state is checkpointed in `checkpoints` (the stage's working area, or a
/// folder of it per ensemble member); a checkpoint found there at the start (left by a run that
/// was killed) is resumed from, and ends with exactly the network an uninterrupted run makes.
pub fn fit<T: Task>(
    task: &T,
    mut net: T::Net,
    params: &TrainParams,
    labels: &Labels<'_>,
    device_name: &str,
    ctx: &StageContext<'_>,
    checkpoints: &Path,
) -> Result<Fitted<T::Net>, StageError> {
    let started_fit = Instant::now();
    let mut optim = optimizer(params);
    let pos_weight = if params.pos_weight {
        labels.pos_weight()
    } else {
        vec![1.0; labels.genres]
    };
    // On the training device, made at the first step (see `pos_weight_row`).
    let mut weight_row: Option<Tensor<2>> = None;
    let rows = task.train_rows();
    let steps_per_epoch = rows.div_ceil(params.batch_size);
    let mut state = LoopState::new(History {
        epochs: Vec::new(),
        best_epoch: 0,
        monitor: params.early_stopping.monitor.name().into(),
        stopped_early: false,
        device: device_name.to_string(),
        train_rows: rows,
        val_rows: labels.val.len() / labels.genres.max(1),
        seconds: 0.0,
        members: Vec::new(),
    });
    let mut best_net: Option<T::Net> = None;
    let (found, discarded) = checkpoint::latest(checkpoints);
    for line in &discarded {
        ctx.progress.note(line);
    }
    if let Some(found) = found {
        let resumed = found.net(net.clone()).and_then(|resumed| {
            let best = found.best(net.clone())?.valid();
            Ok((resumed, best, found.optimizer(optimizer(params))?))
        });
        match resumed {
            Ok((resumed, best, resumed_optim)) if found.state.best.is_some() => {
                ctx.progress.note(&format!(
                    "resuming from the checkpoint after epoch {} of {} (best so far: epoch {})",
                    found.state.epochs_done, params.epochs, found.state.history.best_epoch
                ));
                net = resumed;
                best_net = Some(best);
                optim = resumed_optim;
                state = found.state;
                state.history.device = device_name.to_string();
            }
            Ok(_) => {}
            Err(err) => ctx.progress.note(&format!(
                "ignoring an unreadable checkpoint ({err}); training from the start"
            )),
        }
    }
    let previous_seconds = state.history.seconds;
    ctx.progress.start("train", (rows * params.epochs) as u64);
    ctx.progress.advance((rows * state.epochs_done) as u64);
    let finished = state.history.stopped_early || state.epochs_done >= params.epochs;
    for epoch in (state.epochs_done + 1..=params.epochs).filter(|_| !finished) {
        let started = Instant::now();
        let mut dropout = Draws::for_epoch(params.seed, Stream::Dropout, epoch);
        let mut losses = EpochLoss::new();
        let mut learning_rate = params.learning_rate;
        for batch in task.train_batches(params.seed, epoch) {
            let batch = batch?;
            let n = T::batch_rows(&batch);
            learning_rate = params.schedule.rate(
                params.learning_rate,
                state.steps_done,
                steps_per_epoch,
                params.epochs,
            );
            let (logits, targets) = task.train_step(&net, batch, &mut dropout);
            let weight = weight_row
                .get_or_insert_with(|| pos_weight_row(&pos_weight, &logits.device()))
                .clone();
            let loss = training_loss(params, logits, targets, weight);
            losses.push(&loss, n);
            let grads = GradientsParams::from_grads(loss.backward(), &net);
            net = optim.step(learning_rate, net, grads);
            state.steps_done += 1;
            ctx.progress.advance(n as u64);
            if losses.due() {
                let mean = losses.read(epoch)?;
                ctx.progress
                    .message(&format!("epoch {epoch}/{} loss {mean:.4}", params.epochs));
            }
        }
        let train_loss = losses.read(epoch)?;
        let train_seconds = started.elapsed().as_secs_f64();
        let eval_net = net.valid();
        let logits = task.val_logits(&eval_net)?;
        let (val_loss, probs) = if labels.val.is_empty() {
            (train_loss, Vec::new())
        } else {
            (
                bce_on_host(&logits, labels.val, &pos_weight),
                sigmoid_on_host(&logits),
            )
        };
        // The rule fitted on this epoch's validation scores: it scores the epoch, and the kept
        // epoch's is the one saved with the model.
        let decision = decide(params, &probs, labels);
        let chosen = decision
            .candidates
            .iter()
            .find(|c| c.rule == decision.rule)
            .unwrap_or(&decision.baseline);
        let (val_micro_f1, val_macro_f1) = if labels.val.is_empty() {
            (0.0, 0.0)
        } else {
            (chosen.micro_f1, chosen.macro_f1)
        };
        ctx.progress.note(&format!(
            "epoch {epoch}/{}: train loss {train_loss:.4}, val loss {val_loss:.4}, val macro-F1 {val_macro_f1:.3}, lr {learning_rate:.2e}, {:.1}s",
            params.epochs,
            started.elapsed().as_secs_f64()
        ));
        state.history.epochs.push(EpochRecord {
            epoch,
            train_loss,
            val_loss,
            val_micro_f1,
            val_macro_f1,
            learning_rate,
            seconds: started.elapsed().as_secs_f64(),
            train_seconds,
        });
        // Lower is better for both: the loss, or the negated macro-F1.
        let monitored = match params.early_stopping.monitor {
            Monitor::ValLoss => val_loss,
            Monitor::ValMacroF1 => -val_macro_f1,
        };
        if state.best.as_ref().is_none_or(|b| monitored < b.monitored) {
            state.history.best_epoch = epoch;
            state.best = Some(BestEpoch {
                monitored,
                val_probs: probs,
                decision,
            });
            best_net = Some(eval_net);
            state.since_best = 0;
        } else {
            state.since_best += 1;
            let patience = params.early_stopping.patience;
            if patience > 0 && state.since_best >= patience && epoch < params.epochs {
                state.history.stopped_early = true;
            }
        }
        state.epochs_done = epoch;
        state.history.seconds = previous_seconds + started_fit.elapsed().as_secs_f64();
        let best = best_net.as_ref().expect("set at the first epoch");
        checkpoint::save(checkpoints, &state, &net, &optim, best)?;
        if state.history.stopped_early {
            // The bar was sized for every epoch; finish it.
            ctx.progress
                .advance((rows * (params.epochs - epoch)) as u64);
            break;
        }
    }
    let LoopState { history, best, .. } = state;
    let best = best.expect("at least one epoch");
    Ok(Fitted {
        net: best_net.expect("at least one epoch"),
        val_probs: best.val_probs,
        decision: best.decision,
        history,
    })
}

/// The decision rule `params.decision` fitted on validation probabilities.
pub fn decide(params: &TrainParams, val_probs: &[f32], labels: &Labels<'_>) -> Decision {
    let rule = if labels.val.is_empty() {
        // Nothing to tune on: one 0.5 cut.
        DecisionRule::Global
    } else {
        params.decision
    };
    Decision::choose(rule, val_probs, labels.val, labels.train, labels.genres)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::loss::BinaryCrossEntropyLossConfig;

    #[test]
    fn weighted_bce_equals_burns_loss_at_weight_one_and_host_loss_agrees() {
        let device = Device::flex();
        let logits = [2.0f32, -1.0, 0.5, -3.0, 10.0, -10.0];
        let targets = [1i64, 0, 0, 1, 1, 0];
        let x = Tensor::<2>::from_data(TensorData::new(logits.to_vec(), [3, 2]), &device);
        let y = Tensor::<2, Int>::from_data(TensorData::new(targets.to_vec(), [3, 2]), &device);
        let ours = bce_with_logits(x.clone(), y.clone(), pos_weight_row(&[1.0, 1.0], &device))
            .into_scalar::<f32>();
        let burns = BinaryCrossEntropyLossConfig::new()
            .with_logits(true)
            .init(&device)
            .forward(x.clone(), y.clone())
            .into_scalar::<f32>();
        assert!((ours - burns).abs() < 1e-5, "{ours} vs {burns}");
        let t8: Vec<u8> = targets.iter().map(|&t| t as u8).collect();
        let weighted =
            bce_with_logits(x, y, pos_weight_row(&[3.0, 0.5], &device)).into_scalar::<f32>() as f64;
        let host = bce_on_host(&logits, &t8, &[3.0, 0.5]);
        assert!((weighted - host).abs() < 1e-5, "{weighted} vs {host}");
    }

    #[test]
    fn losses_read_together_give_the_per_step_mean_and_a_non_finite_one_stops_training() {
        let device = Device::flex().autodiff();
        let steps = [(0.75f32, 32usize), (0.5, 32), (0.25, 7)];
        let mut losses = EpochLoss::new();
        for (value, rows) in steps {
            losses.push(&Tensor::<1>::from_floats([value], &device), rows);
        }
        let per_step: f64 = steps.iter().map(|&(v, n)| v as f64 * n as f64).sum::<f64>() / 71.0;
        assert_eq!(losses.read(1).unwrap(), per_step);
        // Nothing pending: the same mean, and reading again does not count anything twice.
        assert_eq!(losses.read(1).unwrap(), per_step);
        losses.push(&Tensor::<1>::from_floats([f32::NAN], &device), 8);
        let err = losses.read(3).unwrap_err().to_string();
        assert!(err.contains("training diverged at epoch 3"), "{err}");
    }

    /// Each loss against its formula computed on the host, term by term.
    #[test]
    fn focal_and_asymmetric_losses_follow_their_formulas() {
        let device = Device::flex();
        let logits = [2.0f32, -1.0, 0.5, -3.0, 4.0, -4.0];
        let targets = [1i64, 0, 0, 1, 1, 0];
        let x = || Tensor::<2>::from_data(TensorData::new(logits.to_vec(), [3, 2]), &device);
        let y = || Tensor::<2, Int>::from_data(TensorData::new(targets.to_vec(), [3, 2]), &device);
        let w = || pos_weight_row(&[1.0, 1.0], &device);
        let loss = |kind, gamma| {
            let params = TrainParams {
                loss: kind,
                focal_gamma: gamma,
                ..TrainParams::default()
            };
            training_loss(&params, x(), y(), w()).into_scalar::<f32>() as f64
        };
        let sig = |v: f32| 1.0 / (1.0 + (-(v as f64)).exp());
        let host = |term: &dyn Fn(f64, bool) -> f64| {
            logits
                .iter()
                .zip(targets)
                .map(|(&v, t)| term(sig(v), t == 1))
                .sum::<f64>()
                / 6.0
        };
        let bce = host(&|p, pos| if pos { -p.ln() } else { -(1.0 - p).ln() });
        assert!((loss(Loss::Bce, 2.0) - bce).abs() < 1e-5);
        // gamma 0 is BCE; gamma 2 is the focal formula, smaller than BCE.
        assert!((loss(Loss::Focal, 0.0) - bce).abs() < 1e-5);
        let focal = host(&|p, pos| {
            if pos {
                -(1.0 - p).powi(2) * p.ln()
            } else {
                -p.powi(2) * (1.0 - p).ln()
            }
        });
        assert!((loss(Loss::Focal, 2.0) - focal).abs() < 1e-5, "{focal}");
        assert!(focal < bce);
        let asymmetric = host(&|p, pos| {
            if pos {
                -p.ln()
            } else {
                let m = (p - 0.05).max(0.0);
                -m.powi(4) * (1.0 - m).ln()
            }
        });
        assert!(
            (loss(Loss::Asymmetric, 2.0) - asymmetric).abs() < 1e-5,
            "{asymmetric}"
        );
    }

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
