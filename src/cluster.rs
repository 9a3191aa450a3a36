//! Cluster execution at the command line: `run --executor slurm|k8s` (the executor, the shared
//! cache it needs, Ctrl-C cancelling the jobs), `run --executor k8s --emit DIR` (the manifests of
//! what would be sent), and `pipeline task` (what each cluster task runs).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, anyhow};
use pipeline_api::ItemShard;
use pipeline_cluster::{Kubernetes, Slurm, TaskCommand};
use pipeline_engine::cluster::{ClusterJob, Executor, Placement, placement};
use pipeline_engine::plan::Plan;
use pipeline_engine::spec::ExecutorKind;
use pipeline_engine::{Engine, RunOptions, SharedPolicy, State};
use pipeline_remote::{Missing, Remote};

use crate::commands::{self, Failure, engine_failure};
use crate::console::Console;
use crate::shared;

/// Shards per per-item stage when neither `--shards` nor `executor: {shards}` says.
const DEFAULT_SHARDS: u32 = 4;

/// Extra attempts of a failed task when `executor: {retries}` does not say.
const DEFAULT_RETRIES: u32 = 2;

/// What `run` was asked about the cluster.
pub struct ClusterArgs<'a> {
    /// `--executor`, over `executor: {kind}`.
    pub executor: Option<ExecutorKind>,
    /// `--shards`, over `executor: {shards}`.
    pub shards: Option<u32>,
    /// `--emit DIR`.
    pub emit: Option<&'a Path>,
    /// `--remote`.
    pub remote: Option<&'a str>,
    /// `--transfers`.
    pub transfers: usize,
    /// `-S` overrides: the tasks key the same plan.
    pub overrides: &'a [String],
}

/// The executor kind of this run: `--executor`, else the file's.
pub fn kind_of(args: &ClusterArgs<'_>, plan: &Plan) -> ExecutorKind {
    args.executor.unwrap_or(plan.executor.kind)
}

/// `pipeline run` with a cluster executor: the shared cache is required and used both ways;
/// stages are placed as [`placement`] says; Ctrl-C cancels what was submitted.
pub fn run(
    engine: Engine<'_>,
    plan: &Plan,
    options: &RunOptions,
    args: &ClusterArgs<'_>,
    console: &Arc<Console>,
) -> Result<(), Failure> {
    let kind = kind_of(args, plan);
    check_stage_executors(plan, kind)?;
    // Emitting sends nothing: only a run that pushes may start a directory remote.
    let missing = if args.emit.is_some() {
        Missing::Refuse
    } else {
        Missing::Create
    };
    let shared = shared::open(args.remote, plan, missing, args.transfers, console)?;
    let command = task_command(plan, &shared, args.overrides, kind)?;
    let shards = args
        .shards
        .or(plan.executor.shards)
        .unwrap_or(DEFAULT_SHARDS);
    let retries = plan.executor.retries.unwrap_or(DEFAULT_RETRIES);
    if let Some(dir) = args.emit {
        if kind != ExecutorKind::K8s {
            return Err(Failure::Usage(anyhow!(
                "`--emit` writes Kubernetes manifests: use it with `--executor k8s`"
            )));
        }
        let k8s = Kubernetes::new(command, plan.executor.clone(), retries);
        return emit(&engine, &shared, &k8s, shards, dir, &options.force);
    }
    let options = RunOptions {
        shared: SharedPolicy::PullAndPush,
        ..options.clone()
    };
    let slurm;
    let k8s;
    let executor: &dyn Executor = match kind {
        ExecutorKind::Slurm => {
            slurm = Arc::new(Slurm::new(command, retries));
            let cancel = slurm.clone();
            cancel_on_interrupt(move || cancel.cancel_all(), "scancel")?;
            slurm.as_ref()
        }
        ExecutorKind::K8s => {
            k8s = Arc::new(Kubernetes::new(command, plan.executor.clone(), retries));
            let cancel = k8s.clone();
            cancel_on_interrupt(move || cancel.cancel_all(), "kubectl delete job")?;
            k8s.as_ref()
        }
        ExecutorKind::Local => {
            return Err(Failure::Usage(anyhow!(
                "`executor: local` runs here: drop `--executor` or name `slurm` or `k8s`"
            )));
        }
    };
    let engine = engine.with_shared(&shared).with_executor(executor, shards);
    commands::run(&engine, plan, &options, console)?;
    shared::push_fresh(&engine, &shared)
}

