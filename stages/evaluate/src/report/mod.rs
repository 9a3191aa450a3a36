//! The self-contained HTML report: one file with inline CSS, inline SVG charts and embedded
//! thumbnails; no scripts, no network. The page is a maud template, which escapes every
//! interpolated string (titles, genres, failure reasons, sources, params) unless it is marked
//! as markup; the only markup inserted is the SVG plotters drew (which escapes its own text).

pub mod charts;
pub mod context;
pub mod gallery;
pub mod quality;

use maud::{DOCTYPE, Markup, PreEscaped, html};
use stage_metrics::curves::{pr_curve, roc_curve};
use stage_metrics::{Decided, Scorecard};
use stage_stats::DatasetStats;

use crate::metrics::{Evaluated, Metrics};
use gallery::{Card, Gallery};
pub use quality::DataQuality;

/// Where a published copy gets the run's context ([`context::render`]); the cached report has
/// nothing there.
pub const RUN_CONTEXT_MARKER: &str = "<!-- run context -->";

/// How many genres the ROC and precision-recall charts show (the most supported ones).
const CURVE_GENRES: usize = 6;

const STYLE: &str = "\
:root{--ink:#1d232a;--muted:#5b6670;--line:#e3e7eb;--soft:#f4f6f8;--good:#0a7a2f;--bad:#b42318}\
body{font:15px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0 auto;max-width:1180px;padding:1.2rem 1.4rem 3rem;color:var(--ink)}\
h1{margin:.2rem 0}h2{margin-top:2.4rem;border-bottom:2px solid var(--line);padding-bottom:.25rem}h3{margin-bottom:.3rem}\
nav{position:sticky;top:0;background:#fffffff0;padding:.4rem 0;border-bottom:1px solid var(--line);z-index:1}\
nav a{margin-right:1rem;color:#1f6feb;text-decoration:none;font-size:14px}\
table{border-collapse:collapse;margin:.6rem 0}td,th{padding:.28rem .65rem;border-bottom:1px solid var(--line);text-align:right;font-variant-numeric:tabular-nums}\
th{background:var(--soft);font-weight:600}td:first-child,th:first-child{text-align:left}\
.muted{color:var(--muted)}.better{color:var(--good);font-weight:600}.worse{color:var(--bad)}\
.tag{display:inline-block;padding:0 .4rem;margin:1px;border-radius:4px;background:#eef1f6;font-size:13px}\
.hit{background:#d6f5dd}.miss{background:#fde2e1}.missed{background:#fff3c4}\
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(250px,1fr));gap:.7rem}\
.card{display:flex;gap:.6rem;border:1px solid var(--line);border-radius:8px;padding:.5rem}\
.card img{width:96px;height:auto;border-radius:4px;background:var(--soft);align-self:flex-start}\
.card .title{font-weight:600;font-size:14px}.row{display:flex;flex-wrap:wrap;gap:1rem;align-items:flex-start}\
.kpis{display:flex;flex-wrap:wrap;gap:.8rem;margin:.8rem 0}.kpi{border:1px solid var(--line);border-radius:8px;padding:.5rem .9rem;min-width:150px}\
.kpi b{display:block;font-size:22px}.kpi span{font-size:13px;color:var(--muted)}\
svg{max-width:100%;height:auto}details{margin:.4rem 0}code{background:var(--soft);padding:0 .25rem;border-radius:3px}td.text{text-align:left}";

/// Everything the page shows.
pub struct Report<'a> {
    /// `metrics.json`.
    pub metrics: &'a Metrics,
    /// The models, primary first.
    pub models: &'a [&'a Evaluated],
    /// Test posters of the primary model.
    pub gallery: &'a Gallery,
    /// What the data stages left out.
    pub quality: &'a DataQuality,
    /// Genre balance and pixel statistics, when a `stats` stage is bound.
    pub dataset: Option<&'a DatasetStats>,
}

