//! Per-genre results of the primary model: scores and confusion counts, ROC and precision-recall
//! curves of the best-supported genres, and which genres co-occur.

use maud::{Markup, html};
use stage_metrics::Confusion;
use stage_metrics::curves::{pr_curve, roc_curve};

use super::charts;
use super::parts::{Report, chart, number};
use crate::metrics::Evaluated;

/// How many genres the ROC and precision-recall charts show (the most supported ones).
const CURVE_GENRES: usize = 6;

/// The per-genre table: every model's F1, the primary model's confusion counts.
pub fn per_genre(report: &Report<'_>) -> Markup {
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
                    @let Confusion { tp, fp, fn_, tn } = Confusion::of_genre(&primary.test.labels, &primary.predicted, g, genres.len());
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

pub fn curves(model: &Evaluated) -> Markup {
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

pub fn co_occurrence(model: &Evaluated) -> Markup {
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
