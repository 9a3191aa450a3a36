//! Walks the plan in dependency order: keys each stage, reuses fresh cache entries, runs the rest,
//! and keeps `pipeline.lock` up to date after every stage. Emits events to a [`Reporter`]; draws nothing.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, TryLockError};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, mpsc};
use std::time::Instant;

use pipeline_api::{
    ItemCache, Progress, RunContext, StageContext, StageError, StageParams, StageTiming,
};

use super::dirty::{Current, Reason, describe, explain};
use super::key::{CACHE_FORMAT, StageKey, sorted_json};
use super::lock::{LockFile, LockedFile, LockedInput, LockedOutputs, LockedStage};
use super::plan::{Plan, PlannedStage};
use super::publish::run_folders;
use super::record::{
    Action, RunOutcomeKind, RunRecord, StageRecord, append_run, last_run_id, read_runs, run_id,
    unix_now,
};
use super::statcache::{StaleStamp, StatCache};
use super::store::{ItemStore, Manifest, Store, StoreError, io_err};

/// Receives what the engine does, to show it to a person.
pub trait Reporter: Sync {
    /// Another run holds the project lock; this one waits.
    fn waiting_for_lock(&self, lock: &Path);
    /// The stage's cached output is reused. `note` says why when it is not obvious.
    fn fresh(&self, stage: &str, note: Option<&str>);
    /// `--dry-run`: the stage would run, for these reasons.
    fn would_run(&self, stage: &str, reasons: &[Reason]);
    /// The stage starts running; progress goes to the returned handle.
    fn started(&self, stage: &str, reasons: &[Reason]) -> Box<dyn Progress + '_>;
    /// The stage succeeded.
    fn finished(&self, stage: &str, seconds: f64, summary: &[String]);
    /// The stage failed.
    fn failed(&self, stage: &str, error: &str);
    /// The stage is skipped because something it needs failed.
    fn skipped(&self, stage: &str, reasons: &[Reason]);
    /// A copy of the stage's output was published to `dir`.
    fn published(&self, stage: &str, dir: &Path);
}

/// Errors of the engine itself (not of a stage).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The cache could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A name on the command line is not a stage.
    #[error("{0}")]
    Usage(String),
    /// A published copy could not be finished.
    #[error("{0}")]
    Publish(String),
    /// `--no-wait` and another run holds the project.
    #[error("another `pipeline run` holds `{}`; rerun without `--no-wait` to wait for it", .0.display())]
    Busy(PathBuf),
}

/// What `pipeline run` was asked to do.
#[derive(Debug, Default, Clone)]
pub struct RunOptions {
    /// Stages to bring up to date (with what they need); all when empty.
    pub targets: Vec<String>,
    /// Stages to rerun even if fresh.
    pub force: Vec<String>,
    /// Only say what would run.
    pub dry_run: bool,
    /// Worker threads for stages (not part of any key).
    pub threads: usize,
    /// Stages that may run at the same time (independent branches); 0 counts as 1.
    pub jobs: usize,
    /// Also bring every stage downstream of `targets` up to date.
    pub downstream: bool,
    /// Rerun the dependents of forced stages too, even if the forced output is unchanged.
    pub force_downstream: bool,
    /// After a failure, keep running stages that do not depend on it.
    pub keep_going: bool,
    /// Fail instead of waiting when another run holds the project.
    pub no_wait: bool,
    /// Rerun stages that remember per-item failures, attempting those items again.
    pub retry_failed: bool,
    /// Recompute every item: stages see no per-item results and no earlier outputs.
    pub no_reuse: bool,
    /// The `-S` overrides already applied to the plan, kept in the run record.
    pub overrides: Vec<String>,
}

/// What `verify` found.
#[derive(Debug, Default, serde::Serialize)]
pub struct VerifyReport {
    /// Entries rehashed.
    pub checked: usize,
    /// Entries whose outputs do not match their manifest.
    pub damaged: Vec<Damaged>,
    /// Workspace files rehashed.
    pub workspace_checked: usize,
    /// Workspace files whose content changed without a new size, mtime or inode.
    pub stale_stamps: Vec<StaleStamp>,
}

/// One damaged entry.
#[derive(Debug, serde::Serialize)]
pub struct Damaged {
    /// Its key.
    pub key: String,
    /// The stage that wrote it.
    pub stage: String,
    /// What does not match.
    pub problems: Vec<String>,
}

