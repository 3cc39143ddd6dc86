//! Optimizers that apply gradients given as values (`step(&params, &grads,
//! lr)`), with state that a run saves and restores by parameter name:
//! [`Sgd`] as `torch.optim.SGD` (momentum, optionally Nesterov, no
//! dampening, L2 weight decay added to the gradient), [`RmsProp`] as
//! `torch.optim.RMSprop` and [`AdamW`] as `torch.optim.AdamW`. Each
//! parameter's rate may be scaled ([`Settings::lr_scales`], PyTorch's
//! parameter groups). They know nothing of how the gradients were computed.

use crate::grad::{Gradients, Params};
use crate::persist::weights::check_complete;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OptimizerKind {
    /// SGD with momentum (torch.optim.SGD), the tutorial's.
    Sgd,
    /// Adam with decoupled weight decay (torch.optim.AdamW).
    Adamw,
    /// RMSprop (torch.optim.RMSprop: alpha 0.99, eps 1e-8) with --momentum.
    Rmsprop,
}

pub trait Optimizer {
    /// Applies one update; `grads` are in `params`' order (undefined ones skipped).
    fn step(&mut self, params: &Params, grads: &Gradients, lr: f64);
    /// The state to save with a run, named `<buffer>.<parameter>`.
    fn state(&self, params: &Params) -> Vec<(String, Tensor)>;
    /// Restores [`Optimizer::state`]; every tensor it needs must be there.
    fn load_state(&mut self, params: &Params, saved: &[(String, Tensor)]) -> Result<()>;
}

/// What an optimizer is built with besides its kind.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// SGD's and RMSprop's momentum (AdamW has its betas).
    pub momentum: f64,
    pub weight_decay: f64,
    /// SGD only: Nesterov momentum.
    pub nesterov: bool,
    /// Each parameter's rate as a multiple of the step's, in `params`'
    /// order; empty: 1 for all.
    pub lr_scales: Vec<f64>,
}

impl Settings {
    pub fn new(momentum: f64, weight_decay: f64) -> Self {
        Self { momentum, weight_decay, ..Self::default() }
    }
}

/// The optimizer `kind` over `params`.
pub fn build(kind: OptimizerKind, params: &Params, settings: Settings) -> Box<dyn Optimizer> {
    let scales = LrScales::new(params, settings.lr_scales);
    match kind {
        OptimizerKind::Sgd => {
            let sgd = Sgd::new(params, settings.momentum, settings.weight_decay);
            Box::new(Sgd { nesterov: settings.nesterov, scales, ..sgd })
        }
        OptimizerKind::Adamw => Box::new(AdamW { scales, ..AdamW::new(params, settings.weight_decay) }),
        OptimizerKind::Rmsprop => {
            Box::new(RmsProp { scales, ..RmsProp::new(params, settings.momentum, settings.weight_decay) })
        }
    }
}

/// Each parameter's multiple of the step's rate.
struct LrScales(Vec<f64>);

impl LrScales {
    fn new(params: &Params, scales: Vec<f64>) -> Self {
        match scales.is_empty() {
            true => Self(vec![1.0; params.len()]),
            false => {
                assert_eq!(scales.len(), params.len(), "one rate scale per parameter");
                Self(scales)
            }
        }
    }

    fn ones(params: &Params) -> Self {
        Self(vec![1.0; params.len()])
    }

    /// The rate of parameter `index` at a step of rate `lr`.
    fn lr(&self, index: usize, lr: f64) -> f64 {
        lr * self.0[index]
    }
}

/// `grad + weight_decay·param`: torch's L2 weight decay, added to the gradient.
fn with_l2(grad: &Tensor, param: &Tensor, weight_decay: f64) -> Tensor {
    match weight_decay > 0.0 {
        true => grad + param * weight_decay,
        false => grad.shallow_clone(),
    }
}

/// Zero buffers shaped like every parameter.
fn zeros_like(params: &Params) -> Vec<Tensor> {
    params.tensors().map(|p| p.zeros_like()).collect()
}

