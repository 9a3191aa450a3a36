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
use object_store::{BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, RetryConfig};

use crate::error::{RemoteError, credential_hint};
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
    /// The URL as given, for messages (never with a userinfo part: those are refused).
    pub url: String,
    /// The directory, for a directory remote: its objects are read only when they are regular
    /// files (a FIFO there would hang a read past any timeout).
    dir: Option<std::path::PathBuf>,
}

/// Whether opening a directory remote may create it: only `push` does (and says so); every
/// other command treats a missing directory as a typo in the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// A missing directory is an error.
    Refuse,
    /// A missing directory is made.
    Create,
}

impl Location {
    /// Opens `url`. Nothing is contacted yet (see [`crate::Remote::check`]); what is checked here
    /// is the URL and that credentials are there at all.
    pub fn open(url: &str, missing: Missing) -> Result<Self, RemoteError> {
        let parsed = url::Url::parse(url).ok();
        if let Some(parsed) = &parsed
            && (!parsed.username().is_empty() || parsed.password().is_some())
        {
            return Err(RemoteError::CredentialsInUrl {
                url: redacted(url),
                variables: credential_hint(parsed.scheme()),
            });
        }
        timeout()?;
        // `file:///DIR` and plain paths: one reading of what names a directory (`directory_of`).
        let dir = directory_of(url);
        let scheme = parsed.as_ref().map(|u| u.scheme()).unwrap_or("");
        let (store, prefix): (Arc<dyn ObjectStore>, String) = match (scheme, &parsed) {
            _ if dir.is_some() => {
                let path = dir.as_deref().expect("matched");
                (Arc::new(local(url, path, missing)?), String::new())
            }
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
            _ => return Err(RemoteError::BadUrl(url.to_string())),
        };
        Ok(Self {
            store,
            prefix: ObjectPath::from(prefix.trim_matches('/')),
            url: url.to_string(),
            dir,
        })
    }

    /// Reads an object, as the store would; in a directory remote only a regular file is read
    /// (anything else there is refused by name instead of read forever).
    pub async fn get(&self, path: &ObjectPath) -> object_store::Result<object_store::GetResult> {
        if let Some(dir) = &self.dir {
            let file = dir.join(path.as_ref());
            if let Ok(meta) = std::fs::symlink_metadata(&file)
                && !meta.file_type().is_file()
            {
                return Err(object_store::Error::Generic {
                    store: "directory",
                    source: format!("`{}` is not a regular file", file.display()).into(),
                });
            }
        }
        self.store.get(path).await
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

/// The prefix a URL's path names, decoded (`my%20cache` is the folder `my cache`, as boto3 and
/// the AWS CLI store it; object_store encodes it again on the wire).
fn path_of(url: &url::Url) -> String {
    percent_encoding::percent_decode_str(url.path())
        .decode_utf8_lossy()
        .into_owned()
}

/// A directory as a remote (a shared file system, or tests): made only when `missing` says so.
fn local(
    url: &str,
    dir: &std::path::Path,
    missing: Missing,
) -> Result<LocalFileSystem, RemoteError> {
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(RemoteError::config(url, "it is not a directory"));
        }
        Err(_) if missing == Missing::Create => {
            std::fs::create_dir_all(dir).map_err(|e| RemoteError::config(url, e))?;
        }
        Err(_) => {
            return Err(RemoteError::NoDirectory {
                url: url.to_string(),
            });
        }
    }
    LocalFileSystem::new_with_prefix(dir).map_err(|e| RemoteError::config(url, e))
}

/// The directory a URL names, for a directory remote (`file:///DIR`, or a path: anything
/// without `scheme://`).
pub fn directory_of(url: &str) -> Option<std::path::PathBuf> {
    if let Ok(parsed) = url::Url::parse(url)
        && parsed.scheme() == "file"
    {
        return parsed.to_file_path().ok();
    }
    (!url.contains("://") && !url.is_empty()).then(|| std::path::PathBuf::from(url))
}

/// `url` with any userinfo (`user:secret@`) replaced by `***@`, for messages.
pub fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if !parsed.username().is_empty() || parsed.password().is_some() => {
            let _ = parsed.set_username("***");
            let _ = parsed.set_password(None);
            parsed.to_string()
        }
        _ => url.to_string(),
    }
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
                    variables: credential_hint("s3"),
                    profile_note: format!(
                        " naming a profile with keys in ~/.aws/credentials (profile `{}` has none)",
                        AwsProfile::name()
                    ),
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

/// The range [`TIMEOUT_VAR`] may take, in seconds.
pub const TIMEOUT_RANGE: (f64, f64) = (0.1, 86_400.0);

/// How long one request may take: [`TIMEOUT_VAR`] seconds (default 60, from 0.1 to a day);
/// connecting, 10 s at most.
pub fn timeout() -> Result<Duration, RemoteError> {
    let Ok(text) = std::env::var(TIMEOUT_VAR) else {
        return Ok(Duration::from_secs(60));
    };
    let (low, high) = TIMEOUT_RANGE;
    match text.trim().parse::<f64>() {
        Ok(secs) if (low..=high).contains(&secs) => Ok(Duration::from_secs_f64(secs)),
        _ => Err(RemoteError::BadTimeout {
            value: text.chars().take(40).collect(),
        }),
    }
}

/// The timeout, already checked by [`Location::open`].
fn checked_timeout() -> Duration {
    timeout().unwrap_or(Duration::from_secs(60))
}

fn client_options() -> ClientOptions {
    let timeout = checked_timeout();
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
        retry_timeout: checked_timeout() * 3,
    }
}
