//! The hand-derived backward passes against autograd (double precision,
//! relative error ≤ 1e-8) and against central finite differences, for random
//! shapes: batch 1 and >1, odd sizes, stride 2 and 3, padding 0 and >0,
//! non-square kernels; then whole networks.

use tch::nn::Module;
use tch::{Device, Kind, Tensor};
use tchlab::grad::HandDerived;
use tchlab::layers::{softmax_cross_entropy, Affine, Conv2d, Flatten, LayerGradients, MaxPool2d, Relu};
use tchlab::nets::cnn::ConvNetShape;
use tchlab::nets::{Net, ThreeLayerConvNet, TwoLayerNet};

mod common;
use common::gradcheck::{autograd, finite_difference_check, rel_error};

/// Central differences at h = 1e-6 in f64 agree with the exact gradients of these layers to this relative error.
const FD_TOLERANCE: f64 = 1e-5;

const F64: (Kind, Device) = (Kind::Double, Device::Cpu);

fn randn(shape: &[i64]) -> Tensor {
    Tensor::randn(shape, F64)
}

/// Cross-entropy in the scores' own precision (`tch`'s
/// `cross_entropy_for_logits` computes in f32).
fn cross_entropy(scores: &Tensor, labels: &Tensor) -> Tensor {
    scores.log_softmax(-1, scores.kind()).nll_loss(labels)
}

fn assert_matches_autograd(explicit: &LayerGradients, reference: &[Tensor], what: &str) {
    let explicit_all: Vec<&Tensor> = std::iter::once(&explicit.input).chain(explicit.params.iter()).collect();
    assert_eq!(explicit_all.len(), reference.len());
    for (i, (e, r)) in explicit_all.iter().zip(reference).enumerate() {
        assert_eq!(e.size(), r.size(), "{what} gradient {i} shape");
        let err = rel_error(e, r);
        assert!(err <= 1e-8, "{what}: gradient {i} differs from autograd, relative error {err:e}");
    }
}

#[test]
fn affine_backward_matches_autograd_and_finite_differences() {
    let _rng = common::seeded(0);
    tch::manual_seed(1);
    for &(n, dims, out) in &[(1i64, [5i64, 1], 3i64), (4, [3, 7], 6), (9, [11, 1], 2)] {
        let layer = Affine { weight: randn(&[dims[0] * dims[1], out]), bias: randn(&[out]) };
        let x = randn(&[n, dims[0], dims[1]]);
        let upstream = randn(&[n, out]);
        let explicit = layer.backward(&x, &upstream);
        let reference = autograd(
            |x| x.reshape([n, -1]).matmul(&layer.weight) + &layer.bias,
            &x,
            &[layer.weight.shallow_clone(), layer.bias.shallow_clone()],
            &upstream,
        );
        assert_matches_autograd(&explicit, &reference, "affine");
        finite_difference_check(&x, &explicit.input, &upstream, &|| layer.forward(&x), "affine dX", FD_TOLERANCE);
        finite_difference_check(
            &layer.weight,
            &explicit.params[0],
            &upstream,
            &|| layer.forward(&x),
            "affine dW",
            FD_TOLERANCE,
        );
        finite_difference_check(
            &layer.bias,
            &explicit.params[1],
            &upstream,
            &|| layer.forward(&x),
            "affine db",
            FD_TOLERANCE,
        );
    }
}

#[test]
fn relu_passes_gradient_where_input_is_positive_and_not_at_zero() {
    let _rng = common::seeded(0);
    tch::manual_seed(2);
    let mut x = randn(&[3, 10]);
    let _ = x.get(0).narrow(0, 0, 4).fill_(0.0); // exact zeros: the convention matters here
    let upstream = randn(&[3, 10]);
    let explicit = Relu.backward(&x, &upstream);
    let reference = autograd(|x| x.relu(), &x, &[], &upstream);
    assert_matches_autograd(&explicit, &reference, "relu");
    let at_zero = explicit.input.get(0).narrow(0, 0, 4);
    assert_eq!(
        at_zero.abs().sum(Kind::Double).double_value(&[]),
        0.0,
        "gradient at x = 0 must be 0 (autograd's convention)"
    );
    x = x.abs() + 0.1;
    let all_positive = Relu.backward(&x, &upstream);
    assert_eq!(rel_error(&all_positive.input, &upstream), 0.0);
}

#[test]
fn softmax_cross_entropy_is_stable_and_matches_autograd() {
    let _rng = common::seeded(0);
    tch::manual_seed(3);
    for n in [1i64, 5, 50] {
        let scores = randn(&[n, 10]) * 3.0;
        let labels = Tensor::randint(10, [n], (Kind::Int64, Device::Cpu));
        let (loss, d_scores) = softmax_cross_entropy(&scores, &labels);
        let expected = cross_entropy(&scores, &labels);
        assert!(rel_error(&loss, &expected) <= 1e-12, "loss {loss:?} vs {expected:?}");
        let s = scores.detach().set_requires_grad(true);
        let grad = Tensor::run_backward(&[&cross_entropy(&s, &labels)], &[&s], false, false);
        assert!(rel_error(&d_scores, &grad[0]) <= 1e-8);
    }
    let huge = Tensor::from_slice(&[1e4f64, -1e4, 0.0]).view([1, 3]);
    let (loss, grad) = softmax_cross_entropy(&huge, &Tensor::from_slice(&[1i64]));
    assert!((loss.double_value(&[]) - 2e4).abs() < 1e-6, "stable loss for huge scores");
    assert!(grad.isfinite().all().int64_value(&[]) == 1);
}

