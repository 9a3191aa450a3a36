//! Phase two: turns a parsed spec into a validated, topologically ordered plan.
//!
//! Every error names the pipeline file, the line and the key path, and says how to fix it:
//! unknown kinds (with the closest known kind), unknown or missing input roles, inputs naming
//! stages that do not exist, missing files, cycles, and params the kind rejects.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pipeline_api::Stage;

use crate::spec::{ExecutorKind, ExecutorSpec, Resources, SpecError, SpecFile};
use crate::workspace::{check_publish_apart, check_publish_target, check_workspace_file};

/// The stage kinds the engine can run, by kind name.
#[derive(Default, Clone)]
pub struct Registry {
    kinds: BTreeMap<&'static str, Arc<dyn Stage>>,
}

impl Registry {
    /// Adds a kind.
    pub fn register(&mut self, stage: impl Stage + 'static) -> &mut Self {
        self.kinds.insert(stage.info().kind, Arc::new(stage));
        self
    }

    /// The kind called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Stage>> {
        self.kinds.get(name)
    }

    /// All kind names.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.kinds.keys().copied()
    }
}

/// A validated stage, ready to be keyed and run.
#[derive(Clone)]
pub struct PlannedStage {
    /// Name in the pipeline file.
    pub name: String,
    /// The kind's implementation.
    pub stage: Arc<dyn Stage>,
    /// Canonical params (defaults filled in).
    pub params: serde_json::Value,
    /// Role -> upstream stage name.
    pub inputs: BTreeMap<String, String>,
    /// Role -> path relative to the project root, as written.
    pub files: BTreeMap<String, String>,
    /// Directory (relative to the project root, `/`-separated, checked by
    /// [`crate::workspace::check_publish_target`]) that receives a copy of the output.
    pub publish: Option<String>,
    /// `executor:` of the stage, if it names one.
    pub executor: Option<ExecutorKind>,
    /// `resources:` of the stage.
    pub resources: Option<Resources>,
}

/// The whole validated pipeline.
pub struct Plan {
    /// The directory holding the pipeline file; workspace paths are relative to it.
    pub root: PathBuf,
    /// The pipeline file.
    pub file: PathBuf,
    /// Stages in dependency order (ties keep file order).
    pub stages: Vec<PlannedStage>,
    /// `cache: {remote: URL}`: the shared cache `push`, `pull` and `run --pull/--push` use when
    /// neither `--remote` nor `PIPELINE_REMOTE` names one.
    pub remote: Option<String>,
    /// `executor:` at the top (`local` when absent).
    pub executor: ExecutorSpec,
}

