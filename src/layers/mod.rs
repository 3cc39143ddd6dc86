//! Hand-derived layers. Each is a small struct holding its parameters, usable
//! as an ordinary `tch` module (autograd sees only tensor ops), and with an
//! explicit `backward(input, upstream)` that returns the input gradient and
//! the parameter gradients from the derived formulas, computed with tensor
//! ops and no autograd. Backward passes recompute what they need from the
//! input (the recurrent layers: from their outputs, which the caller holds)
//! instead of caching it, so a layer carries no hidden state.

pub mod affine;
pub mod attention;
pub mod conv;
pub mod embedding;
pub mod flatten;
pub mod loss;
pub mod maxpool;
pub mod recurrent;
pub mod relu;
pub mod temporal;
pub mod transformer;

pub use affine::Affine;
pub use conv::Conv2d;
pub use embedding::Embedding;
pub use flatten::Flatten;
pub use loss::softmax_cross_entropy;
pub use maxpool::MaxPool2d;
pub use recurrent::{Lstm, Rnn};
pub use relu::Relu;
pub use temporal::{temporal_softmax_loss, TemporalAffine};

use tch::Tensor;

/// The gradients of one layer's backward pass.
pub struct LayerGradients {
    /// dLoss/dInput, shaped like the input.
    pub input: Tensor,
    /// dLoss/dParam for each parameter, in the order of the layer's `parameters()`.
    pub params: Vec<Tensor>,
}
