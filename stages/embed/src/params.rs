//! The params of `embed`: which networks, the fit of the posters, mirror averaging.

use serde::{Deserialize, Serialize};
use stage_backbone::Variant;
use stage_resize::Mode;

/// Params of `embed`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbedParams {
    /// `efficientnet-lite0` (default) or `efficientnet-lite2`; `files: {weights: ...}` must be
    /// that network's checkpoint.
    pub backbone: Variant,
    /// Width posters are fitted into before the backbone sees them.
    pub width: u32,
    /// Height, likewise (the network pools globally, so it need not equal `width`).
    pub height: u32,
    /// `stretch`, `pad` or `crop`, as in `resize`.
    pub mode: Mode,
    /// Posters per forward pass.
    pub batch_size: usize,
    /// Average each poster's features with those of its mirror image (twice the work).
    pub flip: bool,
    /// A second network (`files: {second_weights: ...}` its checkpoint) whose 1,280 values follow
    /// the first's in every vector; null (default) for one.
    pub second_backbone: Option<Variant>,
}

impl Default for EmbedParams {
    fn default() -> Self {
        // ImageNet's size; README.md gives the speed and sample scores of the sizes measured.
        Self {
            backbone: Variant::Lite0,
            width: 224,
            height: 224,
            mode: Mode::Stretch,
            // Measured at 224x224: 8 as fast as 16 (paired wall ratio 0.98) at half the peak
            // memory (275 against 539 MiB); 32 was slower.
            batch_size: 8,
            flip: false,
            second_backbone: None,
        }
    }
}
