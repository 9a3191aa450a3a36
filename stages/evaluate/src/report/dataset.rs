//! The report's dataset section, from a `stats` stage: genre balance per split and pixel
//! statistics.

use maud::{Markup, html};
use stage_stats::DatasetStats;

/// Genre balance per split and pixel statistics, from a `stats` stage.
pub fn dataset_section(stats: &DatasetStats) -> Markup {
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
