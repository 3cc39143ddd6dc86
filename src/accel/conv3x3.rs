//! ResNet's 3×3 convolution layer ([`Conv3x3`]) and the backprop that takes
//! its weight gradients from [`super::winograd::weight_gradient`] in CPU
//! training ([`WinogradBackprop`]). The convolutions run on a detached weight
//! only inside [`WinogradBackprop::run`], recorded on a tape private to this
//! file; everywhere else [`Conv3x3`] is an ordinary convolution whose weight
//! gradient autograd computes. Under CPU autocast (`--precision bf16`) the
//! convolutions run in bf16 and keep oneDNN's bf16 weight gradients: the
//! Winograd transform here is fp32 arithmetic.

use super::winograd::weight_gradient;
use crate::grad::{backward, Backprop, Forward, LossFn, Params, Pass};
use std::cell::RefCell;
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

/// A 3×3 convolution with padding 1 and no bias (the variable is `weight`,
/// as in `nn::conv2d`). With stride 1 and one group, inside
/// [`WinogradBackprop::run`], on the CPU, it leaves its weight gradient to
/// [`weight_gradient`]; otherwise (grouped, as ResNeXt's) it is an ordinary
/// convolution. Its output must not be modified in place (autograd is asked
/// for the gradient of that very tensor).
#[derive(Debug)]
pub struct Conv3x3 {
    pub ws: Tensor,
    stride: i64,
    groups: i64,
}

impl Conv3x3 {
    pub fn new(p: nn::Path, c_in: i64, c_out: i64, stride: i64) -> Self {
        Self::grouped(p, c_in, c_out, stride, 1)
    }

    /// The convolution in `groups` groups of `c_in / groups` input channels.
    pub fn grouped(p: nn::Path, c_in: i64, c_out: i64, stride: i64, groups: i64) -> Self {
        let config = nn::ConvConfig { stride, padding: 1, bias: false, groups, ..Default::default() };
        Self { ws: nn::conv2d(p, c_in, c_out, 3, config).ws, stride, groups }
    }
}

impl Module for Conv3x3 {
    fn forward(&self, x: &Tensor) -> Tensor {
        let stride = [self.stride, self.stride];
        let deferred = Tape::is_recording()
            && self.stride == 1
            && self.groups == 1
            && x.device() == Device::Cpu
            && x.kind() == Kind::Float
            && !crate::autocast::is_enabled(Device::Cpu)
            && x.requires_grad()
            && self.ws.requires_grad();
        if !deferred {
            return x.conv2d(&self.ws, None::<Tensor>, stride, [1, 1], [1, 1], self.groups);
        }
        let y = x.conv2d(&self.ws.detach(), None::<Tensor>, [1, 1], [1, 1], [1, 1], 1);
        Tape::push(Deferred { weight: self.ws.shallow_clone(), input: x.shallow_clone(), output: y.shallow_clone() });
        y
    }
}

/// A convolution whose weight gradient is left to [`weight_gradient`]: its
/// weight variable, and the input and output of the call.
struct Deferred {
    weight: Tensor,
    input: Tensor,
    output: Tensor,
}

thread_local! {
    static TAPE: RefCell<Option<Vec<Deferred>>> = const { RefCell::new(None) };
}

/// The [`Deferred`] convolutions of one forward pass on this thread.
#[derive(Default)]
struct Tape {
    entries: Vec<Deferred>,
}

impl Tape {
    /// Runs `forward`, recording the [`Conv3x3`] calls it makes on this thread.
    fn record<T>(forward: impl FnOnce() -> T) -> (T, Tape) {
        let outer = TAPE.with(|tape| tape.borrow_mut().replace(Vec::new()));
        let result = forward();
        let entries = TAPE.with(|tape| std::mem::replace(&mut *tape.borrow_mut(), outer)).unwrap_or_default();
        (result, Tape { entries })
    }

    fn is_recording() -> bool {
        TAPE.with(|tape| tape.borrow().is_some())
    }

    fn push(entry: Deferred) {
        TAPE.with(|tape| tape.borrow_mut().as_mut().expect("recording").push(entry));
    }

