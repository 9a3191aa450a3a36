//! Owns scheduling a run: which stages are selected, the order they are settled in (plan order,
//! each once its inputs are known), which run on up to `jobs` workers, updating `pipeline.lock`
//! after every stage, publishing, and the events that tell the reporter and the run record.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::mpsc;
use std::time::Instant;

use pipeline_api::{RunContext, StageParams};

use crate::assess::{Assessment, outputs_of};
use crate::cluster::Dispatched;
use crate::engine::{Engine, EngineError, RunOptions};
use crate::event::{Event, Reporter, RunLog, RunOutcome, SharedTrouble, Span};
use crate::execute::Executed;
use crate::failure::StageFailure;
use crate::fingerprint::Reason;
use crate::lock::{LockFile, LockedStage};
use crate::plan::PlannedStage;
use crate::publish::run_folders;
use crate::record::{RunOutcomeKind, RunRecord, append_run, last_run_id, run_id};
use crate::store::Committed;

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
    /// Its entry came from the shared cache in this run.
    Pulled,
    /// `--dry-run`: would run, so its output (and its dependents' keys) is unknown.
    Unknown,
    /// Failed, or skipped because something it needs failed.
    Broken,
}

/// A dirty stage ready for a worker.
struct Job<'p> {
    stage: &'p PlannedStage,
    key: String,
    locked: LockedStage,
    reasons: Vec<Reason>,
    began: Instant,
}

/// A worker's report on the job it ran.
struct Finished<'p> {
    job: Job<'p>,
    result: Result<Executed, StageFailure>,
    ended: Instant,
    /// Transfers with the shared cache that failed while the worker ran it.
    troubles: Vec<SharedTrouble>,
    /// The stage's cluster job, when it had one.
    dispatched: Option<Dispatched>,
}

/// A worker's reporter: passes every event on at once, and keeps what the run's log needs of
/// them (the shared cache's troubles, the cluster job), which only the scheduling thread writes.
struct NotingTroubles<'r> {
    inner: &'r dyn Reporter,
    troubles: std::sync::Mutex<Vec<SharedTrouble>>,
    dispatched: std::sync::Mutex<Option<Dispatched>>,
}

impl<'r> NotingTroubles<'r> {
    fn new(inner: &'r dyn Reporter) -> Self {
        Self {
            inner,
            troubles: Default::default(),
            dispatched: Default::default(),
        }
    }

    fn troubles(&self) -> Vec<SharedTrouble> {
        std::mem::take(&mut self.troubles.lock().expect("not poisoned"))
    }

    fn dispatched(&self) -> Option<Dispatched> {
        self.dispatched.lock().expect("not poisoned").take()
    }
}

impl Reporter for NotingTroubles<'_> {
    fn event(&self, event: &Event<'_>) {
        if let Event::Dispatched { dispatched, .. } = event {
            *self.dispatched.lock().expect("not poisoned") = Some((*dispatched).clone());
        }
        if let Event::SharedTrouble {
            stage,
            during,
            message,
        } = event
        {
            self.troubles
                .lock()
                .expect("not poisoned")
                .push(SharedTrouble {
                    stage: stage.to_string(),
                    during,
                    message: message.to_string(),
                });
        }
        self.inner.event(event);
    }

    fn progress(&self, stage: &str) -> Box<dyn pipeline_api::Progress + '_> {
        self.inner.progress(stage)
    }
}

/// What settling one waiting stage came to.
enum Settled<'p> {
    /// Its inputs are not all known yet.
    NotReady,
    /// Fresh, skipped or (dry run) would run: done without a worker.
    Done,
    /// Dirty: needs a worker.
    Run(Box<Job<'p>>),
    /// Dirty, but every worker is busy: try again after one finishes.
    Wait,
}

/// The state of one run, owned by the scheduling thread.
struct Scheduler<'e, 'p> {
    engine: &'e Engine<'p>,
    options: &'e RunOptions,
    reporter: &'e dyn Reporter,
    force: BTreeSet<String>,
    slots: BTreeMap<&'p str, Slot>,
    /// Output digest and entry key of every stage whose output is known.
    digests: BTreeMap<String, String>,
    entry_keys: BTreeMap<String, String>,
    /// Key -> the stage a worker is running under it. Two stages with one key are one piece of
    /// work: the second waits and then reuses the entry (both writing it would race).
    running_keys: BTreeMap<String, String>,
    /// Key -> the stage that failed under it in this run, and its error.
    failed_keys: BTreeMap<String, (String, StageFailure)>,
    lock: LockFile,
    log: RunLog,
    context: RunContext,
    run_started: Instant,
}

