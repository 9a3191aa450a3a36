//! What `evaluate` computes: `metrics.json` ([`Metrics`], one [`ModelMetrics`] per model, with
//! its constant baselines) and each model with its test predictions as the report reads it
//! ([`Evaluated`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use stage_metrics::{Decision, Scorecard};
use stage_train::{History, ModelSpec, Scored};

/// One model's test scores in `metrics.json`'s `models`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelMetrics {
    /// `primary` (the `model` input) or `second`.
    pub role: String,
    /// What it is (`mlp on efficientnet-lite0 embeddings (128x192)`).
    pub name: String,
    /// Its architecture's name.
    pub architecture: String,
    /// The decision rule that ran, with its validation scores.
    pub decision: Decision,
    /// Movies in its test split.
    pub n_test: usize,
    /// Every metric on test, at a 0.5 cut and under its decision rule.
    pub test: Scorecard,
    /// The per-genre thresholds of its decision rule, in `genres` order (`null` under `top-k`).
    pub thresholds: Option<Vec<f32>>,
    /// Genres per movie under `top-k`.
    pub top_k: Option<usize>,
    /// Its test probabilities and labels, beside this file.
    pub predictions: String,
    /// The constant predictors on the same test movies: `most-frequent`, then `prior`.
    pub baselines: Vec<BaselineMetrics>,
}

/// A constant predictor's scores (`ModelMetrics::baselines`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BaselineMetrics {
    /// `most-frequent` (always the k most frequent training genres) or `prior` (each genre at
    /// its training frequency, thresholds tuned per genre on validation).
    pub name: String,
    /// Every movie's score per genre: the genre's share of the training movies.
    pub scores: Vec<f32>,
    /// `most-frequent`: the genres it always predicts.
    pub always: Option<Vec<String>>,
    /// `prior`: its per-genre thresholds.
    pub thresholds: Option<Vec<f32>>,
    /// Its scores on test.
    pub test: Scorecard,
}

/// `metrics.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Metrics {
    /// Genres in label order (every per-genre array's order).
    pub genres: Vec<String>,
    /// Genre -> the primary model's decision threshold (empty under `top-k`).
    pub thresholds: BTreeMap<String, f32>,
    /// Movies in the test split.
    pub n_test: usize,
    /// Movies in the validation split (where decision rules were chosen).
    pub n_val: usize,
    /// Every model, primary first, with its scorecards and baselines.
    pub models: Vec<ModelMetrics>,
}

impl Metrics {
    /// `metrics.json` of `models`, primary first: the genres and thresholds are the primary's.
    pub fn of(models: &[Evaluated]) -> Self {
        let primary = &models[0];
        let names = &primary.spec.genres;
        let decision = &primary.metrics.decision;
        Metrics {
            genres: names.clone(),
            thresholds: if decision.top_k.is_none() {
                names
                    .iter()
                    .cloned()
                    .zip(decision.thresholds.iter().copied())
                    .collect()
            } else {
                BTreeMap::new()
            },
            n_test: primary.test.len(),
            n_val: primary.history.val_rows,
            models: models.iter().map(|m| m.metrics.clone()).collect(),
        }
    }
}

/// A model with its test predictions, as the report needs it.
pub struct Evaluated {
    /// Scores.
    pub metrics: ModelMetrics,
    /// Its spec.
    pub spec: ModelSpec,
    /// Its training history.
    pub history: History,
    /// Test probabilities and labels.
    pub test: Scored,
    /// Test 0/1 predictions.
    pub predicted: Vec<u8>,
}
