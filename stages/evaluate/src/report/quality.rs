//! What the data stages left out, read from the `left-out.json` of whichever of them are bound
//! (see `stage_shards::left_out`), for the report's summary and its "What was left out" section.

use std::path::Path;

use maud::{Markup, html};
use pipeline_api::StageError;
use stage_shards::left_out::LeftOut;

/// What each bound data stage left out, in pipeline order.
#[derive(Debug, Clone, Default)]
pub struct DataQuality {
    /// One per bound stage.
    pub stages: Vec<LeftOut>,
}

impl DataQuality {
    /// Reads the `left-out.json` of each output folder.
    pub fn load<'a>(outputs: impl IntoIterator<Item = &'a Path>) -> Result<Self, StageError> {
        let stages = outputs
            .into_iter()
            .map(LeftOut::load)
            .collect::<Result<_, _>>()?;
        Ok(Self { stages })
    }
}

/// The report's "What was left out" section.
pub fn left_out(quality: &DataQuality) -> Markup {
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
