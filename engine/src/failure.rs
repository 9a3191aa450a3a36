//! Why a stage's run failed: [`StageFailure`], kept typed with its cause chain from the worker
//! that ran the stage to the reporter, the run record and the console.

use std::sync::Arc;

use pipeline_api::StageError;

use crate::fsio::FsError;

/// Why a stage's run failed, kept typed (with its cause chain) from the worker to the reporter.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StageFailure {
    /// The stage returned an error.
    #[error(transparent)]
    Stage(Arc<StageError>),
    /// The stage panicked (a bug: the message is the panic's).
    #[error("the stage panicked: {0}")]
    Panicked(String),
    /// An input's cached output no longer matches its manifest.
    #[error("the cached output of `{input}` is corrupted ({}); run `pipeline verify --repair`, then `pipeline run` again", problems.join(", "))]
    CorruptInput {
        /// The upstream stage.
        input: String,
        /// What does not match.
        problems: Vec<String>,
    },
    /// The stage's cluster job failed, or what its tasks made could not be brought back (the
    /// message names the tasks and their logs).
    #[error("{0}")]
    Cluster(String),
    /// The engine itself failed around the stage (a bug; the message says where).
    #[error("{0}")]
    Engine(String),
    /// The cache could not take the output.
    #[error(transparent)]
    Cache(Arc<FsError>),
    /// Another stage with the same key failed in this run; this one is not tried again.
    #[error(
        "it is the same work as `{other}` (same kind, params and inputs), which failed: {cause}"
    )]
    SameWork {
        /// The stage that failed.
        other: String,
        /// Its failure.
        cause: Box<StageFailure>,
    },
}

impl StageFailure {
    /// A cache error.
    pub fn cache(err: FsError) -> Self {
        Self::Cache(Arc::new(err))
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
