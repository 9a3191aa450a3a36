//! `evaluate`: scores the trained models on the test split against a constant baseline and writes
//! `metrics.json` and a self-contained `index.html` report.
//!
//! Each model turns probabilities into genres with the decision rule its `train` stage chose on
//! the validation split and saved in `model.json` (never tuned on test). The baseline always
//! predicts the k most frequent training genres, k being the mean number of genres per training
//! movie, rounded; its scores are the training frequencies, so its ROC-AUC is 0.5. A second model
//! (`second_model` with its `second_data`) is scored the same way and compared in the report.
//!
//! What lives where: this file runs the stage in named steps (score the models, write the
//! predictions and `metrics.json`, draw the report); `scoring` scores one model and the
//! baselines; `metrics` holds what it computes (`metrics.json`),
//! `metric_list` the one list of reported metrics, `headline` the numbers `pipeline metrics`
//! compares, and `report/` the page, one file a section.

pub mod headline;
pub mod metric_list;
pub mod metrics;
pub mod report;
mod scoring;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pipeline_api::{
    Kind, KindInfo, ParamError, RunContext, RunSummary, StageContext, StageError, check_range,
    write_file, write_json,
};
use serde::{Deserialize, Serialize};
use stage_metrics::Scorecard;
use stage_shards::movies::{MOVIES_FILE, read_movies};
use stage_shards::predictions::Predictions;
use stage_stats::DatasetStats;

pub use metrics::{BaselineMetrics, Evaluated, Metrics, ModelMetrics};
use scoring::score_model;

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

impl Kind for Evaluate {
    type Params = EvaluateParams;
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
        let models = score_models(ctx)?;
        let metrics = Metrics::of(&models);
        for model in &models {
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
        ctx.progress.message("drawing the report");
        write_report(ctx, &params, &metrics, &models)?;
        Ok(RunSummary::new(summary_lines(&metrics)))
    }
}

/// The primary model, then the second if one is bound, each scored on its own data's test split.
fn score_models(ctx: &StageContext<'_>) -> Result<Vec<Evaluated>, StageError> {
    let (device, _) =
        stage_train::select_device().map_err(|e| StageError::invalid(e.to_string()))?;
    ctx.progress.message("scoring the model");
    let mut models = vec![score_model(
        ctx.input("model")?,
        ctx.input("data")?,
        "primary",
        "predictions.parquet",
        &device,
    )?];
    match (
        ctx.inputs.get("second_model"),
        ctx.inputs.get("second_data"),
    ) {
        (Some(model), Some(data)) => {
            ctx.progress.message("scoring the second model");
            models.push(score_model(
                model,
                data,
                "second",
                "predictions-second.parquet",
                &device,
            )?);
        }
        (None, None) => {}
        _ => {
            return Err(StageError::invalid(
                "bind both `second_model` and `second_data` (the data that model reads), or neither",
            ));
        }
    }
    Ok(models)
}

/// `index.html`, with what the bound data stages left out, the dataset's statistics and a
/// gallery of test posters.
fn write_report(
    ctx: &StageContext<'_>,
    params: &EvaluateParams,
    metrics: &Metrics,
    models: &[Evaluated],
) -> Result<(), StageError> {
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
    let dataset = match ctx.inputs.get("stats") {
        Some(dir) => Some(DatasetStats::load(dir)?),
        None => None,
    };
    let gallery = report::gallery::build(
        &models[0],
        &titles,
        ctx.input("download")?,
        params.examples.div_ceil(3),
    );
    let evaluated: Vec<&Evaluated> = models.iter().collect();
    let html = report::render(&report::Report {
        metrics,
        models: &evaluated,
        gallery: &gallery,
        quality: &quality,
        dataset: dataset.as_ref(),
    });
    write_file(&ctx.out_dir.join("index.html"), html)
}

/// A line per model and per baseline of the primary model, then the test split's size.
fn summary_lines(metrics: &Metrics) -> Vec<String> {
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
    for b in &metrics.models[0].baselines {
        let how = match &b.always {
            Some(genres) => format!("always {}", genres.join(" + ")),
            None => "each genre at its training share".into(),
        };
        lines.push(line(&format!("baseline {}", b.name), &b.test, how));
    }
    lines.push(format!("{} test movies", metrics.n_test));
    lines
}

fn titles(filter_output: &Path) -> Result<BTreeMap<i64, String>, StageError> {
    Ok(read_movies(&filter_output.join(MOVIES_FILE))?
        .into_iter()
        .map(|m| (m.id, m.title))
        .collect())
}
