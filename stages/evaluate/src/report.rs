//! The self-contained HTML report: inline CSS and SVG, no scripts, no network. Every piece of text
//! that came from the data (titles, genres, failure reasons, sources) goes through [`escape`].

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use pipeline_api::{StageError, read_json};
use serde::Deserialize;
use stage_metrics::Headline;
use stage_stats::DatasetStats;
use stage_train::History;

use crate::{Evaluated, Example, Metrics};

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A row someone should know was left out.
#[derive(Debug, Clone, Deserialize)]
pub struct Skip {
    /// Movie id as text.
    pub id: String,
    /// Title or source, when known.
    pub what: String,
    /// Why.
    pub reason: String,
}

/// What each data stage dropped, read from their `summary.json`.
#[derive(Debug, Clone, Default)]
pub struct DataQuality {
    /// Rows in the CSV.
    pub rows_read: usize,
    /// Encoding used for the CSV.
    pub encoding: String,
    /// (stage, reason, count).
    pub counts: Vec<(String, String, usize)>,
    /// (stage, skipped rows), at most 200 per stage.
    pub rows: Vec<(String, Vec<Skip>)>,
}

#[derive(Deserialize)]
struct IngestSummary {
    encoding: String,
    rows_read: usize,
    dropped: BTreeMap<String, usize>,
    dropped_rows: Vec<IngestRow>,
}
#[derive(Deserialize)]
struct IngestRow {
    #[serde(default)]
    line: u64,
    row: usize,
    id: String,
    reason: String,
}
#[derive(Deserialize)]
struct DownloadSummary {
    failed_by_reason: BTreeMap<String, usize>,
    failures: Vec<DownloadFailure>,
}
#[derive(Deserialize)]
struct DownloadFailure {
    id: i64,
    source: String,
    reason: Option<String>,
}
#[derive(Deserialize)]
struct FilterSummary {
    dropped: BTreeMap<String, usize>,
    broken_posters: Vec<FilterRow>,
    dropped_movies: Vec<FilterRow>,
}
#[derive(Deserialize)]
struct FilterRow {
    id: i64,
    title: String,
    reason: String,
}

impl DataQuality {
    /// Reads the summaries of the ingest, download and filter outputs.
    pub fn load(ingest: &Path, download: &Path, filter: &Path) -> Result<Self, StageError> {
        let i: IngestSummary = read_json(&ingest.join("summary.json"))?;
        let d: DownloadSummary = read_json(&download.join("summary.json"))?;
        let f: FilterSummary = read_json(&filter.join("summary.json"))?;
        let mut counts = Vec::new();
        counts.extend(
            i.dropped
                .into_iter()
                .map(|(r, n)| ("ingest".to_string(), r, n)),
        );
        counts.extend(
            d.failed_by_reason
                .into_iter()
                .map(|(r, n)| ("download".to_string(), r, n)),
        );
        counts.extend(
            f.dropped
                .into_iter()
                .map(|(r, n)| ("filter".to_string(), r, n)),
        );
        let rows = vec![
            (
                "ingest: unusable CSV rows".to_string(),
                i.dropped_rows
                    .into_iter()
                    .map(|r| Skip {
                        id: r.id,
                        what: if r.line > 0 {
                            format!("CSV line {}", r.line)
                        } else {
                            format!("CSV row {}", r.row)
                        },
                        reason: r.reason,
                    })
                    .collect(),
            ),
            (
                "download: posters that could not be fetched".to_string(),
                d.failures
                    .into_iter()
                    .map(|r| Skip {
                        id: r.id.to_string(),
                        what: r.source,
                        reason: r.reason.unwrap_or_default(),
                    })
                    .collect(),
            ),
            (
                "filter: broken posters (downloaded, do not decode)".to_string(),
                f.broken_posters.into_iter().map(filter_skip).collect(),
            ),
            (
                "filter: other movies left out (first 50 of each reason)".to_string(),
                f.dropped_movies.into_iter().map(filter_skip).collect(),
            ),
        ];
        Ok(Self {
            rows_read: i.rows_read,
            encoding: i.encoding,
            counts,
            rows,
        })
    }
}

