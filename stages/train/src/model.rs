//! The networks that read images: the original project's Keras baseline, a small from-scratch CNN,
//! and EfficientNet-Lite0 fine-tuned from ImageNet weights.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::nn::{
    BatchNorm, BatchNormConfig, Dropout, DropoutConfig, Linear, LinearConfig, PaddingConfig2d, Relu,
};
use burn::prelude::*;
use stage_backbone::{EfficientNetLite, FEATURE_DIM, Variant};

use crate::augment::Normalize;
use crate::noise::{Draws, dropout};
use crate::spec::{ImageArchitecture, ModelSpec};

/// One conv block of the Keras baseline: valid 3x3 conv, ReLU, 2x2 max-pool, dropout.
#[derive(Module, Debug)]
pub struct KerasBlock {
    conv: Conv2d,
    act: Relu,
    pool: MaxPool2d,
    dropout: Dropout,
}

impl KerasBlock {
    fn new(channels: [usize; 2], device: &Device) -> Self {
        Self {
            conv: Conv2dConfig::new(channels, [3, 3]).init(device),
            act: Relu::new(),
            pool: MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
            dropout: DropoutConfig::new(0.25).init(),
        }
    }

    fn forward(&self, x: Tensor<4>, rng: Option<&mut Draws>) -> Tensor<4> {
        let x = self.pool.forward(self.act.forward(self.conv.forward(x)));
        dropout(x, self.dropout.prob, rng)
    }
}

/// The original project's model.
#[derive(Module, Debug)]
pub struct KerasBaseline {
    blocks: Vec<KerasBlock>,
    dense: Linear,
    act: Relu,
    dropout: Dropout,
    head: Linear,
}

/// Side length after the Keras blocks: each does a valid 3x3 conv (-2) then halves.
fn keras_side(mut side: usize) -> usize {
    for _ in 0..3 {
        side = side.saturating_sub(2) / 2;
    }
    side.max(1)
}

impl KerasBaseline {
    fn new(spec: &ModelSpec, device: &Device) -> Self {
        let flat = 128 * keras_side(spec.width) * keras_side(spec.height);
        Self {
            blocks: [[3, 32], [32, 64], [64, 128]]
                .into_iter()
                .map(|c| KerasBlock::new(c, device))
                .collect(),
            dense: LinearConfig::new(flat, 128).init(device),
            act: Relu::new(),
            dropout: DropoutConfig::new(0.5).init(),
            head: LinearConfig::new(128, spec.genres.len()).init(device),
        }
    }

    fn forward(&self, images: Tensor<4>, mut rng: Option<&mut Draws>) -> Tensor<2> {
        let mut x = images;
        for block in &self.blocks {
            x = block.forward(x, rng.as_deref_mut());
        }
        let x = x.flatten::<2>(1, 3);
        let x = self.act.forward(self.dense.forward(x));
        self.head.forward(dropout(x, self.dropout.prob, rng))
    }
}

/// One block of the small CNN: same-padded 3x3 conv, batch norm, ReLU, 2x2 max-pool.
#[derive(Module, Debug)]
pub struct NormBlock {
    conv: Conv2d,
    norm: BatchNorm,
    act: Relu,
    pool: MaxPool2d,
}

impl NormBlock {
    fn new(channels: [usize; 2], device: &Device) -> Self {
        Self {
            conv: Conv2dConfig::new(channels, [3, 3])
                .with_padding(PaddingConfig2d::Same)
                .with_bias(false)
                .init(device),
            norm: stage_backbone::numbered_running_stats(
                BatchNormConfig::new(channels[1]).init(device),
            ),
            act: Relu::new(),
            pool: MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.pool
            .forward(self.act.forward(self.norm.forward(self.conv.forward(x))))
    }
}

/// The small modern default.
#[derive(Module, Debug)]
pub struct SmallCnn {
    blocks: Vec<NormBlock>,
    gap: AdaptiveAvgPool2d,
    dropout: Dropout,
    head: Linear,
}

impl SmallCnn {
    fn new(spec: &ModelSpec, device: &Device) -> Self {
        Self {
            blocks: [[3, 32], [32, 64], [64, 128]]
                .into_iter()
                .map(|c| NormBlock::new(c, device))
                .collect(),
            gap: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            dropout: DropoutConfig::new(0.2).init(),
            head: LinearConfig::new(128, spec.genres.len()).init(device),
        }
    }

    fn forward(&self, images: Tensor<4>, rng: Option<&mut Draws>) -> Tensor<2> {
        let mut x = images;
        for block in &self.blocks {
            x = block.forward(x);
        }
        let x = self.gap.forward(x).flatten::<2>(1, 3);
        self.head.forward(dropout(x, self.dropout.prob, rng))
    }
}

/// EfficientNet-Lite0 from ImageNet weights with a new genre head.
#[derive(Module, Debug)]
pub struct Lite0Classifier {
    backbone: EfficientNetLite,
    dropout: Dropout,
    head: Linear,
}

impl Lite0Classifier {
    /// `backbone` (ImageNet weights, see `stage_backbone::load`) with a fresh head.
    pub fn new(backbone: EfficientNetLite, spec: &ModelSpec, device: &Device) -> Self {
        Self {
            backbone,
            dropout: DropoutConfig::new(spec.dropout).init(),
            head: LinearConfig::new(FEATURE_DIM, spec.genres.len()).init(device),
        }
    }

    /// The backbone's first `blocks` blocks (run frozen, outside autodiff, while fine-tuning).
    pub fn frozen_prefix(&self, images: Tensor<4>, blocks: usize) -> Tensor<4> {
        self.backbone.prefix(images, blocks)
    }

