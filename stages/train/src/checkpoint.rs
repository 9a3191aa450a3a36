//! Resumable training state in the engine's working area (`StageContext::work_dir`): after each
//! epoch, the network, the optimiser's moments, the best epoch's network and the loop's own state.
//!
//! Each checkpoint is written into `checkpoint-NNNN.partial/` and renamed to `checkpoint-NNNN/`
//! once complete, so a kill at any instant leaves either the previous checkpoint or the new one;
//! older ones are then removed. The generators need no saving: every stream is derived from
//! `(seed, epoch)` (see `noise`). The engine keys the working area by the stage's cache key, so a
//! checkpoint from other params, inputs or code is never found here; `format` guards against one
//! from an older build of this code under the same key. `state.mpk`, written last, holds the
//! blake3 of every weight file: a checkpoint whose files do not match (a disk error, a stray
//! edit) is discarded with a line saying so, never resumed into a model committed under a clean
//! key.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use pipeline_api::{ResultExt, StageError, file_digest, write_file};
use serde::{Deserialize, Serialize};
use stage_metrics::Decision;

use crate::history::History;

/// Bumped when what a checkpoint holds changes (2: the digests of its files; 3: the state in
/// MessagePack, whose floats read back bit for bit).
const FORMAT: u32 = 3;

/// The loop's state in a checkpoint, written last.
const STATE: &str = "state.mpk";

/// The files of a checkpoint beside `state.mpk`.
const FILES: [&str; 3] = ["net.bpk", "best.bpk", "optim.bpk"];

/// The loop's state after `epochs_done` epochs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoopState {
    /// [`FORMAT`] of the code that wrote it.
    pub format: u32,
    /// Epochs finished.
    pub epochs_done: usize,
    /// Optimiser steps taken (the schedule's position).
    pub steps_done: usize,
    /// The history so far.
    pub history: History,
    /// Epochs since the best one.
    pub since_best: usize,
    /// The best epoch so far (its number is `history.best_epoch`).
    pub best: Option<BestEpoch>,
    /// File name -> blake3 of every file in [`FILES`], filled in by [`save`].
    #[serde(default)]
    pub files: BTreeMap<String, String>,
}

impl LoopState {
    /// The state before the first epoch.
    pub fn new(history: History) -> Self {
        Self {
            format: FORMAT,
            epochs_done: 0,
            steps_done: 0,
            history,
            since_best: 0,
            best: None,
            files: BTreeMap::new(),
        }
    }
}

/// What the loop keeps of its best epoch, beside the network.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BestEpoch {
    /// The monitored value (lower is better).
    pub monitored: f64,
    /// Validation probabilities.
    pub val_probs: Vec<f32>,
    /// The decision rule fitted on them.
    pub decision: Decision,
}

/// A checkpoint found in the working area.
pub struct Found {
    dir: PathBuf,
    /// Its loop state.
    pub state: LoopState,
}

impl Found {
    /// `net` with the checkpoint's weights of the last finished epoch.
    pub fn net<N: Module>(&self, net: N) -> Result<N, StageError> {
        net.try_load_file(self.dir.join("net"))
            .during("loading the checkpointed network")
    }

    /// `net` with the best epoch's weights.
    pub fn best<N: Module>(&self, net: N) -> Result<N, StageError> {
        net.try_load_file(self.dir.join("best"))
            .during("loading the checkpointed best network")
    }

    /// `optim` with the checkpoint's moments.
    pub fn optimizer(&self, optim: ModuleOptimizer) -> Result<ModuleOptimizer, StageError> {
        optim
            .load(self.dir.join("optim.bpk"))
            .during("loading the checkpointed optimiser")
    }
}

fn numbered(work_dir: &Path) -> Vec<(usize, PathBuf)> {
    let mut found: Vec<(usize, PathBuf)> = fs::read_dir(work_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let epoch = name.strip_prefix("checkpoint-")?.parse().ok()?;
            Some((epoch, entry.path()))
        })
        .collect();
    found.sort();
    found
}

/// The newest checkpoint that is complete, of this format and intact, and a line for each newer
/// one that was not and has been removed.
pub fn latest(work_dir: &Path) -> (Option<Found>, Vec<String>) {
    let mut discarded = Vec::new();
    for (epoch, dir) in numbered(work_dir).into_iter().rev() {
        match check(&dir) {
            Ok(state) => return (Some(Found { dir, state }), discarded),
            Err(why) => {
                let _ = fs::remove_dir_all(&dir);
                discarded.push(format!(
                    "discarded the checkpoint after epoch {epoch} (`{}`): {why}",
                    dir.display()
                ));
            }
        }
    }
    (None, discarded)
}

/// The state of the checkpoint in `dir` if every file it lists has its recorded digest.
fn check(dir: &Path) -> Result<LoopState, String> {
    let bytes = fs::read(dir.join(STATE)).map_err(|_| format!("it has no {STATE}"))?;
    let state: LoopState =
        rmp_serde::from_slice(&bytes).map_err(|_| format!("its {STATE} is unreadable"))?;
    if state.format != FORMAT {
        return Err(format!(
            "it was written in checkpoint format {}, this build reads {FORMAT}",
            state.format
        ));
    }
    for name in FILES {
        let recorded = state
            .files
            .get(name)
            .ok_or_else(|| format!("its state lists no digest for `{name}`"))?;
        match file_digest(&dir.join(name)) {
            Ok(actual) if actual == *recorded => {}
            Ok(_) => return Err(format!("`{name}` does not match its digest (damaged)")),
            Err(_) => return Err(format!("`{name}` is missing")),
        }
    }
    Ok(state)
}

/// Writes the state after an epoch, then drops older checkpoints.
pub fn save<N: Module + Clone>(
    work_dir: &Path,
    state: &LoopState,
    net: &N,
    optim: &ModuleOptimizer,
    best: &N,
) -> Result<(), StageError> {
    let name = format!("checkpoint-{:04}", state.epochs_done);
    let partial = work_dir.join(format!("{name}.partial"));
    let _ = fs::remove_dir_all(&partial);
    fs::create_dir_all(&partial).map_err(|e| StageError::Write {
        path: partial.clone(),
        source: e,
    })?;
    net.clone()
        .save_file(partial.join("net"))
        .during("checkpointing the network")?;
    best.clone()
        .save_file(partial.join("best"))
        .during("checkpointing the best network")?;
    optim
        .save(partial.join("optim.bpk"))
        .during("checkpointing the optimiser")?;
    let mut state = state.clone();
    for name in FILES {
        state
            .files
            .insert(name.to_string(), file_digest(&partial.join(name))?);
    }
    let bytes = rmp_serde::to_vec_named(&state).during("encoding the checkpoint state")?;
    write_file(&partial.join(STATE), bytes)?;
    let done = work_dir.join(&name);
    let _ = fs::remove_dir_all(&done);
    fs::rename(&partial, &done).map_err(|e| StageError::Write {
        path: done.clone(),
        source: e,
    })?;
    for (epoch, dir) in numbered(work_dir) {
        if epoch < state.epochs_done {
            let _ = fs::remove_dir_all(dir);
        }
    }
    Ok(())
}