/// What `gc` did.
#[derive(Debug, Default, serde::Serialize)]
pub struct GcReport {
    /// Entries (and leftovers of dead runs) removed.
    pub removed: usize,
    /// Entries kept.
    pub kept: usize,
    /// Bytes freed.
    pub freed_bytes: u64,
    /// Per-item results removed (none when some entry predates item lists).
    pub items_removed: usize,
    /// Per-item results kept.
    pub items_kept: usize,
    /// Entries written before item lists existed keep every item.
    pub items_skipped: bool,
}

/// A reporter that says nothing, for maintenance commands that take the run lock.
struct QuietReporter;

impl Reporter for QuietReporter {
    fn waiting_for_lock(&self, lock: &Path) {
        eprintln!(
            "Waiting for another `pipeline run` to release `{}`...",
            lock.display()
        );
    }
    fn fresh(&self, _: &str, _: Option<&str>) {}
    fn would_run(&self, _: &str, _: &[Reason]) {}
    fn started(&self, _: &str, _: &[Reason]) -> Box<dyn Progress + '_> {
        Box::new(pipeline_api::NoProgress)
    }
    fn finished(&self, _: &str, _: f64, _: &[String]) {}
    fn failed(&self, _: &str, _: &str) {}
    fn skipped(&self, _: &str, _: &[Reason]) {}
    fn published(&self, _: &str, _: &Path) {}
}

/// Whether a stage's cached output is current (`"fresh"`, `"dirty"` in `status --json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Its key has a complete entry: it would not run.
    Fresh,
    /// It would run.
    Dirty,
}

/// How one stage stands.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StageStatus {
    /// Stage name.
    pub name: String,
    /// Kind.
    pub kind: String,
    /// Fresh or dirty.
    pub state: State,
    /// Why, as one line.
    pub reason: String,
    /// Why, as structured reasons (empty when fresh).
    pub reasons: Vec<Reason>,
    /// The key, when all inputs are known.
    pub key: Option<String>,
}

/// The result of a run.
#[derive(Debug, Default)]
pub struct RunOutcome {
    /// Stages that ran, in order.
    pub ran: Vec<String>,
    /// Stages reused from the cache.
    pub fresh: Vec<String>,
    /// Stages that would run (`--dry-run`).
    pub would_run: Vec<String>,
    /// Stages that failed.
    pub failed: Vec<String>,
    /// Directories that received published outputs.
    pub published: Vec<PathBuf>,
    /// The run's id (empty for a dry run).
    pub run_id: String,
}

/// The engine bound to one plan and its project directory.
pub struct Engine<'a> {
    plan: &'a Plan,
    store: Store,
    lock_path: PathBuf,
    stat: StatCache,
}

/// Where a selected stage stands during a run.
enum Slot {
    /// Not yet keyed: some input is not known yet.
    Waiting,
    /// A worker is running it.
    Running,
    /// Reused from the cache.
    Fresh,
    /// Ran in this run.
    Ran,
    /// `--dry-run`: would run, so its output (and its dependents' keys) is unknown.
    Unknown,
    /// Failed, or skipped because something it needs failed.
    Broken,
}

/// A worker's report on one stage it ran.
struct Finished<'p> {
    stage: &'p PlannedStage,
    key: String,
    locked: LockedStage,
    reasons: Vec<Reason>,
    result: Result<Manifest, String>,
    began: Instant,
    ended: Instant,
}

/// Outcome of assessing one stage without running it.
enum Assessment {
    Fresh {
        key: String,
        manifest: Manifest,
        locked: LockedStage,
    },
    Dirty {
        key: Option<String>,
        reasons: Vec<Reason>,
        locked: Option<LockedStage>,
    },
}

impl<'a> Engine<'a> {
    /// The engine for `plan`, with its cache in `<root>/cache` and lock in `<root>/pipeline.lock`.
    pub fn new(plan: &'a Plan) -> Self {
        let store = Store::new(plan.root.join("cache"));
        Self {
            stat: StatCache::load(&plan.root, store.stat_cache_path()),
            store,
            lock_path: plan.root.join("pipeline.lock"),
            plan,
        }
    }

