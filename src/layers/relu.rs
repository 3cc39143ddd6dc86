//! ReLU. At exactly `x = 0` the derivative is undefined; the assignment's
//! reference passes the gradient where `x ≥ 0`, autograd where `x > 0`. We
//! follow autograd (`x > 0`), so explicit and autograd training agree bit for
//! bit; inputs that are exactly 0 are rare with real-valued data anyway.

use super::LayerGradients;
use tch::nn::Module;
use tch::Tensor;

#[derive(Debug, Default, Clone, Copy)]
pub struct Relu;

impl Relu {
    pub fn backward(&self, input: &Tensor, upstream: &Tensor) -> LayerGradients {
        // A boolean mask multiplies as 0/1 (type promotion keeps upstream's kind).
        LayerGradients { input: upstream * input.gt(0.0), params: Vec::new() }
    }
}

impl Module for Relu {
    fn forward(&self, x: &Tensor) -> Tensor {
        x.relu()
    }
}
