//! What a trained model is, as `model.json` records it: the architecture (by family), the
//! embeddings a head reads and their standardisation, and the whole [`ModelSpec`].

use serde::{Deserialize, Serialize};
use stage_metrics::Decision;
use stage_shards::Preparation;

/// Which network to train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Architecture {
    /// The original project's Keras model: conv 32/64/128 3x3 + max-pool + dropout, dense 128, dropout.
    KerasBaseline,
    /// Conv + batch norm blocks and global average pooling, trained from scratch on thumbnails.
    SmallCnn,
    /// A linear layer on frozen backbone embeddings (an `embed` output).
    Linear,
    /// One hidden ReLU layer with dropout on frozen backbone embeddings.
    Mlp,
    /// EfficientNet-Lite0 from ImageNet weights, its last `finetune_blocks` blocks and a new head
    /// trained on images (slow on a CPU; meant for a GPU).
    EfficientnetLite0,
}

/// What a network reads from its `data` input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reads {
    /// Image shards (a `split` output).
    Images,
    /// Embedding shards (an `embed` output).
    Embeddings,
}

impl Architecture {
    /// The name used in `pipeline.yaml`.
    pub fn name(self) -> &'static str {
        match self {
            Self::KerasBaseline => "keras-baseline",
            Self::SmallCnn => "small-cnn",
            Self::Linear => "linear",
            Self::Mlp => "mlp",
            Self::EfficientnetLite0 => "efficientnet-lite0",
        }
    }

    /// Which family it belongs to, so each family's constructor matches only its own.
    pub fn family(self) -> Family {
        match self {
            Self::Linear => Family::Head(HeadArchitecture::Linear),
            Self::Mlp => Family::Head(HeadArchitecture::Mlp),
            Self::KerasBaseline => Family::Images(ImageArchitecture::KerasBaseline),
            Self::SmallCnn => Family::Images(ImageArchitecture::SmallCnn),
            Self::EfficientnetLite0 => Family::Images(ImageArchitecture::EfficientnetLite0),
        }
    }

    /// The head it is, if it is one.
    pub fn head(self) -> Option<HeadArchitecture> {
        match self.family() {
            Family::Head(head) => Some(head),
            Family::Images(_) => None,
        }
    }

    /// The image network it is, if it is one.
    pub fn images(self) -> Option<ImageArchitecture> {
        match self.family() {
            Family::Images(network) => Some(network),
            Family::Head(_) => None,
        }
    }

    /// Whether it reads images or embeddings.
    pub fn reads(self) -> Reads {
        match self.family() {
            Family::Head(_) => Reads::Embeddings,
            Family::Images(_) => Reads::Images,
        }
    }
}

/// An [`Architecture`] by what it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// A head on embeddings.
    Head(HeadArchitecture),
    /// A network on images.
    Images(ImageArchitecture),
}

/// The heads (see [`Architecture::Linear`], [`Architecture::Mlp`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadArchitecture {
    /// One linear layer.
    Linear,
    /// One hidden ReLU layer.
    Mlp,
}

/// The image networks (see [`Architecture::KerasBaseline`], [`Architecture::SmallCnn`],
/// [`Architecture::EfficientnetLite0`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageArchitecture {
    /// The original project's Keras model.
    KerasBaseline,
    /// The small from-scratch CNN.
    SmallCnn,
    /// EfficientNet-Lite0 fine-tuned from ImageNet weights.
    EfficientnetLite0,
}

/// Per-dimension standardisation of embeddings, fitted on the training split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Standardize {
    /// Mean per dimension.
    pub mean: Vec<f32>,
    /// Standard deviation per dimension (at least 1e-6).
    pub std: Vec<f32>,
}

impl Standardize {
    /// Fitted on `rows` vectors of `dim` values.
    pub fn fit(values: &[f32], dim: usize) -> Self {
        let rows = (values.len() / dim.max(1)).max(1) as f64;
        let mut mean = vec![0f64; dim];
        let mut square = vec![0f64; dim];
        for row in values.chunks(dim) {
            for (d, &v) in row.iter().enumerate() {
                mean[d] += v as f64;
                square[d] += v as f64 * v as f64;
            }
        }
        let mean: Vec<f64> = mean.iter().map(|m| m / rows).collect();
        let std = square
            .iter()
            .zip(&mean)
            .map(|(s, m)| ((s / rows - m * m).max(0.0).sqrt() as f32).max(1e-6))
            .collect();
        Self {
            mean: mean.into_iter().map(|m| m as f32).collect(),
            std,
        }
    }

    /// `values` standardised in place.
    pub fn apply(&self, values: &mut [f32]) {
        let dim = self.mean.len();
        for (i, v) in values.iter_mut().enumerate() {
            *v = (*v - self.mean[i % dim]) / self.std[i % dim];
        }
    }
}

/// What the embeddings a head reads were made with (from the `embed` output's `meta.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingInput {
    /// The backbone (`efficientnet-lite0`).
    pub backbone: String,
    /// Values per embedding.
    pub dim: usize,
    /// Standardisation fitted on the training split.
    pub standardize: Standardize,
}

/// Everything needed to rebuild a trained network before loading its weights, and to turn its
/// outputs into genres (`model.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// The architecture.
    pub architecture: Architecture,
    /// Input width in pixels (for heads: what the backbone saw).
    pub width: usize,
    /// Input height in pixels.
    pub height: usize,
    /// Output genres, in label order.
    pub genres: Vec<String>,
    /// Hidden units of `mlp`.
    #[serde(default)]
    pub hidden: usize,
    /// Dropout before the output layer (heads and `efficientnet-lite0`).
    #[serde(default)]
    pub dropout: f64,
    /// For heads: the embeddings they read.
    #[serde(default)]
    pub embedding: Option<EmbeddingInput>,
    /// How probabilities become genres, chosen on the validation split.
    #[serde(default)]
    pub decision: Option<Decision>,
    /// How a poster becomes what the network reads (its fit, and a head's backbones), as its
    /// data input recorded it: all `predict` needs to prepare a new poster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preparation: Option<Preparation>,
}

impl ModelSpec {
    /// A short description for summaries and the report (`mlp on efficientnet-lite0 embeddings`).
    pub fn describe(&self) -> String {
        match &self.embedding {
            Some(e) => format!(
                "{} on {} embeddings ({}x{})",
                self.architecture.name(),
                e.backbone,
                self.width,
                self.height
            ),
            None => format!(
                "{} on {}x{} images",
                self.architecture.name(),
                self.width,
                self.height
            ),
        }
    }
}
