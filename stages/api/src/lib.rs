//! The contract between the pipeline engine and a stage kind.
//!
//! The engine knows stages only through [`Stage`]: a kind name, a code `VERSION`, the named inputs it
//! needs, how to canonicalise its params, and `run`. A stage writes everything it produces into
//! [`StageContext::out_dir`]; the engine hashes that directory, and publishes it only once the stage
//! has returned successfully. Stages report progress through [`Progress`] and never draw anything
//! themselves.

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// One kind of stage (`ingest`, `resize`, ...), registered with the engine by the binary.
pub trait Stage: Send + Sync {
    /// The name used as `kind:` in `pipeline.yaml`.
    fn kind(&self) -> &'static str;
    /// Bumped whenever the stage's output for the same inputs and params changes.
    fn version(&self) -> u32;
    /// One line for `pipeline dag` and error messages.
    fn describe(&self) -> &'static str;
    /// Roles of upstream stage outputs this kind reads (`inputs:` in the YAML).
    fn input_roles(&self) -> &'static [&'static str] {
        &[]
    }
    /// Input roles a pipeline may bind or leave out (the stage checks `ctx.inputs` for them).
    fn optional_input_roles(&self) -> &'static [&'static str] {
        &[]
    }
    /// For each input role, the kinds whose output layout it reads (`("data", &["split",
    /// "embed"])`). The plan refuses any other binding before anything runs, so a `train` bound
    /// to a `train` is an error naming the line, not a missing file at run time. A role not
    /// listed takes any kind.
    fn input_kinds(&self) -> &'static [(&'static str, &'static [&'static str])] {
        &[]
    }
    /// Whether the kind remembers per-item failures across runs; `pipeline run --retry-failed`
    /// reruns such stages with [`StageContext::retry_failed`] set.
    fn remembers_failures(&self) -> bool {
        false
    }
    /// Roles of workspace files or directories this kind reads (`files:` in the YAML).
    fn file_roles(&self) -> &'static [&'static str] {
        &[]
    }
    /// File roles a pipeline may bind or leave out (the stage checks `ctx.files` for them).
    fn optional_file_roles(&self) -> &'static [&'static str] {
        &[]
    }
    /// File roles that take a directory (`root` of `download`); every other file role takes a
    /// regular file. Checked when the plan is built.
    fn directory_roles(&self) -> &'static [&'static str] {
        &[]
    }
    /// Params that tune how the stage runs but never what it makes (request concurrency, say).
    /// They reach the stage in [`StageContext::params`] but stay out of the cache key and the
    /// lock file, so changing one reruns nothing.
    fn knob_params(&self) -> &'static [&'static str] {
        &[]
    }
    /// The crates this kind's code depends on, with the versions Cargo.lock resolved them to
    /// when the binary was built (`[("image", "0.25.6"), ...]`). They enter the cache key, so a
    /// `cargo update` that changes a decoder reruns the stages that decode, and only those.
    /// Kinds get the list from [`locked_dependencies!`] and the `pipeline-build` build script.
    fn dependencies(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }
    /// Validates raw params and returns them in canonical form: every field, defaults filled in.
    /// The canonical form, less [`Stage::knob_params`], is what enters the cache key.
    fn canonical_params(&self, raw: &serde_json::Value) -> Result<serde_json::Value, ParamError>;
    /// Does the work, writing outputs below `ctx.out_dir`.
    fn run(&self, ctx: &StageContext<'_>) -> Result<RunSummary, StageError>;
    /// Dresses a run's published copy of the output (`published`, a folder of its own) with what
    /// only the run knows: `evaluate` adds the params, timings and deltas against `previous`
    /// (the folder of the run published before) to its report. The cached output stays a pure
    /// function of inputs and params; only the copy changes. The default leaves it as it is.
    fn present(
        &self,
        published: &Path,
        run: &RunContext,
        previous: Option<&Path>,
    ) -> Result<(), StageError> {
        let _ = (published, run, previous);
        Ok(())
    }
}

/// The crate versions the `pipeline-build` build script found in Cargo.lock for the calling
/// crate: `fn dependencies(&self) -> &'static [(&'static str, &'static str)] {
/// pipeline_api::locked_dependencies!() }`.
#[macro_export]
macro_rules! locked_dependencies {
    () => {
        include!(concat!(env!("OUT_DIR"), "/locked_dependencies.rs"))
    };
}