fn named(prefix: &str, params: &Params, buffers: &[Tensor]) -> Vec<(String, Tensor)> {
    params.iter().zip(buffers).map(|((name, _), b)| (format!("{prefix}.{name}"), b.shallow_clone())).collect()
}

fn load_named(prefix: &str, params: &Params, buffers: &mut [Tensor], saved: &[(String, Tensor)]) -> Result<()> {
    let expected: Vec<(String, Vec<i64>)> = params.iter().map(|(n, p)| (format!("{prefix}.{n}"), p.size())).collect();
    check_complete(saved, &expected, "resuming the optimizer")?;
    tch::no_grad(|| {
        for ((name, _), buffer) in expected.iter().zip(buffers.iter_mut()) {
            let (_, t) = saved.iter().find(|(n, _)| n == name).expect("checked above");
            buffer.copy_(&t.to_device(buffer.device()).to_kind(buffer.kind()));
        }
    });
    Ok(())
}

/// `buf = momentum·buf + (grad + wd·p)`, `p -= lr·buf`; Nesterov:
/// `p -= lr·((grad + wd·p) + momentum·buf)`. A zero buffer makes the first
/// step `buf = grad`, as torch's.
pub struct Sgd {
    momentum: f64,
    weight_decay: f64,
    nesterov: bool,
    scales: LrScales,
    buffers: Vec<Tensor>,
}

impl Sgd {
    pub fn new(params: &Params, momentum: f64, weight_decay: f64) -> Self {
        let scales = LrScales::ones(params);
        Self { momentum, weight_decay, nesterov: false, scales, buffers: zeros_like(params) }
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, params: &Params, grads: &Gradients, lr: f64) {
        tch::no_grad(|| {
            for (index, (((_, param), buffer), grad)) in
                params.iter().zip(self.buffers.iter_mut()).zip(grads.iter()).enumerate()
            {
                if !grad.defined() {
                    continue;
                }
                let lr = self.scales.lr(index, lr);
                let grad = with_l2(grad, param, self.weight_decay);
                let _ = buffer.g_mul_scalar_(self.momentum).g_add_(&grad);
                let update = match self.nesterov {
                    true => grad + &*buffer * self.momentum,
                    false => buffer.shallow_clone(),
                };
                let _ = param.shallow_clone().g_sub_(&(update * lr));
            }
        });
    }

    fn state(&self, params: &Params) -> Vec<(String, Tensor)> {
        named("momentum", params, &self.buffers)
    }

    fn load_state(&mut self, params: &Params, saved: &[(String, Tensor)]) -> Result<()> {
        load_named("momentum", params, &mut self.buffers, saved)
    }
}

/// torch's AdamW update with its betas (0.9, 0.999) and eps (1e-8); the
/// weight decay is the run's `--weight-decay` (default 0, not torch's 0.01).
/// Each parameter counts its own steps (its bias correction), as torch's
/// per-parameter state does: one without a gradient (a frozen backbone)
/// neither steps nor counts.
pub struct AdamW {
    weight_decay: f64,
    scales: LrScales,
    steps: Vec<i64>,
    first: Vec<Tensor>,
    second: Vec<Tensor>,
}

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-8;

impl AdamW {
    pub fn new(params: &Params, weight_decay: f64) -> Self {
        Self {
            weight_decay,
            scales: LrScales::ones(params),
            steps: vec![0; params.len()],
            first: zeros_like(params),
            second: zeros_like(params),
        }
    }
}

impl Optimizer for AdamW {
    fn step(&mut self, params: &Params, grads: &Gradients, lr: f64) {
        tch::no_grad(|| {
            for (index, (((_, param), grad), (m, v))) in
                params.iter().zip(grads.iter()).zip(self.first.iter_mut().zip(self.second.iter_mut())).enumerate()
            {
                if !grad.defined() {
                    continue;
                }
                self.steps[index] += 1;
                let correction1 = 1.0 - BETA1.powi(self.steps[index] as i32);
                let correction2 = 1.0 - BETA2.powi(self.steps[index] as i32);
                let lr = self.scales.lr(index, lr);
                let mut param = param.shallow_clone();
                if self.weight_decay > 0.0 {
                    let _ = param.g_mul_scalar_(1.0 - lr * self.weight_decay);
                }
                // In place, as torch's single-tensor path: one temporary per
                // product, none for the moments.
                let _ = m.lerp_(grad, 1.0 - BETA1);
                let _ = v.g_mul_scalar_(BETA2).addcmul_(&(grad * (1.0 - BETA2)), grad);
                let mut denominator = v.sqrt();
                let _ = denominator.g_div_scalar_(correction2.sqrt()).g_add_scalar_(EPS);
                let _ = param.addcdiv_(&(&*m * (-lr / correction1)), &denominator);
            }
        });
    }

