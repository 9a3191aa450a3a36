//! What each subcommand does with the engine and how it reports it: one function per
//! subcommand, as cargo and just keep theirs. Argument parsing and dispatch are `cli`'s.

use anyhow::Context;
use pipeline_engine::plan::Plan;
use pipeline_engine::record::{Action, format_utc};
use pipeline_engine::{Engine, EngineError, RunOptions, State};

use crate::console::Console;
use crate::predict::PredictOptions;

/// Why the command failed, and with which exit code.
pub enum Failure {
    /// Bad pipeline file or usage: exit 2.
    Usage(anyhow::Error),
    /// A stage or the cache failed: exit 1.
    Run(anyhow::Error),
    /// Stages failed and were already reported: exit 1.
    Reported,
}

/// An engine error as the failure it is: the user's (exit 2) or the run's (exit 1).
pub fn engine_failure(err: EngineError) -> Failure {
    match err {
        EngineError::Usage(_) => Failure::Usage(err.into()),
        other => Failure::Run(other.into()),
    }
}

/// `pipeline run`: brings the selected stages up to date, drawing progress on the console.
pub fn run(
    engine: &Engine<'_>,
    plan: &Plan,
    options: &RunOptions,
    console: &Console,
) -> Result<(), Failure> {
    let outcome = engine.run(options, console).map_err(engine_failure)?;
    if !outcome.failed.is_empty() {
        tell!(
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
    if options.dry_run {
        if outcome.would_run.is_empty() {
            say!("Nothing to do: every selected stage is fresh.");
        }
    } else if !outcome.pulled.is_empty() && outcome.ran.is_empty() {
        say!(
            "Nothing ran: {} stages came from the shared cache, {} were fresh.",
            outcome.pulled.len(),
            outcome.fresh.len()
        );
    } else if outcome.ran.is_empty() {
        say!("Nothing to do: every selected stage is fresh.");
    }
    for dir in &outcome.published {
        let index = plan.root.join(dir).join("index.html");
        if index.exists() {
            say!("Report: {}", dir.join("index.html").display());
        }
    }
    let pushes_failed = outcome
        .shared_troubles
        .iter()
        .filter(|t| t.during == "push")
        .count();
    if pushes_failed > 0 {
        tell!(
            "error: the run finished, but {pushes_failed} entries were not pushed (see above); `pipeline push` sends them"
        );
        return Err(Failure::Reported);
    }
    Ok(())
}

/// `pipeline status`: fresh or dirty, and why, per stage.
pub fn status(engine: &Engine<'_>, json: bool) -> Result<(), Failure> {
    let statuses = engine.status().map_err(engine_failure)?;
    if json {
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

/// `pipeline verify`: rehashes the cache and the workspace stamps; `--repair` evicts and records.
pub fn verify(engine: &Engine<'_>, repair: bool) -> Result<(), Failure> {
    let report = engine.verify(repair).map_err(engine_failure)?;
    for damaged in &report.damaged {
        say!(
            "{} {} (stage `{}`): {}",
            if repair { "Evicted" } else { "Damaged" },
            damaged.key.chars().take(16).collect::<String>(),
            damaged.stage,
            damaged.problems.join(", ")
        );
    }
    for stale in &report.stale_stamps {
        say!(
            "{} {}: content changed but size, mtime and inode did not{}",
            if repair { "Rehashed" } else { "Stale" },
            stale.path,
            if repair {
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
        if repair && !report.damaged.is_empty() {
            " (the next `pipeline run` rebuilds them)"
        } else {
            ""
        },
        report.workspace_checked,
        report.stale_stamps.len()
    );
    let clean = report.damaged.is_empty() && report.stale_stamps.is_empty();
    if !repair && !clean {
        tell!(
            "error: the cache does not match the files; run `pipeline verify --repair` to evict damaged entries and record changed files"
        );
        return Err(Failure::Reported);
    }
    Ok(())
}

/// `pipeline gc`: removes what the lock and the last `keep` runs do not reference.
pub fn gc(engine: &Engine<'_>, keep: Option<usize>) -> Result<(), Failure> {
    let report = engine.gc(keep).map_err(engine_failure)?;
    say!(
        "Removed {} and {} ({} freed); kept {} and {}: what pipeline.lock and {} of the {} recorded runs use",
        crate::console::count(report.removed, "entry", "entries"),
        crate::console::count(report.items_removed, "per-item result", "per-item results"),
        crate::console::megabytes(report.freed_bytes),
        crate::console::count(report.kept, "entry", "entries"),
        crate::console::count(report.items_kept, "item", "items"),
        report.runs_kept,
        report.runs,
    );
    if report.items_skipped {
        say!(
            "Per-item results were kept: some entries predate item lists; they go once those entries are rebuilt or collected"
        );
    }
    Ok(())
}

/// `pipeline log`: the last `limit` runs, stage by stage.
pub fn log(engine: &Engine<'_>, limit: usize, json: bool) -> Result<(), Failure> {
    let runs = engine.runs();
    for run in runs.iter().skip(runs.len().saturating_sub(limit)) {
        if json {
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
        let pulled = run
            .stages
            .iter()
            .filter(|s| s.action == Action::Pulled)
            .count();
        let pulled = if pulled > 0 {
            format!(", {pulled} pulled")
        } else {
            String::new()
        };
        say!(
            "run {}at {} ({}{overrides}): {} in {:.1}s, {ran} ran{pulled}, {} fresh",
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

/// `pipeline predict`: the model's genres for each poster.
pub fn predict(plan: &Plan, options: &PredictOptions<'_>, json: bool) -> Result<(), Failure> {
    let prediction = crate::predict::predict(plan, options).map_err(Failure::Run)?;
    if json {
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
        tell!(
            "error: {failed} of {} posters could not be read; see above",
            prediction.posters.len()
        );
        return Err(Failure::Reported);
    }
    Ok(())
}
