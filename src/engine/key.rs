//! The stage cache key: the one struct that decides whether a stage's cached output is reusable.
//!
//! | in the key | why |
//! |---|---|
//! | `format` ([`CACHE_FORMAT`]) | a new engine layout never reads an old entry |
//! | stage `kind` and its code `VERSION` | a code change that alters output bumps `VERSION` |
//! | canonical params (defaults filled in, keys sorted) | `width: 64` and an omitted `width` with default 64 are the same run |
//! | each input role -> the upstream stage's *output* digest | an upstream rerun with byte-identical output does not invalidate this stage (early cut-off) |
//! | each file role -> the content digest of the workspace file or directory | edits are seen; paths are not |
//!
//! | left out | why |
//! |---|---|
//! | the stage's name, absolute paths, mtimes | renaming a stage or moving the project keeps the cache |
//! | upstream stage names | only what they produced matters |
//! | threads, progress, log level, device | runtime knobs never change what a stage computes |
//!
//! Serialised with `serde_json` from `BTreeMap`s (params recursively re-sorted), then hashed with blake3.

use std::collections::BTreeMap;

use serde::Serialize;

/// Bump when the cache layout or the meaning of a key changes. Part of every key and of the cache path.
pub const CACHE_FORMAT: u32 = 1;

/// Everything a stage's output depends on.
#[derive(Debug, Serialize)]
pub struct StageKey<'a> {
    /// [`CACHE_FORMAT`].
    pub format: u32,
    /// The stage kind, e.g. `resize`.
    pub kind: &'a str,
    /// The kind's code version.
    pub version: u32,
    /// Canonical params.
    pub params: serde_json::Value,
    /// Input role -> upstream output digest.
    pub inputs: BTreeMap<&'a str, &'a str>,
    /// File role -> content digest.
    pub files: BTreeMap<&'a str, &'a str>,
}

impl StageKey<'_> {
    /// The hex blake3 digest of the key.
    pub fn digest(&self) -> String {
        let bytes = serde_json::to_vec(self).expect("a key always serialises");
        blake3::hash(&bytes).to_hex().to_string()
    }
}

/// Returns `value` with every object's keys sorted, whatever map type serde_json was built with.
pub fn sorted_json(value: &serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let sorted: BTreeMap<&String, serde_json::Value> =
                map.iter().map(|(k, v)| (k, sorted_json(v))).collect();
            serde_json::Value::Object(sorted.into_iter().map(|(k, v)| (k.clone(), v)).collect())
        }
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.iter().map(sorted_json).collect())
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key<'a>(
        version: u32,
        params: serde_json::Value,
        inputs: &'a [(&'a str, &'a str)],
        files: &'a [(&'a str, &'a str)],
    ) -> String {
        StageKey {
            format: CACHE_FORMAT,
            kind: "resize",
            version,
            params: sorted_json(&params),
            inputs: inputs.iter().copied().collect(),
            files: files.iter().copied().collect(),
        }
        .digest()
    }

    #[test]
    fn every_field_changes_the_key() {
        let (inputs, files) = ([("movies", "aa")], [("csv", "bb")]);
        let base = key(1, json!({"width": 64}), &inputs, &files);
        assert_eq!(base, key(1, json!({"width": 64}), &inputs, &files));
        let variants = [
            ("version", key(2, json!({"width": 64}), &inputs, &files)),
            ("params", key(1, json!({"width": 96}), &inputs, &files)),
            (
                "input digest",
                key(1, json!({"width": 64}), &[("movies", "ab")], &files),
            ),
            (
                "file digest",
                key(1, json!({"width": 64}), &inputs, &[("csv", "bc")]),
            ),
        ];
        for (field, changed) in variants {
            assert_ne!(base, changed, "changing the {field} must change the key");
        }
    }

    #[test]
    fn param_order_does_not_matter() {
        let a = key(1, json!({"width": 64, "height": 32}), &[], &[]);
        let b = key(1, json!({"height": 32, "width": 64}), &[], &[]);
        assert_eq!(a, b);
    }
}
