//! The report's summary: headline numbers, what was left out, and every metric of every model
//! beside the constant baselines.

use maud::{Markup, html};

use super::parts::{Report, number};
use crate::metric_list::{Better, METRICS};

pub fn summary(report: &Report<'_>) -> Markup {
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
                @for metric in METRICS {
                    @let get = metric.read;
                    @let higher = match metric.better {
                        Better::Higher => Some(true),
                        Better::Lower => Some(false),
                        Better::Neither => None,
                    };
                    @let best_baseline = higher.and_then(|higher| primary.metrics.baselines.iter()
                        .filter_map(|b| get(&b.test, false))
                        .reduce(|a, b| if higher { a.max(b) } else { a.min(b) }));
                    tr {
                        td { (metric.label) }
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
