//! One training step, the same for every network the crate trains: a
//! forward pass and loss through a [`Backprop`], the gradients unscaled when
//! mixed precision scaled the loss, clipped to a total norm when asked
//! (`--clip-grad-norm`, as `torch.nn.utils.clip_grad_norm_`), and the run's
//! optimizer's update, after which a moving average of the weights follows
//! ([`super::ema`], `--ema`). Which backprop (`crate::accel::backprop`) and
//! which optimizer are the caller's choice; this file only puts them in
//! order.
//!
//! With `--accumulate N` the gradients of N consecutive batches, each
//! batch's mean loss scaled by 1/N (PyTorch's `(loss / N).backward()`), are
//! summed before one update; [`GradientStep::flush`] applies a shorter last
//! group at an epoch's end, its batches still scaled by 1/N as PyTorch's
//! usual loop does. In a data-parallel run the summed gradients and the
//! group's losses are averaged over the ranks once per update (DDP's
//! `no_sync` for the first N − 1 batches), so every rank agrees on a
//! non-finite loss and applies the same update; then rank 0's buffers
//! (batch norm's running statistics) are broadcast, as DDP's
//! `broadcast_buffers` does before the next group's first forward pass.

use super::amp::LossScaler;
use super::data_parallel::Ranks;
use super::ema::Ema;
use super::lr_range::{Next, RangeCurve, RangeRecorder, RangeTest};
use super::optim::Optimizer;
use crate::grad::{Backprop, Forward, Gradients, LossFn, Params};
use tch::{Device, Kind, Tensor};

pub struct GradientStep {
    pub params: Params,
    backprop: Box<dyn Backprop>,
    scaler: Option<LossScaler>,
    ranks: Ranks,
    /// Batches whose gradients one update sums (1: every batch updates).
    accumulate: usize,
    clip_norm: Option<f64>,
    /// What training changes besides the parameters (batch norm's running statistics).
    buffers: Vec<(String, Tensor)>,
    ema: Option<Ema>,
    /// The group of batches since the last update.
    pending: Option<Pending>,
    /// An LR range test steering the updates (`finetune lr-find`).
    range_test: Option<RangeRecorder>,
}

/// The summed gradients of the batches since the last update, and each
/// batch's mean loss (this rank's).
struct Pending {
    grads: Gradients,
    losses: Vec<f64>,
}

/// Why a step applied nothing.
#[derive(Debug)]
pub enum StepError {
    /// A batch's loss (averaged over the ranks) was this non-finite value;
    /// `batches_before` counts the batches between it and the one whose
    /// step found it (earlier batches of an accumulated group).
    NonFinite { loss: f64, batches_before: usize },
    /// Averaging over the ranks failed (a rank died or timed out).
    Ranks(anyhow::Error),
    /// The LR range test has its curve (its steps done, or the loss diverged).
    RangeTestEnded,
}

/// What a step reports: the batch's logits and mean loss (averaged over the
/// ranks when this step updated, this rank's own on the batches of a group
/// before its update: their sums over the ranks are the same).
pub struct StepOutcome {
    pub logits: Tensor,
    pub loss: f64,
}

impl GradientStep {
    pub fn new(params: Params, backprop: Box<dyn Backprop>) -> Self {
        Self {
            params,
            backprop,
            scaler: None,
            ranks: Ranks::single(),
            accumulate: 1,
            clip_norm: None,
            buffers: Vec::new(),
            ema: None,
            pending: None,
            range_test: None,
        }
    }

    /// Averages every update's gradients over `ranks` from now on.
    pub fn over(mut self, ranks: Ranks) -> Self {
        self.ranks = ranks;
        self
    }

    /// Scales the loss before backward from now on (mixed precision).
    pub fn with_loss_scaling(mut self) -> Self {
        self.scaler = Some(LossScaler::default());
        self
    }

    /// Sums the gradients of `batches` consecutive batches into each update.
    pub fn accumulating(mut self, batches: usize) -> Self {
        self.accumulate = batches.max(1);
        self
    }

    /// Clips each update's gradients to a total L2 norm of `max_norm`.
    pub fn clipping(mut self, max_norm: Option<f64>) -> Self {
        self.clip_norm = max_norm;
        self
    }

    /// The tensors a training forward pass changes besides the parameters
    /// (batch norm's running statistics), by name: rank 0's on every rank
    /// after each update, and averaged by [`GradientStep::with_ema`] (give
    /// them first).
    pub fn with_buffers(mut self, buffers: Vec<(String, Tensor)>) -> Self {
        assert!(self.ema.is_none(), "buffers are given before the moving average starts");
        self.buffers = buffers;
        self
    }

