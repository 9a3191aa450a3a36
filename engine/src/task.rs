//! Owns running one cluster task (`pipeline task`): a stage, or one shard of its items, made in a
//! scratch cache from inputs pulled from the shared cache, and pushed back for the driver.

use std::collections::BTreeMap;

use pipeline_api::ItemShard;

use crate::cluster::shard_key;
use crate::engine::{Engine, EngineError, RunOptions, SharedPolicy};
use crate::event::Reporter;
use crate::execute::{Executed, RequiredPull};
use crate::failure::error_chain;

/// What a task did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskOutcome {
    /// It ran the work and pushed the entry under this key.
    Ran(String),
    /// The shared cache had the entry already (an earlier attempt of the task made it).
    Found(String),
}

impl Engine<'_> {
    /// Runs `stage` (the shard `shard` of its items, when given) as a cluster task: computes the
    /// stage's key from the shared cache's records (`elsewhere` gives the output digest of an
    /// entry by key), refuses to go on unless it is `expected_key` (the driver's), pulls the
    /// inputs, runs, and pushes the entry. `threads` is the task's share of its node.
    pub fn run_task(
        &self,
        stage: &str,
        expected_key: &str,
        shard: Option<ItemShard>,
        elsewhere: &dyn Fn(&str) -> Option<String>,
        threads: usize,
        reporter: &dyn Reporter,
    ) -> Result<TaskOutcome, EngineError> {
        let shared = self.shared.ok_or_else(|| {
            EngineError::Usage("`pipeline task` needs the shared cache (`--remote URL`)".into())
        })?;
        let planned = self
            .plan
            .stage(stage)
            .ok_or_else(|| EngineError::Usage(format!("`{stage}` is not a stage of the plan")))?;
        if shard.is_some() && !planned.stage.info().shardable {
            return Err(EngineError::Usage(format!(
                "`{stage}` is a `{}` stage, whose work is not per item: it runs whole, without `--shards`",
                planned.stage.info().kind
            )));
        }
        let _lock = self.acquire_run_lock(reporter, false)?;
        self.store.clear_pending()?;
        let keys: BTreeMap<String, String> = self
            .status_with(elsewhere)?
            .into_iter()
            .filter_map(|status| Some((status.name, status.key?)))
            .collect();
        match keys.get(stage) {
            Some(key) if key == expected_key => {}
            found => {
                return Err(EngineError::Task(format!(
                    "the key of `{stage}` computed here is {}, not the driver's {expected_key}: the task sees other code, params or inputs than the run that sent it (the same binary and project must be visible on every node)",
                    found.map_or(
                        "unknown (an input is not in the shared cache)",
                        String::as_str
                    )
                )));
            }
        }
        let mut entry_keys = BTreeMap::new();
        for up in planned.inputs.values() {
            let key = &keys[up];
            self.pull_required(key).map_err(|why| match why {
                RequiredPull::Failed(err) => {
                    EngineError::Task(format!("pulling `{up}` ({key}): {err}"))
                }
                RequiredPull::Incomplete => EngineError::Task(format!(
                    "the shared cache has no complete entry of `{up}` ({key}), which `{stage}` reads"
                )),
            })?;
            entry_keys.insert(up.clone(), key.clone());
        }
        let key = shard.map_or_else(|| expected_key.to_string(), |s| shard_key(expected_key, s));
        let options = RunOptions {
            threads,
            shared: SharedPolicy::PullAndPush,
            ..RunOptions::default()
        };
        match self.execute(planned, &key, &entry_keys, &[], &options, reporter, shard) {
            Ok(Executed::Ran(_)) => {
                // `execute` reports a failed push as a trouble and goes on; a task's only job is the
                // push, so ask for the entry to be sure it is there.
                shared
                    .push(&self.store, &key)
                    .map_err(|err| EngineError::Task(format!("pushing {key}: {err}")))?;
                Ok(TaskOutcome::Ran(key))
            }
            Ok(Executed::Pulled(..)) => Ok(TaskOutcome::Found(key)),
            Ok(Executed::NotShared) => Err(EngineError::Task(format!(
                "`{stage}` neither ran nor was found in the shared cache"
            ))),
            Err(failure) => Err(EngineError::Task(format!(
                "`{stage}` failed: {}",
                error_chain(&failure)
            ))),
        }
    }
}
