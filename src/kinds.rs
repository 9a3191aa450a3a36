//! The stage kinds this binary ships, registered with the engine.

use pipeline_engine::plan::Registry;

/// Every built-in stage kind.
pub fn registry() -> Registry {
    let mut registry = Registry::default();
    registry
        .register(stage_ingest::Ingest)
        .register(stage_download::Download)
        .register(stage_filter::Filter)
        .register(stage_resize::Resize)
        .register(stage_split::Split)
        .register(stage_embed::Embed)
        .register(stage_train::Train)
        .register(stage_stats::Stats)
        .register(stage_evaluate::Evaluate);
    registry
}
