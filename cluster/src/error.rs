//! Owns [`ClusterError`]: what went wrong talking to a cluster, naming the command or the tasks.

use std::path::PathBuf;

/// Why a cluster job could not be run to its end.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A cluster command could not be started at all (not installed, not on `PATH`).
    #[error(
        "`{program}` could not be started ({source}); is {what} installed and on PATH on this machine?"
    )]
    Missing {
        /// `sbatch`, `kubectl`, ...
        program: String,
        /// The cluster it belongs to.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// A cluster command ran and failed.
    #[error("`{command}` failed: {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// What it said.
        stderr: String,
    },
    /// Tasks failed more often than the retry limit allows.
    #[error("{failed} of {tasks} task(s) of `{stage}` failed after {attempts} attempt(s) each: {details}; their logs: {}", logs.display())]
    TasksFailed {
        /// The stage.
        stage: String,
        /// How many failed for good.
        failed: usize,
        /// Tasks in the job.
        tasks: u32,
        /// Attempts each got.
        attempts: u32,
        /// `task 1: FAILED (exit 1), log task-12_1.log`, ...
        details: String,
        /// The folder of the logs.
        logs: PathBuf,
    },
    /// A file of the job (its script, its state) could not be written.
    #[error("`{}`: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `--emit DIR` names something that is not a folder.
    #[error("`--emit {}`: it is a file, and `--emit` writes its manifests into a folder: name a folder (made if missing)", .0.display())]
    EmitNotAFolder(PathBuf),
    /// A person's file has the name of a manifest `--emit` would write.
    #[error(
        "`{}` is in the way of an emitted manifest, and the pipeline did not put it there: it is left as it is\n  help: move it elsewhere (or delete it), or emit into another folder",
        .0.display()
    )]
    EmitForeign(PathBuf),
    /// Interrupted (Ctrl-C): the jobs were cancelled.
    #[error("interrupted; the cluster jobs were cancelled")]
    Interrupted,
}
