//! `resize`: decodes and resizes posters in parallel into Parquet tensor shards.
//!
//! Works one shard (`shard_rows` posters) at a time: the worker threads decode and resize straight
//! into the shard's pixel buffer while a writer thread compresses and writes the shard before, so
//! memory is bounded by two shards of resized images whatever the dataset size. Posters already
//! resized the same way by an earlier run are copied from its shards, not decoded again
//! (see `reuse`). See README.md for the shard layout.
//!
//! What lives where: this file runs the stage and fits one poster (`fit_bytes_into`, shared with
//! `predict`); `params` holds the params, `reuse` finds earlier outputs' pixels by poster.

mod params;
mod reuse;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use fast_image_resize::images::Image;
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use pipeline_api::{
    Kind, KindInfo, ParamError, ResultExt, RunSummary, StageContext, StageError, check_range,
    read_json, write_json,
};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use stage_shards::poster::decode_rgb;
use stage_shards::{Shard, ShardFile, ShardMeta, i64_column, read_table, str_column, write_shard};

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

/// What the engine knows of the kind.
const INFO: KindInfo = KindInfo {
    inputs: &["movies", "posters"],
    input_kinds: &[("movies", &["filter"]), ("posters", &["download"])],
    ..KindInfo::new(
        "resize",
        // 3: `meta.json` records the fit `mode` (carried by split into the models' `model.json`).
        3,
        "decode and resize posters in parallel into Parquet tensor shards",
        pipeline_api::locked_dependencies!(),
    )
};

