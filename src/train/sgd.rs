//! SGD with momentum, as `torch.optim.SGD` (no dampening, no weight decay),
//! and StepLR. Written out rather than taken from `tch` so the momentum
//! buffers can be saved and restored with a run. With `--amp` it scales the
//! loss as torch's GradScaler does ([`LossScaler`]).

use super::amp::LossScaler;
use crate::models::winograd::{self, Tape};
use tch::Tensor;

pub struct Sgd {
    pub momentum: f64,
    params: Vec<(String, Tensor)>,
    buffers: Vec<Option<Tensor>>,
    scaler: Option<LossScaler>,
}

impl Sgd {
    /// Optimizes the given named parameters (those with `requires_grad`).
    pub fn new(params: Vec<(String, Tensor)>, momentum: f64) -> Self {
        let mut params: Vec<(String, Tensor)> = params.into_iter().filter(|(_, t)| t.requires_grad()).collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let buffers = params.iter().map(|_| None).collect();
        Self { momentum, params, buffers, scaler: None }
    }

    /// Scales the loss before backward from now on (mixed precision).
    pub fn with_loss_scaling(mut self) -> Self {
        self.scaler = Some(LossScaler::default());
        self
    }

    /// One optimization step from a batch's loss: backpropagate, update.
    /// With loss scaling, a step whose gradients overflowed is skipped (as
    /// GradScaler skips it); returns whether the update was made.
    pub fn minimize(&mut self, loss: &Tensor, lr: f64) -> bool {
        self.minimize_recorded(loss, &Tape::default(), lr)
    }

    /// [`Sgd::minimize`] for a forward pass recorded on `tape`, whose
    /// convolutions' weight gradients come from [`winograd::weight_gradient`].
    pub fn minimize_recorded(&mut self, loss: &Tensor, tape: &Tape, lr: f64) -> bool {
        let grads = match &mut self.scaler {
            Some(scaler) => scaler.gradients(loss, &self.params, tape),
            None => Some(gradients(loss, &self.params, tape)),
        };
        match grads {
            Some(grads) => {
                self.step(&grads, lr);
                true
            }
            None => false,
        }
    }

    /// Steps skipped because of gradient overflow under loss scaling.
    pub fn skipped_steps(&self) -> u64 {
        self.scaler.as_ref().map_or(0, LossScaler::skipped)
    }

    /// One update from the parameters' gradients (in parameter order):
    /// `buf = momentum·buf + grad` (`buf = grad` the first time), then
    /// `p -= lr·buf`.
    fn step(&mut self, grads: &[Tensor], lr: f64) {
        tch::no_grad(|| {
            for (((_, param), buffer), grad) in self.params.iter_mut().zip(self.buffers.iter_mut()).zip(grads) {
                if !grad.defined() {
                    continue;
                }
                let buf = match buffer.take() {
                    None => grad.copy(),
                    Some(mut buf) => {
                        let _ = buf.g_mul_scalar_(self.momentum).g_add_(grad);
                        buf
                    }
                };
                // One pass, no temporary: p += buf · (−lr).
                let _ = param.g_sub_(&(&buf * lr));
                *buffer = Some(buf);
            }
        });
    }

    /// The momentum buffers by parameter name (for saving a run).
    pub fn named_buffers(&self) -> Vec<(String, Tensor)> {
        self.params
            .iter()
            .zip(&self.buffers)
            .filter_map(|((name, _), buf)| buf.as_ref().map(|b| (name.clone(), b.shallow_clone())))
            .collect()
    }

    /// Restores momentum buffers saved by [`Sgd::named_buffers`].
    pub fn load_buffers(&mut self, saved: &[(String, Tensor)]) {
        for ((name, param), buffer) in self.params.iter().zip(self.buffers.iter_mut()) {
            if let Some((_, t)) = saved.iter().find(|(n, _)| n == name) {
                *buffer = Some(t.to_device(param.device()).to_kind(param.kind()));
            }
        }
    }
}

/// The gradients of `loss` with respect to `params` (named, in that order),
/// returned rather than accumulated into each parameter's `.grad`: no zeroing
/// before the step and no accumulation pass in it. A parameter the loss does
/// not reach gets an undefined tensor. The weights of the convolutions on
/// `tape` get theirs from the gradient of each recorded output.
pub fn gradients(loss: &Tensor, params: &[(String, Tensor)], tape: &Tape) -> Vec<Tensor> {
    let inputs: Vec<&Tensor> =
        params.iter().map(|(_, p)| p).chain(tape.entries.iter().map(|entry| &entry.output)).collect();
    let mut grads = Tensor::run_backward(&[loss], &inputs, false, false);
    let output_grads = grads.split_off(params.len());
    for (entry, grad_output) in tape.entries.iter().zip(output_grads) {
        if !grad_output.defined() {
            continue;
        }
        let Some(i) = params.iter().position(|(_, p)| p.data_ptr() == entry.weight.data_ptr()) else { continue };
        let grad = tch::no_grad(|| winograd::weight_gradient(&entry.input, &grad_output));
        grads[i] = if grads[i].defined() { &grads[i] + grad } else { grad };
    }
    grads
}

/// `StepLR`: the learning rate of epoch `epoch` (0-based).
pub fn step_lr(base_lr: f64, step_size: usize, gamma: f64, epoch: usize) -> f64 {
    base_lr * gamma.powi((epoch / step_size.max(1)) as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_lr_matches_the_tutorial_schedule() {
        assert_eq!(step_lr(0.001, 7, 0.1, 0), 0.001);
        assert_eq!(step_lr(0.001, 7, 0.1, 6), 0.001);
        assert!((step_lr(0.001, 7, 0.1, 7) - 0.0001).abs() < 1e-12);
        assert!((step_lr(0.001, 7, 0.1, 24) - 0.000001).abs() < 1e-15);
    }

    #[test]
    fn momentum_update_matches_torch_sgd() {
        // Minimising 0.5·p² from p=1 with lr 0.1, momentum 0.9: torch gives
        // p1 = 0.9, buf1 = 1; p2 = 0.9 - 0.1·(0.9·1 + 0.9) = 0.72.
        let p = Tensor::from_slice(&[1.0f64]).set_requires_grad(true);
        let mut sgd = Sgd::new(vec![("p".into(), p.shallow_clone())], 0.9);
        for _ in 0..2 {
            assert!(sgd.minimize(&(&p * &p * 0.5).sum(tch::Kind::Double), 0.1));
        }
        assert!((p.double_value(&[0]) - 0.72).abs() < 1e-12);
    }
}
