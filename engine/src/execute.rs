//! Owns executing one dirty stage: check the inputs it will read, run it into a pending entry
//! with its item cache and earlier outputs, and commit the entry - or discard everything it
//! wrote when it fails or panics.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use pipeline_api::{ItemCache, ItemShard, StageContext, StageError};

use crate::cluster::{ClusterJob, Placement, placement, shard_key, shard_stage_name};

use crate::engine::{Engine, RunOptions};
use crate::event::{Event, Reporter};
use crate::failure::StageFailure;
use crate::fingerprint::Reason;
use crate::items::ItemStore;
use crate::plan::PlannedStage;
use crate::record::{Action, read_runs};
use crate::shared::Pulled;
use crate::store::{Committed, Manifest};

/// Tells the reporter that a transfer with the shared cache failed.
fn trouble(reporter: &dyn Reporter, stage: &PlannedStage, during: &'static str, message: &str) {
    reporter.event(&Event::SharedTrouble {
        stage: &stage.name,
        during,
        message,
    });
}

/// Why an entry that must come from the shared cache did not.
pub(crate) enum RequiredPull {
    /// The transfer failed.
    Failed(String),
    /// The shared cache has no complete entry under the key (or there is none).
    Incomplete,
}

impl RequiredPull {
    /// As a cluster failure of `what` (`the job of `x` ended, but its entry KEY`).
    fn into_failure(self, what: std::fmt::Arguments<'_>) -> StageFailure {
        match self {
            RequiredPull::Failed(err) => StageFailure::Cluster(format!("{what}: {err}")),
            RequiredPull::Incomplete => {
                StageFailure::Cluster(format!("{what} is not complete in the shared cache"))
            }
        }
    }
}

/// What came of a dirty stage.
pub(crate) enum Executed {
    /// It ran, and its entry is committed.
    Ran(Manifest),
    /// Its entry came from the shared cache.
    Pulled(Committed, Pulled),
    /// `pipeline pull`: the shared cache has no entry for it, and it did not run.
    NotShared,
}

/// How many earlier outputs of a stage are offered for reuse.
const EARLIER_OUTPUTS: usize = 4;

