//! `pipeline`: a declarative, content-cached data pipeline that builds a movie-poster genre classifier.
//!
//! [`pipeline_engine`] is generic (spec, plan, cache, runner); [`kinds`] wires in the poster stages;
//! [`cli`] and [`console`] are the command-line edge.

pub mod cli;
pub mod console;
pub mod experiments;
pub mod graph;
pub mod kinds;
pub mod predict;
