//! The Transformer decoder's layers (`tchlab::layers::transformer`): each
//! hand-derived backward pass against autograd (f64, relative error ≤ 1e-8)
//! and central finite differences (≤ 1e-6) for every input and parameter,
//! masks and dropout included; the causal mask hides the future.

use std::sync::{Mutex, MutexGuard};
use tch::nn;
use tch::{Device, Kind, Tensor};
use tchlab::layers::transformer::decoder_layer::DecoderLayerDims;
use tchlab::layers::transformer::{
    causal_mask, DecoderLayer, Dropout, FeedForward, GridPositionalEncoding, LayerNorm, MultiHeadAttention,
    PositionalEncoding,
};

mod common;
use common::gradcheck::{autograd_of, finite_difference_check, rel_error};

const F64: (Kind, Device) = (Kind::Double, Device::Cpu);
const FD_TOLERANCE: f64 = 1e-6;
const AUTOGRAD_TOLERANCE: f64 = 1e-8;

/// Held by every test: torch's generator is global, and a test that seeds
/// it to draw the same dropout masks twice must not have another test's
/// draws land in between.
static GENERATOR: Mutex<()> = Mutex::new(());

/// The generator, held, seeded to 0, and an empty store.
fn f64_store() -> (MutexGuard<'static, ()>, nn::VarStore) {
    let generator = GENERATOR.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    tch::manual_seed(0);
    (generator, nn::VarStore::new(Device::Cpu))
}

/// Every variable of `vs` in f64 and random, so that no bias is 0 and no
/// norm's γ is 1: gradients that would hide behind those show. Weights and
/// biases ~ N(0, 0.5²), norms' γ ~ N(1, 0.3²).
fn randomize(vs: &mut nn::VarStore) {
    vs.double();
    tch::no_grad(|| {
        for (name, mut var) in vs.variables() {
            let centre = if name.contains("norm") && name.ends_with("weight") { 1.0 } else { 0.0 };
            let std = if centre == 1.0 { 0.3 } else { 0.5 };
            var.copy_(&(Tensor::randn(var.size(), F64) * std + centre));
        }
    });
}

/// Whether a parameter's gradient is zero whatever the input: an
/// attention's key bias adds the same `q·b_k` to every score of a query,
/// which the softmax ignores.
fn vanishes(name: &str) -> bool {
    name == "b_k" || name.ends_with("key.bias")
}

/// A gradient that must vanish: the explicit one and autograd's are zero to
/// rounding, and so are central differences.
fn check_vanishing(
    target: &Tensor,
    exact: &Tensor,
    auto: &Tensor,
    upstream: &Tensor,
    forward: &dyn Fn() -> Tensor,
    what: &str,
) {
    for (by, grad) in [("explicit", exact), ("autograd", auto)] {
        let largest = grad.abs().max().double_value(&[]);
        assert!(largest < 1e-12, "{what}: {by} gradient {largest:e}, not zero");
    }
    let h = 1e-6;
    let flat = target.view([-1]);
    for i in 0..flat.numel() as i64 {
        let original = flat.double_value(&[i]);
        let at = |value: f64| {
            let _ = flat.get(i).fill_(value);
            tch::no_grad(|| (forward() * upstream).sum(Kind::Double).double_value(&[]))
        };
        let numeric = (at(original + h) - at(original - h)) / (2.0 * h);
        let _ = flat.get(i).fill_(original);
        assert!(numeric.abs() < 1e-7, "{what}[{i}]: finite difference {numeric:e}, not zero");
    }
}

/// Each explicit gradient equals autograd's and central differences.
fn check_gradients(
    forward: &dyn Fn() -> Tensor,
    wrt: &[(&str, &Tensor)],
    explicit: &[&Tensor],
    upstream: &Tensor,
    layer: &str,
) {
    assert_eq!(wrt.len(), explicit.len(), "{layer}: one explicit gradient per checked tensor");
    let tensors: Vec<&Tensor> = wrt.iter().map(|(_, t)| *t).collect();
    let reference = autograd_of(forward, &tensors, upstream);
    for (((name, target), exact), auto) in wrt.iter().zip(explicit).zip(&reference) {
        assert_eq!(exact.size(), auto.size(), "{layer} d{name}: shape");
        if vanishes(name) {
            check_vanishing(target, exact, auto, upstream, forward, &format!("{layer} d{name}"));
            continue;
        }
        let err = rel_error(exact, auto);
        assert!(err <= AUTOGRAD_TOLERANCE, "{layer} d{name}: relative error {err:e} against autograd");
        let no_grad_forward = || tch::no_grad(forward);
        finite_difference_check(target, exact, upstream, &no_grad_forward, &format!("{layer} d{name}"), FD_TOLERANCE);
    }
}

