//! The part of a published report only the run knows: which run it is, its overrides, the
//! headline metrics against the run published before, the params of every stage (changed ones
//! marked) and the timings. The engine calls [`crate::Evaluate`]'s `present` on the run's copy,
//! which puts this where [`super::RUN_CONTEXT_MARKER`] stands.

use std::path::Path;

use maud::{Markup, html};
use pipeline_api::{RunContext, StageError, read_file, write_file};
use serde_json::Value;

use super::parts::RUN_CONTEXT_MARKER;
use crate::headline::{MetricChange, compare, headline};

fn read_json(path: &Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Fills the run context into `published/index.html`, comparing with `previous` (the folder of
/// the run published before, if any).
pub fn present(
    published: &Path,
    run: &RunContext,
    previous: Option<&Path>,
) -> Result<(), StageError> {
    let page_path = published.join("index.html");
    let page = String::from_utf8_lossy(&read_file(&page_path)?).into_owned();
    let metrics = read_json(&published.join("metrics.json")).unwrap_or(Value::Null);
    let before = previous.and_then(|dir| {
        let metrics = read_json(&dir.join("metrics.json"))?;
        let run: RunContext = serde_json::from_value(read_json(&dir.join("run.json"))?).ok()?;
        Some((run, metrics))
    });
    let changes = compare(
        &before
            .as_ref()
            .map(|(_, m)| headline(m))
            .unwrap_or_default(),
        &headline(&metrics),
    );
    let section = render(run, before.as_ref().map(|(r, _)| r), &changes);
    write_file(
        &page_path,
        page.replacen(RUN_CONTEXT_MARKER, &section.into_string(), 1),
    )
}

fn change_cell(change: &MetricChange) -> Markup {
    match change.change {
        Some(d) if d.abs() < 5e-5 => html! { td.muted { "=" } },
        Some(d) => {
            let better = (d > 0.0) == change.higher_is_better;
            html! { td class=(if better { "better" } else { "worse" }) { (format!("{d:+.4}")) } }
        }
        None => html! { td.muted { "-" } },
    }
}

/// Top-level params of a stage as `key: value` pairs, values as compact JSON.
fn params_of(params: &Value) -> Vec<(String, String)> {
    match params {
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect(),
        Value::Null => Vec::new(),
        other => vec![(String::new(), other.to_string())],
    }
}

/// The section itself.
pub fn render(run: &RunContext, previous: Option<&RunContext>, changes: &[MetricChange]) -> Markup {
    let shown: Vec<&MetricChange> = changes
        .iter()
        .filter(|c| !c.name.starts_with("baseline-"))
        .collect();
    let total: f64 = run.timings.iter().map(|t| t.seconds).sum();
    html! {
        section #run {
            h2 { "This run" }
            p {
                "Run " code { (run.id) }
                @if run.overrides.is_empty() { " with the pipeline file as written" }
                @else {
                    " with "
                    @for o in &run.overrides { code { "-S " (o) } " " }
                }
                @match previous {
                    Some(p) => { "; compared with the run before it, " code { (p.id) } "." }
                    None => { "; the first run published here." }
                }
            }
            @if previous.is_some() {
                table {
                    tr { th { "metric" } th { "this run" } th { "previous" } th { "change" } }
                    @for c in &shown {
                        tr {
                            td { (c.name) }
                            td { (c.new.map_or("-".into(), |v| format!("{v:.4}"))) }
                            td { (c.old.map_or("-".into(), |v| format!("{v:.4}"))) }
                            (change_cell(c))
                        }
                    }
                }
            }
            details {
                summary { "Params of every stage" @if previous.is_some() { " (changed since the previous run in bold)" } }
                table {
                    tr { th { "stage" } th { "kind" } th { "param" } th { "value" } @if previous.is_some() { th { "previous" } } }
                    @for (name, stage) in &run.stages {
                        @let before = previous.and_then(|p| p.stages.get(name)).map(|s| params_of(&s.params));
                        @for (key, value) in params_of(&stage.params) {
                            @let old = before.as_ref().and_then(|b| b.iter().find(|(k, _)| *k == key)).map(|(_, v)| v.clone());
                            @let changed = previous.is_some() && old.as_deref() != Some(value.as_str());
                            tr {
                                td { (name) } td.muted { (stage.kind) } td { (key) }
                                td { @if changed { b { (value) } } @else { (value) } }
                                @if previous.is_some() { td.muted { (old.unwrap_or_else(|| "-".into())) } }
                            }
                        }
                    }
                }
            }
            details {
                summary { "Stage timings (" (format!("{total:.1}")) " s of stage time)" }
                table {
                    tr { th { "stage" } th { "did" } th { "seconds" } }
                    @for t in &run.timings {
                        tr { td { (t.name) } td { (t.action) } td { (format!("{:.1}", t.seconds)) } }
                    }
                }
                p.muted { "Stages that ran in parallel overlap; " code { "pipeline log" } " shows when each started." }
            }
        }
    }
}