fn check_conv(input: [i64; 4], f: i64, kernel: [i64; 2], stride: i64, padding: i64) {
    let [n, c, h, w] = input;
    let layer = Conv2d { weight: randn(&[f, c, kernel[0], kernel[1]]), bias: randn(&[f]), stride, padding };
    let x = randn(&[n, c, h, w]);
    let out = layer.forward(&x);
    let upstream = Tensor::randn(out.size(), F64);
    let explicit = layer.backward(&x, &upstream);
    let what = format!("conv N{n} C{c} {h}x{w} F{f} k{kernel:?} s{stride} p{padding}");
    let reference = autograd(
        |x| x.conv2d(&layer.weight, Some(&layer.bias), [stride, stride], [padding, padding], [1, 1], 1),
        &x,
        &[layer.weight.shallow_clone(), layer.bias.shallow_clone()],
        &upstream,
    );
    assert_matches_autograd(&explicit, &reference, &what);
    finite_difference_check(&x, &explicit.input, &upstream, &|| layer.forward(&x), &format!("{what} dX"), FD_TOLERANCE);
    finite_difference_check(
        &layer.weight,
        &explicit.params[0],
        &upstream,
        &|| layer.forward(&x),
        &format!("{what} dK"),
        FD_TOLERANCE,
    );
    finite_difference_check(
        &layer.bias,
        &explicit.params[1],
        &upstream,
        &|| layer.forward(&x),
        &format!("{what} db"),
        FD_TOLERANCE,
    );
}

#[test]
fn conv_backward_matches_autograd_and_finite_differences() {
    let _rng = common::seeded(0);
    tch::manual_seed(4);
    check_conv([1, 3, 7, 9], 4, [3, 5], 1, 0); // batch 1, odd sizes, non-square kernel
    check_conv([2, 2, 8, 7], 3, [3, 3], 2, 1); // stride 2, padding
    check_conv([3, 1, 9, 9], 2, [4, 2], 2, 2); // even kernel, stride that leaves spare rows
    check_conv([2, 3, 10, 11], 5, [5, 5], 3, 0); // stride 3
    check_conv([2, 1, 28, 28], 4, [7, 7], 1, 3); // the MNIST CNN's shape
}

#[test]
fn maxpool_backward_routes_to_the_maximum() {
    let _rng = common::seeded(0);
    tch::manual_seed(5);
    for &(n, c, h, w) in &[(1i64, 1i64, 4i64, 4i64), (2, 3, 8, 6), (3, 2, 7, 9)] {
        let pool = MaxPool2d::default();
        let x = randn(&[n, c, h, w]);
        let upstream = Tensor::randn(pool.forward(&x).size(), F64);
        let explicit = pool.backward(&x, &upstream);
        let reference = autograd(|x| pool.forward(x), &x, &[], &upstream);
        assert_matches_autograd(&explicit, &reference, "maxpool");
        finite_difference_check(&x, &explicit.input, &upstream, &|| pool.forward(&x), "maxpool dX", FD_TOLERANCE);
    }
}

#[test]
fn flatten_backward_restores_the_shape() {
    let _rng = common::seeded(0);
    let x = randn(&[2, 3, 4, 5]);
    let upstream = randn(&[2, 60]);
    let explicit = Flatten.backward(&x, &upstream);
    assert_matches_autograd(&explicit, &autograd(|x| Flatten.forward(x), &x, &[], &upstream), "flatten");
}

fn check_net(net: &dyn Net, images: &Tensor, labels: &Tensor, what: &str) {
    let (loss, explicit) = net.loss_and_gradients(images, labels);
    let params: Vec<Tensor> = net.named_parameters().into_iter().map(|(_, t)| t).collect();
    let autograd_loss = cross_entropy(&net.scores(images), labels);
    let reference = Tensor::run_backward(&[&autograd_loss], &params, false, false);
    assert!(rel_error(&loss, &autograd_loss) <= 1e-12);
    for (i, (e, r)) in explicit.iter().zip(&reference).enumerate() {
        let err = rel_error(e, r);
        assert!(err <= 1e-8, "{what}: parameter {i} gradient differs from autograd, relative error {err:e}");
    }
}

#[test]
fn whole_networks_backward_equals_autograd() {
    let _rng = common::seeded(0);
    tch::manual_seed(6);
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let mlp = TwoLayerNet::new(&vs.root(), 784, 37, 10, 0.1);
    let shape = ConvNetShape { side: 28, filters: 6, kernel: 7, hidden: 20, classes: 10 };
    let cnn = ThreeLayerConvNet::new(&(vs.root() / "cnn"), &shape, 0.1);
    let mut vs = vs;
    vs.double();
    let images = randn(&[5, 784]);
    let labels = Tensor::from_slice(&[3i64, 1, 4, 1, 5]);
    check_net(&mlp, &images, &labels, "MLP");
    check_net(&cnn, &images, &labels, "CNN");

    // The CNN pools before its ReLU; against autograd through the
    // assignment's order (conv, ReLU, pool) the gradients are the same.
    let x = images.view([-1, 1, 28, 28]);
    let pooled = cnn.pool.forward(&cnn.relu.forward(&cnn.conv.forward(&x)));
    let scores = cnn.affine2.forward(&cnn.relu.forward(&cnn.affine1.forward(&pooled)));
    let reference = Tensor::run_backward(
        &[&cross_entropy(&scores, &labels)],
        &cnn.named_parameters().into_iter().map(|(_, t)| t).collect::<Vec<_>>(),
        false,
        false,
    );
    let (_, explicit) = cnn.loss_and_gradients(&images, &labels);
    for (i, (e, r)) in explicit.iter().zip(&reference).enumerate() {
        let err = rel_error(e, r);
        assert!(err <= 1e-8, "CNN parameter {i}: differs from conv-ReLU-pool autograd, relative error {err:e}");
    }
}
