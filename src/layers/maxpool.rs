//! Max-pooling (2×2, stride 2 by default). Backward routes each upstream
//! gradient to the input position that held its window's maximum.

use super::LayerGradients;
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
    pub fn backward(&self, input: &Tensor, upstream: &Tensor) -> LayerGradients {
        let (_, argmax) = self.forward_with_argmax(input);
        self.backward_with_argmax(&input.size(), &argmax, upstream)
    }

    /// The pooled output and, for each output, the flat index (within its
    /// `H·W` plane) of the input that held the window's maximum.
    pub fn forward_with_argmax(&self, x: &Tensor) -> (Tensor, Tensor) {
        x.max_pool2d_with_indices([self.size, self.size], [self.stride, self.stride], [0, 0], [1, 1], false)
    }

    /// Routes `upstream` to the maxima recorded by [`MaxPool2d::forward_with_argmax`],
    /// so the forward's work is not redone.
    pub fn backward_with_argmax(&self, input_shape: &[i64], argmax: &Tensor, upstream: &Tensor) -> LayerGradients {
        let &[n, c, h, w] = input_shape else { panic!("max-pool input must be [N, C, H, W], got {input_shape:?}") };
        let routed = Tensor::zeros([n, c, h * w], (upstream.kind(), upstream.device())).scatter_add(
            2,
            &argmax.flatten(2, -1),
            &upstream.flatten(2, -1),
        );
        LayerGradients { input: routed.view([n, c, h, w]), params: Vec::new() }
    }
}

impl Module for MaxPool2d {
    fn forward(&self, x: &Tensor) -> Tensor {
        x.max_pool2d([self.size, self.size], [self.stride, self.stride], [0, 0], [1, 1], false)
    }
}