impl Kind for Resize {
    type Params = ResizeParams;
    fn info(&self) -> &'static KindInfo {
        &INFO
    }
    fn check(p: &ResizeParams) -> Result<(), ParamError> {
        check_range("width", p.width, 1..=4096, " pixels")?;
        check_range("height", p.height, 1..=4096, " pixels")?;
        check_range("shard_rows", p.shard_rows, 1..=65_536, "")?;
        Ok(())
    }
    fn run(&self, ctx: &StageContext<'_>, params: ResizeParams) -> Result<RunSummary, StageError> {
        let movies_dir = ctx.input("movies")?;
        let posters_dir = ctx.input("posters")?;
        let vocab: Vocab = read_json(&movies_dir.join("vocab.json"))?;
        let table_path = movies_dir.join("movies.parquet");
        let table = read_table(&table_path)?;
        let ids: Vec<i64> = i64_column(&table, "imdbId", &table_path)?
            .iter()
            .map(Option::unwrap_or_default)
            .collect();
        let files: Vec<String> = str_column(&table, "poster_file", &table_path)?
            .iter()
            .map(|f| f.unwrap_or_default().to_string())
            .collect();
        let genres: Vec<String> = str_column(&table, "genres", &table_path)?
            .iter()
            .map(|g| g.unwrap_or_default().to_string())
            .collect();
        drop(table);
        let index: BTreeMap<&str, usize> = vocab
            .genres
            .iter()
            .enumerate()
            .map(|(i, g)| (g.as_str(), i))
            .collect();
        let labels_of = |i: usize| {
            let mut labels = vec![0u8; vocab.genres.len()];
            for g in genres[i].split('|') {
                if let Some(&k) = index.get(g) {
                    labels[k] = 1;
                }
            }
            labels
        };

        let stamp = ReuseStamp::new(PIXELS_VERSION, &params);
        let mut earlier = EarlierRows::open(ctx.earlier_outputs, &stamp);
        write_json(&ctx.out_dir.join(STAMP_FILE), &stamp)?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(ctx.threads)
            .build()
            .during("starting resize threads")?;
        let pixels = (params.width * params.height * 3) as usize;
        let genre_count = vocab.genres.len();
        let mut skipped = Vec::new();
        ctx.progress.start("resize", ids.len() as u64);
        let decoded = AtomicUsize::new(0);
        let mut reused = 0;

        let shard_files = std::thread::scope(|scope| -> Result<Vec<ShardFile>, StageError> {
            // Rendezvous channel: the writer holds one shard while the workers fill the next.
            let (to_writer, shards) = mpsc::sync_channel::<(String, Shard)>(0);
            // Written shards' pixel buffers come back: fresh 150 MB buffers cost page faults.
            let (recycle, recycled) = mpsc::channel::<Vec<u8>>();
            let out_dir = ctx.out_dir;
            let writer = scope.spawn(move || -> Result<Vec<ShardFile>, StageError> {
                let mut written = Vec::new();
                for (file, shard) in shards {
                    write_shard(&out_dir.join(&file), &shard, pixels, genre_count)?;
                    written.push(ShardFile {
                        file,
                        rows: shard.len(),
                    });
                    let _ = recycle.send(shard.images);
                }
                Ok(written)
            });
            for (n, start) in (0..ids.len()).step_by(params.shard_rows).enumerate() {
                let rows = start..(start + params.shard_rows).min(ids.len());
                // Every kept row is overwritten whole (copied, or resized; pad clears first),
                // so a recycled buffer needs no clearing. A fresh one comes zeroed from the
                // allocator as untouched pages, faulted in by the workers that fill them:
                // growing an empty Vec instead would memset 150 MB on this thread while the
                // workers wait (~100 ms per fresh buffer at 1,024 rows of 224x224).
                let mut images = recycled
                    .try_recv()
                    .unwrap_or_else(|_| vec![0; rows.len() * pixels]);
                images.resize(rows.len() * pixels, 0);
                let mut outcomes: Vec<Option<Result<(), String>>> = vec![None; rows.len()];
                if let Some(earlier) = earlier.as_mut() {
                    // In the earlier output's order, so each of its shards is read once.
                    let mut found: Vec<((usize, usize), usize)> = rows
                        .clone()
                        .enumerate()
                        .filter_map(|(r, i)| earlier.find(&files[i]).map(|at| (at, r)))
                        .collect();
                    found.sort_unstable();
                    for (at, r) in found {
                        if earlier.copy_into(at, &mut images[r * pixels..(r + 1) * pixels]) {
                            outcomes[r] = Some(Ok(()));
                            reused += 1;
                            ctx.progress.advance(1);
                        }
                    }
                }
                pool.install(|| {
                    images
                        .par_chunks_mut(pixels)
                        .zip(outcomes.par_iter_mut())
                        .zip(rows.clone())
                        .filter(|((_, outcome), _)| outcome.is_none())
                        .for_each(|((dst, outcome), i)| {
                            decoded.fetch_add(1, Ordering::Relaxed);
                            *outcome = Some(load_resized_into(
                                &posters_dir.join(&files[i]),
                                &params,
                                dst,
                            ));
                            ctx.progress.advance(1);
                        })
                });
                let mut shard = Shard::default();
                let mut kept = 0;
                for (r, (i, outcome)) in rows.clone().zip(outcomes).enumerate() {
                    match outcome.expect("every row was reused or decoded") {
                        Ok(()) => {
                            if kept != r {
                                images.copy_within(r * pixels..(r + 1) * pixels, kept * pixels);
                            }
                            kept += 1;
                            shard.ids.push(ids[i]);
                            shard.posters.push(files[i].clone());
                            shard.labels.extend_from_slice(&labels_of(i));
                        }
                        Err(reason) => skipped.push(Skipped { id: ids[i], reason }),
                    }
                }
                images.truncate(kept * pixels);
                shard.images = images;
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
        })?;
        let meta = ShardMeta {
            width: params.width as usize,
            height: params.height as usize,
            channels: 3,
            layout: "HWC".into(),
            genres: vocab.genres.clone(),
            shards: shard_files,
            mode: Some(params.mode),
        };
        meta.save(ctx.out_dir)?;
        write_json(&ctx.out_dir.join("skipped.json"), &skipped)?;
        let decoded = decoded.into_inner();
        Ok(RunSummary::new([
            format!(
                "{} posters -> {} shard(s) of {}x{} ({:?}), {} skipped",
                meta.rows(),
                meta.shards.len(),
                params.width,
                params.height,
                params.mode,
                skipped.len()
            ),
            format!("decoded {decoded}, reused {reused} from an earlier run"),
        ]))
    }
}

/// Decodes one poster and fits it into `dst` (`width * height * 3` values; RGB, HWC).
pub fn load_resized_into(path: &Path, params: &ResizeParams, dst: &mut [u8]) -> Result<(), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("unreadable: {e}"))?;
    fit_bytes_into(&bytes, params, dst)
}

