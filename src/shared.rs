//! The shared cache at the command line: which remote (`--remote`, `PIPELINE_REMOTE`, or
//! `cache: {remote: ...}`), opening it with its credentials checked before anything runs, and
//! the commands that move entries: `push`, `pull`, `status --remote`, `verify --remote`.

use std::sync::Arc;

use anyhow::anyhow;
use pipeline_engine::plan::Plan;
use pipeline_engine::{Engine, RunOptions, State};
use pipeline_remote::{Missing, REMOTE_VAR, Remote, RemoteError};

use crate::commands::{Failure, engine_failure};
use crate::console::{Console, megabytes};

/// The remote to use: `--remote URL`, else `PIPELINE_REMOTE`, else `pipeline.yaml`'s (a
/// relative directory there is relative to the file, as every path in it is).
pub fn remote_url(given: Option<&str>, plan: &Plan) -> Option<String> {
    given
        .filter(|url| !url.is_empty())
        .map(str::to_string)
        .or_else(|| std::env::var(REMOTE_VAR).ok().filter(|url| !url.is_empty()))
        .or_else(|| {
            let url = plan.remote.clone()?;
            match pipeline_remote::location::directory_of(&url) {
                Some(dir) if dir.is_relative() && !url.starts_with("file:") => {
                    Some(plan.root.join(dir).display().to_string())
                }
                _ => Some(url),
            }
        })
}

/// Opens the remote and asks it once. Any failure here (no URL, no or wrong credentials, no
/// bucket, no server, a directory that is not there) is the user's to fix: exit 2, before
/// anything runs. Only commands that send (`push`, `run --push`) make a missing directory,
/// and say so.
pub fn open(
    given: Option<&str>,
    plan: &Plan,
    missing: Missing,
    jobs: usize,
    console: &Arc<Console>,
) -> Result<Remote, Failure> {
    let url = remote_url(given, plan).ok_or_else(|| {
        Failure::Usage(anyhow!(
            "no shared cache is named: pass `--remote s3://BUCKET/PREFIX`, set {REMOTE_VAR}, or add `cache: {{remote: s3://BUCKET/PREFIX}}` to {}",
            plan.file.display()
        ))
    })?;
    let created = missing == Missing::Create
        && pipeline_remote::location::directory_of(&url).is_some_and(|dir| !dir.exists());
    let transfers: Arc<dyn pipeline_remote::Transfers + Send> = console.clone();
    let remote = Remote::open(&url, missing, jobs, transfers).map_err(setup_failure)?;
    remote.check().map_err(setup_failure)?;
    if created {
        say!("Created the shared cache directory {url}");
    }
    Ok(remote)
}

/// A remote error: the user's to fix (exit 2) when it is about reaching the remote at all.
fn setup_failure(err: RemoteError) -> Failure {
    if err.is_setup() {
        Failure::Usage(err.into())
    } else {
        Failure::Run(err.into())
    }
}

/// `pipeline push`: the entries of the named stages (all stages when none are named) that
/// `pipeline.lock` records or the last run used, or with `all` every complete entry in the local
/// cache.
pub fn push(
    engine: &Engine<'_>,
    remote: &Remote,
    stages: &[String],
    all: bool,
) -> Result<(), Failure> {
    engine
        .plan()
        .check_names(stages.iter())
        .map_err(|e| Failure::Usage(anyhow!(e)))?;
    let store = engine.store();
    let wanted: Vec<(String, String)> = if all {
        store
            .keys()
            .into_iter()
            .filter_map(|key| Some((store.manifest(&key)?.stage, key)))
            .collect()
    } else {
        // What the lock records, and what the last run used (a run of some stages, or with
        // `-S`, may have used entries the lock no longer names).
        let last_run = engine
            .runs()
            .pop()
            .map(|run| run.stages)
            .unwrap_or_default();
        let used = last_run
            .into_iter()
            .filter(|s| s.action.made_output())
            .filter_map(|s| Some((s.name, s.key?)));
        let mut wanted: Vec<(String, String)> = Vec::new();
        for (stage, key) in engine.locked_keys().into_iter().chain(used) {
            let named = stages.is_empty() || stages.contains(&stage);
            if named && !wanted.iter().any(|(_, k)| *k == key) {
                wanted.push((stage, key));
            }
        }
        wanted
    };
    let mut ready = Vec::new();
    for (stage, key) in wanted {
        if store.fresh(&key).is_some() {
            ready.push((stage, key));
        } else {
            tell!(
                "warning: `{stage}` has no complete local entry for its locked key {}; run it, then push",
                &key[..12]
            );
        }
    }
    let report = remote
        .push_entries(store, &ready)
        .map_err(|e| Failure::Run(e.into()))?;
    if !all {
        // What the lock and the last run use is each stage's current entry.
        remote.mark_latest(&ready);
    }
    say!(
        "Pushed {} entries to {} ({} blobs, {} in {:.1}s, {}); {} entries and {} blobs were there already",
        report.entries_sent,
        remote.url(),
        report.blobs_sent,
        megabytes(report.bytes_sent),
        report.seconds,
        rate(report.bytes_sent, report.seconds),
        report.entries_there,
        report.blobs_there
    );
    Ok(())
}

