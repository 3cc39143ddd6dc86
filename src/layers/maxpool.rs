//! Max-pooling (2×2, stride 2 by default). Backward routes each upstream
//! gradient to the input position that held its window's maximum.

use super::Gradients;
use tch::nn::Module;
use tch::Tensor;

#[derive(Debug, Clone, Copy)]
pub struct MaxPool2d {
    pub size: i64,
    pub stride: i64,
}

impl Default for MaxPool2d {
    fn default() -> Self {
        Self { size: 2, stride: 2 }
    }
}

impl MaxPool2d {
    pub fn backward(&self, input: &Tensor, upstream: &Tensor) -> Gradients {
        let (_, argmax) =
            input.max_pool2d_with_indices([self.size, self.size], [self.stride, self.stride], [0, 0], [1, 1], false);
        let (n, c, h, w) = input.size4().unwrap();
        let routed = Tensor::zeros([n, c, h * w], (upstream.kind(), upstream.device())).scatter_add(
            2,
            &argmax.flatten(2, -1),
            &upstream.flatten(2, -1),
        );
        Gradients { input: routed.view([n, c, h, w]), params: Vec::new() }
    }
}

impl Module for MaxPool2d {
    fn forward(&self, x: &Tensor) -> Tensor {
        x.max_pool2d([self.size, self.size], [self.stride, self.stride], [0, 0], [1, 1], false)
    }
}
