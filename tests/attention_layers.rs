//! The attention layers' hand-derived backward passes (Show, Attend and
//! Tell) against autograd (f64, relative error ≤ 1e-8) and central finite
//! differences (≤ 1e-6), for every input and parameter: the additive
//! attention, the gate, the initial state, the attention LSTM's step and
//! sequence, the deep output, the doubly stochastic penalty; then the
//! attention captioning network: its gradients both ways, its decoding
//! steps against its loss, its standardization, beam 1 against greedy, and
//! the overfit check on 50 captions.

use std::sync::{Mutex, MutexGuard};
use tch::nn;
use tch::{Device, Kind, Tensor};
use tchlab::caption::attend::AttentionNet;
use tchlab::caption::decoder::{beam_search, greedy, greedy_with_attention, Captioner};
use tchlab::caption::model::{Dims, SpecialTokens};
use tchlab::grad::{gradients, GradMode, HandDerived, Params};
use tchlab::layers::attention::{
    attention_penalty, attention_penalty_autograd, AdditiveAttention, AttentionLstm, ContextGate, DeepOutput,
    GridGradient, InitialState,
};
use tchlab::train::optim::{AdamW, Optimizer};

mod common;
use common::gradcheck::{autograd_of, rel_error};

const F64: (Kind, Device) = (Kind::Double, Device::Cpu);
const FD_TOLERANCE: f64 = 1e-6;
const AUTOGRAD_TOLERANCE: f64 = 1e-8;

/// libtorch's random generator is one for the process: each test holds
/// this lock while it draws, so that its draws do not depend on the others
/// (and runs on one thread: on a busy machine libtorch's pool makes these
/// small operations many times slower).
static RANDOM: Mutex<()> = Mutex::new(());

fn seeded() -> MutexGuard<'static, ()> {
    let guard = RANDOM.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    tch::set_num_threads(1);
    tch::manual_seed(0);
    guard
}

fn randn(shape: &[i64]) -> Tensor {
    Tensor::randn(shape, F64)
}

/// Several outputs as one flat tensor, so that one upstream weighs them all.
fn flat(outputs: &[&Tensor]) -> Tensor {
    Tensor::cat(&outputs.iter().map(|t| t.reshape([-1])).collect::<Vec<_>>(), 0)
}

/// Central differences of `Σ forward()·upstream` (h = 1e-6) at a dozen
/// entries of `target`, against `exact` there, as the assignment's relative
/// error of the two vectors: max |Δ| / max(|a| + |b|). Judged entry by entry,
/// an entry whose gradient happens to be tiny (1e-6 of its neighbours')
/// fails on the round-off of the difference alone.
fn finite_difference_error(target: &Tensor, exact: &Tensor, upstream: &Tensor, forward: &dyn Fn() -> Tensor) -> f64 {
    let h = 1e-6;
    let values = target.view([-1]);
    let count = values.numel() as i64;
    let value_at = || tch::no_grad(|| (forward() * upstream).sum(Kind::Double).double_value(&[]));
    let (mut numeric, mut analytic) = (Vec::new(), Vec::new());
    for k in 0..12.min(count) {
        let i = (k * 7919) % count;
        let original = values.double_value(&[i]);
        let set = |value: f64| {
            let _ = tch::no_grad(|| values.get(i).fill_(value));
        };
        set(original + h);
        let plus = value_at();
        set(original - h);
        let minus = value_at();
        set(original);
        numeric.push((plus - minus) / (2.0 * h));
        analytic.push(exact.reshape([-1]).double_value(&[i]));
    }
    rel_error(&Tensor::from_slice(&numeric), &Tensor::from_slice(&analytic))
}

/// Each explicit gradient equals autograd's and central differences.
fn check_gradients(forward: &dyn Fn() -> Tensor, wrt: &[(&str, &Tensor, &Tensor)], upstream: &Tensor, layer: &str) {
    let tensors: Vec<&Tensor> = wrt.iter().map(|(_, t, _)| *t).collect();
    let reference = autograd_of(forward, &tensors, upstream);
    for ((name, target, exact), auto) in wrt.iter().zip(&reference) {
        assert_eq!(exact.size(), auto.size(), "{layer} d{name}: shape");
        let err = rel_error(exact, auto);
        assert!(err <= AUTOGRAD_TOLERANCE, "{layer} d{name}: relative error {err:e} against autograd");
        let err = finite_difference_error(target, exact, upstream, forward);
        assert!(err <= FD_TOLERANCE, "{layer} d{name}: relative error {err:e} against central differences");
    }
}

