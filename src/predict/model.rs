//! Which model answers: `--model` resolved to a `train` stage and the cache keys to find it (and
//! the files it was made with) by, and its cache entry checked before it is read.

use anyhow::{Context, bail};
use pipeline_api::Stage;
use stage_evaluate::Evaluate;
use stage_train::Train;

use pipeline_engine::lock::LockFile;
use pipeline_engine::plan::Plan;
use pipeline_engine::record::{find_run, read_runs};
use pipeline_engine::store::Store;

/// Cache keys of stages: the lock file's, or those a recorded run used.
pub struct Keys {
    pub lock: LockFile,
    run: Option<Vec<(String, String)>>,
    /// The recorded run's `-S` overrides, when the keys are a run's.
    overrides: Vec<String>,
}

impl Keys {
    fn of_lock(lock: LockFile) -> Self {
        Self {
            lock,
            run: None,
            overrides: Vec::new(),
        }
    }

    /// The command that makes `stage`'s entry under these keys again: a run's own overrides
    /// with it, so that it trains what that run trained and not the file's params.
    pub fn remake(&self, stage: &str) -> String {
        let mut words = vec!["pipeline".to_string(), "run".into(), stage.to_string()];
        for set in &self.overrides {
            words.push("-S".into());
            words.push(set.clone());
        }
        // shlex quotes any `=`; a word of only these characters reads the same to every shell.
        let plain = |w: &str| {
            !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-./=:,+@%".contains(&b))
        };
        words
            .iter()
            .map(|w| match shlex::try_quote(w) {
                Ok(quoted) if !plain(w) => quoted.into_owned(),
                _ => w.clone(),
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    pub fn of(&self, stage: &str) -> Option<String> {
        match &self.run {
            Some(keys) => keys
                .iter()
                .find(|(s, _)| s == stage)
                .map(|(_, k)| k.clone()),
            None => self.lock.stages.get(stage).map(|s| s.key.clone()),
        }
    }
}

/// The `train` stage `pipeline predict` uses by default: the one `evaluate` calls its primary
/// model, else the last `train` stage in the file.
fn default_model_stage(plan: &Plan) -> Option<String> {
    plan.stages
        .iter()
        .find(|s| s.stage.info().kind == Evaluate.info().kind)
        .and_then(|s| s.inputs.get("model").cloned())
        .or_else(|| {
            plan.stages
                .iter()
                .rfind(|s| s.stage.info().kind == Train.info().kind)
                .map(|s| s.name.clone())
        })
}

/// Resolves `--model` into (stage, keys to look stages up with).
pub fn choose(plan: &Plan, wanted: Option<&str>) -> anyhow::Result<(String, Keys)> {
    let lock = LockFile::load(&plan.root.join("pipeline.lock"));
    let trains: Vec<&str> = plan
        .stages
        .iter()
        .filter(|s| s.stage.info().kind == Train.info().kind)
        .map(|s| s.name.as_str())
        .collect();
    let default = || {
        default_model_stage(plan).context("the pipeline has no `train` stage, so no model to ask")
    };
    match wanted {
        None => Ok((default()?, Keys::of_lock(lock))),
        Some(name) if trains.contains(&name) => Ok((name.to_string(), Keys::of_lock(lock))),
        Some(name) if plan.stage(name).is_some() => bail!(
            "`{name}` is a `{}` stage, not a model; `--model` takes a train stage ({}) or a run id from `pipeline log`",
            plan.stage(name).map_or("", |s| s.stage.info().kind),
            trains.join(", ")
        ),
        Some(wanted) => {
            let runs = read_runs(&Store::new(plan.root.join("cache")).runs_path());
            let with_ids: Vec<_> = runs.iter().filter(|r| !r.id.is_empty()).collect();
            let ids: Vec<&str> = with_ids.iter().map(|r| r.id.as_str()).collect();
            let run = find_run(&ids, wanted)
                .map_err(anyhow::Error::msg)?
                .map(|i| with_ids[i]);
            let run = run.with_context(|| {
                format!(
                    "`{wanted}` is neither a train stage ({}) nor a recorded run id (`pipeline log` lists them)",
                    trains.join(", ")
                )
            })?;
            let stage = default()?;
            let keys: Vec<(String, String)> = run
                .stages
                .iter()
                .filter(|s| s.action.made_output())
                .filter_map(|s| Some((s.name.clone(), s.key.clone()?)))
                .collect();
            if !keys.iter().any(|(s, _)| *s == stage) {
                bail!(
                    "run {} did not bring `{stage}` up to date, so it has no model of its own; pick a run that did (`pipeline log`)",
                    run.id
                );
            }
            Ok((
                stage,
                Keys {
                    lock,
                    run: Some(keys),
                    overrides: run.overrides.clone(),
                },
            ))
        }
    }
}

/// Checks the model's cache entry against its manifest, as a stage checks its inputs before it
/// reads them: a damaged model answers nothing rather than NaN.
pub fn check_entry(store: &Store, stage: &str, key: &str, keys: &Keys) -> anyhow::Result<()> {
    let short = &key[..key.len().min(16)];
    let remake = keys.remake(stage);
    if store.manifest(key).is_none() {
        bail!("no trained model in the cache for `{stage}` (key {short}); `{remake}` trains it");
    }
    let problems = store.verify(key);
    if !problems.is_empty() {
        bail!(
            "the cached model of `{stage}` (entry {short}) is damaged: {}\n  help: `pipeline verify --repair` removes damaged entries, then `{remake}` trains it again",
            problems.join(", ")
        );
    }
    Ok(())
}
