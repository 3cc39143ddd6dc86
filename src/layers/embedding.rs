//! Word embedding: row lookup `out[n, t] = W[x[n, t]]` of integer tokens.
//! Backward: the upstream rows scatter-added into `dW` (a word used twice
//! gets both gradients); the integer input has no gradient.

use tch::nn::{self, Module};
use tch::Tensor;

#[derive(Debug)]
pub struct Embedding {
    /// `[vocabulary, width]`.
    pub weight: Tensor,
}

impl Embedding {
    /// Weights ~ N(0, 0.01²), as the assignment initialises them.
    pub fn new(p: nn::Path, vocabulary: i64, width: i64) -> Self {
        Self { weight: p.var("weight", &[vocabulary, width], nn::Init::Randn { mean: 0.0, stdev: 0.01 }) }
    }

    pub fn parameters(&self) -> Vec<Tensor> {
        vec![self.weight.shallow_clone()]
    }

    /// `[dW]` for integer tokens `[N, T]` and the upstream gradient `[N, T, width]`.
    pub fn parameter_gradients(&self, tokens: &Tensor, upstream: &Tensor) -> Vec<Tensor> {
        let width = self.weight.size()[1];
        let d_weight = self.weight.zeros_like().index_add(0, &tokens.reshape([-1]), &upstream.reshape([-1, width]));
        vec![d_weight]
    }
}

impl Module for Embedding {
    fn forward(&self, tokens: &Tensor) -> Tensor {
        let mut shape = tokens.size();
        shape.push(self.weight.size()[1]);
        self.weight.index_select(0, &tokens.reshape([-1])).reshape(shape)
    }
}
