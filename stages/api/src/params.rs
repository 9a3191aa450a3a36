//! Params: a kind's typed params struct is the one source of its keys, defaults and checks;
//! [`canonicalize_checked`] turns raw YAML params into the canonical form the cache key hashes.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Canonicalises params by round-tripping them through the stage's typed params struct.
///
/// Use `#[serde(deny_unknown_fields, default)]` on `P` so typos are errors and omitted keys take
/// their documented defaults.
pub fn canonicalize<P: DeserializeOwned + Serialize>(
    raw: &serde_json::Value,
) -> Result<serde_json::Value, ParamError> {
    canonicalize_checked::<P>(raw, |_| Ok(()))
}

/// [`canonicalize`], with checks that serde cannot express (ranges, sums) run on the typed params
/// before they are accepted; `check` names the offending key with [`ParamError::at`].
pub fn canonicalize_checked<P: DeserializeOwned + Serialize>(
    raw: &serde_json::Value,
    check: impl FnOnce(&P) -> Result<(), ParamError>,
) -> Result<serde_json::Value, ParamError> {
    let typed: P = serde_path_to_error::deserialize(raw)
        .map_err(|err| ParamError::at(err.path().to_string(), err.inner().to_string()))?;
    check(&typed)?;
    serde_json::to_value(&typed).map_err(|err| ParamError::at("", err.to_string()))
}

/// Checks that the numeric param at `key` lies in `range`, the range its kind documents (README
/// of the stage). Every numeric param has one: a value past it (`timeout_secs:
/// 18446744073709551615`) would overflow a clock or hang a run rather than fail it. `unit` follows
/// the bounds in the message (`" seconds"`, or `""`). NaN is in no range.
pub fn check_range<T>(
    key: &str,
    value: T,
    range: std::ops::RangeInclusive<T>,
    unit: &str,
) -> Result<(), ParamError>
where
    T: PartialOrd + std::fmt::Display,
{
    if range.contains(&value) {
        return Ok(());
    }
    Err(ParamError::at(
        key,
        format!(
            "`{key}` is {value}, outside its range: set it from {} to {}{unit}",
            range.start(),
            range.end()
        ),
    ))
}

/// A param that failed validation, with the key path inside `params:` (`.` when the whole map).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ParamError {
    /// Dotted path below `params`, e.g. `width`; `.` for the params map itself.
    pub path: String,
    /// What is wrong, as serde or the stage's own check said it.
    pub message: String,
}

impl ParamError {
    /// `message` about the param at `path` (`width`, `model.depth`).
    pub fn at(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}
