//! Gradients through a ResNet whose stride-1 3×3 convolutions can take their
//! weight gradients from Winograd's transform: user code that calls a plain
//! `backward()` on the model gets autograd's weight gradients, and the CPU
//! training step (`WinogradBackprop`) gets the same ones, step after step.

use tch::{Device, Kind, Tensor};
use tchlab::accel::conv3x3::WinogradBackprop;
use tchlab::grad::{Backprop, Gradients, Params};
use tchlab::models::{Arch, Classifier};
use tchlab::train::optim::{Optimizer, Sgd};

fn max_relative_error(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[]) / b.abs().max().double_value(&[]).max(1e-12)
}

/// The gradients a plain `loss.backward()` leaves in each parameter's `.grad`.
fn plain_backward(model: &Classifier, params: &Params, images: &Tensor, labels: &Tensor) -> Gradients {
    for (_, p) in params.iter() {
        p.shallow_clone().zero_grad();
    }
    model.forward(images, true).cross_entropy_for_logits(labels).backward();
    Gradients(params.tensors().map(|p| p.grad().copy()).collect())
}

fn copy_weights(from: &Classifier, to: &Classifier) {
    tch::no_grad(|| {
        for ((_, a), (_, b)) in from.named_tensors().iter().zip(to.named_tensors()) {
            b.shallow_clone().copy_(a);
        }
    });
}

#[test]
fn plain_backward_and_the_winograd_step_train_resnet_to_the_same_weights() {
    tch::manual_seed(7);
    let plain = Classifier::new(Arch::Resnet18, 3, Device::Cpu);
    let winograd = Classifier::new(Arch::Resnet18, 3, Device::Cpu);
    let (plain_params, winograd_params) = (plain.trainable(), winograd.trainable());
    let mut plain_sgd = Sgd::new(&plain_params, 0.9, 0.0);
    let mut winograd_sgd = Sgd::new(&winograd_params, 0.9, 0.0);
    for step in 0..3i64 {
        // Each step starts both models from the same weights and batch-norm
        // statistics: left to themselves, rounding differences of 1e-7 grow
        // through batch-2 batch norm and max-pool ties into a 2 % difference
        // of conv1's gradient by step 2 on an AVX2 CPU (not on AVX-512 ones),
        // which is the training's sensitivity, not the gradients' error.
        copy_weights(&plain, &winograd);
        // 40×44 inputs: odd sizes from layer 1 on, where Winograd's tiles overhang the edge.
        let images = Tensor::randn([2, 3, 40, 44], (Kind::Float, Device::Cpu));
        let labels = Tensor::from_slice(&[step % 3, (step + 1) % 3i64]);
        let expected = plain_backward(&plain, &plain_params, &images, &labels);
        let loss = |logits: &Tensor| logits.cross_entropy_for_logits(&labels);
        let pass = WinogradBackprop.run(&mut || winograd.forward(&images, true), &loss, &winograd_params, 1.0);
        let mut conv_weights = 0;
        for ((name, _), (ours, theirs)) in winograd_params.iter().zip(pass.grads.iter().zip(expected.iter())) {
            assert!(ours.defined() && theirs.defined(), "step {step}: {name} has no gradient");
            let error = max_relative_error(ours, theirs);
            assert!(error < 1e-4, "step {step}: {name}: relative error {error}");
            conv_weights += usize::from(ours.size().ends_with(&[3, 3]) && ours.dim() == 4);
        }
        assert_eq!(conv_weights, 16, "every 3×3 convolution of ResNet-18's blocks was compared");
        plain_sgd.step(&plain_params, &expected, 0.01);
        winograd_sgd.step(&winograd_params, &pass.grads, 0.01);
    }
    for ((name, a), (_, b)) in plain.named_tensors().iter().zip(winograd.named_tensors()) {
        if a.kind() == Kind::Float {
            let error = max_relative_error(&b, a);
            assert!(error < 1e-4, "{name} after three steps: relative error {error}");
        }
    }
}