    fn state(&self, params: &Params) -> Vec<(String, Tensor)> {
        let mut state = named("exp_avg", params, &self.first);
        state.extend(named("exp_avg_sq", params, &self.second));
        state.push(("adamw_steps".into(), Tensor::from_slice(&self.steps)));
        state
    }

    /// Restores the moments and the step counts: one per parameter, or one
    /// for all (runs saved before the counts were per parameter).
    fn load_state(&mut self, params: &Params, saved: &[(String, Tensor)]) -> Result<()> {
        load_named("exp_avg", params, &mut self.first, saved)?;
        load_named("exp_avg_sq", params, &mut self.second, saved)?;
        let per_parameter = vec![params.len() as i64];
        let steps = match saved.iter().find(|(n, _)| n == "adamw_steps") {
            Some((_, steps)) if steps.size() == [1] => vec![steps.int64_value(&[0]); params.len()],
            Some((_, steps)) if steps.size() == per_parameter => Vec::<i64>::try_from(&steps.to_kind(Kind::Int64))?,
            _ => {
                check_complete(saved, &[("adamw_steps".into(), per_parameter)], "resuming the optimizer")?;
                unreachable!("check_complete refuses a missing or misshapen count")
            }
        };
        self.steps = steps;
        Ok(())
    }
}

/// torch's RMSprop (not centered): `sq = α·sq + (1-α)·g²`, `g' = g / (√sq + ε)`
/// with `g = grad + wd·p`; with momentum `buf = momentum·buf + g'`, `p -= lr·buf`,
/// else `p -= lr·g'`.
pub struct RmsProp {
    momentum: f64,
    weight_decay: f64,
    scales: LrScales,
    square_averages: Vec<Tensor>,
    buffers: Vec<Tensor>,
}

const RMSPROP_ALPHA: f64 = 0.99;

impl RmsProp {
    pub fn new(params: &Params, momentum: f64, weight_decay: f64) -> Self {
        let (square_averages, buffers) = (zeros_like(params), zeros_like(params));
        Self { momentum, weight_decay, scales: LrScales::ones(params), square_averages, buffers }
    }
}

impl Optimizer for RmsProp {
    fn step(&mut self, params: &Params, grads: &Gradients, lr: f64) {
        tch::no_grad(|| {
            let state = self.square_averages.iter_mut().zip(self.buffers.iter_mut());
            for (index, (((_, param), grad), (square_average, buffer))) in
                params.iter().zip(grads.iter()).zip(state).enumerate()
            {
                if !grad.defined() {
                    continue;
                }
                let lr = self.scales.lr(index, lr);
                let grad = with_l2(grad, param, self.weight_decay);
                let _ = square_average.g_mul_scalar_(RMSPROP_ALPHA).addcmul_(&(&grad * (1.0 - RMSPROP_ALPHA)), &grad);
                let scaled = grad / (square_average.sqrt() + EPS);
                let update = match self.momentum > 0.0 {
                    true => buffer.g_mul_scalar_(self.momentum).g_add_(&scaled).shallow_clone(),
                    false => scaled,
                };
                let _ = param.shallow_clone().g_sub_(&(update * lr));
            }
        });
    }

    fn state(&self, params: &Params) -> Vec<(String, Tensor)> {
        let mut state = named("square_avg", params, &self.square_averages);
        state.extend(named("momentum", params, &self.buffers));
        state
    }

