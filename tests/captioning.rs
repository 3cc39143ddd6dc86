//! The captioning layers' hand-derived backward passes against autograd
//! (f64, relative error ≤ 1e-8) and central finite differences (≤ 1e-6),
//! for every input and parameter; the whole network's loss against the
//! course's two published values; explicit and autograd gradients of the
//! whole network alike.

use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};
use tchlab::caption::model::{CaptioningNet, CellKind, Dims, SpecialTokens};
use tchlab::layers::recurrent::{Lstm, Rnn};
use tchlab::layers::temporal::{temporal_softmax_loss, temporal_softmax_loss_autograd};
use tchlab::layers::{Embedding, TemporalAffine};

mod common;
use common::gradcheck::{autograd_of, finite_difference_check, rel_error};

const F64: (Kind, Device) = (Kind::Double, Device::Cpu);
const FD_TOLERANCE: f64 = 1e-6;
const AUTOGRAD_TOLERANCE: f64 = 1e-8;

fn f64_store() -> nn::VarStore {
    tch::manual_seed(0);
    nn::VarStore::new(Device::Cpu)
}

/// Each explicit gradient equals autograd's and central differences.
fn check_gradients(
    forward: &dyn Fn() -> Tensor,
    wrt: &[(&str, &Tensor)],
    explicit: &[&Tensor],
    upstream: &Tensor,
    layer: &str,
) {
    let tensors: Vec<&Tensor> = wrt.iter().map(|(_, t)| *t).collect();
    let reference = autograd_of(forward, &tensors, upstream);
    for (((name, target), exact), auto) in wrt.iter().zip(explicit).zip(&reference) {
        assert_eq!(exact.size(), auto.size(), "{layer} d{name}: shape");
        let err = rel_error(exact, auto);
        assert!(err <= AUTOGRAD_TOLERANCE, "{layer} d{name}: relative error {err:e} against autograd");
        let no_grad_forward = || tch::no_grad(forward);
        finite_difference_check(target, exact, upstream, &no_grad_forward, &format!("{layer} d{name}"), FD_TOLERANCE);
    }
}

#[test]
fn embedding_backward_scatter_adds_into_the_used_rows() {
    let _rng = common::seeded(0);
    let mut vs = f64_store();
    let layer = Embedding::new(vs.root() / "embed", 7, 5);
    vs.double();
    // Token 3 appears three times: its row must collect all three gradients.
    let tokens = Tensor::from_slice(&[3i64, 0, 3, 6, 3, 1]).reshape([2, 3]);
    let upstream = Tensor::randn([2, 3, 5], F64);
    let grads = layer.parameter_gradients(&tokens, &upstream);
    check_gradients(&|| layer.forward(&tokens), &[("W", &layer.weight)], &[&grads[0]], &upstream, "embedding");
    assert_eq!(grads[0].get(2).abs().sum(Kind::Double).double_value(&[]), 0.0, "an unused word gets no gradient");
}

#[test]
fn temporal_affine_backward_matches_autograd_and_finite_differences() {
    let _rng = common::seeded(0);
    let mut vs = f64_store();
    let layer = TemporalAffine::new(vs.root() / "t", 6, 4, 0.5);
    vs.double();
    let x = Tensor::randn([3, 5, 6], F64);
    let upstream = Tensor::randn([3, 5, 4], F64);
    let g = layer.backward(&x, &upstream);
    let wrt = [("x", &x), ("W", &layer.0.weight), ("b", &layer.0.bias)];
    check_gradients(&|| layer.forward(&x), &wrt, &[&g.input, &g.params[0], &g.params[1]], &upstream, "temporal affine");
}

#[test]
fn temporal_softmax_loss_counts_only_unmasked_words_and_divides_by_the_batch() {
    let _rng = common::seeded(0);
    tch::manual_seed(0);
    let (n, t, v) = (4, 6, 9);
    let scores = Tensor::randn([n, t, v], F64);
    let targets = Tensor::randint(v, [n, t], (Kind::Int64, Device::Cpu));
    let mask = Tensor::rand([n, t], F64).gt(0.3);
    let (loss, d_scores) = temporal_softmax_loss(&scores, &targets, &mask);
    let by_autograd = temporal_softmax_loss_autograd(&scores, &targets, &mask);
    assert!((loss.double_value(&[]) - by_autograd.double_value(&[])).abs() < 1e-12);
    // Σ over counted tokens / N, checked against an explicit loop.
    let mut expected = 0.0;
    for i in 0..n {
        for j in 0..t {
            if mask.int64_value(&[i, j]) == 1 {
                let log_p = scores.get(i).get(j).log_softmax(-1, Kind::Double);
                expected -= log_p.double_value(&[targets.int64_value(&[i, j])]);
            }
        }
    }
    assert!((loss.double_value(&[]) - expected / n as f64).abs() < 1e-12);
    let one = Tensor::ones([], F64);
    check_gradients(
        &|| temporal_softmax_loss_autograd(&scores, &targets, &mask),
        &[("scores", &scores)],
        &[&d_scores],
        &one,
        "temporal softmax loss",
    );
    // Masked positions get no gradient.
    let masked = d_scores.masked_select(&mask.logical_not().unsqueeze(-1).expand_as(&d_scores));
    assert_eq!(masked.abs().sum(Kind::Double).double_value(&[]), 0.0);
}

