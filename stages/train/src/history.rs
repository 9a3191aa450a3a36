//! `history.json`: what each epoch scored and which was kept. It holds no clock readings: the
//! output of `train` is a pure function of its inputs and params, so a retrain that changes
//! nothing leaves what depends on it fresh. Timings go to the run's summary
//! ([`pipeline_api::RunSummary::measures`]).

use serde::{Deserialize, Serialize};

/// What early stopping watches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Monitor {
    /// The validation loss (lower is better).
    #[default]
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
    pub monitor: Monitor,
    /// Whether training stopped before `epochs` because the monitor stopped improving.
    #[serde(default)]
    pub stopped_early: bool,
    /// Backend that trained it.
    pub device: String,
    /// Training rows.
    pub train_rows: usize,
    /// Validation rows.
    pub val_rows: usize,
    /// `ensemble > 1`: every member's own history (this one's fields are the first member's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<History>,
}
