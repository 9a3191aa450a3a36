//! What a poster goes through before the model sees it: its bytes (the download stage's fetcher
//! or a file), the fit `train` recorded, and for a head the backbones that embedded the training
//! posters.

use std::path::{Path, PathBuf};

use anyhow::Context;
use stage_backbone::{FrozenBackbones, Variant};
use stage_download::{Fetcher, Source, read_capped};
use stage_resize::ResizeParams;
use stage_train::{Device, ModelSpec};

use super::model::Keys;
use pipeline_engine::plan::Plan;

/// How the model's inputs were made: the fit of the posters, and the backbone for a head.
pub struct Preprocess {
    pub fit: ResizeParams,
    pub backbone: Option<FrozenBackbones>,
}

/// How a new poster is prepared for the model, from what `train` recorded in `model.json`: its
/// fit, and for a head the backbones that embedded the training posters, found among the
/// pipeline's files by the digest they ran with.
pub fn preprocess(
    plan: &Plan,
    keys: &Keys,
    stage: &str,
    spec: &ModelSpec,
    device: &Device,
) -> anyhow::Result<Preprocess> {
    let preparation = spec.preparation.as_ref().with_context(|| {
        format!(
            "`{stage}`'s model does not record how its posters were prepared (an older build trained it); rerun `pipeline run {stage}`"
        )
    })?;
    let fit = ResizeParams {
        width: preparation.width as u32,
        height: preparation.height as u32,
        mode: preparation.mode,
        shard_rows: 1,
    };
    if preparation.backbones.is_empty() {
        return Ok(Preprocess {
            fit,
            backbone: None,
        });
    }
    let mut checkpoints = Vec::new();
    for used in &preparation.backbones {
        let variant = Variant::from_name(&used.name).with_context(|| {
            format!(
                "`{stage}` was trained on `{}` embeddings, a backbone this build does not know; rerun `pipeline run`",
                used.name
            )
        })?;
        let weights = weights_file(plan, keys, &used.weights_blake3).with_context(|| {
            format!(
                "the `{}` weights `{stage}`'s embeddings were made with (blake3 {}...) are not among the pipeline's files any more; restore them, or rerun `pipeline run` so model and weights agree",
                used.name,
                used.weights_blake3.get(..16).unwrap_or(&used.weights_blake3)
            )
        })?;
        checkpoints.push((variant, weights));
    }
    let checkpoints: Vec<(Variant, &Path)> = checkpoints
        .iter()
        .map(|(variant, path)| (*variant, path.as_path()))
        .collect();
    Ok(Preprocess {
        fit,
        backbone: Some(FrozenBackbones::load(
            &checkpoints,
            preparation.flip,
            device,
        )?),
    })
}

/// The workspace file whose content has `digest`: among those the lock file records for any
/// stage, hashed again, since it must have that content now.
fn weights_file(plan: &Plan, keys: &Keys, digest: &str) -> Option<PathBuf> {
    keys.lock
        .stages
        .values()
        .flat_map(|s| s.fingerprint.files.values())
        .filter(|file| file.digest == digest)
        .map(|file| plan.root.join(&file.path))
        .find(|path| pipeline_api::file_digest(path).is_ok_and(|d| d == digest))
}

/// Reads one poster's bytes: an http(s) URL through the download stage's fetcher, or a file (a
/// path or a `file://` URL), a regular one of at most the fetcher's `max_bytes`.
pub fn poster_bytes(
    source: &str,
    max_bytes: u64,
    fetcher: &dyn Fn() -> anyhow::Result<Fetcher>,
) -> Result<Vec<u8>, String> {
    // The download stage's own reading of a source: the same schemes, in any case.
    let path = match Source::parse(source) {
        remote @ Source::Http(_) => {
            let fetcher = fetcher().map_err(|e| format!("{e:#}"))?;
            return fetcher.fetch(remote).map_err(|e| e.to_string());
        }
        Source::File(path) | Source::Path(path) => path,
        Source::Unsupported(scheme) => {
            return Err(format!(
                "unsupported scheme `{scheme}://`: give a path, a file:// URL or an http(s) URL"
            ));
        }
    };
    read_capped(Path::new(path), max_bytes).map_err(|e| format!("cannot read `{path}`: {e}"))
}
