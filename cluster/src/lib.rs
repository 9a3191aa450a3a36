//! Cluster executors: the engine's [`Executor`](pipeline_engine::cluster::Executor) over Slurm
//! (`sbatch` job arrays, polled with `scontrol`) and Kubernetes (Indexed Jobs, applied and polled
//! with `kubectl`, or written out for a person to apply).
//!
//! Every task is the same binary run as `pipeline task STAGE --key KEY [--shards N
//! --shard-index-from VAR]` in the project directory, with a scratch cache of its own; it reads
//! its inputs from the shared cache and writes what it made back there (see
//! `pipeline_engine::cluster`). So the project, the binary and the shared cache must be visible
//! from every node: a shared file system for Slurm, an image and a volume for Kubernetes.
//!
//! What lives where: `command` (the task's command line), `state` (`state.json`, what `pipeline
//! status` shows of a job while it runs), `slurm`, `k8s`.

mod command;
mod error;
pub mod k8s;
mod slurm;
mod state;

pub use command::TaskCommand;
pub use error::ClusterError;
pub use k8s::{Kubernetes, Manifest};
pub use slurm::Slurm;
pub use state::{JobState, active_jobs};

#[cfg(test)]
mod tests;
