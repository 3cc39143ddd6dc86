//! The assignment's MNIST networks, built from [`crate::layers`]. Each can
//! produce class scores for autograd, or a loss and every parameter's
//! gradient through the layers' explicit backward passes.

pub mod cnn;
pub mod mlp;

pub use cnn::ThreeLayerConvNet;
pub use mlp::TwoLayerNet;

use crate::grad::HandDerived;
use tch::Tensor;

/// An MNIST classifier: its [`HandDerived`] loss is the mean softmax
/// cross-entropy of its scores against the labels.
pub trait Net: HandDerived {
    /// Class scores `[N, 10]` from images `[N, 784]`, tensor ops only.
    fn scores(&self, images: &Tensor) -> Tensor;
}

/// `names` paired with `tensors`, in order.
fn named(names: &[&str], tensors: Vec<Tensor>) -> Vec<(String, Tensor)> {
    names.iter().map(|n| n.to_string()).zip(tensors).collect()
}
