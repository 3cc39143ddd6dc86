//! Flatten `[N, ...]` to `[N, D]`; its backward reshapes the gradient back.

use super::LayerGradients;
use tch::nn::Module;
use tch::Tensor;

#[derive(Debug, Default, Clone, Copy)]
pub struct Flatten;

impl Flatten {
    pub fn backward(&self, input: &Tensor, upstream: &Tensor) -> LayerGradients {
        LayerGradients { input: upstream.reshape(input.size()), params: Vec::new() }
    }
}

impl Module for Flatten {
    fn forward(&self, x: &Tensor) -> Tensor {
        x.reshape([x.size()[0], -1])
    }
}
