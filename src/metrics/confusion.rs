//! Single-label classification scores from a confusion matrix, with
//! scikit-learn's definitions: accuracy, per-class precision, recall and
//! F1, macro-F1 (`f1_score(average="macro")`) and balanced accuracy
//! (`balanced_accuracy_score`). It knows nothing of tensors or files.

/// `counts[true][predicted]` over `classes` classes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfusionMatrix {
    pub counts: Vec<Vec<u64>>,
}

impl ConfusionMatrix {
    /// The matrix of `predicted` against `truth` (class indices below `classes`;
    /// an index out of range is a caller's bug).
    pub fn of(truth: &[i64], predicted: &[i64], classes: usize) -> Self {
        assert_eq!(truth.len(), predicted.len(), "one prediction per label");
        let mut counts = vec![vec![0u64; classes]; classes];
        for (&t, &p) in truth.iter().zip(predicted) {
            counts[t as usize][p as usize] += 1;
        }
        Self { counts }
    }

    pub fn classes(&self) -> usize {
        self.counts.len()
    }

    /// Samples of class `c` (its row).
    pub fn support(&self, c: usize) -> u64 {
        self.counts[c].iter().sum()
    }

    /// Samples predicted as class `c` (its column).
    pub fn predicted(&self, c: usize) -> u64 {
        self.counts.iter().map(|row| row[c]).sum()
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().flatten().sum()
    }

    pub fn accuracy(&self) -> f64 {
        let correct: u64 = (0..self.classes()).map(|c| self.counts[c][c]).sum();
        correct as f64 / self.total().max(1) as f64
    }

    /// tp / predicted, 0 for a class never predicted (scikit-learn's
    /// `zero_division` default, less its warning).
    pub fn precision(&self, c: usize) -> f64 {
        ratio(self.counts[c][c], self.predicted(c))
    }

    /// tp / support, 0 for a class with no samples.
    pub fn recall(&self, c: usize) -> f64 {
        ratio(self.counts[c][c], self.support(c))
    }

    /// 2·tp / (2·tp + fp + fn), as scikit-learn computes F1 (so a class
    /// never predicted scores 0); 0 for a class neither present nor predicted.
    pub fn f1(&self, c: usize) -> f64 {
        let tp = self.counts[c][c];
        let (false_pos, false_neg) = (self.predicted(c) - tp, self.support(c) - tp);
        ratio(2 * tp, 2 * tp + false_pos + false_neg)
    }

    /// The mean F1 over the classes that occur among the labels or the
    /// predictions: `f1_score(y_true, y_pred, average="macro")`, whose
    /// labels are those two sets' union.
    pub fn macro_f1(&self) -> f64 {
        let seen: Vec<usize> = (0..self.classes()).filter(|&c| self.support(c) + self.predicted(c) > 0).collect();
        seen.iter().map(|&c| self.f1(c)).sum::<f64>() / seen.len().max(1) as f64
    }

    /// The mean recall over the classes with samples:
    /// `balanced_accuracy_score(y_true, y_pred)` (classes only predicted are
    /// left out, as scikit-learn does after its warning).
    pub fn balanced_accuracy(&self) -> f64 {
        let present: Vec<usize> = (0..self.classes()).filter(|&c| self.support(c) > 0).collect();
        present.iter().map(|&c| self.recall(c)).sum::<f64>() / present.len().max(1) as f64
    }
}

fn ratio(numerator: u64, denominator: u64) -> f64 {
    if denominator == 0 {
        0.0
    } else {
        numerator as f64 / denominator as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_class_never_predicted_scores_zero_f1_and_zero_recall() {
        // Three ants, one bee, everything called an ant.
        let m = ConfusionMatrix::of(&[0, 0, 0, 1], &[0, 0, 0, 0], 2);
        assert_eq!(m.counts, [[3, 0], [1, 0]]);
        assert_eq!((m.accuracy(), m.precision(1), m.f1(1)), (0.75, 0.0, 0.0));
        assert!((m.f1(0) - 6.0 / 7.0).abs() < 1e-15);
        assert!((m.macro_f1() - 3.0 / 7.0).abs() < 1e-15);
        assert_eq!(m.balanced_accuracy(), 0.5);
    }

    #[test]
    fn a_class_absent_from_labels_and_predictions_is_left_out_of_the_means() {
        let m = ConfusionMatrix::of(&[0, 1, 1], &[0, 1, 0], 3);
        assert!((m.macro_f1() - (2.0 / 3.0 + 2.0 / 3.0) / 2.0).abs() < 1e-15);
        assert_eq!(m.balanced_accuracy(), 0.75);
        // Class 2 only predicted: in the macro-F1 (at 0), not in the balanced accuracy.
        let m = ConfusionMatrix::of(&[0, 1], &[0, 2], 3);
        assert!((m.macro_f1() - 1.0 / 3.0).abs() < 1e-15);
        assert_eq!(m.balanced_accuracy(), 0.5);
    }
}
