//! `evaluate`: scores the trained model on the test split against a constant baseline and writes
//! `metrics.json` and a self-contained `index.html` report.
//!
//! Per-genre decision thresholds are chosen on the validation split (never on test). The baseline
//! always predicts the k most frequent training genres, k being the mean number of genres per
//! training movie, rounded; its scores are the training frequencies, so its ROC-AUC is 0.5.

pub mod metrics;
pub mod report;

use std::collections::BTreeMap;
use std::path::Path;

use pipeline_api::{
    ParamError, RunSummary, Stage, StageContext, StageError, canonicalize, read_json, write_file,
    write_json,
};
use serde::{Deserialize, Serialize};
use stage_shards::{i64_column, read_table, str_column};
use stage_stats::DatasetStats;
use stage_train::{History, load_split, load_trained, predict, select_device};

use metrics::{GenreMetrics, Headline, best_threshold, headline, per_genre};

/// The evaluate stage kind.
pub struct Evaluate;

/// Params of `evaluate`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvaluateParams {
    /// Test movies shown with their predictions in the report.
    pub examples: usize,
}

impl Default for EvaluateParams {
    fn default() -> Self {
        Self { examples: 24 }
    }
}

/// `metrics.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Metrics {
    /// The trained model's headline metrics.
    pub model: Headline,
    /// The constant baseline's headline metrics.
    pub baseline: Headline,
    /// Genres in label order.
    pub genres: Vec<String>,
    /// Genre -> the model's metrics.
    pub per_genre: BTreeMap<String, GenreMetrics>,
    /// Genre -> the baseline's metrics.
    pub baseline_per_genre: BTreeMap<String, GenreMetrics>,
    /// Genre -> decision threshold chosen on the validation split.
    pub thresholds: BTreeMap<String, f32>,
    /// Genres the baseline always predicts.
    pub baseline_genres: Vec<String>,
    /// Movies in the test split.
    pub n_test: usize,
    /// Movies in the validation split (used for thresholds).
    pub n_val: usize,
}

/// One test movie as shown in the report.
#[derive(Debug, Clone, Serialize)]
pub struct Example {
    /// Movie id.
    pub id: i64,
    /// Title from the CSV (escaped when rendered).
    pub title: String,
    /// True genres.
    pub truth: Vec<String>,
    /// (genre, probability, predicted) for the top genres.
    pub top: Vec<(String, f32, bool)>,
}

