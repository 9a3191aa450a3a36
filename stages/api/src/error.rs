//! Why a stage failed: [`StageError`], and [`ResultExt::during`] to wrap a library's error with
//! what the stage was doing.

use std::error::Error as StdError;
use std::path::PathBuf;

/// Why a stage failed. Messages are lowercase and name files in backticks.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// Reading a file failed.
    #[error("cannot read `{}`: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Writing a file failed.
    #[error("cannot write `{}`: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A library (polars, burn, ...) failed while doing `context`.
    #[error("{context}: {source}")]
    Library {
        /// What the stage was doing.
        context: String,
        /// The library's error.
        source: Box<dyn StdError + Send + Sync>,
    },
    /// The input or params make the stage impossible to run.
    #[error("{0}")]
    Invalid(String),
}

impl StageError {
    /// An error about the input or params.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid(message.into())
    }

    /// Wraps a library error with what the stage was doing.
    pub fn library(
        context: impl Into<String>,
        source: impl Into<Box<dyn StdError + Send + Sync>>,
    ) -> Self {
        Self::Library {
            context: context.into(),
            source: source.into(),
        }
    }
}

/// Adds what the stage was doing to a library error: `result.during("reading `x`")?`.
pub trait ResultExt<T> {
    /// Wraps the error into [`StageError::Library`].
    fn during(self, context: impl Into<String>) -> Result<T, StageError>;
}

impl<T, E: Into<Box<dyn StdError + Send + Sync>>> ResultExt<T> for Result<T, E> {
    fn during(self, context: impl Into<String>) -> Result<T, StageError> {
        self.map_err(|err| StageError::library(context, err))
    }
}
