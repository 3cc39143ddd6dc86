//! Captions from any captioning network, one word at a time: the
//! [`Captioner`] seam every network implements (its state after seeing the
//! images, and one decoding step), and the two ways of decoding over it —
//! greedy ([`greedy`], with the attention weights of each step for the
//! figures: [`greedy_with_attention`]) and length-normalised beam search
//! ([`beam_search`]). Decoding knows nothing of cells or layers; the
//! networks know nothing of how their steps are searched.

use super::model::SpecialTokens;
use crate::grad::HandDerived;
use tch::{Device, Kind, Tensor};

/// The state of decoding a batch: tensors whose first dimension is the
/// batch row, so that a search can reorder, repeat or drop rows.
pub struct DecodeState(pub Vec<Tensor>);

impl DecodeState {
    /// The state of the rows `rows` (int64 indices, any may repeat).
    pub fn select(&self, rows: &Tensor) -> DecodeState {
        DecodeState(self.0.iter().map(|t| t.index_select(0, &rows.to_device(t.device()))).collect())
    }
}

/// What one decoding step gives.
pub struct Step {
    /// `[N, V]`: the log-probability of each next word.
    pub log_probs: Tensor,
    pub state: DecodeState,
    /// `[N, L]`: the weights over the image's grid locations this step
    /// looked at, for networks that attend.
    pub attention: Option<Tensor>,
}

/// A captioning network as training, decoding and saving see it: a
/// [`HandDerived`] loss over `(features, captions)` and a decoder.
pub trait Captioner: HandDerived {
    fn tokens(&self) -> SpecialTokens;
    /// Standardizes image features from now on by the per-channel (last
    /// dimension) mean and deviation of `train_features`; kept with the
    /// weights, not trained.
    fn standardize_features(&mut self, train_features: &Tensor);
    /// The dropout rate of the passes that follow: the run's rate for
    /// training steps, 0 for the rest (evaluation, decoding: the default).
    /// Networks without dropout ignore it.
    fn set_dropout(&self, _rate: f64) {}
    /// The state after seeing the images: `features` `[N, D]` pooled or
    /// `[N, L, C]` a grid, as the network takes them.
    fn begin(&self, features: &Tensor) -> DecodeState;
    /// The distribution of the next word after `words` `[N]` (int64), and
    /// the state that follows.
    fn step(&self, state: &DecodeState, words: &Tensor) -> Step;
}

/// Greedy captions `[N, max_length]` from `<START>`: at each step the most
/// likely word is fed back in. Stops early once every caption has produced
/// `<END>`; what follows a caption's `<END>` is `<NULL>`.
pub fn greedy(net: &dyn Captioner, features: &Tensor, max_length: usize) -> Tensor {
    greedy_with_attention(net, features, max_length).0
}

/// Captions `[N, max_length]` by [`beam_search`] with `beam` hypotheses,
/// or for `beam` 1 by [`greedy`] (the same captions, sooner).
pub fn decode(net: &dyn Captioner, features: &Tensor, beam: usize, max_length: usize) -> Tensor {
    match beam {
        1 => greedy(net, features, max_length),
        _ => beam_search(net, features, beam, max_length),
    }
}

/// [`greedy`], and for networks that attend the weights of every step,
/// `[N, T, L]` for the T steps taken.
pub fn greedy_with_attention(net: &dyn Captioner, features: &Tensor, max_length: usize) -> (Tensor, Option<Tensor>) {
    tch::no_grad(|| {
        let tokens = net.tokens();
        let (n, device) = (features.size()[0], features.device());
        let mut state = net.begin(features);
        let mut word = Tensor::full([n], tokens.start, (Kind::Int64, device));
        let mut finished = Tensor::zeros([n], (Kind::Bool, device));
        let (mut words, mut weights) = (Vec::new(), Vec::new());
        for _ in 0..max_length {
            let step = net.step(&state, &word);
            state = step.state;
            weights.extend(step.attention);
            word = step.log_probs.argmax(-1, false);
            words.push(word.masked_fill(&finished, tokens.null));
            finished = finished.logical_or(&word.eq(tokens.end));
            if finished.all().int64_value(&[]) == 1 {
                break;
            }
        }
        let attention = (!weights.is_empty()).then(|| Tensor::stack(&weights, 1));
        (padded(&Tensor::stack(&words, 1), max_length, tokens.null), attention)
    })
}

/// `[N, t]` tokens padded with `<NULL>` to `[N, max_length]`.
fn padded(tokens: &Tensor, max_length: usize, null: i64) -> Tensor {
    let n = tokens.size()[0];
    let out = Tensor::full([n, max_length as i64], null, (Kind::Int64, tokens.device()));
    out.narrow(1, 0, tokens.size()[1]).copy_(tokens);
    out
}