#[test]
fn additive_attention_backward_matches_autograd_and_finite_differences() {
    let _rng = common::seeded(0);
    let (n, t, l, c, h, a) = (3, 2, 5, 4, 6, 7);
    let _random = seeded();
    let mut vs = nn::VarStore::new(Device::Cpu);
    let layer = AdditiveAttention::new(vs.root() / "attention", c, h, a);
    vs.double();
    let grid = randn(&[n, l, c]);
    let queries = randn(&[n, t, h]);
    let forward = || {
        let attended = layer.forward(&grid, &layer.project(&grid), &queries);
        flat(&[&attended.context, &attended.weights])
    };
    let attended = tch::no_grad(|| layer.forward(&grid, &layer.project(&grid), &queries));
    let weights_sum = attended.weights.sum_dim_intlist([-1i64].as_slice(), false, Kind::Double);
    assert!(rel_error(&weights_sum, &weights_sum.ones_like()) < 1e-15, "the weights of each query sum to 1");
    let (d_context, d_weights) = (randn(&[n, t, c]), randn(&[n, t, l]));
    let upstream = flat(&[&d_context, &d_weights]);
    let g = tch::no_grad(|| layer.backward(&grid, &layer.project(&grid), &queries, &attended, &d_context, &d_weights));
    let wrt = [
        ("grid", &grid, &g.grid),
        ("h", &queries, &g.hidden),
        ("W_a", &layer.grid_weight, &g.params[0]),
        ("W_h", &layer.hidden_weight, &g.params[1]),
        ("b", &layer.bias, &g.params[2]),
        ("w", &layer.score, &g.params[3]),
    ];
    check_gradients(&forward, &wrt, &upstream, "additive attention");
}

#[test]
fn context_gate_backward_matches_autograd_and_finite_differences() {
    let _rng = common::seeded(0);
    let (n, t, h, c) = (4, 3, 5, 6);
    let _random = seeded();
    let mut vs = nn::VarStore::new(Device::Cpu);
    let gate = ContextGate::new(vs.root() / "gate", h);
    vs.double();
    let hidden = randn(&[n, t, h]);
    let context = randn(&[n, t, c]);
    let (beta, gated) = gate.forward(&hidden, &context);
    assert_eq!(beta.size(), [n, t, 1], "one gate per row and step");
    let upstream = randn(&[n, t, c]);
    let g = gate.backward(&hidden, &context, &beta, &upstream);
    let wrt = [
        ("h", &hidden, &g.hidden),
        ("z", &context, &g.context),
        ("w_beta", &gate.weight, &g.params[0]),
        ("b_beta", &gate.bias, &g.params[1]),
    ];
    check_gradients(&|| gate.forward(&hidden, &context).1, &wrt, &upstream, "context gate");
    assert!(rel_error(&gated, &(&beta * &context)) < 1e-15);
}

#[test]
fn initial_state_backward_matches_autograd_and_finite_differences() {
    let _rng = common::seeded(0);
    let (n, l, c, h) = (3, 4, 5, 6);
    let _random = seeded();
    let mut vs = nn::VarStore::new(Device::Cpu);
    let init = InitialState::new(&vs.root(), c, h);
    vs.double();
    let grid = randn(&[n, l, c]);
    let (h0, c0) = init.forward(&grid);
    let (d_h0, d_c0) = (randn(&[n, h]), randn(&[n, h]));
    let (d_grid, params) = init.backward(&grid, (&h0, &c0), (&d_h0, &d_c0), GridGradient::Wanted);
    let d_grid = d_grid.expect("asked for");
    let forward = || {
        let (h0, c0) = init.forward(&grid);
        flat(&[&h0, &c0])
    };
    let wrt = [
        ("grid", &grid, &d_grid),
        ("W_h0", &init.hidden.weight, &params[0]),
        ("b_h0", &init.hidden.bias, &params[1]),
        ("W_c0", &init.cell.weight, &params[2]),
        ("b_c0", &init.cell.bias, &params[3]),
    ];
    check_gradients(&forward, &wrt, &flat(&[&d_h0, &d_c0]), "initial state");
    let skipped = init.backward(&grid, (&h0, &c0), (&d_h0, &d_c0), GridGradient::Skipped);
    assert!(skipped.0.is_none(), "no grid gradient unless asked for");
}

