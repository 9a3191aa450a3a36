//! The command line as clap reads it: the global options, one `Args` struct per subcommand,
//! and the option groups (`-S`, `--device`, `--remote`) only the subcommands that use them
//! flatten in, so that `gc --help` offers nothing `gc` ignores. What the commands do is `cli`'s.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use pipeline_engine::spec::ExecutorKind;

use crate::graph::DagFormat;

const AFTER_HELP: &str = "\
Examples:
  pipeline run                  bring every stage up to date
  pipeline run train            bring `train` and what it needs up to date, nothing downstream
  pipeline run --dry-run        say what would run and why, touching nothing
  pipeline run --force resize   rerun `resize` even though it is fresh
  pipeline run -j 1             run one stage at a time (default: independent stages in parallel)
  pipeline status               each stage fresh or dirty, with the reason
  pipeline status --json        the same, one JSON object per stage
  pipeline run -S train.learning_rate=0.01
                                one run with a param changed, the file left as it is
  pipeline dag                  the stages in dependency order
  pipeline dag --format dot     the graph for Graphviz (or `mermaid` for Markdown)
  pipeline log                  what the last runs did, and why
  pipeline metrics diff         headline metrics of the previous and the latest run, with deltas
  pipeline predict poster.jpg --top 5
                                the genres the trained model sees in a poster
  pipeline verify --repair      rehash the cache and evict damaged entries
  pipeline gc --keep 3          drop cache entries not used by the lock or the last 3 runs
  pipeline push                 send the locked entries to the shared cache (`--remote URL`)
  pipeline run --pull           take what the shared cache has instead of running it
  pipeline status --remote      which entries are here, which on the shared cache
  pipeline run --executor slurm --remote /shared/cache --shards 8
                                download, resize and embed as Slurm job arrays of 8 tasks
  pipeline run --executor k8s --emit k8s/
                                write the Kubernetes Indexed Jobs instead of running them

Outputs live in `cache/` (content-addressed by stage key), `pipeline.lock` records what each stage
last ran with, and published reports land in `reports/`.";

/// A declarative, content-cached pipeline that trains a movie-poster genre classifier.
#[derive(Debug, Parser)]
#[command(name = "pipeline", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// The pipeline file; its directory is the project root (cache, lock, reports).
    #[arg(
        short = 'f',
        long = "file",
        global = true,
        default_value = "pipeline.yaml"
    )]
    pub file: PathBuf,
    /// Worker threads per stage, 1 to 1024 [default: number of cores]. Never part of a cache
    /// key.
    #[arg(long, global = true, env = "PIPELINE_THREADS", value_parser = at_most::<1024>)]
    pub threads: Option<usize>,
    /// Say more: progress lines when not on a terminal and published outputs; debug logs with -vv.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Bring stages up to date, running only what changed and what depends on it.
    Run(RunArgs),
    /// Run one task of a stage sent to a cluster (what each Slurm array task or Kubernetes pod
    /// runs; `pipeline run --executor` writes the command). It pulls the stage's inputs from
    /// the shared cache into its own `--cache-dir`, checks that it computes the driver's key,
    /// makes the stage (or the shard of its items) and pushes it.
    #[command(hide = true)]
    Task(TaskArgs),
    /// Send cache entries to the shared cache (`--remote`).
    ///
    /// Those of the named stages [default: every stage] that `pipeline.lock` records or the last
    /// run used, or with `--all` every complete entry. Blobs the remote has are skipped; each
    /// entry's record goes last, created only if absent.
    Push(PushArgs),
    /// Take entries from the shared cache instead of running their stages.
    ///
    /// The entries the named stages (and what they need) would run under, each checked against
    /// its blake3. Nothing runs and `pipeline.lock` is not touched: the next `pipeline run` finds
    /// them fresh.
    Pull(PullArgs),
    /// Rehash every cache entry and report the ones whose files no longer match their manifest.
    Verify(VerifyArgs),
    /// Remove cache entries that neither pipeline.lock nor the recorded runs use.
    ///
    /// By default every recorded run (`pipeline log` lists them, and gc says how many it kept)
    /// keeps its entries, so a model an experiment (`-S`) trained stays askable with `predict
    /// --model RUN`. `--keep N` keeps only the last N runs' entries.
    Gc(GcArgs),
    /// Show the recorded runs: when, what ran or was fresh and why, how long, the outcome.
    Log(LogArgs),
    /// Show whether each stage is fresh or dirty, and why.
    Status(StatusArgs),
    /// Ask a trained model about posters: the genres its decision rule predicts, with
    /// probabilities. Posters go through the pipeline's own download limits, decoder limits,
    /// resizing and backbone, fitted as the model's training posters were.
    Predict(PredictArgs),
    /// Headline metrics of the published runs (`reports/<run-id>/metrics.json`) and their deltas.
    Metrics(MetricsArgs),
    /// Show the stages in dependency order with their inputs, or the graph for Graphviz or Mermaid.
    Dag(DagArgs),
}

