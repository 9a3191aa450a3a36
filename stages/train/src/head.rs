//! The genre heads that read frozen backbone embeddings: a linear layer, or an MLP.
//!
//! Dropout masks are drawn here from the training seed rather than by Burn's `Dropout`: on the flex
//! backend its Bernoulli sampler (ChaCha, one value at a time) took ~45 % of a linear head's
//! training time, against well under 1 % for Draws on the host.

use burn::nn::{Linear, LinearConfig, Relu};
use burn::prelude::*;

use crate::model::{Architecture, ModelSpec};
use crate::noise::{Draws, dropout};

/// A linear layer on the embedding.
#[derive(Module, Debug)]
pub struct LinearHead {
    out: Linear,
}

/// One hidden ReLU layer, then the output layer.
#[derive(Module, Debug)]
pub struct MlpHead {
    hidden: Linear,
    act: Relu,
    out: Linear,
}

/// A head of either architecture.
#[derive(Module, Debug)]
pub enum HeadNet {
    /// See [`Architecture::Linear`].
    Linear(LinearHead),
    /// See [`Architecture::Mlp`].
    Mlp(MlpHead),
}

impl HeadNet {
    /// A freshly initialised head for `spec` reading `dim`-value embeddings.
    pub fn new(spec: &ModelSpec, dim: usize, device: &Device) -> Self {
        let genres = spec.genres.len();
        match spec.architecture {
            Architecture::Mlp => Self::Mlp(MlpHead {
                hidden: LinearConfig::new(dim, spec.hidden.max(1)).init(device),
                act: Relu::new(),
                out: LinearConfig::new(spec.hidden.max(1), genres).init(device),
            }),
            _ => Self::Linear(LinearHead {
                out: LinearConfig::new(dim, genres).init(device),
            }),
        }
    }

    /// Standardised embeddings `[batch, dim]` -> logits `[batch, genres]` (inference: no dropout).
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        match self {
            Self::Linear(head) => head.out.forward(x),
            Self::Mlp(head) => head.out.forward(head.act.forward(head.hidden.forward(x))),
        }
    }

    /// [`Self::forward`] for a training step: dropout `prob` before the output layer.
    pub fn forward_train(&self, x: Tensor<2>, prob: f64, rng: &mut Draws) -> Tensor<2> {
        match self {
            Self::Linear(head) => head.out.forward(dropout(x, prob, Some(rng))),
            Self::Mlp(head) => {
                let h = head.act.forward(head.hidden.forward(x));
                head.out.forward(dropout(h, prob, Some(rng)))
            }
        }
    }
}
