//! The params of `resize`: output size, how a poster is fitted into it, rows per shard.

use serde::{Deserialize, Serialize};
pub use stage_shards::Mode;

/// Params of `resize`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResizeParams {
    /// Output width in pixels (1 to 4096).
    pub width: u32,
    /// Output height in pixels (1 to 4096).
    pub height: u32,
    /// `stretch`, `pad` or `crop`.
    pub mode: Mode,
    /// Posters per shard file (and per unit of work held in memory; 1 to 65,536).
    pub shard_rows: usize,
}

impl Default for ResizeParams {
    fn default() -> Self {
        Self {
            width: 64,
            height: 64,
            mode: Mode::Stretch,
            shard_rows: 1024,
        }
    }
}
