//! Command-line interface: arguments, commands, exit codes.
//!
//! Exit codes: 0 success, 1 a stage (or the cache) failed, 2 a bad pipeline file or bad usage.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::console::{Console, say};

/// `println!` that drops the line when stdout is a closed pipe instead of panicking.
macro_rules! say {
    ($($arg:tt)*) => { say(&format!($($arg)*)) };
}
use crate::graph::DagFormat;
use crate::kinds;
use pipeline_engine::plan::Plan;
use pipeline_engine::record::{Action, format_utc};
use pipeline_engine::spec::SpecFile;
use pipeline_engine::{Engine, EngineError, RunOptions, State};

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
    /// Where `embed`, `train` and `evaluate` compute: `flex` (or `cpu`; Burn's pure-Rust CPU
    /// backend, the default), and in a binary built with libtorch (`scripts/build-tch.sh`)
    /// `tch-cpu`, `cuda` or `cuda:N`. Checked before anything runs; never part of a cache key.
    #[arg(long, global = true, env = "PIPELINE_DEVICE", value_name = "DEVICE")]
    pub device: Option<String>,
    /// Set a stage param for this run only, as if `pipeline.yaml` said so (repeatable):
    /// `-S train.learning_rate=0.01 -S resize.width=64`. The value is read as YAML (`0.01` a
    /// number, `pad` a string, `null`), validated like the file, keyed like an edit of it, and
    /// kept in the run record; the file is never written.
    #[arg(
        short = 'S',
        long = "set",
        global = true,
        value_name = "STAGE.PARAM=VALUE"
    )]
    pub set: Vec<String>,
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
    Run {
        /// Stages to bring up to date, with everything they need [default: all].
        stages: Vec<String>,
        /// Rerun this stage even if it is fresh (repeatable).
        #[arg(long, value_name = "STAGE")]
        force: Vec<String>,
        /// Print what would run and why; run nothing, write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Also bring everything downstream of the named stages up to date.
        #[arg(long)]
        downstream: bool,
        /// Rerun the dependents of `--force`d stages even if the forced output comes out identical.
        #[arg(long)]
        force_downstream: bool,
        /// After a stage fails, keep running stages that do not depend on it; exit 1 at the end.
        #[arg(long)]
        keep_going: bool,
        /// Fail at once instead of waiting when another run holds this project.
        #[arg(long)]
        no_wait: bool,
        /// Independent stages to run at the same time, 1 to 256 [default: number of cores]. Each
        /// stage still gets `--threads` workers; `-j 1` runs stages one after another.
        #[arg(short = 'j', long, value_name = "N", env = "PIPELINE_JOBS", value_parser = at_most::<256>)]
        jobs: Option<usize>,
        /// Attempt again the posters whose download failed in earlier runs (failures are
        /// otherwise remembered for the download stage's `retry_failed_after_hours`).
        #[arg(long)]
        retry_failed: bool,
        /// Recompute every item from scratch: ignore fetched posters, decoded and resized images
        /// and earlier outputs kept in the cache. With `--force STAGE`, times a stage cold or rules
        /// the cache out when a result looks wrong.
        #[arg(long)]
        no_reuse: bool,
    },
    /// Rehash every cache entry and report the ones whose files no longer match their manifest.
    Verify {
        /// Evict the damaged entries so the next run rebuilds them.
        #[arg(long)]
        repair: bool,
    },
    /// Remove cache entries that neither pipeline.lock nor the last N runs reference.
    Gc {
        /// Also keep what the last N runs used.
        #[arg(long, value_name = "N", default_value_t = 0)]
        keep: usize,
    },
    /// Show the recorded runs: when, what ran or was fresh and why, how long, the outcome.
    Log {
        /// How many of the most recent runs to show.
        #[arg(short = 'n', long, default_value_t = 10)]
        limit: usize,
        /// Print the records as JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Show whether each stage is fresh or dirty, and why.
    Status {
        /// One JSON object per stage: name, kind, state, reason, reasons, key.
        #[arg(long)]
        json: bool,
    },
    /// Ask a trained model about posters: the genres its decision rule predicts, with
    /// probabilities. Posters go through the pipeline's own download limits, decoder limits,
    /// resizing and backbone, fitted as the model's training posters were.
    Predict {
        /// Poster files or http(s) URLs.
        #[arg(required = true, value_name = "POSTER")]
        posters: Vec<String>,
        /// The model: a `train` stage [default: `evaluate`'s primary model], or a run id from
        /// `pipeline log` (a prefix, `latest` or `previous`) to ask the model that run had.
        #[arg(long, value_name = "STAGE|RUN")]
        model: Option<String>,
        /// Also list the K most probable genres, predicted (`*`) or not.
        #[arg(long, value_name = "K", default_value_t = 0)]
        top: usize,
        /// Print JSON: the model, and per poster genres, top, probabilities, input digest, error.
        #[arg(long)]
        json: bool,
    },
    /// Headline metrics of the published runs (`reports/<run-id>/metrics.json`) and their deltas.
    Metrics {
        /// `show` (the default) or `diff`.
        #[command(subcommand)]
        what: Option<MetricsCommand>,
    },
    /// Show the stages in dependency order with their inputs, or the graph for Graphviz or Mermaid.
    Dag {
        /// `text`, `dot` (`pipeline dag --format dot | dot -Tsvg > dag.svg`) or `mermaid`.
        #[arg(long, value_enum, default_value_t = DagFormat::Text)]
        format: DagFormat,
    },
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

/// Why the command failed, and with which exit code.
enum Failure {
    /// Bad pipeline file or usage: exit 2.
    Usage(anyhow::Error),
    /// A stage or the cache failed: exit 1.
    Run(anyhow::Error),
    /// Stages failed and were already reported: exit 1.
    Reported,
}

/// Parses arguments, runs the command and returns the exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PIPELINE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter)),
        )
        .with_writer(std::io::stderr)
        .init();
    let threads = cli.threads.unwrap_or_else(cores);
    // Stages that use rayon without their own pool (hashing, burn's CPU kernels) get this size too.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global();
    match execute(&cli, threads) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(err)) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
        Err(Failure::Run(err)) => {
            eprintln!("error: {err:#}");
            ExitCode::from(1)
        }
        Err(Failure::Reported) => ExitCode::from(1),
    }
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

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1)
}

