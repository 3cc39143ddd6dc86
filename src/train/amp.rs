//! Mixed precision on CUDA (`--amp`): forward passes run under libtorch's
//! CUDA autocast (fp16 convolutions and matrix products, fp32 where torch
//! keeps it), and the loss is scaled before backward so that small fp16
//! gradients do not flush to zero — `torch.cuda.amp.GradScaler`'s dynamic
//! scaling, with its default constants. The scaler only sees gradients as
//! values: it gives the scale for the backward pass and unscales its result.

use crate::grad::Gradients;
use tch::Device;

const INITIAL_SCALE: f64 = 65536.0;
const GROWTH_FACTOR: f64 = 2.0;
const BACKOFF_FACTOR: f64 = 0.5;
const GROWTH_INTERVAL: u32 = 2000;

/// Runs `f` under CUDA autocast when `amp` is set (and libtorch sees CUDA).
pub fn autocast<T>(amp: bool, f: impl FnOnce() -> T) -> T {
    if amp {
        tch::autocast(true, f)
    } else {
        f()
    }
}

/// Mixed precision needs CUDA's autocast; on the CPU it is refused with a reason.
pub fn check_device(amp: bool, device: Device) -> anyhow::Result<()> {
    if amp && !device.is_cuda() {
        anyhow::bail!(
            "--amp: mixed precision runs on CUDA only (this run is on {}); drop --amp",
            crate::device::name(device)
        );
    }
    Ok(())
}

/// Dynamic loss scale: halved when a step's gradients overflow (that step is
/// skipped), doubled after `GROWTH_INTERVAL` good steps in a row.
#[derive(Debug)]
pub struct LossScaler {
    scale: f64,
    good_steps: u32,
    skipped: u64,
}

impl Default for LossScaler {
    fn default() -> Self {
        Self { scale: INITIAL_SCALE, good_steps: 0, skipped: 0 }
    }
}

impl LossScaler {
    /// The factor the loss is multiplied by before backward.
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// Divides gradients computed with [`LossScaler::scale`] by it and
    /// updates the scale; `false` when a gradient is not finite (the step
    /// must be skipped, as GradScaler skips it).
    pub fn unscale(&mut self, grads: &mut Gradients) -> bool {
        grads.scale_(1.0 / self.scale);
        let finite = grads.all_finite();
        self.update(finite);
        finite
    }

    fn update(&mut self, finite: bool) {
        if finite {
            self.good_steps += 1;
            if self.good_steps == GROWTH_INTERVAL {
                self.scale *= GROWTH_FACTOR;
                self.good_steps = 0;
            }
        } else {
            self.scale *= BACKOFF_FACTOR;
            self.good_steps = 0;
            self.skipped += 1;
        }
    }

    /// Steps skipped so far because their gradients overflowed.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grad::{Autograd, Backprop, Params};
    use tch::{Kind, Tensor};

    fn scaled_gradients(scaler: &LossScaler, p: &Tensor, loss: impl Fn(&Tensor) -> Tensor) -> Gradients {
        let params = Params::new([("p".to_string(), p.shallow_clone())]);
        Autograd.run(&mut || p.shallow_clone(), &loss, &params, scaler.scale()).grads
    }

    #[test]
    fn overflow_halves_the_scale_and_reports_the_step_as_skipped() {
        let p = Tensor::from_slice(&[1.0f32]).set_requires_grad(true);
        let mut scaler = LossScaler::default();
        // d(1e35·p)/dp · 65536 overflows f32: the step must be refused.
        let mut grads = scaled_gradients(&scaler, &p, |p| (p * 1e35).sum(Kind::Float));
        assert!(!scaler.unscale(&mut grads));
        assert_eq!(scaler.scale(), INITIAL_SCALE / 2.0);
        assert_eq!(scaler.skipped(), 1);
    }

    #[test]
    fn finite_gradients_are_unscaled() {
        let p = Tensor::from_slice(&[3.0f32]).set_requires_grad(true);
        let mut scaler = LossScaler::default();
        let mut grads = scaled_gradients(&scaler, &p, |p| (p * p).sum(Kind::Float));
        assert!(scaler.unscale(&mut grads));
        assert_eq!(grads.0[0].double_value(&[0]), 6.0);
        assert_eq!(scaler.scale(), INITIAL_SCALE);
    }

    #[test]
    fn the_scale_grows_after_a_run_of_good_steps() {
        let mut scaler = LossScaler::default();
        for _ in 0..GROWTH_INTERVAL {
            scaler.update(true);
        }
        assert_eq!(scaler.scale(), INITIAL_SCALE * GROWTH_FACTOR);
    }
}
