//! Multi-label metrics, the constant baseline, and the rules that turn scores into genre sets.
//!
//! Shared by `train` (which chooses its decision rule on the validation split and saves it with
//! the model) and `evaluate` (which applies it on the test split). Every array is row-major
//! `[rows, genres]`.
//!
//! What lives where: `scores` holds the counting every metric is built from (confusion counts,
//! F1, ROC-AUC, the constant baseline); `card` every reported metric of a predictor on a split
//! (`Scorecard`, and `Decided` at one operating point); `decision` the rules and how `train`
//! chooses one; `curves` the ROC and precision-recall curves the report draws.

pub mod card;
pub mod curves;
pub mod decision;
pub mod scores;

pub use card::{Decided, GenreCard, GenreDecided, Ranking, Scorecard};
pub use decision::{Candidate, Decision, DecisionRule};
pub use scores::{Confusion, always, at_thresholds, baseline, f1, roc_auc};
