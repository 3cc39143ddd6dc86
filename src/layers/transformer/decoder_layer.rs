//! One Transformer decoder layer, post-norm as in Vaswani et al. and the
//! course's `TransformerDecoderLayer` (and `nn.TransformerDecoderLayer`'s
//! default): three blocks, each `x ← LayerNorm(x + Dropout(sublayer(x)))`,
//! the sublayers being masked self-attention over the words, cross-attention
//! from the words to the memory (the image grid), and the feed-forward
//! block. Post-norm because it is the model the course builds and the
//! PyTorch reference runs unchanged; at two layers it trains without the
//! warm-up that deep post-norm stacks need.
//!
//! Backward runs the blocks in reverse: through each norm, then the
//! residual's gradient plus the sublayer's through the same dropout mask.

use super::attention::{AttentionStates, MultiHeadAttention, ProjectedMemory};
use super::dropout::{Dropout, DropoutMask};
use super::feed_forward::{FeedForward, FeedForwardStates};
use super::layer_norm::{LayerNorm, LayerNormStates};
use super::DecoderGradients;
use tch::nn;
use tch::Tensor;

#[derive(Debug)]
pub struct DecoderLayer {
    pub self_attention: MultiHeadAttention,
    pub self_norm: LayerNorm,
    pub cross_attention: MultiHeadAttention,
    pub cross_norm: LayerNorm,
    pub feed_forward: FeedForward,
    pub feed_forward_norm: LayerNorm,
}

/// A residual block's states: the dropout mask on the sublayer's output,
/// the sum fed to the norm and the norm's states (its output is the block's).
pub struct BlockStates {
    pub mask: DropoutMask,
    pub sum: Tensor,
    pub norm: LayerNormStates,
}

/// What the layer's forward pass computed, block by block.
pub struct DecoderLayerStates {
    pub self_attention: AttentionStates,
    pub self_block: BlockStates,
    pub cross_attention: AttentionStates,
    pub cross_block: BlockStates,
    pub feed_forward: FeedForwardStates,
    pub feed_forward_block: BlockStates,
}

impl DecoderLayerStates {
    /// The layer's output `[N, S, E]`.
    pub fn output(&self) -> &Tensor {
        &self.feed_forward_block.norm.output
    }

    /// The cross-attention weights `[N, H, S, L]`.
    pub fn cross_weights(&self) -> &Tensor {
        &self.cross_attention.weights
    }
}

/// The sizes of a decoder layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecoderLayerDims {
    /// d_model E.
    pub width: i64,
    /// The memory's width M.
    pub memory_width: i64,
    pub heads: i64,
    /// The feed-forward block's hidden width F.
    pub feed_forward: i64,
}

fn block(residual: &Tensor, sublayer: &Tensor, norm: &LayerNorm, dropout: Dropout) -> BlockStates {
    let mask = dropout.mask(sublayer);
    let sum = residual + mask.apply(sublayer);
    let norm = norm.forward_states(&sum);
    BlockStates { mask, sum, norm }
}

/// The gradient of the block's residual input (which is also its sum's),
/// the sublayer output's, and the norm's `[dγ, dβ]`.
fn block_backward(norm: &LayerNorm, states: &BlockStates, upstream: &Tensor) -> (Tensor, Tensor, Vec<Tensor>) {
    let through_norm = norm.backward(&states.sum, &states.norm, upstream);
    let d_sublayer = states.mask.backward(&through_norm.input);
    (through_norm.input, d_sublayer, through_norm.params)
}

impl DecoderLayer {
    /// Weights ~ N(0, `weight_scale`²), zero biases, norms γ = 1, β = 0;
    /// variables `self_attention.*`, `self_norm.*`, `cross_attention.*`,
    /// `cross_norm.*`, `feed_forward.*`, `feed_forward_norm.*`.
    pub fn new(p: &nn::Path, dims: DecoderLayerDims, weight_scale: f64) -> Self {
        let DecoderLayerDims { width, memory_width, heads, feed_forward } = dims;
        Self {
            self_attention: MultiHeadAttention::new(&(p / "self_attention"), width, width, heads, weight_scale),
            self_norm: LayerNorm::new(p / "self_norm", width),
            cross_attention: MultiHeadAttention::new(
                &(p / "cross_attention"),
                width,
                memory_width,
                heads,
                weight_scale,
            ),
            cross_norm: LayerNorm::new(p / "cross_norm", width),
            feed_forward: FeedForward::new(&(p / "feed_forward"), width, feed_forward, weight_scale),
            feed_forward_norm: LayerNorm::new(p / "feed_forward_norm", width),
        }
    }

