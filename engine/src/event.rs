//! Owns what a run tells the world, after nextest's reporter: the scheduler emits [`Event`]s as
//! data, and every consumer reads the same events - the console (a [`Reporter`]), the run record
//! and the [`RunOutcome`] (both built by [`RunLog`]). An outcome is written once.

use std::path::{Path, PathBuf};

use pipeline_api::{NoProgress, Progress, StageTiming};

use crate::cluster::Dispatched;
use crate::failure::{StageFailure, error_chain};
use crate::fingerprint::{Reason, describe};
use crate::record::{Action, RunOutcomeKind, RunRecord, StageRecord};
use crate::shared::{Pulled, Pushed};

/// When a stage was handled, relative to the run's start.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Span {
    /// Seconds after the run started.
    pub started: f64,
    /// Seconds it took.
    pub seconds: f64,
}

/// One thing that happened in a run.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// Another run holds the project lock; this one waits.
    WaitingForLock {
        /// The lock file.
        lock: &'a Path,
    },
    /// The stage's cached output is reused; `note` says why when it is not obvious.
    Fresh {
        /// Stage name.
        stage: &'a str,
        /// Its key.
        key: &'a str,
        /// E.g. `upstream x reran with identical output`.
        note: Option<&'a str>,
        /// When.
        span: Span,
    },
    /// `--dry-run`: the stage would run, for these reasons.
    WouldRun {
        /// Stage name.
        stage: &'a str,
        /// Why.
        reasons: &'a [Reason],
    },
    /// The stage starts running (emitted by the worker that runs it).
    Started {
        /// Stage name.
        stage: &'a str,
        /// Why it runs.
        reasons: &'a [Reason],
    },
    /// The stage ran and its output is committed.
    Ran {
        /// Stage name.
        stage: &'a str,
        /// Its key.
        key: &'a str,
        /// Why it ran.
        reasons: &'a [Reason],
        /// What the stage said about its run.
        summary: &'a [String],
        /// When.
        span: Span,
    },
    /// The stage failed; nothing of it was committed.
    Failed {
        /// Stage name.
        stage: &'a str,
        /// Its key.
        key: &'a str,
        /// The failure, with its causes.
        error: &'a StageFailure,
        /// When.
        span: Span,
    },
    /// The stage is skipped because something it needs failed.
    Skipped {
        /// Stage name.
        stage: &'a str,
        /// Why.
        reasons: &'a [Reason],
        /// When.
        span: Span,
    },
    /// `--pull`: the shared cache had the stage's entry; it was taken instead of running.
    Pulled {
        /// Stage name.
        stage: &'a str,
        /// Its key.
        key: &'a str,
        /// What came over.
        pulled: Pulled,
        /// When.
        span: Span,
    },
    /// `--pull`: the shared cache has no entry for the stage's key, so the newest one it has of
    /// that stage was taken, for the stage to reuse per item.
    PulledEarlier {
        /// Stage name.
        stage: &'a str,
        /// The key of the entry taken.
        key: &'a str,
        /// What came over.
        pulled: Pulled,
    },
    /// `pipeline pull`: the shared cache has no entry for the stage (it was left as it is).
    NotShared {
        /// Stage name.
        stage: &'a str,
        /// Its key, when its inputs are known.
        key: Option<&'a str>,
    },
    /// `--push`: the stage's entry was sent to the shared cache.
    Pushed {
        /// Stage name.
        stage: &'a str,
        /// What went over.
        pushed: Pushed,
    },
    /// The stage's cluster job (a task per shard, or one for the whole stage) ended, every task
    /// done (emitted by the worker that waited for it).
    Dispatched {
        /// Stage name.
        stage: &'a str,
        /// How it went.
        dispatched: &'a Dispatched,
    },
    /// A transfer with the shared cache failed; the run goes on without it (the stage runs, or
    /// its entry stays local).
    SharedTrouble {
        /// Stage name.
        stage: &'a str,
        /// `pull` or `push`.
        during: &'static str,
        /// What went wrong, naming the object.
        message: &'a str,
    },
    /// A copy of the stage's output was published to `dir` (relative to the project).
    Published {
        /// Stage name.
        stage: &'a str,
        /// The directory.
        dir: &'a Path,
        /// When the stage did not run but its cached output replaced what the directory showed
        /// (a run with `-S` published another): the run id it was showing, or `""` if unknown.
        replaced: Option<&'a str>,
    },
}

