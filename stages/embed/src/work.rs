//! One run's embedding work, shard after shard: posters found in an earlier output are copied,
//! the rest decoded, fitted and run through the backbones in parallel batches (one
//! single-threaded pool per worker), and those that do not decode are listed.

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use burn::prelude::*;
use pipeline_api::{ResultExt, StageContext, StageError};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use stage_backbone::{FrozenBackbones, images_to_input};
use stage_resize::{ResizeParams, load_resized_into};
use stage_shards::embedding::EmbeddingShard;

use crate::params::EmbedParams;
use crate::reuse::EarlierEmbeddings;

/// A poster that could not be embedded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Skipped {
    /// Movie id.
    pub id: i64,
    /// Why.
    pub reason: String,
}

/// One run's state while it embeds shard after shard.
pub(crate) struct Work<'a> {
    pub(crate) ctx: &'a StageContext<'a>,
    pub(crate) net: &'a FrozenBackbones,
    pub(crate) device: &'a Device,
    /// One single-threaded pool per worker.
    pub(crate) pools: &'a [rayon::ThreadPool],
    pub(crate) params: &'a EmbedParams,
    pub(crate) posters: &'a Path,
    pub(crate) computed: usize,
    pub(crate) reused: usize,
    pub(crate) compute_seconds: f64,
    pub(crate) skipped: Vec<Skipped>,
}

impl Work<'_> {
    /// Embeddings of the rows of one split shard (ids, posters, labels; no images), in its order,
    /// less the posters that do not decode.
    pub(crate) fn embed(
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
pub(crate) type BatchOutcome = (Vec<(usize, Vec<f32>)>, Vec<(usize, String)>);