/// One hypothesis of a beam: its words so far and their summed log-probability.
#[derive(Clone)]
struct Hypothesis {
    words: Vec<i64>,
    log_prob: f64,
}

impl Hypothesis {
    /// The log-probability per word, by which the final captions compete.
    fn normalised(&self) -> f64 {
        self.log_prob / self.words.len().max(1) as f64
    }
}

/// The hypotheses of one image.
#[derive(Default)]
struct Beams {
    live: Vec<Hypothesis>,
    finished: Vec<Hypothesis>,
}

/// Beam search with `beam` hypotheses per image: at each step the `beam`
/// best continuations (by summed log-probability) of an image's live
/// hypotheses are kept; one ending in `<END>` is finished, and an image is
/// done once it has `beam` finished captions. The caption returned is the
/// finished (or, at `max_length`, live) one with the highest
/// log-probability per word. With `beam` 1 it is [`greedy`]'s caption.
pub fn beam_search(net: &dyn Captioner, features: &Tensor, beam: usize, max_length: usize) -> Tensor {
    tch::no_grad(|| {
        let tokens = net.tokens();
        let start = Hypothesis { words: Vec::new(), log_prob: 0.0 };
        let mut images: Vec<Beams> =
            (0..features.size()[0]).map(|_| Beams { live: vec![start.clone()], finished: Vec::new() }).collect();
        // One row per live hypothesis, in image order.
        let mut state = net.begin(features);
        for _ in 0..max_length {
            let last_words: Vec<i64> = images
                .iter()
                .flat_map(|b| b.live.iter().map(|h| h.words.last().copied().unwrap_or(tokens.start)))
                .collect();
            if last_words.is_empty() {
                break;
            }
            let step = net.step(&state, &Tensor::from_slice(&last_words).to_device(features.device()));
            let vocabulary = step.log_probs.size()[1] as usize;
            let log_probs =
                Vec::<f32>::try_from(step.log_probs.to_kind(Kind::Float).to_device(Device::Cpu).flatten(0, -1))
                    .expect("float log-probabilities");
            let mut parents = Vec::new();
            let mut first_row = 0;
            for image in &mut images {
                let rows = first_row..first_row + image.live.len();
                first_row = rows.end;
                let scores = &log_probs[rows.start * vocabulary..rows.end * vocabulary];
                let kept = extend(image, scores, vocabulary, beam, tokens.end);
                parents.extend(kept.into_iter().map(|parent| (rows.start + parent) as i64));
            }
            state = step.state.select(&Tensor::from_slice(&parents));
        }
        let best: Vec<Vec<i64>> = images.into_iter().map(best_caption).collect();
        let rows: Vec<i64> = best.iter().flat_map(|words| padded_row(words, max_length, tokens.null)).collect();
        Tensor::from_slice(&rows).reshape([best.len() as i64, max_length as i64]).to_device(features.device())
    })
}

/// Replaces `image`'s live hypotheses by the `beam` best continuations
/// (`scores`: `[live, vocabulary]` log-probabilities), moving those that
/// end in `end` to the finished ones; returns the parent row of each new
/// live hypothesis. Ties go to the earlier parent, then the lower word, as
/// `argmax` breaks them.
fn extend(image: &mut Beams, scores: &[f32], vocabulary: usize, beam: usize, end: i64) -> Vec<usize> {
    let mut candidates: Vec<(usize, f64)> = scores
        .iter()
        .enumerate()
        .map(|(index, &score)| (index, image.live[index / vocabulary].log_prob + score as f64))
        .collect();
    let order = |a: &(usize, f64), b: &(usize, f64)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if candidates.len() > beam {
        candidates.select_nth_unstable_by(beam - 1, order);
        candidates.truncate(beam);
    }
    candidates.sort_by(order);
    let previous = std::mem::take(&mut image.live);
    let mut parents = Vec::new();
    for (index, log_prob) in candidates {
        let (parent, word) = (index / vocabulary, (index % vocabulary) as i64);
        let mut words = previous[parent].words.clone();
        words.push(word);
        let hypothesis = Hypothesis { words, log_prob };
        if word == end {
            image.finished.push(hypothesis);
        } else {
            image.live.push(hypothesis);
            parents.push(parent);
        }
    }
    if image.finished.len() >= beam {
        image.live.clear();
        parents.clear();
    }
    parents
}

/// The finished or live hypothesis with the highest log-probability per word.
fn best_caption(image: Beams) -> Vec<i64> {
    let candidates = image.finished.into_iter().chain(image.live);
    candidates.max_by(|a, b| a.normalised().total_cmp(&b.normalised())).map(|h| h.words).unwrap_or_default()
}

fn padded_row(words: &[i64], length: usize, null: i64) -> Vec<i64> {
    words.iter().copied().chain(std::iter::repeat(null)).take(length).collect()
}