/// A chart, or the reason it could not be drawn.
fn chart(result: charts::ChartResult) -> Markup {
    match result {
        Ok(svg) => html! { (PreEscaped(svg)) },
        Err(e) => html! { p.worse { "chart not drawn: " (e) } },
    }
}

fn number(value: Option<f64>) -> Markup {
    match value {
        Some(v) => html! { (format!("{v:.3}")) },
        None => html! { span.muted title="absent from the test split" { "absent" } },
    }
}

/// One row of the headline table: name, how to read it off a scorecard, and whether higher wins
/// (`None`: neither does, as for recall alone, which predicting every genre maximises).
type Row = (
    &'static str,
    fn(&Scorecard, bool) -> Option<f64>,
    Option<bool>,
);

fn decided(card: &Scorecard, at_half: bool) -> &Decided {
    if at_half {
        &card.at_half
    } else {
        &card.decided
    }
}

const ROWS: &[Row] = &[
    ("micro F1", |c, h| Some(decided(c, h).micro_f1), Some(true)),
    ("macro F1", |c, h| Some(decided(c, h).macro_f1), Some(true)),
    (
        "weighted F1",
        |c, h| Some(decided(c, h).weighted_f1),
        Some(true),
    ),
    (
        "samples F1",
        |c, h| Some(decided(c, h).samples_f1),
        Some(true),
    ),
    (
        "micro precision",
        |c, h| Some(decided(c, h).micro_precision),
        None,
    ),
    (
        "micro recall",
        |c, h| Some(decided(c, h).micro_recall),
        None,
    ),
    (
        "Hamming loss",
        |c, h| Some(decided(c, h).hamming_loss),
        Some(false),
    ),
    (
        "subset accuracy",
        |c, h| Some(decided(c, h).subset_accuracy),
        Some(true),
    ),
    (
        "genres per movie",
        |c, h| Some(decided(c, h).cardinality),
        None,
    ),
    (
        "ROC-AUC (macro)",
        |c, _| c.ranking.roc_auc_macro,
        Some(true),
    ),
    (
        "ROC-AUC (micro)",
        |c, _| c.ranking.roc_auc_micro,
        Some(true),
    ),
    ("mAP", |c, _| c.ranking.mean_average_precision, Some(true)),
];

/// Renders the report.
pub fn render(report: &Report<'_>) -> String {
    let metrics = report.metrics;
    let primary = report.models[0];
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Poster genre classifier: evaluation report" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    h1 { "Poster genre classifier" }
                    p.muted {
                        (primary.spec.describe()) ", " (metrics.genres.len()) " genres; "
                        (primary.history.train_rows) " training, " (metrics.n_val) " validation and "
                        (metrics.n_test) " test posters; computed on " (primary.history.device) "."
                    }
                }
                nav {
                    a href="#summary" { "Summary" }
                    a href="#training" { "Training" }
                    a href="#decisions" { "Thresholds" }
                    a href="#genres" { "Per genre" }
                    a href="#curves" { "ROC / PR" }
                    a href="#co-occurrence" { "Co-occurrence" }
                    a href="#gallery" { "Posters" }
                    a href="#data" { "Data" }
                }
                (PreEscaped(RUN_CONTEXT_MARKER))
                (summary(report))
                (training(report.models))
                (decisions(report))
                (per_genre(report))
                (curves(primary))
                (co_occurrence(primary))
                (gallery_section(report.gallery))
                @if let Some(dataset) = report.dataset { (dataset_section(dataset)) }
                (left_out(report.quality))
            }
        }
    };
    page.into_string()
}

