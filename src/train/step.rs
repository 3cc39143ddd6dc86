//! One training step, the same for every network the crate trains: a
//! forward pass and loss through a [`Backprop`], the gradients unscaled when
//! mixed precision scaled the loss, and the run's optimizer's update. Which
//! backprop (`crate::accel::backprop`) and which optimizer are the caller's
//! choice; this file only puts them in order. In a data-parallel run the
//! gradients and the loss are averaged over the ranks before anything else
//! looks at them, so every rank agrees on a non-finite loss and applies the
//! same update.

use super::amp::LossScaler;
use super::data_parallel::Ranks;
use super::optim::Optimizer;
use crate::grad::{Backprop, Forward, LossFn, Params};
use tch::{Kind, Tensor};

pub struct GradientStep {
    pub params: Params,
    backprop: Box<dyn Backprop>,
    scaler: Option<LossScaler>,
    ranks: Ranks,
}

/// Why a step applied nothing.
#[derive(Debug)]
pub enum StepError {
    /// The batch's loss (averaged over the ranks) was this non-finite value.
    NonFinite(f64),
    /// Averaging over the ranks failed (a rank died or timed out).
    Ranks(anyhow::Error),
}

/// What a step reports: the batch's logits and mean loss.
pub struct StepOutcome {
    pub logits: Tensor,
    pub loss: f64,
}

impl GradientStep {
    pub fn new(params: Params, backprop: Box<dyn Backprop>) -> Self {
        Self { params, backprop, scaler: None, ranks: Ranks::single() }
    }

    /// Averages every step's gradients over `ranks` from now on.
    pub fn over(mut self, ranks: Ranks) -> Self {
        self.ranks = ranks;
        self
    }

    /// Scales the loss before backward from now on (mixed precision).
    pub fn with_loss_scaling(mut self) -> Self {
        self.scaler = Some(LossScaler::default());
        self
    }

    /// Runs `forward`, the loss `loss_of` on its logits, and applies
    /// `optimizer`'s update at rate `lr`. A non-finite loss is an error
    /// with nothing applied; a step whose scaled gradients overflowed is
    /// skipped (and counted).
    pub fn step(
        &mut self,
        optimizer: &mut dyn Optimizer,
        forward: Forward,
        loss_of: LossFn,
        lr: f64,
    ) -> Result<StepOutcome, StepError> {
        let scale = self.scaler.as_ref().map_or(1.0, LossScaler::scale);
        let mut pass = self.backprop.run(forward, loss_of, &self.params, scale);
        let loss = self.mean_over_ranks(&pass.grads.0, &pass.loss).map_err(StepError::Ranks)?;
        if !loss.is_finite() {
            return Err(StepError::NonFinite(loss));
        }
        let apply = self.scaler.as_mut().is_none_or(|scaler| scaler.unscale(&mut pass.grads));
        if apply {
            optimizer.step(&self.params, &pass.grads, lr);
        }
        Ok(StepOutcome { logits: pass.logits, loss })
    }

    /// The loss averaged over the ranks, the defined `grads` averaged in place.
    fn mean_over_ranks(&self, grads: &[Tensor], loss: &Tensor) -> anyhow::Result<f64> {
        if self.ranks.world_size() == 1 {
            return Ok(loss.to_kind(Kind::Double).double_value(&[]));
        }
        let loss = loss.detach().to_kind(Kind::Float).reshape([1]);
        let mut averaged: Vec<Tensor> = grads.iter().filter(|g| g.defined()).map(Tensor::shallow_clone).collect();
        averaged.push(loss.shallow_clone());
        self.ranks.mean_(&averaged)?;
        Ok(loss.double_value(&[0]))
    }

    /// Steps skipped because of gradient overflow under loss scaling.
    pub fn skipped_steps(&self) -> u64 {
        self.scaler.as_ref().map_or(0, LossScaler::skipped)
    }
}
