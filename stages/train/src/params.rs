//! The params of `train` (`TrainParams` and the enums it names), their defaults and checks.

use pipeline_api::{ParamError, check_range};
use serde::{Deserialize, Serialize};
use stage_backbone::BLOCKS;
use stage_metrics::DecisionRule;

use crate::augment::Augment;
use crate::history::Monitor;
use crate::schedule::Schedule;
use crate::spec::{Architecture, Reads};

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

impl TrainParams {
    /// The checks serde cannot express; each error names its key.
    pub fn check(&self) -> Result<(), ParamError> {
        let p = self;
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
}
