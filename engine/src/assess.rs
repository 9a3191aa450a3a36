//! Owns assessing: a stage's fingerprint from its inputs, params, files and locked crate
//! versions, and whether the cache holds its output - fresh, or dirty with the reasons why. Also
//! `status`, which assesses every stage without running any.

use std::collections::BTreeMap;

use crate::digest::sorted_json;
use crate::engine::{Engine, EngineError};
use crate::fingerprint::{FilePrint, Fingerprint, InputPrint, Reason, describe};
use crate::lock::{LockFile, LockedOutputs, LockedStage};
use crate::plan::PlannedStage;
use crate::store::Committed;

/// Whether a stage's cached output is current (`"fresh"`, `"dirty"` in `status --json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Its key has a complete entry: it would not run.
    Fresh,
    /// It would run.
    Dirty,
}

/// How one stage stands.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StageStatus {
    /// Stage name.
    pub name: String,
    /// Kind.
    pub kind: String,
    /// Fresh or dirty.
    pub state: State,
    /// Why, as one line.
    pub reason: String,
    /// Why, as structured reasons (empty when fresh).
    pub reasons: Vec<Reason>,
    /// The key, when all inputs are known.
    pub key: Option<String>,
}

/// Outcome of assessing one stage without running it.
pub(crate) enum Assessment {
    /// The cache holds its output; `locked` is what the lock should say.
    Fresh {
        entry: Committed,
        locked: LockedStage,
    },
    /// It must run. Key and fingerprint are known unless an input is not known yet.
    Dirty {
        reasons: Vec<Reason>,
        known: Option<(String, Fingerprint)>,
    },
}

