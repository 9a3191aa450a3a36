//! What a run knows beyond a stage's inputs and params: the summary a stage returns
//! ([`RunSummary`], kept in the cache entry's manifest, never in its output) and the run a
//! published copy came from ([`RunContext`]).

use std::collections::BTreeMap;

use serde::Serialize;

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

/// What a stage tells a person after it ran: a few short lines (`1000 rows, 6 dropped: ...`).
#[derive(Debug, Default, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct RunSummary {
    /// Human-readable lines, most important first.
    pub lines: Vec<String>,
    /// When the output stops being current although nothing in its key changed (see
    /// [`RunSummary::expiring`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<Expiry>,
    /// What only this run measured (`fit_seconds`, per-epoch timings, counts of reused work):
    /// kept in the cache entry's manifest beside the lines, never in the output, which must stay
    /// a pure function of inputs and params (a retrain that changes nothing must not rerun what
    /// depends on it). Benchmarks read it there.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub measures: BTreeMap<String, serde_json::Value>,
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
            measures: BTreeMap::new(),
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

    /// Records what this run measured under `name` (see [`RunSummary::measures`]).
    pub fn measure(mut self, name: &str, value: impl Serialize) -> Self {
        if let Ok(value) = serde_json::to_value(value) {
            self.measures.insert(name.to_string(), value);
        }
        self
    }
}