/// The run a published copy came from; the engine writes it beside the copy as `run.json`.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct RunContext {
    /// The run's id (`20261201-164806`), also the copy's folder name.
    pub id: String,
    /// Unix time the run started.
    pub started_unix: u64,
    /// The `-S STAGE.PARAM=VALUE` overrides it ran with.
    pub overrides: Vec<String>,
    /// Stage -> kind and canonical params, every stage of the pipeline.
    pub stages: BTreeMap<String, StageParams>,
    /// What each stage did so far in this run, in the order they finished.
    pub timings: Vec<StageTiming>,
}

/// A stage's kind and params in [`RunContext::stages`].
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct StageParams {
    /// Its kind.
    pub kind: String,
    /// Its canonical params.
    pub params: serde_json::Value,
}

/// One stage's part in a run ([`RunContext::timings`]).
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct StageTiming {
    /// The stage.
    pub name: String,
    /// `ran` or `fresh`.
    pub action: String,
    /// Seconds it took.
    pub seconds: f64,
}

/// Seconds since the Unix epoch (0 on a clock set before it): the one clock reading that run
/// records, manifests and remembered download failures share.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Canonicalises params by round-tripping them through the stage's typed params struct.
///
/// Use `#[serde(deny_unknown_fields, default)]` on `P` so typos are errors and omitted keys take
/// their documented defaults.
pub fn canonicalize<P: DeserializeOwned + Serialize>(
    raw: &serde_json::Value,
) -> Result<serde_json::Value, ParamError> {
    canonicalize_checked::<P>(raw, |_| Ok(()))
}

/// [`canonicalize`], with checks that serde cannot express (ranges, sums) run on the typed params
/// before they are accepted; `check` names the offending key with [`ParamError::at`].
pub fn canonicalize_checked<P: DeserializeOwned + Serialize>(
    raw: &serde_json::Value,
    check: impl FnOnce(&P) -> Result<(), ParamError>,
) -> Result<serde_json::Value, ParamError> {
    let typed: P = serde_path_to_error::deserialize(raw)
        .map_err(|err| ParamError::at(err.path().to_string(), err.inner().to_string()))?;
    check(&typed)?;
    serde_json::to_value(&typed).map_err(|err| ParamError::at("", err.to_string()))
}

/// Checks that the numeric param at `key` lies in `range`, the range its kind documents (README
/// of the stage). Every numeric param has one: a value past it (`timeout_secs:
/// 18446744073709551615`) would overflow a clock or hang a run rather than fail it. `unit` follows
/// the bounds in the message (`" seconds"`, or `""`). NaN is in no range.
pub fn check_range<T>(
    key: &str,
    value: T,
    range: std::ops::RangeInclusive<T>,
    unit: &str,
) -> Result<(), ParamError>
where
    T: PartialOrd + std::fmt::Display,
{
    if range.contains(&value) {
        return Ok(());
    }
    Err(ParamError::at(
        key,
        format!(
            "`{key}` is {value}, outside its range: set it from {} to {}{unit}",
            range.start(),
            range.end()
        ),
    ))
}

/// A param that failed validation, with the key path inside `params:` (`.` when the whole map).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ParamError {
    /// Dotted path below `params`, e.g. `width`; `.` for the params map itself.
    pub path: String,
    /// What is wrong, as serde or the stage's own check said it.
    pub message: String,
}