/// `[(name, parameter)]` for a layer's parameters and their names.
fn named<'a>(names: &'a [String], params: &'a [Tensor]) -> Vec<(&'a str, &'a Tensor)> {
    assert_eq!(names.len(), params.len());
    names.iter().map(String::as_str).zip(params).collect()
}

#[test]
fn layer_norm_backward_matches_autograd_and_finite_differences() {
    let _rng = common::seeded(0);
    let (_generator, mut vs) = f64_store();
    let norm = LayerNorm::new(vs.root() / "norm", 6);
    randomize(&mut vs);
    let x = Tensor::randn([3, 4, 6], F64) * 2.0 + 0.7;
    let states = norm.forward_states(&x);
    let upstream = Tensor::randn([3, 4, 6], F64);
    let g = norm.backward(&x, &states, &upstream);
    let wrt = [("x", &x), ("gamma", &norm.weight), ("beta", &norm.bias)];
    check_gradients(&|| norm.forward(&x), &wrt, &[&g.input, &g.params[0], &g.params[1]], &upstream, "layer norm");
    // Against the definition: (x − μ)/√(σ² + ε)·γ + β with the biased variance.
    let mean = x.mean_dim([-1i64].as_slice(), true, Kind::Double);
    let variance = x.var_dim([-1i64].as_slice(), false, true);
    let expected = (&x - mean) / (variance + 1e-5).sqrt() * &norm.weight + &norm.bias;
    assert!(rel_error(&states.output, &expected) < 1e-12);
}

#[test]
fn feed_forward_backward_matches_autograd_and_finite_differences() {
    let _rng = common::seeded(0);
    let (_generator, mut vs) = f64_store();
    let block = FeedForward::new(&(vs.root() / "ff"), 5, 7, 0.5);
    randomize(&mut vs);
    let x = Tensor::randn([2, 3, 5], F64);
    let states = block.forward_states(&x);
    assert!(
        states.hidden.eq(0.0).any().int64_value(&[]) == 1,
        "the ReLU must cut something for the test to mean anything"
    );
    let upstream = Tensor::randn([2, 3, 5], F64);
    let g = block.backward(&x, &states, &upstream);
    let params = block.parameters();
    let names = ["W1", "b1", "W2", "b2"].map(String::from);
    let mut wrt = vec![("x", &x)];
    wrt.extend(named(&names, &params));
    let explicit: Vec<&Tensor> = std::iter::once(&g.input).chain(&g.params).collect();
    check_gradients(&|| block.forward(&x), &wrt, &explicit, &upstream, "feed-forward");
}

fn attention_names() -> Vec<String> {
    ["q", "k", "v", "o"].iter().flat_map(|p| [format!("W_{p}"), format!("b_{p}")]).collect()
}

#[test]
fn masked_self_attention_backward_matches_autograd_and_finite_differences() {
    let _rng = common::seeded(0);
    let (n, s, e, heads) = (2, 5, 8, 2);
    let (_generator, mut vs) = f64_store();
    let attention = MultiHeadAttention::new(&(vs.root() / "attn"), e, e, heads, 0.5);
    randomize(&mut vs);
    let x = Tensor::randn([n, s, e], F64);
    let mask = causal_mask(s, Device::Cpu);
    let states = attention.forward_states(&x, &x, Some(&mask));
    let upstream = Tensor::randn([n, s, e], F64);
    let g = attention.backward(&x, &x, &states, &upstream);
    let d_x = &g.input + &g.memory;
    let params = attention.parameters();
    let names = attention_names();
    let mut wrt = vec![("x", &x)];
    wrt.extend(named(&names, &params));
    let explicit: Vec<&Tensor> = std::iter::once(&d_x).chain(&g.params).collect();
    check_gradients(&|| attention.forward(&x, &x, Some(&mask)), &wrt, &explicit, &upstream, "masked self-attention");
    // No weight on a future key, and the weights of each query sum to 1.
    let future = Tensor::ones([s, s], (Kind::Bool, Device::Cpu)).triu(1);
    assert_eq!(states.weights.masked_select(&future).abs().sum(Kind::Double).double_value(&[]), 0.0);
    let sums = states.weights.sum_dim_intlist([-1i64].as_slice(), false, Kind::Double);
    assert!((sums - 1.0).abs().max().double_value(&[]) < 1e-12);
}