    /// The state of every stage, without running anything.
    pub fn status(&self) -> Result<Vec<StageStatus>, EngineError> {
        let lock = LockFile::load(&self.lock_path);
        let mut digests: BTreeMap<String, String> = BTreeMap::new();
        let mut statuses = Vec::new();
        for stage in &self.plan.stages {
            let status = match self.assess(stage, &digests, &lock, false)? {
                Assessment::Fresh { key, manifest, .. } => {
                    digests.insert(stage.name.clone(), manifest.output_digest);
                    StageStatus {
                        name: stage.name.clone(),
                        kind: stage.stage.kind().into(),
                        state: State::Fresh,
                        reason: "fresh".into(),
                        reasons: vec![],
                        key: Some(key),
                    }
                }
                Assessment::Dirty { key, reasons, .. } => StageStatus {
                    name: stage.name.clone(),
                    kind: stage.stage.kind().into(),
                    state: State::Dirty,
                    reason: super::dirty::describe(&reasons),
                    reasons,
                    key,
                },
            };
            statuses.push(status);
        }
        // Like `git status`, refresh the stat cache, but never create a cache that is not there.
        if self.store.exists() {
            self.stat.save()?;
        }
        Ok(statuses)
    }

    /// Brings the selected stages up to date (or says what would run, with `dry_run`).
    pub fn run(
        &self,
        options: &RunOptions,
        reporter: &dyn Reporter,
    ) -> Result<RunOutcome, EngineError> {
        self.plan
            .check_names(options.targets.iter().chain(&options.force))
            .map_err(EngineError::Usage)?;
        let mut force: BTreeSet<String> = options.force.iter().cloned().collect();
        if options.retry_failed {
            force.extend(
                self.plan
                    .stages
                    .iter()
                    .filter(|s| s.stage.remembers_failures())
                    .map(|s| s.name.clone()),
            );
        }
        if options.force_downstream {
            force.extend(self.plan.downstream_of(&options.force));
        }
        let mut wanted: Vec<String> = options.targets.clone();
        if options.downstream {
            wanted.extend(self.plan.downstream_of(&options.targets));
        }
        if !options.targets.is_empty() {
            // Forced stages run even when outside the targets, with what they need.
            wanted.extend(force.iter().cloned());
        }
        let selected = self.plan.with_upstream(&wanted);

        // A dry run reads the cache but never creates, locks or cleans anything.
        let _run_lock = if options.dry_run {
            None
        } else {
            let lock = self.acquire_run_lock(reporter, options.no_wait)?;
            self.store.clear_pending()?;
            Some(lock)
        };

        let mut lock = LockFile::load(&self.lock_path);
        lock.version = 1;
        let mut outcome = RunOutcome::default();
        let started_unix = unix_now();
        if !options.dry_run {
            let last = last_run_id(&self.store.runs_path());
            outcome.run_id = run_id(started_unix, last.as_deref());
        }
        let run_context = RunContext {
            id: outcome.run_id.clone(),
            started_unix,
            overrides: options.overrides.clone(),
            stages: self
                .plan
                .stages
                .iter()
                .map(|s| {
                    let params = StageParams {
                        kind: s.stage.kind().to_string(),
                        params: s.params.clone(),
                    };
                    (s.name.clone(), params)
                })
                .collect(),
            timings: Vec::new(),
        };
        let mut slots: BTreeMap<&str, Slot> = self
            .plan
            .stages
            .iter()
            .filter(|s| selected.contains(&s.name))
            .map(|s| (s.name.as_str(), Slot::Waiting))
            .collect();
        // Output digest and cache key of every stage whose output is known.
        let mut digests: BTreeMap<String, String> = BTreeMap::new();
        let mut entry_keys: BTreeMap<String, String> = BTreeMap::new();
        let run_started = Instant::now();
        // Shared with publishing, which writes the timings so far beside each copy.
        let records: RefCell<Vec<StageRecord>> = RefCell::new(Vec::new());
        let record = |name: &str,
                      action: Action,
                      reason: String,
                      key: Option<&str>,
                      began: Instant,
                      ended: Instant| {
            records.borrow_mut().push(StageRecord {
                name: name.to_string(),
                action,
                reason,
                key: key.map(str::to_string),
                started: began.duration_since(run_started).as_secs_f64(),
                seconds: ended.duration_since(began).as_secs_f64(),
            });
        };
        // The run as publishing describes it: what every stage did so far.
        let run_so_far = || RunContext {
            timings: records
                .borrow()
                .iter()
                .filter(|r| r.action.made_output())
                .map(|r| StageTiming {
                    name: r.name.clone(),
                    action: r.action.as_str().to_string(),
                    seconds: r.seconds,
                })
                .collect(),
            ..run_context.clone()
        };
        let jobs = options.jobs.max(1);

        // The scheduler: the main thread keys stages and owns the lock file; up to `jobs` workers
        // run dirty stages whose inputs are all known. Stages are considered in plan order, so with
        // `--jobs 1` the run is the sequential one.
        std::thread::scope(|scope| -> Result<(), EngineError> {
            let (finished_tx, finished_rx) = mpsc::channel::<Finished<'_>>();
            let mut running = 0usize;
            let mut stopping = false;
            loop {
                let mut progressed = true;
                while progressed && !stopping {
                    progressed = false;
                    let waiting: Vec<&PlannedStage> = self
                        .plan
                        .stages
                        .iter()
                        .filter(|s| matches!(slots.get(s.name.as_str()), Some(Slot::Waiting)))
                        .collect();
                    for stage in waiting {
                        let upstream: Vec<&Slot> = stage
                            .inputs
                            .values()
                            .filter_map(|up| slots.get(up.as_str()))
                            .collect();
                        if upstream
                            .iter()
                            .any(|s| matches!(s, Slot::Waiting | Slot::Running))
                        {
                            continue;
                        }
                        let began = Instant::now();
                        let blocked: Vec<String> = stage
                            .inputs
                            .values()
                            .filter(|up| matches!(slots.get(up.as_str()), Some(Slot::Broken)))
                            .cloned()
                            .collect();
                        if !blocked.is_empty() {
                            let reasons = [Reason::UpstreamFailed(blocked)];
                            reporter.skipped(&stage.name, &reasons);
                            record(
                                &stage.name,
                                Action::Skipped,
                                describe(&reasons),
                                None,
                                began,
                                began,
                            );
                            slots.insert(&stage.name, Slot::Broken);
                            progressed = true;
                            continue;
                        }
                        let forced = force.contains(&stage.name);
                        match self.assess(stage, &digests, &lock, forced)? {
                            Assessment::Fresh {
                                manifest, locked, ..
                            } => {
                                let upstream_reran: Vec<&str> = stage
                                    .inputs
                                    .values()
                                    .filter(|up| matches!(slots.get(up.as_str()), Some(Slot::Ran)))
                                    .map(String::as_str)
                                    .collect();
                                let note = (!upstream_reran.is_empty()).then(|| {
                                    format!(
                                        "upstream {} reran with identical output",
                                        upstream_reran.join(", ")
                                    )
                                });
                                reporter.fresh(&stage.name, note.as_deref());
                                record(
                                    &stage.name,
                                    Action::Fresh,
                                    note.unwrap_or_else(|| "fresh".into()),
                                    Some(&manifest.key),
                                    began,
                                    Instant::now(),
                                );
                                digests.insert(stage.name.clone(), manifest.output_digest.clone());
                                entry_keys.insert(stage.name.clone(), manifest.key.clone());
                                outcome.fresh.push(stage.name.clone());
                                if !options.dry_run {
                                    if lock.stages.get(&stage.name) != Some(&locked) {
                                        lock.stages.insert(stage.name.clone(), locked);
                                        lock.save(&self.lock_path)?;
                                    }
                                    self.publish(
                                        stage,
                                        &manifest.key,
                                        false,
                                        &run_so_far(),
                                        reporter,
                                        &mut outcome,
                                    )?;
                                }
                                slots.insert(&stage.name, Slot::Fresh);
                                progressed = true;
                            }
                            Assessment::Dirty {
                                key,
                                reasons,
                                locked,
                            } => {
                                if options.dry_run {
                                    reporter.would_run(&stage.name, &reasons);
                                    outcome.would_run.push(stage.name.clone());
                                    // Dependents cannot be keyed until this one has run.
                                    slots.insert(&stage.name, Slot::Unknown);
                                    progressed = true;
                                    continue;
                                }
                                if running == jobs {
                                    continue;
                                }
                                let key = key.expect("inputs are known when not a dry run");
                                let locked =
                                    locked.expect("a lock record whenever the key is known");
                                let entry_keys = entry_keys.clone();
                                let finished_tx = finished_tx.clone();
                                scope.spawn(move || {
                                    // Stage panics are caught inside `execute`; this also catches
                                    // the engine's own, so the scheduler always hears back.
                                    let result = catch_unwind(AssertUnwindSafe(|| {
                                        self.execute(
                                            stage,
                                            &key,
                                            &entry_keys,
                                            &reasons,
                                            options,
                                            reporter,
                                        )
                                    }))
                                    .unwrap_or_else(|_| {
                                        Err("the engine panicked while running the stage".into())
                                    });
                                    // The receiver only goes away when the run is already failing.
                                    let _ = finished_tx.send(Finished {
                                        stage,
                                        key,
                                        locked,
                                        reasons,
                                        result,
                                        began,
                                        ended: Instant::now(),
                                    });
                                });
                                slots.insert(&stage.name, Slot::Running);
                                running += 1;
                                progressed = true;
                            }
                        }
                    }
                }
                if running == 0 {
                    return Ok(());
                }
                let done = finished_rx
                    .recv()
                    .expect("a running worker always reports back");
                running -= 1;
                let name = done.stage.name.as_str();
                match done.result {
                    Ok(manifest) => {
                        let mut locked = done.locked;
                        locked.outputs = outputs_of(&manifest);
                        lock.stages.insert(name.to_string(), locked);
                        lock.save(&self.lock_path)?;
                        digests.insert(name.to_string(), manifest.output_digest.clone());
                        entry_keys.insert(name.to_string(), done.key.clone());
                        outcome.ran.push(name.to_string());
                        record(
                            name,
                            Action::Ran,
                            describe(&done.reasons),
                            Some(&done.key),
                            done.began,
                            done.ended,
                        );
                        slots.insert(name, Slot::Ran);
                        self.publish(
                            done.stage,
                            &done.key,
                            true,
                            &run_so_far(),
                            reporter,
                            &mut outcome,
                        )?;
                    }
                    Err(message) => {
                        reporter.failed(name, &message);
                        record(
                            name,
                            Action::Failed,
                            message,
                            Some(&done.key),
                            done.began,
                            done.ended,
                        );
                        outcome.failed.push(name.to_string());
                        slots.insert(name, Slot::Broken);
                        // Without --keep-going, stages already running finish; nothing new starts.
                        stopping |= !options.keep_going;
                    }
                }
            }
        })?;
        if !options.dry_run {
            self.stat.save()?;
            let run = RunRecord {
                id: outcome.run_id.clone(),
                overrides: options.overrides.clone(),
                started_unix,
                seconds: run_started.elapsed().as_secs_f64(),
                targets: options.targets.clone(),
                outcome: if outcome.failed.is_empty() {
                    RunOutcomeKind::Ok
                } else {
                    RunOutcomeKind::Failed
                },
                stages: records.into_inner(),
            };
            append_run(&self.store.runs_path(), &run)?;
        }
        Ok(outcome)
    }

