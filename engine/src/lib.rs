//! The pipeline engine: spec, plan, fingerprints, the content-addressed store, the lock file and
//! the run loop. It knows nothing about posters; stage kinds come in through [`plan::Registry`]
//! as [`pipeline_api::Stage`]s.
//!
//! Modules, leaves first (each imports only those above it):
//!
//! | module | owns |
//! |---|---|
//! | [`fsio`] | I/O errors with their area, atomic and durable writes, tree listing |
//! | [`digest`] | blake3 of files and trees, canonical JSON, file stamps |
//! | [`spec`], [`workspace`], [`plan`] | `pipeline.yaml`, the rules for the paths it names, and the validated, ordered plan |
//! | [`fingerprint`] | what a stage run depends on: the key, the lock record, the reasons |
//! | [`lock`] | `pipeline.lock` |
//! | [`record`] | `cache/v1/runs.jsonl` |
//! | [`statcache`] | digests of workspace files, reused while their stamp holds |
//! | [`items`], [`store`] | per-item results; entries, pending runs and commits |
//! | [`publish`] | copies of outputs in the workspace |
//! | [`shared`] | the contract of a cache shared with other machines |
//! | [`cluster`] | the contract of a cluster executor: which stages leave, the keys of their shards |
//! | [`failure`] | why a stage's run failed, typed with its causes |
//! | [`event`] | what a run tells its reporter, its record and its outcome |
//! | [`engine`] | the handle, run options, errors, the process lock |
//! | [`assess`], [`execute`], [`schedule`], [`maintain`], [`task`] | the jobs: fresh or dirty; run one stage; run the plan; verify and gc; one cluster task |

pub mod assess;
pub mod cluster;
pub mod digest;
pub mod engine;
pub mod event;
pub mod execute;
pub mod failure;
pub mod fingerprint;
pub mod fsio;
pub mod items;
pub mod lock;
pub mod maintain;
pub mod names;
pub mod plan;
pub mod publish;
pub mod record;
pub mod schedule;
pub mod shared;
pub mod spec;
pub mod statcache;
pub mod store;
pub mod task;
pub mod workspace;

pub use assess::{StageStatus, State};
pub use engine::{Engine, EngineError, RunOptions, SharedPolicy};
pub use event::{Event, Reporter, RunOutcome, SharedTrouble, Span};
pub use failure::{StageFailure, error_chain};
pub use fingerprint::{Reason, describe};
pub use shared::{Pulled, Pushed, SharedCache, SharedError};
