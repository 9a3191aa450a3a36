//! The params of `ingest`: how the CSV bytes are decoded.

use serde::{Deserialize, Serialize};

/// How the CSV bytes are decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Encoding {
    /// UTF-8 if the file is valid UTF-8, otherwise latin-1 (what the real Kaggle file is).
    Auto,
    /// Strict UTF-8.
    #[serde(rename = "utf-8")]
    Utf8,
    /// ISO-8859-1: every byte is one character.
    #[serde(rename = "latin-1")]
    Latin1,
}

/// Params of `ingest`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestParams {
    /// `auto` (default), `utf-8` or `latin-1`.
    pub encoding: Encoding,
}

impl Default for IngestParams {
    fn default() -> Self {
        Self {
            encoding: Encoding::Auto,
        }
    }
}
