//! Owns `state.json` in a job's folder: how many of its tasks are done, running, waiting or
//! failed, rewritten (atomically) as the executor polls, so `pipeline status` can show a run's
//! cluster work from another shell.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ClusterError;

/// What a job's tasks are doing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobState {
    /// The stage.
    pub stage: String,
    /// `slurm` or `k8s`.
    pub executor: String,
    /// The cluster's ids of the submissions so far (the first, then each retry's).
    pub jobs: Vec<String>,
    /// Tasks in the job.
    pub tasks: u32,
    /// Tasks finished well.
    pub done: u32,
    /// Tasks running.
    pub running: u32,
    /// Tasks waiting for a node.
    pub pending: u32,
    /// Task attempts that failed so far (retried or not).
    pub failed: u32,
    /// The folder of the task logs.
    pub logs: PathBuf,
    /// The driver's process id: a state whose driver is gone is not shown as running.
    pub driver_pid: u32,
    /// Whether the job has ended (all done, or given up).
    pub ended: bool,
}

/// The file name in a job's folder.
pub const STATE_FILE: &str = "state.json";

impl JobState {
    /// Writes it into `dir` (a temporary file renamed over the old one).
    pub fn save(&self, dir: &Path) -> Result<(), ClusterError> {
        let path = dir.join(STATE_FILE);
        let write = |source| ClusterError::Write {
            path: path.clone(),
            source,
        };
        let mut tmp = pipeline_engine::fsio::temp_file_in(dir, ".tmp").map_err(write)?;
        serde_json::to_writer_pretty(&mut tmp, self)
            .map_err(|e| write(std::io::Error::other(e)))?;
        tmp.persist(&path).map_err(|e| write(e.error))?;
        Ok(())
    }

    /// One line for `pipeline status`.
    pub fn line(&self) -> String {
        format!(
            "{}: {} job {}: {} of {} task(s) done, {} running, {} waiting, {} failed (logs: {})",
            self.stage,
            self.executor,
            self.jobs.join(", "),
            self.done,
            self.tasks,
            self.running,
            self.pending,
            self.failed,
            self.logs.display()
        )
    }
}

/// The states of the jobs under `jobs_dir` whose driver is still running and that have not
/// ended, by stage name. Unreadable files are skipped: this is a view, not a record.
pub fn active_jobs(jobs_dir: &Path) -> Vec<JobState> {
    let Ok(entries) = std::fs::read_dir(jobs_dir) else {
        return Vec::new();
    };
    let mut active: Vec<JobState> = entries
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read(e.path().join(STATE_FILE)).ok())
        .filter_map(|bytes| serde_json::from_slice::<JobState>(&bytes).ok())
        .filter(|state| !state.ended && driver_alive(state.driver_pid))
        .collect();
    active.sort_by(|a, b| a.stage.cmp(&b.stage));
    active
}

/// Whether process `pid` exists (Linux: its `/proc` entry).
fn driver_alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}
