//! `evaluate`: scores the trained models on the test split against a constant baseline and writes
//! `metrics.json` and a self-contained `index.html` report.
//!
//! Each model turns probabilities into genres with the decision rule its `train` stage chose on
//! the validation split and saved in `model.json` (never tuned on test). The baseline always
//! predicts the k most frequent training genres, k being the mean number of genres per training
//! movie, rounded; its scores are the training frequencies, so its ROC-AUC is 0.5. A second model
//! (`second_model` with its `second_data`) is scored the same way and compared in the report.
//!
//! What lives where: this file runs the stage; `metrics` holds what it computes (`metrics.json`),
//! `metric_list` the one list of reported metrics, `headline` the numbers `pipeline metrics`
//! compares, and `report/` the page, one file a section.

pub mod headline;
pub mod metric_list;
pub mod metrics;
pub mod report;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pipeline_api::{
    Kind, KindInfo, ParamError, RunContext, RunSummary, StageContext, StageError, check_range,
    write_file, write_json,
};
use serde::{Deserialize, Serialize};
use stage_metrics::{Decision, DecisionRule, Scorecard, baseline};
use stage_shards::movies::{MOVIES_FILE, read_movies};
use stage_shards::predictions::Predictions;
use stage_stats::DatasetStats;
use stage_train::{TrainedModel, split_labels};

pub use metrics::{BaselineMetrics, Evaluated, Metrics, ModelMetrics};

/// The evaluate stage kind.
pub struct Evaluate;

/// Params of `evaluate`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvaluateParams {
    /// Test posters shown in the report's gallery, a third each as best hits, worst misses and a
    /// fixed random sample (0 to 300).
    pub examples: usize,
}

impl Default for EvaluateParams {
    fn default() -> Self {
        Self { examples: 24 }
    }
}

/// What the engine knows of the kind.
const INFO: KindInfo = KindInfo {
    // `download` for the gallery's posters; `ingest` and `filter` only add to "What was left out"
    // (and `filter` the titles).
    inputs: &["model", "data", "download"],
    optional_inputs: &["stats", "second_model", "second_data", "ingest", "filter"],
    input_kinds: &[
        ("model", &["train"]),
        ("data", &["split", "embed"]),
        ("second_model", &["train"]),
        ("second_data", &["split", "embed"]),
        ("ingest", &["ingest"]),
        ("download", &["download"]),
        ("filter", &["filter"]),
        ("stats", &["stats"]),
    ],
    ..KindInfo::new(
        "evaluate",
        // 6: no training time in `metrics.json` or the report: the run section shows timings.
        // 7: "What was left out" from `left-out.json` of whichever data stages are bound; the
        // style sheet one rule a line.
        7,
        "score the models on the test split against constant baselines; write metrics.json, predictions.parquet and an HTML report",
        pipeline_api::locked_dependencies!(),
    )
};

