//! Owns the Slurm executor: a stage's tasks as one `sbatch` job array (or one job for a whole
//! stage), polled with `scontrol -o show job` (accounting may be off, so `sacct` is not asked),
//! failed tasks resubmitted alone as a smaller array with the same indices, and every job still
//! alive cancelled with `scancel` when the driver is interrupted.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use pipeline_api::Progress;
use pipeline_engine::SharedError;
use pipeline_engine::cluster::{ClusterJob, Dispatched, Executor};
use pipeline_engine::spec::ExecutorKind;

use crate::command::shell_line;
use crate::state::JobState;
use crate::{ClusterError, TaskCommand};

/// The environment variable that carries a task's index in an array.
const INDEX_VAR: &str = "SLURM_ARRAY_TASK_ID";

/// Submits stages to Slurm.
pub struct Slurm {
    command: TaskCommand,
    /// Extra attempts a failed task gets.
    retries: u32,
    /// How often the jobs are asked about.
    poll: Duration,
    /// Jobs submitted and not yet over, for [`Slurm::cancel_all`].
    alive: Mutex<BTreeSet<String>>,
}

impl Slurm {
    /// An executor that starts tasks with `command` and gives a failed task `retries` more
    /// attempts.
    pub fn new(command: TaskCommand, retries: u32) -> Self {
        Self {
            command,
            retries,
            poll: Duration::from_millis(500),
            alive: Mutex::new(BTreeSet::new()),
        }
    }

    /// Cancels every job this executor submitted that is not over (`scancel`); for Ctrl-C.
    /// Returns the ids it cancelled.
    pub fn cancel_all(&self) -> Vec<String> {
        let ids: Vec<String> = self
            .alive
            .lock()
            .map(|alive| alive.iter().cloned().collect())
            .unwrap_or_default();
        if !ids.is_empty() {
            let _ = Command::new("scancel").args(&ids).status();
        }
        ids
    }