fn summary(report: &Report<'_>) -> Markup {
    let metrics = report.metrics;
    let primary = report.models[0];
    let card = &primary.metrics.test;
    let baseline = primary
        .metrics
        .baselines
        .iter()
        .map(|b| b.test.decided.macro_f1)
        .fold(0.0, f64::max);
    let skipped: Vec<(&str, usize)> = report
        .quality
        .stages
        .iter()
        .map(|stage| (stage.stage.as_str(), stage.counts.values().sum()))
        .collect();
    html! {
        section #summary {
            h2 { "Summary" }
            div.kpis {
                div.kpi { b { (format!("{:.3}", card.decided.micro_f1)) } span { "micro F1 (" (primary.metrics.architecture) ")" } }
                div.kpi { b { (format!("{:.3}", card.decided.macro_f1)) } span { "macro F1; best baseline " (format!("{baseline:.3}")) } }
                div.kpi { b { (number(card.ranking.roc_auc_macro)) } span { "ROC-AUC (macro)" } }
                div.kpi { b { (number(card.ranking.mean_average_precision)) } span { "mAP" } }
                @if let Some(first) = report.quality.stages.first() {
                    div.kpi { b { (first.considered) } span { (first.considered_what) } }
                }
            }
            @if !skipped.is_empty() { p {
                "Left out before training: "
                @for (i, (stage, n)) in skipped.iter().enumerate() {
                    @if i > 0 { ", " }
                    (n) " by " code { (stage) }
                }
                " (reasons under " a href="#data" { "Data" } ")."
            } }
            p {
                "Split: " (primary.history.train_rows) " train, " (metrics.n_val) " validation, " (metrics.n_test) " test."
            }
            h3 { "Test metrics" }
            table {
                tr {
                    th { "metric" }
                    @for m in report.models {
                        th title=(m.metrics.decision.why) { (m.metrics.architecture) br; span.muted { "rule " (m.metrics.decision.rule.name()) } }
                        th { (m.metrics.architecture) br; span.muted { "at 0.5" } }
                    }
                    @for b in &primary.metrics.baselines {
                        th { "baseline" br; span.muted { (b.name) } }
                    }
                }
                @for (name, get, higher) in ROWS {
                    @let best_baseline = higher.and_then(|higher| primary.metrics.baselines.iter()
                        .filter_map(|b| get(&b.test, false))
                        .reduce(|a, b| if higher { a.max(b) } else { a.min(b) }));
                    tr {
                        td { (name) }
                        @for m in report.models {
                            @for at_half in [false, true] {
                                @let value = get(&m.metrics.test, at_half);
                                @let class = match (value, best_baseline) {
                                    (Some(v), Some(b)) if (v > b) == higher.unwrap_or(true) && v != b => "better",
                                    (Some(_), Some(_)) => "worse",
                                    _ => "",
                                };
                                td class=(class) { (number(value)) }
                            }
                        }
                        @for b in &primary.metrics.baselines {
                            td { (number(get(&b.test, false))) }
                        }
                    }
                }
                tr {
                    td { "true genres per movie" }
                    @for m in report.models {
                        td colspan="2" { (format!("{:.3}", m.metrics.test.true_cardinality)) }
                    }
                    @for _ in &primary.metrics.baselines { td {} }
                }
            }
            p.muted {
                "Green: better than the better baseline on the same test movies; red: not (precision, recall and genres per movie are not ranked: predicting every genre maximises recall). "
                "Baselines: " b { "most-frequent" } " always predicts "
                @for g in primary.metrics.baselines.iter().filter_map(|b| b.always.as_ref()).flatten() { span.tag { (g) } }
                "; " b { "prior" } " scores every genre at its training share with thresholds tuned on validation. "
                "\"Absent\": no test movie has the genre, so the metric is undefined (not zero)."
            }
        }
    }
}

fn training(models: &[&Evaluated]) -> Markup {
    html! {
        section #training {
            h2 { "Training" }
            @for m in models {
                @let h = &m.history;
                h3 { (m.metrics.name) }
                (chart(charts::training_curves(h)))
                p.muted {
                    (h.epochs.len()) " epochs on " (h.device)
                    @if h.stopped_early { ", stopped early" }
                    "; weights kept from epoch " (h.best_epoch) " (by " (h.monitor.name()) ")."
                }
            }
        }
    }
}

