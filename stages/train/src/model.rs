//! The two poster CNNs: the original project's Keras baseline and a small modern default.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::nn::{
    BatchNorm, BatchNormConfig, Dropout, DropoutConfig, Linear, LinearConfig, PaddingConfig2d, Relu,
};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

/// Which network to train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Architecture {
    /// The original project's Keras model: conv 32/64/128 3x3 + max-pool + dropout, dense 128, dropout.
    KerasBaseline,
    /// Conv + batch norm blocks and global average pooling: fewer parameters, trains faster.
    SmallCnn,
}

/// Everything needed to rebuild a trained network before loading its weights (`model.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// The architecture.
    pub architecture: Architecture,
    /// Input width in pixels.
    pub width: usize,
    /// Input height in pixels.
    pub height: usize,
    /// Output genres, in label order.
    pub genres: Vec<String>,
}

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

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.dropout
            .forward(self.pool.forward(self.act.forward(self.conv.forward(x))))
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

    fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let mut x = images;
        for block in &self.blocks {
            x = block.forward(x);
        }
        let x = x.flatten::<2>(1, 3);
        let x = self
            .dropout
            .forward(self.act.forward(self.dense.forward(x)));
        self.head.forward(x)
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
            norm: BatchNormConfig::new(channels[1]).init(device),
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

    fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let mut x = images;
        for block in &self.blocks {
            x = block.forward(x);
        }
        let x = self.gap.forward(x).flatten::<2>(1, 3);
        self.head.forward(self.dropout.forward(x))
    }
}

/// A poster network of either architecture.
#[derive(Module, Debug)]
pub enum PosterNet {
    /// See [`Architecture::KerasBaseline`].
    KerasBaseline(KerasBaseline),
    /// See [`Architecture::SmallCnn`].
    SmallCnn(SmallCnn),
}

impl PosterNet {
    /// A freshly initialised network for `spec`.
    pub fn new(spec: &ModelSpec, device: &Device) -> Self {
        match spec.architecture {
            Architecture::KerasBaseline => Self::KerasBaseline(KerasBaseline::new(spec, device)),
            Architecture::SmallCnn => Self::SmallCnn(SmallCnn::new(spec, device)),
        }
    }

    /// Images `[batch, 3, height, width]` (normalised) -> logits `[batch, genres]`.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        match self {
            Self::KerasBaseline(net) => net.forward(images),
            Self::SmallCnn(net) => net.forward(images),
        }
    }
}

/// Packs `n` HWC u8 images into a normalised NCHW tensor.
pub fn images_to_tensor(
    pixels: &[u8],
    n: usize,
    height: usize,
    width: usize,
    device: &Device,
) -> Tensor<4> {
    let values: Vec<f32> = pixels
        .iter()
        .map(|&p| (p as f32 / 255.0 - 0.5) / 0.25)
        .collect();
    Tensor::<4>::from_data(TensorData::new(values, [n, height, width, 3]), device)
        .permute([0, 3, 1, 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_architectures_map_images_to_one_logit_per_genre() {
        let device = Device::flex();
        for architecture in [Architecture::KerasBaseline, Architecture::SmallCnn] {
            let spec = ModelSpec {
                architecture,
                width: 32,
                height: 40,
                genres: vec!["a".into(), "b".into(), "c".into()],
            };
            let net = PosterNet::new(&spec, &device);
            let x = images_to_tensor(&vec![128u8; 2 * 40 * 32 * 3], 2, 40, 32, &device);
            assert_eq!(net.forward(x).dims(), [2, 3], "{architecture:?}");
        }
    }
}
