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

#[cfg(test)]
mod tests {
    use pipeline_api::Stage;

    /// The kinds whose cache key names `krate`: a `cargo update -p krate` reruns those and,
    /// where their output changes, what reads it; nothing else.
    fn kinds_keyed_on(krate: &str) -> Vec<&'static str> {
        let kinds: [&dyn Stage; 9] = [
            &stage_ingest::Ingest,
            &stage_download::Download,
            &stage_filter::Filter,
            &stage_resize::Resize,
            &stage_split::Split,
            &stage_embed::Embed,
            &stage_train::Train,
            &stage_stats::Stats,
            &stage_evaluate::Evaluate,
        ];
        kinds
            .iter()
            .map(|k| k.info())
            .filter(|info| info.dependencies.iter().any(|(name, _)| *name == krate))
            .map(|info| info.kind)
            .collect()
    }

    #[test]
    fn a_crate_bump_reaches_only_the_kinds_whose_code_calls_it() {
        // The HTTP client and URL parser are download's alone: a bump leaves evaluate fresh
        // (it reads what the data stages left out from `left-out.json`, not through their types).
        assert_eq!(kinds_keyed_on("ureq"), ["download"]);
        assert_eq!(kinds_keyed_on("url"), ["download"]);
        assert_eq!(kinds_keyed_on("csv"), ["ingest"]);
        // Train's checkpoint format is its own (`own-use`): evaluate loads the model, never a
        // checkpoint.
        assert_eq!(kinds_keyed_on("rmp-serde"), ["train"]);
        // What the model is made of reaches every kind that loads one.
        assert_eq!(kinds_keyed_on("burn"), ["embed", "train", "evaluate"]);
        // The report's own crates are evaluate's alone.
        assert_eq!(kinds_keyed_on("maud"), ["evaluate"]);
        // What every kind reads and writes with is in every key.
        assert_eq!(kinds_keyed_on("polars").len(), 9);
    }
}
