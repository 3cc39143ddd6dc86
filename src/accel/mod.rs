//! The seam that holds the crate's CPU speed code. Everything here changes
//! how fast a result comes, never what it is, and nothing outside asks how:
//!
//! - [`backprop`]: how a training step gets its gradients — on the CPU with
//!   the weight gradients of ResNet's dense stride-1 3×3 convolutions by Winograd's
//!   transform ([`winograd`], its transforms on libtorch's own OpenMP threads,
//!   [`omp`]), except under bf16 autocast, where oneDNN's bf16 weight
//!   gradients are kept; elsewhere plain autograd.
//! - [`arrange_input`], [`arrange_weights`] and [`pool`]: the memory layout
//!   a pass or a kernel runs fastest in.
//! - [`eval_lanes`]: eval passes of small batches spread over the cores, one
//!   libtorch thread each, over read-only model views.
//! - [`lapack`]: the PCA's f64 products and eigendecompositions by OpenBLAS
//!   where it is installed (libtorch's MKL otherwise).
//! - [`init_threads`]: the process's thread pools, set up once by a binary.
//!
//! The general training path (`crate::grad`, `crate::train`) sees only the
//! [`crate::grad::Backprop`] trait and plain tensors.

pub mod conv3x3;
pub mod eval_lanes;
pub mod lapack;
pub mod omp;
pub mod pool;
pub mod winograd;

use crate::grad::{Autograd, Backprop};
use crate::reporter::Reporter;
use tch::{nn, Device, Tensor};

/// The fastest way to correct gradients on `device`.
pub fn backprop(device: Device) -> Box<dyn Backprop> {
    match device {
        Device::Cpu => Box::new(conv3x3::WinogradBackprop),
        _ => Box::new(Autograd),
    }
}

/// The same `[N, C, H, W]` images in the memory layout their pass runs
/// fastest in: channels-last for every eval pass and for training networks
/// built on depthwise convolutions (EfficientNet); NCHW for ResNet training
/// (`cargo run --release --example bench_step -- resnet18 [nchw]`).
pub fn arrange_input(images: &Tensor, train: bool, depthwise: bool) -> Tensor {
    if !train || depthwise {
        channels_last(images)
    } else {
        images.shallow_clone()
    }
}

/// Stores a model's convolution weights in the layout its passes run fastest
/// in: channels-last when they run under bf16 autocast (`bf16`) on the CPU
/// (oneDNN's bf16 convolutions then take them without a reorder each call;
/// `PRECISION=bf16 cargo run --release --example bench_step -- resnet18 cl-weights`),
/// as they are otherwise. Values, names and saved files do not change.
pub fn arrange_weights(vs: &nn::VarStore, bf16: bool) {
    if !bf16 || vs.device() != Device::Cpu {
        return;
    }
    for (_, mut var) in vs.variables() {
        if var.dim() == 4 {
            let converted = channels_last(&var);
            tch::no_grad(|| var.set_data(&converted));
        }
    }
}

/// The same `[N, C, H, W]` tensor, stored as NHWC in memory.
pub fn channels_last(x: &Tensor) -> Tensor {
    x.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
}

/// Sets up the process's threads once, before any tensor work: `threads`
/// libtorch intra-op threads (default: libtorch's own choice), `workers`
/// threads that decode and augment images (running libtorch single-threaded,
/// as PyTorch's DataLoader workers do), and the eval lanes. A pool that
/// cannot be started is a warning to `reporter`.
pub fn init_threads(threads: Option<usize>, workers: usize, reporter: &dyn Reporter) {
    if let Some(threads) = threads {
        tch::set_num_threads(threads.max(1) as i32);
    }
    // Settle this thread's libtorch thread count first: helper threads set
    // theirs to one, and libtorch gives the last value set to any thread
    // that has not run an operator yet.
    let lanes = tch::get_num_threads().max(1) as usize;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(workers.max(1))
        .start_handler(|_| single_threaded_helper())
        .build_global();
    // A second call finds the pool made by the first: that one stands.
    if let Err(error) = pool.map_err(|e| e.to_string()).or_else(|e| if e.contains("already") { Ok(()) } else { Err(e) })
    {
        reporter.warning(&format!(
            "warning: {workers} worker thread(s) could not be started ({error}); rayon's default pool is used"
        ));
    }
    if let Err(error) = eval_lanes::lane_pool(lanes) {
        reporter.warning(&format!(
            "warning: the {lanes} eval lane thread(s) could not be started ({error}); frozen passes run on one thread"
        ));
    }
}

/// Makes the calling helper thread (augmentation, batch producer) run its
/// libtorch operators on one thread, as PyTorch's DataLoader workers do: each
/// thread that calls libtorch otherwise starts its own team of OpenMP
/// threads, and on a few cores those teams fight the training step's team.
pub fn single_threaded_helper() {
    tch::set_num_threads(1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    fn is_channels_last(t: &Tensor) -> bool {
        let [_, c, h, w] = t.size()[..] else { return false };
        t.stride() == [h * w * c, 1, w * c, c]
    }

    #[test]
    fn bf16_cpu_weights_are_stored_channels_last_with_the_same_values_and_outputs() {
        tch::manual_seed(3);
        let vs = nn::VarStore::new(Device::Cpu);
        let conv = nn::conv2d(vs.root() / "conv", 3, 8, 3, Default::default());
        let weight_before = conv.ws.copy();
        let x = Tensor::randn([2, 3, 9, 9], (Kind::Float, Device::Cpu));
        let bf16 = || crate::autocast::run(Device::Cpu, crate::autocast::Dtype::Bf16, || x.apply(&conv));
        let output_before = bf16();
        arrange_weights(&vs, false);
        assert!(conv.ws.is_contiguous(), "fp32 weights keep their layout");
        arrange_weights(&vs, true);
        assert!(is_channels_last(&conv.ws), "strides {:?}", conv.ws.stride());
        assert!(conv.ws.requires_grad() && conv.bs.as_ref().unwrap().dim() == 1);
        assert!(conv.ws.equal(&weight_before));
        let output = bf16();
        let before = output_before.to_kind(Kind::Float);
        let error = (output.to_kind(Kind::Float) - &before).abs().max().double_value(&[]);
        let scale = before.abs().max().double_value(&[]);
        // Two bf16 roundings of the largest output at most (bf16 keeps 8 bits).
        assert!(error <= 2.0 * scale / 128.0, "bf16 output moved by {error} (largest {scale})");
        let weight_grad = Tensor::run_backward(&[output.sum(Kind::Float)], &[&conv.ws], false, false);
        assert_eq!(weight_grad[0].kind(), Kind::Float, "the master weight's gradient stays fp32");
    }
}
