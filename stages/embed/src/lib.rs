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
//! What lives where: this file runs the stage; `reuse` finds earlier outputs' vectors by poster.

mod reuse;

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use burn::prelude::*;
use pipeline_api::{
    Kind, KindInfo, ParamError, ResultExt, RunSummary, StageContext, StageError, check_range,
    create_dir, file_digest, write_json,
};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use stage_backbone::{FrozenBackbones, FrozenLite, Variant, images_to_input, select_device};
use stage_resize::{Mode, ResizeParams, load_resized_into};
use stage_shards::embedding::write_embedding_shard;
use stage_shards::embedding::{EMBEDDING_LAYOUT, EmbeddingMeta, EmbeddingShard};
use stage_shards::{BackboneUse, Preparation, ShardFile, ShardMeta, read_shard_labels};

use reuse::EarlierEmbeddings;
pub use reuse::{ReuseStamp, STAMP_FILE};

/// Version of the embeddings, recorded in the reuse stamp: bump when the vector made from the
/// same poster, weights and params changes (earlier outputs then stop being reused).
const EMBEDDING_VERSION: u32 = 1;

/// The splits a `split` output holds, in the order they are embedded.
pub const SPLITS: [&str; 3] = ["train", "val", "test"];

/// The embed stage kind.
pub struct Embed;

/// Params of `embed`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbedParams {
    /// `efficientnet-lite0` (default) or `efficientnet-lite2`; `files: {weights: ...}` must be
    /// that network's checkpoint.
    pub backbone: Variant,
    /// Width posters are fitted into before the backbone sees them.
    pub width: u32,
    /// Height, likewise (the network pools globally, so it need not equal `width`).
    pub height: u32,
    /// `stretch`, `pad` or `crop`, as in `resize`.
    pub mode: Mode,
    /// Posters per forward pass.
    pub batch_size: usize,
    /// Average each poster's features with those of its mirror image (twice the work).
    pub flip: bool,
    /// A second network (`files: {second_weights: ...}` its checkpoint) whose 1,280 values follow
    /// the first's in every vector; null (default) for one.
    pub second_backbone: Option<Variant>,
}

impl Default for EmbedParams {
    fn default() -> Self {
        // ImageNet's size; README.md gives the speed and sample scores of the sizes measured.
        Self {
            backbone: Variant::Lite0,
            width: 224,
            height: 224,
            mode: Mode::Stretch,
            // Measured at 224x224: 8 as fast as 16 (paired wall ratio 0.98) at half the peak
            // memory (275 against 539 MiB); 32 was slower.
            batch_size: 8,
            flip: false,
            second_backbone: None,
        }
    }
}

/// A poster that could not be embedded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Skipped {
    /// Movie id.
    pub id: i64,
    /// Why.
    pub reason: String,
}

/// What the engine knows of the kind.
const INFO: KindInfo = KindInfo {
    inputs: &["data", "posters"],
    input_kinds: &[("data", &["split"]), ("posters", &["download"])],
    files: &["weights"],
    optional_files: &["second_weights"],
    // How many posters share a forward pass changes speed and memory, not the features.
    knob_params: &["batch_size"],
    ..KindInfo::new(
        "embed",
        // 2: `summary.json` holds no computed/reused counts (they go to the run's summary);
        // `meta.json` records the preparation (fit, backbones and their weights' digests, flip).
        2,
        "per-poster ImageNet features from a frozen EfficientNet-Lite, split by split",
        pipeline_api::locked_dependencies!(),
    )
};

