//! The genre heads that read frozen backbone embeddings: a linear layer, or an MLP.
//!
//! Dropout masks are drawn here from the training seed rather than by Burn's `Dropout`: on the flex
//! backend its Bernoulli sampler (ChaCha, one value at a time) took ~45 % of a linear head's
//! training time, against well under 1 % for Draws on the host.

use burn::module::Param;
use burn::nn::{Linear, LinearConfig, Relu};
use burn::prelude::*;

use crate::noise::{Draws, dropout};
use crate::spec::{HeadArchitecture, ModelSpec};

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
    pub fn new(
        architecture: HeadArchitecture,
        spec: &ModelSpec,
        dim: usize,
        device: &Device,
    ) -> Self {
        let genres = spec.genres.len();
        match architecture {
            HeadArchitecture::Mlp => Self::Mlp(MlpHead {
                hidden: LinearConfig::new(dim, spec.hidden.max(1)).init(device),
                act: Relu::new(),
                out: LinearConfig::new(spec.hidden.max(1), genres).init(device),
            }),
            HeadArchitecture::Linear => Self::Linear(LinearHead {
                out: LinearConfig::new(dim, genres).init(device),
            }),
        }
    }

    /// One head whose logits are the mean of `members`' (all of one architecture and size, at
    /// least one): linear heads average their weights; MLPs side by side make one MLP of all their
    /// hidden units, whose output layer carries each member's weights divided by their number.
    pub fn mean_of(members: &[HeadNet]) -> HeadNet {
        let n = members.len() as f32;
        match &members[0] {
            Self::Linear(_) => {
                // The mean logit of linear layers is the linear layer of their mean weights.
                let outs: Vec<&Linear> = members
                    .iter()
                    .filter_map(|m| match m {
                        Self::Linear(h) => Some(&h.out),
                        Self::Mlp(_) => None,
                    })
                    .collect();
                let weight = outs
                    .iter()
                    .map(|l| l.weight.val())
                    .reduce(|a, b| a + b)
                    .expect("at least one member");
                Self::Linear(LinearHead {
                    out: Linear {
                        weight: Param::from_tensor(weight / n),
                        bias: bias_sum(&outs).map(|b| Param::from_tensor(b / n)),
                    },
                })
            }
            Self::Mlp(_) => {
                let mlps: Vec<&MlpHead> = members
                    .iter()
                    .filter_map(|m| match m {
                        Self::Mlp(h) => Some(h),
                        Self::Linear(_) => None,
                    })
                    .collect();
                // [dim, hidden] side by side -> [dim, n * hidden]; biases likewise.
                let hidden = Linear {
                    weight: Param::from_tensor(Tensor::cat(
                        mlps.iter().map(|h| h.hidden.weight.val()).collect(),
                        1,
                    )),
                    bias: mlps
                        .iter()
                        .map(|h| h.hidden.bias.as_ref().map(|b| b.val()))
                        .collect::<Option<Vec<_>>>()
                        .map(|b| Param::from_tensor(Tensor::cat(b, 0))),
                };
                // [hidden, genres] stacked -> [n * hidden, genres], each divided by n.
                let outs: Vec<&Linear> = mlps.iter().map(|h| &h.out).collect();
                let out = Linear {
                    weight: Param::from_tensor(
                        Tensor::cat(outs.iter().map(|l| l.weight.val()).collect(), 0) / n,
                    ),
                    bias: bias_sum(&outs).map(|b| Param::from_tensor(b / n)),
                };
                Self::Mlp(MlpHead {
                    hidden,
                    act: Relu::new(),
                    out,
                })
            }
        }
    }

    /// Hidden units of an MLP (0 for a linear head).
    pub fn hidden_units(&self) -> usize {
        match self {
            Self::Linear(_) => 0,
            Self::Mlp(head) => head.hidden.weight.val().dims()[1],
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

/// The sum of the layers' biases, if they all have one.
fn bias_sum(layers: &[&Linear]) -> Option<Tensor<1>> {
    layers
        .iter()
        .map(|l| l.bias.as_ref().map(|b| b.val()))
        .collect::<Option<Vec<_>>>()
        .and_then(|biases| biases.into_iter().reduce(|a, b| a + b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::noise;
    use crate::spec::Architecture;

    fn spec(architecture: Architecture) -> ModelSpec {
        ModelSpec {
            architecture,
            width: 1,
            height: 1,
            genres: vec!["A".into(), "B".into(), "C".into()],
            hidden: 4,
            dropout: 0.0,
            embedding: None,
            decision: None,
            preparation: None,
        }
    }

    /// The merged head's logits are the mean of the members' logits, for both architectures.
    #[test]
    fn an_ensemble_merges_into_one_head_with_the_mean_logit() {
        let device = Device::flex();
        let x = Tensor::<2>::from_data(
            TensorData::new((0..10).map(|v| v as f32 / 3.0 - 1.0).collect(), [2, 5]),
            &device,
        );
        for architecture in [Architecture::Linear, Architecture::Mlp] {
            let members: Vec<HeadNet> = (0..3)
                .map(|seed| {
                    noise::initialise(&device, seed, || {
                        HeadNet::new(
                            architecture.head().unwrap(),
                            &spec(architecture),
                            5,
                            &device,
                        )
                    })
                })
                .collect();
            let mean: Vec<f32> = members
                .iter()
                .map(|m| m.forward(x.clone()))
                .reduce(|a, b| a + b)
                .map(|sum| sum / 3.0)
                .unwrap()
                .try_into_vec_as::<f32>()
                .unwrap();
            let merged = HeadNet::mean_of(&members);
            let got: Vec<f32> = merged.forward(x.clone()).try_into_vec_as::<f32>().unwrap();
            for (a, b) in got.iter().zip(&mean) {
                assert!(
                    (a - b).abs() < 1e-5,
                    "{architecture:?}: {got:?} vs {mean:?}"
                );
            }
            let expected_hidden = if architecture == Architecture::Mlp {
                12
            } else {
                0
            };
            assert_eq!(merged.hidden_units(), expected_hidden);
        }
    }
}