fn execute(cli: &Cli, threads: usize) -> Result<(), Failure> {
    if let Some(device) = &cli.device {
        stage_train::choose_device(device).map_err(|e| Failure::Usage(e.into()))?;
    }
    let mut spec = SpecFile::load(&cli.file).map_err(|e| Failure::Usage(e.into()))?;
    spec.apply_overrides(&cli.set)
        .map_err(|e| Failure::Usage(e.into()))?;
    let registry = kinds::registry();
    let plan = Plan::build(&spec, &registry).map_err(|e| Failure::Usage(e.into()))?;
    let engine = Engine::new(&plan);
    let engine_err = |err: EngineError| match err {
        EngineError::Usage(_) => Failure::Usage(err.into()),
        other => Failure::Run(other.into()),
    };
    match &cli.command {
        Command::Run {
            stages,
            force,
            dry_run,
            downstream,
            force_downstream,
            keep_going,
            no_wait,
            jobs,
            retry_failed,
            no_reuse,
        } => {
            let console = Console::new(cli.verbose > 0);
            let options = RunOptions {
                targets: stages.clone(),
                force: force.clone(),
                dry_run: *dry_run,
                threads,
                downstream: *downstream,
                force_downstream: *force_downstream,
                keep_going: *keep_going,
                no_wait: *no_wait,
                jobs: jobs.unwrap_or_else(cores),
                retry_failed: *retry_failed,
                no_reuse: *no_reuse,
                overrides: cli.set.clone(),
            };
            let outcome = engine.run(&options, &console).map_err(engine_err)?;
            if !outcome.failed.is_empty() {
                eprintln!(
                    "error: {} failed; see the message above. Fix it and rerun `pipeline run`.",
                    outcome
                        .failed
                        .iter()
                        .map(|s| format!("`{s}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                return Err(Failure::Reported);
            }
            if *dry_run {
                if outcome.would_run.is_empty() {
                    say!("Nothing to do: every selected stage is fresh.");
                }
            } else if outcome.ran.is_empty() {
                say!("Nothing to do: every selected stage is fresh.");
            }
            for dir in &outcome.published {
                let index = plan.root.join(dir).join("index.html");
                if index.exists() {
                    say!("Report: {}", dir.join("index.html").display());
                }
            }
            Ok(())
        }
        Command::Status { json } => {
            let statuses = engine.status().map_err(engine_err)?;
            if *json {
                let text = serde_json::to_string_pretty(&statuses)
                    .context("serialising status")
                    .map_err(Failure::Run)?;
                say!("{text}");
            } else {
                let width = statuses.iter().map(|s| s.name.len()).max().unwrap_or(0);
                for status in &statuses {
                    if status.state == State::Fresh {
                        say!("{:width$}  fresh", status.name);
                    } else {
                        say!("{:width$}  dirty  {}", status.name, status.reason);
                    }
                }
            }
            Ok(())
        }
        Command::Verify { repair } => {
            let report = engine.verify(*repair).map_err(engine_err)?;
            for damaged in &report.damaged {
                say!(
                    "{} {} (stage `{}`): {}",
                    if *repair { "Evicted" } else { "Damaged" },
                    damaged.key.chars().take(16).collect::<String>(),
                    damaged.stage,
                    damaged.problems.join(", ")
                );
            }
            for stale in &report.stale_stamps {
                say!(
                    "{} {}: content changed but size, mtime and inode did not{}",
                    if *repair { "Rehashed" } else { "Stale" },
                    stale.path,
                    if *repair {
                        "; stages that read it now see the change"
                    } else {
                        ", so `status` and `run` still see the old content"
                    }
                );
            }
            say!(
                "{} entries checked, {} damaged{}; {} workspace files rehashed, {} changed unseen",
                report.checked,
                report.damaged.len(),
                if *repair && !report.damaged.is_empty() {
                    " (the next `pipeline run` rebuilds them)"
                } else {
                    ""
                },
                report.workspace_checked,
                report.stale_stamps.len()
            );
            let clean = report.damaged.is_empty() && report.stale_stamps.is_empty();
            if !*repair && !clean {
                eprintln!(
                    "error: the cache does not match the files; run `pipeline verify --repair` to evict damaged entries and record changed files"
                );
                return Err(Failure::Reported);
            }
            Ok(())
        }
        Command::Gc { keep } => {
            let report = engine.gc(*keep).map_err(engine_err)?;
            say!(
                "Removed {} entries and {} per-item results ({:.1} MB freed), kept {} entries and {} items",
                report.removed,
                report.items_removed,
                report.freed_bytes as f64 / 1e6,
                report.kept,
                report.items_kept
            );
            if report.items_skipped {
                say!(
                    "Per-item results were kept: some entries predate item lists; they go once those entries are rebuilt or collected"
                );
            }
            Ok(())
        }
        Command::Log { limit, json } => {
            let runs = engine.runs();
            for run in runs.iter().skip(runs.len().saturating_sub(*limit)) {
                if *json {
                    let line = serde_json::to_string(run)
                        .context("serialising the run record")
                        .map_err(Failure::Run)?;
                    say!("{line}");
                    continue;
                }
                let ran = run
                    .stages
                    .iter()
                    .filter(|s| s.action == Action::Ran)
                    .count();
                let overrides: String = run.overrides.iter().map(|o| format!(" -S {o}")).collect();
                say!(
                    "run {}at {} ({}{overrides}): {} in {:.1}s, {ran} ran, {} fresh",
                    if run.id.is_empty() {
                        String::new()
                    } else {
                        format!("{} ", run.id)
                    },
                    format_utc(run.started_unix),
                    if run.targets.is_empty() {
                        "all stages".to_string()
                    } else {
                        run.targets.join(" ")
                    },
                    run.outcome,
                    run.seconds,
                    run.stages
                        .iter()
                        .filter(|s| s.action == Action::Fresh)
                        .count()
                );
                let width = run.stages.iter().map(|s| s.name.len()).max().unwrap_or(0);
                for stage in &run.stages {
                    // Start offset and duration: overlapping spans are stages that ran in parallel.
                    say!(
                        "  {:8} {:width$}  from {:>8} for {:>6}  {}",
                        stage.action.as_str(),
                        stage.name,
                        format!("+{:.1}s", stage.started),
                        format!("{:.1}s", stage.seconds),
                        stage.reason
                    );
                }
            }
            Ok(())
        }
        Command::Predict {
            posters,
            model,
            top,
            json,
        } => {
            let options = crate::predict::PredictOptions {
                posters,
                model: model.as_deref(),
                top: *top,
            };
            let prediction = crate::predict::predict(&plan, &options).map_err(Failure::Run)?;
            if *json {
                let text = serde_json::to_string_pretty(&prediction)
                    .context("serialising the prediction")
                    .map_err(Failure::Run)?;
                say!("{text}");
            } else {
                say!("{}", crate::predict::render(&prediction));
            }
            let failed = prediction
                .posters
                .iter()
                .filter(|a| a.error.is_some())
                .count();
            if failed > 0 {
                eprintln!(
                    "error: {failed} of {} posters could not be read; see above",
                    prediction.posters.len()
                );
                return Err(Failure::Reported);
            }
            Ok(())
        }
        Command::Metrics { what } => {
            let text = match what {
                None => crate::experiments::show(&plan, None, false),
                Some(MetricsCommand::Show { run, json }) => {
                    crate::experiments::show(&plan, run.as_deref(), *json)
                }
                Some(MetricsCommand::Diff { old, new, json }) => {
                    crate::experiments::diff(&plan, old.as_deref(), new.as_deref(), *json)
                }
            }
            .map_err(Failure::Usage)?;
            say!("{text}");
            Ok(())
        }
        Command::Dag { format } => {
            say!("{}", crate::graph::render(&plan, *format).trim_end());
            Ok(())
        }
    }
}
