//! Fetching one poster with the stage's limits: http(s) with timeouts, retries with backoff,
//! `Retry-After`, a size cap, redirects followed by hand (never into another scheme) and at most
//! `max_per_host` requests to one host; local files only inside the data root, regular ones only.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pipeline_api::StageError;

use crate::fetch_error::FetchError;
use crate::host_gate::{HostGate, host_of};
use crate::params::DownloadParams;
use crate::source::Source;

/// Fetches one source with the stage's limits.
pub struct Fetcher {
    agent: ureq::Agent,
    root: PathBuf,
    max_bytes: u64,
    retries: u32,
    backoff: Duration,
    max_retry_after: Duration,
    hosts: HostGate,
}

impl Fetcher {
    /// A fetcher whose local paths resolve against `root`.
    pub fn new(params: &DownloadParams, root: &Path) -> Result<Self, StageError> {
        let root = root.canonicalize().map_err(|source| StageError::Read {
            path: root.to_path_buf(),
            source,
        })?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(params.timeout_secs.max(1))))
            .http_status_as_error(false)
            // Redirects are followed by `get`, which checks each `Location` first.
            .max_redirects(0)
            .max_redirects_will_error(false)
            .user_agent(concat!("pipeline/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Ok(Self {
            agent,
            root,
            max_bytes: params.max_bytes,
            retries: params.retries,
            backoff: Duration::from_millis(params.backoff_ms),
            max_retry_after: Duration::from_secs(params.max_retry_after_secs),
            hosts: HostGate::new(params.max_per_host),
        })
    }

    /// The poster bytes, or why they could not be had.
    pub fn fetch(&self, source: Source<'_>) -> Result<Vec<u8>, FetchError> {
        match source {
            Source::Http(url) => self.fetch_http(url),
            Source::File(path) | Source::Path(path) => self.read_local(path),
            Source::Unsupported(scheme) => Err(FetchError::UnsupportedScheme(scheme.to_string())),
        }
    }

    fn read_local(&self, path: &str) -> Result<Vec<u8>, FetchError> {
        let candidate = Path::new(path);
        let full = if candidate.is_absolute() {
            candidate.to_path_buf()
        } else {
            self.root.join(candidate)
        };
        // Refuse `..` escapes before touching the file system, then symlink escapes after.
        if !lexically_normal(&full).starts_with(&self.root) {
            // No absolute path in the reason: the output must not depend on where the project lives.
            return Err(FetchError::OutsideRoot {
                path: path.to_string(),
                through_link: false,
            });
        }
        let resolved = full.canonicalize().map_err(|e| FetchError::NotFound {
            path: path.to_string(),
            cause: e.to_string(),
        })?;
        if !resolved.starts_with(&self.root) {
            return Err(FetchError::OutsideRoot {
                path: path.to_string(),
                through_link: true,
            });
        }
        read_capped(&resolved, self.max_bytes)
    }

    fn fetch_http(&self, url: &str) -> Result<Vec<u8>, FetchError> {
        let mut last = FetchError::TimedOut;
        // A server's `Retry-After` replaces the backoff before the next attempt.
        let mut asked_wait: Option<Duration> = None;
        let host = host_of(url);
        for attempt in 0..=self.retries {
            if attempt > 0 {
                let backoff = self
                    .backoff
                    .saturating_mul(2u32.saturating_pow(attempt - 1));
                std::thread::sleep(asked_wait.take().unwrap_or(backoff).max(backoff));
            }
            // Held for the request and its body, not across the waits between attempts.
            let _slot = self.hosts.enter(&host);
            // An outer error (a refused redirect, a loop) is final: not retried.
            match self.get(url)? {
                Ok(mut response) => {
                    let status = response.status();
                    if matches!(status.as_u16(), 429 | 503)
                        && let Some(wait) = retry_after(&response)
                    {
                        if wait > self.max_retry_after {
                            return Err(FetchError::RetryAfterTooLong {
                                status: status.as_u16(),
                                wait_secs: wait.as_secs(),
                                limit_secs: self.max_retry_after.as_secs(),
                            });
                        }
                        asked_wait = Some(wait);
                    }
                    if status.is_success() {
                        let declared = response
                            .headers()
                            .get("content-length")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.parse::<u64>().ok());
                        if declared.is_some_and(|n| n > self.max_bytes) {
                            return Err(FetchError::TooLarge(self.max_bytes));
                        }
                        match response
                            .body_mut()
                            .with_config()
                            .limit(self.max_bytes)
                            .read_to_vec()
                        {
                            Ok(bytes) => return Ok(bytes),
                            Err(ureq::Error::BodyExceedsLimit(_)) => {
                                return Err(FetchError::TooLarge(self.max_bytes));
                            }
                            Err(ureq::Error::Timeout(_)) => last = FetchError::BodyTimedOut,
                            Err(err) => last = FetchError::Transfer(err.to_string()),
                        }
                    } else if status.as_u16() == 429 || status.is_server_error() {
                        last = FetchError::Busy(status.as_u16());
                    } else {
                        return Err(FetchError::Status(status.as_u16()));
                    }
                }
                Err(ureq::Error::Timeout(_)) => last = FetchError::TimedOut,
                Err(err) => last = FetchError::Transfer(err.to_string()),
            }
        }
        Err(FetchError::Exhausted {
            last: Box::new(last),
            attempts: self.retries + 1,
        })
    }
}

