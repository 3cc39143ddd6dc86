//! Decoding through the `Captioner` seam: beam search with one hypothesis
//! gives greedy's captions (on a real LSTM captioning network), and beam
//! search wide enough to keep every hypothesis finds the caption with the
//! highest log-probability per word that brute force over every word
//! sequence finds (on a Markov chain of random word probabilities, which
//! changes with the step, so the best caption is not greedy's).

mod common;

use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};
use tchlab::caption::decoder::{beam_search, decode, greedy, Captioner, DecodeState, Step};
use tchlab::caption::model::{build, CellKind, Dims, SpecialTokens};
use tchlab::grad::HandDerived;

const TOKENS: SpecialTokens = SpecialTokens { null: 0, start: 1, end: 2 };

#[test]
fn beam_search_with_one_hypothesis_is_greedy() {
    let _rng = common::seeded(0);
    for cell in [CellKind::Rnn, CellKind::Lstm] {
        tch::manual_seed(3);
        let store = VarStore::new(Device::Cpu);
        let dims = Dims::recurrent(16, 8, 12, 9);
        let net = build(&store.root(), dims, cell, TOKENS).unwrap();
        // Large features make confident, varied captions from random weights.
        let features = Tensor::randn([40, 16], (Kind::Float, Device::Cpu)) * 6.0;
        let greedy_captions = greedy(&*net, &features, 12);
        let beam_captions = beam_search(&*net, &features, 1, 12);
        assert_eq!(greedy_captions, beam_captions, "{cell:?}");
        let distinct = greedy_captions.unique_dim(0, false, false, false).0.size()[0];
        assert!(distinct > 5, "{cell:?}: only {distinct} distinct captions, too few to compare");
        assert_eq!(decode(&*net, &features, 1, 12), greedy_captions);
    }
}

/// Words drawn from a table of log-probabilities `[steps, V, V]`: the next
/// word's distribution given the step and the previous word.
struct MarkovChain {
    log_probs: Tensor,
}

impl HandDerived for MarkovChain {
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }

    fn loss(&self, _: &Tensor, _: &Tensor) -> Tensor {
        Tensor::zeros([], (Kind::Float, Device::Cpu))
    }

    fn loss_and_gradients(&self, inputs: &Tensor, targets: &Tensor) -> (Tensor, Vec<Tensor>) {
        (self.loss(inputs, targets), Vec::new())
    }
}

impl Captioner for MarkovChain {
    fn tokens(&self) -> SpecialTokens {
        TOKENS
    }

    fn standardize_features(&mut self, _: &Tensor) {}

    /// The state is the step, per row.
    fn begin(&self, features: &Tensor) -> DecodeState {
        DecodeState(vec![Tensor::zeros([features.size()[0]], (Kind::Int64, Device::Cpu))])
    }

    fn step(&self, state: &DecodeState, words: &Tensor) -> Step {
        let step = &state.0[0];
        let log_probs = self.log_probs.index(&[Some(step), Some(words)]);
        Step { log_probs, state: DecodeState(vec![step + 1]), attention: None }
    }
}

impl MarkovChain {
    /// The log-probability of `words` (the chain's steps from `<START>`).
    fn log_prob(&self, words: &[i64]) -> f64 {
        let mut previous = TOKENS.start;
        let mut total = 0.0;
        for (step, &word) in words.iter().enumerate() {
            total += self.log_probs.double_value(&[step as i64, previous, word]);
            previous = word;
        }
        total
    }
}

/// Every caption of at most `max_length` words that the search could
/// return: those ending at their first `<END>`, and those of `max_length`
/// words with none, over the words that are not `<NULL>`/`<START>`.
fn every_caption(vocabulary: i64, max_length: usize) -> Vec<Vec<i64>> {
    let mut captions = Vec::new();
    let mut open: Vec<Vec<i64>> = vec![Vec::new()];
    for _ in 0..max_length {
        let mut next = Vec::new();
        for prefix in &open {
            for word in 2..vocabulary {
                let mut caption = prefix.clone();
                caption.push(word);
                if word == TOKENS.end {
                    captions.push(caption);
                } else {
                    next.push(caption);
                }
            }
        }
        open = next;
    }
    captions.extend(open);
    captions
}

#[test]
fn a_beam_that_keeps_every_hypothesis_finds_the_best_caption_per_word() {
    let _rng = common::seeded(0);
    let (vocabulary, max_length) = (6i64, 4usize);
    let mut beaten_greedy = 0;
    for seed in 0..20 {
        tch::manual_seed(seed);
        let scores = Tensor::randn([max_length as i64, vocabulary, vocabulary], (Kind::Double, Device::Cpu)) * 2.0;
        // <NULL> and <START> are never said.
        let never = Tensor::from_slice(&[1.0, 1.0, 0.0, 0.0, 0.0, 0.0]).to_kind(Kind::Double) * -1e9;
        let chain = MarkovChain { log_probs: (scores + never).log_softmax(-1, Kind::Double) };
        let best = every_caption(vocabulary, max_length)
            .into_iter()
            .max_by(|a, b| {
                let per_word = |c: &Vec<i64>| chain.log_prob(c) / c.len() as f64;
                per_word(a).total_cmp(&per_word(b))
            })
            .unwrap();
        let features = Tensor::zeros([1, 1], (Kind::Float, Device::Cpu));
        let found: Vec<i64> = Vec::try_from(beam_search(&chain, &features, 1000, max_length).get(0)).unwrap();
        let padded: Vec<i64> = best.iter().copied().chain(std::iter::repeat(TOKENS.null)).take(max_length).collect();
        assert_eq!(found, padded, "seed {seed}");
        let greedy_caption: Vec<i64> = Vec::try_from(greedy(&chain, &features, max_length).get(0)).unwrap();
        beaten_greedy += usize::from(greedy_caption != found);
    }
    assert!(beaten_greedy > 0, "greedy found the best caption every time: the check shows nothing");
}