    /// The gradients of `loss` for `params`: autograd's, except for the
    /// weights of the recorded convolutions, whose gradients come from the
    /// gradient of each recorded output.
    fn gradients(&self, loss: &Tensor, params: &Params) -> crate::grad::Gradients {
        let outputs: Vec<&Tensor> = self.entries.iter().map(|entry| &entry.output).collect();
        let (mut grads, output_grads) = backward(loss, params, &outputs);
        for (entry, grad_output) in self.entries.iter().zip(output_grads) {
            let Some(i) = params.position_of(&entry.weight).filter(|_| grad_output.defined()) else { continue };
            let grad = tch::no_grad(|| weight_gradient(&entry.input, &grad_output));
            grads.0[i] = if grads.0[i].defined() { &grads.0[i] + grad } else { grad };
        }
        grads
    }
}

/// Backpropagation with the weight gradients of the stride-1 3×3
/// convolutions ([`Conv3x3`]) by Winograd's transform, for CPU training.
/// A model without such convolutions gets autograd's gradients unchanged.
pub struct WinogradBackprop;

impl Backprop for WinogradBackprop {
    fn run(&self, forward: Forward, loss_of: LossFn, params: &Params, loss_scale: f64) -> Pass {
        let (logits, tape) = Tape::record(forward);
        let loss = loss_of(&logits);
        let grads = tape.gradients(&(&loss * loss_scale), params);
        Pass { logits: logits.detach(), loss: loss.detach(), grads }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn max_relative_error(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).abs().max().double_value(&[]) / b.abs().max().double_value(&[])
    }

    #[test]
    fn conv3x3_defers_only_while_recording_and_gives_autograds_values() {
        tch::manual_seed(2);
        let vs = nn::VarStore::new(Device::Cpu);
        let conv = Conv3x3::new(vs.root() / "conv", 3, 4, 1);
        let x = Tensor::randn([2, 3, 6, 6], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let expected = x.conv2d(&conv.ws, None::<Tensor>, [1, 1], [1, 1], [1, 1], 1);
        let (y, tape) = Tape::record(|| conv.forward(&x));
        assert!(y.equal(&expected));
        assert_eq!(tape.entries.len(), 1);
        assert!(!Tape::is_recording());
        let (_, no_grad_tape) = Tape::record(|| tch::no_grad(|| conv.forward(&x.detach())));
        assert!(no_grad_tape.entries.is_empty());
        let bf16 = crate::autocast::Dtype::Bf16;
        let (y, bf16_tape) = Tape::record(|| crate::autocast::run(Device::Cpu, bf16, || conv.forward(&x)));
        assert!(bf16_tape.entries.is_empty(), "under bf16 autocast oneDNN keeps the weight gradient");
        assert_eq!(y.kind(), Kind::BFloat16);
    }

    #[test]
    fn resnet_gradients_by_winograd_equal_autograds() {
        use crate::grad::Autograd;
        use crate::models::{Arch, Classifier};
        tch::manual_seed(3);
        // Every stride-1 3×3 convolution: 4 + 3 + 3 + 3 in ResNet-18's basic blocks, and in
        // ResNet-50's bottlenecks all but the three that downsample (16 − 3); none of
        // ResNeXt's grouped ones.
        for (arch, recorded) in [(Arch::Resnet18, 13), (Arch::Resnet50, 13), (Arch::Resnext50_32x4d, 0)] {
            let model = Classifier::new(arch, 3, Device::Cpu);
            let params = Params::new(model.named_tensors());
            // Odd sizes from layer 1 on (25×30), where the tiles overhang the edge.
            let images = Tensor::randn([2, 3, 100, 120], (Kind::Float, Device::Cpu));
            let labels = Tensor::from_slice(&[0i64, 2]);
            let loss = |logits: &Tensor| logits.cross_entropy_for_logits(&labels);
            let expected = Autograd.run(&mut || model.forward(&images, true), &loss, &params, 1.0).grads;
            let (_, tape) = Tape::record(|| model.forward(&images, true));
            assert_eq!(tape.entries.len(), recorded, "{arch:?}: convolutions recorded");
            let ours = WinogradBackprop.run(&mut || model.forward(&images, true), &loss, &params, 1.0).grads;
            for ((name, _), (a, b)) in params.iter().zip(ours.iter().zip(expected.iter())) {
                let error = max_relative_error(a, b);
                assert!(error < 1e-4, "{arch:?} {name}: relative error {error}");
            }
        }
    }
}
