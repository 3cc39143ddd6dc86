//! The captioning network: image features `[N, D]` → affine → `h0` `[N, H]`;
//! the caption's words but the last → embedding → RNN or LSTM → temporal
//! affine → scores `[N, T, V]`; loss against the words but the first, where
//! they are not `<NULL>`. Gradients by the layers' explicit backward passes
//! ([`CaptioningNet::loss_and_gradients`]) or by autograd over
//! [`CaptioningNet::loss`]; decoding one word at a time through the
//! [`Captioner`] seam. [`build`] makes the network a [`CellKind`] names.

use super::attend::AttentionNet;
use super::decoder::{Captioner, DecodeState, Step};
use super::transformer::TransformerNet;
use crate::choice_names::Named;
use crate::layers::recurrent::{Lstm, LstmStates, Rnn, SequenceGradients};
use crate::layers::temporal::{temporal_softmax_loss, temporal_softmax_loss_autograd};
use crate::layers::{Affine, Embedding, TemporalAffine};
use serde::{Deserialize, Serialize};
use tch::nn::{self, Module};
use tch::Tensor;

/// Which network captions: the course's recurrent cells over one pooled
/// feature vector, or a decoder that attends over the grid of features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CellKind {
    /// Vanilla tanh RNN over the pooled feature.
    Rnn,
    /// LSTM (gates i, f, o, g) over the pooled feature.
    Lstm,
    /// LSTM with soft attention over the feature grid (Show, Attend and Tell).
    Attention,
    /// Transformer decoder over the feature grid.
    Transformer,
}

impl CellKind {
    /// Whether the network takes the grid of features `[N, L, C]` rather
    /// than the pooled vector `[N, D]`.
    pub fn takes_grid(self) -> bool {
        matches!(self, CellKind::Attention | CellKind::Transformer)
    }
}

/// The network `cell` names, its variables under `p`.
pub fn build(p: &nn::Path, dims: Dims, cell: CellKind, tokens: SpecialTokens) -> anyhow::Result<Box<dyn Captioner>> {
    match cell {
        CellKind::Rnn | CellKind::Lstm => Ok(Box::new(CaptioningNet::new(p, dims, cell, tokens))),
        CellKind::Attention => Ok(Box::new(AttentionNet::new(p, dims, tokens))),
        CellKind::Transformer => Ok(Box::new(TransformerNet::new(p, dims, tokens)?)),
    }
}

/// The indices of the vocabulary's special words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecialTokens {
    pub null: i64,
    pub start: i64,
    pub end: i64,
}

/// The sizes of a captioning network (and the attention network's two
/// training-time regularisers).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Dims {
    /// Image feature width D.
    pub features: i64,
    /// Word vector width W.
    pub wordvec: i64,
    /// Hidden state width H.
    pub hidden: i64,
    /// Vocabulary size V.
    pub vocabulary: i64,
    /// The Transformer's attention heads (0 for the other cells).
    #[serde(default)]
    pub heads: i64,
    /// The Transformer's decoder layers (0 for the other cells).
    #[serde(default)]
    pub layers: i64,
    /// The attention network's attention width A (0 for the other cells).
    #[serde(default)]
    pub attention: i64,
    /// λ of the attention network's doubly stochastic penalty.
    #[serde(default)]
    pub attention_penalty: f64,
}

impl Dims {
    /// The sizes of a recurrent network (no heads, no layers).
    pub fn recurrent(features: i64, wordvec: i64, hidden: i64, vocabulary: i64) -> Self {
        Self { features, wordvec, hidden, vocabulary, ..Self::default() }
    }
}

enum Cell {
    Rnn(Rnn),
    Lstm(Lstm),
}

/// What a cell's backward pass needs of its forward pass.
enum CellStates {
    Rnn(Tensor),
    Lstm(LstmStates),
}

impl CellStates {
    fn hidden(&self) -> &Tensor {
        match self {
            CellStates::Rnn(h) => h,
            CellStates::Lstm(states) => &states.h,
        }
    }
}

