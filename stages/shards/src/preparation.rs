//! How a poster is made into what a model reads: the fit (`Mode`) into a size, and for a head the
//! backbones that embedded it. Recorded along the pipeline so `predict` can do the same.

use serde::{Deserialize, Serialize};

/// How a poster is fitted into `width` x `height` (`resize`'s and `embed`'s `mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Scale both axes independently (the original project's behaviour).
    Stretch,
    /// Keep the aspect ratio, scale to fit, pad with black.
    Pad,
    /// Keep the aspect ratio, scale to cover, cut the overflow around the center.
    Crop,
}

/// A backbone network that made embeddings, and the blake3 of the weights it ran with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackboneUse {
    /// The network (`efficientnet-lite0`).
    pub name: String,
    /// blake3 of its weights file, as hex.
    pub weights_blake3: String,
}

/// How posters were prepared for a model, from the poster's bytes to what the model reads:
/// `resize` and `embed` record it in their `meta.json`, `split` carries it, and `train` writes it
/// into `model.json`, so `predict` prepares a new poster exactly so from the model's entry alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preparation {
    /// The size posters are fitted into.
    pub width: usize,
    /// See `width`.
    pub height: usize,
    /// How they are fitted.
    pub mode: Mode,
    /// For embeddings: the networks that made them, their features side by side in this order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backbones: Vec<BackboneUse>,
    /// For embeddings: whether each is the mean of the poster's and its mirror image's.
    #[serde(default)]
    pub flip: bool,
}