/// The attention LSTM's backward through time for every input and
/// parameter, with upstream gradients on the hidden states, on what the
/// LSTM read (ẑ) and on the attention weights, as the network gives them.
fn check_attention_lstm(n: i64, t: i64) {
    let (l, c, w, h, a) = (5, 4, 3, 6, 7);
    let _random = seeded();
    let mut vs = nn::VarStore::new(Device::Cpu);
    let layer = AttentionLstm::new(&vs.root(), w, c, h, a);
    vs.double();
    let grid = randn(&[n, l, c]);
    let words = randn(&[n, t, w]);
    let states = layer.forward(&grid, &words);
    let (d_h, d_gated, d_weights) = (randn(&[n, t, h]), randn(&[n, t, c]), randn(&[n, t, l]));
    let g = layer.backward(&grid, &words, &states, (&d_h, &d_gated, &d_weights), GridGradient::Wanted);
    let d_grid = g.grid.as_ref().expect("asked for");
    let forward = || {
        let s = layer.forward(&grid, &words);
        flat(&[&s.h, &s.gated, &s.weights])
    };
    let names =
        ["W_h0", "b_h0", "W_c0", "b_c0", "W_a", "W_h", "b_att", "w_att", "w_beta", "b_beta", "Wx", "Wh", "b_lstm"];
    let params = layer.parameters();
    assert_eq!((params.len(), g.params.len()), (names.len(), names.len()));
    let mut wrt = vec![("grid", &grid, d_grid), ("x", &words, &g.words)];
    wrt.extend(names.iter().zip(&params).zip(&g.params).map(|((name, p), d)| (*name, p, d)));
    check_gradients(&forward, &wrt, &flat(&[&d_h, &d_gated, &d_weights]), &format!("attention LSTM N{n} T{t}"));
    let skipped = layer.backward(&grid, &words, &states, (&d_h, &d_gated, &d_weights), GridGradient::Skipped);
    assert!(skipped.grid.is_none());
    for (kept, other) in g.params.iter().zip(&skipped.params) {
        assert!(rel_error(kept, other) == 0.0, "skipping the grid gradient changes no parameter gradient");
    }
}

#[test]
fn attention_lstm_step_backward_matches_autograd_and_finite_differences() {
    let _rng = common::seeded(0);
    // One step: the sequence's backward at T = 1 is the step's backward.
    check_attention_lstm(1, 1);
    check_attention_lstm(3, 1);
}

#[test]
fn attention_lstm_sequence_backward_through_time_matches_autograd_and_finite_differences() {
    let _rng = common::seeded(0);
    check_attention_lstm(3, 6);
}

#[test]
fn the_decoding_step_is_the_sequence_step() {
    let _rng = common::seeded(0);
    let (n, t, l, c, w, h, a) = (2, 4, 5, 4, 3, 6, 7);
    let _random = seeded();
    let mut vs = nn::VarStore::new(Device::Cpu);
    let layer = AttentionLstm::new(&vs.root(), w, c, h, a);
    vs.double();
    let grid = randn(&[n, l, c]);
    let words = randn(&[n, t, w]);
    let states = layer.forward(&grid, &words);
    let (projected, mut hidden, mut cell) = layer.begin(&grid);
    assert!(rel_error(&hidden, &states.h0) == 0.0 && rel_error(&cell, &states.c0) == 0.0);
    for step in 0..t {
        let out = layer.step(&grid, &projected, &words.select(1, step), &hidden, &cell);
        for (name, got, want) in [
            ("h", &out.h, &states.h),
            ("c", &out.c, &states.c),
            ("weights", &out.weights, &states.weights),
            ("gated", &out.gated, &states.gated),
        ] {
            let err = rel_error(got, &want.select(1, step));
            assert!(err < 1e-14, "step {step} {name}: relative error {err:e}");
        }
        (hidden, cell) = (out.h, out.c);
    }
}