#[test]
fn rnn_backward_through_time_matches_autograd_and_finite_differences() {
    let _rng = common::seeded(0);
    for (n, t, d, h) in [(1, 1, 3, 4), (3, 7, 5, 6)] {
        let mut vs = f64_store();
        let rnn = Rnn::new(&(vs.root() / "rnn"), d, h);
        vs.double();
        let x = Tensor::randn([n, t, d], F64);
        let h0 = Tensor::randn([n, h], F64);
        let states = rnn.forward(&x, &h0);
        let upstream = Tensor::randn([n, t, h], F64);
        let g = rnn.backward(&x, &h0, &states, &upstream);
        let w = &rnn.0;
        let wrt = [("x", &x), ("h0", &h0), ("Wx", &w.wx), ("Wh", &w.wh), ("b", &w.b)];
        let explicit = [&g.input, &g.h0, &g.params[0], &g.params[1], &g.params[2]];
        check_gradients(&|| rnn.forward(&x, &h0), &wrt, &explicit, &upstream, &format!("rnn N{n} T{t}"));
        // The step function is the sequence's first step.
        let first = rnn.step(&x.select(1, 0), &h0);
        assert!(rel_error(&first, &states.select(1, 0)) < 1e-15);
    }
}

#[test]
fn lstm_backward_through_time_matches_autograd_and_finite_differences() {
    let _rng = common::seeded(0);
    for (n, t, d, h) in [(1, 1, 3, 4), (3, 7, 5, 6)] {
        let mut vs = f64_store();
        let lstm = Lstm::new(&(vs.root() / "lstm"), d, h);
        vs.double();
        let x = Tensor::randn([n, t, d], F64);
        let h0 = Tensor::randn([n, h], F64);
        let states = lstm.forward_states(&x, &h0);
        let upstream = Tensor::randn([n, t, h], F64);
        let g = lstm.backward(&x, &h0, &states, &upstream);
        let w = &lstm.0;
        let wrt = [("x", &x), ("h0", &h0), ("Wx", &w.wx), ("Wh", &w.wh), ("b", &w.b)];
        let explicit = [&g.input, &g.h0, &g.params[0], &g.params[1], &g.params[2]];
        check_gradients(&|| lstm.forward(&x, &h0), &wrt, &explicit, &upstream, &format!("lstm N{n} T{t}"));
    }
}

/// The course's check: every parameter `linspace(-1.4, 1.3, size)` in
/// numpy's layout; N, D, W, H, T = 10, 20, 30, 40, 13; V = 3.
fn published_check_net(cell: CellKind) -> (CaptioningNet, nn::VarStore) {
    let mut vs = f64_store();
    let dims = Dims::recurrent(20, 30, 40, 3);
    let tokens = SpecialTokens { null: 0, start: 1, end: 2 };
    let net = CaptioningNet::new(&vs.root(), dims, cell, tokens);
    vs.double();
    tch::no_grad(|| {
        for mut p in net.parameters() {
            let values = Tensor::linspace(-1.4, 1.3, p.numel() as i64, F64).reshape(p.size());
            p.copy_(&values);
        }
    });
    (net, vs)
}

fn published_check_loss(cell: CellKind, features_from: f64, features_to: f64) -> (f64, f64) {
    let (net, _vs) = published_check_net(cell);
    let (n, d, t, v) = (10, 20, 13, 3);
    let features = Tensor::linspace(features_from, features_to, n * d, F64).reshape([n, d]);
    let captions = Tensor::arange(n * t, (Kind::Int64, Device::Cpu)).remainder(v).reshape([n, t]);
    let (manual, _) = tch::no_grad(|| net.loss_and_gradients(&features, &captions));
    let autograd = tch::no_grad(|| net.loss(&features, &captions));
    (manual.double_value(&[]), autograd.double_value(&[]))
}

#[test]
fn rnn_captioning_loss_equals_the_published_value() {
    let _rng = common::seeded(0);
    let (manual, autograd) = published_check_loss(CellKind::Rnn, -1.5, 0.3);
    for loss in [manual, autograd] {
        assert!((loss - 9.83235591003).abs() < 1e-9, "RNN loss {loss:.12}, published 9.83235591003");
    }
}

#[test]
fn lstm_captioning_loss_equals_the_published_value() {
    let _rng = common::seeded(0);
    let (manual, autograd) = published_check_loss(CellKind::Lstm, -0.5, 1.7);
    for loss in [manual, autograd] {
        assert!((loss - 9.82445935443).abs() < 1e-9, "LSTM loss {loss:.12}, published 9.82445935443");
    }
}

#[test]
fn whole_network_explicit_gradients_equal_autograd() {
    let _rng = common::seeded(0);
    for cell in [CellKind::Rnn, CellKind::Lstm] {
        let mut vs = f64_store();
        let dims = Dims::recurrent(8, 6, 5, 11);
        let net = CaptioningNet::new(&vs.root(), dims, cell, SpecialTokens { null: 0, start: 1, end: 2 });
        vs.double();
        let features = Tensor::randn([4, 8], F64);
        // Captions with <NULL> padding after their end, as real batches have.
        let captions = Tensor::randint_low(3, 11, [4, 9], (Kind::Int64, Device::Cpu));
        let _ = captions.narrow(1, 6, 3).get(1).fill_(0);
        let _ = captions.narrow(1, 0, 1).fill_(1);
        let params = net.parameters();
        let (loss, explicit) = tch::no_grad(|| net.loss_and_gradients(&features, &captions));
        let wrt: Vec<&Tensor> = params.iter().collect();
        let one = Tensor::ones([], F64);
        let reference = autograd_of(&|| net.loss(&features, &captions), &wrt, &one);
        assert!((loss.double_value(&[]) - net.loss(&features, &captions).double_value(&[])).abs() < 1e-12);
        for (i, (e, r)) in explicit.iter().zip(&reference).enumerate() {
            let err = rel_error(e, r);
            assert!(err <= AUTOGRAD_TOLERANCE, "{cell:?} parameter {i}: relative error {err:e}");
        }
    }
}
