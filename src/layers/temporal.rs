//! The layers a sequence model applies at every time step alike: an affine
//! map over `[N, T, D]` (the [`Affine`] layer on the `N·T` rows), and the
//! softmax cross-entropy of `[N, T, V]` scores against `[N, T]` targets
//! where a mask says which positions count.

use super::{Affine, LayerGradients};
use tch::nn::{self, Module};
use tch::{Kind, Tensor};

#[derive(Debug)]
pub struct TemporalAffine(pub Affine);

impl TemporalAffine {
    pub fn new(p: nn::Path, inputs: i64, outputs: i64, weight_scale: f64) -> Self {
        Self(Affine::new(p, inputs, outputs, weight_scale))
    }

    pub fn parameters(&self) -> Vec<Tensor> {
        self.0.parameters()
    }

    fn rows(x: &Tensor) -> Tensor {
        x.reshape([-1, *x.size().last().expect("a [N, T, D] input")])
    }

    /// `dX` shaped like the input, and `[dW, db]`.
    pub fn backward(&self, input: &Tensor, upstream: &Tensor) -> LayerGradients {
        let rows = self.0.backward(&Self::rows(input), &Self::rows(upstream));
        LayerGradients { input: rows.input.reshape(input.size()), params: rows.params }
    }
}

impl Module for TemporalAffine {
    fn forward(&self, x: &Tensor) -> Tensor {
        let mut shape = x.size();
        *shape.last_mut().expect("a [N, T, D] input") = self.0.weight.size()[1];
        self.0.forward(&Self::rows(x)).reshape(shape)
    }
}

/// Masked softmax cross-entropy over time: the loss summed over the
/// positions where `mask` is true and divided by N (the batch size, not the
/// number of counted tokens), and its gradient with respect to `scores`.
pub fn temporal_softmax_loss(scores: &Tensor, targets: &Tensor, mask: &Tensor) -> (Tensor, Tensor) {
    let n = scores.size()[0];
    let weights = mask.to_kind(scores.kind()).unsqueeze(-1);
    let shifted = scores - scores.amax([-1i64].as_slice(), true);
    let log_probs = &shifted - shifted.exp().sum_dim_intlist([-1i64].as_slice(), true, scores.kind()).log();
    let picked = log_probs.gather(-1, &targets.unsqueeze(-1), false);
    let loss = -(picked * &weights).sum(scores.kind()) / n as f64;
    let onehot = log_probs.zeros_like().scatter_value(-1, &targets.unsqueeze(-1), 1.0);
    let d_scores = (log_probs.exp() - onehot) * weights / n as f64;
    (loss, d_scores)
}

/// [`temporal_softmax_loss`]'s loss by tensor operations autograd can follow.
pub fn temporal_softmax_loss_autograd(scores: &Tensor, targets: &Tensor, mask: &Tensor) -> Tensor {
    let n = scores.size()[0];
    let picked = scores.log_softmax(-1, scores.kind()).gather(-1, &targets.unsqueeze(-1), false).squeeze_dim(-1);
    -(picked * mask.to_kind(scores.kind())).sum(Kind::Double).to_kind(scores.kind()) / n as f64
}