/// `pipeline run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Stages to bring up to date, with everything they need [default: all].
    pub stages: Vec<String>,
    /// Rerun this stage even if it is fresh (repeatable).
    #[arg(long, value_name = "STAGE")]
    pub force: Vec<String>,
    /// Print what would run and why; run nothing, write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Also bring everything downstream of the named stages up to date.
    #[arg(long)]
    pub downstream: bool,
    /// Rerun the dependents of `--force`d stages even if the forced output comes out identical.
    #[arg(long)]
    pub force_downstream: bool,
    /// After a stage fails, keep running stages that do not depend on it; exit 1 at the end.
    #[arg(long)]
    pub keep_going: bool,
    /// Fail at once instead of waiting when another run holds this project.
    #[arg(long)]
    pub no_wait: bool,
    /// Independent stages to run at the same time, 1 to 256 [default: number of cores]. Each
    /// stage still gets `--threads` workers; `-j 1` runs stages one after another.
    #[arg(short = 'j', long, value_name = "N", env = "PIPELINE_JOBS", value_parser = at_most::<256>)]
    pub jobs: Option<usize>,
    /// Attempt again the posters whose download failed in earlier runs (failures are
    /// otherwise remembered for the download stage's `retry_failed_after_hours`).
    #[arg(long)]
    pub retry_failed: bool,
    /// Recompute every item from scratch: ignore fetched posters, decoded and resized images
    /// and earlier outputs kept in the cache. With `--force STAGE`, times a stage cold or rules
    /// the cache out when a result looks wrong.
    #[arg(long)]
    pub no_reuse: bool,
    /// Before running a dirty stage, take its entry from the shared cache when it has one
    /// (checked against its blake3; a damaged one is refused and the stage runs).
    #[arg(long)]
    pub pull: bool,
    /// Send each entry to the shared cache as soon as it is committed, and the fresh ones
    /// the run used at the end.
    #[arg(long)]
    pub push: bool,
    #[command(flatten)]
    pub remote: RemoteArg,
    /// Transfers with the shared cache at a time, 1 to 64.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = at_most::<64>)]
    pub transfers: usize,
    /// Where stages run [default: `executor:` in the pipeline file, else local]. With `slurm`
    /// or `k8s`, per-item stages (download, resize, embed) are split into `--shards` tasks
    /// of a job array (a Slurm array, a Kubernetes Indexed Job), and stages with
    /// `resources:` go as one job each; everything moves through the shared cache
    /// (`--remote`), which every node must reach. Ctrl-C cancels the jobs.
    #[arg(long, value_enum, value_name = "EXECUTOR")]
    pub executor: Option<ExecutorArg>,
    /// Tasks per per-item stage on a cluster, 1 to 10000 [default: `executor: {shards}`,
    /// else 4].
    #[arg(long, value_name = "N", value_parser = at_most::<10000>)]
    pub shards: Option<usize>,
    /// With `--executor k8s`: write the Job manifests of the stages that would be sent into
    /// DIR and run nothing (apply them with `kubectl apply -f DIR`).
    #[arg(long, value_name = "DIR")]
    pub emit: Option<PathBuf>,
    #[command(flatten)]
    pub params: ParamsArg,
    #[command(flatten)]
    pub device: DeviceArg,
}