fn filter_skip(r: FilterRow) -> Skip {
    Skip {
        id: r.id.to_string(),
        what: r.title,
        reason: r.reason,
    }
}

/// Reads one headline number.
type MetricOf = fn(&Headline) -> f64;

const STYLE: &str = "body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:1100px;padding:0 1rem;color:#1d232a}\
h1{margin-bottom:.2rem}h2{margin-top:2.2rem;border-bottom:1px solid #dde;padding-bottom:.2rem}\
table{border-collapse:collapse;margin:.6rem 0}td,th{padding:.25rem .7rem;border-bottom:1px solid #eee;text-align:right}\
th{background:#f4f6f8}td:first-child,th:first-child{text-align:left}.muted{color:#667}\
.better{color:#0a7a2f;font-weight:600}.worse{color:#b42318}.tag{display:inline-block;padding:0 .4rem;margin:1px;border-radius:4px;background:#eef}\
.hit{background:#d6f5dd}.miss{background:#fde2e1}details{margin:.4rem 0}";

/// Renders the report; `models` has the primary model first.
pub fn render(
    metrics: &Metrics,
    models: &[&Evaluated],
    examples: &[Example],
    quality: &DataQuality,
    dataset: Option<&DatasetStats>,
) -> String {
    let primary = models[0];
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Poster genre classifier report</title><style>{STYLE}</style></head><body>"
    );
    let _ = write!(
        h,
        "<h1>Poster genre classifier</h1><p class=\"muted\">{}, {} genres; trained on {} posters ({}), {} validation, {} test.</p>",
        escape(&primary.spec.describe()),
        metrics.genres.len(),
        primary.history.train_rows,
        escape(&primary.history.device),
        metrics.n_val,
        metrics.n_test
    );

    h.push_str("<h2>Test metrics</h2><table><tr><th>metric</th>");
    for m in models {
        let _ = write!(h, "<th>{}</th>", escape(&m.metrics.name));
    }
    h.push_str("<th>baseline</th><th>primary - baseline</th></tr>");
    let rows: [(&str, MetricOf); 4] = [
        ("micro F1", |m| m.micro_f1),
        ("macro F1", |m| m.macro_f1),
        ("samples F1", |m| m.samples_f1),
        ("ROC-AUC (macro)", |m| m.roc_auc_macro),
    ];
    for (name, get) in rows {
        let b = get(&metrics.baseline);
        let _ = write!(h, "<tr><td>{name}</td>");
        for m in models {
            let v = get(&m.metrics.headline);
            let class = if v > get(&m.metrics.baseline) {
                "better"
            } else {
                "worse"
            };
            let _ = write!(h, "<td class=\"{class}\">{v:.3}</td>");
        }
        let m = get(&metrics.model);
        let class = if m > b { "better" } else { "worse" };
        let _ = write!(
            h,
            "<td>{b:.3}</td><td class=\"{class}\">{:+.3}</td></tr>",
            m - b
        );
    }
    h.push_str("<tr><td>training time</td>");
    for m in models {
        let _ = write!(h, "<td>{:.1} s</td>", m.metrics.train_seconds);
    }
    h.push_str("<td></td><td></td></tr>");
    let _ = write!(
        h,
        "</table><p class=\"muted\">Baseline: always predicts {} (the most frequent training genres). Green: better than the baseline on the same test movies.</p>",
        metrics
            .baseline_genres
            .iter()
            .map(|g| format!("<span class=\"tag\">{}</span>", escape(g)))
            .collect::<String>()
    );

    h.push_str("<h2>Decision rules</h2>");
    for m in models {
        let d = &m.metrics.decision;
        let _ = write!(
            h,
            "<p><b>{}</b>: <code>{}</code>{}. {}</p><table><tr><th>rule (validation split)</th><th>micro F1</th><th>macro F1</th></tr>",
            escape(&m.metrics.name),
            escape(d.rule.name()),
            d.top_k.map(|k| format!(" (k = {k})")).unwrap_or_default(),
            escape(&d.why)
        );
        for c in d.candidates.iter().chain(std::iter::once(&d.baseline)) {
            let label = if std::ptr::eq(c, &d.baseline) {
                "constant baseline".to_string()
            } else if c.rule == d.rule {
                format!("{} (chosen)", c.rule.name())
            } else {
                c.rule.name().to_string()
            };
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{:.3}</td><td>{:.3}</td></tr>",
                escape(&label),
                c.micro_f1,
                c.macro_f1
            );
        }
        h.push_str("</table>");
    }

    h.push_str("<h2>Training</h2>");
    for m in models {
        let _ = write!(h, "<h3>{}</h3>", escape(&m.metrics.name));
        h.push_str(&loss_chart(&m.history));
    }

    h.push_str("<h2>Per genre</h2><table><tr><th>genre</th><th>support</th><th>precision</th><th>recall</th><th>F1</th><th>baseline F1</th><th>ROC-AUC</th><th>threshold</th></tr>");
    for genre in &metrics.genres {
        let m = &metrics.per_genre[genre];
        let b = &metrics.baseline_per_genre[genre];
        let auc = m.roc_auc.map_or("–".to_string(), |a| format!("{a:.3}"));
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{auc}</td><td>{}</td></tr>",
            escape(genre),
            m.support,
            m.precision,
            m.recall,
            m.f1,
            b.f1,
            metrics
                .thresholds
                .get(genre)
                .map_or_else(|| "top-k".to_string(), |t| format!("{t:.2}"))
        );
    }
    h.push_str("</table>");

    if let Some(dataset) = dataset {
        h.push_str(&dataset_section(dataset));
    }

    h.push_str("<h2>Test examples</h2><table><tr><th>movie</th><th>true genres</th><th>top predictions</th></tr>");
    for e in examples {
        let truth: String = e
            .truth
            .iter()
            .map(|g| format!("<span class=\"tag\">{}</span>", escape(g)))
            .collect();
        let top: String = e
            .top
            .iter()
            .map(|(g, p, predicted)| {
                let class = match (predicted, e.truth.contains(g)) {
                    (true, true) => "tag hit",
                    (true, false) => "tag miss",
                    _ => "tag",
                };
                format!("<span class=\"{class}\">{} {:.2}</span>", escape(g), p)
            })
            .collect();
        let _ = write!(
            h,
            "<tr><td>{} <span class=\"muted\">#{}</span></td><td>{truth}</td><td>{top}</td></tr>",
            escape(&e.title),
            e.id
        );
    }
    h.push_str(
        "</table><p class=\"muted\">Green: predicted and true. Red: predicted but not true.</p>",
    );

    let _ = write!(
        h,
        "<h2>What was left out</h2><p>{} CSV rows read ({}).</p><table><tr><th>stage</th><th>reason</th><th>rows</th></tr>",
        quality.rows_read,
        escape(&quality.encoding)
    );
    for (stage, reason, n) in &quality.counts {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{n}</td></tr>",
            escape(stage),
            escape(reason)
        );
    }
    h.push_str("</table>");
    for (title, rows) in &quality.rows {
        if rows.is_empty() {
            continue;
        }
        let _ = write!(
            h,
            "<details><summary>{} ({})</summary><table><tr><th>id</th><th>what</th><th>reason</th></tr>",
            escape(title),
            rows.len()
        );
        for r in rows {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&r.id),
                escape(&r.what),
                escape(&r.reason)
            );
        }
        h.push_str("</table></details>");
    }
    h.push_str("</body></html>\n");
    h
}

