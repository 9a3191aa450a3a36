//! The training losses on the device (binary cross-entropy with logits, focal, asymmetric; each
//! genre's positives optionally weighted, PyTorch's `pos_weight`) and the validation loss on the
//! host.

use std::time::{Duration, Instant};

use burn::prelude::*;
use burn::tensor::activation::{log_sigmoid, sigmoid};
use pipeline_api::{ResultExt, StageError};

use crate::params::{Loss, TrainParams};

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

/// How often an epoch's training losses are read from the device (see [`EpochLoss`]).
const LOSS_READ_INTERVAL: Duration = Duration::from_millis(500);

/// The training losses of an epoch, read from the device a few at a time. Reading a value waits
/// for every kernel queued before it, so a read per step would leave a GPU idle while the host
/// queues each backward pass; the losses are read when the progress line is due and at the end
/// of the epoch instead. The values, their sum and the divergence check are those of a read per
/// step; a diverged run is only noticed up to one interval later.
pub(crate) struct EpochLoss {
    pending: Vec<Tensor<1>>,
    rows: Vec<usize>,
    total: f64,
    seen: usize,
    read_at: Instant,
}

impl EpochLoss {
    pub(crate) fn new() -> Self {
        Self {
            pending: Vec::new(),
            rows: Vec::new(),
            total: 0.0,
            seen: 0,
            read_at: Instant::now(),
        }
    }

    /// Keeps the mean loss of a batch of `rows` rows, detached from its graph, to read later.
    pub(crate) fn push(&mut self, loss: &Tensor<1>, rows: usize) {
        self.pending.push(loss.clone().detach());
        self.rows.push(rows);
    }

    /// Whether the progress line is due for a fresh mean.
    pub(crate) fn due(&self) -> bool {
        self.read_at.elapsed() >= LOSS_READ_INTERVAL
    }

    /// Reads the pending losses into the running sum and returns the mean so far; a loss that is
    /// not finite means training diverged.
    pub(crate) fn read(&mut self, epoch: usize) -> Result<f64, StageError> {
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
}
