//! Gradients as values. A training step names the parameters it trains
//! ([`Params`]), runs its forward pass and loss through a [`Backprop`], and
//! gets back a [`Gradients`] value, which mixed precision may unscale and an
//! optimizer applies (`optimizer.step(&params, &grads, lr)`). Nothing is
//! accumulated into `.grad` and nothing has to be zeroed.
//!
//! [`Autograd`] is libtorch's backward pass. Faster ways to the same
//! gradients (on the CPU, `crate::accel`) implement [`Backprop`] too; this
//! module knows none of them. Networks with hand-derived backward passes
//! (`mnist`'s and `caption`'s) are [`HandDerived`], and [`gradients`] is the
//! one place where `--grad manual|autograd` chooses between their own
//! backward pass and [`Autograd`].

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// Where a hand-derived network's gradients come from (`--grad`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GradMode {
    /// The layers' hand-derived backward passes.
    Manual,
    /// libtorch's autograd over the same forward pass.
    Autograd,
}

/// A network that computes its loss both ways: by tensor operations that
/// autograd can differentiate, and with every parameter's gradient by its
/// layers' explicit backward passes.
pub trait HandDerived {
    /// Every parameter with its name, in the order of
    /// [`HandDerived::loss_and_gradients`]' gradients.
    fn named_parameters(&self) -> Vec<(String, Tensor)>;
    /// The loss of `inputs` against `targets`, tensor operations only.
    fn loss(&self, inputs: &Tensor, targets: &Tensor) -> Tensor;
    /// The same loss and the gradient of every parameter, by the explicit
    /// backward passes.
    fn loss_and_gradients(&self, inputs: &Tensor, targets: &Tensor) -> (Tensor, Vec<Tensor>);
}

/// The loss of one minibatch (detached) and its gradients in `params`'
/// order, from `net`'s own backward pass or from [`Autograd`].
pub fn gradients(
    mode: GradMode,
    net: &dyn HandDerived,
    params: &Params,
    inputs: &Tensor,
    targets: &Tensor,
) -> (Tensor, Gradients) {
    match mode {
        GradMode::Manual => {
            let (loss, grads) = tch::no_grad(|| net.loss_and_gradients(inputs, targets));
            let mut ordered: Vec<Tensor> = (0..params.len()).map(|_| Tensor::new()).collect();
            for ((_, param), grad) in net.named_parameters().iter().zip(grads) {
                if let Some(position) = params.position_of(param) {
                    ordered[position] = grad;
                }
            }
            (loss, Gradients(ordered))
        }
        GradMode::Autograd => {
            let pass = Autograd.run(&mut || net.loss(inputs, targets), &|loss| loss.shallow_clone(), params, 1.0);
            (pass.loss, pass.grads)
        }
    }
}

/// The parameters a step trains, by name, sorted, each requiring grad.
pub struct Params {
    named: Vec<(String, Tensor)>,
}

impl Params {
    /// The parameters among `named` that require grad, sorted by name.
    pub fn new(named: impl IntoIterator<Item = (String, Tensor)>) -> Self {
        let mut named: Vec<(String, Tensor)> = named.into_iter().filter(|(_, t)| t.requires_grad()).collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        Self { named }
    }

    pub fn iter(&self) -> impl Iterator<Item = &(String, Tensor)> {
        self.named.iter()
    }

    pub fn tensors(&self) -> impl Iterator<Item = &Tensor> {
        self.named.iter().map(|(_, t)| t)
    }

    pub fn len(&self) -> usize {
        self.named.len()
    }

    pub fn is_empty(&self) -> bool {
        self.named.is_empty()
    }

    /// The position of the parameter stored at `tensor`'s address, if any.
    pub fn position_of(&self, tensor: &Tensor) -> Option<usize> {
        self.named.iter().position(|(_, p)| p.data_ptr() == tensor.data_ptr())
    }
}

/// One gradient per parameter of a [`Params`], in its order; an undefined
/// tensor where the loss does not reach the parameter.
pub struct Gradients(pub Vec<Tensor>);

impl Gradients {
    /// Multiplies every gradient by `factor`, in place.
    pub fn scale_(&mut self, factor: f64) {
        tch::no_grad(|| {
            for grad in self.0.iter().filter(|g| g.defined()) {
                let _ = grad.shallow_clone().g_mul_scalar_(factor);
            }
        });
    }

