//! The stage contract: what the engine knows of a kind ([`KindInfo`], one `const` per kind), the
//! object-safe trait it calls ([`Stage`]), and the typed trait a kind implements ([`Kind`]), which
//! states its params' type once and gets [`Stage`] from a blanket impl.

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{ParamError, RunContext, RunSummary, StageContext, StageError, canonicalize_checked};

/// Everything static about a kind: its name, code version and the roles it binds. A kind states
/// it once, as `Kind::INFO`: `const INFO: KindInfo = KindInfo { inputs: &["movies"],
/// ..KindInfo::new(...) };`; the engine reads nothing else of it before it runs.
#[derive(Debug, Clone, Copy)]
pub struct KindInfo {
    /// The name used as `kind:` in `pipeline.yaml`.
    pub kind: &'static str,
    /// Bumped whenever the kind's output for the same inputs and params changes; enters the key.
    pub version: u32,
    /// One line for `pipeline dag` and error messages.
    pub describe: &'static str,
    /// Roles of upstream stage outputs the kind reads (`inputs:` in the YAML).
    pub inputs: &'static [&'static str],
    /// Input roles a pipeline may bind or leave out (the kind checks `ctx.inputs` for them).
    pub optional_inputs: &'static [&'static str],
    /// For each input role, the kinds whose output layout it reads (`("data", &["split",
    /// "embed"])`). The plan refuses any other binding before anything runs, so a `train` bound
    /// to a `train` is an error naming the line, not a missing file at run time. A role not
    /// listed takes any kind.
    pub input_kinds: &'static [(&'static str, &'static [&'static str])],
    /// Roles of workspace files or directories the kind reads (`files:` in the YAML).
    pub files: &'static [&'static str],
    /// File roles a pipeline may bind or leave out (the kind checks `ctx.files` for them).
    pub optional_files: &'static [&'static str],
    /// File roles that take a directory (`root` of `download`); every other file role takes a
    /// regular file. Checked when the plan is built.
    pub directories: &'static [&'static str],
    /// Params that tune how the stage runs but never what it makes (request concurrency, say).
    /// They reach the stage in its params but stay out of the cache key and the lock file, so
    /// changing one reruns nothing.
    pub knob_params: &'static [&'static str],
    /// Whether the kind remembers per-item failures across runs; `pipeline run --retry-failed`
    /// reruns such stages with [`StageContext::retry_failed`] set.
    pub remembers_failures: bool,
    /// Whether the kind's work is per item and honours [`StageContext::shard`]: run as shard
    /// `i` of `n`, it does only the items [`ItemShard::owns`] gives it and writes an output of
    /// those alone. A cluster executor fans such a stage out over `n` tasks; the whole stage,
    /// run afterwards on the driver, finds every item done in the shards' outputs (its earlier
    /// outputs and item cache) and assembles the output a local run makes.
    ///
    /// [`ItemShard::owns`]: crate::ItemShard::owns
    pub shardable: bool,
    /// The crates the kind's code depends on, with the versions Cargo.lock resolved them to when
    /// the binary was built (`[("image", "0.25.6"), ...]`). They enter the cache key, so a `cargo
    /// update` that changes a decoder reruns the stages that decode, and only those. Kinds get
    /// the list from [`locked_dependencies!`](crate::locked_dependencies) and the
    /// `pipeline-build` build script.
    pub dependencies: &'static [(&'static str, &'static str)],
}

impl KindInfo {
    /// A kind that binds nothing yet: fill in the roles with struct update syntax.
    pub const fn new(
        kind: &'static str,
        version: u32,
        describe: &'static str,
        dependencies: &'static [(&'static str, &'static str)],
    ) -> Self {
        Self {
            kind,
            version,
            describe,
            inputs: &[],
            optional_inputs: &[],
            input_kinds: &[],
            files: &[],
            optional_files: &[],
            directories: &[],
            knob_params: &[],
            remembers_failures: false,
            shardable: false,
            dependencies,
        }
    }
}

/// One kind of stage (`ingest`, `resize`, ...) as the engine calls it: registered by the binary,
/// held as `Arc<dyn Stage>`. Kinds implement [`Kind`] and get this from the blanket impl.
pub trait Stage: Send + Sync {
    /// The kind's static description.
    fn info(&self) -> &'static KindInfo;
    /// Validates raw params and returns them in canonical form: every field, defaults filled in.
    /// The canonical form, less [`KindInfo::knob_params`], is what enters the cache key.
    fn canonical_params(&self, raw: &serde_json::Value) -> Result<serde_json::Value, ParamError>;
    /// The optional file roles that these canonical params make required, each with why
    /// (`weights` for an architecture that starts from pretrained weights). The plan checks them
    /// with the file's own roles, so a missing one fails before anything runs. Default: none.
    fn required_files(&self, params: &serde_json::Value) -> Vec<RequiredFile> {
        let _ = params;
        Vec::new()
    }
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

/// An optional file role that a stage's params make required.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequiredFile {
    /// The role, one of [`KindInfo::optional_files`].
    pub role: &'static str,
    /// Why these params need it, and what to give: shown with the missing role.
    pub why: String,
}

/// A kind of stage with typed params: the one trait a stage crate implements.
pub trait Kind: Send + Sync {
    /// The params struct. Use `#[serde(deny_unknown_fields, default)]` so typos are errors and
    /// omitted keys take their documented defaults.
    type Params: Serialize + DeserializeOwned + Default;
    /// The kind's static description: `const INFO: KindInfo = KindInfo { inputs: &["movies"],
    /// ..KindInfo::new(...) };`.
    const INFO: KindInfo;
    /// What the engine reads: [`Kind::INFO`]. Only a kind whose values describe themselves
    /// differently (the engine's test kinds) overrides it.
    fn info(&self) -> &'static KindInfo {
        &Self::INFO
    }
    /// Checks serde cannot express (ranges, sums), run before params are accepted; name the
    /// offending key with [`ParamError::at`].
    fn check(params: &Self::Params) -> Result<(), ParamError> {
        let _ = params;
        Ok(())
    }
    /// See [`Stage::required_files`].
    fn required_files(params: &Self::Params) -> Vec<RequiredFile> {
        let _ = params;
        Vec::new()
    }
    /// Does the work with the checked params, writing outputs below `ctx.out_dir`.
    fn run(&self, ctx: &StageContext<'_>, params: Self::Params) -> Result<RunSummary, StageError>;
    /// See [`Stage::present`].
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

impl<K: Kind> Stage for K {
    fn info(&self) -> &'static KindInfo {
        Kind::info(self)
    }
    fn canonical_params(&self, raw: &serde_json::Value) -> Result<serde_json::Value, ParamError> {
        canonicalize_checked::<K::Params>(raw, K::check)
    }
    fn required_files(&self, params: &serde_json::Value) -> Vec<RequiredFile> {
        // Canonical params always read back; ones that do not need nothing the plan can check.
        serde_json::from_value::<K::Params>(params.clone())
            .map(|typed| K::required_files(&typed))
            .unwrap_or_default()
    }
    fn run(&self, ctx: &StageContext<'_>) -> Result<RunSummary, StageError> {
        let params = ctx.params::<K::Params>()?;
        Kind::run(self, ctx, params)
    }
    fn present(
        &self,
        published: &Path,
        run: &RunContext,
        previous: Option<&Path>,
    ) -> Result<(), StageError> {
        Kind::present(self, published, run, previous)
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
