//! libtorch's autocast on any device type, in fp16 or bf16: inside
//! [`run`], convolutions and matrix products run in the reduced dtype while
//! libtorch keeps reductions, losses and batch-norm statistics in fp32, as
//! `torch.autocast(device_type, dtype)` does. tch 0.24 switches only CUDA's
//! autocast (in fp16), so the switches come from a small C++ shim
//! (`csrc/autocast.cpp`, compiled by `build.rs`). This module owns the switch
//! and nothing of when a run uses it (`crate::train::amp` decides that).
//!
//! Autocast is per thread: a pass spread over threads (CPU lanes) turns it on
//! in each.

use tch::Device;

/// The reduced-precision dtype of an autocast region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    Fp16,
    Bf16,
}

extern "C" {
    fn tchlab_autocast_is_enabled(cuda: bool) -> bool;
    fn tchlab_autocast_set_enabled(cuda: bool, enabled: bool);
    fn tchlab_autocast_dtype_is_bf16(cuda: bool) -> bool;
    fn tchlab_autocast_set_dtype(cuda: bool, bf16: bool);
}

/// Runs `f` with autocast to `dtype` on for `device`'s type (CPU or CUDA),
/// restoring the previous setting afterwards, also when `f` panics.
pub fn run<T>(device: Device, dtype: Dtype, f: impl FnOnce() -> T) -> T {
    let _region = Region::enter(device.is_cuda(), dtype);
    f()
}

/// Whether autocast is on for `device`'s type on this thread.
pub fn is_enabled(device: Device) -> bool {
    // SAFETY: reads a thread-local flag of libtorch.
    unsafe { tchlab_autocast_is_enabled(device.is_cuda()) }
}

/// An autocast region: what it replaced, put back on drop.
struct Region {
    cuda: bool,
    was_enabled: bool,
    was_bf16: bool,
}

impl Region {
    fn enter(cuda: bool, dtype: Dtype) -> Self {
        // SAFETY: the shim's functions set and read libtorch's thread-local
        // autocast state; none can fail for the CPU and CUDA device types.
        unsafe {
            let region = Self {
                cuda,
                was_enabled: tchlab_autocast_is_enabled(cuda),
                was_bf16: tchlab_autocast_dtype_is_bf16(cuda),
            };
            tchlab_autocast_set_dtype(cuda, dtype == Dtype::Bf16);
            tchlab_autocast_set_enabled(cuda, true);
            torch_sys::at_autocast_increment_nesting();
            region
        }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: as in `enter`. The cache of cast weights lives while any
        // region is open, and is dropped with the outermost one.
        unsafe {
            if torch_sys::at_autocast_decrement_nesting() == 0 {
                torch_sys::at_autocast_clear_cache();
            }
            tchlab_autocast_set_enabled(self.cuda, self.was_enabled);
            tchlab_autocast_set_dtype(self.cuda, self.was_bf16);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Kind, Reduction, Tensor};

    #[test]
    fn a_cpu_region_runs_matrix_products_in_bf16_and_losses_in_fp32_then_switches_off() {
        let a = Tensor::randn([8, 8], (Kind::Float, Device::Cpu));
        assert!(!is_enabled(Device::Cpu));
        let labels = Tensor::zeros([8], (Kind::Int64, Device::Cpu));
        let (product, loss) = run(Device::Cpu, Dtype::Bf16, || {
            assert!(is_enabled(Device::Cpu));
            let product = a.matmul(&a);
            (product.shallow_clone(), product.cross_entropy_loss(&labels, None::<Tensor>, Reduction::Mean, -100, 0.0))
        });
        assert_eq!(product.kind(), Kind::BFloat16);
        assert_eq!(loss.kind(), Kind::Float, "losses are among autocast's fp32 operators");
        assert!(!is_enabled(Device::Cpu));
        assert_eq!(a.matmul(&a).kind(), Kind::Float);
        let outside = product.cross_entropy_loss(&labels, None::<Tensor>, Reduction::Mean, -100, 0.0);
        assert_eq!(outside.kind(), Kind::BFloat16, "without autocast the loss keeps its input's dtype");
    }

    #[test]
    fn regions_nest_and_a_panic_inside_one_leaves_autocast_off() {
        run(Device::Cpu, Dtype::Bf16, || {
            run(Device::Cpu, Dtype::Bf16, || assert!(is_enabled(Device::Cpu)));
            assert!(is_enabled(Device::Cpu), "the inner region restores the outer one's state");
        });
        let panicked = std::panic::catch_unwind(|| run(Device::Cpu, Dtype::Bf16, || panic!("inside")));
        assert!(panicked.is_err());
        assert!(!is_enabled(Device::Cpu));
    }
}