    /// Whether every element of every gradient is finite (one device sync).
    pub fn all_finite(&self) -> bool {
        let sums: Vec<Tensor> = self.0.iter().filter(|g| g.defined()).map(|g| g.sum(Kind::Float)).collect();
        sums.is_empty() || Tensor::stack(&sums, 0).sum(Kind::Float).double_value(&[]).is_finite()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Tensor> {
        self.0.iter()
    }

    /// Adds `other` (gradients of the same parameters) in place: what
    /// accumulating over several batches sums. A gradient defined in only
    /// one of the two is taken as it is.
    pub fn add_(&mut self, other: Gradients) {
        tch::no_grad(|| {
            for (sum, grad) in self.0.iter_mut().zip(other.0) {
                match (sum.defined(), grad.defined()) {
                    (true, true) => {
                        let _ = sum.g_add_(&grad);
                    }
                    (false, true) => *sum = grad,
                    _ => {}
                }
            }
        });
    }

    /// The L2 norm of all the defined gradients taken as one vector (the
    /// norm of their norms, as `torch.nn.utils.clip_grad_norm_` computes it),
    /// as a scalar tensor; none when no gradient is defined.
    pub fn total_norm(&self) -> Option<Tensor> {
        let norms: Vec<Tensor> = self.0.iter().filter(|g| g.defined()).map(|g| g.detach().norm()).collect();
        let device = norms.first()?.device();
        let norms: Vec<Tensor> = norms.iter().map(|n| n.to_device(device)).collect();
        Some(Tensor::stack(&norms, 0).norm())
    }

    /// `torch.nn.utils.clip_grad_norm_(max_norm)`: every gradient multiplied
    /// by `min(1, max_norm / (total_norm + 1e-6))`, in place, without a
    /// device sync. Returns the total norm before clipping.
    pub fn clip_norm_(&mut self, max_norm: f64) -> Option<Tensor> {
        let total = self.total_norm()?;
        // As torch's `max_norm / (total + 1e-6)`: Python's reverse division is a reciprocal times.
        let coefficient = ((&total + 1e-6).reciprocal() * max_norm).clamp_max(1.0);
        tch::no_grad(|| {
            for grad in self.0.iter_mut().filter(|g| g.defined()) {
                let _ = grad.g_mul_(&coefficient.to_device(grad.device()).to_kind(grad.kind()));
            }
        });
        Some(total)
    }
}

/// What one forward and backward pass produced: logits and loss (detached:
/// the gradients are already taken) and the gradients of the loss times the
/// requested scale.
pub struct Pass {
    pub logits: Tensor,
    pub loss: Tensor,
    pub grads: Gradients,
}

/// A step's forward pass, returning logits.
pub type Forward<'a> = &'a mut dyn FnMut() -> Tensor;
/// A step's loss on the logits.
pub type LossFn<'a> = &'a dyn Fn(&Tensor) -> Tensor;

/// How a training step turns a forward pass and a loss into gradients.
pub trait Backprop {
    /// Runs `forward` (returning logits), `loss_of` on them, and returns the
    /// gradients of `loss · loss_scale` with respect to `params`.
    fn run(&self, forward: Forward, loss_of: LossFn, params: &Params, loss_scale: f64) -> Pass;
}

/// libtorch's own backward pass.
pub struct Autograd;

impl Backprop for Autograd {
    fn run(&self, forward: Forward, loss_of: LossFn, params: &Params, loss_scale: f64) -> Pass {
        let logits = forward();
        let loss = loss_of(&logits);
        let grads = backward(&(&loss * loss_scale), params, &[]).0;
        Pass { logits: logits.detach(), loss: loss.detach(), grads }
    }
}

/// The gradients of `loss` with respect to `params`, and with respect to
/// each of `outputs` (intermediate tensors whose gradients a [`Backprop`]
/// turns into parameter gradients itself), returned rather than accumulated.
pub fn backward(loss: &Tensor, params: &Params, outputs: &[&Tensor]) -> (Gradients, Vec<Tensor>) {
    let inputs: Vec<&Tensor> = params.tensors().chain(outputs.iter().copied()).collect();
    let mut grads = Tensor::run_backward(&[loss], &inputs, false, false);
    let output_grads = grads.split_off(params.len());
    (Gradients(grads), output_grads)
}