/// Reads a local poster of at most `max_bytes`: a regular file only (a FIFO or a device would
/// block or never end, and the request timeout does not cover local reads).
pub fn read_capped(path: &Path, max_bytes: u64) -> Result<Vec<u8>, FetchError> {
    let unreadable = |e: std::io::Error| FetchError::Unreadable(e.to_string());
    let meta = std::fs::metadata(path).map_err(unreadable)?;
    if let Some(kind) = pipeline_api::odd_file_type(&meta) {
        return Err(FetchError::NotRegular(kind.to_string()));
    }
    if meta.len() > max_bytes {
        return Err(FetchError::TooLarge(max_bytes));
    }
    let file = std::fs::File::open(path).map_err(unreadable)?;
    let mut bytes = Vec::new();
    file.take(max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() as u64 > max_bytes {
        return Err(FetchError::TooLarge(max_bytes));
    }
    Ok(bytes)
}

/// Redirects followed before a poster fails as a loop.
const MAX_REDIRECTS: usize = 5;

impl Fetcher {
    /// GETs `url`, following up to [`MAX_REDIRECTS`] redirects itself: ureq would read a
    /// `Location` in another scheme (`file:///etc/passwd`) as a path on the same host. The inner
    /// result is the last response or ureq's error (retried as such); the outer error is final.
    #[allow(clippy::result_large_err)]
    fn get(
        &self,
        url: &str,
    ) -> Result<Result<ureq::http::Response<ureq::Body>, ureq::Error>, FetchError> {
        let mut current = url.to_string();
        for _ in 0..=MAX_REDIRECTS {
            let response = match self.agent.get(&current).call() {
                Ok(response) => response,
                Err(err) => return Ok(Err(err)),
            };
            let location = response
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok());
            match location {
                Some(location) if response.status().is_redirection() => {
                    current = redirect_target(&current, location)?;
                }
                _ => return Ok(Ok(response)),
            }
        }
        Err(FetchError::TooManyRedirects(MAX_REDIRECTS))
    }
}

