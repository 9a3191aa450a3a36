//! `resize`: decodes and resizes posters in parallel into Parquet tensor shards.
//!
//! Works one shard (`shard_rows` posters) at a time: the worker threads decode and resize straight
//! into the shard's pixel buffer while a writer thread compresses and writes the shard before, so
//! memory is bounded by two shards of resized images whatever the dataset size. Posters already
//! resized the same way by an earlier run are copied from its shards, not decoded again
//! (see `reuse`). See README.md for the shard layout.
//!
//! What lives where: this file runs the stage in named steps (the rows and their labels, one
//! shard filled, shards written while the next is filled); `fit` fits one poster
//! (`fit_bytes_into`, shared with `embed` and `predict`); `params` holds the params, `reuse`
//! finds earlier outputs' pixels by poster.

mod fit;
mod params;
mod reuse;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use pipeline_api::{
    Kind, KindInfo, ParamError, ResultExt, RunSummary, StageContext, StageError, check_range,
    read_json, write_json,
};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use stage_shards::movies::{MOVIES_FILE, read_kept};
use stage_shards::{Shard, ShardFile, ShardMeta, write_shard};

pub use fit::{fit_bytes_into, load_resized_into, resize_into};
pub use params::{Mode, ResizeParams};
use reuse::EarlierRows;
pub use reuse::{ReuseStamp, STAMP_FILE};

/// Version of the pixels, recorded in the reuse stamp: bump when the pixels made from the same
/// poster and params change (earlier outputs then stop being reused).
const PIXELS_VERSION: u32 = 2;

/// The resize stage kind.
pub struct Resize;

/// The part of `vocab.json` written by `filter` that resize needs.
#[derive(Debug, Deserialize)]
struct Vocab {
    genres: Vec<String>,
}

/// A poster that could not be used.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Skipped {
    /// Movie id.
    pub id: i64,
    /// Why.
    pub reason: String,
}

impl Kind for Resize {
    type Params = ResizeParams;
    const INFO: KindInfo = KindInfo {
        inputs: &["movies", "posters"],
        input_kinds: &[("movies", &["filter"]), ("posters", &["download"])],
        shardable: true,
        ..KindInfo::new(
            "resize",
            // 3: `meta.json` records the fit `mode` (carried by split into the models' `model.json`).
            3,
            "decode and resize posters in parallel into Parquet tensor shards",
            pipeline_api::locked_dependencies!(),
        )
    };
    fn check(p: &ResizeParams) -> Result<(), ParamError> {
        check_range("width", p.width, 1..=4096, " pixels")?;
        check_range("height", p.height, 1..=4096, " pixels")?;
        check_range("shard_rows", p.shard_rows, 1..=65_536, "")?;
        Ok(())
    }
    fn run(&self, ctx: &StageContext<'_>, params: ResizeParams) -> Result<RunSummary, StageError> {
        let movies_dir = ctx.input("movies")?;
        let vocab: Vocab = read_json(&movies_dir.join("vocab.json"))?;
        let mut rows = rows(movies_dir, &vocab)?;
        // Run as one shard of a fanned-out stage, only the posters it owns.
        rows.retain(|row| pipeline_api::owned(ctx.shard, &row.poster_file));
        let stamp = ReuseStamp::new(PIXELS_VERSION, &params);
        let earlier = EarlierRows::open(ctx.earlier_outputs, &stamp);
        write_json(&ctx.out_dir.join(STAMP_FILE), &stamp)?;
        let mut work = ShardWork {
            ctx,
            params: &params,
            posters_dir: ctx.input("posters")?,
            pixels: (params.width * params.height * 3) as usize,
            pool: rayon::ThreadPoolBuilder::new()
                .num_threads(ctx.threads)
                .build()
                .during("starting resize threads")?,
            earlier,
            skipped: Vec::new(),
            decoded: AtomicUsize::new(0),
            reused: 0,
        };
        ctx.progress.start("resize", rows.len() as u64);
        let shard_files = work.write_shards(&rows, vocab.genres.len())?;
        let meta = ShardMeta {
            width: params.width as usize,
            height: params.height as usize,
            channels: 3,
            layout: "HWC".into(),
            genres: vocab.genres,
            shards: shard_files,
            mode: Some(params.mode),
        };
        meta.save(ctx.out_dir)?;
        write_json(&ctx.out_dir.join("skipped.json"), &work.skipped)?;
        Ok(RunSummary::new([
            format!(
                "{} posters -> {} shard(s) of {}x{} ({:?}), {} skipped",
                meta.rows(),
                meta.shards.len(),
                params.width,
                params.height,
                params.mode,
                work.skipped.len()
            ),
            format!(
                "decoded {}, reused {} from an earlier run",
                work.decoded.into_inner(),
                work.reused
            ),
        ]))
    }
}

/// One kept movie to resize.
struct Row {
    id: i64,
    /// Its poster in `download`'s output.
    poster_file: String,
    /// Multi-hot, in the vocabulary's order.
    labels: Vec<u8>,
}

