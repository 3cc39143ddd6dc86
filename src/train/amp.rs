//! Reduced precision, and when a run uses it. `--amp` (CUDA): forward
//! passes under fp16 autocast, and the loss scaled before backward so that
//! small fp16 gradients do not flush to zero — `torch.cuda.amp.GradScaler`'s
//! dynamic scaling, with its default constants. `--precision bf16`: forward
//! passes under bf16 autocast on the CPU or CUDA, without loss scaling (bf16
//! has fp32's range); on a CPU without bf16 instructions it is refused, as
//! slower than fp32, unless `--force`. In both, the weights the optimizer
//! updates, its momentum and the losses stay fp32. The scaler only sees
//! gradients as values: it gives the scale for the backward pass and
//! unscales its result.

use crate::autocast::{self, Dtype};
use crate::grad::Gradients;
use serde::{Deserialize, Serialize};
use tch::Device;

const INITIAL_SCALE: f64 = 65536.0;
const GROWTH_FACTOR: f64 = 2.0;
const BACKOFF_FACTOR: f64 = 0.5;
const GROWTH_INTERVAL: u32 = 2000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Precision {
    /// Every operation in fp32.
    #[default]
    Fp32,
    /// bf16 autocast: convolutions and matrix products in bf16; losses, reductions, batch-norm statistics and the optimizer in fp32.
    Bf16,
}

/// The autocast a run's forward passes run under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Autocast {
    Off,
    On(Device, Dtype),
}

impl Autocast {
    /// The autocast of a run on `device` with `--amp` (fp16) or `precision`.
    pub fn of(amp: bool, precision: Precision, device: Device) -> Self {
        match (amp, precision) {
            (true, _) => Self::On(device, Dtype::Fp16),
            (false, Precision::Bf16) => Self::On(device, Dtype::Bf16),
            (false, Precision::Fp32) => Self::Off,
        }
    }

    /// Runs `f` under this autocast.
    pub fn run<T>(self, f: impl FnOnce() -> T) -> T {
        match self {
            Self::Off => f(),
            Self::On(device, dtype) => autocast::run(device, dtype, f),
        }
    }

    /// The precision of the autocast regions' products: `fp32` (off), `fp16`, `bf16`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Off => "fp32",
            Self::On(_, Dtype::Fp16) => "fp16",
            Self::On(_, Dtype::Bf16) => "bf16",
        }
    }

    /// Whether backward passes through autocast regions need a scaled loss
    /// (fp16 only).
    pub fn scales_loss(self) -> bool {
        matches!(self, Self::On(_, Dtype::Fp16))
    }
}

/// Refuses, in one line, a precision this run cannot use well: `--amp`
/// off CUDA, `--precision bf16` on a CPU without bf16 instructions (unless
/// `--force`).
pub fn check_device(amp: bool, precision: Precision, force: bool, device: Device) -> anyhow::Result<()> {
    if amp && !device.is_cuda() {
        anyhow::bail!(
            "--amp: mixed precision runs on CUDA only (this run is on {}); drop --amp",
            crate::device::name(device)
        );
    }
    if precision == Precision::Bf16 && device == Device::Cpu && !force {
        check_bf16_cpu(&crate::device::cpu_bf16_instructions())?;
    }
    Ok(())
}

/// Refuses bf16 on a CPU whose bf16 instructions are `instructions` (none:
/// oneDNN would emulate bf16 with fp32 arithmetic and conversions).
fn check_bf16_cpu(instructions: &[&str]) -> anyhow::Result<()> {
    if instructions.is_empty() {
        anyhow::bail!(
            "--precision bf16: this CPU has no bf16 instructions (neither amx_bf16 nor avx512_bf16), so bf16 would be slower than fp32; use --precision fp32, or add --force to run it anyway"
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

    #[test]
    fn bf16_is_refused_on_a_cpu_without_bf16_instructions_in_one_line() {
        let error = check_bf16_cpu(&[]).unwrap_err().to_string();
        assert!(error.starts_with("--precision bf16: this CPU has no bf16 instructions"), "{error}");
        assert!(error.contains("slower") && error.contains("--force") && !error.contains('\n'), "{error}");
        assert!(check_bf16_cpu(&["avx512_bf16"]).is_ok());
    }

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
