//! One training step, the same for every network the crate trains: a
//! forward pass and loss through a [`Backprop`], the gradients unscaled when
//! mixed precision scaled the loss, and the run's optimizer's update. Which
//! backprop (`crate::accel::backprop`) and which optimizer are the caller's
//! choice; this file only puts them in order.

use super::amp::LossScaler;
use super::optim::Optimizer;
use crate::grad::{Backprop, Forward, LossFn, Params};
use tch::{Kind, Tensor};

pub struct GradientStep {
    pub params: Params,
    backprop: Box<dyn Backprop>,
    scaler: Option<LossScaler>,
}

/// What a step reports: the batch's logits and mean loss.
pub struct StepOutcome {
    pub logits: Tensor,
    pub loss: f64,
}

impl GradientStep {
    pub fn new(params: Params, backprop: Box<dyn Backprop>) -> Self {
        Self { params, backprop, scaler: None }
    }

    /// Scales the loss before backward from now on (mixed precision).
    pub fn with_loss_scaling(mut self) -> Self {
        self.scaler = Some(LossScaler::default());
        self
    }

    /// Runs `forward`, the loss `loss_of` on its logits, and applies
    /// `optimizer`'s update at rate `lr`. A non-finite loss is returned as
    /// `Err(value)` with nothing applied; a step whose scaled gradients
    /// overflowed is skipped (and counted).
    pub fn step(
        &mut self,
        optimizer: &mut dyn Optimizer,
        forward: Forward,
        loss_of: LossFn,
        lr: f64,
    ) -> Result<StepOutcome, f64> {
        let scale = self.scaler.as_ref().map_or(1.0, LossScaler::scale);
        let mut pass = self.backprop.run(forward, loss_of, &self.params, scale);
        let loss = pass.loss.to_kind(Kind::Double).double_value(&[]);
        if !loss.is_finite() {
            return Err(loss);
        }
        let apply = self.scaler.as_mut().is_none_or(|scaler| scaler.unscale(&mut pass.grads));
        if apply {
            optimizer.step(&self.params, &pass.grads, lr);
        }
        Ok(StepOutcome { logits: pass.logits, loss })
    }

    /// Steps skipped because of gradient overflow under loss scaling.
    pub fn skipped_steps(&self) -> u64 {
        self.scaler.as_ref().map_or(0, LossScaler::skipped)
    }
}