impl Kind for Embed {
    type Params = EmbedParams;
    fn info(&self) -> &'static KindInfo {
        &INFO
    }
    fn check(p: &EmbedParams) -> Result<(), ParamError> {
        // Lite0 downsamples 32x; below 32 pixels a side the last blocks see one pixel.
        check_range("width", p.width, 32..=1024, " pixels")?;
        check_range("height", p.height, 32..=1024, " pixels")?;
        check_range("batch_size", p.batch_size, 1..=1024, "")?;
        Ok(())
    }
    fn run(&self, ctx: &StageContext<'_>, params: EmbedParams) -> Result<RunSummary, StageError> {
        let data = ctx.input("data")?;
        let posters = ctx.input("posters")?;
        let weights = ctx.file("weights")?;
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
        let stamp = ReuseStamp {
            version: EMBEDDING_VERSION,
            backbone: params.backbone.name().into(),
            weights: file_digest(weights)?,
            width: params.width,
            height: params.height,
            mode: params.mode,
            flip: params.flip,
            second_backbone: second.map(|(variant, _)| variant.name().into()),
            second_weights: second.map(|(_, path)| file_digest(path)).transpose()?,
        };
        let preparation = Preparation {
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
        };
        let backbone_name = match second {
            Some((variant, _)) => format!("{}+{}", params.backbone.name(), variant.name()),
            None => params.backbone.name().to_string(),
        };
        let mut earlier = EarlierEmbeddings::open(ctx.earlier_outputs, &stamp, &SPLITS);
        write_json(&ctx.out_dir.join(STAMP_FILE), &stamp)?;

        let (device, device_name) =
            select_device().map_err(|e| StageError::invalid(e.to_string()))?;
        ctx.progress.message("loading the backbone");
        let mut nets = Vec::new();
        for (path, variant) in
            std::iter::once((weights, params.backbone)).chain(second.map(|(v, p)| (p, v)))
        {
            let net = stage_backbone::load(path, variant, &device)
                .map_err(|e| StageError::invalid(e.to_string()))?;
            // Batch norms folded into the convs: the same features, four fewer passes per conv.
            nets.push(FrozenLite::new(&net));
        }
        let net = FrozenBackbones::new(nets, params.flip);
        let dim = net.dim();
        // On the CPU, one forward pass per thread beats splitting each pass over the threads
        // (the network's layers are small: 21.4 images/s on 1 thread, 29.7 on 2 sharing each pass,
        // at 224x224); and a pass on one thread gives the same bits whatever `--threads` is. A GPU
        // takes the batches one at a time.
        let workers = if device_name.starts_with("flex") {
            ctx.threads.max(1)
        } else {
            1
        };
        let pools = (0..workers)
            .map(|_| rayon::ThreadPoolBuilder::new().num_threads(1).build())
            .collect::<Result<Vec<_>, _>>()
            .during("starting embed threads")?;

        let metas: Vec<ShardMeta> = SPLITS
            .iter()
            .map(|split| ShardMeta::load(&data.join(split)))
            .collect::<Result<_, _>>()?;
        let genres = metas[0].genres.clone();
        let mut work = Work {
            ctx,
            net: &net,
            device: &device,
            pools: &pools,
            params: &params,
            posters,
            computed: 0,
            reused: 0,
            compute_seconds: 0.0,
            skipped: Vec::new(),
        };
        ctx.progress.start(
            "embed",
            metas.iter().map(ShardMeta::rows).sum::<usize>() as u64,
        );
        let mut counts = Vec::new();
        for (split, meta) in SPLITS.iter().zip(&metas) {
            let (in_dir, out_dir) = (data.join(split), ctx.out_dir.join(split));
            create_dir(&out_dir)?;
            let mut shards = Vec::new();
            for shard in &meta.shards {
                let rows = read_shard_labels(&in_dir.join(&shard.file), genres.len())?;
                let embedded = work.embed(rows, &mut earlier, genres.len())?;
                write_embedding_shard(&out_dir.join(&shard.file), &embedded, dim, genres.len())?;
                shards.push(ShardFile {
                    file: shard.file.clone(),
                    rows: embedded.len(),
                });
            }
            let out_meta = EmbeddingMeta {
                layout: EMBEDDING_LAYOUT.into(),
                dim,
                backbone: backbone_name.clone(),
                input_width: params.width as usize,
                input_height: params.height as usize,
                genres: genres.clone(),
                shards,
                preparation: Some(preparation.clone()),
            };
            counts.push(out_meta.rows());
            out_meta.save(&out_dir)?;
        }
        write_json(&ctx.out_dir.join("skipped.json"), &work.skipped)?;
        write_json(
            &ctx.out_dir.join("summary.json"),
            &serde_json::json!({
                "train": counts[0], "val": counts[1], "test": counts[2],
                "skipped": work.skipped.len(),
            }),
        )?;
        let rate = if work.compute_seconds > 0.0 {
            format!(
                " at {:.1} images/s on {device_name}",
                work.computed as f64 / work.compute_seconds
            )
        } else {
            String::new()
        };
        Ok(RunSummary::new([
            format!(
                "{} posters -> {dim}-value {}{} embeddings at {}x{} ({:?}): train {}, val {}, test {}, {} skipped",
                counts.iter().sum::<usize>(),
                backbone_name,
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
        .measure("compute_seconds", work.compute_seconds))
    }
}

/// One run's state while it embeds shard after shard.
struct Work<'a> {
    ctx: &'a StageContext<'a>,
    net: &'a FrozenBackbones,
    device: &'a Device,
    /// One single-threaded pool per worker.
    pools: &'a [rayon::ThreadPool],
    params: &'a EmbedParams,
    posters: &'a Path,
    computed: usize,
    reused: usize,
    compute_seconds: f64,
    skipped: Vec<Skipped>,
}

impl Work<'_> {
    /// Embeddings of the rows of one split shard (ids, posters, labels; no images), in its order,
    /// less the posters that do not decode.
    fn embed(
        &mut self,
        rows: stage_shards::Shard,
        earlier: &mut Option<EarlierEmbeddings>,
        genres: usize,
    ) -> Result<EmbeddingShard, StageError> {
        let n = rows.len();
        let mut vectors: Vec<Option<Vec<f32>>> = vec![None; n];
        if let Some(earlier) = earlier.as_mut() {
            for (r, vector) in earlier.lookup(&rows.posters) {
                vectors[r] = Some(vector);
                self.reused += 1;
                self.ctx.progress.advance(1);
            }
        }
        let missing: Vec<usize> = (0..n).filter(|&r| vectors[r].is_none()).collect();
        let mut failed: Vec<Option<String>> = vec![None; n];
        let started = Instant::now();
        let batches: Vec<&[usize]> = missing.chunks(self.params.batch_size).collect();
        for outcome in self.compute_all(&batches, &rows.posters)? {
            let (ok, errors) = outcome;
            for (r, vector) in ok {
                vectors[r] = Some(vector);
            }
            for (r, reason) in errors {
                failed[r] = Some(reason);
            }
        }
        self.computed += missing.len();
        self.compute_seconds += started.elapsed().as_secs_f64();
        let mut out = EmbeddingShard::default();
        for r in 0..n {
            match (vectors[r].take(), failed[r].take()) {
                (Some(vector), _) => {
                    out.ids.push(rows.ids[r]);
                    out.posters.push(rows.posters[r].clone());
                    out.embeddings.extend(vector);
                    out.labels
                        .extend_from_slice(&rows.labels[r * genres..(r + 1) * genres]);
                }
                (None, reason) => self.skipped.push(Skipped {
                    id: rows.ids[r],
                    reason: reason.unwrap_or_else(|| "not embedded".into()),
                }),
            }
        }
        Ok(out)
    }

    /// Runs [`Self::compute`] on every batch, each worker taking the next batch on its own
    /// single-threaded pool; outcomes in batch order.
    fn compute_all(
        &self,
        batches: &[&[usize]],
        posters: &[String],
    ) -> Result<Vec<BatchOutcome>, StageError> {
        let next = AtomicUsize::new(0);
        let outcomes: Mutex<Vec<Option<BatchOutcome>>> = Mutex::new(vec![None; batches.len()]);
        let first_error: Mutex<Option<StageError>> = Mutex::new(None);
        std::thread::scope(|scope| {
            for pool in self.pools.iter().take(batches.len()) {
                scope.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= batches.len() || first_error.lock().is_ok_and(|e| e.is_some()) {
                            break;
                        }
                        match pool.install(|| self.compute(batches[i], posters)) {
                            Ok(outcome) => {
                                if let Ok(mut all) = outcomes.lock() {
                                    all[i] = Some(outcome);
                                }
                                self.ctx.progress.advance(batches[i].len() as u64);
                            }
                            Err(err) => {
                                if let Ok(mut first) = first_error.lock() {
                                    first.get_or_insert(err);
                                }
                            }
                        }
                    }
                });
            }
        });
        if let Some(err) = first_error.into_inner().ok().flatten() {
            return Err(err);
        }
        outcomes
            .into_inner()
            .map_err(|_| StageError::invalid("an embed worker panicked"))?
            .into_iter()
            .map(|o| o.ok_or_else(|| StageError::invalid("a batch was not embedded")))
            .collect()
    }

    /// Decodes the posters of `batch` (row numbers) and runs the backbone on those that decode:
    /// (row, embedding) pairs and (row, reason) failures. Runs inside one worker's pool.
    fn compute(&self, batch: &[usize], posters: &[String]) -> Result<BatchOutcome, StageError> {
        let (w, h) = (self.params.width as usize, self.params.height as usize);
        let pixels = w * h * 3;
        let fit = ResizeParams {
            width: self.params.width,
            height: self.params.height,
            mode: self.params.mode,
            shard_rows: 1,
        };
        let mut buffer = vec![0u8; batch.len() * pixels];
        {
            let outcomes: Vec<Result<(), String>> = buffer
                .par_chunks_mut(pixels)
                .zip(batch.par_iter())
                .map(|(dst, &r)| load_resized_into(&self.posters.join(&posters[r]), &fit, dst))
                .collect();
            let mut kept = Vec::with_capacity(batch.len());
            let mut failed = Vec::new();
            for (&r, outcome) in batch.iter().zip(outcomes) {
                match outcome {
                    Ok(()) => kept.push(r),
                    Err(reason) => failed.push((r, reason)),
                }
            }
            if kept.len() < batch.len() {
                // Close the gaps the failures left so the tensor holds only decoded posters.
                let mut at = 0;
                for (i, &r) in batch.iter().enumerate() {
                    if kept.contains(&r) {
                        buffer.copy_within(i * pixels..(i + 1) * pixels, at * pixels);
                        at += 1;
                    }
                }
                buffer.truncate(kept.len() * pixels);
            }
            if kept.is_empty() {
                return Ok((Vec::new(), failed));
            }
            let x = images_to_input(&buffer, kept.len(), h, w, self.device);
            let features: Vec<f32> = self
                .net
                .embeddings(x)
                .try_into_vec_as::<f32>()
                .during("reading embeddings")?;
            let ok = kept
                .into_iter()
                .zip(features.chunks(self.net.dim()))
                .map(|(r, v)| (r, v.to_vec()))
                .collect();
            Ok((ok, failed))
        }
    }
}

/// Embedded (row, vector) pairs and (row, reason) failures of one batch.
type BatchOutcome = (Vec<(usize, Vec<f32>)>, Vec<(usize, String)>);

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
