//! The Transformer captioning network (`--cell transformer`), the course's
//! successor `CaptioningTransformer` over a grid of image features:
//!
//! - memory: the grid `[N, L, C]` (a pooled `[N, C]` is a grid of one
//!   location), standardized per channel, projected to d_model E = `wordvec`,
//!   plus a two-dimensional sinusoidal encoding of each location (DETR's:
//!   attention alone does not know where a location is, and the captions
//!   say where each digit is);
//! - words: the caption's words but the last → embedding (E) → + sinusoidal
//!   positional encoding → dropout;
//! - K = `layers` post-norm decoder layers (masked self-attention over the
//!   words, cross-attention to the memory, feed-forward of width F =
//!   `hidden`), H = `heads` heads;
//! - temporal affine to the V words and the masked temporal softmax loss
//!   against the words but the first.
//!
//! Gradients by the layers' explicit backward passes
//! ([`TransformerNet::loss_and_gradients`]) or by autograd over
//! [`TransformerNet::loss`], both through the same forward pass. Dropout is
//! on only at the rate [`Captioner::set_dropout`] last set (the run's
//! `--dropout` during training steps, else 0). Decoding recomputes the
//! decoder over the words so far at every step (captions are short); the
//! memory and each layer's cross-attention keys and values are computed
//! once, in `begin`.

use super::decoder::{Captioner, DecodeState, Step};
use super::model::{Dims, SpecialTokens};
use super::net_parts::{DropoutRate, FeatureScaler};
use crate::grad::HandDerived;
use crate::layers::temporal::{temporal_softmax_loss, temporal_softmax_loss_autograd};
use crate::layers::transformer::{
    causal_mask, DecoderLayer, DecoderLayerDims, DecoderLayerStates, Dropout, DropoutMask, GridPositionalEncoding,
    PositionalEncoding, ProjectedMemory,
};
use crate::layers::{Embedding, TemporalAffine};
use tch::nn::{self, Module};
use tch::{Kind, Tensor};

/// The standard deviation of every initial weight, as the course's
/// `CaptioningTransformer` initialises its linear layers (biases 0, norms 1 and 0).
const WEIGHT_STD: f64 = 0.02;

pub struct TransformerNet {
    pub dims: Dims,
    pub tokens: SpecialTokens,
    /// `(f − mean) / std` per channel before the projection (identity
    /// unless standardized); saved with the weights, not trained.
    scaler: FeatureScaler,
    proj: TemporalAffine,
    embed: Embedding,
    layers: Vec<DecoderLayer>,
    vocab: TemporalAffine,
    /// Set through [`Captioner::set_dropout`].
    dropout: DropoutRate,
}

/// The decoder's pass over the words.
struct DecoderStates {
    embedding_mask: DropoutMask,
    /// The input of each decoder layer, then the last layer's output.
    layer_inputs: Vec<Tensor>,
    layers: Vec<DecoderLayerStates>,
}

impl DecoderStates {
    fn output(&self) -> &Tensor {
        self.layer_inputs.last().expect("the embedded words at least")
    }
}

/// What the explicit backward pass needs of the forward pass.
struct ForwardStates {
    /// The projected memory `[N, L, E]`.
    memory: Tensor,
    decoder: DecoderStates,
}

impl TransformerNet {
    /// A network of `dims.layers` decoder layers of width `dims.wordvec`
    /// with `dims.heads` heads and feed-forward width `dims.hidden`; its
    /// variables under `p` named `proj.*`, `embed.weight`,
    /// `layers.K.<layer's names>`, `vocab.*`, `feature_mean`, `feature_std`.
    pub fn new(p: &nn::Path, dims: Dims, tokens: SpecialTokens) -> anyhow::Result<Self> {
        let width = dims.wordvec;
        anyhow::ensure!(dims.heads >= 1 && dims.layers >= 1, "a transformer needs heads and layers, not {dims:?}");
        anyhow::ensure!(
            width % dims.heads == 0,
            "--heads {} must divide the model width --wordvec {width}",
            dims.heads
        );
        let layer_dims = DecoderLayerDims { width, memory_width: width, heads: dims.heads, feed_forward: dims.hidden };
        let layers = (0..dims.layers).map(|k| DecoderLayer::new(&(p / "layers" / k), layer_dims, WEIGHT_STD)).collect();
        Ok(Self {
            dims,
            tokens,
            scaler: FeatureScaler::new(p, dims.features),
            proj: TemporalAffine::new(p / "proj", dims.features, width, WEIGHT_STD),
            embed: Embedding::new(p / "embed", dims.vocabulary, width),
            layers,
            vocab: TemporalAffine::new(p / "vocab", width, dims.vocabulary, WEIGHT_STD),
            dropout: DropoutRate::default(),
        })
    }

