//! `pipeline metrics show|diff`: the headline metrics of published runs and their deltas, read
//! from the run folders publishing keeps (`reports/<run-id>/metrics.json`), as `dvc metrics`
//! reads them from commits.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use pipeline_api::RunContext;
use stage_evaluate::headline::{HeadlineMetric, MetricChange, compare, headline};

use pipeline_engine::plan::Plan;
use pipeline_engine::publish::{RUN_FILE, run_folders};
use pipeline_engine::record::find_run;

/// One published run with metrics.
pub struct PublishedRun {
    /// Its id.
    pub id: String,
    /// Its folder, relative to the project root.
    pub folder: PathBuf,
    /// Its `run.json`.
    pub run: RunContext,
    /// Its headline metrics.
    pub metrics: Vec<HeadlineMetric>,
    /// What is wrong with its files (`metrics.json` unreadable, or holding no metric), and the
    /// fix: shown beside its figures, which are then `-`.
    pub problem: Option<String>,
}

/// Every published run folder that holds a `metrics.json`, oldest first.
pub fn published_runs(plan: &Plan) -> anyhow::Result<Vec<PublishedRun>> {
    let mut runs = Vec::new();
    for stage in &plan.stages {
        let Some(dir) = &stage.publish else { continue };
        for (id, folder) in run_folders(&plan.root.join(dir)) {
            let metrics_path = folder.join("metrics.json");
            if !metrics_path.is_file() {
                continue;
            }
            let shown = Path::new(dir).join(&id).join("metrics.json");
            let fix = format!(
                "delete `{}` or rerun `pipeline run --force {}`",
                Path::new(dir).join(&id).display(),
                stage.name
            );
            let read = |path: &Path| -> Result<serde_json::Value, String> {
                let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
                serde_json::from_str(&text).map_err(|e| format!("not JSON ({e})"))
            };
            let (metrics, problem) = match read(&metrics_path) {
                Ok(value) => {
                    let metrics = headline(&value);
                    let problem = metrics.is_empty().then(|| {
                        format!(
                            "`{}` holds no metrics (no `models[].test` figures): {fix}",
                            shown.display()
                        )
                    });
                    (metrics, problem)
                }
                Err(why) => (
                    Vec::new(),
                    Some(format!("`{}` is unreadable: {why}: {fix}", shown.display())),
                ),
            };
            let run: RunContext = read(&folder.join(RUN_FILE))
                .ok()
                .and_then(|value| serde_json::from_value(value).ok())
                .unwrap_or_default();
            runs.push(PublishedRun {
                folder: Path::new(dir).join(&id),
                id,
                run,
                metrics,
                problem,
            });
        }
    }
    runs.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(runs)
}

/// The `warning:` lines of the runs shown.
fn warnings(runs: &[&PublishedRun]) -> String {
    runs.iter()
        .filter_map(|r| r.problem.as_ref())
        .map(|p| format!("\nwarning: {p}"))
        .collect()
}

/// The run `wanted` names: an id, a unique prefix of one, `latest` or `previous`.
fn resolve<'a>(runs: &'a [PublishedRun], wanted: &str) -> anyhow::Result<&'a PublishedRun> {
    let recent = || {
        runs.iter()
            .rev()
            .take(5)
            .map(|r| r.id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let ids: Vec<&str> = runs.iter().map(|r| r.id.as_str()).collect();
    let found = find_run(&ids, wanted)
        .map_err(anyhow::Error::msg)?
        .map(|i| &runs[i]);
    found.with_context(|| {
        if runs.is_empty() {
            "no run has published metrics yet; `pipeline run` makes the first".to_string()
        } else {
            format!("no published run `{wanted}`; the latest are {}", recent())
        }
    })
}

fn number(value: Option<f64>) -> String {
    value.map_or_else(|| "-".into(), |v| format!("{v:.4}"))
}

fn change(change: &MetricChange) -> String {
    match change.change {
        Some(d) if d.abs() < 5e-5 => "0".into(),
        Some(d) => {
            let better = (d > 0.0) == change.higher_is_better;
            format!("{d:+.4} ({})", if better { "better" } else { "worse" })
        }
        None => "-".into(),
    }
}

/// `pipeline metrics show [RUN]`.
pub fn show(plan: &Plan, wanted: Option<&str>, json: bool) -> anyhow::Result<String> {
    let runs = published_runs(plan)?;
    let run = resolve(&runs, wanted.unwrap_or("latest"))?;
    if json {
        let problems: Vec<&String> = run.problem.iter().collect();
        let metrics: serde_json::Map<String, serde_json::Value> = run
            .metrics
            .iter()
            .map(|m| (m.name.clone(), m.value.into()))
            .collect();
        return Ok(serde_json::to_string_pretty(&serde_json::json!({
            "run": run.id,
            "folder": run.folder,
            "overrides": run.run.overrides,
            "metrics": metrics,
            "problems": problems,
        }))?);
    }
    let width = run.metrics.iter().map(|m| m.name.len()).max().unwrap_or(6);
    let mut out = format!("Run {} ({})", run.id, run.folder.display());
    if !run.run.overrides.is_empty() {
        out.push_str(&format!(
            ", with {}",
            run.run
                .overrides
                .iter()
                .map(|o| format!("-S {o}"))
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }
    out.push_str(&format!("\n{:width$}  value", "metric"));
    for m in &run.metrics {
        out.push_str(&format!("\n{:width$}  {:.4}", m.name, m.value));
    }
    out.push_str(&warnings(&[run]));
    Ok(out)
}

/// `pipeline metrics diff [OLD] [NEW]`: by default the previous run against the latest; with
/// one run, that run against the latest.
pub fn diff(
    plan: &Plan,
    old: Option<&str>,
    new: Option<&str>,
    json: bool,
) -> anyhow::Result<String> {
    let runs = published_runs(plan)?;
    if runs.len() < 2 && old.is_none() {
        bail!(
            "{} published run(s) with metrics; `metrics diff` needs two (run again with a change, e.g. `pipeline run -S train.learning_rate=0.01`)",
            runs.len()
        );
    }
    let new_run = resolve(&runs, new.unwrap_or("latest"))?;
    let old_run = resolve(&runs, old.unwrap_or("previous"))?;
    let changes = compare(&old_run.metrics, &new_run.metrics);
    if json {
        let problems: Vec<&String> = [&old_run.problem, &new_run.problem]
            .into_iter()
            .flatten()
            .collect();
        return Ok(serde_json::to_string_pretty(&serde_json::json!({
            "old": old_run.id,
            "new": new_run.id,
            "metrics": changes,
            "problems": problems,
        }))?);
    }
    let width = changes.iter().map(|m| m.name.len()).max().unwrap_or(6);
    let column = old_run.id.len().max(new_run.id.len()).max(6);
    let mut out = format!(
        "{:width$}  {:>column$}  {:>column$}  change",
        "metric", old_run.id, new_run.id
    );
    for m in &changes {
        out.push_str(&format!(
            "\n{:width$}  {:>column$}  {:>column$}  {}",
            m.name,
            number(m.old),
            number(m.new),
            change(m)
        ));
    }
    out.push_str(&warnings(&[old_run, new_run]));
    Ok(out)
}