/// `pipeline task`.
#[derive(Debug, clap::Args)]
pub struct TaskArgs {
    /// The stage.
    pub stage: String,
    /// The key the driver computed; the task refuses to run under any other.
    #[arg(long)]
    pub key: String,
    /// Split the stage's items into N shards (1 to 10000) and make one of them.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub shards: Option<u32>,
    /// Which shard, from 0.
    #[arg(long, value_name = "I", conflicts_with = "shard_index_from")]
    pub shard_index: Option<u32>,
    /// Read the shard's index from this environment variable (`SLURM_ARRAY_TASK_ID`,
    /// `JOB_COMPLETION_INDEX`).
    #[arg(long, value_name = "VAR")]
    pub shard_index_from: Option<String>,
    /// The task's own cache (scratch): never the project's, which the driver holds.
    #[arg(long, value_name = "DIR")]
    pub cache_dir: PathBuf,
    #[command(flatten)]
    pub remote: RemoteArg,
    #[command(flatten)]
    pub params: ParamsArg,
    #[command(flatten)]
    pub device: DeviceArg,
}

/// `pipeline push`.
#[derive(Debug, clap::Args)]
pub struct PushArgs {
    /// Stages whose entries to send [default: all].
    pub stages: Vec<String>,
    /// Every complete entry in the local cache, not only the locked ones.
    #[arg(long, conflicts_with = "stages")]
    pub all: bool,
    #[command(flatten)]
    pub remote: RemoteArg,
    /// Transfers at a time, 1 to 64.
    #[arg(short = 'j', long, value_name = "N", default_value_t = 8, value_parser = at_most::<64>)]
    pub jobs: usize,
}

/// `pipeline pull`.
#[derive(Debug, clap::Args)]
pub struct PullArgs {
    /// Stages to pull, with what they need [default: all].
    pub stages: Vec<String>,
    #[command(flatten)]
    pub remote: RemoteArg,
    #[command(flatten)]
    pub params: ParamsArg,
    /// Transfers at a time, 1 to 64.
    #[arg(short = 'j', long, value_name = "N", default_value_t = 8, value_parser = at_most::<64>)]
    pub jobs: usize,
}

/// `pipeline verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Evict the damaged entries so the next run rebuilds them (with `--remote`: delete the
    /// damaged blobs and the records that name them).
    #[arg(long)]
    pub repair: bool,
    /// Check the shared cache instead: read every record and rehash every blob it names.
    #[command(flatten)]
    pub remote: RemoteArg,
}

/// `pipeline gc`.
#[derive(Debug, clap::Args)]
pub struct GcArgs {
    /// Keep what only the last N recorded runs used [default: every recorded run].
    #[arg(long, value_name = "N")]
    pub keep: Option<usize>,
}

/// `pipeline log`.
#[derive(Debug, clap::Args)]
pub struct LogArgs {
    /// How many of the most recent runs to show.
    #[arg(short = 'n', long, default_value_t = 10)]
    pub limit: usize,
    /// Print the records as JSON lines.
    #[arg(long)]
    pub json: bool,
}

/// `pipeline status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// One JSON object per stage: name, kind, state, reason, reasons, key.
    #[arg(long)]
    pub json: bool,
    /// Also say, per stage, whether the shared cache has its entry.
    #[command(flatten)]
    pub remote: RemoteArg,
    #[command(flatten)]
    pub params: ParamsArg,
}

/// `pipeline predict`.
#[derive(Debug, clap::Args)]
pub struct PredictArgs {
    /// Poster files or http(s) URLs.
    #[arg(required = true, value_name = "POSTER")]
    pub posters: Vec<String>,
    /// The model: a `train` stage [default: `evaluate`'s primary model], or a run id from
    /// `pipeline log` (a prefix, `latest` or `previous`) to ask the model that run had.
    #[arg(long, value_name = "STAGE|RUN")]
    pub model: Option<String>,
    /// Also list the K most probable genres; those the decision rule predicts are marked `*`
    /// (a legend line says so), the rest are probable but below their threshold.
    #[arg(long, value_name = "K", default_value_t = 0)]
    pub top: usize,
    /// Print JSON: the model, and per poster genres, top, probabilities, input digest, error.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub params: ParamsArg,
    #[command(flatten)]
    pub device: DeviceArg,
}

/// `pipeline metrics`.
#[derive(Debug, clap::Args)]
pub struct MetricsArgs {
    /// `show` (the default) or `diff`.
    #[command(subcommand)]
    pub what: Option<MetricsCommand>,
}

/// `pipeline dag`.
#[derive(Debug, clap::Args)]
pub struct DagArgs {
    /// `text`, `dot` (`pipeline dag --format dot | dot -Tsvg > dag.svg`) or `mermaid`.
    #[arg(long, value_enum, default_value_t = DagFormat::Text)]
    pub format: DagFormat,
}

