//! The genre heads that read frozen backbone embeddings: a linear layer, or an MLP.

use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig, Relu};
use burn::prelude::*;

use crate::model::{Architecture, ModelSpec};

/// A linear layer on (dropout of) the embedding.
#[derive(Module, Debug)]
pub struct LinearHead {
    dropout: Dropout,
    out: Linear,
}

/// One hidden ReLU layer, dropout, then the output layer.
#[derive(Module, Debug)]
pub struct MlpHead {
    hidden: Linear,
    act: Relu,
    dropout: Dropout,
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
                dropout: DropoutConfig::new(spec.dropout).init(),
                out: LinearConfig::new(spec.hidden.max(1), genres).init(device),
            }),
            _ => Self::Linear(LinearHead {
                dropout: DropoutConfig::new(spec.dropout).init(),
                out: LinearConfig::new(dim, genres).init(device),
            }),
        }
    }

    /// Standardised embeddings `[batch, dim]` -> logits `[batch, genres]`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        match self {
            Self::Linear(head) => head.out.forward(head.dropout.forward(x)),
            Self::Mlp(head) => {
                let h = head.act.forward(head.hidden.forward(x));
                head.out.forward(head.dropout.forward(h))
            }
        }
    }
}
