//! `embed`: runs a frozen ImageNet backbone (EfficientNet-Lite0 or -Lite2) over every poster of a `split`
//! output and writes one 1,280-value feature vector per poster, split by split, as Parquet shards
//! beside the labels.
//!
//! Posters are decoded from `download`'s output at the stage's own input size (the split's
//! thumbnails are sized for the from-scratch CNN), a batch at a time: the workers decode and fit a
//! batch in parallel, then the backbone runs on it. Memory holds one batch of pixels and one shard
//! of embeddings. Embeddings already computed by an earlier run with the same weights, input size
//! and code are copied from its shards instead (see `reuse`), so a new movie costs one forward pass.
//!
//! What lives where: this file runs the stage in named steps (the checkpoints, the reuse stamp and
//! the preparation it records, one split); `params` holds its params, `work`
//! embeds shard after shard, `reuse` finds earlier outputs' vectors by poster.

mod params;
mod reuse;
mod work;

use std::path::Path;

use pipeline_api::{
    Kind, KindInfo, ParamError, ResultExt, RunSummary, StageContext, StageError, check_range,
    create_dir, file_digest, write_json,
};
use stage_backbone::{FrozenBackbones, Variant, select_device};
use stage_shards::embedding::write_embedding_shard;
use stage_shards::embedding::{EMBEDDING_LAYOUT, EmbeddingMeta};
use stage_shards::{BackboneUse, Preparation, ShardFile, ShardMeta, read_shard_labels};

pub use params::EmbedParams;
use reuse::EarlierEmbeddings;
pub use reuse::{ReuseStamp, STAMP_FILE};
pub use work::Skipped;
use work::Work;

/// Version of the embeddings, recorded in the reuse stamp: bump when the vector made from the
/// same poster, weights and params changes (earlier outputs then stop being reused).
const EMBEDDING_VERSION: u32 = 1;

/// The splits a `split` output holds, in the order they are embedded.
pub const SPLITS: [&str; 3] = ["train", "val", "test"];

/// The embed stage kind.
pub struct Embed;

impl Kind for Embed {
    type Params = EmbedParams;
    const INFO: KindInfo = KindInfo {
        inputs: &["data", "posters"],
        input_kinds: &[("data", &["split"]), ("posters", &["download"])],
        files: &["weights"],
        optional_files: &["second_weights"],
        // How many posters share a forward pass changes speed and memory, not the features.
        knob_params: &["batch_size"],
        shardable: true,
        ..KindInfo::new(
            "embed",
            // 2: `summary.json` holds no computed/reused counts (they go to the run's summary);
            // `meta.json` records the preparation (fit, backbones and their weights' digests, flip).
            2,
            "per-poster ImageNet features from a frozen EfficientNet-Lite, split by split",
            pipeline_api::locked_dependencies!(),
        )
    };
    fn check(p: &EmbedParams) -> Result<(), ParamError> {
        // Lite0 downsamples 32x; below 32 pixels a side the last blocks see one pixel.
        check_range("width", p.width, 32..=1024, " pixels")?;
        check_range("height", p.height, 32..=1024, " pixels")?;
        check_range("batch_size", p.batch_size, 1..=1024, "")?;
        Ok(())
    }
    fn run(&self, ctx: &StageContext<'_>, params: EmbedParams) -> Result<RunSummary, StageError> {
        let data = ctx.input("data")?;
        let checkpoints = checkpoints(ctx, &params)?;
        let stamp = reuse_stamp(&params, &checkpoints)?;
        let preparation = preparation(&params, &stamp);
        let mut earlier = EarlierEmbeddings::open(ctx.earlier_outputs, &stamp, &SPLITS);
        write_json(&ctx.out_dir.join(STAMP_FILE), &stamp)?;

        let (device, device_name) =
            select_device().map_err(|e| StageError::invalid(e.to_string()))?;
        ctx.progress.message("loading the backbone");
        let net = FrozenBackbones::load(&checkpoints, params.flip, &device)
            .map_err(|e| StageError::invalid(e.to_string()))?;
        let pools = worker_pools(&device_name, ctx.threads)?;
        let metas: Vec<ShardMeta> = SPLITS
            .iter()
            .map(|split| ShardMeta::load(&data.join(split)))
            .collect::<Result<_, _>>()?;
        let mut work = Work {
            ctx,
            net: &net,
            device: &device,
            pools: &pools,
            params: &params,
            posters: ctx.input("posters")?,
            computed: 0,
            reused: 0,
            compute_seconds: 0.0,
            skipped: Vec::new(),
        };
        ctx.progress.start(
            "embed",
            metas.iter().map(ShardMeta::rows).sum::<usize>() as u64,
        );
        let described = EmbeddingMeta {
            layout: EMBEDDING_LAYOUT.into(),
            dim: net.dim(),
            backbone: checkpoints
                .iter()
                .map(|(variant, _)| variant.name())
                .collect::<Vec<_>>()
                .join("+"),
            input_width: params.width as usize,
            input_height: params.height as usize,
            genres: metas[0].genres.clone(),
            shards: Vec::new(),
            preparation: Some(preparation),
        };
        let mut counts = Vec::new();
        for (split, meta) in SPLITS.iter().zip(&metas) {
            let (in_dir, out_dir) = (data.join(split), ctx.out_dir.join(split));
            let made = embed_split(&mut work, &mut earlier, &in_dir, &out_dir, meta, &described)?;
            counts.push(made.rows());
        }
        write_json(&ctx.out_dir.join("skipped.json"), &work.skipped)?;
        write_json(
            &ctx.out_dir.join("summary.json"),
            &serde_json::json!({
                "train": counts[0], "val": counts[1], "test": counts[2],
                "skipped": work.skipped.len(),
            }),
        )?;
        Ok(report(&work, &params, &described, &counts, &device_name))
    }
}

