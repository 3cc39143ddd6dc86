//! What a multi-label run (`--label-delim`) measures, from each image's
//! per-class probabilities (sigmoids) and its multi-hot targets: the mean
//! binary cross-entropy; each class's average precision and their mean
//! (mAP), as scikit-learn's `average_precision_score(average="macro")`
//! computes them (step-wise, not interpolated; a class without positives
//! scores 0); F1 at the threshold, per class, macro and micro, as
//! `f1_score` (0 where undefined); and the exact-match ratio, as
//! `accuracy_score` on label indicators. A label is predicted where its
//! probability is above the threshold. Also the per-image scores file
//! (`val_scores.csv`) these numbers can be checked against.

use crate::persist::write_atomically;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

/// The score names a multi-label epoch records besides `val_loss` and
/// `val_acc` (the exact-match ratio there).
pub const VAL_MAP: &str = "val_map";
pub const VAL_MACRO_F1: &str = "val_macro_f1";
pub const VAL_MICRO_F1: &str = "val_micro_f1";

/// One class's scores.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClassScores {
    pub class: String,
    pub average_precision: f64,
    /// At the threshold.
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Images that have the class.
    pub support: usize,
}

/// A multi-label evaluation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MultiLabelScores {
    pub threshold: f64,
    /// Mean binary cross-entropy over every image and class (torch's
    /// `BCELoss` on the probabilities: logs clamped at −100).
    pub loss: f64,
    pub map: f64,
    pub macro_f1: f64,
    pub micro_f1: f64,
    pub exact_match: f64,
    pub per_class: Vec<ClassScores>,
}

/// Scores `probs` (`[N, classes]`) against multi-hot `targets` of the
/// same shape; `classes` names the columns.
pub fn score(probs: &Tensor, targets: &Tensor, classes: &[String], threshold: f64) -> MultiLabelScores {
    let (scores, truth) = (matrix(probs), matrix(targets));
    let (n, c) = (scores.len(), classes.len());
    let truth: Vec<Vec<bool>> = truth.iter().map(|row| row.iter().map(|&y| y > 0.5).collect()).collect();
    let predicted: Vec<Vec<bool>> = scores.iter().map(|row| row.iter().map(|&p| p > threshold).collect()).collect();
    let loss = binary_cross_entropy(&scores, &truth);
    let column = |rows: &Vec<Vec<f64>>, class: usize| rows.iter().map(|row| row[class]).collect::<Vec<f64>>();
    let flags = |rows: &Vec<Vec<bool>>, class: usize| rows.iter().map(|row| row[class]).collect::<Vec<bool>>();
    let (mut per_class, mut totals) = (Vec::with_capacity(c), Counts::default());
    for (class, name) in classes.iter().enumerate() {
        let counts = Counts::of(&flags(&truth, class), &flags(&predicted, class));
        totals = totals.plus(counts);
        per_class.push(ClassScores {
            class: name.clone(),
            average_precision: average_precision(&column(&scores, class), &flags(&truth, class)),
            precision: ratio(counts.tp, counts.tp + counts.fp),
            recall: ratio(counts.tp, counts.tp + counts.fn_),
            f1: counts.f1(),
            support: counts.tp + counts.fn_,
        });
    }
    let mean = |values: Vec<f64>| values.iter().sum::<f64>() / values.len().max(1) as f64;
    let exact = truth.iter().zip(&predicted).filter(|(t, p)| t == p).count();
    MultiLabelScores {
        threshold,
        loss,
        map: mean(per_class.iter().map(|s| s.average_precision).collect()),
        macro_f1: mean(per_class.iter().map(|s| s.f1).collect()),
        micro_f1: totals.f1(),
        exact_match: ratio(exact, n),
        per_class,
    }
}

