//! Scaled dot-product multi-head attention. Queries come from a sequence
//! `x` `[N, S, E]`, keys and values from a memory `m` `[N, L, M]` (the
//! sequence itself for self-attention, the image grid for cross-attention):
//! `Q = x·W_q + b_q`, `K = m·W_k + b_k`, `V = m·W_v + b_v` (each `[…, E]`,
//! split into H heads of E/H), per head `A = softmax(Q·Kᵀ/√(E/H))` over the
//! L keys (a masked key gets weight 0), `C = A·V`, and the heads' contexts
//! joined and projected: `y = C·W_o + b_o`.
//!
//! Backward from the forward's states: `dC = dy·W_oᵀ`, `dA = dC·Vᵀ`,
//! `dV = Aᵀ·dC`, the softmax's `dS = A ⊙ (dA − Σ_l dA ⊙ A)` (zero where
//! masked, since A is), `dQ = dS·K/√(E/H)`, `dK = dSᵀ·Q/√(E/H)`, then the
//! projections' backward passes; the memory's gradient is the key and value
//! paths' sum.

use super::DecoderGradients;
use crate::layers::temporal::TemporalAffine;
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

#[derive(Debug)]
pub struct MultiHeadAttention {
    pub query: TemporalAffine,
    pub key: TemporalAffine,
    pub value: TemporalAffine,
    pub output: TemporalAffine,
    pub heads: i64,
}

/// What the forward pass computed, per head where it has a head dimension.
pub struct AttentionStates {
    /// `[N, H, S, E/H]`.
    pub queries: Tensor,
    /// `[N, H, L, E/H]`.
    pub keys: Tensor,
    /// `[N, H, L, E/H]`.
    pub values: Tensor,
    /// The attention weights A `[N, H, S, L]`.
    pub weights: Tensor,
    /// The heads' contexts joined, `[N, S, E]`.
    pub context: Tensor,
    /// y `[N, S, E]`.
    pub output: Tensor,
}

/// A memory's keys and values, `[N, H, L, E/H]` each.
pub struct ProjectedMemory {
    pub keys: Tensor,
    pub values: Tensor,
}

/// The mask of self-attention over `steps` positions: `[S, S]`, true where
/// a query may attend to a key (itself and the positions before it).
pub fn causal_mask(steps: i64, device: Device) -> Tensor {
    Tensor::ones([steps, steps], (Kind::Bool, device)).tril(0)
}

impl MultiHeadAttention {
    /// Projections of width `width` (E, divisible by `heads`) from inputs of
    /// `width` (queries) and `memory_width` (keys and values), weights
    /// ~ N(0, `weight_scale`²), zero biases; variables `query.*`, `key.*`,
    /// `value.*`, `output.*`.
    pub fn new(p: &nn::Path, width: i64, memory_width: i64, heads: i64, weight_scale: f64) -> Self {
        assert!(heads > 0 && width % heads == 0, "the width {width} must split into {heads} heads");
        Self {
            query: TemporalAffine::new(p / "query", width, width, weight_scale),
            key: TemporalAffine::new(p / "key", memory_width, width, weight_scale),
            value: TemporalAffine::new(p / "value", memory_width, width, weight_scale),
            output: TemporalAffine::new(p / "output", width, width, weight_scale),
            heads,
        }
    }

    /// `[W_q, b_q, W_k, b_k, W_v, b_v, W_o, b_o]`.
    pub fn parameters(&self) -> Vec<Tensor> {
        [&self.query, &self.key, &self.value, &self.output].iter().flat_map(|a| a.parameters()).collect()
    }

    fn head_width(&self) -> i64 {
        self.output.0.weight.size()[0] / self.heads
    }

    /// `[N, T, E]` → `[N, H, T, E/H]`.
    fn split_heads(&self, x: &Tensor) -> Tensor {
        let size = x.size();
        x.view([size[0], size[1], self.heads, -1]).transpose(1, 2)
    }

    /// `[N, H, T, E/H]` → `[N, T, E]`.
    fn join_heads(x: &Tensor) -> Tensor {
        let size = x.size();
        x.transpose(1, 2).reshape([size[0], size[2], -1])
    }

    /// The keys and values of `memory` `[N, L, M]`, split into heads: what
    /// cross-attention computes once per image when decoding word by word.
    pub fn project_memory(&self, memory: &Tensor) -> ProjectedMemory {
        ProjectedMemory {
            keys: self.split_heads(&self.key.forward(memory)),
            values: self.split_heads(&self.value.forward(memory)),
        }
    }

    /// Attention of `x` `[N, S, E]` to `memory` `[N, L, M]`; `mask` `[S, L]`
    /// (true where a query may attend to a key; every row needs one).
    pub fn forward_states(&self, x: &Tensor, memory: &Tensor, mask: Option<&Tensor>) -> AttentionStates {
        self.attend(x, &self.project_memory(memory), mask)
    }

    /// [`MultiHeadAttention::forward_states`] with the memory already projected.
    pub fn attend(&self, x: &Tensor, memory: &ProjectedMemory, mask: Option<&Tensor>) -> AttentionStates {
        let queries = self.split_heads(&self.query.forward(x));
        let (keys, values) = (memory.keys.shallow_clone(), memory.values.shallow_clone());
        let scale = 1.0 / (self.head_width() as f64).sqrt();
        let mut scores = queries.matmul(&keys.transpose(-2, -1)) * scale;
        if let Some(mask) = mask {
            scores = scores.masked_fill(&mask.logical_not(), f64::NEG_INFINITY);
        }
        let weights = scores.softmax(-1, scores.kind());
        let context = Self::join_heads(&weights.matmul(&values));
        let output = self.output.forward(&context);
        AttentionStates { queries, keys, values, weights, context, output }
    }

    pub fn forward(&self, x: &Tensor, memory: &Tensor, mask: Option<&Tensor>) -> Tensor {
        self.forward_states(x, memory, mask).output
    }

    /// `dx`, `dmemory` and the parameters' gradients from the inputs, the
    /// forward's states and `dy` `[N, S, E]`. For self-attention (memory = x)
    /// the caller adds `input` and `memory`.
    pub fn backward(
        &self,
        x: &Tensor,
        memory: &Tensor,
        states: &AttentionStates,
        upstream: &Tensor,
    ) -> DecoderGradients {
        let output = self.output.backward(&states.context, upstream);
        let d_context = self.split_heads(&output.input);
        let weights = &states.weights;
        let d_weights = d_context.matmul(&states.values.transpose(-2, -1));
        let d_values = weights.transpose(-2, -1).matmul(&d_context);
        let row_dot = (&d_weights * weights).sum_dim_intlist([-1i64].as_slice(), true, weights.kind());
        let scale = 1.0 / (self.head_width() as f64).sqrt();
        let d_scores = weights * (d_weights - row_dot) * scale;
        let d_queries = d_scores.matmul(&states.keys);
        let d_keys = d_scores.transpose(-2, -1).matmul(&states.queries);
        let query = self.query.backward(x, &Self::join_heads(&d_queries));
        let key = self.key.backward(memory, &Self::join_heads(&d_keys));
        let value = self.value.backward(memory, &Self::join_heads(&d_values));
        DecoderGradients {
            input: query.input,
            memory: key.input + value.input,
            params: [query.params, key.params, value.params, output.params].into_iter().flatten().collect(),
        }
    }
}