    /// Rehashes every cache entry. With `repair`, evicts the damaged ones.
    pub fn verify(&self, repair: bool) -> Result<VerifyReport, EngineError> {
        let _lock = repair
            .then(|| self.acquire_run_lock(&QuietReporter, false))
            .transpose()?;
        let mut report = VerifyReport::default();
        for key in self.store.keys() {
            let problems = self.store.verify(&key);
            report.checked += 1;
            if problems.is_empty() {
                continue;
            }
            let stage = self
                .store
                .manifest(&key)
                .map(|m| m.stage)
                .unwrap_or_default();
            if repair {
                self.store.evict(&key)?;
            }
            report.damaged.push(Damaged {
                key,
                stage,
                problems,
            });
        }
        let workspace: BTreeSet<&String> = self
            .plan
            .stages
            .iter()
            .flat_map(|s| s.files.values())
            .collect();
        for rel in workspace {
            let path = self.plan.root.join(rel);
            let (checked, stale) = self.stat.verify(&path, repair)?;
            report.workspace_checked += checked;
            report.stale_stamps.extend(stale);
        }
        report.stale_stamps.sort_by(|a, b| a.path.cmp(&b.path));
        report.stale_stamps.dedup_by(|a, b| a.path == b.path);
        if repair {
            self.stat.save()?;
        }
        Ok(report)
    }

