//! Owns the [`Engine`] handle (a plan bound to its cache, lock file and stat cache), what a run
//! is asked to do ([`RunOptions`]), the engine's errors, and the process lock that lets one
//! `pipeline run` at a time change the cache. The jobs live beside it: `assess`, `schedule`,
//! `execute`, `maintain`.

use std::path::PathBuf;

use crate::cluster::Executor;
use crate::event::{Event, Reporter};
use crate::fsio::{Area, FsError};
use crate::plan::Plan;
use crate::record::{RunRecord, read_runs};
use crate::shared::SharedCache;
use crate::statcache::StatCache;
use crate::store::Store;

/// Errors of the engine itself (not of a stage).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A file of the cache, the workspace, the lock or a published copy could not be read or
    /// written; the message says which.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// A name on the command line is not a stage.
    #[error("{0}")]
    Usage(String),
    /// A cluster task could not do its work (the message says which step and why).
    #[error("{0}")]
    Task(String),
    /// A published copy could not be finished.
    #[error("{0}")]
    Publish(String),
    /// A published copy was not written: a file in the way is not the pipeline's, or writing
    /// failed.
    #[error(transparent)]
    Published(#[from] crate::publish::PublishError),
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
    /// What the run does with the shared cache, when the engine has one.
    pub shared: SharedPolicy,
}

/// What a run does with the shared cache: one value, read through the questions the engine
/// asks of it, instead of flags each read under its own guard.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum SharedPolicy {
    /// Neither look there nor send there.
    #[default]
    Off,
    /// `run --pull`: before running a dirty stage, take its entry when the shared cache has it.
    Pull,
    /// `run --push`: send every entry this run commits.
    Push,
    /// `run --pull --push`, a cluster driver and its tasks: both.
    PullAndPush,
    /// `pipeline pull`: take what the shared cache has and run nothing; stages it lacks are
    /// left as they are. The lock file and published copies are not touched.
    PullOnly,
}

impl SharedPolicy {
    /// The policy of `run --pull` / `--push`.
    pub fn of_flags(pull: bool, push: bool) -> Self {
        match (pull, push) {
            (false, false) => Self::Off,
            (true, false) => Self::Pull,
            (false, true) => Self::Push,
            (true, true) => Self::PullAndPush,
        }
    }

    /// Whether a dirty stage's entry is looked up on the shared cache under its key.
    pub fn pulls(self) -> bool {
        matches!(self, Self::Pull | Self::PullAndPush | Self::PullOnly)
    }

    /// Whether a stage may start from the newest entry of its name another machine pushed
    /// (items reused from it); only a run that goes on to run the stage does.
    pub fn pulls_latest(self) -> bool {
        matches!(self, Self::Pull | Self::PullAndPush)
    }

    /// Whether committed entries are sent.
    pub fn pushes(self) -> bool {
        matches!(self, Self::Push | Self::PullAndPush)
    }

    /// Whether stages the shared cache lacks are run (all but `pipeline pull`).
    pub fn runs_stages(self) -> bool {
        self != Self::PullOnly
    }
}

/// The engine bound to one plan and its project directory.
pub struct Engine<'a> {
    pub(crate) plan: &'a Plan,
    pub(crate) store: Store,
    pub(crate) lock_path: PathBuf,
    pub(crate) stat: StatCache,
    /// The cache shared with other machines, for `pull`/`push` runs.
    pub(crate) shared: Option<&'a dyn SharedCache>,
    /// The cluster that per-item stages fan out to, and how many shards each gets.
    pub(crate) cluster: Option<(&'a dyn Executor, u32)>,
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
            shared: None,
            cluster: None,
        }
    }

    /// The engine with its cache in `dir` instead of `<root>/cache`: a cluster task's own scratch
    /// cache, beside a driver that holds the project's.
    pub fn with_cache_dir(mut self, dir: PathBuf) -> Self {
        self.store = Store::new(dir);
        self.stat = StatCache::load(&self.plan.root, self.store.stat_cache_path());
        self
    }

    /// The engine with a cluster to send stages to (see [`crate::cluster`]), `shards` tasks per
    /// per-item stage. It needs the shared cache too: tasks read and write through it.
    pub fn with_executor(mut self, executor: &'a dyn Executor, shards: u32) -> Self {
        self.cluster = Some((executor, shards));
        self
    }

    /// The engine with a shared cache that runs with `pull` or `push` use.
    pub fn with_shared(mut self, shared: &'a dyn SharedCache) -> Self {
        self.shared = Some(shared);
        self
    }

    /// The plan it runs.
    pub fn plan(&self) -> &Plan {
        self.plan
    }

    /// The local cache.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The key `pipeline.lock` records for each stage, in plan order (stages never run are left
    /// out).
    pub fn locked_keys(&self) -> Vec<(String, String)> {
        let lock = crate::lock::LockFile::load(&self.lock_path);
        self.plan
            .stages
            .iter()
            .filter_map(|s| Some((s.name.clone(), lock.stages.get(&s.name)?.key.clone())))
            .collect()
    }

    /// Takes the process lock for work that changes the cache outside a run (a pull), clearing
    /// what dead runs left. Released when the file is dropped.
    pub fn lock_cache(&self, reporter: &dyn Reporter) -> Result<std::fs::File, EngineError> {
        let lock = self.acquire_run_lock(reporter, false)?;
        self.store.clear_pending()?;
        Ok(lock)
    }

    /// The recorded runs, oldest first.
    pub fn runs(&self) -> Vec<RunRecord> {
        read_runs(&self.store.runs_path())
    }

    /// Takes the process lock that serialises runs (and maintenance that changes the cache):
    /// waits for it, saying so, or fails with `no_wait`. Released when the file is dropped.
    pub(crate) fn acquire_run_lock(
        &self,
        reporter: &dyn Reporter,
        no_wait: bool,
    ) -> Result<std::fs::File, EngineError> {
        use std::fs::TryLockError;
        self.store.init()?;
        let path = self.store.lock_path();
        let failed = |action: &'static str| {
            let path = path.clone();
            move |source| FsError::at(Area::Cache, action, &path, source)
        };
        let file = std::fs::File::create(&path).map_err(failed("create"))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) if no_wait => return Err(EngineError::Busy(path)),
            Err(TryLockError::WouldBlock) => {
                reporter.event(&Event::WaitingForLock { lock: &path });
                file.lock().map_err(failed("lock"))?;
            }
            Err(TryLockError::Error(source)) => return Err(failed("lock")(source).into()),
        }
        Ok(file)
    }
}
