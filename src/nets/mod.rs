//! The assignment's MNIST networks, built from [`crate::layers`]. Each can
//! produce class scores for autograd, or a loss and every parameter's
//! gradient through the layers' explicit backward passes.

pub mod cnn;
pub mod mlp;

pub use cnn::ThreeLayerConvNet;
pub use mlp::TwoLayerNet;

use tch::Tensor;

/// What the MNIST solver needs from a network.
pub trait Net {
    /// Class scores `[N, 10]` from images `[N, 784]`, tensor ops only.
    fn scores(&self, images: &Tensor) -> Tensor;
    /// Mean softmax cross-entropy loss and the gradient of every parameter
    /// (in `parameters()` order) by the explicit backward passes.
    fn loss_and_gradients(&self, images: &Tensor, labels: &Tensor) -> (Tensor, Vec<Tensor>);
    fn parameters(&self) -> Vec<Tensor>;
}
