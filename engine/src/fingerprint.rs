//! Owns the fingerprint of a stage run, after cargo's `Fingerprint`: one struct that yields the
//! cache key, is what `pipeline.lock` records, and explains how it differs from an older one.
//!
//! | in the key | why |
//! |---|---|
//! | `format` ([`CACHE_FORMAT`]) | a new engine layout never reads an old entry |
//! | stage `kind` and its code `VERSION` | a code change that alters output bumps `VERSION` |
//! | the locked versions of the crates the kind's code uses | a `cargo update` that changes how a crate decodes or resizes reruns what uses it, as cargo puts the compiler's version in every fingerprint |
//! | canonical params (defaults filled in, keys sorted) | `width: 64` and an omitted `width` with default 64 are the same run |
//! | each input role -> the upstream stage's *output* digest | an upstream rerun with byte-identical output does not invalidate this stage (early cut-off) |
//! | each file role -> the content digest of the workspace file or directory | edits are seen; paths are not |
//!
//! | left out | why |
//! |---|---|
//! | the stage's name, upstream names, file paths | renaming a stage or moving the project keeps the cache |
//! | absolute paths, mtimes | only content matters |
//! | threads, progress, log level, device | runtime knobs never change what a stage computes |
//!
//! The key is blake3 over `serde_json` of [`KeyView`] (`BTreeMap`s, params recursively sorted).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Bump when the cache layout or the meaning of a key changes. Part of every key and of the cache path.
pub const CACHE_FORMAT: u32 = 1;

/// Everything a stage's output depends on, with the names a person needs to read a difference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// Stage kind.
    pub kind: String,
    /// Code version of the kind.
    pub version: u32,
    /// Canonical params.
    pub params: serde_json::Value,
    /// Crate -> locked version, for the crates the kind's code depends on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dependencies: BTreeMap<String, String>,
    /// Input role -> upstream stage and its output digest.
    #[serde(default)]
    pub inputs: BTreeMap<String, InputPrint>,
    /// File role -> path and content digest.
    #[serde(default)]
    pub files: BTreeMap<String, FilePrint>,
}

/// An upstream output as consumed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InputPrint {
    /// Upstream stage name (not in the key).
    pub stage: String,
    /// Its output digest.
    pub digest: String,
}

/// A workspace file as consumed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FilePrint {
    /// Path relative to the project root (not in the key).
    pub path: String,
    /// Content digest.
    pub digest: String,
}

/// The part of a [`Fingerprint`] that is hashed into the key.
#[derive(Serialize)]
struct KeyView<'a> {
    format: u32,
    kind: &'a str,
    version: u32,
    params: &'a serde_json::Value,
    // Left out when empty so that a kind without locked dependencies keeps its keys.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    dependencies: &'a BTreeMap<String, String>,
    inputs: BTreeMap<&'a str, &'a str>,
    files: BTreeMap<&'a str, &'a str>,
}

impl Fingerprint {
    /// The cache key: hex blake3 of the keyed fields.
    pub fn key(&self) -> String {
        let view = KeyView {
            format: CACHE_FORMAT,
            kind: &self.kind,
            version: self.version,
            params: &self.params,
            dependencies: &self.dependencies,
            inputs: self
                .inputs
                .iter()
                .map(|(role, input)| (role.as_str(), input.digest.as_str()))
                .collect(),
            files: self
                .files
                .iter()
                .map(|(role, file)| (role.as_str(), file.digest.as_str()))
                .collect(),
        };
        let bytes = serde_json::to_vec(&view).expect("a key always serialises");
        blake3::hash(&bytes).to_hex().to_string()
    }

    /// What differs from `old`, the fingerprint `stage` last ran with, field by field; a key
    /// that differs for none of them (a new cache format) is [`Reason::KeyChanged`].
    pub fn compare(&self, stage: &str, old: &Fingerprint) -> Vec<Reason> {
        let mut reasons = Vec::new();
        if old.kind != self.kind {
            reasons.push(Reason::KindChanged {
                old: old.kind.clone(),
                new: self.kind.clone(),
            });
        }
        if old.version != self.version {
            reasons.push(Reason::VersionChanged {
                old: old.version,
                new: self.version,
            });
        }
        let crates = map_changes(&old.dependencies, &self.dependencies);
        if !crates.is_empty() {
            reasons.push(Reason::DependencyChanged(crates));
        }
        let changes = param_changes(stage, &old.params, &self.params);
        if !changes.is_empty() {
            reasons.push(Reason::ParamsChanged(changes));
        }
        let inputs: Vec<String> = self
            .inputs
            .iter()
            .filter(|(role, now)| old.inputs.get(*role) != Some(now))
            .map(|(role, now)| format!("`{}` ({role})", now.stage))
            .collect();
        if !inputs.is_empty() {
            reasons.push(Reason::InputChanged(inputs));
        }
        let files: Vec<String> = self
            .files
            .iter()
            .filter(|(role, now)| old.files.get(*role).is_none_or(|o| o.digest != now.digest))
            .map(|(_, now)| format!("`{}`", now.path))
            .collect();
        if !files.is_empty() {
            reasons.push(Reason::FileChanged(files));
        }
        if reasons.is_empty() {
            reasons.push(Reason::KeyChanged);
        }
        reasons
    }
}

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
    /// A crate the kind's code uses is locked at another version: `image 0.25.5 -> 0.25.6`.
    DependencyChanged(Vec<String>),
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
            Reason::DependencyChanged(crates) => {
                write!(f, "dependency changed: {}", list(crates))
            }
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

