//! The params of `filter`.

use serde::{Deserialize, Serialize};

/// Params of `filter`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilterParams {
    /// Oldest release year kept (1800 to 2200); `null` keeps every year, including unknown ones.
    pub min_year: Option<i32>,
    /// Genres with fewer movies than this are left out of the vocabulary (0 to 10,000,000).
    pub min_genre_count: usize,
}

impl Default for FilterParams {
    fn default() -> Self {
        Self {
            min_year: Some(2000),
            min_genre_count: 10,
        }
    }
}