/// Images whose predicted label set (sigmoid of `logits` above
/// `threshold`) is exactly their target set (`targets` above 1/2: the
/// dominant image's labels of a mixed batch).
pub fn exact_matches(logits: &Tensor, targets: &Tensor, threshold: f64) -> i64 {
    let predicted = logits.detach().to_kind(Kind::Float).sigmoid().gt(threshold);
    let truth = targets.to_device(logits.device()).gt(0.5);
    predicted.eq_tensor(&truth).all_dim(-1, false).sum(Kind::Int64).int64_value(&[])
}

/// The step-wise average precision of one class, as scikit-learn's
/// `average_precision_score`: Σ (Rₖ − Rₖ₋₁)·Pₖ over the distinct scores
/// from the highest down; 0 when no image has the class.
pub fn average_precision(scores: &[f64], truth: &[bool]) -> f64 {
    let positives = truth.iter().filter(|&&t| t).count();
    if positives == 0 {
        return 0.0;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut true_positives, mut seen, mut recall_before, mut ap) = (0usize, 0usize, 0.0, 0.0);
    for (k, &i) in order.iter().enumerate() {
        true_positives += truth[i] as usize;
        seen += 1;
        // A threshold at each distinct score: tied images are taken together.
        let last_of_tie = order.get(k + 1).is_none_or(|&next| scores[next] != scores[i]);
        if last_of_tie {
            let recall = true_positives as f64 / positives as f64;
            ap += (recall - recall_before) * (true_positives as f64 / seen as f64);
            recall_before = recall;
        }
    }
    ap
}

/// True and false positives and false negatives of one class or all.
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    tp: usize,
    fp: usize,
    fn_: usize,
}

impl Counts {
    fn of(truth: &[bool], predicted: &[bool]) -> Self {
        let count = |want_truth: bool, want_predicted: bool| {
            truth.iter().zip(predicted).filter(|&(&t, &p)| t == want_truth && p == want_predicted).count()
        };
        Self { tp: count(true, true), fp: count(false, true), fn_: count(true, false) }
    }

    fn plus(self, other: Self) -> Self {
        Self { tp: self.tp + other.tp, fp: self.fp + other.fp, fn_: self.fn_ + other.fn_ }
    }

    /// 2·TP / (2·TP + FP + FN), 0 when nothing is predicted or true.
    fn f1(self) -> f64 {
        ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn_)
    }
}

fn ratio(numerator: usize, denominator: usize) -> f64 {
    if denominator == 0 {
        0.0
    } else {
        numerator as f64 / denominator as f64
    }
}

/// Mean binary cross-entropy of probabilities, logs clamped at −100 as
/// torch's `BCELoss` clamps them.
fn binary_cross_entropy(scores: &[Vec<f64>], truth: &[Vec<bool>]) -> f64 {
    let (mut sum, mut count) = (0.0, 0usize);
    for (row, truths) in scores.iter().zip(truth) {
        for (&p, &t) in row.iter().zip(truths) {
            sum -= if t { p.ln().max(-100.0) } else { (1.0 - p).ln().max(-100.0) };
            count += 1;
        }
    }
    sum / count.max(1) as f64
}

/// A `[N, C]` tensor's rows as f64.
fn matrix(t: &Tensor) -> Vec<Vec<f64>> {
    let columns = t.size().get(1).copied().unwrap_or(0).max(1) as usize;
    let values = Vec::<f64>::try_from(t.to_kind(Kind::Double).to_device(tch::Device::Cpu).flatten(0, -1))
        .expect("a float tensor reads as f64");
    values.chunks(columns).map(<[f64]>::to_vec).collect()
}