/// `12.3 MB/s`.
fn rate(bytes: u64, seconds: f64) -> String {
    format!("{:.1} MB/s", bytes as f64 / 1e6 / seconds.max(1e-6))
}

/// `pipeline pull`: the entries the named stages (and what they need) would run under, where
/// the remote has them; nothing runs, and `pipeline.lock` is left as it is.
pub fn pull(engine: &Engine<'_>, console: &Console, options: &RunOptions) -> Result<(), Failure> {
    let started = std::time::Instant::now();
    let outcome = engine.run(options, console).map_err(engine_failure)?;
    let seconds = started.elapsed().as_secs_f64();
    say!(
        "Pulled {} stages ({} in {seconds:.1}s, {}); {} were here already{}",
        outcome.pulled.len(),
        megabytes(outcome.pulled_bytes),
        rate(outcome.pulled_bytes, seconds),
        outcome.fresh.len(),
        not_pulled(&outcome)
    );
    if !outcome.shared_troubles.is_empty() {
        tell!(
            "error: {} entries could not be pulled; see above (`pipeline verify --remote` checks the remote)",
            outcome.shared_troubles.len()
        );
        return Err(Failure::Reported);
    }
    Ok(())
}

/// `; not on the remote (run them): a, b`, or where a pull failed, the stages it left without
/// claiming the remote lacks them (it may well have them).
fn not_pulled(outcome: &pipeline_engine::RunOutcome) -> String {
    let troubled: Vec<&str> = outcome
        .shared_troubles
        .iter()
        .map(|t| t.stage.as_str())
        .collect();
    let left: Vec<&str> = outcome
        .not_shared
        .iter()
        .map(String::as_str)
        .filter(|s| !troubled.contains(s))
        .collect();
    match (left.is_empty(), troubled.is_empty()) {
        (true, _) => String::new(),
        (false, true) => format!("; not on the remote (run them): {}", left.join(", ")),
        (false, false) => format!(
            "; not pulled: {} (the remote lacks them, or what they need could not be pulled)",
            left.join(", ")
        ),
    }
}

/// After `run --push`: sends the fresh entries the run did not commit itself (what it
/// committed went as it was committed; the remote says it has those).
pub fn push_fresh(engine: &Engine<'_>, remote: &Remote) -> Result<(), Failure> {
    let store = engine.store();
    let ready: Vec<(String, String)> = engine
        .locked_keys()
        .into_iter()
        .filter(|(_, key)| store.fresh(key).is_some())
        .collect();
    let report = remote
        .push_entries(store, &ready)
        .map_err(|e| Failure::Run(e.into()))?;
    remote.mark_latest(&ready);
    if report.entries_sent > 0 {
        say!(
            "Pushed {} more entries ({} blobs, {})",
            report.entries_sent,
            report.blobs_sent,
            megabytes(report.bytes_sent)
        );
    }
    Ok(())
}