    /// Every parameter, in the order of [`TransformerNet::loss_and_gradients`]'
    /// gradients: the projection's, the embedding's, each layer's, the output's.
    pub fn parameters(&self) -> Vec<Tensor> {
        let layers = self.layers.iter().flat_map(DecoderLayer::parameters);
        self.proj
            .parameters()
            .into_iter()
            .chain(self.embed.parameters())
            .chain(layers)
            .chain(self.vocab.parameters())
            .collect()
    }

    /// [`TransformerNet::parameters`] with their variable names.
    pub fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let layer_names = (0..self.layers.len())
            .flat_map(|k| DecoderLayer::parameter_names().into_iter().map(move |n| format!("layers.{k}.{n}")));
        let names = ["proj.weight", "proj.bias", "embed.weight"]
            .into_iter()
            .map(String::from)
            .chain(layer_names)
            .chain(["vocab.weight".to_owned(), "vocab.bias".to_owned()]);
        names.zip(self.parameters()).collect()
    }

    fn dropout(&self) -> Dropout {
        Dropout::new(self.dropout.get())
    }

    /// The features as a grid `[N, L, C]`, standardized per channel.
    fn standardized_grid(&self, features: &Tensor) -> Tensor {
        let grid = if features.dim() == 2 { features.unsqueeze(1) } else { features.shallow_clone() };
        self.scaler.apply(&grid)
    }

    /// The words fed in (all but the last), the words to predict (all but
    /// the first) and where those count (not `<NULL>`).
    fn split_captions(&self, captions: &Tensor) -> (Tensor, Tensor, Tensor) {
        let steps = captions.size()[1] - 1;
        let targets = captions.narrow(1, 1, steps);
        let mask = targets.ne(self.tokens.null);
        (captions.narrow(1, 0, steps), targets, mask)
    }

    /// Each layer's cross-attention keys and values of `memory` `[N, L, E]`.
    fn project_memory(&self, memory: &Tensor) -> Vec<ProjectedMemory> {
        self.layers.iter().map(|layer| layer.cross_attention.project_memory(memory)).collect()
    }

    /// The decoder over the words `[N, T]` attending to each layer's
    /// projected memory. Dropout masks are drawn in a fixed order (the
    /// words, then each layer's).
    fn decode_words(&self, memories: &[ProjectedMemory], words: &Tensor) -> DecoderStates {
        let dropout = self.dropout();
        let embedded = PositionalEncoding.forward(&self.embed.forward(words));
        let embedding_mask = dropout.mask(&embedded);
        let mut layer_inputs = vec![embedding_mask.apply(&embedded)];
        let causal = causal_mask(words.size()[1], words.device());
        let mut layers = Vec::with_capacity(self.layers.len());
        for (layer, memory) in self.layers.iter().zip(memories) {
            let states = layer.forward_projected(layer_inputs.last().unwrap(), memory, Some(&causal), dropout);
            layer_inputs.push(states.output().shallow_clone());
            layers.push(states);
        }
        DecoderStates { embedding_mask, layer_inputs, layers }
    }

    /// The network over the grid `[N, L, C]` (standardized) and the words `[N, T]`.
    fn forward_states(&self, grid: &Tensor, words: &Tensor) -> ForwardStates {
        let memory = GridPositionalEncoding.forward(&self.proj.forward(grid));
        let decoder = self.decode_words(&self.project_memory(&memory), words);
        ForwardStates { memory, decoder }
    }

    /// The loss by tensor operations only (what autograd differentiates).
    pub fn loss(&self, features: &Tensor, captions: &Tensor) -> Tensor {
        let (inputs, targets, mask) = self.split_captions(captions);
        let states = self.forward_states(&self.standardized_grid(features), &inputs);
        temporal_softmax_loss_autograd(&self.vocab.forward(states.decoder.output()), &targets, &mask)
    }

    /// The loss and every parameter's gradient (in [`TransformerNet::parameters`]
    /// order) by the explicit backward passes.
    pub fn loss_and_gradients(&self, features: &Tensor, captions: &Tensor) -> (Tensor, Vec<Tensor>) {
        let (inputs, targets, mask) = self.split_captions(captions);
        let grid = self.standardized_grid(features);
        let ForwardStates { memory, decoder } = self.forward_states(&grid, &inputs);
        let (loss, d_scores) = temporal_softmax_loss(&self.vocab.forward(decoder.output()), &targets, &mask);
        let vocab_grads = self.vocab.backward(decoder.output(), &d_scores);
        let mut d_x = vocab_grads.input;
        let mut d_memory = memory.zeros_like();
        let mut layer_grads = Vec::with_capacity(self.layers.len());
        for (k, layer) in self.layers.iter().enumerate().rev() {
            let g = layer.backward(&decoder.layer_inputs[k], &memory, &decoder.layers[k], &d_x);
            d_x = g.input;
            d_memory += g.memory;
            layer_grads.push(g.params);
        }
        layer_grads.reverse();
        let d_embedded = PositionalEncoding.backward(&decoder.embedding_mask.backward(&d_x));
        let embed_grads = self.embed.parameter_gradients(&inputs, &d_embedded);
        // The features need no gradient: only the projection's parameters'.
        let rows = |t: &Tensor| t.reshape([-1, *t.size().last().unwrap()]);
        let d_projected = GridPositionalEncoding.backward(&d_memory);
        let proj_grads = self.proj.0.parameter_gradients(&rows(&grid), &rows(&d_projected));
        let grads = proj_grads
            .into_iter()
            .chain(embed_grads)
            .chain(layer_grads.into_iter().flatten())
            .chain(vocab_grads.params);
        (loss, grads.collect())
    }
}

