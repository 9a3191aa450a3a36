//! Owns where the shared cache is: the URL (`s3://bucket/prefix`, `gs://`, `az://`, `file://` or
//! a plain directory) and the object store it opens, with credentials from the environment or an
//! AWS profile, never from `pipeline.yaml`.

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};

use crate::error::RemoteError;
use crate::profile::AwsProfile;

/// The variable that names the remote when neither `--remote` nor `pipeline.yaml` does.
pub const REMOTE_VAR: &str = "PIPELINE_REMOTE";
/// Seconds one request may take before it is retried (default 60).
pub const TIMEOUT_VAR: &str = "PIPELINE_REMOTE_TIMEOUT";

/// An opened remote: the store and the prefix every object lives under.
pub struct Location {
    /// The store (a bucket, a container, a directory).
    pub store: Arc<dyn ObjectStore>,
    /// Every object of this cache lives below it.
    pub prefix: ObjectPath,
    /// The URL as given, for messages.
    pub url: String,
}

impl Location {
    /// Opens `url`. Nothing is contacted yet (see [`crate::Remote::check`]); what is checked here
    /// is the URL and that credentials are there at all.
    pub fn open(url: &str) -> Result<Self, RemoteError> {
        let parsed = url::Url::parse(url).ok();
        let scheme = parsed.as_ref().map(|u| u.scheme()).unwrap_or("");
        let (store, prefix): (Arc<dyn ObjectStore>, String) = match (scheme, &parsed) {
            ("s3" | "s3a", Some(parsed)) => (Arc::new(s3(url)?), path_of(parsed)),
            ("gs", Some(parsed)) => (
                Arc::new(
                    GoogleCloudStorageBuilder::from_env()
                        .with_url(url)
                        .with_client_options(client_options())
                        .with_retry(retry_config())
                        .build()
                        .map_err(|e| RemoteError::config(url, e))?,
                ),
                path_of(parsed),
            ),
            ("az" | "abfs" | "abfss", Some(parsed)) => (
                Arc::new(
                    MicrosoftAzureBuilder::from_env()
                        .with_url(url)
                        .with_client_options(client_options())
                        .with_retry(retry_config())
                        .build()
                        .map_err(|e| RemoteError::config(url, e))?,
                ),
                path_of(parsed),
            ),
            ("file", Some(parsed)) => {
                let dir = parsed
                    .to_file_path()
                    .map_err(|()| RemoteError::BadUrl(url.to_string()))?;
                (Arc::new(local(url, &dir)?), String::new())
            }
            _ if url.starts_with('/') || url.starts_with('.') => (
                Arc::new(local(url, std::path::Path::new(url))?),
                String::new(),
            ),
            _ => return Err(RemoteError::BadUrl(url.to_string())),
        };
        Ok(Self {
            store,
            prefix: ObjectPath::from(prefix.trim_matches('/')),
            url: url.to_string(),
        })
    }

    /// The path of `name` (`cas/<hash>`, `entries/<key>`) below the prefix.
    pub fn path(&self, name: &str) -> ObjectPath {
        if self.prefix.as_ref().is_empty() {
            ObjectPath::from(name)
        } else {
            ObjectPath::from(format!("{}/{name}", self.prefix))
        }
    }
}

fn path_of(url: &url::Url) -> String {
    url.path().to_string()
}

/// A directory as a remote (a shared file system, or tests): created if missing.
fn local(url: &str, dir: &std::path::Path) -> Result<LocalFileSystem, RemoteError> {
    std::fs::create_dir_all(dir).map_err(|e| RemoteError::config(url, e))?;
    LocalFileSystem::new_with_prefix(dir).map_err(|e| RemoteError::config(url, e))
}

/// S3 from the `AWS_*` variables, or else the profile in `AWS_PROFILE` (or `default`) of the
/// AWS shared credentials and config files.
fn s3(url: &str) -> Result<object_store::aws::AmazonS3, RemoteError> {
    let mut builder = AmazonS3Builder::from_env()
        .with_url(url)
        .with_client_options(client_options())
        .with_retry(retry_config());
    let has_key = std::env::var_os("AWS_ACCESS_KEY_ID").is_some();
    let profile = AwsProfile::load();
    if !has_key {
        match profile.as_ref().and_then(|p| p.credentials()) {
            Some((id, secret, token)) => {
                builder = builder
                    .with_access_key_id(id)
                    .with_secret_access_key(secret);
                if let Some(token) = token {
                    builder = builder.with_token(token);
                }
            }
            None if !has_other_credential_source() => {
                return Err(RemoteError::NoCredentials {
                    url: url.to_string(),
                    profile: AwsProfile::name(),
                });
            }
            None => {}
        }
    }
    if let Some(profile) = &profile {
        if std::env::var_os("AWS_DEFAULT_REGION").is_none()
            && std::env::var_os("AWS_REGION").is_none()
            && let Some(region) = profile.get("region")
        {
            builder = builder.with_region(region);
        }
        if ["AWS_ENDPOINT", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"]
            .iter()
            .all(|v| std::env::var_os(v).is_none())
            && let Some(endpoint) = profile.get("endpoint_url")
        {
            builder = builder
                .with_allow_http(endpoint.starts_with("http://"))
                .with_endpoint(endpoint);
        }
    }
    // A plain-HTTP endpoint (a local MinIO or moto) is what the person asked for by naming it.
    let endpoint = ["AWS_ENDPOINT", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"]
        .iter()
        .find_map(|v| std::env::var(v).ok());
    if endpoint.is_some_and(|e| e.starts_with("http://")) {
        builder = builder.with_allow_http(true);
    }
    builder.build().map_err(|e| RemoteError::config(url, e))
}

/// Credentials that come from somewhere other than keys: a web identity token, a container's
/// role, or an instance's metadata service (all of which object_store asks itself).
fn has_other_credential_source() -> bool {
    [
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_EC2_METADATA",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some())
}

/// How long one request may take: [`TIMEOUT_VAR`] seconds (default 60); connecting, 10 s at most.
fn timeout() -> Duration {
    let secs = std::env::var(TIMEOUT_VAR)
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .unwrap_or(60.0);
    Duration::from_secs_f64(secs)
}

fn client_options() -> ClientOptions {
    let timeout = timeout();
    ClientOptions::new()
        .with_timeout(timeout)
        .with_connect_timeout(timeout.min(Duration::from_secs(10)))
}

/// Retries with exponential backoff: 4 more tries, at most three request timeouts in all.
fn retry_config() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            base: 2.0,
        },
        max_retries: 4,
        retry_timeout: timeout() * 3,
    }
}
