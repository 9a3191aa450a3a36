//! Why a stage must run: the comparison of what it would run with now against `pipeline.lock`.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use super::lock::LockedStage;

/// One reason a stage is dirty.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
pub enum Reason {
    /// No record of this stage ever running.
    NeverRun,
    /// `--force` named it.
    Forced,
    /// Same key as last time, but the cache entry is gone or damaged.
    OutputMissing(String),
    /// The kind's code `VERSION` changed.
    VersionChanged {
        /// Version in the lock.
        old: u32,
        /// Version now.
        new: u32,
    },
    /// The stage kind changed.
    KindChanged {
        /// Kind in the lock.
        old: String,
        /// Kind now.
        new: String,
    },
    /// Params differ: `resize.width 64 -> 96` for each changed key.
    ParamsChanged(Vec<String>),
    /// An upstream stage's output differs from what this stage last consumed.
    InputChanged(Vec<String>),
    /// A workspace file's content differs.
    FileChanged(Vec<String>),
    /// An upstream stage must rerun first, so this one's inputs are not known yet.
    UpstreamDirty(Vec<String>),
    /// An upstream stage failed or was not run.
    UpstreamFailed(Vec<String>),
    /// The key differs for a reason the lock cannot explain (e.g. a new cache format).
    KeyChanged,
    /// Same key, but the stage said its output stops being current at a time now past.
    Expired(String),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |items: &[String]| items.join(", ");
        match self {
            Reason::NeverRun => write!(f, "never run"),
            Reason::Forced => write!(f, "forced"),
            Reason::OutputMissing(why) => write!(f, "{why}"),
            Reason::VersionChanged { old, new } => {
                write!(f, "stage code version changed: {old} -> {new}")
            }
            Reason::KindChanged { old, new } => write!(f, "kind changed: {old} -> {new}"),
            Reason::ParamsChanged(changes) => write!(f, "params changed: {}", list(changes)),
            Reason::InputChanged(inputs) => write!(f, "input changed: {}", list(inputs)),
            Reason::FileChanged(files) => write!(f, "file changed: {}", list(files)),
            Reason::UpstreamDirty(stages) => write!(f, "upstream will rerun: {}", list(stages)),
            Reason::UpstreamFailed(stages) => write!(f, "upstream failed: {}", list(stages)),
            Reason::KeyChanged => write!(f, "cache key changed"),
            Reason::Expired(why) => write!(f, "output expired: {why}"),
        }
    }
}

/// Joins reasons for one line of output.
pub fn describe(reasons: &[Reason]) -> String {
    reasons
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// What the stage would run with now, to compare with its lock entry.
pub struct Current<'a> {
    /// Stage name.
    pub name: &'a str,
    /// Kind.
    pub kind: &'a str,
    /// Code version.
    pub version: u32,
    /// Canonical params.
    pub params: &'a serde_json::Value,
    /// Role -> (upstream name, output digest).
    pub inputs: BTreeMap<&'a str, (&'a str, &'a str)>,
    /// Role -> (path, content digest).
    pub files: BTreeMap<&'a str, (&'a str, &'a str)>,
    /// The key computed from the above.
    pub key: &'a str,
}

/// Explains why `current` does not match the lock entry; `damage` describes a broken cache entry.
pub fn explain(
    current: &Current<'_>,
    locked: Option<&LockedStage>,
    damage: Option<String>,
) -> Vec<Reason> {
    let Some(locked) = locked else {
        return vec![damage.map_or(Reason::NeverRun, Reason::OutputMissing)];
    };
    if locked.key == current.key {
        return vec![Reason::OutputMissing(
            damage.unwrap_or_else(|| "output missing from cache".into()),
        )];
    }
    let mut reasons = Vec::new();
    if locked.kind != current.kind {
        reasons.push(Reason::KindChanged {
            old: locked.kind.clone(),
            new: current.kind.to_string(),
        });
    }
    if locked.version != current.version {
        reasons.push(Reason::VersionChanged {
            old: locked.version,
            new: current.version,
        });
    }
    let changes = param_changes(current.name, &locked.params, current.params);
    if !changes.is_empty() {
        reasons.push(Reason::ParamsChanged(changes));
    }
    let inputs: Vec<String> = current
        .inputs
        .iter()
        .filter(|(role, (stage, digest))| {
            locked
                .inputs
                .get(**role)
                .is_none_or(|l| l.digest != *digest || l.stage != *stage)
        })
        .map(|(role, (stage, _))| format!("`{stage}` ({role})"))
        .collect();
    if !inputs.is_empty() {
        reasons.push(Reason::InputChanged(inputs));
    }
    let files: Vec<String> = current
        .files
        .iter()
        .filter(|(role, (_, digest))| locked.files.get(**role).is_none_or(|l| l.digest != *digest))
        .map(|(_, (path, _))| format!("`{path}`"))
        .collect();
    if !files.is_empty() {
        reasons.push(Reason::FileChanged(files));
    }
    if reasons.is_empty() {
        reasons.push(Reason::KeyChanged);
    }
    reasons
}

/// `stage.key old -> new` for every leaf that differs.
pub fn param_changes(stage: &str, old: &serde_json::Value, new: &serde_json::Value) -> Vec<String> {
    let (mut old_leaves, mut new_leaves) = (BTreeMap::new(), BTreeMap::new());
    flatten(stage, old, &mut old_leaves);
    flatten(stage, new, &mut new_leaves);
    let mut keys: Vec<&String> = old_leaves.keys().chain(new_leaves.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter_map(|k| {
            let (o, n) = (old_leaves.get(k), new_leaves.get(k));
            (o != n).then(|| {
                let show = |v: Option<&String>| v.cloned().unwrap_or_else(|| "(unset)".into());
                format!("{k} {} -> {}", show(o), show(n))
            })
        })
        .collect()
}

fn flatten(prefix: &str, value: &serde_json::Value, out: &mut BTreeMap<String, String>) {
    match value {
        serde_json::Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                flatten(&format!("{prefix}.{k}"), v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn param_changes_name_each_key_with_old_and_new() {
        let changes = param_changes(
            "resize",
            &json!({"width": 64, "height": 64, "mode": {"kind": "stretch"}}),
            &json!({"width": 96, "height": 64, "mode": {"kind": "crop"}}),
        );
        assert_eq!(
            changes,
            [
                "resize.mode.kind \"stretch\" -> \"crop\"",
                "resize.width 64 -> 96"
            ]
        );
    }
}