impl Engine<'_> {
    /// Brings the selected stages up to date (or says what would run, with `dry_run`).
    pub fn run(
        &self,
        options: &RunOptions,
        reporter: &dyn Reporter,
    ) -> Result<RunOutcome, EngineError> {
        self.plan
            .check_names(options.targets.iter().chain(&options.force))
            .map_err(EngineError::Usage)?;
        let (selected, force) = self.select(options);

        // A dry run reads the cache but never creates, locks or cleans anything.
        let _run_lock = if options.dry_run {
            None
        } else {
            let lock = self.acquire_run_lock(reporter, options.no_wait)?;
            self.store.clear_pending()?;
            Some(lock)
        };
        let started_unix = pipeline_api::unix_now();
        let id = if options.dry_run {
            String::new()
        } else {
            run_id(
                started_unix,
                last_run_id(&self.store.runs_path()).as_deref(),
            )
        };
        let mut lock = LockFile::load(&self.lock_path);
        lock.version = 1;
        let mut scheduler = Scheduler {
            engine: self,
            options,
            reporter,
            force,
            slots: self
                .plan
                .stages
                .iter()
                .filter(|s| selected.contains(&s.name))
                .map(|s| (s.name.as_str(), Slot::Waiting))
                .collect(),
            digests: BTreeMap::new(),
            entry_keys: BTreeMap::new(),
            running_keys: BTreeMap::new(),
            failed_keys: BTreeMap::new(),
            lock,
            log: RunLog::default(),
            context: self.run_context(&id, started_unix, options),
            run_started: Instant::now(),
        };
        scheduler.drive()?;
        let outcome = scheduler.log.outcome(&id);
        if !options.dry_run {
            self.stat.save()?;
            let base = RunRecord {
                id,
                overrides: options.overrides.clone(),
                started_unix,
                seconds: scheduler.run_started.elapsed().as_secs_f64(),
                targets: options.targets.clone(),
                outcome: RunOutcomeKind::Ok,
                stages: Vec::new(),
            };
            append_run(&self.store.runs_path(), &scheduler.log.into_record(base))?;
        }
        Ok(outcome)
    }

    /// The stages the run brings up to date, and those it reruns whatever their state.
    fn select(&self, options: &RunOptions) -> (BTreeSet<String>, BTreeSet<String>) {
        let mut force: BTreeSet<String> = options.force.iter().cloned().collect();
        if options.retry_failed {
            force.extend(
                self.plan
                    .stages
                    .iter()
                    .filter(|s| s.stage.info().remembers_failures)
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
        (self.plan.with_upstream(&wanted), force)
    }

    /// The run as a published copy describes it (timings are filled in as stages finish).
    fn run_context(&self, id: &str, started_unix: u64, options: &RunOptions) -> RunContext {
        RunContext {
            id: id.to_string(),
            started_unix,
            overrides: options.overrides.clone(),
            stages: self
                .plan
                .stages
                .iter()
                .map(|s| {
                    let params = StageParams {
                        kind: s.stage.info().kind.to_string(),
                        params: s.params.clone(),
                    };
                    (s.name.clone(), params)
                })
                .collect(),
            timings: Vec::new(),
        }
    }

    /// Publishes the output of `stage` (`key`) when the stage asks for it. When it ran in this
    /// run, or comes fresh from the cache but is not what the directory shows (a param set back
    /// to an earlier value), the run gets a folder of its own, which the kind may dress with the
    /// run's context, and that copy becomes the latest. Otherwise the latest is only restored
    /// when it was touched. Returns the directory, relative to the project.
    fn publish<'s>(
        &self,
        stage: &'s PlannedStage,
        key: &str,
        ran: bool,
        run: &RunContext,
    ) -> Result<Option<(&'s Path, Option<String>)>, EngineError> {
        let Some(dir) = &stage.publish else {
            return Ok(None);
        };
        let to = self.plan.root.join(dir);
        let shown = self.store.shown(&to);
        let shows_key = shown.as_ref().is_some_and(|(shown, _)| shown == key);
        // A fresh output that is not what the folder shows replaces another run's report: the
        // person is told which (it is read before the copy replaces the top's run.json).
        let replaced = (!ran && !shows_key && shown.is_some()).then(|| {
            std::fs::read(to.join(crate::publish::RUN_FILE))
                .ok()
                .and_then(|bytes| serde_json::from_slice::<RunContext>(&bytes).ok())
                .map(|run| run.id)
                .unwrap_or_default()
        });
        if ran || !shows_key {
            let previous = run_folders(&to)
                .into_iter()
                .rfind(|(id, _)| id.as_str() < run.id.as_str())
                .map(|(_, folder)| folder);
            // Made hidden and named only once the latest copy is out: a publish refused (a
            // person's file in the way) leaves no run folder that `metrics diff` would read.
            let staged = self.store.stage_run_copy(key, &to, run)?;
            let published = stage
                .stage
                .present(&staged, run, previous.as_deref())
                .map_err(|err| {
                    EngineError::Publish(format!(
                        "`{}` could not finish its report in `{}`: {err}",
                        stage.name,
                        to.join(&run.id).display()
                    ))
                })
                .and_then(|()| Ok(self.store.publish_latest(key, &staged, &to, true)?))
                .and_then(|_| Ok(crate::publish::finish_run_copy(&staged, &to, run)?));
            if published.is_err() {
                let _ = std::fs::remove_dir_all(&staged);
            }
            published?;
        } else if !shown.is_some_and(|(_, intact)| intact) {
            // Touched: restore it from the newest run folder, the dressed copy of this same key.
            // (An intact top, the no-op case, lists no run folders: they only grow.)
            let from = run_folders(&to)
                .pop()
                .map_or_else(|| self.store.out_dir(key), |(_, folder)| folder);
            self.store.publish_latest(key, &from, &to, true)?;
        }
        Ok(Some((Path::new(dir), replaced)))
    }
}

