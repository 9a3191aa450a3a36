//! Owns the command line of a cluster task: the `pipeline` binary, the project it runs in, the
//! shared cache, and what every task repeats of the driver's command line.

use std::path::PathBuf;

use pipeline_engine::cluster::ClusterJob;

/// How a task is started; the same for every stage of a run.
#[derive(Debug, Clone)]
pub struct TaskCommand {
    /// The `pipeline` binary (the driver's own, by default: it must be at that path on the
    /// nodes, or on `PATH` in an image).
    pub program: PathBuf,
    /// The project directory: a task's working directory.
    pub project: PathBuf,
    /// The pipeline file, relative to `project` or absolute.
    pub file: PathBuf,
    /// The shared cache's URL, absolute (a directory remote must be one every node sees).
    pub remote: String,
    /// `-S STAGE.PARAM=VALUE` overrides of the driver's run: the tasks key the same plan.
    pub overrides: Vec<String>,
}

impl TaskCommand {
    /// The arguments after the program for one task of `job` (the caller adds `--cache-dir`);
    /// a shard's index is read from the environment variable `index_var`
    /// (`SLURM_ARRAY_TASK_ID`, `JOB_COMPLETION_INDEX`).
    pub fn args(&self, job: &ClusterJob<'_>, index_var: &str) -> Vec<String> {
        let mut args = vec![
            "--file".to_string(),
            self.file.display().to_string(),
            "task".into(),
            job.stage.to_string(),
            "--key".into(),
            job.key.to_string(),
            "--remote".into(),
            self.remote.clone(),
        ];
        for set in &self.overrides {
            args.push("-S".into());
            args.push(set.clone());
        }
        if let Some(shards) = job.shards {
            args.extend([
                "--shards".into(),
                shards.to_string(),
                "--shard-index-from".into(),
                index_var.to_string(),
            ]);
        }
        args
    }
}

/// `words` as one shell line, each quoted where it needs to be.
pub(crate) fn shell_line(words: &[String]) -> String {
    words
        .iter()
        .map(|w| match shlex::try_quote(w) {
            Ok(quoted) => quoted.into_owned(),
            // A NUL byte cannot reach a shell at all; no path or key has one.
            Err(_) => w.replace('\0', ""),
        })
        .collect::<Vec<_>>()
        .join(" ")
}