impl Engine<'_> {
    /// The state of every stage, without running anything.
    pub fn status(&self) -> Result<Vec<StageStatus>, EngineError> {
        self.status_with(&|_| None)
    }

    /// [`Engine::status`], where `elsewhere` gives the output digest of an entry this cache lacks
    /// but another has (a shared cache's record), so the keys of the stages after a dirty one
    /// are known too: what `run --pull` would look up.
    pub fn status_with(
        &self,
        elsewhere: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Vec<StageStatus>, EngineError> {
        let lock = LockFile::load(&self.lock_path);
        let mut digests: BTreeMap<String, String> = BTreeMap::new();
        let mut statuses = Vec::new();
        for stage in &self.plan.stages {
            let kind = stage.stage.info().kind.to_string();
            let status = match self.assess(stage, &digests, &lock, false)? {
                Assessment::Fresh { entry, .. } => {
                    digests.insert(stage.name.clone(), entry.output_digest);
                    StageStatus {
                        name: stage.name.clone(),
                        kind,
                        state: State::Fresh,
                        reason: "fresh".into(),
                        reasons: vec![],
                        key: Some(entry.key),
                    }
                }
                Assessment::Dirty { reasons, known } => {
                    let key = known.map(|(key, _)| key);
                    if let Some(digest) = key.as_deref().and_then(elsewhere) {
                        digests.insert(stage.name.clone(), digest);
                    }
                    StageStatus {
                        name: stage.name.clone(),
                        kind,
                        state: State::Dirty,
                        reason: describe(&reasons),
                        reasons,
                        key,
                    }
                }
            };
            statuses.push(status);
        }
        // Like `git status`, refresh the stat cache, but never create a cache that is not there.
        if self.store.exists() {
            self.stat.save()?;
        }
        Ok(statuses)
    }

    /// What `stage` would run with now, given the output digests of the stages before it: the
    /// fingerprint with the inputs known so far, and the upstream stages whose outputs are
    /// not known yet: enough for a dry run to say what else changed (a param, a file) beside
    /// "upstream will rerun", as the run will once those outputs are there.
    fn known_fingerprint(
        &self,
        stage: &PlannedStage,
        digests: &BTreeMap<String, String>,
    ) -> Result<(Fingerprint, Vec<String>), EngineError> {
        let mut inputs = BTreeMap::new();
        let mut pending = Vec::new();
        for (role, up) in &stage.inputs {
            let Some(digest) = digests.get(up) else {
                if !pending.contains(up) {
                    pending.push(up.clone());
                }
                continue;
            };
            inputs.insert(
                role.clone(),
                InputPrint {
                    stage: up.clone(),
                    digest: digest.clone(),
                },
            );
        }
        let mut files = BTreeMap::new();
        for (role, rel) in &stage.files {
            let digest = self.stat.path_digest(&self.plan.root.join(rel))?;
            files.insert(
                role.clone(),
                FilePrint {
                    path: rel.clone(),
                    digest,
                },
            );
        }
        let fingerprint = Fingerprint {
            kind: stage.stage.info().kind.to_string(),
            version: stage.stage.info().version,
            params: sorted_json(&keyed_params(&stage.params, stage.stage.info().knob_params)),
            dependencies: stage
                .stage
                .info()
                .dependencies
                .iter()
                .map(|(name, version)| (name.to_string(), version.to_string()))
                .collect(),
            inputs,
            files,
        };
        Ok((fingerprint, pending))
    }

    /// Fingerprints the stage (if its inputs are known) and compares with the cache and the lock.
    pub(crate) fn assess(
        &self,
        stage: &PlannedStage,
        digests: &BTreeMap<String, String>,
        lock: &LockFile,
        forced: bool,
    ) -> Result<Assessment, EngineError> {
        let (fingerprint, pending) = self.known_fingerprint(stage, digests)?;
        if !pending.is_empty() {
            let mut reasons = match lock.stages.get(&stage.name) {
                _ if forced => vec![Reason::Forced],
                // What the run will also say once the upstream outputs are known: the known
                // inputs, params, files and code compared with the last run.
                Some(old) => fingerprint
                    .compare(&stage.name, &old.fingerprint)
                    .into_iter()
                    .filter(|reason| !matches!(reason, Reason::KeyChanged))
                    .collect(),
                None => Vec::new(),
            };
            reasons.push(Reason::UpstreamDirty(pending));
            return Ok(Assessment::Dirty {
                reasons,
                known: None,
            });
        }
        let key = fingerprint.key();
        let cached = if forced { None } else { self.store.fresh(&key) };
        // An output past the expiry its stage set is not fresh, whatever its key.
        let expired = cached
            .as_ref()
            .and_then(|entry| entry.expires.as_ref())
            .filter(|expiry| expiry.at_unix <= pipeline_api::unix_now())
            .map(|expiry| Reason::Expired(expiry.why.clone()));
        if let Some(entry) = cached.filter(|_| expired.is_none()) {
            let locked = LockedStage {
                key,
                fingerprint,
                outputs: outputs_of(&entry),
            };
            return Ok(Assessment::Fresh { entry, locked });
        }
        let reasons = if forced {
            vec![Reason::Forced]
        } else if let Some(expired) = expired {
            vec![expired]
        } else {
            let damage = self.store.damage(&key);
            match lock.stages.get(&stage.name) {
                None => vec![damage.map_or(Reason::NeverRun, Reason::OutputMissing)],
                Some(old) if old.key == key => vec![Reason::OutputMissing(
                    damage.unwrap_or_else(|| "output missing from cache".into()),
                )],
                Some(old) => fingerprint.compare(&stage.name, &old.fingerprint),
            }
        };
        Ok(Assessment::Dirty {
            reasons,
            known: Some((key, fingerprint)),
        })
    }
}

/// The lock's summary of a committed entry.
pub(crate) fn outputs_of(entry: &Committed) -> LockedOutputs {
    LockedOutputs {
        digest: entry.output_digest.clone(),
        files: entry.files,
        bytes: entry.bytes,
    }
}

/// `params` without the stage's knobs: what identifies the output (see `Stage::knob_params`).
fn keyed_params(params: &serde_json::Value, knobs: &[&str]) -> serde_json::Value {
    match params {
        serde_json::Value::Object(map) => serde_json::Value::Object(
            map.iter()
                .filter(|(name, _)| !knobs.contains(&name.as_str()))
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect(),
        ),
        other => other.clone(),
    }
}