/// Decodes poster bytes (with the pipeline's limits) and fits them into `dst`: what `resize`,
/// `embed` and `pipeline predict` all do to a poster.
pub fn fit_bytes_into(bytes: &[u8], params: &ResizeParams, dst: &mut [u8]) -> Result<(), String> {
    let rgb = decode_rgb(bytes).map_err(|e| format!("broken poster: {e}"))?;
    resize_into(rgb.width(), rgb.height(), rgb.into_raw(), params, dst)
}

thread_local! {
    /// One resizer per worker thread: it keeps its scratch buffers between posters.
    static RESIZER: RefCell<Resizer> = RefCell::new(Resizer::new());
}

/// Resizes packed RGB pixels according to `params.mode` into `dst`.
pub fn resize_into(
    width: u32,
    height: u32,
    rgb: Vec<u8>,
    params: &ResizeParams,
    dst: &mut [u8],
) -> Result<(), String> {
    let src = Image::from_vec_u8(width, height, rgb, PixelType::U8x3).map_err(|e| e.to_string())?;
    let alg = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
    RESIZER.with(|resizer| {
        let mut resizer = resizer.borrow_mut();
        fit(&mut resizer, &src, params, &alg, dst)
    })
}

fn fit(
    resizer: &mut Resizer,
    src: &Image<'_>,
    params: &ResizeParams,
    alg: &ResizeOptions,
    dst: &mut [u8],
) -> Result<(), String> {
    let (width, height) = (src.width(), src.height());
    match params.mode {
        Mode::Stretch | Mode::Crop => {
            let options = if params.mode == Mode::Crop {
                alg.fit_into_destination(Some((0.5, 0.5)))
            } else {
                *alg
            };
            let mut dst = Image::from_slice_u8(params.width, params.height, dst, PixelType::U8x3)
                .map_err(|e| e.to_string())?;
            resizer
                .resize(src, &mut dst, &options)
                .map_err(|e| e.to_string())
        }
        Mode::Pad => {
            let scale = f64::min(
                params.width as f64 / width as f64,
                params.height as f64 / height as f64,
            );
            let inner_w = ((width as f64 * scale).round() as u32).clamp(1, params.width);
            let inner_h = ((height as f64 * scale).round() as u32).clamp(1, params.height);
            let mut inner = Image::new(inner_w, inner_h, PixelType::U8x3);
            resizer
                .resize(src, &mut inner, alg)
                .map_err(|e| e.to_string())?;
            dst.fill(0);
            let (x0, y0) = ((params.width - inner_w) / 2, (params.height - inner_h) / 2);
            let row = (inner_w * 3) as usize;
            for (y, src_row) in inner.buffer().chunks_exact(row).enumerate() {
                let at = (((y0 as usize + y) * params.width as usize) + x0 as usize) * 3;
                dst[at..at + row].copy_from_slice(src_row);
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resize_rgb(width: u32, height: u32, rgb: Vec<u8>, params: &ResizeParams) -> Vec<u8> {
        let mut out = vec![0u8; (params.width * params.height * 3) as usize];
        resize_into(width, height, rgb, params, &mut out).unwrap();
        out
    }

    fn params(mode: Mode) -> ResizeParams {
        ResizeParams {
            width: 4,
            height: 4,
            mode,
            shard_rows: 8,
        }
    }

    #[test]
    fn every_mode_produces_the_target_size() {
        let rgb = vec![200u8; 8 * 2 * 3];
        for mode in [Mode::Stretch, Mode::Pad, Mode::Crop] {
            let out = resize_rgb(8, 2, rgb.clone(), &params(mode));
            assert_eq!(out.len(), 4 * 4 * 3, "{mode:?}");
        }
    }

    #[test]
    fn pad_leaves_black_bars_and_stretch_does_not() {
        let rgb = vec![200u8; 8 * 2 * 3];
        let padded = resize_rgb(8, 2, rgb.clone(), &params(Mode::Pad));
        // 8x2 scaled by 0.5 is 4x1, centred on row 1 of 4; rows 0, 2 and 3 are padding.
        assert!(padded[..12].iter().all(|&v| v == 0), "row 0 is padding");
        assert!(padded[12..24].iter().all(|&v| v > 150), "row 1 is image");
        assert!(padded[24..].iter().all(|&v| v == 0), "rows 2-3 are padding");
        let stretched = resize_rgb(8, 2, rgb, &params(Mode::Stretch));
        assert!(stretched.iter().all(|&v| v > 150));
    }
}