    /// Keeps a moving average (of `decay`) of the parameters and buffers,
    /// moved after every update; none without a decay.
    pub fn with_ema(mut self, decay: Option<f64>) -> Self {
        let tracked: Vec<(String, Tensor)> =
            self.params.iter().chain(&self.buffers).map(|(n, t)| (n.clone(), t.shallow_clone())).collect();
        self.ema = decay.map(|decay| Ema::new(decay, tracked));
        self
    }

    /// Runs each update at `test`'s next rate (the rate callers pass is
    /// ignored) and records its loss, until the update after which the test
    /// ends returns [`StepError::RangeTestEnded`]; a non-finite loss ends it
    /// too, with nothing applied.
    pub fn with_range_test(mut self, test: RangeTest) -> Self {
        self.range_test = Some(RangeRecorder::new(test));
        self
    }

    /// What the range test recorded so far.
    pub fn range_curve(&self) -> Option<&RangeCurve> {
        self.range_test.as_ref().map(|test| &test.curve)
    }

    /// The moving average of the weights, when kept.
    pub fn ema(&self) -> Option<&Ema> {
        self.ema.as_ref()
    }

    /// Runs `forward`, the loss `loss_of` on its logits, and adds its
    /// gradients to the group; the group's last batch applies `optimizer`'s
    /// update at rate `lr`. A non-finite loss is an error with nothing
    /// applied; an update whose scaled gradients overflowed is skipped (and
    /// counted).
    pub fn step(
        &mut self,
        optimizer: &mut dyn Optimizer,
        forward: Forward,
        loss_of: LossFn,
        lr: f64,
    ) -> Result<StepOutcome, StepError> {
        let scale = self.scaler.as_ref().map_or(1.0, LossScaler::scale) / self.accumulate as f64;
        let pass = self.backprop.run(forward, loss_of, &self.params, scale);
        let loss = pass.loss.to_kind(Kind::Double).double_value(&[]);
        let batches = match &mut self.pending {
            Some(pending) => {
                pending.grads.add_(pass.grads);
                pending.losses.push(loss);
                pending.losses.len()
            }
            None => {
                self.pending = Some(Pending { grads: pass.grads, losses: vec![loss] });
                1
            }
        };
        if batches < self.accumulate {
            return Ok(StepOutcome { logits: pass.logits, loss });
        }
        let losses = self.update(optimizer, lr)?;
        Ok(StepOutcome { logits: pass.logits, loss: *losses.last().expect("a group has a batch") })
    }

    /// Applies the update of a group shorter than `--accumulate` (the last
    /// batches of an epoch); nothing when no batch is pending.
    pub fn flush(&mut self, optimizer: &mut dyn Optimizer, lr: f64) -> Result<(), StepError> {
        match self.pending {
            Some(_) => self.update(optimizer, lr).map(|_| ()),
            None => Ok(()),
        }
    }

    /// The pending group's update: its gradients and losses averaged over
    /// the ranks, checked, unscaled, clipped and applied, then the buffers
    /// synced and the average moved. Returns the group's losses (averaged
    /// over the ranks).
    fn update(&mut self, optimizer: &mut dyn Optimizer, lr: f64) -> Result<Vec<f64>, StepError> {
        let Pending { mut grads, losses } = self.pending.take().expect("a pending group");
        let losses = self.mean_over_ranks(&grads.0, losses).map_err(StepError::Ranks)?;
        let lr = self.range_test.as_ref().map_or(lr, RangeRecorder::next_lr);
        let mut ends_the_test = false;
        if let Some(test) = &mut self.range_test {
            let group_loss = losses.iter().sum::<f64>() / losses.len() as f64;
            ends_the_test = test.record(group_loss) == Next::Stop;
            if !group_loss.is_finite() {
                return Err(StepError::RangeTestEnded);
            }
        }
        if let Some(bad) = losses.iter().position(|l| !l.is_finite()) {
            return Err(StepError::NonFinite { loss: losses[bad], batches_before: losses.len() - 1 - bad });
        }
        let apply = self.scaler.as_mut().is_none_or(|scaler| scaler.unscale(&mut grads));
        if apply {
            if let Some(max_norm) = self.clip_norm {
                grads.clip_norm_(max_norm);
            }
            optimizer.step(&self.params, &grads, lr);
        }
        self.sync_buffers().map_err(StepError::Ranks)?;
        if let Some(ema) = &mut self.ema {
            ema.update();
        }
        if ends_the_test {
            return Err(StepError::RangeTestEnded);
        }
        Ok(losses)
    }