/// The checkpoints to embed with, in order: the first backbone's, then the second's if any.
fn checkpoints<'a>(
    ctx: &'a StageContext<'_>,
    params: &EmbedParams,
) -> Result<Vec<(Variant, &'a Path)>, StageError> {
    let first = (params.backbone, ctx.file("weights")?);
    let second = match (params.second_backbone, ctx.files.get("second_weights")) {
        (Some(variant), Some(path)) => Some((variant, path.as_path())),
        (None, None) => None,
        (Some(variant), None) => {
            return Err(StageError::invalid(format!(
                "`second_backbone: {}` needs its checkpoint: add `second_weights: models/{0}/...` to the stage's `files:`",
                variant.name()
            )));
        }
        (None, Some(_)) => {
            return Err(StageError::invalid(
                "`files: {second_weights: ...}` is given without `second_backbone:`; name its network (efficientnet-lite0 or efficientnet-lite2) or remove the file",
            ));
        }
    };
    Ok(std::iter::once(first).chain(second).collect())
}

/// What shapes this run's vectors: an earlier output stamped the same is reused.
fn reuse_stamp(
    params: &EmbedParams,
    checkpoints: &[(Variant, &Path)],
) -> Result<ReuseStamp, StageError> {
    let second = checkpoints.get(1);
    Ok(ReuseStamp {
        version: EMBEDDING_VERSION,
        backbone: params.backbone.name().into(),
        weights: file_digest(checkpoints[0].1)?,
        width: params.width,
        height: params.height,
        mode: params.mode,
        flip: params.flip,
        second_backbone: second.map(|(variant, _)| variant.name().into()),
        second_weights: second.map(|(_, path)| file_digest(path)).transpose()?,
    })
}

/// How a poster is made into this output's vectors, for `train` to record and `predict` to
/// repeat.
fn preparation(params: &EmbedParams, stamp: &ReuseStamp) -> Preparation {
    Preparation {
        width: params.width as usize,
        height: params.height as usize,
        mode: params.mode,
        backbones: std::iter::once((stamp.backbone.clone(), stamp.weights.clone()))
            .chain(
                stamp
                    .second_backbone
                    .clone()
                    .zip(stamp.second_weights.clone()),
            )
            .map(|(name, weights_blake3)| BackboneUse {
                name,
                weights_blake3,
            })
            .collect(),
        flip: params.flip,
    }
}

