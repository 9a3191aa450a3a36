//! The contract between the pipeline engine and a stage kind.
//!
//! The engine knows stages only through [`Stage`]: a [`KindInfo`] (kind name, code version, the
//! roles it binds), how to canonicalise its params, and `run`. A kind implements the typed
//! [`Kind`] and gets [`Stage`] from a blanket impl. A stage writes everything it produces into
//! [`StageContext::out_dir`]; the engine hashes that directory, and publishes it only once the
//! stage has returned successfully. Stages report progress through [`Progress`] and never draw
//! anything themselves.
//!
//! What lives where:
//! - `kind`: [`KindInfo`], [`Stage`], [`Kind`] and [`locked_dependencies!`].
//! - `params`: canonical params and their checks ([`canonicalize_checked`], [`check_range`]).
//! - `context`: [`StageContext`] and the per-item cache ([`ItemCache`], [`item_key`]).
//! - `run`: what a run knows and outputs must not hold ([`RunSummary`], [`RunContext`]).
//! - `progress`, `error`, `files`: [`Progress`], [`StageError`], file helpers naming the file.

mod context;
mod error;
mod files;
mod kind;
mod params;
mod progress;
mod run;

pub use context::{ItemCache, ItemShard, NoItems, StageContext, item_key, owned, reason_class};
pub use error::{ResultExt, StageError};
pub use files::{
    create_dir, file_digest, odd_file_type, read_file, read_json, write_file, write_json,
};
pub use kind::{Kind, KindInfo, RequiredFile, Stage};
pub use params::{ParamError, canonicalize, canonicalize_checked, check_range};
pub use progress::{NoProgress, Progress};
pub use run::{Expiry, RunContext, RunSummary, StageParams, StageTiming, unix_now};