/// `pipeline status --remote`: per stage, whether its entry is here and on the remote.
pub fn status(engine: &Engine<'_>, remote: &Remote, json: bool) -> Result<(), Failure> {
    // A stage missing here but on the remote has its output digest in the record, so the keys
    // after it are known as `run --pull` would know them.
    let failed = std::cell::RefCell::new(None);
    let statuses = engine
        .status_with(&|key| match remote.record(key) {
            Ok(record) => record.map(|r| r.manifest.output_digest),
            Err(err) => {
                failed.borrow_mut().get_or_insert(err);
                None
            }
        })
        .map_err(engine_failure)?;
    if let Some(err) = failed.into_inner() {
        return Err(Failure::Run(err.into()));
    }
    let mut rows = Vec::new();
    for status in &statuses {
        let on_remote = match &status.key {
            Some(key) => Some(remote.has_entry(key).map_err(|e| Failure::Run(e.into()))?),
            None => None,
        };
        rows.push((status, on_remote));
    }
    if json {
        let values: Vec<serde_json::Value> = rows
            .iter()
            .map(|(status, on_remote)| {
                serde_json::json!({
                    "name": status.name,
                    "key": status.key,
                    "local": status.state == State::Fresh,
                    "remote": on_remote,
                })
            })
            .collect();
        say!(
            "{}",
            serde_json::to_string_pretty(&values).expect("JSON values serialise")
        );
        return Ok(());
    }
    let width = statuses.iter().map(|s| s.name.len()).max().unwrap_or(0);
    say!("Shared cache: {}", remote.url());
    say!("{:width$}  {:7}  {:8}", "stage", "local", "remote");
    for (status, on_remote) in rows {
        let local = if status.state == State::Fresh {
            "yes"
        } else {
            "no"
        };
        let shared = match on_remote {
            Some(true) => "yes",
            Some(false) => "no",
            None => "unknown",
        };
        let hint = match (status.state == State::Fresh, on_remote) {
            (true, Some(false)) => "  (`pipeline push` sends it)",
            (false, Some(true)) => "  (`pipeline pull` takes it)",
            (false, Some(false)) => "  (missing: `pipeline run` makes it)",
            (false, None) => "  (an input is neither here nor on the remote)",
            _ => "",
        };
        say!("{:width$}  {local:7}  {shared:8}{hint}", status.name);
    }
    Ok(())
}

/// `pipeline verify --remote`: rehashes every blob the remote's records name. Only what was
/// read and found wrong is damage (and deleted by `--repair`); what could not be read is named
/// and left alone.
pub fn verify(remote: &Remote, repair: bool) -> Result<(), Failure> {
    let report = remote.verify(repair).map_err(|e| Failure::Run(e.into()))?;
    let (damaged, unchecked): (Vec<_>, Vec<_>) = report.problems.iter().partition(|p| p.damaged);
    for problem in &damaged {
        say!(
            "Damaged {} ({}): {}",
            problem.object,
            problem.referred_by,
            problem.problem
        );
    }
    for problem in &unchecked {
        say!(
            "Not checked {} ({}): {}; left as it is",
            problem.object,
            problem.referred_by,
            problem.problem
        );
    }
    for deleted in &report.deleted {
        say!("Deleted {deleted}");
    }
    say!(
        "{} entries and {} blobs ({}) checked on {}; {} damaged{}{}",
        report.entries,
        report.blobs,
        megabytes(report.bytes),
        remote.url(),
        damaged.len(),
        if unchecked.is_empty() {
            String::new()
        } else {
            format!(", {} not checked", unchecked.len())
        },
        if repair && !damaged.is_empty() {
            " (deleted with the entries that name them: the next run makes them and `--push` sends them again)"
        } else {
            ""
        }
    );
    if !repair && !damaged.is_empty() {
        tell!(
            "error: the remote holds damaged objects; `pipeline verify --remote --repair` deletes them and the entries that name them"
        );
        return Err(Failure::Reported);
    }
    if !unchecked.is_empty() {
        tell!(
            "error: {} objects could not be checked (see above); run `pipeline verify --remote` again when the remote answers",
            unchecked.len()
        );
        return Err(Failure::Reported);
    }
    Ok(())
}
