//! How each model was trained (its loss curves and kept epoch) and how its decision rule was
//! chosen on the validation split.

use maud::{Markup, html};

use super::charts;
use super::parts::{Report, chart};
use crate::metrics::Evaluated;

pub fn training(models: &[&Evaluated]) -> Markup {
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

pub fn decisions(report: &Report<'_>) -> Markup {
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