/// Shows a run to a person. Called from the scheduler and from workers, hence `Sync`.
pub trait Reporter: Sync {
    /// Something happened.
    fn event(&self, event: &Event<'_>);
    /// Where a running stage's progress goes (asked right after its [`Event::Started`]).
    fn progress(&self, _stage: &str) -> Box<dyn Progress + '_> {
        Box::new(NoProgress)
    }
}

/// A reporter that says nothing but that it waits, for maintenance commands that take the run
/// lock.
pub struct QuietReporter;

impl Reporter for QuietReporter {
    fn event(&self, event: &Event<'_>) {
        if let Event::WaitingForLock { lock } = event {
            eprintln!(
                "Waiting for another `pipeline run` to release `{}`...",
                lock.display()
            );
        }
    }
}

/// The result of a run.
#[derive(Debug, Default)]
pub struct RunOutcome {
    /// Stages that ran, in order.
    pub ran: Vec<String>,
    /// Stages reused from the cache.
    pub fresh: Vec<String>,
    /// Stages that would run (`--dry-run`).
    pub would_run: Vec<String>,
    /// Stages that failed.
    pub failed: Vec<String>,
    /// Stages whose entry came from the shared cache.
    pub pulled: Vec<String>,
    /// Bytes those pulls fetched.
    pub pulled_bytes: u64,
    /// `pipeline pull`: stages the shared cache has no entry for.
    pub not_shared: Vec<String>,
    /// Transfers with the shared cache that failed.
    pub shared_troubles: Vec<SharedTrouble>,
    /// Directories that received published outputs.
    pub published: Vec<PathBuf>,
    /// The run's id (empty for a dry run).
    pub run_id: String,
}

/// A transfer with the shared cache that failed during a run.
#[derive(Debug, Clone)]
pub struct SharedTrouble {
    /// The stage.
    pub stage: String,
    /// `pull` or `push`.
    pub during: &'static str,
    /// What went wrong.
    pub message: String,
}

/// The consumer that turns a run's events into its record and its outcome.
#[derive(Debug, Default)]
pub struct RunLog {
    stages: Vec<StageRecord>,
    would_run: Vec<String>,
    not_shared: Vec<String>,
    shared_troubles: Vec<SharedTrouble>,
    pulled_bytes: u64,
    published: Vec<PathBuf>,
    /// Cluster jobs of stages not yet recorded, by stage.
    dispatched: Vec<(String, Dispatched)>,
}

impl RunLog {
    /// Takes in one event.
    pub fn observe(&mut self, event: &Event<'_>) {
        let mut push = |name: &str, action, reason: String, key: Option<&str>, span: &Span| {
            let cluster = self
                .dispatched
                .iter()
                .position(|(stage, _)| stage == name)
                .map(|at| self.dispatched.remove(at).1);
            self.stages.push(StageRecord {
                name: name.to_string(),
                action,
                reason,
                key: key.map(str::to_string),
                started: span.started,
                seconds: span.seconds,
                cluster,
            });
        };
        match event {
            Event::Fresh {
                stage,
                key,
                note,
                span,
            } => push(
                stage,
                Action::Fresh,
                note.unwrap_or("fresh").to_string(),
                Some(key),
                span,
            ),
            Event::Ran {
                stage,
                key,
                reasons,
                span,
                ..
            } => push(stage, Action::Ran, describe(reasons), Some(key), span),
            Event::Failed {
                stage,
                key,
                error,
                span,
            } => push(stage, Action::Failed, error_chain(error), Some(key), span),
            Event::Skipped {
                stage,
                reasons,
                span,
            } => push(stage, Action::Skipped, describe(reasons), None, span),
            Event::Pulled {
                stage,
                key,
                span,
                pulled,
            } => {
                self.pulled_bytes += pulled.bytes;
                push(
                    stage,
                    Action::Pulled,
                    "taken from the shared cache".into(),
                    Some(key),
                    span,
                )
            }
            Event::NotShared { stage, .. } => self.not_shared.push(stage.to_string()),
            Event::SharedTrouble {
                stage,
                during,
                message,
            } => self.shared_troubles.push(SharedTrouble {
                stage: stage.to_string(),
                during,
                message: message.to_string(),
            }),
            Event::Dispatched { stage, dispatched } => self
                .dispatched
                .push((stage.to_string(), (*dispatched).clone())),
            Event::WouldRun { stage, .. } => self.would_run.push(stage.to_string()),
            Event::Published { dir, .. } => self.published.push(dir.to_path_buf()),
            Event::WaitingForLock { .. }
            | Event::Started { .. }
            | Event::Pushed { .. }
            | Event::PulledEarlier { .. } => {}
        }
    }

