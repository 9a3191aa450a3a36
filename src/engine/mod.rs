//! The pipeline engine: spec, plan, cache key, store, lock and runner. It knows nothing about
//! posters; stage kinds come in through [`plan::Registry`].

pub mod dirty;
pub mod key;
pub mod lock;
pub mod plan;
pub mod publish;
pub mod record;
pub mod runner;
pub mod spec;
pub mod statcache;
pub mod store;