/// A stage may name `local` or this run's executor, not another cluster.
fn check_stage_executors(plan: &Plan, kind: ExecutorKind) -> Result<(), Failure> {
    for stage in &plan.stages {
        if let Some(own) = stage.executor
            && own != ExecutorKind::Local
            && own != kind
        {
            return Err(Failure::Usage(anyhow!(
                "stage `{}` says `executor: {}` but this run uses `{}`; a run sends work to one cluster (set `executor: local` on the stage, or run with `--executor {}`)",
                stage.name,
                own.as_str(),
                kind.as_str(),
                own.as_str()
            )));
        }
    }
    Ok(())
}

/// How every task starts: this binary (Slurm: the nodes see it at the same path; Kubernetes: the
/// image has `pipeline` on its `PATH`), in the project, with the same file, overrides and
/// shared cache (a directory remote made absolute).
fn task_command(
    plan: &Plan,
    shared: &Remote,
    overrides: &[String],
    kind: ExecutorKind,
) -> Result<TaskCommand, Failure> {
    let absolute = |path: &Path| -> Result<PathBuf, Failure> {
        // `pipeline.yaml` has the root `` (its parent): the current directory.
        let path = if path.as_os_str().is_empty() {
            Path::new(".")
        } else {
            path
        };
        std::path::absolute(path)
            .with_context(|| format!("making `{}` absolute", path.display()))
            .map_err(Failure::Run)
    };
    let url = shared.url();
    let remote = if url.contains("://") {
        url.to_string()
    } else {
        absolute(Path::new(url))?.display().to_string()
    };
    let project = absolute(&plan.root)?;
    Ok(match kind {
        ExecutorKind::K8s => TaskCommand {
            program: PathBuf::from("pipeline"),
            project: PathBuf::from("/project"),
            file: plan
                .file
                .file_name()
                .map_or_else(|| PathBuf::from("pipeline.yaml"), PathBuf::from),
            remote,
            overrides: overrides.to_vec(),
        },
        _ => TaskCommand {
            program: std::env::current_exe()
                .context("finding this binary's path for the tasks")
                .map_err(Failure::Run)?,
            file: absolute(&plan.file)?,
            project,
            remote,
            overrides: overrides.to_vec(),
        },
    })
}

/// On SIGINT or SIGTERM: `cancel` the cluster's jobs, say which, and exit 130. The run's pending
/// entries are cleared by the next run, as after any interruption.
fn cancel_on_interrupt<F>(cancel: F, how: &'static str) -> Result<(), Failure>
where
    F: Fn() -> Vec<String> + Send + 'static,
{
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .context("listening for Ctrl-C")
        .map_err(Failure::Run)?;
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            let cancelled = cancel();
            if cancelled.is_empty() {
                tell!("\nInterrupted; no cluster job was running.");
            } else {
                tell!(
                    "\nInterrupted; cancelled the cluster jobs ({how}): {}",
                    cancelled.join(", ")
                );
            }
            std::process::exit(130);
        }
    });
    Ok(())
}