impl Kind for Evaluate {
    type Params = EvaluateParams;
    fn info(&self) -> &'static KindInfo {
        &INFO
    }
    fn check(p: &EvaluateParams) -> Result<(), ParamError> {
        check_range("examples", p.examples, 0..=300, " posters")
    }
    fn present(
        &self,
        published: &Path,
        run: &RunContext,
        previous: Option<&Path>,
    ) -> Result<(), StageError> {
        report::context::present(published, run, previous)
    }
    fn run(
        &self,
        ctx: &StageContext<'_>,
        params: EvaluateParams,
    ) -> Result<RunSummary, StageError> {
        let (device, _) =
            stage_train::select_device().map_err(|e| StageError::invalid(e.to_string()))?;
        ctx.progress.message("scoring the model");
        let primary = evaluate_model(
            ctx.input("model")?,
            ctx.input("data")?,
            "primary",
            "predictions.parquet",
            &device,
        )?;
        let second = match (
            ctx.inputs.get("second_model"),
            ctx.inputs.get("second_data"),
        ) {
            (Some(model), Some(data)) => {
                ctx.progress.message("scoring the second model");
                Some(evaluate_model(
                    model,
                    data,
                    "second",
                    "predictions-second.parquet",
                    &device,
                )?)
            }
            (None, None) => None,
            _ => {
                return Err(StageError::invalid(
                    "bind both `second_model` and `second_data` (the data that model reads), or neither",
                ));
            }
        };
        let names = &primary.spec.genres;
        let decision = &primary.metrics.decision;
        let metrics = Metrics {
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
            models: std::iter::once(&primary)
                .chain(second.as_ref())
                .map(|m| m.metrics.clone())
                .collect(),
        };

        let titles = match ctx.inputs.get("filter") {
            Some(filter) => titles(filter)?,
            None => BTreeMap::new(),
        };
        // Whichever data stages are bound, in pipeline order.
        let quality = report::DataQuality::load(
            ["ingest", "download", "filter"]
                .into_iter()
                .filter_map(|role| ctx.inputs.get(role).map(PathBuf::as_path)),
        )?;
        for model in std::iter::once(&primary).chain(second.as_ref()) {
            Predictions {
                ids: model.test.ids.clone(),
                labels: model.test.labels.clone(),
                probs: model.test.probs.clone(),
            }
            .write(
                &ctx.out_dir.join(&model.metrics.predictions),
                model.spec.genres.len(),
            )?;
        }
        write_json(&ctx.out_dir.join("metrics.json"), &metrics)?;
        let dataset = match ctx.inputs.get("stats") {
            Some(dir) => Some(DatasetStats::load(dir)?),
            None => None,
        };
        ctx.progress.message("drawing the report");
        let gallery = report::gallery::build(
            &primary,
            &titles,
            ctx.input("download")?,
            params.examples.div_ceil(3),
        );
        let evaluated: Vec<&Evaluated> = std::iter::once(&primary).chain(second.as_ref()).collect();
        let html = report::render(&report::Report {
            metrics: &metrics,
            models: &evaluated,
            gallery: &gallery,
            quality: &quality,
            dataset: dataset.as_ref(),
        });
        write_file(&ctx.out_dir.join("index.html"), html)?;
        let line = |name: &str, card: &Scorecard, how: String| {
            format!(
                "{name}: micro F1 {:.3}, macro F1 {:.3}, samples F1 {:.3}, ROC-AUC {} ({how})",
                card.decided.micro_f1,
                card.decided.macro_f1,
                card.decided.samples_f1,
                card.ranking
                    .roc_auc_macro
                    .map_or("-".into(), |a| format!("{a:.3}")),
            )
        };
        let mut lines: Vec<String> = metrics
            .models
            .iter()
            .map(|m| {
                line(
                    &m.name,
                    &m.test,
                    format!("decision `{}`", m.decision.rule.name()),
                )
            })
            .collect();
        for b in &primary.metrics.baselines {
            let how = match &b.always {
                Some(genres) => format!("always {}", genres.join(" + ")),
                None => "each genre at its training share".into(),
            };
            lines.push(line(&format!("baseline {}", b.name), &b.test, how));
        }
        lines.push(format!("{} test movies", metrics.n_test));
        Ok(RunSummary::new(lines))
    }
}

/// Scores the `train` output `model_dir` on the test split of `data` with its own decision rule.
fn evaluate_model(
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
            &baseline_predictions(set, rows(test_labels), genres),
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
    let prior_predictions: Vec<u8> = test_scores
        .iter()
        .enumerate()
        .map(|(i, &p)| u8::from(p >= thresholds[i % genres]))
        .collect();
    let prior = BaselineMetrics {
        name: "prior".into(),
        scores: frequencies.to_vec(),
        always: None,
        test: Scorecard::new(names, test_labels, &test_scores, &prior_predictions),
        thresholds: Some(thresholds),
    };
    vec![most_frequent, prior]
}

fn baseline_predictions(set: &[usize], rows: usize, genres: usize) -> Vec<u8> {
    (0..rows)
        .flat_map(|_| (0..genres).map(|g| u8::from(set.contains(&g))))
        .collect()
}

fn titles(filter_output: &Path) -> Result<BTreeMap<i64, String>, StageError> {
    Ok(read_movies(&filter_output.join(MOVIES_FILE))?
        .into_iter()
        .map(|m| (m.id, m.title))
        .collect())
}