impl<'e, 'p> Scheduler<'e, 'p> {
    /// The main loop: this thread settles stages and owns the lock file; up to `jobs` workers run
    /// dirty stages whose inputs are all known. Stages are considered in plan order, so with
    /// `--jobs 1` the run is the sequential one.
    fn drive(&mut self) -> Result<(), EngineError> {
        let jobs = self.options.jobs.max(1);
        let (engine, options, reporter) = (self.engine, self.options, self.reporter);
        std::thread::scope(|scope| {
            let (finished_tx, finished_rx) = mpsc::channel::<Finished<'p>>();
            let mut running = 0usize;
            let mut stopping = false;
            loop {
                let mut progressed = true;
                while progressed && !stopping {
                    progressed = false;
                    for stage in self.waiting() {
                        match self.settle(stage, running < jobs)? {
                            Settled::NotReady | Settled::Wait => {}
                            Settled::Done => progressed = true,
                            Settled::Run(job) => {
                                self.slots.insert(&job.stage.name, Slot::Running);
                                running += 1;
                                progressed = true;
                                let entry_keys = self.entry_keys.clone();
                                let finished_tx = finished_tx.clone();
                                scope.spawn(move || {
                                    let reporter = &NotingTroubles::new(reporter);
                                    // Stage panics are caught inside `execute`; this also catches
                                    // the engine's own, so the scheduler always hears back.
                                    let result = catch_unwind(AssertUnwindSafe(|| {
                                        engine.execute(
                                            job.stage,
                                            &job.key,
                                            &entry_keys,
                                            &job.reasons,
                                            options,
                                            reporter,
                                            None,
                                        )
                                    }))
                                    .unwrap_or_else(|_| {
                                        Err(StageFailure::Engine(
                                            "the engine panicked while running the stage".into(),
                                        ))
                                    });
                                    // The receiver only goes away when the run is already failing.
                                    let _ = finished_tx.send(Finished {
                                        job: *job,
                                        result,
                                        ended: Instant::now(),
                                        troubles: reporter.troubles(),
                                        dispatched: reporter.dispatched(),
                                    });
                                });
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
                // Without --keep-going, stages already running finish; nothing new starts.
                let failed = !self.finish(done)?;
                stopping |= failed && !self.options.keep_going;
            }
        })
    }

    fn emit(&mut self, event: Event<'_>) {
        self.reporter.event(&event);
        self.log.observe(&event);
    }

    fn span(&self, began: Instant, ended: Instant) -> Span {
        Span {
            started: began.duration_since(self.run_started).as_secs_f64(),
            seconds: ended.duration_since(began).as_secs_f64(),
        }
    }

    /// Selected stages not settled yet, in plan order.
    fn waiting(&self) -> Vec<&'p PlannedStage> {
        self.engine
            .plan
            .stages
            .iter()
            .filter(|s| matches!(self.slots.get(s.name.as_str()), Some(Slot::Waiting)))
            .collect()
    }

    /// Upstream stages of `stage` whose slot matches.
    fn upstream(&self, stage: &'p PlannedStage, pick: fn(&Slot) -> bool) -> Vec<&'p str> {
        stage
            .inputs
            .values()
            .filter(|up| self.slots.get(up.as_str()).is_some_and(pick))
            .map(String::as_str)
            .collect()
    }

    /// Settles `stage` if its inputs are: skipped, fresh, would run, or a job for a worker
    /// (when `can_start`).
    fn settle(
        &mut self,
        stage: &'p PlannedStage,
        can_start: bool,
    ) -> Result<Settled<'p>, EngineError> {
        if !self
            .upstream(stage, |s| matches!(s, Slot::Waiting | Slot::Running))
            .is_empty()
        {
            return Ok(Settled::NotReady);
        }
        let began = Instant::now();
        let blocked = self.upstream(stage, |s| matches!(s, Slot::Broken));
        if !blocked.is_empty() {
            let reasons = [Reason::UpstreamFailed(
                blocked.iter().map(|s| s.to_string()).collect(),
            )];
            self.emit(Event::Skipped {
                stage: &stage.name,
                reasons: &reasons,
                span: self.span(began, began),
            });
            self.slots.insert(&stage.name, Slot::Broken);
            return Ok(Settled::Done);
        }
        let forced = self.force.contains(&stage.name);
        match self
            .engine
            .assess(stage, &self.digests, &self.lock, forced)?
        {
            Assessment::Fresh { entry, locked } => {
                self.fresh(stage, entry, locked, began)?;
                Ok(Settled::Done)
            }
            Assessment::Dirty { reasons, .. } if self.options.dry_run => {
                self.emit(Event::WouldRun {
                    stage: &stage.name,
                    reasons: &reasons,
                });
                // Dependents cannot be keyed until this one has run.
                self.slots.insert(&stage.name, Slot::Unknown);
                Ok(Settled::Done)
            }
            Assessment::Dirty { known: None, .. } if !self.options.shared.runs_stages() => {
                // An input the shared cache lacked: this stage's key cannot be known.
                self.emit(Event::NotShared {
                    stage: &stage.name,
                    key: None,
                });
                self.slots.insert(&stage.name, Slot::Unknown);
                Ok(Settled::Done)
            }
            Assessment::Dirty { reasons, known } => {
                let (key, fingerprint) = known.expect("inputs are known when not a dry run");
                if self.running_keys.contains_key(&key) || !can_start {
                    return Ok(Settled::Wait);
                }
                if let Some((other, cause)) = self.failed_keys.get(&key).cloned() {
                    let error = StageFailure::SameWork {
                        other,
                        cause: Box::new(cause),
                    };
                    self.emit(Event::Failed {
                        stage: &stage.name,
                        key: &key,
                        error: &error,
                        span: self.span(began, Instant::now()),
                    });
                    self.slots.insert(&stage.name, Slot::Broken);
                    return Ok(Settled::Done);
                }
                self.running_keys.insert(key.clone(), stage.name.clone());
                Ok(Settled::Run(Box::new(Job {
                    stage,
                    locked: LockedStage {
                        key: key.clone(),
                        fingerprint,
                        outputs: Default::default(),
                    },
                    key,
                    reasons,
                    began,
                })))
            }
        }
    }

    /// A stage whose output the cache holds: record it, update the lock, publish.
    fn fresh(
        &mut self,
        stage: &'p PlannedStage,
        entry: Committed,
        locked: LockedStage,
        began: Instant,
    ) -> Result<(), EngineError> {
        let reran = self.upstream(stage, |s| matches!(s, Slot::Ran));
        let note = (!reran.is_empty())
            .then(|| format!("upstream {} reran with identical output", reran.join(", ")));
        self.emit(Event::Fresh {
            stage: &stage.name,
            key: &entry.key,
            note: note.as_deref(),
            span: self.span(began, Instant::now()),
        });
        self.digests
            .insert(stage.name.clone(), entry.output_digest.clone());
        self.entry_keys
            .insert(stage.name.clone(), entry.key.clone());
        self.slots.insert(&stage.name, Slot::Fresh);
        if !self.options.dry_run && self.options.shared.runs_stages() {
            if self.lock.stages.get(&stage.name) != Some(&locked) {
                self.lock.stages.insert(stage.name.clone(), locked);
                self.lock.save(&self.engine.lock_path)?;
            }
            self.publish(stage, &entry.key, false)?;
        }
        Ok(())
    }

    /// A worker's job is done: commit its lock record and publish, or mark it broken. Returns
    /// whether it succeeded.
    fn finish(&mut self, done: Finished<'p>) -> Result<bool, EngineError> {
        let Finished {
            job,
            result,
            ended,
            troubles,
            dispatched,
        } = done;
        if let Some(dispatched) = &dispatched {
            self.log.observe(&Event::Dispatched {
                stage: &job.stage.name,
                dispatched,
            });
        }
        for trouble in &troubles {
            self.log.observe(&Event::SharedTrouble {
                stage: &trouble.stage,
                during: trouble.during,
                message: &trouble.message,
            });
        }
        let stage = job.stage;
        let span = self.span(job.began, ended);
        self.running_keys.remove(&job.key);
        match result {
            Ok(Executed::Pulled(entry, pulled)) => {
                self.emit(Event::Pulled {
                    stage: &stage.name,
                    key: &job.key,
                    pulled,
                    span,
                });
                self.known(stage, &job.key, &entry.output_digest, Slot::Pulled);
                if self.options.shared.runs_stages() {
                    let mut locked = job.locked;
                    locked.outputs = outputs_of(&entry);
                    self.lock.stages.insert(stage.name.clone(), locked);
                    self.lock.save(&self.engine.lock_path)?;
                    self.publish(stage, &job.key, true)?;
                }
                Ok(true)
            }
            Ok(Executed::NotShared) => {
                self.emit(Event::NotShared {
                    stage: &stage.name,
                    key: Some(&job.key),
                });
                self.slots.insert(&stage.name, Slot::Unknown);
                Ok(true)
            }
            Ok(Executed::Ran(manifest)) => {
                let mut locked = job.locked;
                locked.outputs = outputs_of(&manifest.committed());
                self.lock.stages.insert(stage.name.clone(), locked);
                self.lock.save(&self.engine.lock_path)?;
                self.digests
                    .insert(stage.name.clone(), manifest.output_digest.clone());
                self.entry_keys.insert(stage.name.clone(), job.key.clone());
                self.emit(Event::Ran {
                    stage: &stage.name,
                    key: &job.key,
                    reasons: &job.reasons,
                    summary: &manifest.summary,
                    span,
                });
                self.slots.insert(&stage.name, Slot::Ran);
                self.publish(stage, &job.key, true)?;
                Ok(true)
            }
            Err(failure) => {
                self.failed_keys
                    .insert(job.key.clone(), (stage.name.clone(), failure.clone()));
                self.emit(Event::Failed {
                    stage: &stage.name,
                    key: &job.key,
                    error: &failure,
                    span,
                });
                self.slots.insert(&stage.name, Slot::Broken);
                Ok(false)
            }
        }
    }

    /// Records the output of `stage` as known: its digest keys its dependents.
    fn known(&mut self, stage: &'p PlannedStage, key: &str, digest: &str, slot: Slot) {
        self.digests.insert(stage.name.clone(), digest.to_string());
        self.entry_keys.insert(stage.name.clone(), key.to_string());
        self.slots.insert(&stage.name, slot);
    }

    fn publish(
        &mut self,
        stage: &'p PlannedStage,
        key: &str,
        ran: bool,
    ) -> Result<(), EngineError> {
        let run = RunContext {
            timings: self.log.timings(),
            ..self.context.clone()
        };
        if let Some((dir, replaced)) = self.engine.publish(stage, key, ran, &run)? {
            self.emit(Event::Published {
                stage: &stage.name,
                dir,
                replaced: replaced.as_deref(),
            });
        }
        Ok(())
    }
}