#[test]
fn a_causal_row_sees_no_future_word() {
    let _rng = common::seeded(0);
    let (n, s, e, heads) = (2, 6, 8, 4);
    let (_generator, mut vs) = f64_store();
    let attention = MultiHeadAttention::new(&(vs.root() / "attn"), e, e, heads, 0.5);
    randomize(&mut vs);
    let x = Tensor::randn([n, s, e], F64);
    let mask = causal_mask(s, Device::Cpu);
    let states = attention.forward_states(&x, &x, Some(&mask));
    for t in 0..s {
        // The gradient of position t's output reaches no later input...
        let upstream = Tensor::zeros([n, s, e], F64);
        let _ = upstream.narrow(1, t, 1).fill_(1.0);
        let g = attention.backward(&x, &x, &states, &upstream);
        let d_x = g.input + g.memory;
        let later = d_x.narrow(1, t + 1, s - t - 1).abs().sum(Kind::Double).double_value(&[]);
        assert_eq!(later, 0.0, "position {t}'s output has a gradient from a later word");
        if t > 0 {
            assert!(d_x.narrow(1, 0, t).abs().sum(Kind::Double).double_value(&[]) > 0.0, "position {t} sees its past");
        }
        // ... and changing the later words leaves it as it was.
        let changed = x.copy();
        let _ = changed.narrow(1, t + 1, s - t - 1).normal_(0.0, 3.0);
        let again = attention.forward(&changed, &changed, Some(&mask));
        assert!(rel_error(&again.narrow(1, 0, t + 1), &states.output.narrow(1, 0, t + 1)) < 1e-14);
    }
}

#[test]
fn cross_attention_backward_matches_autograd_and_finite_differences() {
    let _rng = common::seeded(0);
    // A memory narrower than the model and longer than the sequence, as the image grid is.
    let (n, s, l, e, m, heads) = (2, 4, 6, 8, 5, 4);
    let (_generator, mut vs) = f64_store();
    let attention = MultiHeadAttention::new(&(vs.root() / "attn"), e, m, heads, 0.5);
    randomize(&mut vs);
    let x = Tensor::randn([n, s, e], F64);
    let memory = Tensor::randn([n, l, m], F64);
    let states = attention.forward_states(&x, &memory, None);
    let upstream = Tensor::randn([n, s, e], F64);
    let g = attention.backward(&x, &memory, &states, &upstream);
    let params = attention.parameters();
    let names = attention_names();
    let mut wrt = vec![("x", &x), ("memory", &memory)];
    wrt.extend(named(&names, &params));
    let explicit: Vec<&Tensor> = [&g.input, &g.memory].into_iter().chain(&g.params).collect();
    check_gradients(&|| attention.forward(&x, &memory, None), &wrt, &explicit, &upstream, "cross-attention");
    assert_eq!(states.weights.size(), [n, heads, s, l]);
}

#[test]
fn positional_encoding_is_the_sinusoid_table_and_passes_gradients_through() {
    let _rng = common::seeded(0);
    let (steps, width) = (7, 6);
    let x = Tensor::randn([2, steps, width], F64);
    let encoded = PositionalEncoding.forward(&x);
    let table = encoded - &x;
    for t in 0..steps {
        for i in 0..width / 2 {
            let angle = t as f64 / 10000f64.powf(2.0 * i as f64 / width as f64);
            for n in 0..2 {
                assert!((table.double_value(&[n, t, 2 * i]) - angle.sin()).abs() < 1e-12);
                assert!((table.double_value(&[n, t, 2 * i + 1]) - angle.cos()).abs() < 1e-12);
            }
        }
    }
    let upstream = Tensor::randn([2, steps, width], F64);
    let d_x = PositionalEncoding.backward(&upstream);
    check_gradients(&|| PositionalEncoding.forward(&x), &[("x", &x)], &[&d_x], &upstream, "positional encoding");
}

#[test]
fn grid_encoding_gives_each_location_its_row_and_column_sinusoids() {
    let _rng = common::seeded(0);
    let (side, width) = (7, 10);
    let memory = Tensor::randn([2, side * side, width], F64);
    let table = GridPositionalEncoding.forward(&memory) - &memory;
    let steps = PositionalEncoding::table(side, width / 2, &memory);
    for (row, column) in [(0, 0), (0, 6), (3, 2), (6, 5)] {
        let location = table.get(1).get(row * side + column);
        assert!(rel_error(&location.narrow(0, 0, 5), &steps.get(row)) < 1e-15, "row part at ({row}, {column})");
        assert!(rel_error(&location.narrow(0, 5, 5), &steps.get(column)) < 1e-15, "column part at ({row}, {column})");
    }
    // Every location is told apart; a length that is no square is one row.
    let distinct = table.get(0).unique_dim(0, false, false, false).0.size()[0];
    assert_eq!(distinct, side * side);
    assert_eq!(GridPositionalEncoding::shape(49), (7, 7));
    assert_eq!(GridPositionalEncoding::shape(12), (1, 12));
    let upstream = Tensor::randn([2, side * side, width], F64);
    let d_memory = GridPositionalEncoding.backward(&upstream);
    check_gradients(
        &|| GridPositionalEncoding.forward(&memory),
        &[("memory", &memory)],
        &[&d_memory],
        &upstream,
        "grid encoding",
    );
}

