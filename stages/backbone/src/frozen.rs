//! The backbone frozen for embedding: BatchNorm folded into the convolutions, several
//! backbones (and a flipped pass) concatenated.

use burn::module::Param;
use burn::nn::BatchNorm;
use burn::nn::conv::Conv2d;
use burn::nn::pool::AdaptiveAvgPool2d;
use burn::prelude::*;
use burn::tensor::activation::relu6;

use std::path::Path;

use crate::network::EfficientNetLite;
use crate::{BackboneError, FEATURE_DIM, Variant};

/// `conv` followed by `norm` (inference statistics) as one conv with a bias:
/// `w' = w * gamma / sqrt(var + eps)` per output channel, `b' = beta - mean * gamma / sqrt(var + eps)`.
pub(crate) fn fold(conv: &Conv2d, norm: &BatchNorm) -> Conv2d {
    let scale = norm.gamma.val() / (norm.running_var.value() + norm.epsilon).sqrt();
    let [out, ..] = conv.weight.val().dims();
    let bias = norm.beta.val() - norm.running_mean.value() * scale.clone();
    let bias = match &conv.bias {
        Some(b) => bias + b.val() * scale.clone(),
        None => bias,
    };
    let mut folded = conv.clone();
    folded.weight = Param::from_tensor(conv.weight.val() * scale.reshape([out, 1, 1, 1]));
    folded.bias = Some(Param::from_tensor(bias));
    folded
}

/// One MBConv block with its BatchNorms folded into the convs.
#[derive(Module, Debug)]
pub struct FrozenMbConv {
    expand: Option<Conv2d>,
    depthwise: Conv2d,
    project: Conv2d,
    residual: bool,
}

/// An EfficientNet-Lite for frozen inference (`embed`): every BatchNorm folded into the conv
/// before it, which saves the four element-wise passes each normalisation makes over its
/// activations. Same features as [`EfficientNetLite::features`] to float rounding.
#[derive(Module, Debug)]
pub struct FrozenLite {
    stem: Conv2d,
    blocks: Vec<FrozenMbConv>,
    head: Conv2d,
    pool: AdaptiveAvgPool2d,
}

impl FrozenLite {
    /// Folds a loaded network (its running statistics, as in inference mode).
    pub fn new(net: &EfficientNetLite) -> Self {
        Self {
            stem: fold(&net.conv_stem, &net.bn0),
            blocks: net
                .blocks
                .iter()
                .map(|b| FrozenMbConv {
                    expand: match (&b.expand_conv, &b.bn0) {
                        (Some(conv), Some(norm)) => Some(fold(conv, norm)),
                        _ => None,
                    },
                    depthwise: fold(&b.depthwise_conv, &b.bn1),
                    project: fold(&b.project_conv, &b.bn2),
                    residual: b.residual,
                })
                .collect(),
            head: fold(&net.conv_head, &net.bn1),
            pool: net.pool.clone(),
        }
    }

    /// Preprocessed images `[n, 3, h, w]` -> features `[n, 1280]`.
    pub fn features(&self, images: Tensor<4>) -> Tensor<2> {
        let mut x = relu6(self.stem.forward(images));
        for block in &self.blocks {
            let mut h = x.clone();
            if let Some(expand) = &block.expand {
                h = relu6(expand.forward(h));
            }
            h = relu6(block.depthwise.forward(h));
            h = block.project.forward(h);
            x = if block.residual { h + x } else { h };
        }
        self.pool
            .forward(relu6(self.head.forward(x)))
            .flatten::<2>(1, 3)
    }

    /// What `embed` stores and `predict` recomputes: the features, or with `flip` their average
    /// with the features of each image mirrored left to right (genres do not depend on handedness).
    pub fn embeddings(&self, images: Tensor<4>, flip: bool) -> Tensor<2> {
        if flip {
            let mirrored = self.features(images.clone().flip([3]));
            (self.features(images) + mirrored) / 2.0
        } else {
            self.features(images)
        }
    }
}

/// The frozen networks an `embed` output was made with, run as it ran them: each network's
/// embeddings (mirror-averaged with `flip`) side by side, `FEATURE_DIM` values per network.
#[derive(Debug)]
pub struct FrozenBackbones {
    nets: Vec<FrozenLite>,
    flip: bool,
}

impl FrozenBackbones {
    /// `nets` in the order their values are concatenated (at least one).
    pub fn new(nets: Vec<FrozenLite>, flip: bool) -> Self {
        Self { nets, flip }
    }

    /// Loads each checkpoint (`embed`'s, and `predict`'s from what a model records), frozen:
    /// batch norms folded into the convs (the same features, four fewer passes per conv).
    pub fn load(
        checkpoints: &[(Variant, &Path)],
        flip: bool,
        device: &Device,
    ) -> Result<Self, BackboneError> {
        let nets = checkpoints
            .iter()
            .map(|&(variant, path)| Ok(FrozenLite::new(&crate::load(path, variant, device)?)))
            .collect::<Result<_, BackboneError>>()?;
        Ok(Self::new(nets, flip))
    }

    /// Values per image.
    pub fn dim(&self) -> usize {
        FEATURE_DIM * self.nets.len()
    }

    /// Preprocessed images `[n, 3, h, w]` -> `[n, dim]`.
    pub fn embeddings(&self, images: Tensor<4>) -> Tensor<2> {
        let parts: Vec<Tensor<2>> = self
            .nets
            .iter()
            .map(|net| net.embeddings(images.clone(), self.flip))
            .collect();
        if parts.len() == 1 {
            parts.into_iter().next().expect("one part")
        } else {
            Tensor::cat(parts, 1)
        }
    }
}
