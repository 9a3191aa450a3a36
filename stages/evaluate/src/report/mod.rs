//! The self-contained HTML report: one file with inline CSS, inline SVG charts and embedded
//! thumbnails; no scripts, no network. The page is a maud template, which escapes every
//! interpolated string (titles, genres, failure reasons, sources, params) unless it is marked
//! as markup; the only markup inserted is the SVG plotters drew (which escapes its own text).
//!
//! One file a section: `summary`, `training` (and decision rules), `genres`, `gallery`,
//! `dataset`, `quality` (what was left out); `parts` holds what they share, `charts` draws the
//! SVGs, `context` dresses a published copy with its run. The style sheet is `report.css`.

pub mod charts;
pub mod context;
mod dataset;
pub mod gallery;
mod genres;
mod parts;
pub mod quality;
mod summary;
mod training;

use maud::{DOCTYPE, PreEscaped, html};

pub use parts::{RUN_CONTEXT_MARKER, Report};
pub use quality::DataQuality;

/// The page's style sheet.
const STYLE: &str = include_str!("report.css");

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
                (summary::summary(report))
                (training::training(report.models))
                (training::decisions(report))
                (genres::per_genre(report))
                (genres::curves(primary))
                (genres::co_occurrence(primary))
                (gallery::gallery_section(report.gallery))
                @if let Some(dataset) = report.dataset { (dataset::dataset_section(dataset)) }
                (quality::left_out(report.quality))
            }
        }
    };
    page.into_string()
}