impl Cell {
    fn forward(&self, words: &Tensor, h0: &Tensor) -> Tensor {
        match self {
            Cell::Rnn(rnn) => rnn.forward(words, h0),
            Cell::Lstm(lstm) => lstm.forward(words, h0),
        }
    }

    fn forward_states(&self, words: &Tensor, h0: &Tensor) -> CellStates {
        match self {
            Cell::Rnn(rnn) => CellStates::Rnn(rnn.forward(words, h0)),
            Cell::Lstm(lstm) => CellStates::Lstm(lstm.forward_states(words, h0)),
        }
    }

    fn backward(&self, words: &Tensor, h0: &Tensor, states: &CellStates, d_h: &Tensor) -> SequenceGradients {
        match (self, states) {
            (Cell::Rnn(rnn), CellStates::Rnn(h)) => rnn.backward(words, h0, h, d_h),
            (Cell::Lstm(lstm), CellStates::Lstm(states)) => lstm.backward(words, h0, states, d_h),
            _ => unreachable!("states come from the same cell's forward_states"),
        }
    }

    fn parameters(&self) -> Vec<Tensor> {
        match self {
            Cell::Rnn(rnn) => rnn.parameters(),
            Cell::Lstm(lstm) => lstm.parameters(),
        }
    }
}

pub struct CaptioningNet {
    pub dims: Dims,
    pub cell_kind: CellKind,
    pub tokens: SpecialTokens,
    /// Image features are standardized as `(f − mean) / std` before the
    /// projection (identity unless [`CaptioningNet::standardize_features`]);
    /// saved with the weights, not trained.
    feature_mean: Tensor,
    feature_std: Tensor,
    proj: Affine,
    embed: Embedding,
    cell: Cell,
    vocab: TemporalAffine,
}

impl CaptioningNet {
    /// A network with the assignment's initialisation, its variables under `p`
    /// named `proj.*`, `embed.weight`, `rnn.*` or `lstm.*`, `vocab.*`.
    pub fn new(p: &nn::Path, dims: Dims, cell_kind: CellKind, tokens: SpecialTokens) -> Self {
        let scale = |fan_in: i64| 1.0 / (fan_in as f64).sqrt();
        let cell = match cell_kind {
            CellKind::Rnn => Cell::Rnn(Rnn::new(&(p / "rnn"), dims.wordvec, dims.hidden)),
            // `build` gives the other kinds their own networks.
            _ => Cell::Lstm(Lstm::new(&(p / "lstm"), dims.wordvec, dims.hidden)),
        };
        Self {
            dims,
            cell_kind,
            tokens,
            feature_mean: p.zeros_no_train("feature_mean", &[dims.features]),
            feature_std: p.ones_no_train("feature_std", &[dims.features]),
            proj: Affine::new(p / "proj", dims.features, dims.hidden, scale(dims.features)),
            embed: Embedding::new(p / "embed", dims.vocabulary, dims.wordvec),
            cell,
            vocab: TemporalAffine::new(p / "vocab", dims.hidden, dims.vocabulary, scale(dims.hidden)),
        }
    }

    /// Every parameter, in the order of [`CaptioningNet::loss_and_gradients`]'
    /// gradients: `W_proj, b_proj, W_embed, Wx, Wh, b, W_vocab, b_vocab`.
    pub fn parameters(&self) -> Vec<Tensor> {
        [self.proj.parameters(), self.embed.parameters(), self.cell.parameters(), self.vocab.parameters()]
            .into_iter()
            .flatten()
            .collect()
    }

    /// Standardizes image features from now on by the per-dimension mean
    /// and standard deviation of `train_features` (dimensions that never
    /// vary are only centred).
    pub fn standardize_features(&mut self, train_features: &Tensor) {
        let features = train_features.to_device(self.feature_mean.device()).to_kind(self.feature_mean.kind());
        let mean = features.mean_dim([0i64].as_slice(), false, features.kind());
        let std = features.std_dim([0i64].as_slice(), false, false);
        let std = std.where_self(&std.gt(1e-6), &std.ones_like());
        tch::no_grad(|| {
            self.feature_mean.copy_(&mean);
            self.feature_std.copy_(&std);
        });
    }

