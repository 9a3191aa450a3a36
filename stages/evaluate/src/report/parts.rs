//! What every section of the report shares: the [`Report`] it draws from, the marker a
//! published copy fills in, and the small pieces of markup (a chart, a metric that may be absent).

use maud::{Markup, PreEscaped, html};
use stage_stats::DatasetStats;

use super::charts;
use super::gallery::Gallery;
use super::quality::DataQuality;
use crate::metrics::{Evaluated, Metrics};

/// Where a published copy gets the run's context ([`context::render`]); the cached report has
/// nothing there.
pub const RUN_CONTEXT_MARKER: &str = "<!-- run context -->";

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
pub fn chart(result: charts::ChartResult) -> Markup {
    match result {
        Ok(svg) => html! { (PreEscaped(svg)) },
        Err(e) => html! { p.worse { "chart not drawn: " (e) } },
    }
}

/// A metric, or `absent` when the test split cannot define it.
pub fn number(value: Option<f64>) -> Markup {
    match value {
        Some(v) => html! { (format!("{v:.3}")) },
        None => html! { span.muted title="absent from the test split" { "absent" } },
    }
}
