//! Owns the contract with a cluster executor (`executor: slurm` or `k8s`): which stages leave
//! this machine and how, and the keys their tasks' entries go under. The engine knows nothing of
//! `sbatch` or `kubectl`; an [`Executor`] runs a [`ClusterJob`] to its end and says how it went.
//!
//! Two placements, both through the shared cache:
//!
//! | placement | which stages | what the tasks do | what the driver does then |
//! |---|---|---|---|
//! | [`Placement::Sharded`] | kinds with `shardable` (download, resize, embed) | task `i` runs the stage on the items [`ItemShard`] `i` of `n` owns, into the entry [`shard_key`], and pushes it | pulls the `n` entries and runs the stage here: every item is found done in them (earlier outputs, item cache), so it assembles the output a local run makes |
//! | [`Placement::Whole`] | stages with `resources:` or their own `executor:` (train, evaluate) | one job runs the stage into its own key and pushes it | pulls the entry |
//!
//! Everything else runs here, as it always has. A task is `pipeline task STAGE --key KEY` with
//! its own scratch cache: it pulls its inputs from the shared cache, checks that the key it
//! computes is the driver's (the same code, params and inputs), and pushes what it made.

use std::path::PathBuf;

use pipeline_api::{ItemShard, Progress, item_key};

use crate::plan::PlannedStage;
use crate::shared::SharedError;
use crate::spec::{ExecutorKind, Resources};

/// What a cluster is asked to run for one stage.
#[derive(Debug, Clone)]
pub struct ClusterJob<'a> {
    /// The stage's name.
    pub stage: &'a str,
    /// Its key: every task checks it computes the same one.
    pub key: &'a str,
    /// `Some(n)`: an array of `n` tasks, one per shard; `None`: one job for the whole stage.
    pub shards: Option<u32>,
    /// What each task asks for.
    pub resources: Option<&'a Resources>,
    /// A directory for the job's scripts, logs and state (`cache/v1/jobs/<stage>-<key>`), on the
    /// project's file system, so a person can read the logs of a failed task.
    pub dir: PathBuf,
}

impl ClusterJob<'_> {
    /// How many tasks it has.
    pub fn tasks(&self) -> u32 {
        self.shards.unwrap_or(1)
    }
}

/// How a cluster job went, for the run record and `pipeline log`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Dispatched {
    /// `slurm` or `k8s`.
    pub executor: String,
    /// The ids the cluster gave the submissions (the first, then one per retry).
    pub jobs: Vec<String>,
    /// Tasks in the job.
    pub tasks: u32,
    /// Task indices that failed once and were resubmitted alone (a task per retry).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retried: Vec<u32>,
    /// Seconds from the first submission to the last task's end.
    pub seconds: f64,
}

/// A cluster that runs a stage's tasks: submits them, waits for them, resubmits failed ones alone
/// (up to its retry limit), and fails naming the tasks and their logs.
pub trait Executor: Sync {
    /// `slurm` or `k8s`.
    fn kind(&self) -> ExecutorKind;
    /// Runs `job` to its end. `progress` counts finished tasks.
    fn run(&self, job: &ClusterJob<'_>, progress: &dyn Progress)
    -> Result<Dispatched, SharedError>;
}

/// Where a stage's work runs in a run with an executor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// In this process.
    Here,
    /// One cluster job for the whole stage.
    Whole,
    /// An array of this many tasks, one per shard of its items; then the stage runs here.
    Sharded(u32),
}

/// The placement of `stage` when `executor` runs the cluster work with `shards` per per-item
/// stage: a stage's own `executor:` wins; under a cluster executor, per-item stages fan out and
/// stages with `resources:` go as one job; everything else stays here.
pub fn placement(stage: &PlannedStage, executor: ExecutorKind, shards: u32) -> Placement {
    let chosen = stage.executor.unwrap_or(executor);
    if chosen == ExecutorKind::Local || chosen != executor {
        return Placement::Here;
    }
    if stage.stage.info().shardable && shards >= 1 {
        Placement::Sharded(shards)
    } else if stage.resources.is_some() || stage.executor.is_some() {
        Placement::Whole
    } else {
        Placement::Here
    }
}

/// The key a shard's entry goes under: its own, so shards never pass for the whole stage.
pub fn shard_key(key: &str, shard: ItemShard) -> String {
    item_key(&[
        b"shard",
        key.as_bytes(),
        &shard.index.to_le_bytes(),
        &shard.count.to_le_bytes(),
    ])
}

/// The name a shard's entry records as its stage (`embed.shard-1-of-4`): `pipeline log` and the
/// shared cache's notes of each stage's newest entry keep them apart from the whole stage's.
pub fn shard_stage_name(stage: &str, shard: ItemShard) -> String {
    format!("{stage}.shard-{}-of-{}", shard.index, shard.count)
}