    fn standardized(&self, features: &Tensor) -> Tensor {
        (features - &self.feature_mean) / &self.feature_std
    }

    /// [`CaptioningNet::parameters`] with their variable names.
    pub fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let cell = self.cell_kind.name();
        let names = ["proj.weight", "proj.bias", "embed.weight", "wx", "wh", "b", "vocab.weight", "vocab.bias"];
        let names = names.iter().map(|n| if n.contains('.') { n.to_string() } else { format!("{cell}.{n}") });
        names.zip(self.parameters()).collect()
    }

    /// The words fed in (all but the last), the words to predict (all but
    /// the first) and where those count (not `<NULL>`).
    fn split_captions(&self, captions: &Tensor) -> (Tensor, Tensor, Tensor) {
        let steps = captions.size()[1] - 1;
        let targets = captions.narrow(1, 1, steps);
        let mask = targets.ne(self.tokens.null);
        (captions.narrow(1, 0, steps), targets, mask)
    }

    /// The loss by tensor operations only (what autograd differentiates).
    pub fn loss(&self, features: &Tensor, captions: &Tensor) -> Tensor {
        let (inputs, targets, mask) = self.split_captions(captions);
        let h0 = self.proj.forward(&self.standardized(features));
        let words = self.embed.forward(&inputs);
        let states = self.cell.forward(&words, &h0);
        temporal_softmax_loss_autograd(&self.vocab.forward(&states), &targets, &mask)
    }

    /// The loss and every parameter's gradient (in [`CaptioningNet::parameters`]
    /// order) by the explicit backward passes.
    pub fn loss_and_gradients(&self, features: &Tensor, captions: &Tensor) -> (Tensor, Vec<Tensor>) {
        let (inputs, targets, mask) = self.split_captions(captions);
        let features = self.standardized(features);
        let h0 = self.proj.forward(&features);
        let words = self.embed.forward(&inputs);
        let cell_states = self.cell.forward_states(&words, &h0);
        let states = cell_states.hidden();
        let (loss, d_scores) = temporal_softmax_loss(&self.vocab.forward(states), &targets, &mask);
        let vocab_grads = self.vocab.backward(states, &d_scores);
        let cell_grads = self.cell.backward(&words, &h0, &cell_states, &vocab_grads.input);
        let embed_grads = self.embed.parameter_gradients(&inputs, &cell_grads.input);
        // The features need no gradient, so the projection's dX is skipped.
        let proj_grads = self.proj.parameter_gradients(&features, &cell_grads.h0);
        (loss, [proj_grads, embed_grads, cell_grads.params, vocab_grads.params].into_iter().flatten().collect())
    }
}

impl Captioner for CaptioningNet {
    fn tokens(&self) -> SpecialTokens {
        self.tokens
    }

    fn standardize_features(&mut self, train_features: &Tensor) {
        CaptioningNet::standardize_features(self, train_features)
    }

    /// `[h0, c0]` (`c0` unused by the RNN).
    fn begin(&self, features: &Tensor) -> DecodeState {
        let h = self.proj.forward(&self.standardized(features));
        let c = h.zeros_like();
        DecodeState(vec![h, c])
    }

    fn step(&self, state: &DecodeState, words: &Tensor) -> Step {
        let [h, c] = [&state.0[0], &state.0[1]];
        let x = self.embed.forward(words);
        let (h, c) = match &self.cell {
            Cell::Rnn(rnn) => (rnn.step(&x, h), c.shallow_clone()),
            Cell::Lstm(lstm) => lstm.step(&x, h, c),
        };
        let log_probs = self.vocab.0.forward(&h).log_softmax(-1, h.kind());
        Step { log_probs, state: DecodeState(vec![h, c]), attention: None }
    }
}
