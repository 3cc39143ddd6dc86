//! Position-wise feed-forward block over `[N, T, D]`: `y = ReLU(x·W₁ + b₁)·W₂ + b₂`
//! with a hidden width F. Backward from the forward's hidden activations:
//! the two affine maps' backward passes with the ReLU's mask (`h > 0`)
//! between them.

use crate::layers::temporal::TemporalAffine;
use crate::layers::LayerGradients;
use tch::nn::{self, Module};
use tch::Tensor;

#[derive(Debug)]
pub struct FeedForward {
    pub first: TemporalAffine,
    pub second: TemporalAffine,
}

/// The forward's hidden activations (after the ReLU) and output.
pub struct FeedForwardStates {
    pub hidden: Tensor,
    pub output: Tensor,
}

impl FeedForward {
    /// Weights ~ N(0, `weight_scale`²), zero biases; variables `first.*`, `second.*`.
    pub fn new(p: &nn::Path, width: i64, hidden: i64, weight_scale: f64) -> Self {
        Self {
            first: TemporalAffine::new(p / "first", width, hidden, weight_scale),
            second: TemporalAffine::new(p / "second", hidden, width, weight_scale),
        }
    }

    /// `[W₁, b₁, W₂, b₂]`.
    pub fn parameters(&self) -> Vec<Tensor> {
        [self.first.parameters(), self.second.parameters()].into_iter().flatten().collect()
    }

    pub fn forward_states(&self, x: &Tensor) -> FeedForwardStates {
        let hidden = self.first.forward(x).relu();
        let output = self.second.forward(&hidden);
        FeedForwardStates { hidden, output }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.forward_states(x).output
    }

    pub fn backward(&self, x: &Tensor, states: &FeedForwardStates, upstream: &Tensor) -> LayerGradients {
        let second = self.second.backward(&states.hidden, upstream);
        // Where the ReLU passed its input (h > 0), as autograd's derivative.
        let d_pre_activation = second.input * states.hidden.gt(0.0);
        let first = self.first.backward(x, &d_pre_activation);
        LayerGradients { input: first.input, params: [first.params, second.params].into_iter().flatten().collect() }
    }
}
