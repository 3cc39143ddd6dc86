//! The attention captioning network of *Show, Attend and Tell* (Xu et al.
//! 2015): a grid of image features `[N, L, C]`, standardized per channel;
//! the caption's words but the last → embedding → the attention LSTM
//! (`h0, c0` from the mean grid feature; at every step soft attention with
//! `h_{t-1}` over the grid, gated, read with the word) → the deep output
//! (word, hidden state and context to the scores, dropout while training) →
//! loss against the words but the first where they are not `<NULL>`, plus
//! the doubly stochastic penalty over the same steps. Gradients by the
//! layers' explicit backward passes ([`AttentionNet::loss_and_gradients`])
//! or by autograd over [`AttentionNet::loss`]; decoding through the
//! [`Captioner`] seam, with each step's attention weights.
//!
//! The deep output rather than scores from `h_t` alone: the word a step
//! names is the thing it attends to, and the deep output gives the
//! context a path to the scores that does not pass through the LSTM's
//! gates (the paper's equation 7; the authors' code adds the tanh).

use super::decoder::{Captioner, DecodeState, Step};
use super::model::{Dims, SpecialTokens};
use super::net_parts::{DropoutRate, FeatureScaler};
use crate::grad::HandDerived;
use crate::layers::attention::{
    attention_penalty, attention_penalty_autograd, dropout_mask, AttentionLstm, DeepOutput, GridGradient,
};
use crate::layers::temporal::{temporal_softmax_loss, temporal_softmax_loss_autograd};
use crate::layers::Embedding;
use tch::nn::{self, Module};
use tch::Tensor;

pub struct AttentionNet {
    pub dims: Dims,
    pub tokens: SpecialTokens,
    scaler: FeatureScaler,
    embed: Embedding,
    decoder: AttentionLstm,
    output: DeepOutput,
    /// The deep output's, set through [`Captioner::set_dropout`].
    dropout: DropoutRate,
}

/// The names of [`AttentionNet::parameters`], in order.
const PARAMETER_NAMES: [&str; 19] = [
    "embed.weight",
    "init_h.weight",
    "init_h.bias",
    "init_c.weight",
    "init_c.bias",
    "attention.grid_weight",
    "attention.hidden_weight",
    "attention.bias",
    "attention.score",
    "gate.weight",
    "gate.bias",
    "lstm.wx",
    "lstm.wh",
    "lstm.b",
    "output.hidden_weight",
    "output.context_weight",
    "output.bias",
    "vocab.weight",
    "vocab.bias",
];

impl AttentionNet {
    /// The network for `dims` (`features` is the grid's channel count C,
    /// `attention` the attention width A), its variables under `p`.
    pub fn new(p: &nn::Path, dims: Dims, tokens: SpecialTokens) -> Self {
        let Dims { features: channels, wordvec, hidden, vocabulary, attention, .. } = dims;
        Self {
            dims,
            tokens,
            scaler: FeatureScaler::new(p, channels),
            embed: Embedding::new(p / "embed", vocabulary, wordvec),
            decoder: AttentionLstm::new(p, wordvec, channels, hidden, attention),
            output: DeepOutput::new(p, wordvec, channels, hidden, vocabulary),
            dropout: DropoutRate::default(),
        }
    }

    /// Every parameter, in the order of [`AttentionNet::loss_and_gradients`]'
    /// gradients: embedding, attention LSTM, deep output.
    pub fn parameters(&self) -> Vec<Tensor> {
        [self.embed.parameters(), self.decoder.parameters(), self.output.parameters()].into_iter().flatten().collect()
    }

    fn standardized(&self, features: &Tensor) -> Tensor {
        self.scaler.apply(features)
    }

    /// The words fed in (all but the last), the words to predict (all but
    /// the first) and where those count (not `<NULL>`).
    fn split_captions(&self, captions: &Tensor) -> (Tensor, Tensor, Tensor) {
        let steps = captions.size()[1] - 1;
        let targets = captions.narrow(1, 1, steps);
        let mask = targets.ne(self.tokens.null);
        (captions.narrow(1, 0, steps), targets, mask)
    }

