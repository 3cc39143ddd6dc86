//! Scoring class probabilities against labels: mean cross-entropy, top-1
//! accuracy, and the scores that see class imbalance (macro-F1, balanced
//! accuracy, from `crate::metrics::confusion`), as each val phase reports them.

use crate::metrics::confusion::ConfusionMatrix;
use tch::{Kind, Tensor};

/// Mean cross-entropy and number of correct top-1 predictions.
pub fn loss_and_correct(probs: &Tensor, labels: &Tensor) -> (f64, i64) {
    let labels = labels.to_device(probs.device());
    let loss = probs.clamp_min(1e-12).log().nll_loss(&labels).double_value(&[]);
    let correct = probs.argmax(-1, false).eq_tensor(&labels).sum(Kind::Int64).int64_value(&[]);
    (loss, correct)
}

/// The top-1 predictions of `probs` (`[N, classes]`) against `labels`.
pub fn confusion(probs: &Tensor, labels: &Tensor) -> ConfusionMatrix {
    let predicted: Vec<i64> =
        Vec::try_from(probs.argmax(-1, false).to_device(tch::Device::Cpu)).expect("argmax gives int64 indices");
    let truth: Vec<i64> = Vec::try_from(labels.to_device(tch::Device::Cpu)).expect("labels are int64 indices");
    ConfusionMatrix::of(&truth, &predicted, probs.size()[1] as usize)
}

/// What a val phase reports of one model's predictions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ValScores {
    pub loss: f64,
    pub acc: f64,
    pub macro_f1: f64,
    pub balanced_acc: f64,
}

impl ValScores {
    pub fn of(probs: &Tensor, labels: &Tensor) -> Self {
        let (loss, correct) = loss_and_correct(probs, labels);
        let acc = correct as f64 / labels.size()[0].max(1) as f64;
        let confusion = confusion(probs, labels);
        Self { loss, acc, macro_f1: confusion.macro_f1(), balanced_acc: confusion.balanced_accuracy() }
    }
}

/// Number of correct top-1 predictions among `logits`.
pub fn correct(logits: &Tensor, labels: &Tensor) -> i64 {
    logits.argmax(-1, false).eq_tensor(labels).sum(Kind::Int64).int64_value(&[])
}