impl Plan {
    /// Validates `spec` against the registered kinds.
    pub fn build(spec: &SpecFile, registry: &Registry) -> Result<Self, SpecError> {
        let mut planned: Vec<PlannedStage> = Vec::new();
        if spec.spec.stages.is_empty() {
            return Err(spec.error(
                "stages",
                "the pipeline has no stages",
                Some("add at least one stage under `stages:`".into()),
            ));
        }
        let every_file: Vec<&str> = spec
            .spec
            .stages
            .values()
            .flat_map(|s| s.files.values().map(String::as_str))
            .collect();
        if let Some(executor) = &spec.spec.executor {
            crate::names::check_executor(spec, executor)?;
        }
        for name in &spec.order {
            let stage_spec = &spec.spec.stages[name];
            let key = format!("stages.{name}");
            if let Some(problem) = crate::names::stage_name_problem(name) {
                return Err(spec.error(&key, problem, Some(crate::names::STAGE_NAME_HELP.into())));
            }
            if let Some(resources) = &stage_spec.resources {
                crate::names::check_resources(spec, name, resources)?;
            }
            let Some(stage) = registry.get(&stage_spec.kind) else {
                let suggestion = closest(&stage_spec.kind, registry.names());
                let known: Vec<_> = registry.names().collect();
                let help = match suggestion {
                    Some(s) => format!("did you mean `{s}`? known kinds: {}", known.join(", ")),
                    None => format!("known kinds: {}", known.join(", ")),
                };
                return Err(spec.error(
                    &format!("{key}.kind"),
                    format!("unknown stage kind `{}`", stage_spec.kind),
                    Some(help),
                ));
            };
            check_roles(
                spec,
                &format!("{key}.inputs"),
                stage.info().inputs,
                stage.info().optional_inputs,
                stage_spec.inputs.keys(),
                "inputs",
            )?;
            check_roles(
                spec,
                &format!("{key}.files"),
                stage.info().files,
                stage.info().optional_files,
                stage_spec.files.keys(),
                "files",
            )?;
            for (role, upstream) in &stage_spec.inputs {
                if !spec.spec.stages.contains_key(upstream) {
                    let help = closest(upstream, spec.order.iter().map(String::as_str))
                        .map(|s| format!("did you mean `{s}`?"));
                    return Err(spec.error(
                        &format!("{key}.inputs.{role}"),
                        format!("input `{role}` names stage `{upstream}`, which does not exist"),
                        help,
                    ));
                }
            }
            let root = spec.path.parent().unwrap_or(Path::new("."));
            for (role, path) in &stage_spec.files {
                let wants_directory = stage.info().directories.contains(&role.as_str());
                check_workspace_file(root, role, path, wants_directory).map_err(|problem| {
                    spec.error(
                        &format!("{key}.files.{role}"),
                        problem.message,
                        Some(problem.help),
                    )
                })?;
            }
            let publish = match &stage_spec.publish {
                Some(target) => Some(
                    check_publish_target(root, target, every_file.iter().copied()).map_err(
                        |problem| {
                            spec.error(
                                &format!("{key}.publish"),
                                problem.message,
                                Some(problem.help),
                            )
                        },
                    )?,
                ),
                None => None,
            };
            if let Some(target) = &publish {
                for earlier in &planned {
                    if let Some(theirs) = &earlier.publish {
                        check_publish_apart((&earlier.name, theirs), (name, target)).map_err(
                            |problem| {
                                spec.error(
                                    &format!("{key}.publish"),
                                    problem.message,
                                    Some(problem.help),
                                )
                            },
                        )?;
                    }
                }
            }
            if let Some((path, value)) = non_finite(&stage_spec.params, String::new()) {
                return Err(spec.error(
                    &format!("{key}.params{path}"),
                    format!("`{value}` is not a finite number"),
                    Some("params take finite numbers, e.g. `0.5` or `1e-3`".into()),
                ));
            }
            let raw = yaml_to_json(&stage_spec.params)
                .map_err(|message| spec.error(&format!("{key}.params"), message, None))?;
            let params = stage.canonical_params(&raw).map_err(|err| {
                let param_key = if err.path == "." || err.path.is_empty() {
                    format!("{key}.params")
                } else {
                    format!("{key}.params.{}", err.path)
                };
                spec.error(
                    &param_key,
                    format!("invalid params for `{}`: {}", stage_spec.kind, err.message),
                    did_you_mean(&err.message),
                )
            })?;
            // A role these params need is as missing as one the kind always needs.
            for needed in stage.required_files(&params) {
                if !stage_spec.files.contains_key(needed.role) {
                    return Err(spec.error(
                        &format!("{key}.files"),
                        format!("missing file role `{}`", needed.role),
                        Some(needed.why),
                    ));
                }
            }
            planned.push(PlannedStage {
                name: name.clone(),
                stage: stage.clone(),
                params,
                inputs: stage_spec.inputs.clone(),
                files: stage_spec.files.clone(),
                publish,
                executor: stage_spec.executor,
                resources: stage_spec.resources.clone(),
            });
        }
        let stages = topo_sort(spec, planned)?;
        check_input_kinds(spec, &stages)?;
        Ok(Self {
            root: spec
                .path
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from(".")),
            file: spec.path.clone(),
            stages,
            remote: spec.spec.cache.as_ref().and_then(|c| c.remote.clone()),
            executor: spec.spec.executor.clone().unwrap_or_default(),
        })
    }

    /// The stage called `name`.
    pub fn stage(&self, name: &str) -> Option<&PlannedStage> {
        self.stages.iter().find(|s| s.name == name)
    }

    /// `targets` and everything they depend on, in plan order; all stages when `targets` is empty.
    pub fn with_upstream(&self, targets: &[String]) -> BTreeSet<String> {
        if targets.is_empty() {
            return self.stages.iter().map(|s| s.name.clone()).collect();
        }
        let mut selected = BTreeSet::new();
        let mut todo: Vec<String> = targets.to_vec();
        while let Some(name) = todo.pop() {
            if selected.insert(name.clone())
                && let Some(stage) = self.stage(&name)
            {
                todo.extend(stage.inputs.values().cloned());
            }
        }
        selected
    }

    /// Every stage that depends on one of `names`, directly or not (excluding `names` themselves).
    pub fn downstream_of(&self, names: &[String]) -> BTreeSet<String> {
        let mut found: BTreeSet<String> = BTreeSet::new();
        // Plan order is topological, so one pass sees every upstream before its dependents.
        for stage in &self.stages {
            if stage
                .inputs
                .values()
                .any(|up| names.contains(up) || found.contains(up))
            {
                found.insert(stage.name.clone());
            }
        }
        found
    }

    /// Checks that every name is a stage, suggesting the closest one otherwise.
    pub fn check_names<'a>(
        &self,
        names: impl IntoIterator<Item = &'a String>,
    ) -> Result<(), String> {
        for name in names {
            if self.stage(name).is_none() {
                let hint = closest(name, self.stages.iter().map(|s| s.name.as_str()))
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_default();
                return Err(format!(
                    "no stage named `{name}` in `{}`{hint}",
                    self.file.display()
                ));
            }
        }
        Ok(())
    }
}

