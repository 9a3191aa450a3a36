//! The command line's edge: logging, one [`Session`] per invocation, one function per
//! subcommand (as just keeps its), and exit codes. The arguments are [`crate::args`]'s; what a
//! command prints is `commands`', `shared`'s and `cluster`'s.
//!
//! Exit codes: 0 success, 1 a stage (or the cache) failed, 2 a bad pipeline file or bad usage.

use std::process::ExitCode;

use clap::Parser;
use pipeline_engine::spec::ExecutorKind;
use pipeline_engine::{RunOptions, SharedPolicy};
use pipeline_remote::Missing;

use crate::args::{
    Cli, Command, GcArgs, LogArgs, MetricsArgs, MetricsCommand, PredictArgs, PullArgs, PushArgs,
    RunArgs, StatusArgs, TaskArgs, VerifyArgs,
};
use crate::commands::{self, Failure};
use crate::predict::PredictOptions;
use crate::session::Session;
use crate::{cluster, experiments, graph, shared};

/// Records and blobs `status --remote` and `verify --remote` ask about at a time.
const CHECKS_AT_A_TIME: usize = 8;

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
    let outcome = Session::open(&cli, threads).and_then(|session| execute(&session));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(err)) => {
            tell!("error: {err:#}");
            ExitCode::from(2)
        }
        Err(Failure::Run(err)) => {
            tell!("error: {err:#}");
            ExitCode::from(1)
        }
        Err(Failure::Reported) => ExitCode::from(1),
    }
}

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1)
}

fn execute(session: &Session<'_>) -> Result<(), Failure> {
    match &session.cli.command {
        Command::Run(args) => run(session, args),
        Command::Task(args) => task(session, args),
        Command::Push(args) => push(session, args),
        Command::Pull(args) => pull(session, args),
        Command::Status(args) => status(session, args),
        Command::Verify(args) => verify(session, args),
        Command::Gc(GcArgs { keep }) => commands::gc(&session.engine(), *keep),
        Command::Log(LogArgs { limit, json }) => commands::log(&session.engine(), *limit, *json),
        Command::Predict(args) => predict(session, args),
        Command::Metrics(MetricsArgs { what }) => metrics(session, what.as_ref()),
        Command::Dag(args) => {
            say!("{}", graph::render(&session.plan, args.format).trim_end());
            Ok(())
        }
    }
}

/// `pipeline run`: here, with the shared cache when asked, or on a cluster.
fn run(session: &Session<'_>, args: &RunArgs) -> Result<(), Failure> {
    let options = RunOptions {
        targets: args.stages.clone(),
        force: args.force.clone(),
        dry_run: args.dry_run,
        threads: session.threads,
        downstream: args.downstream,
        force_downstream: args.force_downstream,
        keep_going: args.keep_going,
        no_wait: args.no_wait,
        jobs: args.jobs.unwrap_or_else(cores),
        retry_failed: args.retry_failed,
        no_reuse: args.no_reuse,
        overrides: session.overrides().to_vec(),
        shared: SharedPolicy::of_flags(args.pull, args.push),
    };
    let (plan, console) = (&session.plan, &session.console);
    let cluster_args = cluster::ClusterArgs {
        executor: args.executor.map(ExecutorKind::from),
        shards: args.shards.map(|n| n as u32),
        emit: args.emit.as_deref(),
        remote: args.remote.remote.as_deref(),
        transfers: args.transfers,
        overrides: session.overrides(),
    };
    if cluster::kind_of(&cluster_args, plan) != ExecutorKind::Local {
        return cluster::run(session.engine(), plan, &options, &cluster_args, console);
    }
    if args.emit.is_some() {
        return Err(Failure::Usage(anyhow::anyhow!(
            "`--emit` writes Kubernetes manifests: use it with `--executor k8s`"
        )));
    }
    if !(args.pull || args.push) {
        return commands::run(&session.engine(), plan, &options, console);
    }
    // Only a run that sends may start a directory remote.
    let missing = if args.push {
        Missing::Create
    } else {
        Missing::Refuse
    };
    let remote = session.shared(&args.remote, missing, args.transfers)?;
    let engine = session.engine().with_shared(&remote);
    commands::run(&engine, plan, &options, console)?;
    if args.push {
        shared::push_fresh(&engine, &remote)?;
    }
    Ok(())
}

/// `pipeline task`: one task of a stage a driver sent to a cluster.
fn task(session: &Session<'_>, args: &TaskArgs) -> Result<(), Failure> {
    let task = cluster::TaskArgs {
        stage: &args.stage,
        key: &args.key,
        shards: args.shards,
        shard_index: args.shard_index,
        shard_index_from: args.shard_index_from.as_deref(),
        cache_dir: &args.cache_dir,
        remote: args.remote.remote.as_deref(),
    };
    cluster::task(
        session.engine(),
        &session.plan,
        &task,
        session.threads,
        &session.console,
    )
}

fn push(session: &Session<'_>, args: &PushArgs) -> Result<(), Failure> {
    let remote = session.shared(&args.remote, Missing::Create, args.jobs)?;
    shared::push(&session.engine(), &remote, &args.stages, args.all)
}

fn pull(session: &Session<'_>, args: &PullArgs) -> Result<(), Failure> {
    let remote = session.shared(&args.remote, Missing::Refuse, args.jobs)?;
    let options = RunOptions {
        targets: args.stages.clone(),
        threads: session.threads,
        jobs: cores(),
        shared: SharedPolicy::PullOnly,
        overrides: session.overrides().to_vec(),
        ..RunOptions::default()
    };
    shared::pull(
        &session.engine().with_shared(&remote),
        &session.console,
        &options,
    )
}

fn status(session: &Session<'_>, args: &StatusArgs) -> Result<(), Failure> {
    let engine = session.engine();
    if args.remote.remote.is_none() {
        commands::status(&engine, args.json)?;
        if !args.json {
            for line in cluster::active_job_lines(&engine) {
                say!("{line}");
            }
        }
        return Ok(());
    }
    let remote = session.shared(&args.remote, Missing::Refuse, CHECKS_AT_A_TIME)?;
    shared::status(&engine, &remote, args.json)
}

fn verify(session: &Session<'_>, args: &VerifyArgs) -> Result<(), Failure> {
    if args.remote.remote.is_none() {
        return commands::verify(&session.engine(), args.repair);
    }
    let remote = session.shared(&args.remote, Missing::Refuse, CHECKS_AT_A_TIME)?;
    shared::verify(&remote, args.repair)
}

fn predict(session: &Session<'_>, args: &PredictArgs) -> Result<(), Failure> {
    let options = PredictOptions {
        posters: &args.posters,
        model: args.model.as_deref(),
        top: args.top,
    };
    commands::predict(&session.plan, &options, args.json)
}

fn metrics(session: &Session<'_>, what: Option<&MetricsCommand>) -> Result<(), Failure> {
    let plan = &session.plan;
    let text = match what {
        None => experiments::show(plan, None, false),
        Some(MetricsCommand::Show { run, json }) => experiments::show(plan, run.as_deref(), *json),
        Some(MetricsCommand::Diff { old, new, json }) => {
            experiments::diff(plan, old.as_deref(), new.as_deref(), *json)
        }
    }
    .map_err(Failure::Usage)?;
    say!("{text}");
    Ok(())
}
