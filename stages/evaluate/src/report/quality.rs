//! What the data stages left out, read from the `left-out.json` of whichever of them are bound
//! (see `stage_shards::left_out`), for the report's summary and its "What was left out" section.

use std::path::Path;

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