/// `--emit DIR`: the manifest of every stage that would go to the cluster and whose key is known
/// now (its inputs are here or on the shared cache). Nothing runs.
fn emit(
    engine: &Engine<'_>,
    shared: &Remote,
    k8s: &Kubernetes,
    shards: u32,
    dir: &Path,
    forced: &[String],
) -> Result<(), Failure> {
    let statuses = engine
        .status_with(&|key| {
            shared
                .record(key)
                .ok()
                .flatten()
                .map(|r| r.manifest.output_digest)
        })
        .map_err(engine_failure)?;
    let mut waiting = Vec::new();
    let mut written = 0;
    for status in &statuses {
        let stage = engine
            .plan()
            .stage(&status.name)
            .expect("statuses are of plan stages");
        let shards = match placement(stage, ExecutorKind::K8s, shards) {
            Placement::Here => continue,
            Placement::Whole => None,
            Placement::Sharded(n) => Some(n),
        };
        if status.state == State::Fresh && !forced.contains(&status.name) {
            continue;
        }
        let Some(key) = &status.key else {
            waiting.push(status.name.clone());
            continue;
        };
        let job = ClusterJob {
            stage: &status.name,
            key,
            shards,
            resources: stage.resources.as_ref(),
            dir: dir.to_path_buf(),
        };
        let path = k8s.emit(&job, dir).map_err(|e| Failure::Run(e.into()))?;
        written += 1;
        say!(
            "Wrote {} ({}: {})",
            path.display(),
            status.name,
            match shards {
                Some(n) => format!("an Indexed Job of {n} tasks"),
                None => "one Job".into(),
            }
        );
    }
    if written == 0 && waiting.is_empty() {
        say!(
            "Nothing to emit: every stage sent to the cluster is fresh (`--force STAGE` emits one anyway)."
        );
    }
    if !waiting.is_empty() {
        say!(
            "Not yet: {} (their inputs are made by stages that have not run; run those, push them, and emit again).",
            waiting.join(", ")
        );
    }
    Ok(())
}

/// What `pipeline task` was given.
pub struct TaskArgs<'a> {
    /// The stage.
    pub stage: &'a str,
    /// The driver's key of it.
    pub key: &'a str,
    /// `--shards N`.
    pub shards: Option<u32>,
    /// `--shard-index I`.
    pub shard_index: Option<u32>,
    /// `--shard-index-from VAR`.
    pub shard_index_from: Option<&'a str>,
    /// `--cache-dir`.
    pub cache_dir: &'a Path,
    /// `--remote`.
    pub remote: Option<&'a str>,
}

/// `pipeline task`: one cluster task (see `pipeline_engine::task`).
pub fn task(
    engine: Engine<'_>,
    plan: &Plan,
    args: &TaskArgs<'_>,
    threads: usize,
    console: &Arc<Console>,
) -> Result<(), Failure> {
    let shard = match args.shards {
        None => None,
        Some(count) => {
            let index = match (args.shard_index, args.shard_index_from) {
                (Some(index), _) => index,
                (None, Some(var)) => std::env::var(var)
                    .ok()
                    .and_then(|v| v.trim().parse().ok())
                    .ok_or_else(|| {
                        Failure::Usage(anyhow!(
                            "`--shard-index-from {var}`: the environment has no whole number in `{var}`"
                        ))
                    })?,
                (None, None) => {
                    return Err(Failure::Usage(anyhow!(
                        "`--shards {count}` needs `--shard-index I` or `--shard-index-from VAR`"
                    )));
                }
            };
            if count == 0 || index >= count {
                return Err(Failure::Usage(anyhow!(
                    "shard {index} of {count} does not exist (indices run from 0 to {})",
                    count.saturating_sub(1)
                )));
            }
            Some(ItemShard { index, count })
        }
    };
    let shared = shared::open(args.remote, plan, Missing::Refuse, 8, console)?;
    let engine = engine
        .with_cache_dir(args.cache_dir.to_path_buf())
        .with_shared(&shared);
    let elsewhere = |key: &str| {
        shared
            .record(key)
            .ok()
            .flatten()
            .map(|r| r.manifest.output_digest)
    };
    let outcome = engine
        .run_task(
            args.stage,
            args.key,
            shard,
            &elsewhere,
            threads,
            console.as_ref(),
        )
        .map_err(|e| Failure::Run(e.into()))?;
    let what = match shard {
        Some(s) => format!("shard {} of {} of `{}`", s.index, s.count, args.stage),
        None => format!("`{}`", args.stage),
    };
    match outcome {
        pipeline_engine::task::TaskOutcome::Ran(key) => {
            say!("Made {what} and pushed it as {key}.")
        }
        pipeline_engine::task::TaskOutcome::Found(key) => {
            say!("The shared cache had {what} already ({key}).")
        }
    }
    Ok(())
}

/// What `pipeline status` adds while a run's cluster jobs are out: a line per job.
pub fn active_job_lines(engine: &Engine<'_>) -> Vec<String> {
    pipeline_cluster::active_jobs(&engine.store().jobs_dir())
        .iter()
        .map(pipeline_cluster::JobState::line)
        .collect()
}