    /// Removes every entry that neither the lock file nor the last `keep` runs reference.
    pub fn gc(&self, keep: usize) -> Result<GcReport, EngineError> {
        let _lock = self.acquire_run_lock(&QuietReporter, false)?;
        let mut referenced: BTreeSet<String> = LockFile::load(&self.lock_path)
            .stages
            .into_values()
            .map(|s| s.key)
            .collect();
        let runs = self.runs();
        for run in runs.iter().rev().take(keep) {
            referenced.extend(run.stages.iter().filter_map(|s| s.key.clone()));
        }
        let mut report = GcReport::default();
        for key in self.store.keys() {
            if referenced.contains(&key) {
                report.kept += 1;
                continue;
            }
            report.freed_bytes += self.store.entry_bytes(&key);
            self.store.evict(&key)?;
            report.removed += 1;
        }
        report.removed += self.store.clear_pending()?;
        report.removed += self.store.clear_work()?;
        match self.store.collect_items()? {
            Some(items) => {
                report.items_removed = items.removed;
                report.items_kept = items.kept;
                report.freed_bytes += items.freed_bytes;
            }
            None => report.items_skipped = true,
        }
        Ok(report)
    }

    /// The recorded runs, oldest first.
    pub fn runs(&self) -> Vec<RunRecord> {
        read_runs(&self.store.runs_path())
    }

