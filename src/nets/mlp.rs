//! affine – ReLU – affine – softmax.

use super::{named, Net};
use crate::grad::HandDerived;
use crate::layers::{softmax_cross_entropy, Affine, Relu};
use tch::nn::{self, Module};
use tch::Tensor;

pub struct TwoLayerNet {
    pub affine1: Affine,
    pub relu: Relu,
    pub affine2: Affine,
}

impl TwoLayerNet {
    pub fn new(p: &nn::Path, inputs: i64, hidden: i64, classes: i64, weight_scale: f64) -> Self {
        Self {
            affine1: Affine::new(p / "affine1", inputs, hidden, weight_scale),
            relu: Relu,
            affine2: Affine::new(p / "affine2", hidden, classes, weight_scale),
        }
    }
}

impl Net for TwoLayerNet {
    fn scores(&self, images: &Tensor) -> Tensor {
        self.affine2.forward(&self.relu.forward(&self.affine1.forward(images)))
    }
}

impl HandDerived for TwoLayerNet {
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let tensors = self.affine1.parameters().into_iter().chain(self.affine2.parameters()).collect();
        named(&["affine1.weight", "affine1.bias", "affine2.weight", "affine2.bias"], tensors)
    }

    fn loss(&self, images: &Tensor, labels: &Tensor) -> Tensor {
        self.scores(images).cross_entropy_for_logits(labels)
    }

    fn loss_and_gradients(&self, images: &Tensor, labels: &Tensor) -> (Tensor, Vec<Tensor>) {
        let a1 = self.affine1.forward(images);
        let h1 = self.relu.forward(&a1);
        let scores = self.affine2.forward(&h1);
        let (loss, d_scores) = softmax_cross_entropy(&scores, labels);
        let g2 = self.affine2.backward(&h1, &d_scores);
        let g_relu = self.relu.backward(&a1, &g2.input);
        // The images need no gradient, so the first layer's dX is skipped.
        let g1 = self.affine1.parameter_gradients(images, &g_relu.input);
        (loss, g1.into_iter().chain(g2.params).collect())
    }
}