impl Engine<'_> {
    /// Runs one stage into a pending entry and commits it; any failure discards the entry.
    /// `entry_keys` holds the key of every stage whose output is known.
    #[expect(
        clippy::too_many_arguments,
        reason = "the scheduler's and a task's calls differ only in `shard`; a struct would hold them for one call"
    )]
    pub(crate) fn execute(
        &self,
        stage: &PlannedStage,
        key: &str,
        entry_keys: &BTreeMap<String, String>,
        reasons: &[Reason],
        options: &RunOptions,
        reporter: &dyn Reporter,
        shard: Option<ItemShard>,
    ) -> Result<Executed, StageFailure> {
        if let Some(pulled) = self.try_pull(stage, key, reasons, options, reporter) {
            return Ok(pulled);
        }
        if !options.shared.runs_stages() {
            return Ok(Executed::NotShared);
        }
        // A corrupted input is never used silently: rehash what this stage is about to read.
        for up in stage.inputs.values() {
            let problems = self.store.verify(&entry_keys[up]);
            if !problems.is_empty() {
                return Err(StageFailure::CorruptInput {
                    input: up.clone(),
                    problems,
                });
            }
        }
        reporter.event(&Event::Started {
            stage: &stage.name,
            reasons,
        });
        // A task of a fanned-out stage runs here as it is; the driver sends the stage out first.
        let placement = match (shard, self.cluster) {
            (None, Some((executor, shards))) if !options.no_reuse => {
                placement(stage, executor.kind(), shards)
            }
            _ => Placement::Here,
        };
        let shard_outputs = match placement {
            Placement::Here => Vec::new(),
            Placement::Whole => {
                self.dispatch(stage, key, entry_keys, None, reporter)?;
                return self.pull_made_elsewhere(stage, key);
            }
            Placement::Sharded(count) => {
                self.dispatch(stage, key, entry_keys, Some(count), reporter)?;
                self.pull_shards(stage, key, count)?
            }
        };
        let progress = reporter.progress(&stage.name);
        let started = Instant::now();
        let pending = self.store.begin(key).map_err(StageFailure::cache)?;
        let work_dir = self.store.work_dir(key).map_err(StageFailure::cache)?;
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
        } else if !shard_outputs.is_empty() {
            // Every item is in the shards (they were made for this key): nothing older is needed.
            shard_outputs
        } else {
            let mut earlier = self.earlier_outputs(&stage.name);
            if let Some(shared) = self.try_pull_latest(stage, key, reasons, options, reporter) {
                earlier.insert(0, shared);
            }
            earlier
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
            shard,
        };
        let result = catch_unwind(AssertUnwindSafe(|| stage.stage.run(&ctx)));
        drop(progress);
        let summary = match result {
            Ok(Ok(summary)) => summary,
            Ok(Err(err)) => {
                pending.discard();
                return Err(StageFailure::Stage(Arc::new(err)));
            }
            Err(panic) => {
                pending.discard();
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                return Err(StageFailure::Panicked(message));
            }
        };
        let seconds = started.elapsed().as_secs_f64();
        let used = items.used.into_inner().expect("not poisoned");
        if let Err(err) = pending.record_items(&used) {
            pending.discard();
            return Err(StageFailure::cache(err));
        }
        // A shard's entry says so in its stage name, so nobody takes it for the whole stage.
        let recorded_name = shard.map_or_else(
            || stage.name.clone(),
            |shard| shard_stage_name(&stage.name, shard),
        );
        let manifest = self
            .store
            .commit(
                pending,
                &recorded_name,
                stage.stage.info().kind,
                &summary,
                seconds,
            )
            .map_err(StageFailure::cache)?;
        self.store.remove_work_dir(key);
        self.try_push(stage, key, options, reporter);
        Ok(Executed::Ran(manifest))
    }

    /// Sends `stage` to the cluster: its inputs go to the shared cache first (the tasks pull them
    /// from there), then the executor runs the job to its end.
    fn dispatch(
        &self,
        stage: &PlannedStage,
        key: &str,
        entry_keys: &BTreeMap<String, String>,
        shards: Option<u32>,
        reporter: &dyn Reporter,
    ) -> Result<(), StageFailure> {
        let (Some((executor, _)), Some(shared)) = (self.cluster, self.shared) else {
            return Err(StageFailure::Cluster(
                "a stage sent to a cluster needs the shared cache: name it with `--remote URL`, `PIPELINE_REMOTE` or `cache: {remote: URL}`".into(),
            ));
        };
        for up in stage.inputs.values() {
            shared.push(&self.store, &entry_keys[up]).map_err(|err| {
                StageFailure::Cluster(format!(
                    "the output of `{up}` could not be sent to the shared cache for the tasks to read: {err}"
                ))
            })?;
        }
        let job = ClusterJob {
            stage: &stage.name,
            key,
            shards,
            resources: stage.resources.as_ref(),
            dir: self
                .store
                .job_dir(&stage.name, key)
                .map_err(StageFailure::cache)?,
        };
        let progress = reporter.progress(&stage.name);
        let dispatched = executor
            .run(&job, progress.as_ref())
            .map_err(|err| StageFailure::Cluster(err.to_string()))?;
        drop(progress);
        reporter.event(&Event::Dispatched {
            stage: &stage.name,
            dispatched: &dispatched,
        });
        Ok(())
    }

    /// The complete entry under `key`: this cache's, else pulled from the shared cache. What a
    /// driver needs of the jobs it sent and a task of its inputs; no pull (`Ok(None)` pulled)
    /// when it is here already.
    pub(crate) fn pull_required(
        &self,
        key: &str,
    ) -> Result<(Committed, Option<Pulled>), RequiredPull> {
        if let Some(entry) = self.store.fresh(key) {
            return Ok((entry, None));
        }
        let shared = self.shared.ok_or(RequiredPull::Incomplete)?;
        let pulled = shared
            .pull(&self.store, key)
            .map_err(|err| RequiredPull::Failed(err.to_string()))?
            .ok_or(RequiredPull::Incomplete)?;
        let entry = self.store.fresh(key).ok_or(RequiredPull::Incomplete)?;
        Ok((entry, Some(pulled)))
    }

    /// Brings in the entry a cluster job made for the whole stage.
    fn pull_made_elsewhere(
        &self,
        stage: &PlannedStage,
        key: &str,
    ) -> Result<Executed, StageFailure> {
        let (entry, pulled) = self.pull_required(key).map_err(|why| {
            why.into_failure(format_args!(
                "the job of `{}` ended, but its entry {key}",
                stage.name
            ))
        })?;
        Ok(Executed::Pulled(entry, pulled.unwrap_or_default()))
    }

    /// Brings in the entries of a fanned-out stage's `count` shards; their output directories.
    fn pull_shards(
        &self,
        stage: &PlannedStage,
        key: &str,
        count: u32,
    ) -> Result<Vec<PathBuf>, StageFailure> {
        (0..count)
            .map(|index| {
                let at = shard_key(key, ItemShard { index, count });
                self.pull_required(&at).map_err(|why| {
                    why.into_failure(format_args!(
                        "task {index} of `{}` ended, but its entry {at}",
                        stage.name
                    ))
                })?;
                Ok(self.store.out_dir(&at))
            })
            .collect()
    }

    /// `--pull`: the stage's entry from the shared cache, unless the stage is forced. A failed
    /// transfer is reported and the stage runs instead: the shared cache only ever saves work.
    fn try_pull(
        &self,
        stage: &PlannedStage,
        key: &str,
        reasons: &[Reason],
        options: &RunOptions,
        reporter: &dyn Reporter,
    ) -> Option<Executed> {
        let shared = self.shared.filter(|_| options.shared.pulls())?;
        // `--force` and `--no-reuse` ask for the stage's own work, not anyone's entry.
        if reasons.contains(&Reason::Forced) || options.no_reuse {
            return None;
        }
        match shared.pull(&self.store, key) {
            Ok(Some(pulled)) => match self.store.fresh(key) {
                Some(entry) => Some(Executed::Pulled(entry, pulled)),
                None => {
                    let message = "the pulled entry is not complete in the local cache";
                    trouble(reporter, stage, "pull", message);
                    None
                }
            },
            Ok(None) => None,
            Err(err) => {
                trouble(reporter, stage, "pull", &err.to_string());
                None
            }
        }
    }

    /// `--pull`, and the shared cache has no entry for `key`: the output of the newest entry it
    /// has of this stage, brought in to be reused as an earlier output. Failures only cost the
    /// reuse.
    fn try_pull_latest(
        &self,
        stage: &PlannedStage,
        key: &str,
        reasons: &[Reason],
        options: &RunOptions,
        reporter: &dyn Reporter,
    ) -> Option<PathBuf> {
        let shared = self.shared.filter(|_| options.shared.pulls_latest())?;
        if reasons.contains(&Reason::Forced) {
            return None;
        }
        match shared.pull_latest(&self.store, &stage.name) {
            Ok(Some((latest, pulled))) if latest != key => {
                self.store.fresh(&latest)?;
                reporter.event(&Event::PulledEarlier {
                    stage: &stage.name,
                    key: &latest,
                    pulled,
                });
                Some(self.store.out_dir(&latest))
            }
            Ok(_) => None,
            Err(err) => {
                trouble(reporter, stage, "pull", &err.to_string());
                None
            }
        }
    }

    /// `--push`: sends the entry just committed; a failure is reported, and the entry stays local
    /// for a later `pipeline push`.
    fn try_push(
        &self,
        stage: &PlannedStage,
        key: &str,
        options: &RunOptions,
        reporter: &dyn Reporter,
    ) {
        let Some(shared) = self.shared.filter(|_| options.shared.pushes()) else {
            return;
        };
        match shared.push(&self.store, key) {
            Ok(pushed) => reporter.event(&Event::Pushed {
                stage: &stage.name,
                pushed,
            }),
            Err(err) => trouble(reporter, stage, "push", &err.to_string()),
        }
    }

    /// Output directories of the newest committed runs of `stage` (distinct keys, at most
    /// [`EARLIER_OUTPUTS`]), from the run record. Only the manifest's presence is checked here:
    /// the stage validates whatever it takes.
    fn earlier_outputs(&self, stage: &str) -> Vec<PathBuf> {
        let mut keys: Vec<String> = Vec::new();
        for run in read_runs(&self.store.runs_path()).iter().rev() {
            for record in run.stages.iter().rev() {
                // A pulled entry was made by a run elsewhere: as good an earlier output as one made here.
                if record.name != stage || !matches!(record.action, Action::Ran | Action::Pulled) {
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