    fn acquire_run_lock(
        &self,
        reporter: &dyn Reporter,
        no_wait: bool,
    ) -> Result<File, EngineError> {
        self.store.init()?;
        let path = self.store.lock_path();
        let file = File::create(&path).map_err(io_err("create", &path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) if no_wait => return Err(EngineError::Busy(path)),
            Err(TryLockError::WouldBlock) => {
                reporter.waiting_for_lock(&path);
                file.lock().map_err(io_err("lock", &path))?;
            }
            Err(TryLockError::Error(source)) => return Err(io_err("lock", &path)(source).into()),
        }
        Ok(file)
    }

    /// Keys the stage (if its inputs are known) and compares with the cache and the lock.
    fn assess(
        &self,
        stage: &PlannedStage,
        digests: &BTreeMap<String, String>,
        lock: &LockFile,
        forced: bool,
    ) -> Result<Assessment, EngineError> {
        let pending: Vec<String> = stage
            .inputs
            .values()
            .filter(|up| !digests.contains_key(*up))
            .cloned()
            .collect();
        if !pending.is_empty() {
            let mut reasons = vec![Reason::UpstreamDirty(pending)];
            if forced {
                reasons.insert(0, Reason::Forced);
            }
            return Ok(Assessment::Dirty {
                key: None,
                reasons,
                locked: None,
            });
        }
        let mut file_digests: BTreeMap<&str, (&str, String)> = BTreeMap::new();
        for (role, rel) in &stage.files {
            let digest = self.stat.path_digest(&self.plan.root.join(rel))?;
            file_digests.insert(role.as_str(), (rel.as_str(), digest));
        }
        let params = sorted_json(&keyed_params(&stage.params, stage.stage.knob_params()));
        let key = StageKey {
            format: CACHE_FORMAT,
            kind: stage.stage.kind(),
            version: stage.stage.version(),
            params: params.clone(),
            inputs: stage
                .inputs
                .iter()
                .map(|(role, up)| (role.as_str(), digests[up].as_str()))
                .collect(),
            files: file_digests
                .iter()
                .map(|(role, (_, digest))| (*role, digest.as_str()))
                .collect(),
        }
        .digest();
        let cached = if forced { None } else { self.store.fresh(&key) };
        // An output past the expiry its stage set is not fresh, whatever its key.
        let expired = cached
            .as_ref()
            .and_then(|manifest| manifest.expires.as_ref())
            .filter(|expiry| expiry.at_unix <= unix_now())
            .map(|expiry| Reason::Expired(expiry.why.clone()));
        let fresh = cached.filter(|_| expired.is_none());
        let locked = LockedStage {
            kind: stage.stage.kind().into(),
            version: stage.stage.version(),
            key: key.clone(),
            params: params.clone(),
            inputs: stage
                .inputs
                .iter()
                .map(|(role, up)| {
                    (
                        role.clone(),
                        LockedInput {
                            stage: up.clone(),
                            digest: digests[up].clone(),
                        },
                    )
                })
                .collect(),
            files: file_digests
                .iter()
                .map(|(role, (path, digest))| {
                    (
                        role.to_string(),
                        LockedFile {
                            path: path.to_string(),
                            digest: digest.clone(),
                        },
                    )
                })
                .collect(),
            outputs: LockedOutputs {
                digest: String::new(),
                files: 0,
                bytes: 0,
            },
        };
        if let Some(manifest) = fresh {
            let locked = LockedStage {
                outputs: outputs_of(&manifest),
                ..locked
            };
            return Ok(Assessment::Fresh {
                key,
                manifest,
                locked,
            });
        }
        let reasons = if forced {
            vec![Reason::Forced]
        } else if let Some(expired) = expired {
            vec![expired]
        } else {
            let current = Current {
                name: &stage.name,
                kind: stage.stage.kind(),
                version: stage.stage.version(),
                params: &params,
                inputs: stage
                    .inputs
                    .iter()
                    .map(|(role, up)| (role.as_str(), (up.as_str(), digests[up].as_str())))
                    .collect(),
                files: file_digests
                    .iter()
                    .map(|(role, (path, digest))| (*role, (*path, digest.as_str())))
                    .collect(),
                key: &key,
            };
            explain(
                &current,
                lock.stages.get(&stage.name),
                self.store.damage(&key),
            )
        };
        Ok(Assessment::Dirty {
            key: Some(key),
            reasons,
            locked: Some(locked),
        })
    }

