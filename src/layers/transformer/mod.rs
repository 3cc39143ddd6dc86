//! The layers of a Transformer decoder (Vaswani et al. 2017, as the course's
//! successor assignment builds its `CaptioningTransformer`), each with an
//! explicit backward pass in the style of the recurrent layers: the forward
//! pass returns what the backward pass needs (a `…States` value), the
//! backward pass takes it instead of the layer caching it, and both are
//! tensor operations only.
//!
//! - [`MultiHeadAttention`]: scaled dot-product attention over H heads with
//!   query, key, value and output projections and an optional mask
//!   ([`causal_mask`] for self-attention);
//! - [`LayerNorm`]: normalisation over the last dimension with its affine;
//! - [`FeedForward`]: position-wise affine–ReLU–affine;
//! - [`PositionalEncoding`]: the fixed sinusoids added to the word vectors,
//!   and [`GridPositionalEncoding`]: their two-dimensional kind, added to
//!   the image grid;
//! - [`Dropout`]: a mask drawn in the forward pass ([`DropoutMask`]) and
//!   handed to the backward pass;
//! - [`DecoderLayer`]: masked self-attention, cross-attention to a memory
//!   and the feed-forward block, each with dropout, a residual connection
//!   and a layer norm after it (post-norm).

pub mod attention;
pub mod decoder_layer;
pub mod dropout;
pub mod feed_forward;
pub mod layer_norm;
pub mod positional;

pub use attention::{causal_mask, AttentionStates, MultiHeadAttention, ProjectedMemory};
pub use decoder_layer::{DecoderLayer, DecoderLayerDims, DecoderLayerStates};
pub use dropout::{Dropout, DropoutMask};
pub use feed_forward::{FeedForward, FeedForwardStates};
pub use layer_norm::{LayerNorm, LayerNormStates};
pub use positional::{GridPositionalEncoding, PositionalEncoding};

use tch::Tensor;

/// The gradients of a layer that reads a target sequence `[N, S, E]` and a
/// memory `[N, L, M]` (attention, the decoder layer).
pub struct DecoderGradients {
    /// dLoss/dInput, `[N, S, E]`.
    pub input: Tensor,
    /// dLoss/dMemory, `[N, L, M]`.
    pub memory: Tensor,
    /// dLoss/dParam for each parameter, in the order of the layer's `parameters()`.
    pub params: Vec<Tensor>,
}

/// Sums `t` over every dimension but the last: a bias's gradient.
pub(crate) fn sum_but_last(t: &Tensor) -> Tensor {
    let leading: Vec<i64> = (0..t.dim() as i64 - 1).collect();
    t.sum_dim_intlist(leading.as_slice(), false, t.kind())
}