#[test]
fn deep_output_backward_matches_autograd_and_finite_differences_with_and_without_dropout() {
    let _rng = common::seeded(0);
    let (n, t, w, c, h, v) = (3, 4, 5, 6, 7, 8);
    let _random = seeded();
    let mut vs = nn::VarStore::new(Device::Cpu);
    let layer = DeepOutput::new(&vs.root(), w, c, h, v);
    vs.double();
    let words = randn(&[n, t, w]);
    let hidden = randn(&[n, t, h]);
    let gated = randn(&[n, t, c]);
    // Every third unit dropped (a fixed mask: a random one made some
    // gradient entries so small that central differences lose digits).
    let keep = Tensor::arange(n * t * w, F64).remainder(3).ne(0).to_kind(Kind::Double).reshape([n, t, w]) * 1.5;
    for mask in [None, Some(&keep)] {
        let states = layer.forward(&words, &hidden, &gated, mask);
        let upstream = randn(&[n, t, v]);
        let g = layer.backward((&hidden, &gated), &states, mask, &upstream);
        let params = layer.parameters();
        let wrt = [
            ("x", &words, &g.words),
            ("h", &hidden, &g.hidden),
            ("z", &gated, &g.gated),
            ("L_h", &params[0], &g.params[0]),
            ("L_z", &params[1], &g.params[1]),
            ("b", &params[2], &g.params[2]),
            ("L_o", &params[3], &g.params[3]),
            ("b_o", &params[4], &g.params[4]),
        ];
        let what = if mask.is_some() { "deep output with dropout" } else { "deep output" };
        check_gradients(&|| layer.forward(&words, &hidden, &gated, mask).scores, &wrt, &upstream, what);
    }
}

#[test]
fn attention_penalty_counts_only_masked_in_steps_and_matches_autograd() {
    let _rng = common::seeded(0);
    let (n, t, l) = (3, 5, 4);
    let _random = seeded();
    let weights = randn(&[n, t, l]).softmax(-1, Kind::Double);
    let mask = Tensor::from_slice(&[1i64, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 0, 0, 0, 0]).reshape([n, t]).gt(0);
    let lambda = 0.7;
    let (penalty, d_weights) = attention_penalty(&weights, &mask, lambda);
    // λ/N Σ_n Σ_l (1 − Σ_t m α)², by loops.
    let mut expected = 0.0;
    for i in 0..n {
        for j in 0..l {
            let attended: f64 =
                (0..t).filter(|&s| mask.int64_value(&[i, s]) == 1).map(|s| weights.double_value(&[i, s, j])).sum();
            expected += (1.0 - attended).powi(2);
        }
    }
    expected *= lambda / n as f64;
    assert!((penalty.double_value(&[]) - expected).abs() < 1e-14, "{} vs {expected}", penalty.double_value(&[]));
    assert!((attention_penalty_autograd(&weights, &mask, lambda).double_value(&[]) - expected).abs() < 1e-14);
    let one = Tensor::ones([], F64);
    check_gradients(
        &|| attention_penalty_autograd(&weights, &mask, lambda),
        &[("weights", &weights, &d_weights)],
        &one,
        "attention penalty",
    );
    let masked = d_weights.masked_select(&mask.logical_not().unsqueeze(-1).expand_as(&d_weights));
    assert_eq!(masked.abs().sum(Kind::Double).double_value(&[]), 0.0, "steps not counted get no gradient");
}

const TOKENS: SpecialTokens = SpecialTokens { null: 0, start: 1, end: 2 };

/// A small attention network in f64: C 5, W 6, H 7, V 11, A 4.
fn small_net(dropout: f64, attention_penalty: f64) -> (AttentionNet, nn::VarStore) {
    let mut vs = nn::VarStore::new(Device::Cpu);
    let dims = Dims { attention: 4, attention_penalty, ..Dims::recurrent(5, 6, 7, 11) };
    let net = AttentionNet::new(&vs.root(), dims, TOKENS);
    net.set_dropout(dropout);
    vs.double();
    (net, vs)
}

/// Captions `[n, t]` from `<START>`, some ending early in `<NULL>` padding.
fn padded_captions(n: i64, t: i64, vocabulary: i64) -> Tensor {
    let captions = Tensor::randint_low(3, vocabulary, [n, t], (Kind::Int64, Device::Cpu));
    let _ = captions.narrow(1, 0, 1).fill_(TOKENS.start);
    let _ = captions.get(1).narrow(0, t - 3, 3).fill_(TOKENS.null);
    let _ = captions.get(1).narrow(0, t - 4, 1).fill_(TOKENS.end);
    captions
}