    /// Runs one stage into a pending entry and commits it; any failure discards the entry.
    fn execute(
        &self,
        stage: &PlannedStage,
        key: &str,
        entry_keys: &BTreeMap<String, String>,
        reasons: &[Reason],
        options: &RunOptions,
        reporter: &dyn Reporter,
    ) -> Result<Manifest, String> {
        // A corrupted input is never used silently: rehash what this stage is about to read.
        for up in stage.inputs.values() {
            let problems = self.store.verify(&entry_keys[up]);
            if !problems.is_empty() {
                return Err(format!(
                    "the cached output of `{up}` is corrupted ({}); run `pipeline verify --repair`, then `pipeline run` again",
                    problems.join(", ")
                ));
            }
        }
        let progress = reporter.started(&stage.name, reasons);
        let started = Instant::now();
        let pending = self.store.begin(key).map_err(|e| e.to_string())?;
        let work_dir = self.store.work_dir(key).map_err(|e| e.to_string())?;
        let out_dir = pending.out_dir();
        let inputs: BTreeMap<String, PathBuf> = stage
            .inputs
            .iter()
            .map(|(role, up)| (role.clone(), self.store.out_dir(&entry_keys[up])))
            .collect();
        let files: BTreeMap<String, PathBuf> = stage
            .files
            .iter()
            .map(|(role, rel)| (role.clone(), self.plan.root.join(rel)))
            .collect();
        let items = UsedItems {
            store: self.store.items(),
            used: Mutex::new(BTreeSet::new()),
            blind: options.no_reuse,
        };
        let earlier_outputs = if options.no_reuse {
            Vec::new()
        } else {
            self.earlier_outputs(&stage.name)
        };
        let ctx = StageContext {
            name: &stage.name,
            params: &stage.params,
            inputs: &inputs,
            files: &files,
            out_dir: &out_dir,
            threads: options.threads.max(1),
            progress: progress.as_ref(),
            items: &items,
            retry_failed: options.retry_failed || options.no_reuse,
            earlier_outputs: &earlier_outputs,
            work_dir: &work_dir,
        };
        let result = catch_unwind(AssertUnwindSafe(|| stage.stage.run(&ctx)));
        drop(progress);
        let summary = match result {
            Ok(Ok(summary)) => summary,
            Ok(Err(err)) => {
                pending.discard();
                return Err(error_chain(&err));
            }
            Err(panic) => {
                pending.discard();
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                return Err(format!("the stage panicked: {message}"));
            }
        };
        let seconds = started.elapsed().as_secs_f64();
        let used = items.used.into_inner().expect("not poisoned");
        if let Err(err) = pending.record_items(&used) {
            pending.discard();
            return Err(err.to_string());
        }
        let manifest = self
            .store
            .commit(pending, &stage.name, stage.stage.kind(), &summary, seconds)
            .map_err(|e| e.to_string())?;
        self.store.remove_work_dir(key);
        reporter.finished(&stage.name, seconds, &summary.lines);
        Ok(manifest)
    }

    /// Output directories of the newest committed runs of `stage` (distinct keys, at most
    /// [`EARLIER_OUTPUTS`]), from the run record. Only the manifest's presence is checked here:
    /// the stage validates whatever it takes.
    fn earlier_outputs(&self, stage: &str) -> Vec<PathBuf> {
        let mut keys: Vec<String> = Vec::new();
        for run in read_runs(&self.store.runs_path()).iter().rev() {
            for record in run.stages.iter().rev() {
                if record.name != stage || record.action != Action::Ran {
                    continue;
                }
                let Some(key) = &record.key else { continue };
                if !keys.contains(key) && self.store.entry_dir(key).join("manifest.json").is_file()
                {
                    keys.push(key.clone());
                }
            }
            if keys.len() >= EARLIER_OUTPUTS {
                break;
            }
        }
        keys.truncate(EARLIER_OUTPUTS);
        keys.iter().map(|key| self.store.out_dir(key)).collect()
    }

