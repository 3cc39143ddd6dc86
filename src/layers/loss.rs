//! Softmax cross-entropy, numerically stable (scores shifted by their row
//! maximum before exponentiating). Returns the mean loss and its gradient
//! with respect to the scores: `(softmax(s) − onehot(y)) / N`.

use tch::{Kind, Tensor};

pub fn softmax_cross_entropy(scores: &Tensor, labels: &Tensor) -> (Tensor, Tensor) {
    let n = scores.size()[0];
    let shifted = scores - scores.amax([1i64].as_slice(), true);
    let log_probs = &shifted - shifted.exp().sum_dim_intlist([1i64].as_slice(), true, scores.kind()).log();
    let picked = log_probs.gather(1, &labels.unsqueeze(1), false);
    let loss = -picked.mean(scores.kind());
    let onehot = Tensor::zeros_like(scores).scatter_value(1, &labels.unsqueeze(1), 1.0);
    let d_scores = (log_probs.exp() - onehot) / n as f64;
    (loss, d_scores)
}

/// Top-1 accuracy of `scores` against `labels`.
pub fn accuracy(scores: &Tensor, labels: &Tensor) -> f64 {
    scores.argmax(1, false).eq_tensor(labels).to_kind(Kind::Double).mean(Kind::Double).double_value(&[])
}
