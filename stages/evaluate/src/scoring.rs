//! Scoring one trained model on the test split with its own decision rule, beside the two
//! constant baselines.

use std::path::Path;

use pipeline_api::StageError;
use stage_metrics::{Decision, DecisionRule, Scorecard, always, at_thresholds, baseline};
use stage_train::{TrainedModel, split_labels};

use crate::metrics::{BaselineMetrics, Evaluated, ModelMetrics};

/// Scores the `train` output `model_dir` on the test split of `data` with its own decision rule.
pub fn score_model(
    model_dir: &Path,
    data: &Path,
    role: &str,
    predictions: &str,
    device: &stage_train::Device,
) -> Result<Evaluated, StageError> {
    let model = TrainedModel::load(model_dir, device)?;
    let test = model.predict_split(data, "test", device)?;
    if test.is_empty() {
        return Err(StageError::invalid(
            "the test split is empty; nothing to evaluate",
        ));
    }
    let genres = model.spec.genres.len();
    let decision = model.spec.decision.clone().ok_or_else(|| {
        StageError::invalid(format!(
            "`{}` has no decision rule: it was trained by an older `train`; rerun it",
            model_dir.join("model.json").display()
        ))
    })?;
    let predicted = decision.apply(&test.probs, genres);
    let (_, train_labels) = split_labels(data, "train")?;
    let (set, frequencies) = baseline(&train_labels, genres);
    let names = &model.spec.genres;
    let (_, val_labels) = split_labels(data, "val")?;
    let baselines = constant_baselines(
        names,
        &set,
        &frequencies,
        &train_labels,
        &val_labels,
        &test.labels,
    );
    let metrics = ModelMetrics {
        test: Scorecard::new(names, &test.labels, &test.probs, &predicted),
        thresholds: decision
            .top_k
            .is_none()
            .then(|| decision.thresholds.clone()),
        top_k: decision.top_k,
        predictions: predictions.into(),
        baselines,
        role: role.into(),
        name: model.spec.describe(),
        architecture: model.spec.architecture.name().into(),
        decision,
        n_test: test.len(),
    };
    Ok(Evaluated {
        metrics,
        spec: model.spec,
        history: model.history,
        test,
        predicted,
    })
}

/// The two constant predictors, scored on `test_labels`: the most frequent genres (`set`), and
/// each genre at its training frequency with per-genre thresholds tuned on the validation split
/// (0.5 when it is empty).
fn constant_baselines(
    names: &[String],
    set: &[usize],
    frequencies: &[f32],
    train_labels: &[u8],
    val_labels: &[u8],
    test_labels: &[u8],
) -> Vec<BaselineMetrics> {
    let genres = names.len();
    let rows = |labels: &[u8]| labels.len() / genres.max(1);
    let broadcast = |n: usize| -> Vec<f32> { frequencies.repeat(n) };
    let test_scores = broadcast(rows(test_labels));
    let most_frequent = BaselineMetrics {
        name: "most-frequent".into(),
        scores: frequencies.to_vec(),
        always: Some(set.iter().map(|&g| names[g].clone()).collect()),
        thresholds: None,
        test: Scorecard::new(
            names,
            test_labels,
            &test_scores,
            &always(set, rows(test_labels), genres),
        ),
    };
    let thresholds = if val_labels.is_empty() {
        vec![0.5; genres]
    } else {
        Decision::choose(
            DecisionRule::PerGenreF1,
            &broadcast(rows(val_labels)),
            val_labels,
            train_labels,
            genres,
        )
        .thresholds
    };
    let prior_predictions = at_thresholds(&test_scores, &thresholds, genres);
    let prior = BaselineMetrics {
        name: "prior".into(),
        scores: frequencies.to_vec(),
        always: None,
        test: Scorecard::new(names, test_labels, &test_scores, &prior_predictions),
        thresholds: Some(thresholds),
    };
    vec![most_frequent, prior]
}