    /// What every stage that made its output so far did, for a published copy's `run.json`.
    pub fn timings(&self) -> Vec<StageTiming> {
        self.stages
            .iter()
            .filter(|r| r.action.made_output())
            .map(|r| StageTiming {
                name: r.name.clone(),
                action: r.action.as_str().to_string(),
                seconds: r.seconds,
            })
            .collect()
    }

    /// Whether a stage failed.
    pub fn failed(&self) -> bool {
        self.stages.iter().any(|r| r.action == Action::Failed)
    }

    /// The outcome the caller of `run` gets.
    pub fn outcome(&self, run_id: &str) -> RunOutcome {
        let named = |action: Action| -> Vec<String> {
            self.stages
                .iter()
                .filter(|r| r.action == action)
                .map(|r| r.name.clone())
                .collect()
        };
        RunOutcome {
            ran: named(Action::Ran),
            fresh: named(Action::Fresh),
            failed: named(Action::Failed),
            pulled: named(Action::Pulled),
            pulled_bytes: self.pulled_bytes,
            not_shared: self.not_shared.clone(),
            shared_troubles: self.shared_troubles.clone(),
            would_run: self.would_run.clone(),
            published: self.published.clone(),
            run_id: run_id.to_string(),
        }
    }

    /// The line `runs.jsonl` gets.
    pub fn into_record(self, base: RunRecord) -> RunRecord {
        RunRecord {
            outcome: if self.failed() {
                RunOutcomeKind::Failed
            } else {
                RunOutcomeKind::Ok
            },
            stages: self.stages,
            ..base
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_and_the_outcome_come_from_the_same_events() {
        let mut log = RunLog::default();
        let span = Span {
            started: 0.5,
            seconds: 2.0,
        };
        let reasons = [Reason::NeverRun];
        log.observe(&Event::Fresh {
            stage: "ingest",
            key: "k1",
            note: None,
            span,
        });
        log.observe(&Event::Ran {
            stage: "resize",
            key: "k2",
            reasons: &reasons,
            summary: &[],
            span,
        });
        log.observe(&Event::Failed {
            stage: "train",
            key: "k3",
            error: &StageFailure::Panicked("out of memory".into()),
            span,
        });
        log.observe(&Event::Skipped {
            stage: "evaluate",
            reasons: &[Reason::UpstreamFailed(vec!["train".into()])],
            span: Span::default(),
        });
        let outcome = log.outcome("20261201-100000");
        assert_eq!(outcome.fresh, ["ingest"]);
        assert_eq!(outcome.ran, ["resize"]);
        assert_eq!(outcome.failed, ["train"]);
        assert_eq!(
            log.timings().len(),
            2,
            "only stages that made output have timings"
        );
        let record = log.into_record(RunRecord {
            id: "20261201-100000".into(),
            overrides: vec![],
            started_unix: 0,
            seconds: 3.0,
            targets: vec![],
            outcome: RunOutcomeKind::Ok,
            stages: vec![],
        });
        assert_eq!(record.outcome, RunOutcomeKind::Failed);
        let actions: Vec<_> = record.stages.iter().map(|s| s.action).collect();
        assert_eq!(
            actions,
            [Action::Fresh, Action::Ran, Action::Failed, Action::Skipped]
        );
        assert_eq!(record.stages[1].reason, "never run");
        assert_eq!(record.stages[3].reason, "upstream failed: train");
    }
}
