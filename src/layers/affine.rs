//! Affine layer `Y = X·W + b` over flattened inputs.
//! Backward: `dW = Xᵀ·dY`, `db = Σₙ dY`, `dX = dY·Wᵀ` (reshaped like X).

use super::LayerGradients;
use tch::nn::{self, Module};
use tch::Tensor;

#[derive(Debug)]
pub struct Affine {
    /// `[in, out]` (the assignment's layout, not `nn.Linear`'s transpose).
    pub weight: Tensor,
    pub bias: Tensor,
}

impl Affine {
    /// Weights ~ N(0, std²) (`std` = `weight_scale`), zero bias, as the assignment initialises.
    pub fn new(p: nn::Path, inputs: i64, outputs: i64, weight_scale: f64) -> Self {
        let weight = p.var("weight", &[inputs, outputs], nn::Init::Randn { mean: 0.0, stdev: weight_scale });
        let bias = p.var("bias", &[outputs], nn::Init::Const(0.0));
        Self { weight, bias }
    }

    pub fn parameters(&self) -> Vec<Tensor> {
        vec![self.weight.shallow_clone(), self.bias.shallow_clone()]
    }

    fn flat(x: &Tensor) -> Tensor {
        x.reshape([x.size()[0], -1])
    }

    pub fn backward(&self, input: &Tensor, upstream: &Tensor) -> LayerGradients {
        let d_input = upstream.matmul(&self.weight.transpose(0, 1)).reshape(input.size());
        LayerGradients { input: d_input, params: self.parameter_gradients(input, upstream) }
    }

    /// `[dW, db]` alone, for a first layer whose input needs no gradient.
    pub fn parameter_gradients(&self, input: &Tensor, upstream: &Tensor) -> Vec<Tensor> {
        let d_weight = Self::flat(input).transpose(0, 1).matmul(upstream);
        let d_bias = upstream.sum_dim_intlist([0i64].as_slice(), false, upstream.kind());
        vec![d_weight, d_bias]
    }
}

impl Module for Affine {
    fn forward(&self, x: &Tensor) -> Tensor {
        Self::flat(x).matmul(&self.weight) + &self.bias
    }
}
