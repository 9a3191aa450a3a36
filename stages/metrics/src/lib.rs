//! Multi-label metrics, the constant baseline, and the rules that turn scores into genre sets.
//!
//! Shared by `train` (which chooses its decision rule on the validation split and saves it with
//! the model) and `evaluate` (which applies it on the test split). Every array is row-major
//! `[rows, genres]`.

pub mod card;
pub mod curves;
pub mod decision;
pub mod scores;

pub use card::{Decided, GenreCard, GenreDecided, Ranking, Scorecard};
pub use decision::{Candidate, Decision, DecisionRule};
pub use scores::{GenreMetrics, Headline, baseline, f1, headline, per_genre, roc_auc};
