//! Scoring class probabilities against labels: mean cross-entropy and
//! top-1 accuracy, as the tutorial reports them each val phase.

use crate::metrics::EpochRow;
use tch::{Kind, Tensor};

/// Mean cross-entropy and number of correct top-1 predictions.
pub fn loss_and_correct(probs: &Tensor, labels: &Tensor) -> (f64, i64) {
    let labels = labels.to_device(probs.device());
    let loss = probs.clamp_min(1e-12).log().nll_loss(&labels).double_value(&[]);
    let correct = probs.argmax(-1, false).eq_tensor(&labels).sum(Kind::Int64).int64_value(&[]);
    (loss, correct)
}

/// The val row of `epoch` from the val split's probabilities.
pub fn val_row(probs: &Tensor, labels: &Tensor, epoch: usize, lr: f64, seconds: f64) -> EpochRow {
    let (loss, correct) = loss_and_correct(probs, labels);
    let acc = correct as f64 / labels.size()[0].max(1) as f64;
    EpochRow { epoch, phase: "val".into(), loss, acc, lr, seconds, data_wait_seconds: 0.0 }
}

/// Number of correct top-1 predictions among `logits`.
pub fn correct(logits: &Tensor, labels: &Tensor) -> i64 {
    logits.argmax(-1, false).eq_tensor(labels).sum(Kind::Int64).int64_value(&[])
}
