//! Why a poster could not be had. The `Display` text is the reason persisted in the output
//! (`downloads.parquet`, `summary.json`): it names no absolute path, so the output does not depend
//! on where the project lives. [`FetchError::class`] is what failures are counted by.

use serde::{Deserialize, Serialize};

/// A failed fetch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", content = "detail", rename_all = "kebab-case")]
pub enum FetchError {
    /// A local path that leads outside the data root, by `..` or by a link.
    #[error("refused: `{path}` {} the data root (the stage's `files.root`)", if *through_link { "links outside" } else { "is outside" })]
    OutsideRoot {
        /// The path as the source gave it.
        path: String,
        /// Whether a symbolic link leads out (else `..`).
        through_link: bool,
    },
    /// A local file that does not exist.
    #[error("file not found: `{path}` ({cause})")]
    NotFound {
        /// The path as the source gave it.
        path: String,
        /// The operating system's words.
        cause: String,
    },
    /// A local path that is a FIFO, a device or a socket.
    #[error("not a regular file: it is {0}")]
    NotRegular(String),
    /// A local file that could not be read.
    #[error("unreadable: {0}")]
    Unreadable(String),
    /// More bytes than `max_bytes`, declared or read.
    #[error("too large: over {0} bytes")]
    TooLarge(u64),
    /// A URL scheme nothing fetches.
    #[error("unsupported scheme: `{0}` (only http, https, file and paths)")]
    UnsupportedScheme(String),
    /// A final HTTP status (4xx but 429).
    #[error("HTTP {0}")]
    Status(u16),
    /// A status worth retrying (429, 5xx), as the last attempt saw it.
    #[error("HTTP {0}")]
    Busy(u16),
    /// A `Retry-After` longer than `max_retry_after_secs`.
    #[error(
        "HTTP {status}: the server asked to retry after {wait_secs} s, over the {limit_secs} s limit (`max_retry_after_secs`)"
    )]
    RetryAfterTooLong {
        /// 429 or 503.
        status: u16,
        /// What the server asked for.
        wait_secs: u64,
        /// The limit.
        limit_secs: u64,
    },
    /// No response in time.
    #[error("timed out")]
    TimedOut,
    /// The body did not arrive in time.
    #[error("timed out while reading the body")]
    BodyTimedOut,
    /// The connection or transfer failed.
    #[error("transfer failed: {0}")]
    Transfer(String),
    /// A redirect to a scheme other than http(s).
    #[error(
        "refused: redirected to a `{0}:` URL; only http and https redirects are followed (not retried)"
    )]
    RedirectRefused(String),
    /// A redirect chain that does not end.
    #[error("too many redirects: a loop, or a chain over {0} hops (not retried)")]
    TooManyRedirects(usize),
    /// A redirect from a URL that cannot be parsed.
    #[error("redirected from an unreadable URL `{0}`")]
    BadRedirectBase(String),
    /// Every attempt failed; the last one's error.
    #[error("{last} (after {attempts} attempts)")]
    Exhausted {
        /// Why the last attempt failed.
        last: Box<FetchError>,
        /// Attempts made.
        attempts: u32,
    },
    /// The bytes are not an image (an HTML error page, a truncated file).
    #[error("{0}")]
    NotAnImage(String),
    /// The poster could not be written into the output.
    #[error("cannot store poster: {0}")]
    Store(String),
}

impl FetchError {
    /// What failures are counted by in `summary.json` and the run's lines: the kind of failure
    /// without the particulars (`HTTP 503`, `file not found`, `too large`), so `HTTP 503` and
    /// `HTTP 503 (after 3 attempts)` are one class.
    pub fn class(&self) -> String {
        match self {
            Self::OutsideRoot { .. } | Self::RedirectRefused(_) => "refused".into(),
            Self::NotFound { .. } => "file not found".into(),
            Self::NotRegular(_) => "not a regular file".into(),
            Self::Unreadable(_) => "unreadable".into(),
            Self::TooLarge(_) => "too large".into(),
            Self::UnsupportedScheme(_) => "unsupported scheme".into(),
            Self::Status(status) | Self::Busy(status) => format!("HTTP {status}"),
            Self::RetryAfterTooLong { status, .. } => format!("HTTP {status}"),
            Self::TimedOut | Self::BodyTimedOut => "timed out".into(),
            Self::Transfer(_) => "transfer failed".into(),
            Self::TooManyRedirects(_) => "too many redirects".into(),
            Self::BadRedirectBase(_) => "bad redirect".into(),
            Self::Exhausted { last, .. } => last.class(),
            Self::NotAnImage(reason) => pipeline_api::reason_class(reason),
            Self::Store(_) => "cannot store poster".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retried_failures_count_with_their_kind_and_read_as_before() {
        let retried = FetchError::Exhausted {
            last: Box::new(FetchError::Busy(503)),
            attempts: 3,
        };
        assert_eq!(retried.to_string(), "HTTP 503 (after 3 attempts)");
        assert_eq!(retried.class(), FetchError::Busy(503).class());
        assert_eq!(FetchError::Status(404).class(), "HTTP 404");
        let outside = FetchError::OutsideRoot {
            path: "../x".into(),
            through_link: false,
        };
        assert_eq!(
            outside.to_string(),
            "refused: `../x` is outside the data root (the stage's `files.root`)"
        );
        // Remembered across runs as JSON, and read back the same.
        let json = serde_json::to_string(&retried).unwrap();
        assert_eq!(serde_json::from_str::<FetchError>(&json).unwrap(), retried);
    }
}