#[test]
fn attention_network_explicit_gradients_equal_autograd_with_dropout_and_penalty() {
    let _rng = common::seeded(0);
    let _random = seeded();
    let (net, _vs) = small_net(0.3, 0.8);
    let grid = randn(&[4, 6, 5]) * 3.0 + 1.0;
    let captions = padded_captions(4, 8, 11);
    let params: Vec<Tensor> = net.named_parameters().into_iter().map(|(_, p)| p).collect();
    // The same dropout mask both ways: the same seed before each draw.
    tch::manual_seed(11);
    let (loss, explicit) = tch::no_grad(|| net.loss_and_gradients(&grid, &captions));
    tch::manual_seed(11);
    let wrt: Vec<&Tensor> = params.iter().collect();
    let reference = autograd_of(&|| net.loss(&grid, &captions), &wrt, &Tensor::ones([], F64));
    tch::manual_seed(11);
    let autograd_loss = net.loss(&grid, &captions).double_value(&[]);
    assert!((loss.double_value(&[]) - autograd_loss).abs() < 1e-12, "{} vs {autograd_loss}", loss.double_value(&[]));
    net.set_dropout(0.0);
    let no_dropout_loss = tch::no_grad(|| net.loss(&grid, &captions)).double_value(&[]);
    assert!((no_dropout_loss - autograd_loss).abs() > 1e-6, "dropout changed nothing");
    assert_eq!(explicit.len(), reference.len());
    for ((name, _), (e, r)) in net.named_parameters().iter().zip(explicit.iter().zip(&reference)) {
        let err = rel_error(e, r);
        assert!(err <= AUTOGRAD_TOLERANCE, "{name}: relative error {err:e} against autograd");
    }
}

#[test]
fn attention_network_explicit_gradients_equal_central_differences() {
    let _rng = common::seeded(0);
    let _random = seeded();
    let (net, _vs) = small_net(0.0, 0.8);
    let grid = randn(&[3, 6, 5]) * 3.0 + 1.0;
    let captions = padded_captions(3, 7, 11);
    let (_, explicit) = tch::no_grad(|| net.loss_and_gradients(&grid, &captions));
    let one = Tensor::ones([], F64);
    for ((name, param), grad) in net.named_parameters().iter().zip(&explicit) {
        let err = finite_difference_error(param, grad, &one, &|| net.loss(&grid, &captions));
        assert!(err <= FD_TOLERANCE, "{name}: relative error {err:e} against central differences");
    }
}

#[test]
fn decoding_steps_give_the_teacher_forced_loss_and_attention_weights() {
    let _rng = common::seeded(0);
    let _random = seeded();
    let (net, _vs) = small_net(0.0, 0.0);
    let grid = randn(&[3, 6, 5]);
    let captions = padded_captions(3, 7, 11);
    // Feed the caption's words one by one: Σ −log p(next word) over counted
    // words / N is the loss (no penalty, no dropout).
    let mut state = net.begin(&grid);
    let mut total = Tensor::zeros([3], F64);
    for t in 0..6 {
        let step = net.step(&state, &captions.select(1, t));
        let weights = step.attention.expect("the attention network gives its weights");
        assert_eq!(weights.size(), [3, 6]);
        let sums = weights.sum_dim_intlist([1i64].as_slice(), false, Kind::Double);
        assert!(rel_error(&sums, &sums.ones_like()) < 1e-14);
        let target = captions.select(1, t + 1);
        let picked = step.log_probs.gather(1, &target.unsqueeze(1), false).squeeze_dim(1);
        total -= picked * target.ne(TOKENS.null).to_kind(Kind::Double);
        state = step.state;
    }
    let stepped = total.sum(Kind::Double).double_value(&[]) / 3.0;
    let loss = tch::no_grad(|| net.loss(&grid, &captions)).double_value(&[]);
    assert!((stepped - loss).abs() < 1e-12, "stepped {stepped} vs loss {loss}");
}