/// Where a redirect from `base` to `location` leads: an http(s) URL, or why it is refused.
fn redirect_target(base: &str, location: &str) -> Result<String, FetchError> {
    let location = location.trim();
    let scheme = location
        .split_once(':')
        .map(|(scheme, _)| scheme)
        .filter(|s| {
            s.starts_with(|c: char| c.is_ascii_alphabetic())
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        });
    if let Some(scheme) = scheme {
        let lower = scheme.to_ascii_lowercase();
        return if lower == "http" || lower == "https" {
            Ok(location.to_string())
        } else {
            Err(FetchError::RedirectRefused(lower))
        };
    }
    let uri: ureq::http::Uri = base
        .parse()
        .map_err(|_| FetchError::BadRedirectBase(base.to_string()))?;
    let scheme = uri.scheme_str().unwrap_or("http");
    let authority = uri.authority().map_or("", |a| a.as_str());
    if let Some(network) = location.strip_prefix("//") {
        Ok(format!("{scheme}://{network}"))
    } else if location.starts_with('/') {
        Ok(format!("{scheme}://{authority}{location}"))
    } else {
        let dir = uri.path().rsplit_once('/').map_or("", |(dir, _)| dir);
        Ok(format!("{scheme}://{authority}{dir}/{location}"))
    }
}

/// The wait a `Retry-After` header asks for, in seconds (HTTP dates are not honoured: the backoff
/// applies).
fn retry_after<B>(response: &ureq::http::Response<B>) -> Option<Duration> {
    let value = response.headers().get("retry-after")?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// `path` with `.` and `..` components resolved without the file system.
fn lexically_normal(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_resolve_against_the_url_and_other_schemes_are_refused() {
        let base = "http://127.0.0.1:8080/posters/a.jpg?x=1";
        for (location, expected) in [
            ("https://cdn.example/b.jpg", "https://cdn.example/b.jpg"),
            ("/other/b.jpg", "http://127.0.0.1:8080/other/b.jpg"),
            ("b.jpg", "http://127.0.0.1:8080/posters/b.jpg"),
            ("//cdn.example/c.jpg", "http://cdn.example/c.jpg"),
        ] {
            assert_eq!(redirect_target(base, location).unwrap(), expected);
        }
        for location in [
            "file:///etc/passwd",
            "FTP://x/y",
            "data:image/png;base64,AA",
        ] {
            let err = redirect_target(base, location).unwrap_err().to_string();
            assert!(err.starts_with("refused: redirected to a `"), "{err}");
        }
    }

    impl Fetcher {
        fn fetch_source(&self, source: &str) -> Result<Vec<u8>, String> {
            self.fetch(Source::parse(source)).map_err(|e| e.to_string())
        }
    }

    #[test]
    fn local_paths_outside_the_root_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("a.jpg"), b"poster").unwrap();
        std::fs::write(dir.path().join("secret"), b"x").unwrap();
        let fetcher = Fetcher::new(&DownloadParams::default(), &root).unwrap();
        assert_eq!(fetcher.fetch_source("a.jpg").unwrap(), b"poster");
        let file_url = format!("file://{}", root.join("a.jpg").display());
        assert_eq!(fetcher.fetch_source(&file_url).unwrap(), b"poster");
        assert!(
            fetcher
                .fetch_source("../secret")
                .unwrap_err()
                .starts_with("refused")
        );
        let refused = fetcher.fetch_source("../../etc/passwd").unwrap_err();
        assert!(refused.starts_with("refused"), "{refused}");
        assert!(
            !refused.contains(&dir.path().display().to_string()),
            "the reason is part of the output, so it must not name where the project lives: {refused}"
        );
        assert!(
            fetcher
                .fetch_source("ftp://x/y")
                .unwrap_err()
                .starts_with("unsupported scheme")
        );
        assert!(
            fetcher
                .fetch_source("missing.jpg")
                .unwrap_err()
                .starts_with("file not found")
        );
    }

    #[test]
    fn oversized_local_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("big"), vec![0u8; 100]).unwrap();
        let params = DownloadParams {
            max_bytes: 10,
            ..DownloadParams::default()
        };
        let fetcher = Fetcher::new(&params, dir.path()).unwrap();
        assert!(
            fetcher
                .fetch_source("big")
                .unwrap_err()
                .starts_with("too large")
        );
    }
}