fn check_roles<'a>(
    spec: &SpecFile,
    key: &str,
    expected: &[&str],
    optional: &[&str],
    given: impl Iterator<Item = &'a String> + Clone,
    what: &str,
) -> Result<(), SpecError> {
    for role in given.clone() {
        if !expected.contains(&role.as_str()) && !optional.contains(&role.as_str()) {
            let help = if expected.is_empty() && optional.is_empty() {
                format!("this kind takes no {what}")
            } else if optional.is_empty() {
                format!("this kind takes {what}: {}", expected.join(", "))
            } else {
                format!(
                    "this kind takes {what}: {} (optional: {})",
                    expected.join(", "),
                    optional.join(", ")
                )
            };
            return Err(spec.error(
                &format!("{key}.{role}"),
                format!("unknown {what} role `{role}`"),
                Some(help),
            ));
        }
    }
    for role in expected {
        if !given.clone().any(|g| g == role) {
            return Err(spec.error(
                key,
                format!("missing {what} role `{role}`"),
                Some(format!("add `{role}: ...` under `{what}:`")),
            ));
        }
    }
    Ok(())
}

/// Each input is bound to a stage of a kind its role reads (see
/// [`pipeline_api::Stage::input_kinds`]).
fn check_input_kinds(spec: &SpecFile, stages: &[PlannedStage]) -> Result<(), SpecError> {
    let kind_of = |name: &str| {
        stages
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.stage.info().kind)
    };
    for stage in stages {
        for (role, takes) in stage.stage.info().input_kinds {
            let Some(upstream) = stage.inputs.get(*role) else {
                continue;
            };
            let Some(kind) = kind_of(upstream) else {
                continue;
            };
            if takes.contains(&kind) {
                continue;
            }
            let wanted = takes
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(" or ");
            let fitting: Vec<&str> = stages
                .iter()
                .filter(|s| takes.contains(&s.stage.info().kind) && s.name != stage.name)
                .map(|s| s.name.as_str())
                .collect();
            let help = if fitting.is_empty() {
                format!("bind `{role}` to a {wanted} stage")
            } else {
                format!(
                    "bind `{role}` to a {wanted} stage: {}",
                    fitting
                        .iter()
                        .map(|n| format!("`{n}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            return Err(spec.error(
                &format!("stages.{}.inputs.{role}", stage.name),
                format!(
                    "input `{role}` of `{}` is bound to `{upstream}`, a `{kind}` stage, but `{role}` reads the output of a {wanted} stage",
                    stage.name
                ),
                Some(help),
            ));
        }
    }
    Ok(())
}

fn topo_sort(spec: &SpecFile, stages: Vec<PlannedStage>) -> Result<Vec<PlannedStage>, SpecError> {
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut remaining = stages;
    let mut ordered = Vec::with_capacity(remaining.len());
    while !remaining.is_empty() {
        let ready = remaining
            .iter()
            .position(|s| s.inputs.values().all(|up| done.contains(up)));
        match ready {
            Some(index) => {
                let stage = remaining.remove(index);
                done.insert(stage.name.clone());
                ordered.push(stage);
            }
            None => {
                let cycle = find_cycle(&remaining);
                return Err(spec.error(
                    &format!("stages.{}.inputs", cycle[0]),
                    format!("the stages form a cycle: {}", cycle.join(" -> ")),
                    Some(
                        "a stage cannot depend on its own output; remove one of these inputs"
                            .into(),
                    ),
                ));
            }
        }
    }
    Ok(ordered)
}

/// Walks inputs from some stuck stage until a name repeats.
fn find_cycle(stuck: &[PlannedStage]) -> Vec<String> {
    let by_name: BTreeMap<&str, &PlannedStage> =
        stuck.iter().map(|s| (s.name.as_str(), s)).collect();
    let mut path: Vec<String> = vec![stuck[0].name.clone()];
    loop {
        let current = by_name[path.last().unwrap().as_str()];
        let next = current
            .inputs
            .values()
            .find(|up| by_name.contains_key(up.as_str()))
            .expect("a stuck stage has a stuck input")
            .clone();
        if let Some(start) = path.iter().position(|p| *p == next) {
            let mut cycle = path[start..].to_vec();
            cycle.push(next);
            return cycle;
        }
        path.push(next);
    }
}

/// The first NaN or infinity among `value`'s numbers, as (`.key.path`, `.nan`): JSON, which
/// params become, has no such numbers (serde would call them null).
fn non_finite(value: &serde_yaml_ng::Value, path: String) -> Option<(String, String)> {
    match value {
        serde_yaml_ng::Value::Number(n) if n.as_f64().is_some_and(|f| !f.is_finite()) => {
            let f = n.as_f64().unwrap_or_default();
            let shown = if f.is_nan() {
                ".nan"
            } else if f > 0.0 {
                ".inf"
            } else {
                "-.inf"
            };
            Some((path, shown.to_string()))
        }
        serde_yaml_ng::Value::Mapping(map) => map.iter().find_map(|(k, v)| {
            let name = k.as_str().map_or_else(|| format!("{k:?}"), str::to_string);
            non_finite(v, format!("{path}.{name}"))
        }),
        serde_yaml_ng::Value::Sequence(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| non_finite(v, format!("{path}.{i}"))),
        serde_yaml_ng::Value::Tagged(tagged) => non_finite(&tagged.value, path),
        _ => None,
    }
}

fn yaml_to_json(value: &serde_yaml_ng::Value) -> Result<serde_json::Value, String> {
    match value {
        serde_yaml_ng::Value::Null => Ok(serde_json::Value::Object(Default::default())),
        other => serde_json::to_value(other).map_err(|err| format!("params must be a map: {err}")),
    }
}

/// The candidate closest to `word` by edit distance, if it is close enough to be a typo.
/// For serde's `unknown field `learnig_rate`, expected one of `epochs`, `learning_rate`, ...`:
/// `did you mean `learning_rate`?`, as a kind typo gets.
fn did_you_mean(message: &str) -> Option<String> {
    let rest = message.split("unknown field `").nth(1)?;
    let (typo, expected) = rest.split_once('`')?;
    let known = expected.split('`').skip(1).step_by(2);
    closest(typo, known).map(|name| format!("did you mean `{name}`?"))
}

pub fn closest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min()
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let old = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            prev = old;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_kinds() {
        let kinds = ["ingest", "resize", "split"];
        assert_eq!(closest("resise", kinds.into_iter()), Some("resize"));
        assert_eq!(closest("zzzzzzzz", kinds.into_iter()), None);
    }
}