/// Train and validation loss per epoch as an inline SVG line chart.
fn loss_chart(history: &History) -> String {
    let (w, h, pad) = (640.0, 240.0, 36.0);
    let n = history.epochs.len();
    let max = history
        .epochs
        .iter()
        .flat_map(|e| [e.train_loss, e.val_loss])
        .fold(f64::MIN, f64::max)
        .max(1e-9);
    let x = |i: usize| {
        pad + (w - 2.0 * pad)
            * if n > 1 {
                i as f64 / (n - 1) as f64
            } else {
                0.5
            }
    };
    let y = |v: f64| h - pad - (h - 2.0 * pad) * (v / max);
    let line = |get: fn(&stage_train::EpochRecord) -> f64| {
        history
            .epochs
            .iter()
            .enumerate()
            .map(|(i, e)| format!("{:.1},{:.1}", x(i), y(get(e))))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut svg = format!(
        "<svg width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"loss per epoch\">\
<line x1=\"{pad}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#999\"/><line x1=\"{pad}\" y1=\"{pad}\" x2=\"{pad}\" y2=\"{}\" stroke=\"#999\"/>\
<text x=\"4\" y=\"{}\" font-size=\"11\">{max:.3}</text><text x=\"4\" y=\"{}\" font-size=\"11\">0</text>\
<polyline fill=\"none\" stroke=\"#1f6feb\" stroke-width=\"2\" points=\"{}\"/>\
<polyline fill=\"none\" stroke=\"#d97706\" stroke-width=\"2\" points=\"{}\"/>\
<text x=\"{}\" y=\"16\" font-size=\"12\" fill=\"#1f6feb\">train loss</text><text x=\"{}\" y=\"30\" font-size=\"12\" fill=\"#d97706\">validation loss</text></svg>",
        h - pad,
        w - pad,
        h - pad,
        h - pad,
        pad + 4.0,
        h - pad,
        line(|e| e.train_loss),
        line(|e| e.val_loss),
        w - 150.0,
        w - 150.0,
    );
    let _ = write!(
        svg,
        "<p class=\"muted\">{} epochs in {:.1} s{}; weights kept from epoch {} (by {}).</p>",
        n,
        history.seconds,
        if history.stopped_early {
            ", stopped early"
        } else {
            ""
        },
        history.best_epoch,
        escape(if history.monitor.is_empty() {
            "val-loss"
        } else {
            &history.monitor
        })
    );
    svg
}

/// Genre balance per split and pixel statistics, from a `stats` stage.
fn dataset_section(stats: &DatasetStats) -> String {
    let mut h = String::from("<h2>Dataset</h2><table><tr><th>genre</th>");
    for split in &stats.splits {
        let _ = write!(h, "<th>{}</th>", escape(&split.split));
    }
    h.push_str("</tr>");
    for (g, genre) in stats.genres.iter().enumerate() {
        let _ = write!(h, "<tr><td>{}</td>", escape(genre));
        for split in &stats.splits {
            let count = split.genre_counts.get(g).copied().unwrap_or(0);
            let share = 100.0 * count as f64 / split.movies.max(1) as f64;
            let _ = write!(
                h,
                "<td>{count} <span class=\"muted\">{share:.0}%</span></td>"
            );
        }
        h.push_str("</tr>");
    }
    h.push_str("<tr><th>movies</th>");
    for split in &stats.splits {
        let _ = write!(h, "<th>{}</th>", split.movies);
    }
    h.push_str("</tr><tr><td>genres per movie</td>");
    for split in &stats.splits {
        let _ = write!(h, "<td>{:.2}</td>", split.labels_per_movie);
    }
    h.push_str("</tr><tr><td>pixel mean (R, G, B)</td>");
    for split in &stats.splits {
        let mean: Vec<String> = split.pixel_mean.iter().map(|m| format!("{m:.3}")).collect();
        let _ = write!(h, "<td>{}</td>", mean.join(", "));
    }
    h.push_str("</tr><tr><td>pixel std (R, G, B)</td>");
    for split in &stats.splits {
        let std: Vec<String> = split.pixel_std.iter().map(|s| format!("{s:.3}")).collect();
        let _ = write!(h, "<td>{}</td>", std.join(", "));
    }
    h.push_str("</tr></table><p class=\"muted\">From the <code>stats</code> stage, which runs beside training.</p>");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_neutralises_markup() {
        assert_eq!(
            escape("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
    }
}