impl ParamError {
    /// `message` about the param at `path` (`width`, `model.depth`).
    pub fn at(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// What a stage sees while it runs.
pub struct StageContext<'a> {
    /// The stage's name in `pipeline.yaml` (not its kind).
    pub name: &'a str,
    /// Canonical params, as produced by [`Stage::canonical_params`].
    pub params: &'a serde_json::Value,
    /// Role -> output directory of the upstream stage bound to it.
    pub inputs: &'a BTreeMap<String, PathBuf>,
    /// Role -> absolute path of the workspace file or directory bound to it.
    pub files: &'a BTreeMap<String, PathBuf>,
    /// An empty directory that becomes the stage's output once `run` returns `Ok`.
    pub out_dir: &'a Path,
    /// Worker threads the stage may use (a runtime knob, never part of the cache key).
    pub threads: usize,
    /// Where to report progress.
    pub progress: &'a dyn Progress,
    /// Per-item results kept across runs, so a stage reruns only the items that changed.
    pub items: &'a dyn ItemCache,
    /// `pipeline run --retry-failed`: attempt again the items that failed in earlier runs instead
    /// of reusing their remembered failure.
    pub retry_failed: bool,
    /// Output directories of this stage's earlier successful runs that are still in the cache,
    /// newest first (other keys: other params, inputs or code). A stage may reuse per-item work
    /// from them instead of redoing it; it must check that what it takes was made the same way
    /// (record that in its own output) and treat anything unreadable as absent. Empty under
    /// `pipeline run --no-reuse`.
    pub earlier_outputs: &'a [PathBuf],
    /// A directory for resumable state (checkpoints) that survives a crash or a kill: the engine
    /// keys it by the stage's cache key, so what a stage finds there was written by an earlier
    /// attempt with the same code, params and inputs. It is removed once the output is committed.
    /// A stage must still treat anything unreadable in it as absent.
    pub work_dir: &'a Path,
}

/// Per-item results shared across runs of every stage, addressed by keys the stage derives from
/// everything the item depends on (use [`item_key`]). An item is written once and never changes,
/// so a stage may trust what it reads back only after checking it (size, or a content hash).
pub trait ItemCache: Sync {
    /// The bytes stored under `key`, if any.
    fn get(&self, key: &str) -> Option<Vec<u8>>;
    /// Stores `bytes` under `key` (atomically: readers see all or nothing).
    fn put(&self, key: &str, bytes: &[u8]) -> Result<(), StageError>;
    /// Makes `dest` a copy of the item, a hard link where the file system allows; `false` if absent.
    fn link(&self, key: &str, dest: &Path) -> Result<bool, StageError>;
    /// Stores `bytes` under `key`, replacing what is there (atomically). For records that are
    /// meant to change, such as when an item last failed; everything else is write-once.
    fn replace(&self, key: &str, bytes: &[u8]) -> Result<(), StageError>;
}

/// A key for [`ItemCache`]: blake3 over the parts, each length-prefixed so parts cannot run together.
pub fn item_key(parts: &[&[u8]]) -> String {
    let mut hasher = blake3::Hasher::new();
    for part in parts {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hasher.finalize().to_hex().to_string()
}

/// The part of a per-item reason that items share, for counting by reason: everything before
/// the first `:` (`wrong number of fields: 7 (...)`, `HTTP 429: the server asked ...`).
pub fn reason_class(reason: &str) -> String {
    reason
        .split(':')
        .next()
        .unwrap_or(reason)
        .trim()
        .to_string()
}

/// An item cache that keeps nothing (unit tests).
pub struct NoItems;

impl ItemCache for NoItems {
    fn get(&self, _key: &str) -> Option<Vec<u8>> {
        None
    }
    fn put(&self, _key: &str, _bytes: &[u8]) -> Result<(), StageError> {
        Ok(())
    }
    fn link(&self, _key: &str, _dest: &Path) -> Result<bool, StageError> {
        Ok(false)
    }
    fn replace(&self, _key: &str, _bytes: &[u8]) -> Result<(), StageError> {
        Ok(())
    }
}

impl StageContext<'_> {
    /// The params deserialised into the stage's typed struct.
    pub fn params<P: DeserializeOwned>(&self) -> Result<P, StageError> {
        serde_json::from_value(self.params.clone())
            .map_err(|err| StageError::invalid(format!("params of `{}`: {err}", self.name)))
    }

    /// The output directory of the upstream stage bound to `role`.
    pub fn input(&self, role: &str) -> Result<&Path, StageError> {
        self.inputs.get(role).map(PathBuf::as_path).ok_or_else(|| {
            StageError::invalid(format!("stage `{}` has no input `{role}`", self.name))
        })
    }

    /// The workspace path bound to `role`.
    pub fn file(&self, role: &str) -> Result<&Path, StageError> {
        self.files.get(role).map(PathBuf::as_path).ok_or_else(|| {
            StageError::invalid(format!("stage `{}` has no file `{role}`", self.name))
        })
    }
}

/// Progress of one stage. Implementations must be cheap to call from many threads.
pub trait Progress: Sync {
    /// Starts (or restarts) a bounded task of `total` units, e.g. `("decode", 1200)`.
    fn start(&self, task: &str, total: u64);
    /// Advances the current task.
    fn advance(&self, units: u64);
    /// A one-line status, e.g. `epoch 3/10 train loss 0.231`.
    fn message(&self, message: &str);
    /// A line worth keeping in the log (what is about to be trained, a resumed checkpoint): printed
    /// above the bar rather than replacing its status.
    fn note(&self, line: &str) {
        self.message(line);
    }
}

/// Progress that goes nowhere (tests, non-interactive runs).
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _task: &str, _total: u64) {}
    fn advance(&self, _units: u64) {}
    fn message(&self, _message: &str) {}
}

