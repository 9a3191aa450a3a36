//! `pipeline`: a declarative, content-cached data pipeline that builds a movie-poster genre classifier.
//!
//! [`pipeline_engine`] is generic (spec, plan, cache, runner); [`kinds`] wires in the poster stages;
//! The command-line edge: [`args`] (what clap reads), `session` (the plan and console, built
//! once), [`cli`] (one function per subcommand, exit codes), `commands` (what the local
//! commands print), `shared` and `cluster` (the shared cache's and the clusters' commands) and
//! [`console`] (progress and output); `predict`, `experiments` and `graph` answer the
//! subcommands of the same names.

/// `println!` that drops the line when stdout is a closed pipe instead of panicking.
macro_rules! say {
    ($($arg:tt)*) => { $crate::console::say(&format!($($arg)*)) };
}

/// `eprintln!` that never panics: with stderr closed early (`2>&1 | head`) a message that cannot
/// be written is dropped, and the exit code stays the command's own.
macro_rules! tell {
    ($($arg:tt)*) => { $crate::console::tell(&format!($($arg)*)) };
}

pub mod args;
pub mod cli;
mod cluster;
mod commands;
pub mod console;
pub mod experiments;
pub mod graph;
pub mod kinds;
pub mod predict;
mod session;
mod shared;