#[test]
fn dropout_draws_a_seeded_scaled_mask_and_its_backward_uses_it() {
    let _rng = common::seeded(0);
    let dropout = Dropout::new(0.25);
    let x = Tensor::randn([20, 50], F64);
    tch::manual_seed(3);
    let mask = dropout.mask(&x);
    tch::manual_seed(3);
    let same = dropout.mask(&x);
    let drawn = mask.0.as_ref().expect("a mask in training");
    assert!(drawn.equal(same.0.as_ref().unwrap()), "the same seed draws the same mask");
    // Each entry is 0 or 1/(1 − 0.25), about a quarter of them 0.
    let kept = drawn.ne(0.0);
    assert_eq!(drawn.masked_select(&kept).ne(1.0 / 0.75).any().int64_value(&[]), 0);
    let dropped = 1.0 - kept.to_kind(Kind::Double).mean(Kind::Double).double_value(&[]);
    assert!((0.18..0.32).contains(&dropped), "dropped {dropped} of the entries at rate 0.25");
    assert!(Dropout::NONE.mask(&x).apply(&x).equal(&x), "the identity in evaluation");
    assert!(Dropout::NONE.mask(&x).0.is_none());
    let upstream = Tensor::randn([20, 50], F64);
    check_gradients(&|| mask.apply(&x), &[("x", &x)], &[&mask.backward(&upstream)], &upstream, "dropout");
}

fn decoder_layer_check(dropout: f64, what: &str) {
    let (n, s, l, e, m, heads, ff) = (2, 5, 6, 8, 5, 2, 12);
    let (_generator, mut vs) = f64_store();
    let dims = DecoderLayerDims { width: e, memory_width: m, heads, feed_forward: ff };
    let layer = DecoderLayer::new(&(vs.root() / "layer"), dims, 0.5);
    randomize(&mut vs);
    let x = Tensor::randn([n, s, e], F64);
    let memory = Tensor::randn([n, l, m], F64);
    let mask = causal_mask(s, Device::Cpu);
    // The same dropout masks on every pass: the seed is set before each.
    let forward_states = || {
        tch::manual_seed(11);
        layer.forward_states(&x, &memory, Some(&mask), Dropout::new(dropout))
    };
    let states = forward_states();
    let upstream = Tensor::randn([n, s, e], F64);
    let g = layer.backward(&x, &memory, &states, &upstream);
    let params = layer.parameters();
    let names = DecoderLayer::parameter_names();
    let mut wrt = vec![("x", &x), ("memory", &memory)];
    wrt.extend(named(&names, &params));
    let explicit: Vec<&Tensor> = [&g.input, &g.memory].into_iter().chain(&g.params).collect();
    check_gradients(&|| forward_states().output().shallow_clone(), &wrt, &explicit, &upstream, what);
}

#[test]
fn decoder_layer_backward_matches_autograd_and_finite_differences() {
    let _rng = common::seeded(0);
    decoder_layer_check(0.0, "decoder layer");
}

#[test]
fn decoder_layer_backward_with_dropout_uses_the_forward_masks() {
    let _rng = common::seeded(0);
    decoder_layer_check(0.3, "decoder layer with dropout");
}

#[test]
fn decoder_layer_parameters_are_named_as_stored() {
    let _rng = common::seeded(0);
    let (_generator, vs) = f64_store();
    let dims = DecoderLayerDims { width: 8, memory_width: 5, heads: 2, feed_forward: 12 };
    let layer = DecoderLayer::new(&(vs.root() / "layer"), dims, 0.5);
    let stored = vs.variables();
    for (name, param) in DecoderLayer::parameter_names().iter().zip(layer.parameters()) {
        let var = stored.get(&format!("layer.{name}")).unwrap_or_else(|| panic!("no variable layer.{name}"));
        assert_eq!(var.data_ptr(), param.data_ptr(), "{name} names another tensor");
    }
    assert_eq!(stored.len(), layer.parameters().len());
}