/// `name old -> new` for every entry of two maps that differs (`(none)` for a side without it).
fn map_changes(old: &BTreeMap<String, String>, new: &BTreeMap<String, String>) -> Vec<String> {
    let mut names: Vec<&String> = old.keys().chain(new.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter(|name| old.get(*name) != new.get(*name))
        .map(|name| {
            let show = |v: Option<&String>| v.cloned().unwrap_or_else(|| "(none)".into());
            format!("{name} {} -> {}", show(old.get(name)), show(new.get(name)))
        })
        .collect()
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

    fn print(version: u32, params: serde_json::Value, input: &str, file: &str) -> Fingerprint {
        Fingerprint {
            kind: "resize".into(),
            version,
            params: crate::digest::sorted_json(&params),
            dependencies: BTreeMap::from([("image".into(), "0.25.6".into())]),
            inputs: BTreeMap::from([(
                "movies".into(),
                InputPrint {
                    stage: "filter".into(),
                    digest: input.into(),
                },
            )]),
            files: BTreeMap::from([(
                "csv".into(),
                FilePrint {
                    path: "data/movies.csv".into(),
                    digest: file.into(),
                },
            )]),
        }
    }

    #[test]
    fn every_keyed_field_changes_the_key_and_names_leave_it_alone() {
        let base = print(1, json!({"width": 64}), "aa", "bb");
        assert_eq!(base.key(), base.clone().key());
        let mut crate_bumped = base.clone();
        crate_bumped
            .dependencies
            .insert("image".into(), "0.25.7".into());
        let variants = [
            ("version", print(2, json!({"width": 64}), "aa", "bb")),
            ("params", print(1, json!({"width": 96}), "aa", "bb")),
            ("input digest", print(1, json!({"width": 64}), "ab", "bb")),
            ("file digest", print(1, json!({"width": 64}), "aa", "bc")),
            ("dependency", crate_bumped),
        ];
        for (field, changed) in &variants {
            assert_ne!(
                base.key(),
                changed.key(),
                "changing the {field} must change the key"
            );
        }
        let mut renamed = base.clone();
        renamed.inputs.get_mut("movies").unwrap().stage = "clean".into();
        renamed.files.get_mut("csv").unwrap().path = "elsewhere.csv".into();
        assert_eq!(
            base.key(),
            renamed.key(),
            "names and paths are not in the key"
        );
    }

    #[test]
    fn param_order_does_not_matter() {
        let a = print(1, json!({"width": 64, "height": 32}), "aa", "bb");
        let b = print(1, json!({"height": 32, "width": 64}), "aa", "bb");
        assert_eq!(a.key(), b.key());
    }

    #[test]
    fn compare_names_each_difference_with_old_and_new() {
        let old = print(
            1,
            json!({"width": 64, "mode": {"kind": "stretch"}}),
            "aa",
            "bb",
        );
        let mut new = print(
            2,
            json!({"width": 96, "mode": {"kind": "crop"}}),
            "ab",
            "bc",
        );
        new.dependencies.insert("image".into(), "0.25.7".into());
        new.dependencies
            .insert("fast_image_resize".into(), "6.1.0".into());
        let reasons = new.compare("resize", &old);
        assert_eq!(
            describe(&reasons),
            "stage code version changed: 1 -> 2; \
             dependency changed: fast_image_resize (none) -> 6.1.0, image 0.25.6 -> 0.25.7; \
             params changed: resize.mode.kind \"stretch\" -> \"crop\", resize.width 64 -> 96; \
             input changed: `filter` (movies); file changed: `data/movies.csv`"
        );
        assert_eq!(old.compare("resize", &old), [Reason::KeyChanged]);
    }

    #[test]
    fn the_key_of_a_kind_without_dependencies_is_what_it_was_before_they_were_keyed() {
        // The key of this fingerprint before dependencies entered keys (format 1, from the
        // old `StageKey`): a kind that declares none keeps its cache.
        let mut print = print(1, json!({"width": 64}), "aa", "bb");
        print.dependencies.clear();
        let old_view = r#"{"format":1,"kind":"resize","version":1,"params":{"width":64},"inputs":{"movies":"aa"},"files":{"csv":"bb"}}"#;
        let old_key = blake3::hash(old_view.as_bytes()).to_hex().to_string();
        assert_eq!(print.key(), old_key);
    }
}
