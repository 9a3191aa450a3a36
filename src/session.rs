//! One invocation's resolved state, built once before any subcommand runs (after ripgrep's
//! `LowArgs -> HiArgs`): the device checked, the pipeline file read with its `-S` overrides, the
//! plan built, the thread count and the console. Subcommands take an engine and, when they ask
//! for one, the shared cache from it.

use std::sync::Arc;

use pipeline_engine::Engine;
use pipeline_engine::plan::Plan;
use pipeline_engine::spec::SpecFile;
use pipeline_remote::{Missing, Remote};

use crate::args::{Cli, RemoteArg};
use crate::commands::Failure;
use crate::console::Console;
use crate::{kinds, shared};

/// What every subcommand starts from.
pub struct Session<'a> {
    /// The parsed command line.
    pub cli: &'a Cli,
    /// Worker threads per stage.
    pub threads: usize,
    /// The pipeline file with the overrides applied, planned.
    pub plan: Plan,
    /// Progress and output.
    pub console: Arc<Console>,
}

impl<'a> Session<'a> {
    /// Checks `--device`, reads the pipeline file, applies `-S` and builds the plan: every
    /// mistake here is the user's (exit 2), found before anything runs.
    pub fn open(cli: &'a Cli, threads: usize) -> Result<Self, Failure> {
        if let Some(device) = cli.command.device() {
            stage_train::choose_device(device).map_err(|e| Failure::Usage(e.into()))?;
        }
        let mut spec = SpecFile::load(&cli.file).map_err(|e| Failure::Usage(e.into()))?;
        spec.apply_overrides(cli.command.overrides())
            .map_err(|e| Failure::Usage(e.into()))?;
        let plan = Plan::build(&spec, &kinds::registry()).map_err(|e| Failure::Usage(e.into()))?;
        Ok(Self {
            cli,
            threads,
            plan,
            console: Arc::new(Console::new(cli.verbose > 0)),
        })
    }

    /// The engine over the project's cache.
    pub fn engine(&self) -> Engine<'_> {
        Engine::new(&self.plan)
    }

    /// The `-S` overrides of this invocation.
    pub fn overrides(&self) -> &[String] {
        self.cli.command.overrides()
    }

    /// The shared cache `--remote` (or the environment, or the file) names, asked once; a
    /// missing directory is made only where `missing` says so.
    pub fn shared(
        &self,
        remote: &RemoteArg,
        missing: Missing,
        transfers: usize,
    ) -> Result<Remote, Failure> {
        shared::open(
            remote.remote.as_deref(),
            &self.plan,
            missing,
            transfers,
            &self.console,
        )
    }
}