    /// The batch script of `job`: the task's command in a scratch cache removed on exit. Only
    /// quoted words reach it: the job's options go to `sbatch` as arguments (see
    /// [`Self::options`]), never as `#SBATCH` lines a newline in a value could break out of.
    fn script(&self, job: &ClusterJob<'_>) -> String {
        let mut words = vec![self.command.program.display().to_string()];
        words.extend(self.command.args(job, INDEX_VAR));
        [
            "#!/bin/bash".to_string(),
            "# Written by `pipeline run --executor slurm`; its options are on sbatch's command line."
                .to_string(),
            "set -u".to_string(),
            // Node-local scratch: the task's own cache, gone when it ends (its work is pushed).
            r#"scratch=$(mktemp -d "${TMPDIR:-/tmp}/pipeline-task.XXXXXX") || exit 1"#.into(),
            r#"trap 'rm -rf "$scratch"' EXIT"#.into(),
            format!(r#"{} --cache-dir "$scratch""#, shell_line(&words)),
            String::new(),
        ]
        .join("\n")
    }

    /// `sbatch`'s options for `job`: name, log, working directory and resources, each one
    /// argument (a path with a space or a newline stays one value).
    fn options(&self, job: &ClusterJob<'_>) -> Vec<std::ffi::OsString> {
        let log = job.dir.join(if job.shards.is_some() {
            "task-%A_%a.log"
        } else {
            "job-%j.log"
        });
        let mut options: Vec<std::ffi::OsString> = vec![
            format!("--job-name=pipeline-{}", job.stage).into(),
            joined("--output=", log.as_os_str()),
            joined("--chdir=", self.command.project.as_os_str()),
        ];
        if let Some(res) = job.resources {
            let mut option = |name: &str, value: Option<String>| {
                if let Some(value) = value {
                    options.push(format!("--{name}={value}").into());
                }
            };
            option("cpus-per-task", res.cpus.map(|c| c.to_string()));
            option("mem", res.mem.clone());
            option("time", res.time.clone());
            option("partition", res.partition.clone());
            option("gres", res.gpus.map(|g| format!("gpu:{g}")));
        }
        options
    }

    /// `sbatch` of the script for the tasks `indices` (all of an array, or those to retry);
    /// the job id.
    fn submit(
        &self,
        script: &Path,
        job: &ClusterJob<'_>,
        indices: &[u32],
    ) -> Result<String, ClusterError> {
        let mut sbatch = Command::new("sbatch");
        sbatch.arg("--parsable").args(self.options(job));
        if job.shards.is_some() {
            sbatch.arg(format!("--array={}", index_list(indices)));
        }
        sbatch.arg(script);
        let out = run(&mut sbatch, "sbatch")?;
        // `--parsable` prints `ID` or `ID;CLUSTER`.
        let id = out.split(';').next().unwrap_or("").trim().to_string();
        if id.is_empty() {
            return Err(ClusterError::Command {
                command: "sbatch --parsable".into(),
                stderr: "it printed no job id".into(),
            });
        }
        self.alive.lock().expect("not poisoned").insert(id.clone());
        Ok(id)
    }

    /// Polls job `id` until each of `indices` has ended; how each ended. `state` is kept
    /// current (and saved) as the counts change.
    fn wait(
        &self,
        id: &str,
        indices: &[u32],
        job: &ClusterJob<'_>,
        state: &mut JobState,
        progress: &dyn Progress,
    ) -> Result<BTreeMap<u32, Ended>, ClusterError> {
        let mut ended: BTreeMap<u32, Ended> = BTreeMap::new();
        let mut seen: BTreeSet<u32> = BTreeSet::new();
        let (done_before, failed_before) = (state.done, state.failed);
        let log = |index| log_path(&job.dir, id, index, job.shards.is_some());
        loop {
            // `None`: Slurm forgot the job (records are purged `MinJobAge` after it ends); what
            // was not seen ending is lost, and retried.
            let tasks = query(id)?;
            let (mut running, mut pending) = (0, 0);
            for &index in indices {
                if ended.contains_key(&index) {
                    continue;
                }
                match tasks.as_ref().map(|t| t.get(&index)) {
                    Some(Some(task)) if task.is_over() => {
                        if task.ok() {
                            progress.advance(1);
                        }
                        ended.insert(
                            index,
                            Ended {
                                task: task.clone(),
                                log: log(index),
                            },
                        );
                    }
                    Some(Some(task)) if task.state == "PENDING" => {
                        seen.insert(index);
                        pending += 1;
                    }
                    Some(Some(_)) => {
                        seen.insert(index);
                        running += 1;
                    }
                    // Listed before, gone now: a pending task cancelled (`scancel ID_3`) leaves
                    // the array's pending range without a record of its own.
                    Some(None) if seen.contains(&index) => {
                        let task = TaskLine {
                            state: "CANCELLED".into(),
                            exit: "none (removed while pending)".into(),
                        };
                        ended.insert(
                            index,
                            Ended {
                                task,
                                log: log(index),
                            },
                        );
                    }
                    // Not listed yet: waiting.
                    Some(None) => pending += 1,
                    None => {
                        let task = TaskLine {
                            state: "LOST".into(),
                            exit: "unknown".into(),
                        };
                        ended.insert(
                            index,
                            Ended {
                                task,
                                log: log(index),
                            },
                        );
                    }
                }
            }
            let ok = ended.values().filter(|e| e.task.ok()).count() as u32;
            let next = JobState {
                done: done_before + ok,
                failed: failed_before + ended.len() as u32 - ok,
                running,
                pending,
                ..state.clone()
            };
            if next != *state {
                // Only a view for `pipeline status`: a failed write must not stop the job.
                let _ = next.save(&job.dir);
                *state = next;
            }
            if ended.len() == indices.len() {
                self.alive.lock().expect("not poisoned").remove(id);
                return Ok(ended);
            }
            std::thread::sleep(self.poll);
        }
    }
}

impl Executor for Slurm {
    fn kind(&self) -> ExecutorKind {
        ExecutorKind::Slurm
    }

