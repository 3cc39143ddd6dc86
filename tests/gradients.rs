//! Gradients through a ResNet whose stride-1 3×3 convolutions can take their
//! weight gradients from Winograd's transform: user code that calls a plain
//! `backward()` on the model gets autograd's weight gradients, and the CPU
//! training step (`WinogradBackprop`) gets the same ones, step after step.
//! Gradient clipping (`--clip-grad-norm`) gives what PyTorch's
//! `clip_grad_norm_` gives.

mod common;

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
    let _rng = common::seeded(0);
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

/// `--clip-grad-norm`: [`Gradients::clip_norm_`] against PyTorch's own
/// `torch.nn.utils.clip_grad_norm_` (in the venv) on a fixture gradient set
/// with a parameter that got no gradient: the total norm, and every clipped
/// gradient, for a bound it exceeds and one it does not.
#[test]
fn clipping_the_gradient_norm_matches_pytorchs_clip_grad_norm() {
    let grads: Vec<Tensor> = {
        let _rng = common::seeded(29);
        let shapes: [&[i64]; 3] = [&[3, 4], &[4], &[2, 2, 3]];
        shapes.iter().map(|s| Tensor::randn(*s, (Kind::Float, Device::Cpu)) * 2.0).collect()
    };
    let max_norms = [1.0, 1e3];
    let fixture = serde_json::json!({
        "grads": grads.iter().map(|g| serde_json::json!({
            "shape": g.size(),
            "values": Vec::<f32>::try_from(&g.reshape([-1])).unwrap(),
        })).collect::<Vec<_>>(),
        "max_norms": max_norms,
    });
    let script = r#"
import json, sys, torch
case = json.load(sys.stdin)
results = []
for max_norm in case["max_norms"]:
    params = []
    for g in case["grads"]:
        p = torch.zeros(g["shape"], requires_grad=True)
        p.grad = torch.tensor(g["values"], dtype=torch.float32).reshape(g["shape"])
        params.append(p)
    params.insert(1, torch.zeros(5, requires_grad=True))  # no gradient
    total = torch.nn.utils.clip_grad_norm_(params, max_norm)
    grads = [p.grad.reshape(-1).tolist() for p in params if p.grad is not None]
    results.append({"total": total.item(), "grads": grads})
print(json.dumps(results))
"#;
    let mut python = std::process::Command::new(common::python());
    python.arg("-c").arg(script).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped());
    let mut child = python.spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), fixture.to_string().as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let torch: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap();
    for (max_norm, theirs) in max_norms.iter().zip(&torch) {
        let mut ours = Gradients(vec![grads[0].copy(), Tensor::new(), grads[1].copy(), grads[2].copy()]);
        let total = ours.clip_norm_(*max_norm).unwrap().double_value(&[]);
        let their_total = theirs["total"].as_f64().unwrap();
        assert!((total - their_total).abs() <= 1e-6 * their_total, "total norm {total} against {their_total}");
        let clipped: Vec<&Tensor> = ours.iter().filter(|g| g.defined()).collect();
        for (i, (ours, theirs)) in clipped.iter().zip(theirs["grads"].as_array().unwrap()).enumerate() {
            let theirs: Vec<f32> = theirs.as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
            let error = max_relative_error(&ours.reshape([-1]), &Tensor::from_slice(&theirs));
            assert!(error <= 1e-6, "max_norm {max_norm}, gradient {i}: {error}");
        }
        if total <= *max_norm {
            assert!(clipped.iter().zip(&grads).all(|(a, b)| a.equal(b)), "an unclipped set changed");
        }
    }
    assert!(torch[0]["total"].as_f64().unwrap() > max_norms[0], "the fixture must exceed the first bound");
}