/// One single-threaded pool per worker. On the CPU, one forward pass per thread beats splitting
/// each pass over the threads (the network's layers are small: 21.4 images/s on 1 thread, 29.7
/// on 2 sharing each pass, at 224x224); and a pass on one thread gives the same bits whatever
/// `--threads` is. A GPU takes the batches one at a time.
fn worker_pools(device_name: &str, threads: usize) -> Result<Vec<rayon::ThreadPool>, StageError> {
    let workers = if device_name.starts_with("flex") {
        threads.max(1)
    } else {
        1
    };
    (0..workers)
        .map(|_| rayon::ThreadPoolBuilder::new().num_threads(1).build())
        .collect::<Result<Vec<_>, _>>()
        .during("starting embed threads")
}

/// Embeds one split shard by shard into `out_dir`, with `described`'s `meta.json`.
fn embed_split(
    work: &mut Work<'_>,
    earlier: &mut Option<EarlierEmbeddings>,
    in_dir: &Path,
    out_dir: &Path,
    meta: &ShardMeta,
    described: &EmbeddingMeta,
) -> Result<EmbeddingMeta, StageError> {
    create_dir(out_dir)?;
    let genres = described.genres.len();
    let mut shards = Vec::new();
    for shard in &meta.shards {
        let mut rows = read_shard_labels(&in_dir.join(&shard.file), genres)?;
        // Run as one shard of a fanned-out stage, only the posters it owns.
        let shard_of_items = work.ctx.shard;
        rows.retain(|poster| pipeline_api::owned(shard_of_items, poster));
        let embedded = work.embed(rows, earlier, genres)?;
        write_embedding_shard(&out_dir.join(&shard.file), &embedded, described.dim, genres)?;
        shards.push(ShardFile {
            file: shard.file.clone(),
            rows: embedded.len(),
        });
    }
    let made = EmbeddingMeta {
        shards,
        ..described.clone()
    };
    made.save(out_dir)?;
    Ok(made)
}

/// The console's lines, and what only this run measured.
fn report(
    work: &Work<'_>,
    params: &EmbedParams,
    described: &EmbeddingMeta,
    counts: &[usize],
    device_name: &str,
) -> RunSummary {
    // No rate for nothing computed: "computed 0 at 0.0 images/s" says nothing true.
    let rate = if work.compute_seconds > 0.0 && work.computed > 0 {
        format!(
            " at {:.1} images/s on {device_name}",
            work.computed as f64 / work.compute_seconds
        )
    } else {
        String::new()
    };
    RunSummary::new([
        format!(
            "{} posters -> {}-value {}{} embeddings at {}x{} ({:?}): train {}, val {}, test {}, {} skipped",
            counts.iter().sum::<usize>(),
            described.dim,
            described.backbone,
            if params.flip {
                " (mirror-averaged)"
            } else {
                ""
            },
            params.width,
            params.height,
            params.mode,
            counts[0],
            counts[1],
            counts[2],
            work.skipped.len()
        ),
        format!(
            "computed {}{rate}, reused {} from an earlier run",
            work.computed, work.reused
        ),
    ])
    .measure("computed", work.computed)
    .measure("reused", work.reused)
    .measure("compute_seconds", work.compute_seconds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipeline_api::Stage;

    #[test]
    fn params_reject_inputs_too_small_for_the_network() {
        let err = Embed
            .canonical_params(&serde_json::json!({"width": 16}))
            .unwrap_err();
        assert_eq!(err.path, "width");
        let ok = Embed.canonical_params(&serde_json::json!({})).unwrap();
        assert_eq!(ok["width"], 224);
        assert_eq!(ok["mode"], "stretch");
    }
}