#[test]
fn attention_network_features_are_standardized_per_channel() {
    let _rng = common::seeded(0);
    let _random = seeded();
    let (mut net, vs) = small_net(0.0, 0.0);
    let scale = Tensor::from_slice(&[1.0, 10.0, 0.1, 3.0, 0.0]);
    let train = randn(&[600, 6, 5]) * &scale + Tensor::from_slice(&[5.0, -2.0, 0.0, 1.0, 7.0]);
    net.standardize_features(&train);
    let stored = vs.variables();
    let (mean, std) = (&stored["feature_mean"], &stored["feature_std"]);
    let flat = train.reshape([-1, 5]);
    let want_mean = flat.mean_dim([0i64].as_slice(), false, Kind::Double);
    let want_std = flat.std_dim([0i64].as_slice(), false, false);
    assert!(rel_error(mean, &want_mean) < 1e-12, "mean over images and locations");
    assert!(rel_error(&std.narrow(0, 0, 4), &want_std.narrow(0, 0, 4)) < 1e-12);
    assert_eq!(std.double_value(&[4]), 1.0, "a constant channel is only centred");
}

#[test]
fn attention_network_beam_search_with_one_hypothesis_is_greedy() {
    let _rng = common::seeded(0);
    let _random = seeded();
    let (net, _vs) = small_net(0.0, 0.0);
    let grid = randn(&[30, 6, 5]) * 4.0;
    let (greedy_captions, weights) = greedy_with_attention(&net, &grid, 9);
    assert_eq!(greedy_captions, beam_search(&net, &grid, 1, 9));
    let weights = weights.expect("attention weights");
    assert_eq!((weights.size()[0], weights.size()[2]), (30, 6));
    let distinct = greedy_captions.unique_dim(0, false, false, false).0.size()[0];
    assert!(distinct > 5, "only {distinct} distinct captions, too few to compare");
}

/// The overfit check: 50 random captions (3 to 6 words and
/// `<END>`) of 50 random grids (L 9, C 12), Adam, 100 epochs of two
/// minibatches; the loss falls near zero and every greedy caption is its
/// training caption.
#[test]
fn attention_network_overfits_fifty_captions() {
    let _rng = common::seeded(0);
    let _random = seeded();
    let (n, t, vocabulary) = (50, 9, 14);
    let store = nn::VarStore::new(Device::Cpu);
    // No penalty: its floor (Σ_t α cannot be 1 at all 9 locations in 3–6 steps) would hide the fit.
    let dims = Dims { attention: 32, attention_penalty: 0.0, ..Dims::recurrent(12, 32, 64, vocabulary) };
    let net = AttentionNet::new(&store.root(), dims, TOKENS);
    let grid = Tensor::randn([n, 9, 12], (Kind::Float, Device::Cpu));
    let words = Tensor::randint_low(3, vocabulary, [n, t - 2], (Kind::Int64, Device::Cpu));
    let lengths = Tensor::randint_low(3, t - 2, [n], (Kind::Int64, Device::Cpu));
    let positions = Tensor::arange(t - 2, (Kind::Int64, Device::Cpu)).unsqueeze(0);
    let body = words.where_self(&positions.lt_tensor(&lengths.unsqueeze(1)), &Tensor::from(TOKENS.null));
    let body = body.masked_fill(&positions.eq_tensor(&lengths.unsqueeze(1)), TOKENS.end);
    let start = Tensor::full([n, 1], TOKENS.start, (Kind::Int64, Device::Cpu));
    let end = Tensor::full([n, 1], TOKENS.null, (Kind::Int64, Device::Cpu));
    let captions = Tensor::cat(&[&start, &body, &end], 1);
    let params = Params::new(net.named_parameters());
    let mut adam = AdamW::new(&params, 0.0);
    let mut loss = f64::INFINITY;
    for epoch in 0..100 {
        for rows in Tensor::randperm(n, (Kind::Int64, Device::Cpu)).split(25, 0) {
            let (features, batch) = (grid.index_select(0, &rows), captions.index_select(0, &rows));
            let (batch_loss, grads) = gradients(GradMode::Manual, &net, &params, &features, &batch);
            adam.step(&params, &grads, 2e-2 * 0.98f64.powi(epoch));
            loss = batch_loss.double_value(&[]);
        }
    }
    assert!(loss < 0.05, "final minibatch loss {loss}");
    let sampled = greedy(&net, &grid, (t - 1) as usize);
    let truth = captions.narrow(1, 1, t - 1);
    let wrong = sampled.ne_tensor(&truth).any_dim(1, false).sum(Kind::Int64).int64_value(&[]);
    assert_eq!(wrong, 0, "{wrong} of {n} greedy captions differ from their training caption");
}