impl Command {
    /// The `-S` overrides, for the commands that take them.
    pub fn overrides(&self) -> &[String] {
        match self {
            Command::Run(RunArgs { params, .. })
            | Command::Task(TaskArgs { params, .. })
            | Command::Pull(PullArgs { params, .. })
            | Command::Status(StatusArgs { params, .. })
            | Command::Predict(PredictArgs { params, .. }) => &params.set,
            _ => &[],
        }
    }

    /// `--device`, for the commands that compute with a model.
    pub fn device(&self) -> Option<&str> {
        match self {
            Command::Run(RunArgs { device, .. })
            | Command::Task(TaskArgs { device, .. })
            | Command::Predict(PredictArgs { device, .. }) => device.device.as_deref(),
            _ => None,
        }
    }
}

/// `--executor`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ExecutorArg {
    /// Here, in this process.
    Local,
    /// Slurm: `sbatch` job arrays.
    Slurm,
    /// Kubernetes: Indexed Jobs.
    K8s,
}

impl From<ExecutorArg> for ExecutorKind {
    fn from(arg: ExecutorArg) -> Self {
        match arg {
            ExecutorArg::Local => ExecutorKind::Local,
            ExecutorArg::Slurm => ExecutorKind::Slurm,
            ExecutorArg::K8s => ExecutorKind::K8s,
        }
    }
}

/// `-S`: for the commands that key stages (run, pull, status, predict, task).
#[derive(Debug, Default, clap::Args)]
pub struct ParamsArg {
    /// Set a stage param for this run only, as if `pipeline.yaml` said so (repeatable):
    /// `-S train.learning_rate=0.01 -S resize.width=64`. The value is read as YAML (`0.01` a
    /// number, `pad` a string, `null`), validated like the file, keyed like an edit of it, and
    /// kept in the run record; the file is never written.
    #[arg(short = 'S', long = "set", value_name = "STAGE.PARAM=VALUE")]
    pub set: Vec<String>,
}

/// `--device`: for the commands that compute with a model (run, predict, task).
#[derive(Debug, Default, clap::Args)]
pub struct DeviceArg {
    /// Where `embed`, `train` and `evaluate` compute: `flex` (or `cpu`; Burn's pure-Rust CPU
    /// backend, the default), and in a binary built with libtorch (`scripts/build-tch.sh`)
    /// `tch-cpu`, `cuda` or `cuda:N`. Checked before anything runs; never part of a cache key.
    #[arg(long, env = "PIPELINE_DEVICE", value_name = "DEVICE")]
    pub device: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct RemoteArg {
    /// The shared cache: s3://BUCKET/PREFIX, gs://, az://, file:///DIR or a directory path
    /// [default: $PIPELINE_REMOTE, else `cache: {remote: URL}` in the pipeline file]. Credentials
    /// come from the environment, never the file: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY
    /// (AWS_ENDPOINT for a server other than AWS), or AWS_PROFILE.
    #[arg(long, value_name = "URL", num_args = 0..=1, default_missing_value = "")]
    pub remote: Option<String>,
}

/// `pipeline metrics ...`. RUN is a run id (`pipeline log` shows them), a unique prefix of one,
/// `latest` or `previous`.
#[derive(Debug, Subcommand)]
pub enum MetricsCommand {
    /// One run's headline metrics [default: the latest].
    Show {
        /// The run.
        run: Option<String>,
        /// Print JSON: run, folder, overrides, metrics.
        #[arg(long)]
        json: bool,
    },
    /// Two runs' headline metrics side by side with the change [default: previous and latest].
    Diff {
        /// The older run [default: previous].
        old: Option<String>,
        /// The newer run [default: latest].
        new: Option<String>,
        /// Print JSON: old, new, and per metric old, new, change.
        #[arg(long)]
        json: bool,
    },
}

/// A count from 1 to `MAX`: a thread per unit, so an unbounded one (`--threads 100000`) would
/// stall the machine before the first stage ran.
fn at_most<const MAX: usize>(text: &str) -> Result<usize, String> {
    let n: usize = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a whole number"))?;
    if (1..=MAX).contains(&n) {
        Ok(n)
    } else {
        Err(format!("{n} is outside 1 to {MAX}"))
    }
}