fn decisions(report: &Report<'_>) -> Markup {
    let primary = report.models[0];
    let genres = &primary.spec.genres;
    html! {
        section #decisions {
            h2 { "Decision rules and thresholds" }
            p.muted { "Each model turns probabilities into genres with the rule chosen on the validation split (never on test); the same rule and thresholds are saved with the model and used by " code { "pipeline predict" } "." }
            div.row {
                @for m in report.models {
                    @let d = &m.metrics.decision;
                    div {
                        h3 { (m.metrics.architecture) ": " code { (d.rule.name()) } @if let Some(k) = d.top_k { " (k = " (k) ")" } }
                        p { (d.why) }
                        table {
                            tr { th { "rule (validation)" } th { "micro F1" } th { "macro F1" } }
                            @for c in &d.candidates {
                                tr {
                                    td { (c.rule.name()) @if c.rule == d.rule { " (chosen)" } }
                                    td { (format!("{:.3}", c.micro_f1)) }
                                    td { (format!("{:.3}", c.macro_f1)) }
                                }
                            }
                            tr.muted {
                                td { "constant baseline" }
                                td { (format!("{:.3}", d.baseline.micro_f1)) }
                                td { (format!("{:.3}", d.baseline.macro_f1)) }
                            }
                        }
                    }
                }
            }
            h3 { "Per-genre thresholds" }
            table {
                tr {
                    th { "genre" }
                    @for m in report.models { th { (m.metrics.architecture) } }
                    @for b in &primary.metrics.baselines { @if b.thresholds.is_some() { th { "baseline " (b.name) } } }
                }
                @for (g, genre) in genres.iter().enumerate() {
                    tr {
                        td { (genre) }
                        @for m in report.models {
                            td {
                                @match &m.metrics.thresholds {
                                    Some(t) => (t.get(g).map_or("-".to_string(), |t| format!("{t:.2}"))),
                                    None => span.muted { "top-" (m.metrics.top_k.unwrap_or(0)) },
                                }
                            }
                        }
                        @for b in &primary.metrics.baselines {
                            @if let Some(t) = &b.thresholds {
                                td { (t.get(g).map_or("-".to_string(), |t| format!("{t:.3}"))) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Confusion counts of one genre on the test split under a model's decisions.
fn confusion(model: &Evaluated, g: usize) -> [usize; 4] {
    let genres = model.spec.genres.len();
    let mut counts = [0usize; 4]; // tp, fp, fn, tn
    for r in 0..model.test.len() {
        let i = r * genres + g;
        let (t, p) = (model.test.labels[i] == 1, model.predicted[i] == 1);
        counts[match (t, p) {
            (true, true) => 0,
            (false, true) => 1,
            (true, false) => 2,
            (false, false) => 3,
        }] += 1;
    }
    counts
}

fn per_genre(report: &Report<'_>) -> Markup {
    let primary = report.models[0];
    let genres = &primary.spec.genres;
    let cards = &primary.metrics.test.per_genre;
    let support: Vec<usize> = cards.iter().map(|c| c.support).collect();
    let names: Vec<String> = report
        .models
        .iter()
        .map(|m| m.metrics.architecture.clone())
        .collect();
    // Every model's F1 per genre, by name (a second model may order genres the same way or not).
    let f1: Vec<Vec<Option<f64>>> = report
        .models
        .iter()
        .map(|m| {
            genres
                .iter()
                .map(|g| {
                    m.metrics
                        .test
                        .per_genre
                        .iter()
                        .find(|c| &c.genre == g)
                        .and_then(|c| c.decided.f1)
                })
                .collect()
        })
        .collect();
    html! {
        section #genres {
            h2 { "Per genre" }
            p {
                @for (m, name) in names.iter().enumerate() {
                    @let c = charts::COLOURS[m % charts::COLOURS.len()];
                    span.tag style=(format!("background:rgb({},{},{});color:#fff", c.0, c.1, c.2)) { (name) }
                    " "
                }
                span.muted { "F1 on test per genre (test posters in brackets); absent genres have no bar." }
            }
            (chart(charts::genre_f1_bars(genres, &support, &names, &f1)))
            h3 { (primary.metrics.name) " on test" }
            table {
                tr {
                    th { "genre" } th { "support" } th { "precision" } th { "recall" } th { "F1" }
                    th { "F1 at 0.5" } th { "ROC-AUC" } th { "AP" }
                    th title="true positives" { "TP" } th title="false positives" { "FP" }
                    th title="false negatives" { "FN" } th title="true negatives" { "TN" }
                }
                @for (g, c) in cards.iter().enumerate() {
                    @let [tp, fp, fn_, tn] = confusion(primary, g);
                    tr {
                        td { (c.genre) }
                        td { (c.support) }
                        td { (format!("{:.3}", c.decided.precision)) }
                        td { (number(c.decided.recall)) }
                        td { (number(c.decided.f1)) }
                        td { (number(c.at_half.f1)) }
                        td { (number(c.roc_auc)) }
                        td { (number(c.average_precision)) }
                        td { (tp) } td { (fp) } td { (fn_) } td { (tn) }
                    }
                }
            }
        }
    }
}

/// The genres with the most test positives, up to [`CURVE_GENRES`], that have both classes.
fn curve_genres(model: &Evaluated) -> Vec<usize> {
    let mut order: Vec<usize> = (0..model.spec.genres.len())
        .filter(|&g| model.metrics.test.per_genre[g].roc_auc.is_some())
        .collect();
    order.sort_by_key(|&g| std::cmp::Reverse(model.metrics.test.per_genre[g].support));
    order.truncate(CURVE_GENRES);
    order
}

fn curves(model: &Evaluated) -> Markup {
    let genres = model.spec.genres.len();
    let scored = |g: usize| -> Vec<(f32, bool)> {
        (0..model.test.len())
            .map(|r| {
                let i = r * genres + g;
                (model.test.probs[i], model.test.labels[i] == 1)
            })
            .collect()
    };
    let chosen = curve_genres(model);
    let label = |g: usize, value: Option<f64>, what: &str| {
        format!(
            "{} ({what} {})",
            model.spec.genres[g],
            value.map_or("-".into(), |v| format!("{v:.2}"))
        )
    };
    let roc: Vec<_> = chosen
        .iter()
        .filter_map(|&g| {
            let auc = model.metrics.test.per_genre[g].roc_auc;
            Some((label(g, auc, "AUC"), roc_curve(&scored(g))?))
        })
        .collect();
    let pr: Vec<_> = chosen
        .iter()
        .filter_map(|&g| {
            let ap = model.metrics.test.per_genre[g].average_precision;
            Some((label(g, ap, "AP"), pr_curve(&scored(g))?))
        })
        .collect();
    html! {
        section #curves {
            h2 { "ROC and precision-recall curves" }
            p.muted { (model.metrics.name) ", the " (chosen.len()) " genres with the most test posters." }
            div.row {
                (chart(charts::curves("false positive rate", "true positive rate", true, &roc)))
                (chart(charts::curves("recall", "precision", false, &pr)))
            }
        }
    }
}

fn co_occurrence(model: &Evaluated) -> Markup {
    let genres = model.spec.genres.len();
    let count = |labels: &[u8]| {
        let mut counts = vec![0usize; genres * genres];
        for row in labels.chunks(genres.max(1)) {
            for a in 0..genres {
                if row[a] == 1 {
                    for b in 0..genres {
                        counts[a * genres + b] += usize::from(row[b] == 1);
                    }
                }
            }
        }
        counts
    };
    html! {
        section #co-occurrence {
            h2 { "Genre co-occurrence on test" }
            p.muted { "Cell (row, column): test posters with both genres; the diagonal is each genre alone. Left: the truth; right: what " (model.metrics.architecture) " predicted. Darker is more." }
            div.row {
                (chart(charts::co_occurrence("true genres", &model.spec.genres, &count(&model.test.labels))))
                (chart(charts::co_occurrence("predicted genres", &model.spec.genres, &count(&model.predicted))))
            }
        }
    }
}

fn poster_card(card: &Card) -> Markup {
    html! {
        div.card {
            @match &card.thumbnail {
                Some(uri) => img src=(uri) alt=(format!("poster of {}", card.title));
                None => div.muted style="width:96px" { "no poster" },
            }
            div {
                div.title { (card.title) " " span.muted { "#" (card.id) } }
                div { span.muted { "true: " } @for g in &card.truth { span.tag { (g) } } @if card.truth.is_empty() { span.muted { "none" } } }
                div {
                    span.muted { "scores: " }
                    @for (g, p, predicted, truth) in &card.top {
                        @let class = match (predicted, truth) {
                            (true, true) => "tag hit",
                            (true, false) => "tag miss",
                            (false, true) => "tag missed",
                            (false, false) => "tag",
                        };
                        span class=(class) { (g) " " (format!("{p:.2}")) }
                    }
                }
                div.muted { "Jaccard " (format!("{:.2}", card.jaccard)) }
            }
        }
    }
}

fn gallery_section(gallery: &Gallery) -> Markup {
    html! {
        section #gallery {
            h2 { "Test posters" }
            p.muted { "Green: predicted and true; red: predicted, not true; yellow: true, not predicted; grey: neither." }
            @for (title, cards) in [("Best hits", &gallery.best), ("Worst misses", &gallery.worst), ("A fixed random sample", &gallery.sample)] {
                h3 { (title) }
                div.cards { @for card in cards { (poster_card(card)) } }
            }
        }
    }
}

/// Genre balance per split and pixel statistics, from a `stats` stage.
fn dataset_section(stats: &DatasetStats) -> Markup {
    let triple = |values: &[f64]| {
        values
            .iter()
            .map(|v| format!("{v:.3}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    html! {
        section #dataset {
            h2 { "Dataset" }
            table {
                tr { th { "genre" } @for s in &stats.splits { th { (s.split) } } }
                @for (g, genre) in stats.genres.iter().enumerate() {
                    tr {
                        td { (genre) }
                        @for s in &stats.splits {
                            @let count = s.genre_counts.get(g).copied().unwrap_or(0);
                            td { (count) " " span.muted { (format!("{:.0}%", 100.0 * count as f64 / s.movies.max(1) as f64)) } }
                        }
                    }
                }
                tr { th { "movies" } @for s in &stats.splits { th { (s.movies) } } }
                tr { td { "genres per movie" } @for s in &stats.splits { td { (format!("{:.2}", s.labels_per_movie)) } } }
                tr { td { "pixel mean (R, G, B)" } @for s in &stats.splits { td { (triple(&s.pixel_mean)) } } }
                tr { td { "pixel std (R, G, B)" } @for s in &stats.splits { td { (triple(&s.pixel_std)) } } }
            }
            p.muted { "From the " code { "stats" } " stage, which runs beside training." }
        }
    }
}

fn left_out(quality: &DataQuality) -> Markup {
    html! {
        section #data {
            h2 { "What was left out" }
            @for stage in &quality.stages {
                p { code { (stage.stage) } ": " (stage.considered) " " (stage.considered_what) "." }
            }
            table {
                tr { th { "stage" } th { "reason" } th { "rows" } }
                @for stage in &quality.stages {
                    @for (reason, n) in &stage.counts {
                        tr { td { (stage.stage) } td.text { (reason) } td { (n) } }
                    }
                }
            }
            @for list in quality.stages.iter().flat_map(|s| &s.lists) {
                @if !list.rows.is_empty() {
                    details {
                        summary { (list.title) " (" (list.rows.len()) ")" }
                        table {
                            tr { th { "id" } th { "what" } th { "reason" } }
                            @for r in &list.rows { tr { td { (r.id) } td.text { (r.what) } td.text { (r.reason) } } }
                        }
                    }
                }
            }
        }
    }
}
