//! Owns why the shared cache could not be used, with an object store's errors classified into
//! what a person can fix: the URL, the credentials, the bucket, the server, or a damaged object.

/// Why the shared cache could not be used. The first five are found before anything runs.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The URL is not one we can open.
    #[error(
        "`{0}` is not a remote: use s3://BUCKET/PREFIX, gs://BUCKET/PREFIX, az://CONTAINER/PREFIX, file:///DIR or a directory path"
    )]
    BadUrl(String),
    /// The store could not be set up from the URL and the environment.
    #[error("the remote `{url}` cannot be opened: {detail}")]
    Config {
        /// The URL.
        url: String,
        /// The store's complaint.
        detail: String,
    },
    /// A directory remote that is not there (only `push` makes one).
    #[error(
        "the remote directory `{url}` does not exist: fix the path, or `pipeline push --remote {url}` to start a shared cache there"
    )]
    NoDirectory {
        /// The URL.
        url: String,
    },
    /// Credentials written into the URL.
    #[error(
        "`{url}` has credentials in it, which would end up in logs, shell history and emitted manifests: remove them from the URL and set {variables}"
    )]
    CredentialsInUrl {
        /// The URL with its userinfo masked.
        url: String,
        /// Where credentials go instead.
        variables: &'static str,
    },
    /// PIPELINE_REMOTE_TIMEOUT is not a number of seconds in its range.
    #[error(
        "PIPELINE_REMOTE_TIMEOUT is `{value}`: it takes seconds from 0.1 to 86400 (a day), e.g. PIPELINE_REMOTE_TIMEOUT=120"
    )]
    BadTimeout {
        /// The value (its first 40 characters).
        value: String,
    },
    /// No credentials anywhere.
    #[error("no credentials for `{url}`: set {variables}{profile_note}")]
    NoCredentials {
        /// The URL.
        url: String,
        /// Where this scheme's credentials come from.
        variables: &'static str,
        /// For S3: which profile was looked at.
        profile_note: String,
    },
    /// The server refused the credentials.
    #[error("the remote `{url}` refused the credentials ({detail}): check {variables}")]
    Refused {
        /// Where this scheme's credentials come from.
        variables: &'static str,
        /// The URL.
        url: String,
        /// What the server said.
        detail: String,
    },
    /// The bucket is not there.
    #[error(
        "the bucket of `{url}` does not exist: create it (`aws s3 mb s3://BUCKET`) or fix the URL"
    )]
    NoBucket {
        /// The URL.
        url: String,
    },
    /// The server did not answer (down, or slower than PIPELINE_REMOTE_TIMEOUT).
    #[error(
        "the remote `{url}` cannot be reached ({detail}); is the server up? (a slow one: raise PIPELINE_REMOTE_TIMEOUT, in seconds)"
    )]
    Unreachable {
        /// The URL.
        url: String,
        /// The cause.
        detail: String,
    },
    /// A remote object is not what its name or record says.
    #[error("`{object}` ({what}) does not match its blake3: refused")]
    Corrupt {
        /// The object.
        object: String,
        /// What refers to it.
        what: String,
    },
    /// A record is not readable.
    #[error("`{object}` is not a readable entry record: {detail}")]
    BadRecord {
        /// The object.
        object: String,
        /// Why.
        detail: String,
    },
    /// A record another version of the pipeline wrote: not damage, and never deleted.
    #[error("`{object}` is a record this version does not read ({detail}); it is left as it is")]
    OtherFormat {
        /// The object.
        object: String,
        /// Which formats.
        detail: String,
    },
    /// A local file to send does not match the local cache's manifest.
    #[error(
        "the local cache file `{path}` does not match its manifest, so it is not pushed; run `pipeline verify --repair`"
    )]
    LocalCorrupt {
        /// The file.
        path: String,
    },
    /// A local entry to send is missing or incomplete.
    #[error("stage `{stage}` has no complete local entry {key}: run it first")]
    NotLocal {
        /// The stage.
        stage: String,
        /// Its key.
        key: String,
    },
    /// Another transfer failure.
    #[error("{object}: {detail}")]
    Transfer {
        /// The object or file.
        object: String,
        /// What went wrong.
        detail: String,
    },
}

impl RemoteError {
    pub(crate) fn config(url: &str, err: impl std::fmt::Display) -> Self {
        Self::Config {
            url: url.to_string(),
            detail: err.to_string(),
        }
    }

    /// Whether this is found before anything runs and means the remote cannot be used at all
    /// (the command exits 2 on it).
    pub fn is_setup(&self) -> bool {
        matches!(
            self,
            Self::BadUrl(_)
                | Self::NoDirectory { .. }
                | Self::CredentialsInUrl { .. }
                | Self::BadTimeout { .. }
                | Self::Config { .. }
                | Self::NoCredentials { .. }
                | Self::Refused { .. }
                | Self::NoBucket { .. }
                | Self::Unreachable { .. }
        )
    }

    /// An object store error on `object`, classified: refused credentials, no bucket, no answer,
    /// or anything else.
    pub(crate) fn from_store(url: &str, object: &str, err: object_store::Error) -> Self {
        let mut detail = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(cause) = source {
            detail.push_str(": ");
            detail.push_str(&cause.to_string());
            source = cause.source();
        }
        let url = url.to_string();
        let has = |needle: &str| detail.contains(needle);
        if matches!(
            err,
            object_store::Error::Unauthenticated { .. }
                | object_store::Error::PermissionDenied { .. }
        ) || has("InvalidAccessKeyId")
            || has("SignatureDoesNotMatch")
            || has("403 Forbidden")
            || has("token request")
            || has("Error getting credential")
        {
            Self::Refused {
                variables: credential_hint(url.split("://").next().unwrap_or("")),
                url,
                detail: short(&detail),
            }
        } else if has("NoSuchBucket") {
            Self::NoBucket { url }
        } else if has("error sending request")
            || has("timed out")
            || has("Connection refused")
            || has("connection closed")
            || has("operation timed out")
        {
            Self::Unreachable {
                url,
                detail: short(&detail),
            }
        } else {
            Self::Transfer {
                object: object.to_string(),
                detail: short(&detail),
            }
        }
    }
}

/// The last, most specific parts of a long error chain.
fn short(detail: &str) -> String {
    const MAX: usize = 300;
    if detail.len() <= MAX {
        return detail.to_string();
    }
    let mut start = detail.len() - MAX;
    while !detail.is_char_boundary(start) {
        start += 1;
    }
    format!("...{}", &detail[start..])
}

/// Where credentials for a scheme come from, for messages.
pub fn credential_hint(scheme: &str) -> &'static str {
    match scheme {
        "gs" => {
            "GOOGLE_SERVICE_ACCOUNT (a service account key file) or GOOGLE_APPLICATION_CREDENTIALS"
        }
        "az" | "abfs" | "abfss" => {
            "AZURE_STORAGE_ACCOUNT_NAME with AZURE_STORAGE_ACCOUNT_KEY (or AZURE_STORAGE_SAS_KEY)"
        }
        _ => {
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (with AWS_ENDPOINT for a server other than AWS), or AWS_PROFILE"
        }
    }
}
