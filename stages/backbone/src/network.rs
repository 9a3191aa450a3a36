//! The EfficientNet-Lite graph as Google's builder makes it: MBConv blocks, stem and head.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::relu6;

use crate::*;

pub(crate) fn batch_norm(channels: usize, device: &Device) -> BatchNorm {
    // Momentum 0.01 as TF's 0.99 decay, for fine-tuning; eps as the checkpoint was trained with.
    device::numbered_running_stats(
        BatchNormConfig::new(channels)
            .with_epsilon(1e-3)
            .with_momentum(0.01)
            .init(device),
    )
}

/// A bias-free conv with TF "SAME" padding (Burn's `Same` pads the extra pixel bottom/right, as TF).
pub(crate) fn conv(
    channels: [usize; 2],
    kernel: usize,
    stride: usize,
    groups: usize,
    device: &Device,
) -> Conv2d {
    Conv2dConfig::new(channels, [kernel, kernel])
        .with_stride([stride, stride])
        .with_groups(groups)
        .with_padding(PaddingConfig2d::Same)
        .with_bias(false)
        .init(device)
}

/// One inverted-residual block: optional 1x1 expand, depthwise kxk, 1x1 project, residual.
#[derive(Module, Debug)]
pub struct MbConv {
    pub(crate) expand_conv: Option<Conv2d>,
    pub(crate) bn0: Option<BatchNorm>,
    pub(crate) depthwise_conv: Conv2d,
    pub(crate) bn1: BatchNorm,
    pub(crate) project_conv: Conv2d,
    pub(crate) bn2: BatchNorm,
    pub(crate) residual: bool,
}

impl MbConv {
    fn new(
        input: usize,
        output: usize,
        kernel: usize,
        stride: usize,
        expand: usize,
        device: &Device,
    ) -> Self {
        let mid = input * expand;
        Self {
            expand_conv: (expand != 1).then(|| conv([input, mid], 1, 1, 1, device)),
            bn0: (expand != 1).then(|| batch_norm(mid, device)),
            depthwise_conv: conv([mid, mid], kernel, stride, mid, device),
            bn1: batch_norm(mid, device),
            project_conv: conv([mid, output], 1, 1, 1, device),
            bn2: batch_norm(output, device),
            residual: stride == 1 && input == output,
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut h = x.clone();
        if let (Some(expand), Some(norm)) = (&self.expand_conv, &self.bn0) {
            h = relu6(norm.forward(expand.forward(h)));
        }
        h = relu6(self.bn1.forward(self.depthwise_conv.forward(h)));
        h = self.bn2.forward(self.project_conv.forward(h));
        if self.residual { h + x } else { h }
    }
}

/// An EfficientNet-Lite with its ImageNet classifier (`fc`), which [`Self::features`] leaves out.
#[derive(Module, Debug)]
pub struct EfficientNetLite {
    pub(crate) conv_stem: Conv2d,
    pub(crate) bn0: BatchNorm,
    pub(crate) blocks: Vec<MbConv>,
    pub(crate) conv_head: Conv2d,
    pub(crate) bn1: BatchNorm,
    pub(crate) pool: AdaptiveAvgPool2d,
    pub(crate) fc: Linear,
}

impl EfficientNetLite {
    /// A randomly initialised network (load weights with [`load`]).
    pub fn new(variant: Variant, device: &Device) -> Self {
        let mut blocks = Vec::with_capacity(variant.blocks());
        for &(repeats, kernel, stride, expand, input, output) in variant.stages() {
            blocks.push(MbConv::new(input, output, kernel, stride, expand, device));
            for _ in 1..repeats {
                blocks.push(MbConv::new(output, output, kernel, 1, expand, device));
            }
        }
        Self {
            conv_stem: conv([3, 32], 3, 2, 1, device),
            bn0: batch_norm(32, device),
            blocks,
            conv_head: conv([variant.last_channels(), FEATURE_DIM], 1, 1, 1, device),
            bn1: batch_norm(FEATURE_DIM, device),
            pool: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            fc: LinearConfig::new(FEATURE_DIM, IMAGENET_CLASSES).init(device),
        }
    }

    /// Stem and the first `blocks` MBConv blocks: `[n, 3, h, w]` preprocessed images -> activations.
    pub fn prefix(&self, images: Tensor<4>, blocks: usize) -> Tensor<4> {
        let mut x = relu6(self.bn0.forward(self.conv_stem.forward(images)));
        for block in &self.blocks[..blocks.min(self.blocks.len())] {
            x = block.forward(x);
        }
        x
    }

    /// The blocks from `first` on, the head conv and global pooling: activations -> `[n, 1280]`.
    pub fn suffix(&self, activations: Tensor<4>, first: usize) -> Tensor<2> {
        let mut x = activations;
        for block in &self.blocks[first.min(self.blocks.len())..] {
            x = block.forward(x);
        }
        let x = relu6(self.bn1.forward(self.conv_head.forward(x)));
        self.pool.forward(x).flatten::<2>(1, 3)
    }

    /// Preprocessed images `[n, 3, h, w]` (any size; see [`images_to_input`]) -> features `[n, 1280]`.
    pub fn features(&self, images: Tensor<4>) -> Tensor<2> {
        let all = self.blocks.len();
        self.suffix(self.prefix(images, all), all)
    }

    /// ImageNet logits `[n, 1000]`.
    pub fn imagenet_logits(&self, images: Tensor<4>) -> Tensor<2> {
        self.fc.forward(self.features(images))
    }
}