impl HandDerived for TransformerNet {
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        TransformerNet::named_parameters(self)
    }

    fn loss(&self, features: &Tensor, captions: &Tensor) -> Tensor {
        TransformerNet::loss(self, features, captions)
    }

    fn loss_and_gradients(&self, features: &Tensor, captions: &Tensor) -> (Tensor, Vec<Tensor>) {
        TransformerNet::loss_and_gradients(self, features, captions)
    }
}

impl Captioner for TransformerNet {
    fn tokens(&self) -> SpecialTokens {
        self.tokens
    }

    fn set_dropout(&self, rate: f64) {
        self.dropout.set(rate);
    }

    fn standardize_features(&mut self, train_features: &Tensor) {
        self.scaler.fit(train_features);
    }

    /// `[words so far [N, t], then each layer's cross-attention keys and
    /// values [N, H, L, E/H]]`: the memory is projected once per image.
    fn begin(&self, features: &Tensor) -> DecodeState {
        let memory = GridPositionalEncoding.forward(&self.proj.forward(&self.standardized_grid(features)));
        let words = Tensor::zeros([features.size()[0], 0], (Kind::Int64, features.device()));
        let projected = self.project_memory(&memory).into_iter().flat_map(|m| [m.keys, m.values]);
        DecodeState(std::iter::once(words).chain(projected).collect())
    }

    /// The decoder over every word so far; the last position's distribution,
    /// and the last layer's cross-attention weights there, averaged over heads.
    fn step(&self, state: &DecodeState, words: &Tensor) -> Step {
        let (so_far, projected) = state.0.split_first().expect("the words so far");
        let memories: Vec<ProjectedMemory> = projected
            .chunks(2)
            .map(|kv| ProjectedMemory { keys: kv[0].shallow_clone(), values: kv[1].shallow_clone() })
            .collect();
        let words = Tensor::cat(&[so_far, &words.unsqueeze(1)], 1);
        let decoder = self.decode_words(&memories, &words);
        let last = words.size()[1] - 1;
        let output = decoder.output().select(1, last);
        let log_probs = self.vocab.0.forward(&output).log_softmax(-1, output.kind());
        let weights = decoder.layers.last().expect("at least one layer").cross_weights();
        let attention = weights.select(2, last).mean_dim([1i64].as_slice(), false, weights.kind());
        let state = std::iter::once(words).chain(projected.iter().map(Tensor::shallow_clone)).collect();
        Step { log_probs, state: DecodeState(state), attention: Some(attention) }
    }
}
