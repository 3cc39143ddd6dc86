//! One training step (batch 4) of a backbone and head, split into forward and
//! backward + update, median over the steps. The layout argument: `nchw`, or
//! channels-last inputs with the weights as they are (`cl`) or converted to
//! channels-last too (`cl-weights`). The third argument, `direct`, takes every
//! weight gradient from oneDNN instead of Winograd's where it applies, and
//! `both` alternates the two step by step (the same host load for each) and
//! reports both. `STEPS=N` runs N steps (of each) instead of 25;
//! `PRECISION=bf16` runs the forward passes under bf16 autocast (where the
//! 3×3 weight gradients are oneDNN's whichever is asked).
//! `cargo run --release --example bench_step -- resnet18 nchw both`

use std::time::Instant;
use tch::{Device, Kind, Tensor};
use tchlab::accel::conv3x3::WinogradBackprop;
use tchlab::autocast::Dtype;
use tchlab::choice_names::Named;
use tchlab::grad::{Autograd, Backprop};
use tchlab::models::{Arch, Classifier};
use tchlab::train::amp::Autocast;
use tchlab::train::optim::{Optimizer, Sgd};

/// Forward and backward-and-update times of each step, in ms.
#[derive(Default)]
struct Times {
    forward: Vec<f64>,
    backward: Vec<f64>,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let arch = Arch::parse_name(&std::env::args().nth(1).unwrap_or_else(|| "efficientnet-lite0".into())).unwrap();
    let layout = std::env::args().nth(2).unwrap_or_default();
    let cl = layout != "nchw";
    let gradients = std::env::args().nth(3).unwrap_or_default();
    let modes: &[bool] = match gradients.as_str() {
        "direct" => &[false],
        "both" => &[false, true],
        _ => &[true],
    };
    let model = Classifier::new(arch, 2, Device::Cpu);
    if layout == "cl-weights" {
        for (_, mut var) in model.backbone_vs.variables() {
            if var.dim() == 4 {
                let converted = tchlab::accel::channels_last(&var);
                tch::no_grad(|| var.set_data(&converted));
            }
        }
    }
    let params = model.trainable();
    let mut sgd = Sgd::new(&params, 0.9, 0.0);
    let x = Tensor::randn([4, 3, 224, 224], (Kind::Float, Device::Cpu));
    let y = Tensor::from_slice(&[0i64, 1, 0, 1]);
    let mut times: Vec<Times> = modes.iter().map(|_| Times::default()).collect();
    let steps: usize = std::env::var("STEPS").map_or(25, |s| s.parse().unwrap());
    let bf16 = std::env::var("PRECISION").is_ok_and(|p| p == "bf16");
    let autocast = if bf16 { Autocast::On(Device::Cpu, Dtype::Bf16) } else { Autocast::Off };
    for _ in 0..steps {
        for (&winograd, times) in modes.iter().zip(times.iter_mut()) {
            let start = Instant::now();
            let mut forward_ms = 0.0;
            let mut forward = || {
                let logits = autocast.run(|| {
                    if cl {
                        model.forward(&x, true)
                    } else {
                        model.head_forward(&model.backbone_forward_train_as_is(&x), true)
                    }
                });
                let _ = logits.sum(Kind::Float).double_value(&[]);
                forward_ms = start.elapsed().as_secs_f64() * 1000.0;
                logits
            };
            let loss = |logits: &Tensor| logits.cross_entropy_for_logits(&y);
            let backprop: &dyn Backprop = if winograd { &WinogradBackprop } else { &Autograd };
            let pass = backprop.run(&mut forward, &loss, &params, 1.0);
            sgd.step(&params, &pass.grads, 0.001);
            let _ = pass.loss.double_value(&[]);
            times.forward.push(forward_ms);
            times.backward.push(start.elapsed().as_secs_f64() * 1000.0 - forward_ms);
        }
    }
    for (&winograd, times) in modes.iter().zip(times.iter_mut()) {
        println!(
            "{}{} batch 4 {}{}: forward {:.0} ms, backward and update {:.0} ms",
            arch.name(),
            if bf16 { " bf16" } else { "" },
            if cl { format!("channels-last {layout}") } else { "nchw".to_string() },
            if winograd { "" } else { ", weight gradients all oneDNN" },
            median(&mut times.forward),
            median(&mut times.backward)
        );
    }
}