    fn run(
        &self,
        job: &ClusterJob<'_>,
        progress: &dyn Progress,
    ) -> Result<Dispatched, SharedError> {
        Ok(self.run_job(job, progress)?)
    }
}

impl Slurm {
    fn run_job(
        &self,
        job: &ClusterJob<'_>,
        progress: &dyn Progress,
    ) -> Result<Dispatched, ClusterError> {
        let started = Instant::now();
        let script = job.dir.join("task.sbatch");
        std::fs::write(&script, self.script(job)).map_err(|source| ClusterError::Write {
            path: script.clone(),
            source,
        })?;
        let tasks = job.tasks();
        let mut dispatched = Dispatched {
            executor: "slurm".into(),
            tasks,
            ..Dispatched::default()
        };
        let mut state = JobState {
            stage: job.stage.to_string(),
            executor: "slurm".into(),
            tasks,
            pending: tasks,
            logs: job.dir.clone(),
            driver_pid: std::process::id(),
            ..JobState::default()
        };
        progress.start("tasks", u64::from(tasks));
        let mut attempts: BTreeMap<u32, u32> = (0..tasks).map(|i| (i, 1)).collect();
        let mut todo: Vec<u32> = (0..tasks).collect();
        loop {
            let id = self.submit(&script, job, &todo)?;
            dispatched.jobs.push(id.clone());
            state.jobs.push(id.clone());
            let _ = state.save(&job.dir);
            let ended = self.wait(&id, &todo, job, &mut state, progress)?;
            let failed: Vec<(u32, Ended)> =
                ended.into_iter().filter(|(_, e)| !e.task.ok()).collect();
            if failed.is_empty() {
                break;
            }
            let given_up: Vec<&(u32, Ended)> = failed
                .iter()
                .filter(|(index, _)| attempts[index] > self.retries)
                .collect();
            if !given_up.is_empty() {
                state.ended = true;
                let _ = state.save(&job.dir);
                return Err(ClusterError::TasksFailed {
                    stage: job.stage.to_string(),
                    failed: given_up.len(),
                    tasks,
                    attempts: self.retries + 1,
                    details: given_up
                        .iter()
                        .map(|(index, e)| {
                            format!(
                                "task {index}: {} (exit {}), log `{}`",
                                e.task.state,
                                e.task.exit,
                                e.log.display()
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("; "),
                    logs: job.dir.clone(),
                });
            }
            todo = failed.iter().map(|(index, _)| *index).collect();
            for index in &todo {
                *attempts.get_mut(index).expect("every index has attempts") += 1;
                dispatched.retried.push(*index);
                progress.message(&format!("task {index} failed; resubmitting it alone"));
            }
        }
        state.ended = true;
        let _ = state.save(&job.dir);
        dispatched.seconds = started.elapsed().as_secs_f64();
        Ok(dispatched)
    }
}

/// How one task ended, and where its log is.
#[derive(Debug, Clone)]
struct Ended {
    task: TaskLine,
    log: PathBuf,
}

/// One task as `scontrol` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TaskLine {
    pub(crate) state: String,
    pub(crate) exit: String,
}

impl TaskLine {
    fn is_over(&self) -> bool {
        !matches!(
            self.state.as_str(),
            "PENDING"
                | "RUNNING"
                | "CONFIGURING"
                | "COMPLETING"
                | "SUSPENDED"
                | "REQUEUED"
                | "RESIZING"
                | "SIGNALING"
                | "STAGE_OUT"
                | "REQUEUE_HOLD"
                | "REQUEUE_FED"
        )
    }

    fn ok(&self) -> bool {
        self.state == "COMPLETED" && self.exit == "0:0"
    }
}

/// The tasks of job `id` by index (`None`: Slurm no longer knows the job).
fn query(id: &str) -> Result<Option<BTreeMap<u32, TaskLine>>, ClusterError> {
    let out = Command::new("scontrol")
        .args(["-o", "show", "job", id])
        .output()
        .map_err(|source| ClusterError::Missing {
            program: "scontrol".into(),
            what: "Slurm",
            source,
        })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("Invalid job id") {
            return Ok(None);
        }
        return Err(ClusterError::Command {
            command: format!("scontrol -o show job {id}"),
            stderr: stderr.trim().to_string(),
        });
    }
    Ok(Some(parse_tasks(&stdout)))
}

/// `scontrol -o show job` output, a line per task (pending tasks of an array share a line,
/// `ArrayTaskId=2-3`), by task index; a job that is not an array is task 0.
pub(crate) fn parse_tasks(text: &str) -> BTreeMap<u32, TaskLine> {
    let mut tasks = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|word| word.strip_prefix(name)?.strip_prefix('='))
                .map(str::to_string)
        };
        let task = TaskLine {
            state: field("JobState").unwrap_or_default(),
            exit: field("ExitCode").unwrap_or_default(),
        };
        let indices = match field("ArrayTaskId") {
            Some(list) => parse_index_list(&list),
            None => vec![0],
        };
        for index in indices {
            tasks.insert(index, task.clone());
        }
    }
    tasks
}

/// `0-3`, `1,3`, `0-9%2` -> the indices.
fn parse_index_list(list: &str) -> Vec<u32> {
    let list = list.split('%').next().unwrap_or("");
    let mut indices = Vec::new();
    for part in list.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>()) {
                    indices.extend(a..=b);
                }
            }
            None => indices.extend(part.parse::<u32>().ok()),
        }
    }
    indices
}

/// `0,1,2,5` -> `0-2,5`.
pub(crate) fn index_list(indices: &[u32]) -> String {
    let mut sorted = indices.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    parts.join(",")
}

/// Where Slurm writes the log of task `index` of job `id` (see the script's `--output`).
fn log_path(dir: &Path, id: &str, index: u32, array: bool) -> PathBuf {
    if array {
        dir.join(format!("task-{id}_{index}.log"))
    } else {
        dir.join(format!("job-{id}.log"))
    }
}

/// Runs a Slurm command; its stdout, or what it said when it failed.
fn run(command: &mut Command, program: &str) -> Result<String, ClusterError> {
    let out = command.output().map_err(|source| ClusterError::Missing {
        program: program.into(),
        what: "Slurm",
        source,
    })?;
    if !out.status.success() {
        return Err(ClusterError::Command {
            command: format!("{command:?}"),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `--option=` and a path as one argument, whatever bytes the path has.
fn joined(option: &str, path: &std::ffi::OsStr) -> std::ffi::OsString {
    let mut arg = std::ffi::OsString::from(option);
    arg.push(path);
    arg
}