    /// Rank 0's buffers on every rank (DDP's `broadcast_buffers`).
    fn sync_buffers(&self) -> anyhow::Result<()> {
        if self.buffers.is_empty() {
            return Ok(());
        }
        let buffers: Vec<Tensor> = self.buffers.iter().map(|(_, t)| t.shallow_clone()).collect();
        self.ranks.broadcast_from_leader(&buffers)
    }

    /// `losses` averaged over the ranks, the defined `grads` averaged in place.
    fn mean_over_ranks(&self, grads: &[Tensor], losses: Vec<f64>) -> anyhow::Result<Vec<f64>> {
        if self.ranks.world_size() == 1 {
            return Ok(losses);
        }
        let device = grads.iter().find(|g| g.defined()).map_or(Device::Cpu, Tensor::device);
        let losses = Tensor::from_slice(&losses).to_kind(Kind::Float).to_device(device);
        let mut averaged: Vec<Tensor> = grads.iter().filter(|g| g.defined()).map(Tensor::shallow_clone).collect();
        averaged.push(losses.shallow_clone());
        self.ranks.mean_(&averaged)?;
        Ok(Vec::<f64>::try_from(&losses.to_kind(Kind::Double)).expect("a vector of losses"))
    }

    /// Steps skipped because of gradient overflow under loss scaling.
    pub fn skipped_steps(&self) -> u64 {
        self.scaler.as_ref().map_or(0, LossScaler::skipped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grad::Autograd;
    use crate::train::optim::Sgd;

    /// A parameter vector at `start` (f64) and its step: batch `t`'s loss is
    /// ½‖p − t‖², its gradient p − t.
    fn quadratic(start: &[f64], configure: impl FnOnce(GradientStep) -> GradientStep) -> (Tensor, GradientStep) {
        let p = Tensor::from_slice(start).set_requires_grad(true);
        let params = Params::new([("p".to_owned(), p.shallow_clone())]);
        (p, configure(GradientStep::new(params, Box::new(Autograd))))
    }

    fn batch(
        step: &mut GradientStep,
        optimizer: &mut dyn Optimizer,
        p: &Tensor,
        target: &[f64],
    ) -> Result<StepOutcome, StepError> {
        let target = Tensor::from_slice(target);
        let loss = |p: &Tensor| (p - &target).square().sum(Kind::Double) * 0.5;
        step.step(optimizer, &mut || p.shallow_clone(), &loss, 1.0)
    }

    fn values(t: &Tensor) -> Vec<f64> {
        Vec::<f64>::try_from(&t.detach()).unwrap()
    }

    fn assert_near(actual: &[f64], expected: &[f64]) {
        let close = actual.iter().zip(expected).all(|(a, e)| (a - e).abs() < 1e-12);
        assert!(close && actual.len() == expected.len(), "{actual:?} against {expected:?}");
    }

    #[test]
    fn a_group_sums_its_scaled_gradients_and_clips_them_before_one_update() {
        for (max_norm, coefficient) in [(1.0, 1.0 / (8f64.sqrt() + 1e-6)), (10.0, 1.0)] {
            let (p, mut step) = quadratic(&[0.0, 0.0], |s| s.accumulating(2).clipping(Some(max_norm)));
            let mut sgd = Sgd::new(&step.params, 0.0, 0.0);
            batch(&mut step, &mut sgd, &p, &[3.0, 0.0]).unwrap();
            assert_near(&values(&p), &[0.0, 0.0]);
            batch(&mut step, &mut sgd, &p, &[1.0, 4.0]).unwrap();
            // (g₁ + g₂)/2 = (−2, −2), of norm √8, times min(1, max/(√8 + 1e-6)); lr 1.
            assert_near(&values(&p), &[2.0 * coefficient, 2.0 * coefficient]);
        }
    }

    #[test]
    fn a_short_last_group_still_updates_its_batches_scaled_by_one_over_n() {
        let (p, mut step) = quadratic(&[0.0], |s| s.accumulating(3));
        let mut sgd = Sgd::new(&step.params, 0.0, 0.0);
        batch(&mut step, &mut sgd, &p, &[3.0]).unwrap();
        batch(&mut step, &mut sgd, &p, &[6.0]).unwrap();
        step.flush(&mut sgd, 1.0).unwrap();
        assert_near(&values(&p), &[3.0]);
        step.flush(&mut sgd, 1.0).unwrap();
        assert_near(&values(&p), &[3.0]);
    }

    #[test]
    fn a_range_test_runs_each_update_at_its_rate_and_ends_after_its_steps() {
        let test = RangeTest { start_lr: 0.01, end_lr: 1.0, steps: 2, stop_on_divergence: true };
        let (p, mut step) = quadratic(&[0.0], |s| s.with_range_test(test));
        let mut sgd = Sgd::new(&step.params, 0.0, 0.0);
        // Gradient p − 1 = −1 at p = 0: the first update moves p by its rate, 0.01.
        batch(&mut step, &mut sgd, &p, &[1.0]).unwrap();
        assert_near(&values(&p), &[0.01]);
        // The second, at 0.01 · 100^(1/2) = 0.1, is the test's last.
        assert!(matches!(batch(&mut step, &mut sgd, &p, &[1.0]), Err(StepError::RangeTestEnded)));
        assert_near(&values(&p), &[0.01 + 0.1 * 0.99]);
        let curve = step.range_curve().unwrap();
        assert_near(&curve.lrs, &[0.01, 0.1]);
        assert_near(&curve.smoothed_losses[..1], &[0.5]);
    }

    #[test]
    fn a_range_test_ends_at_a_non_finite_loss_with_nothing_applied() {
        let test = RangeTest { stop_on_divergence: false, ..RangeTest::default() };
        let (p, mut step) = quadratic(&[0.0], |s| s.with_range_test(test));
        let mut sgd = Sgd::new(&step.params, 0.0, 0.0);
        assert!(matches!(batch(&mut step, &mut sgd, &p, &[f64::INFINITY]), Err(StepError::RangeTestEnded)));
        assert_near(&values(&p), &[0.0]);
    }

    #[test]
    fn a_non_finite_loss_in_a_group_applies_nothing_and_names_its_batch() {
        let (p, mut step) = quadratic(&[0.0], |s| s.accumulating(2));
        let mut sgd = Sgd::new(&step.params, 0.0, 0.0);
        batch(&mut step, &mut sgd, &p, &[f64::NAN]).unwrap();
        match batch(&mut step, &mut sgd, &p, &[1.0]) {
            Err(StepError::NonFinite { loss, batches_before: 1 }) => assert!(loss.is_nan()),
            other => panic!("{:?}", other.map(|o| o.loss)),
        }
        assert_near(&values(&p), &[0.0]);
    }

    #[test]
    fn the_average_after_k_updates_is_the_closed_form_of_the_weights_they_left() {
        let buffer = Tensor::from_slice(&[0.0f64]);
        let named_buffer = vec![("running".to_owned(), buffer.shallow_clone())];
        let decay = 0.8;
        let (p, mut step) =
            quadratic(&[1.0, -1.0], |s| s.accumulating(2).with_buffers(named_buffer).with_ema(Some(decay)));
        let mut sgd = Sgd::new(&step.params, 0.9, 0.0);
        let mut recorded = vec![(values(&p), values(&buffer))];
        for k in 0..4 {
            for target in [[k as f64, 2.0], [-1.0, k as f64 * 0.5]] {
                // As batch norm's running statistics, the forward pass moves the buffer.
                let _ = tch::no_grad(|| buffer.shallow_clone().g_add_scalar_(0.25 + k as f64));
                batch(&mut step, &mut sgd, &p, &target).unwrap();
            }
            recorded.push((values(&p), values(&buffer)));
        }
        // ema_k = d^k w₀ + Σᵢ (1 − d) d^(k−i) wᵢ over the weights after each update.
        let k = recorded.len() - 1;
        let closed_form = |value: &dyn Fn(usize) -> f64| {
            (1..=k).fold(decay.powi(k as i32) * value(0), |sum, i| {
                sum + (1.0 - decay) * decay.powi((k - i) as i32) * value(i)
            })
        };
        let averages = step.ema().unwrap().averages();
        let (names, tensors): (Vec<_>, Vec<_>) = averages.into_iter().unzip();
        assert_eq!(names, ["p", "running"]);
        let expected_p: Vec<f64> = (0..2).map(|j| closed_form(&|i| recorded[i].0[j])).collect();
        let close = |a: &[f64], e: &[f64]| a.iter().zip(e).all(|(a, e)| (a - e).abs() < 1e-12);
        assert!(close(&values(&tensors[0]), &expected_p), "{:?} against {expected_p:?}", values(&tensors[0]));
        let expected_buffer = closed_form(&|i| recorded[i].1[0]);
        assert!(close(&values(&tensors[1]), &[expected_buffer]), "{:?}", values(&tensors[1]));
    }
}