impl Stage for Evaluate {
    fn kind(&self) -> &'static str {
        "evaluate"
    }
    fn version(&self) -> u32 {
        1
    }
    fn describe(&self) -> &'static str {
        "score the model on the test split against a constant baseline; write metrics.json and an HTML report"
    }
    fn input_roles(&self) -> &'static [&'static str] {
        &["model", "data", "ingest", "download", "filter"]
    }
    fn optional_input_roles(&self) -> &'static [&'static str] {
        &["stats"]
    }
    fn canonical_params(&self, raw: &serde_json::Value) -> Result<serde_json::Value, ParamError> {
        canonicalize::<EvaluateParams>(raw)
    }
    fn run(&self, ctx: &StageContext<'_>) -> Result<RunSummary, StageError> {
        let params: EvaluateParams = ctx.params()?;
        let data = ctx.input("data")?;
        let model_dir = ctx.input("model")?;
        let (device, _) = select_device()?;
        ctx.progress.message("loading model");
        let (net, spec) = load_trained(model_dir, &device)?;
        let (_, train) = load_split(data, "train")?;
        let (_, val) = load_split(data, "val")?;
        let (_, test) = load_split(data, "test")?;
        if test.is_empty() {
            return Err(StageError::invalid(
                "the test split is empty; nothing to evaluate",
            ));
        }
        let genres = spec.genres.len();
        ctx.progress.message("predicting");
        let val_scores = predict(&net, &val, &spec, 64, &device)?;
        let test_scores = predict(&net, &test, &spec, 64, &device)?;

        let thresholds: Vec<f32> = (0..genres)
            .map(|g| {
                let column: Vec<(f32, bool)> = (0..val.len())
                    .map(|r| (val_scores[r * genres + g], val.labels[r * genres + g] == 1))
                    .collect();
                best_threshold(&column)
            })
            .collect();
        let predicted: Vec<u8> = test_scores
            .iter()
            .enumerate()
            .map(|(i, &s)| u8::from(s >= thresholds[i % genres]))
            .collect();
        let model_genres = per_genre(&test.labels, &predicted, &test_scores, genres);
        let model = headline(&test.labels, &predicted, &model_genres, genres);

        let (baseline_set, frequencies) = baseline(&train.labels, genres);
        let baseline_pred: Vec<u8> = (0..test.len())
            .flat_map(|_| (0..genres).map(|g| u8::from(baseline_set.contains(&g))))
            .collect();
        let baseline_scores: Vec<f32> = (0..test.len())
            .flat_map(|_| frequencies.iter().copied())
            .collect();
        let baseline_genres = per_genre(&test.labels, &baseline_pred, &baseline_scores, genres);
        let baseline_headline = headline(&test.labels, &baseline_pred, &baseline_genres, genres);

        let names = &spec.genres;
        let metrics = Metrics {
            model,
            baseline: baseline_headline,
            genres: names.clone(),
            per_genre: names.iter().cloned().zip(model_genres).collect(),
            baseline_per_genre: names.iter().cloned().zip(baseline_genres).collect(),
            thresholds: names
                .iter()
                .cloned()
                .zip(thresholds.iter().copied())
                .collect(),
            baseline_genres: baseline_set.iter().map(|&g| names[g].clone()).collect(),
            n_test: test.len(),
            n_val: val.len(),
        };

        let titles = titles(ctx.input("filter")?)?;
        let examples: Vec<Example> = (0..test.len().min(params.examples))
            .map(|r| {
                let mut top: Vec<(String, f32, bool)> = (0..genres)
                    .map(|g| {
                        (
                            names[g].clone(),
                            test_scores[r * genres + g],
                            predicted[r * genres + g] == 1,
                        )
                    })
                    .collect();
                top.sort_by(|a, b| b.1.total_cmp(&a.1));
                top.truncate(4);
                Example {
                    id: test.ids[r],
                    title: titles.get(&test.ids[r]).cloned().unwrap_or_default(),
                    truth: (0..genres)
                        .filter(|&g| test.labels[r * genres + g] == 1)
                        .map(|g| names[g].clone())
                        .collect(),
                    top,
                }
            })
            .collect();
        let history: History = read_json(&model_dir.join("history.json"))?;
        let quality = report::DataQuality::load(
            ctx.input("ingest")?,
            ctx.input("download")?,
            ctx.input("filter")?,
        )?;
        write_json(&ctx.out_dir.join("metrics.json"), &metrics)?;
        let dataset = match ctx.inputs.get("stats") {
            Some(dir) => Some(DatasetStats::load(dir)?),
            None => None,
        };
        let html = report::render(
            &metrics,
            &history,
            &spec,
            &examples,
            &quality,
            dataset.as_ref(),
        );
        write_file(&ctx.out_dir.join("index.html"), html)?;
        Ok(RunSummary::new([
            format!(
                "model:    micro F1 {:.3}, macro F1 {:.3}, samples F1 {:.3}, ROC-AUC {:.3}",
                metrics.model.micro_f1,
                metrics.model.macro_f1,
                metrics.model.samples_f1,
                metrics.model.roc_auc_macro
            ),
            format!(
                "baseline: micro F1 {:.3}, macro F1 {:.3}, samples F1 {:.3}, ROC-AUC {:.3} (always {})",
                metrics.baseline.micro_f1,
                metrics.baseline.macro_f1,
                metrics.baseline.samples_f1,
                metrics.baseline.roc_auc_macro,
                metrics.baseline_genres.join(" + ")
            ),
            format!("{} test movies", metrics.n_test),
        ]))
    }
}

/// The baseline's genre set (top-k by training frequency) and the frequencies themselves.
pub fn baseline(train_labels: &[u8], genres: usize) -> (Vec<usize>, Vec<f32>) {
    let rows = (train_labels.len() / genres.max(1)).max(1);
    let mut counts = vec![0usize; genres];
    for (i, &l) in train_labels.iter().enumerate() {
        counts[i % genres] += l as usize;
    }
    let k = ((counts.iter().sum::<usize>() as f64 / rows as f64).round() as usize)
        .clamp(1, genres.max(1));
    let mut order: Vec<usize> = (0..genres).collect();
    order.sort_by(|a, b| counts[*b].cmp(&counts[*a]).then(a.cmp(b)));
    order.truncate(k);
    order.sort();
    (
        order,
        counts.iter().map(|&c| c as f32 / rows as f32).collect(),
    )
}

fn titles(filter_output: &Path) -> Result<BTreeMap<i64, String>, StageError> {
    let path = filter_output.join("movies.parquet");
    let table = read_table(&path)?;
    Ok(i64_column(&table, "imdbId", &path)?
        .iter()
        .zip(str_column(&table, "title", &path)?.iter())
        .map(|(id, title)| {
            (
                id.unwrap_or_default(),
                title.unwrap_or_default().to_string(),
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baseline_predicts_the_most_frequent_genres() {
        // 3 genres, 4 movies; genre 2 most frequent, then 0; mean labels per movie = 1.75 -> k = 2.
        let labels = [1, 0, 1, 0, 0, 1, 1, 1, 1, 0, 0, 1];
        let (set, freq) = baseline(&labels, 3);
        assert_eq!(set, [0, 2]);
        assert_eq!(freq, [0.5, 0.25, 1.0]);
    }
}
