//! conv – ReLU – 2×2 max-pool – affine – ReLU – affine – softmax, on
//! `[N, 1, 28, 28]` images ("same" padding keeps 28×28 before the pool).
//! The ReLU runs after the pool, which gives the same values and gradients
//! on a quarter of the elements.

use super::{named, Net};
use crate::grad::HandDerived;
use crate::layers::{softmax_cross_entropy, Affine, Conv2d, MaxPool2d, Relu};
use tch::nn::{self, Module};
use tch::Tensor;

pub struct ThreeLayerConvNet {
    pub conv: Conv2d,
    pub relu: Relu,
    pub pool: MaxPool2d,
    pub affine1: Affine,
    pub affine2: Affine,
    side: i64,
}

pub struct ConvNetShape {
    pub side: i64,
    pub filters: i64,
    pub kernel: i64,
    pub hidden: i64,
    pub classes: i64,
}

impl ThreeLayerConvNet {
    pub fn new(p: &nn::Path, shape: &ConvNetShape, weight_scale: f64) -> Self {
        let pooled = shape.side / 2;
        Self {
            conv: Conv2d::new(
                p / "conv",
                1,
                shape.filters,
                [shape.kernel, shape.kernel],
                1,
                (shape.kernel - 1) / 2,
                weight_scale,
            ),
            relu: Relu,
            pool: MaxPool2d::default(),
            affine1: Affine::new(p / "affine1", shape.filters * pooled * pooled, shape.hidden, weight_scale),
            affine2: Affine::new(p / "affine2", shape.hidden, shape.classes, weight_scale),
            side: shape.side,
        }
    }

    fn as_images(&self, flat: &Tensor) -> Tensor {
        flat.view([-1, 1, self.side, self.side])
    }
}

impl Net for ThreeLayerConvNet {
    fn scores(&self, images: &Tensor) -> Tensor {
        // Pooling before the ReLU: the same values (see `loss_and_gradients`).
        let x = self.as_images(images);
        let pooled = self.relu.forward(&self.pool.forward(&self.conv.forward(&x)));
        self.affine2.forward(&self.relu.forward(&self.affine1.forward(&pooled)))
    }
}

impl HandDerived for ThreeLayerConvNet {
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut tensors = self.conv.parameters();
        tensors.extend(self.affine1.parameters());
        tensors.extend(self.affine2.parameters());
        let names = ["conv.weight", "conv.bias", "affine1.weight", "affine1.bias", "affine2.weight", "affine2.bias"];
        named(&names, tensors)
    }

    fn loss(&self, images: &Tensor, labels: &Tensor) -> Tensor {
        self.scores(images).cross_entropy_for_logits(labels)
    }

    fn loss_and_gradients(&self, images: &Tensor, labels: &Tensor) -> (Tensor, Vec<Tensor>) {
        let x = self.as_images(images);
        let c = self.conv.forward(&x);
        // relu(pool(c)) = pool(relu(c)), ReLU being monotonic, and so are
        // their gradients (where a window's maximum is ≤ 0 both are zero):
        // pooling first runs the ReLU and its backward on a quarter of the values.
        let (m, argmax) = self.pool.forward_with_argmax(&c);
        let p = self.relu.forward(&m);
        let a1 = self.affine1.forward(&p);
        let h1 = self.relu.forward(&a1);
        let scores = self.affine2.forward(&h1);
        let (loss, d_scores) = softmax_cross_entropy(&scores, labels);
        let g_a2 = self.affine2.backward(&h1, &d_scores);
        let g_h1 = self.relu.backward(&a1, &g_a2.input);
        let g_a1 = self.affine1.backward(&p, &g_h1.input);
        let g_m = self.relu.backward(&m, &g_a1.input);
        let g_c = self.pool.backward_with_argmax(&c.size(), &argmax, &g_m.input);
        // The images need no gradient: the first layer's parameters alone.
        let conv_grads = self.conv.parameter_gradients(&x, &g_c.input);
        let grads = conv_grads.into_iter().chain(g_a1.params).chain(g_a2.params).collect();
        (loss, grads)
    }
}