    /// Publishes the output of `stage` (`key`) when the stage asks for it. When it ran in this
    /// run, or comes fresh from the cache but is not what the directory shows (a param set back
    /// to an earlier value), the run gets a folder of its own, which the kind may dress with the
    /// run's context, and that copy becomes the latest. Otherwise the latest is only restored
    /// when it was touched.
    fn publish(
        &self,
        stage: &PlannedStage,
        key: &str,
        ran: bool,
        run: &RunContext,
        reporter: &dyn Reporter,
        outcome: &mut RunOutcome,
    ) -> Result<(), EngineError> {
        let Some(dir) = &stage.publish else {
            return Ok(());
        };
        let to = self.plan.root.join(dir);
        let shown = self.store.shown(&to);
        let shows_key = shown.as_ref().is_some_and(|(shown, _)| shown == key);
        if ran || !shows_key {
            let previous = run_folders(&to)
                .into_iter()
                .rfind(|(id, _)| id.as_str() < run.id.as_str())
                .map(|(_, folder)| folder);
            let folder = self.store.publish_run_copy(key, &to, run)?;
            stage
                .stage
                .present(&folder, run, previous.as_deref())
                .map_err(|err| {
                    EngineError::Publish(format!(
                        "`{}` could not finish its report in `{}`: {err}",
                        stage.name,
                        folder.display()
                    ))
                })?;
            self.store.publish_latest(key, &folder, &to, true)?;
        } else if !shown.is_some_and(|(_, intact)| intact) {
            // Touched: restore it from the newest run folder, the dressed copy of this same key.
            // (An intact top, the no-op case, lists no run folders: they only grow.)
            let from = run_folders(&to)
                .pop()
                .map_or_else(|| self.store.out_dir(key), |(_, folder)| folder);
            self.store.publish_latest(key, &from, &to, true)?;
        }
        reporter.published(&stage.name, Path::new(dir));
        outcome.published.push(PathBuf::from(dir));
        Ok(())
    }
}

/// The item cache as one stage run sees it: every item it reads or writes is noted, so the
/// entry can list what `gc` must keep.
struct UsedItems {
    store: ItemStore,
    used: Mutex<BTreeSet<String>>,
    /// `--no-reuse`: nothing is found, everything written replaces what is there.
    blind: bool,
}

impl UsedItems {
    fn note(&self, key: &str) {
        self.used
            .lock()
            .expect("not poisoned")
            .insert(key.to_string());
    }
}

impl ItemCache for UsedItems {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        if self.blind {
            return None;
        }
        let bytes = self.store.get(key)?;
        self.note(key);
        Some(bytes)
    }
    fn put(&self, key: &str, bytes: &[u8]) -> Result<(), StageError> {
        if self.blind {
            // What was recomputed replaces what is there, in case that was the problem.
            self.store.replace(key, bytes)?;
        } else {
            self.store.put(key, bytes)?;
        }
        self.note(key);
        Ok(())
    }
    fn replace(&self, key: &str, bytes: &[u8]) -> Result<(), StageError> {
        self.store.replace(key, bytes)?;
        self.note(key);
        Ok(())
    }
    fn link(&self, key: &str, dest: &Path) -> Result<bool, StageError> {
        let found = self.store.link(key, dest)?;
        if found {
            self.note(key);
        }
        Ok(found)
    }
}

/// How many earlier outputs of a stage are offered for reuse.
const EARLIER_OUTPUTS: usize = 4;

fn outputs_of(manifest: &Manifest) -> LockedOutputs {
    LockedOutputs {
        digest: manifest.output_digest.clone(),
        files: manifest.files.len(),
        bytes: manifest.total_bytes(),
    }
}

/// `error: cause: cause` from a std error and its sources.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// `params` without the stage's knobs: what identifies the output (see `Stage::knob_params`).
fn keyed_params(params: &serde_json::Value, knobs: &[&str]) -> serde_json::Value {
    match params {
        serde_json::Value::Object(map) => serde_json::Value::Object(
            map.iter()
                .filter(|(name, _)| !knobs.contains(&name.as_str()))
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect(),
        ),
        other => other.clone(),
    }
}
