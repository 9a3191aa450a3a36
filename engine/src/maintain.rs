//! Owns maintenance of the cache: `verify` (rehash every entry and workspace file, evict what is
//! damaged with `--repair`) and `gc` (remove what neither the lock nor recent runs reference).

use std::collections::BTreeSet;

use crate::engine::{Engine, EngineError};
use crate::event::QuietReporter;
use crate::lock::LockFile;
use crate::statcache::StaleStamp;

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
    /// Recorded runs whose entries were kept.
    pub runs_kept: usize,
    /// Recorded runs in all.
    pub runs: usize,
}

impl Engine<'_> {
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
    /// Keeps what `pipeline.lock` names and what the last `keep` recorded runs used (every
    /// recorded run when `keep` is `None`: an experiment run with `-S` is one of them).
    pub fn gc(&self, keep: Option<usize>) -> Result<GcReport, EngineError> {
        let _lock = self.acquire_run_lock(&QuietReporter, false)?;
        let mut referenced: BTreeSet<String> = LockFile::load(&self.lock_path)
            .stages
            .into_values()
            .map(|s| s.key)
            .collect();
        let runs = self.runs();
        let keep = keep.unwrap_or(runs.len()).min(runs.len());
        for run in runs.iter().rev().take(keep) {
            referenced.extend(run.stages.iter().filter_map(|s| s.key.clone()));
        }
        let mut report = GcReport {
            runs_kept: keep,
            runs: runs.len(),
            ..GcReport::default()
        };
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
}
