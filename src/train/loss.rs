//! The classification losses of a training step, with optional per-class
//! weights (`--class-weights`): cross-entropy against class indices with
//! torch's `weight=` and `label_smoothing=` semantics, and cross-entropy
//! against the soft targets of mixed batches (MixUp, CutMix). Each returns a
//! scalar tensor that autograd differentiates; nothing here knows a model.

use tch::{Kind, Reduction, Tensor};

/// `F.cross_entropy(logits, labels, weight=weights, label_smoothing=smoothing)`:
/// without weights the mean over the batch; with them the weighted mean
/// Σ w_y·l / Σ w_y (torch's own op computes it, in fp32).
pub fn cross_entropy(logits: &Tensor, labels: &Tensor, weights: Option<&Tensor>, smoothing: f64) -> Tensor {
    logits.to_kind(Kind::Float).cross_entropy_loss(labels, weights, Reduction::Mean, -100, smoothing)
}

/// Per-class weights of a soft-target loss: the weights, and the batch's
/// mixed labels without smoothing (`[B, classes]`, λ·y + (1 − λ)·y′).
pub struct SoftWeighting<'a> {
    pub weights: &'a Tensor,
    pub mixed_labels: &'a Tensor,
}

/// Cross-entropy against soft `targets` (`[B, classes]`, smoothing already
/// in them). Without weights: the mean over the batch of −Σ_c t_c·log p_c
/// (torch's `F.cross_entropy` with probability targets). With weights:
/// Σ_i Σ_c w_c·t_ic·l_ic / Σ_i Σ_c w_c·m_ic, `m` the unsmoothed mixed labels:
/// each image counts with its mixed label's weight λ·w_y + (1 − λ)·w_y′, so
/// that an unmixed batch (λ = 1) gets exactly [`cross_entropy`]'s weighted
/// mean, label smoothing included. (torch's probability-target path
/// divides the weighted sum by the batch size instead, which changes the
/// loss's scale with the weights and with λ.)
pub fn soft_cross_entropy(logits: &Tensor, targets: &Tensor, weighting: Option<SoftWeighting>) -> Tensor {
    let log_probs = logits.to_kind(Kind::Float).log_softmax(-1, Kind::Float);
    match weighting {
        None => (-(targets * log_probs).sum_dim_intlist(-1, false, Kind::Float)).mean(Kind::Float),
        Some(SoftWeighting { weights, mixed_labels }) => {
            let weighted_sum = -(targets * weights * log_probs).sum(Kind::Float);
            let total_weight = (mixed_labels * weights).sum(Kind::Float);
            weighted_sum / total_weight
        }
    }
}
