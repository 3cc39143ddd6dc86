//! Layer normalisation over the last dimension D with its affine:
//! `y = γ ⊙ x̂ + β`, `x̂ = (x − μ) · r`, `r = 1/√(σ² + ε)` (biased variance,
//! ε = 1e-5 as `nn.LayerNorm`). Backward from the forward's μ and r:
//! `dγ = Σ dy ⊙ x̂`, `dβ = Σ dy`, and with `g = dy ⊙ γ`,
//! `dx = r · (g − mean(g) − x̂ ⊙ mean(g ⊙ x̂))` (means over D).

use super::sum_but_last;
use crate::layers::LayerGradients;
use tch::nn;
use tch::Tensor;

const EPSILON: f64 = 1e-5;

#[derive(Debug)]
pub struct LayerNorm {
    /// γ `[D]`, initialised to 1.
    pub weight: Tensor,
    /// β `[D]`, initialised to 0.
    pub bias: Tensor,
}

/// The forward's output and the per-row statistics its backward uses.
pub struct LayerNormStates {
    pub output: Tensor,
    /// μ `[…, 1]`.
    pub mean: Tensor,
    /// r = 1/√(σ² + ε) `[…, 1]`.
    pub inverse_std: Tensor,
}

impl LayerNorm {
    pub fn new(p: nn::Path, width: i64) -> Self {
        Self { weight: p.ones("weight", &[width]), bias: p.zeros("bias", &[width]) }
    }

    pub fn parameters(&self) -> Vec<Tensor> {
        vec![self.weight.shallow_clone(), self.bias.shallow_clone()]
    }

    pub fn forward_states(&self, x: &Tensor) -> LayerNormStates {
        let width = *x.size().last().expect("a [.., D] input");
        let (output, mean, inverse_std) =
            x.native_layer_norm([width].as_slice(), Some(&self.weight), Some(&self.bias), EPSILON);
        LayerNormStates { output, mean, inverse_std }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.forward_states(x).output
    }

    /// `dx` and `[dγ, dβ]` from the input, the forward's states and `dy`.
    pub fn backward(&self, x: &Tensor, states: &LayerNormStates, upstream: &Tensor) -> LayerGradients {
        let normalized = (x - &states.mean) * &states.inverse_std;
        let d_weight = sum_but_last(&(upstream * &normalized));
        let d_bias = sum_but_last(upstream);
        let d_normalized = upstream * &self.weight;
        let mean_last = |t: &Tensor| t.mean_dim([-1i64].as_slice(), true, t.kind());
        let centred =
            &d_normalized - mean_last(&d_normalized) - &normalized * mean_last(&(&d_normalized * &normalized));
        LayerGradients { input: centred * &states.inverse_std, params: vec![d_weight, d_bias] }
    }
}