    /// The rest of the network from block `first` on (a training step: dropout from `rng`).
    pub fn forward_from(
        &self,
        activations: Tensor<4>,
        first: usize,
        rng: Option<&mut Draws>,
    ) -> Tensor<2> {
        let features = self.backbone.suffix(activations, first);
        self.head.forward(dropout(features, self.dropout.prob, rng))
    }

    fn forward(&self, images: Tensor<4>, rng: Option<&mut Draws>) -> Tensor<2> {
        let features = self.backbone.features(images);
        self.head.forward(dropout(features, self.dropout.prob, rng))
    }
}

/// A poster network that reads images.
// One network lives at a time, so the variants' sizes do not matter; Burn's `Module` derive wants
// the modules by value.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum PosterNet {
    /// See [`Architecture::KerasBaseline`].
    KerasBaseline(KerasBaseline),
    /// See [`Architecture::SmallCnn`].
    SmallCnn(SmallCnn),
    /// See [`Architecture::EfficientnetLite0`].
    Lite0(Lite0Classifier),
}

impl PosterNet {
    /// A freshly initialised from-scratch network for `spec`; `backbone` is required for (and
    /// only used by) `efficientnet-lite0`.
    pub fn new(
        architecture: ImageArchitecture,
        spec: &ModelSpec,
        backbone: Option<EfficientNetLite>,
        device: &Device,
    ) -> Self {
        match architecture {
            ImageArchitecture::KerasBaseline => {
                Self::KerasBaseline(KerasBaseline::new(spec, device))
            }
            ImageArchitecture::SmallCnn => Self::SmallCnn(SmallCnn::new(spec, device)),
            ImageArchitecture::EfficientnetLite0 => Self::Lite0(Lite0Classifier::new(
                backbone.unwrap_or_else(|| EfficientNetLite::new(Variant::Lite0, device)),
                spec,
                device,
            )),
        }
    }

    /// Which network it is.
    pub fn architecture(&self) -> ImageArchitecture {
        match self {
            Self::KerasBaseline(_) => ImageArchitecture::KerasBaseline,
            Self::SmallCnn(_) => ImageArchitecture::SmallCnn,
            Self::Lite0(_) => ImageArchitecture::EfficientnetLite0,
        }
    }

    /// Images `[batch, 3, height, width]` (normalised by [`image_input`]) -> logits `[batch, genres]`.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        self.forward_train(images, None)
    }

    /// [`Self::forward`] for a training step: dropout masks from `rng` (none when `None`).
    pub fn forward_train(&self, images: Tensor<4>, rng: Option<&mut Draws>) -> Tensor<2> {
        match self {
            Self::KerasBaseline(net) => net.forward(images, rng),
            Self::SmallCnn(net) => net.forward(images, rng),
            Self::Lite0(net) => net.forward(images, rng),
        }
    }

    /// Learnable values, for the start-of-training line.
    pub fn parameter_count(&self) -> usize {
        self.num_params()
    }
}

/// The from-scratch CNNs' input normalisation, `(x / 255 - 0.5) / 0.25`.
const FROM_SCRATCH: Normalize = Normalize {
    scale: 4.0 / 255.0,
    shift: -2.0,
};

/// The pixel normalisation `architecture` is trained with: ImageNet weights expect the backbone's
/// `(x - 127) / 128`, the from-scratch CNNs `(x / 255 - 0.5) / 0.25`. The streamed training
/// batches and [`image_input`] (evaluation, prediction) both use it.
pub fn normalize(architecture: ImageArchitecture) -> Normalize {
    match architecture {
        ImageArchitecture::EfficientnetLite0 => {
            let (scale, shift) = stage_backbone::INPUT_NORMALIZATION;
            Normalize { scale, shift }
        }
        ImageArchitecture::KerasBaseline | ImageArchitecture::SmallCnn => FROM_SCRATCH,
    }
}

/// Packs `n` HWC u8 images into the normalised NCHW input `architecture` was trained with (see
/// [`normalize`]).
pub fn image_input(
    architecture: ImageArchitecture,
    pixels: &[u8],
    n: usize,
    height: usize,
    width: usize,
    device: &Device,
) -> Tensor<4> {
    let norm = normalize(architecture);
    stage_backbone::pixels_to_nchw(pixels, [n, height, width], norm.scale, norm.shift, device)
}

/// Packs `n` HWC u8 images into the from-scratch CNNs' NCHW input, `(x / 255 - 0.5) / 0.25`.
pub fn images_to_tensor(
    pixels: &[u8],
    n: usize,
    height: usize,
    width: usize,
    device: &Device,
) -> Tensor<4> {
    image_input(
        ImageArchitecture::SmallCnn,
        pixels,
        n,
        height,
        width,
        device,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Architecture;

    #[test]
    fn both_architectures_map_images_to_one_logit_per_genre() {
        let device = Device::flex();
        for architecture in [
            Architecture::KerasBaseline,
            Architecture::SmallCnn,
            Architecture::EfficientnetLite0,
        ] {
            let spec = ModelSpec {
                architecture,
                width: 32,
                height: 40,
                genres: vec!["a".into(), "b".into(), "c".into()],
                hidden: 0,
                dropout: 0.2,
                embedding: None,
                decision: None,
                preparation: None,
            };
            let network = architecture.images().unwrap();
            let net = crate::noise::initialise(&device, 0, || {
                PosterNet::new(network, &spec, None, &device)
            });
            let x = images_to_tensor(&vec![128u8; 2 * 40 * 32 * 3], 2, 40, 32, &device);
            assert_eq!(net.forward(x).dims(), [2, 3], "{architecture:?}");
        }
    }
}