/// `filter`'s kept movies with their labels.
fn rows(movies_dir: &Path, vocab: &Vocab) -> Result<Vec<Row>, StageError> {
    let index: BTreeMap<&str, usize> = vocab
        .genres
        .iter()
        .enumerate()
        .map(|(i, g)| (g.as_str(), i))
        .collect();
    Ok(read_kept(&movies_dir.join(MOVIES_FILE))?
        .into_iter()
        .map(|kept| {
            let mut labels = vec![0u8; vocab.genres.len()];
            for genre in &kept.movie.genres {
                if let Some(&k) = index.get(genre.as_str()) {
                    labels[k] = 1;
                }
            }
            Row {
                id: kept.movie.id,
                poster_file: kept.poster_file,
                labels,
            }
        })
        .collect())
}

/// The shards being made, and what was counted on the way.
struct ShardWork<'a> {
    ctx: &'a StageContext<'a>,
    params: &'a ResizeParams,
    posters_dir: &'a Path,
    /// u8 values per image.
    pixels: usize,
    pool: rayon::ThreadPool,
    earlier: Option<EarlierRows>,
    skipped: Vec<Skipped>,
    decoded: AtomicUsize,
    reused: usize,
}

impl ShardWork<'_> {
    /// Fills shard after shard of `shard_rows` rows while a writer thread compresses and writes
    /// the one before; returns the files written.
    fn write_shards(&mut self, rows: &[Row], genres: usize) -> Result<Vec<ShardFile>, StageError> {
        let (pixels, out_dir) = (self.pixels, self.ctx.out_dir);
        std::thread::scope(|scope| {
            // Rendezvous channel: the writer holds one shard while the workers fill the next.
            let (to_writer, shards) = mpsc::sync_channel::<(String, Shard)>(0);
            // Written shards' pixel buffers come back: fresh 150 MB buffers cost page faults.
            let (recycle, recycled) = mpsc::channel::<Vec<u8>>();
            let writer = scope.spawn(move || -> Result<Vec<ShardFile>, StageError> {
                let mut written = Vec::new();
                for (file, shard) in shards {
                    write_shard(&out_dir.join(&file), &shard, pixels, genres)?;
                    written.push(ShardFile {
                        file,
                        rows: shard.len(),
                    });
                    let _ = recycle.send(shard.images);
                }
                Ok(written)
            });
            for (n, chunk) in rows.chunks(self.params.shard_rows).enumerate() {
                // Every kept row is overwritten whole (copied, or resized; pad clears first),
                // so a recycled buffer needs no clearing. A fresh one comes zeroed from the
                // allocator as untouched pages, faulted in by the workers that fill them:
                // growing an empty Vec instead would memset 150 MB on this thread while the
                // workers wait (~100 ms per fresh buffer at 1,024 rows of 224x224).
                let mut images = recycled
                    .try_recv()
                    .unwrap_or_else(|_| vec![0; chunk.len() * pixels]);
                images.resize(chunk.len() * pixels, 0);
                let shard = self.fill_shard(chunk, images);
                if to_writer
                    .send((format!("shard-{n:05}.parquet"), shard))
                    .is_err()
                {
                    break; // the writer failed; its error is returned below
                }
            }
            drop(to_writer);
            writer
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// One shard of `chunk`'s rows in `images`: copied from an earlier output where one made
    /// them the same way, decoded and resized in parallel otherwise; a poster that fails is
    /// skipped and its row closed up.
    fn fill_shard(&mut self, chunk: &[Row], mut images: Vec<u8>) -> Shard {
        let pixels = self.pixels;
        let mut outcomes: Vec<Option<Result<(), String>>> = vec![None; chunk.len()];
        if let Some(earlier) = self.earlier.as_mut() {
            // In the earlier output's order, so each of its shards is read once.
            let mut found: Vec<((usize, usize), usize)> = chunk
                .iter()
                .enumerate()
                .filter_map(|(r, row)| earlier.find(&row.poster_file).map(|at| (at, r)))
                .collect();
            found.sort_unstable();
            for (at, r) in found {
                if earlier.copy_into(at, &mut images[r * pixels..(r + 1) * pixels]) {
                    outcomes[r] = Some(Ok(()));
                    self.reused += 1;
                    self.ctx.progress.advance(1);
                }
            }
        }
        let (ctx, params, posters_dir, decoded) =
            (self.ctx, self.params, self.posters_dir, &self.decoded);
        self.pool.install(|| {
            images
                .par_chunks_mut(pixels)
                .zip(outcomes.par_iter_mut())
                .zip(chunk)
                .filter(|((_, outcome), _)| outcome.is_none())
                .for_each(|((dst, outcome), row)| {
                    decoded.fetch_add(1, Ordering::Relaxed);
                    *outcome = Some(load_resized_into(
                        &posters_dir.join(&row.poster_file),
                        params,
                        dst,
                    ));
                    ctx.progress.advance(1);
                })
        });
        let mut shard = Shard::default();
        let mut kept = 0;
        for (r, (row, outcome)) in chunk.iter().zip(outcomes).enumerate() {
            match outcome.expect("every row was reused or decoded") {
                Ok(()) => {
                    if kept != r {
                        images.copy_within(r * pixels..(r + 1) * pixels, kept * pixels);
                    }
                    kept += 1;
                    shard.ids.push(row.id);
                    shard.posters.push(row.poster_file.clone());
                    shard.labels.extend_from_slice(&row.labels);
                }
                Err(reason) => self.skipped.push(Skipped { id: row.id, reason }),
            }
        }
        images.truncate(kept * pixels);
        shard.images = images;
        shard
    }
}