    /// The names of [`DecoderLayer::parameters`], relative to the layer.
    pub fn parameter_names() -> Vec<String> {
        let attention = ["query", "key", "value", "output"];
        let affine = |block: &str, parts: &[&str]| -> Vec<String> {
            parts.iter().flat_map(|part| ["weight", "bias"].map(|v| format!("{block}.{part}.{v}"))).collect()
        };
        let norm = |name: &str| vec![format!("{name}.weight"), format!("{name}.bias")];
        [
            affine("self_attention", &attention),
            norm("self_norm"),
            affine("cross_attention", &attention),
            norm("cross_norm"),
            affine("feed_forward", &["first", "second"]),
            norm("feed_forward_norm"),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// Self-attention's, its norm's, cross-attention's, its norm's, the
    /// feed-forward block's and its norm's parameters, in that order.
    pub fn parameters(&self) -> Vec<Tensor> {
        [
            self.self_attention.parameters(),
            self.self_norm.parameters(),
            self.cross_attention.parameters(),
            self.cross_norm.parameters(),
            self.feed_forward.parameters(),
            self.feed_forward_norm.parameters(),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// The layer over `x` `[N, S, E]` attending to `memory` `[N, L, M]`;
    /// `self_mask` `[S, S]` (normally [`super::causal_mask`]); `dropout`
    /// on each sublayer's output (its masks drawn in the blocks' order).
    pub fn forward_states(
        &self,
        x: &Tensor,
        memory: &Tensor,
        self_mask: Option<&Tensor>,
        dropout: Dropout,
    ) -> DecoderLayerStates {
        self.forward_projected(x, &self.cross_attention.project_memory(memory), self_mask, dropout)
    }

    /// [`DecoderLayer::forward_states`] from the memory's keys and values
    /// for cross-attention ([`MultiHeadAttention::project_memory`]).
    pub fn forward_projected(
        &self,
        x: &Tensor,
        memory: &ProjectedMemory,
        self_mask: Option<&Tensor>,
        dropout: Dropout,
    ) -> DecoderLayerStates {
        let self_attention = self.self_attention.forward_states(x, x, self_mask);
        let self_block = block(x, &self_attention.output, &self.self_norm, dropout);
        let attended = &self_block.norm.output;
        let cross_attention = self.cross_attention.attend(attended, memory, None);
        let cross_block = block(attended, &cross_attention.output, &self.cross_norm, dropout);
        let informed = &cross_block.norm.output;
        let feed_forward = self.feed_forward.forward_states(informed);
        let feed_forward_block = block(informed, &feed_forward.output, &self.feed_forward_norm, dropout);
        DecoderLayerStates {
            self_attention,
            self_block,
            cross_attention,
            cross_block,
            feed_forward,
            feed_forward_block,
        }
    }

    pub fn forward(&self, x: &Tensor, memory: &Tensor, self_mask: Option<&Tensor>, dropout: Dropout) -> Tensor {
        self.forward_states(x, memory, self_mask, dropout).output().shallow_clone()
    }

    /// `dx`, `dmemory` and every parameter's gradient (in
    /// [`DecoderLayer::parameters`] order) from the forward's states and `dy`.
    pub fn backward(
        &self,
        x: &Tensor,
        memory: &Tensor,
        states: &DecoderLayerStates,
        upstream: &Tensor,
    ) -> DecoderGradients {
        let attended = &states.self_block.norm.output;
        let informed = &states.cross_block.norm.output;

        let (d_informed, d_sublayer, feed_forward_norm) =
            block_backward(&self.feed_forward_norm, &states.feed_forward_block, upstream);
        let feed_forward = self.feed_forward.backward(informed, &states.feed_forward, &d_sublayer);
        let d_informed = d_informed + feed_forward.input;

        let (d_attended, d_sublayer, cross_norm) = block_backward(&self.cross_norm, &states.cross_block, &d_informed);
        let cross = self.cross_attention.backward(attended, memory, &states.cross_attention, &d_sublayer);
        let d_attended = d_attended + cross.input;

        let (d_x, d_sublayer, self_norm) = block_backward(&self.self_norm, &states.self_block, &d_attended);
        let own = self.self_attention.backward(x, x, &states.self_attention, &d_sublayer);
        DecoderGradients {
            input: d_x + own.input + own.memory,
            memory: cross.memory,
            params: [own.params, self_norm, cross.params, cross_norm, feed_forward.params, feed_forward_norm]
                .into_iter()
                .flatten()
                .collect(),
        }
    }
}