/// What a stage tells a person after it ran: a few short lines (`1000 rows, 6 dropped: ...`).
#[derive(Debug, Default, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct RunSummary {
    /// Human-readable lines, most important first.
    pub lines: Vec<String>,
    /// When the output stops being current although nothing in its key changed (see
    /// [`RunSummary::expiring`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<Expiry>,
}

/// A point in time after which a cached output must be made again, and why.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Expiry {
    /// Unix time (seconds) from which the output is stale.
    pub at_unix: u64,
    /// What happens then, shown by `pipeline status` and `run --dry-run` (`3 failed downloads may be
    /// retried`).
    pub why: String,
}

impl RunSummary {
    /// A summary of the given lines.
    pub fn new(lines: impl IntoIterator<Item = String>) -> Self {
        Self {
            lines: lines.into_iter().collect(),
            expires: None,
        }
    }

    /// Marks the output stale from `at_unix` on, for a reason outside the cache key (time
    /// passing, such as failed downloads becoming due for a retry). The engine then reruns the
    /// stage under the same key; `why` is shown as the reason.
    pub fn expiring(mut self, at_unix: u64, why: impl Into<String>) -> Self {
        self.expires = Some(Expiry {
            at_unix,
            why: why.into(),
        });
        self
    }
}

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

/// What kind of file system object `meta` is, in words, when it is neither a regular file nor a
/// directory.
pub fn odd_file_type(meta: &std::fs::Metadata) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    let kind = meta.file_type();
    if kind.is_file() || kind.is_dir() {
        None
    } else if kind.is_fifo() {
        Some("a FIFO (named pipe)")
    } else if kind.is_char_device() {
        Some("a character device")
    } else if kind.is_block_device() {
        Some("a block device")
    } else if kind.is_socket() {
        Some("a socket")
    } else {
        Some("not a regular file")
    }
}

/// Reads a file, naming it in the error.
pub fn read_file(path: &Path) -> Result<Vec<u8>, StageError> {
    std::fs::read(path).map_err(|source| StageError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// The blake3 of a file's contents, as hex (what cache manifests record), naming the file in
/// the error.
pub fn file_digest(path: &Path) -> Result<String, StageError> {
    let mut hasher = blake3::Hasher::new();
    hasher
        .update_reader(
            std::fs::File::open(path).map_err(|source| StageError::Read {
                path: path.to_path_buf(),
                source,
            })?,
        )
        .map_err(|source| StageError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(hasher.finalize().to_hex().to_string())
}

/// Writes a file, naming it in the error.
pub fn write_file(path: &Path, bytes: impl AsRef<[u8]>) -> Result<(), StageError> {
    std::fs::write(path, bytes).map_err(|source| StageError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `value` as pretty JSON.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), StageError> {
    let text =
        serde_json::to_string_pretty(value).during(format!("serialising `{}`", path.display()))?;
    write_file(path, text + "\n")
}

/// Reads JSON written by [`write_json`].
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, StageError> {
    let bytes = read_file(path)?;
    serde_json::from_slice(&bytes).during(format!("parsing `{}`", path.display()))
}

/// Creates a directory and its parents, naming it in the error.
pub fn create_dir(path: &Path) -> Result<(), StageError> {
    std::fs::create_dir_all(path).map_err(|source| StageError::Write {
        path: path.to_path_buf(),
        source,
    })
}