/// Writes `path`: one row per image, its file, its true labels as 0/1
/// columns (`true:<class>`) and its probabilities (`score:<class>`, each
/// the shortest decimal that reads back as the same f32).
pub fn write_val_scores(
    path: &Path,
    images: &[PathBuf],
    classes: &[String],
    targets: &Tensor,
    probs: &Tensor,
) -> Result<()> {
    let header: Vec<String> = std::iter::once("path".to_owned())
        .chain(classes.iter().map(|c| format!("true:{c}")))
        .chain(classes.iter().map(|c| format!("score:{c}")))
        .collect();
    let mut text = csv_row(&header);
    let (truth, scores) = (matrix(targets), matrix(probs));
    for ((image, truth), scores) in images.iter().zip(&truth).zip(&scores) {
        let cells: Vec<String> = std::iter::once(image.display().to_string())
            .chain(truth.iter().map(|&y| if y > 0.5 { "1" } else { "0" }.to_owned()))
            .chain(scores.iter().map(|&p| format!("{}", p as f32)))
            .collect();
        text += &csv_row(&cells);
    }
    write_atomically(path, text.as_bytes())
}

/// One CSV line, fields quoted where they hold a comma, quote or line break.
fn csv_row(fields: &[String]) -> String {
    let quoted: Vec<String> = fields
        .iter()
        .map(|f| match f.contains([',', '"', '\n', '\r']) {
            true => format!("\"{}\"", f.replace('"', "\"\"")),
            false => f.clone(),
        })
        .collect();
    quoted.join(",") + "\n"
}

/// One `multilabel_metrics.csv` row.
#[derive(Debug, Clone)]
pub struct EpochRow {
    pub epoch: usize,
    /// `val`, or `val_ema` for the moving average's weights.
    pub phase: &'static str,
    pub loss: f64,
    pub map: f64,
    pub macro_f1: f64,
    pub micro_f1: f64,
    pub exact_match: f64,
}

/// Writes the rows of a multi-label run's epochs to `path`.
pub fn write_epochs(path: &Path, rows: &[EpochRow]) -> Result<()> {
    let mut text = String::from("epoch,phase,loss,map,macro_f1,micro_f1,exact_match\n");
    for r in rows {
        text += &format!(
            "{},{},{:.6},{:.6},{:.6},{:.6},{:.6}\n",
            r.epoch, r.phase, r.loss, r.map, r.macro_f1, r.micro_f1, r.exact_match
        );
    }
    write_atomically(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn average_precision_is_sklearns_step_wise_sum() {
        // sklearn: average_precision_score([1, 0, 1, 0, 1], [.9, .8, .7, .6, .5]) = (1 + 2/3 + 3/5) / 3
        let ap = average_precision(&[0.9, 0.8, 0.7, 0.6, 0.5], &[true, false, true, false, true]);
        assert!((ap - (1.0 + 2.0 / 3.0 + 0.6) / 3.0).abs() < 1e-12, "{ap}");
        // Ties are one threshold: [1, 0] at equal scores gives precision 1/2 at recall 1.
        assert_eq!(average_precision(&[0.5, 0.5], &[true, false]), 0.5);
        assert_eq!(average_precision(&[0.3, 0.2], &[false, false]), 0.0);
    }

    #[test]
    fn f1_and_exact_match_follow_sklearn() {
        // The example checked with scikit-learn 1.9.1: mAP 2/3, macro F1 2/3, micro F1 1, exact match 1.
        let probs = Tensor::from_slice(&[0.9f32, 0.2, 0.1, 0.3, 0.8, 0.4, 0.6, 0.6, 0.2]).view([3, 3]);
        let targets = Tensor::from_slice(&[1f32, 0., 0., 0., 1., 0., 1., 1., 0.]).view([3, 3]);
        let classes: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let s = score(&probs, &targets, &classes, 0.5);
        assert!((s.map - 2.0 / 3.0).abs() < 1e-12 && (s.macro_f1 - 2.0 / 3.0).abs() < 1e-12, "{s:?}");
        assert_eq!((s.micro_f1, s.exact_match), (1.0, 1.0));
        assert_eq!(s.per_class[2].support, 0);
        let logits = Tensor::from_slice(&[2f32, -1.0, 0.5, 0.5]).view([2, 2]);
        let truth = Tensor::from_slice(&[1f32, 0., 1., 0.]).view([2, 2]);
        assert_eq!(exact_matches(&logits, &truth, 0.5), 1);
    }
}