    /// The deep output's dropout mask for word vectors like `words`, or `None`.
    fn dropout(&self, words: &Tensor) -> Option<Tensor> {
        dropout_mask(words, self.dropout.get())
    }

    /// The loss by tensor operations only (what autograd differentiates),
    /// with dropout at the rate last set.
    pub fn loss(&self, features: &Tensor, captions: &Tensor) -> Tensor {
        let (inputs, targets, mask) = self.split_captions(captions);
        let grid = self.standardized(features);
        let words = self.embed.forward(&inputs);
        let states = self.decoder.forward(&grid, &words);
        let keep = self.dropout(&words);
        let scores = self.output.forward(&words, &states.h, &states.gated, keep.as_ref()).scores;
        temporal_softmax_loss_autograd(&scores, &targets, &mask)
            + attention_penalty_autograd(&states.weights, &mask, self.dims.attention_penalty)
    }

    /// The loss (with dropout at the rate last set) and every
    /// parameter's gradient, in [`AttentionNet::parameters`] order, by the
    /// explicit backward passes.
    pub fn loss_and_gradients(&self, features: &Tensor, captions: &Tensor) -> (Tensor, Vec<Tensor>) {
        let (inputs, targets, mask) = self.split_captions(captions);
        let grid = self.standardized(features);
        let words = self.embed.forward(&inputs);
        let states = self.decoder.forward(&grid, &words);
        let keep = self.dropout(&words);
        let out = self.output.forward(&words, &states.h, &states.gated, keep.as_ref());
        let (word_loss, d_scores) = temporal_softmax_loss(&out.scores, &targets, &mask);
        let (penalty, d_weights) = attention_penalty(&states.weights, &mask, self.dims.attention_penalty);
        let output_grads = self.output.backward((&states.h, &states.gated), &out, keep.as_ref(), &d_scores);
        let upstream = (&output_grads.hidden, &output_grads.gated, &d_weights);
        // The grid is data: its gradient is skipped.
        let decoder_grads = self.decoder.backward(&grid, &words, &states, upstream, GridGradient::Skipped);
        let embed_grads = self.embed.parameter_gradients(&inputs, &(output_grads.words + decoder_grads.words));
        let grads = [embed_grads, decoder_grads.params, output_grads.params].into_iter().flatten().collect();
        (word_loss + penalty, grads)
    }
}

impl Captioner for AttentionNet {
    fn tokens(&self) -> SpecialTokens {
        self.tokens
    }

    fn standardize_features(&mut self, train_features: &Tensor) {
        self.scaler.fit(train_features);
    }

    fn set_dropout(&self, rate: f64) {
        self.dropout.set(rate);
    }

    /// `[grid, a·W_a, h0, c0]`.
    fn begin(&self, features: &Tensor) -> DecodeState {
        let grid = self.standardized(features);
        let (projected, h0, c0) = self.decoder.begin(&grid);
        DecodeState(vec![grid, projected, h0, c0])
    }

    fn step(&self, state: &DecodeState, words: &Tensor) -> Step {
        let [grid, projected, h, c] = [&state.0[0], &state.0[1], &state.0[2], &state.0[3]];
        let x = self.embed.forward(words);
        let next = self.decoder.step(grid, projected, &x, h, c);
        let scores = self.output.forward(&x, &next.h, &next.gated, None).scores;
        Step {
            log_probs: scores.log_softmax(-1, scores.kind()),
            state: DecodeState(vec![grid.shallow_clone(), projected.shallow_clone(), next.h, next.c]),
            attention: Some(next.weights),
        }
    }
}

impl HandDerived for AttentionNet {
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        PARAMETER_NAMES.iter().map(|name| name.to_string()).zip(self.parameters()).collect()
    }

    fn loss(&self, features: &Tensor, captions: &Tensor) -> Tensor {
        AttentionNet::loss(self, features, captions)
    }

    fn loss_and_gradients(&self, features: &Tensor, captions: &Tensor) -> (Tensor, Vec<Tensor>) {
        AttentionNet::loss_and_gradients(self, features, captions)
    }
}