    fn load_state(&mut self, params: &Params, saved: &[(String, Tensor)]) -> Result<()> {
        load_named("square_avg", params, &mut self.square_averages, saved)?;
        load_named("momentum", params, &mut self.buffers, saved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grad::{Autograd, Backprop};

    fn minimise_half_square(optimizer: &mut dyn Optimizer, p: &Tensor, lr: f64, steps: usize) {
        let params = Params::new([("p".to_string(), p.shallow_clone())]);
        for _ in 0..steps {
            let pass = Autograd.run(&mut || p.shallow_clone(), &|p| (p * p * 0.5).sum(Kind::Double), &params, 1.0);
            optimizer.step(&params, &pass.grads, lr);
        }
    }

    #[test]
    fn sgd_momentum_update_matches_torch() {
        // From p=1 with lr 0.1, momentum 0.9: torch gives p1 = 0.9, buf1 = 1;
        // p2 = 0.9 - 0.1·(0.9·1 + 0.9) = 0.72.
        let p = Tensor::from_slice(&[1.0f64]).set_requires_grad(true);
        let params = Params::new([("p".to_string(), p.shallow_clone())]);
        minimise_half_square(&mut Sgd::new(&params, 0.9, 0.0), &p, 0.1, 2);
        assert!((p.double_value(&[0]) - 0.72).abs() < 1e-12);
    }

    #[test]
    fn adamw_matches_torch() {
        // torch.optim.AdamW([p], lr=0.1, weight_decay=0.01) on 0.5·p², p0 = 1,
        // three steps: 0.699699…, computed by hand from torch's update rule.
        let p = Tensor::from_slice(&[1.0f64]).set_requires_grad(true);
        let params = Params::new([("p".to_string(), p.shallow_clone())]);
        minimise_half_square(&mut AdamW::new(&params, 0.01), &p, 0.1, 3);
        let (mut x, mut m, mut v) = (1.0f64, 0.0, 0.0);
        for t in 1..=3 {
            x *= 1.0 - 0.1 * 0.01;
            let g = x / (1.0 - 0.1 * 0.01);
            m = 0.9 * m + 0.1 * g;
            v = 0.999 * v + 0.001 * g * g;
            x -= 0.1 * (m / (1.0 - 0.9f64.powi(t))) / ((v / (1.0 - 0.999f64.powi(t))).sqrt() + 1e-8);
        }
        assert!((p.double_value(&[0]) - x).abs() < 1e-12, "{} vs {x}", p.double_value(&[0]));
    }

    #[test]
    fn nesterov_sgd_matches_torch() {
        // torch.optim.SGD([p], lr=0.1, momentum=0.9, nesterov=True) on 0.5·p², p0 = 1:
        // g1 = 1, buf1 = 1, p1 = 1 - 0.1·(1 + 0.9) = 0.81; g2 = 0.81, buf2 = 1.71,
        // p2 = 0.81 - 0.1·(0.81 + 0.9·1.71) = 0.5751.
        let p = Tensor::from_slice(&[1.0f64]).set_requires_grad(true);
        let params = Params::new([("p".to_string(), p.shallow_clone())]);
        let settings = Settings { nesterov: true, ..Settings::new(0.9, 0.0) };
        minimise_half_square(build(OptimizerKind::Sgd, &params, settings).as_mut(), &p, 0.1, 2);
        assert!((p.double_value(&[0]) - 0.5751).abs() < 1e-12, "{}", p.double_value(&[0]));
    }

    #[test]
    fn rmsprop_matches_torch() {
        // torch.optim.RMSprop([p], lr=0.01, momentum=0.9, weight_decay=0.1) on 0.5·p², p0 = 1,
        // three steps of its update rule, by hand.
        let p = Tensor::from_slice(&[1.0f64]).set_requires_grad(true);
        let params = Params::new([("p".to_string(), p.shallow_clone())]);
        minimise_half_square(build(OptimizerKind::Rmsprop, &params, Settings::new(0.9, 0.1)).as_mut(), &p, 0.01, 3);
        let (mut x, mut square, mut buf) = (1.0f64, 0.0, 0.0);
        for _ in 0..3 {
            let g = x + 0.1 * x;
            square = 0.99 * square + 0.01 * g * g;
            buf = 0.9 * buf + g / (square.sqrt() + 1e-8);
            x -= 0.01 * buf;
        }
        assert!((p.double_value(&[0]) - x).abs() < 1e-12, "{} vs {x}", p.double_value(&[0]));
    }

    #[test]
    fn each_parameter_steps_at_its_scaled_rate() {
        let (a, b) = (
            Tensor::from_slice(&[1.0f64]).set_requires_grad(true),
            Tensor::from_slice(&[1.0f64]).set_requires_grad(true),
        );
        let params = Params::new([("a".to_string(), a.shallow_clone()), ("b".to_string(), b.shallow_clone())]);
        for kind in [OptimizerKind::Sgd, OptimizerKind::Adamw, OptimizerKind::Rmsprop] {
            tch::no_grad(|| {
                let _ = a.shallow_clone().fill_(1.0);
                let _ = b.shallow_clone().fill_(1.0);
            });
            let settings = Settings { lr_scales: vec![0.5, 1.0], ..Settings::new(0.0, 0.0) };
            let mut optimizer = build(kind, &params, settings);
            let pass = Autograd.run(&mut || &a + &b, &|s| (s * s * 0.5).sum(Kind::Double), &params, 1.0);
            optimizer.step(&params, &pass.grads, 0.1);
            let (moved_a, moved_b) = (1.0 - a.double_value(&[0]), 1.0 - b.double_value(&[0]));
            assert!(moved_b > 0.0 && (moved_a - 0.5 * moved_b).abs() < 1e-12, "{kind:?}: {moved_a} {moved_b}");
        }
    }

    #[test]
    fn adamw_counts_steps_per_parameter_as_torch() {
        // A parameter without gradients for 5 steps (a frozen backbone), then with one:
        // its first update is torch's first, lr·sign(g) (bias corrections of step 1).
        let (frozen, head) = (
            Tensor::from_slice(&[1.0f64]).set_requires_grad(true),
            Tensor::from_slice(&[1.0f64]).set_requires_grad(true),
        );
        let params = Params::new([("a".to_string(), frozen.shallow_clone()), ("b".to_string(), head.shallow_clone())]);
        let mut adamw = AdamW::new(&params, 0.0);
        for step in 0..6 {
            let unfrozen = step == 5;
            let forward = || if unfrozen { &frozen + &head } else { frozen.detach() + &head };
            let pass = Autograd.run(&mut || forward(), &|s| (s * s * 0.5).sum(Kind::Double), &params, 1.0);
            adamw.step(&params, &pass.grads, 0.1);
        }
        assert!((frozen.double_value(&[0]) - 0.9).abs() < 1e-6, "{}", frozen.double_value(&[0]));
        let state = adamw.state(&params);
        let steps = &state.iter().find(|(n, _)| n == "adamw_steps").unwrap().1;
        assert_eq!(Vec::<i64>::try_from(steps).unwrap(), [1, 6]);
        let mut resumed = AdamW::new(&params, 0.0);
        let mut older: Vec<(String, Tensor)> = state.into_iter().filter(|(n, _)| n != "adamw_steps").collect();
        older.push(("adamw_steps".into(), Tensor::from_slice(&[4i64])));
        resumed.load_state(&params, &older).unwrap();
        assert_eq!(resumed.steps, [4, 4], "a run saved with one count gives it to every parameter");
    }

    #[test]
    fn a_resumed_optimizer_needs_every_buffer() {
        let p = Tensor::from_slice(&[1.0f32, 2.0]).set_requires_grad(true);
        let params = Params::new([("w".to_string(), p.shallow_clone())]);
        let mut sgd = Sgd::new(&params, 0.9, 0.0);
        let error = sgd.load_state(&params, &[]).unwrap_err().to_string();
        assert!(error.contains("momentum.w") && error.contains("missing"), "{error}");
        let wrong = [("momentum.w".to_string(), Tensor::zeros([3], (Kind::Float, tch::Device::Cpu)))];
        assert!(sgd.load_state(&params, &wrong).unwrap_err().to_string().contains("shape"));
    }
}
