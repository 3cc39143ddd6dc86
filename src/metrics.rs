//! Per-epoch loss and accuracy rows, best-epoch tracking, and the file that
//! records them (`metrics.csv`). Training fills them, reports draw them;
//! [`mean_std`] sums up one metric over several runs; [`confusion`] scores
//! predictions (macro-F1, balanced accuracy) from a confusion matrix.

pub mod confusion;

use crate::persist::write_atomically;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EpochRow {
    pub epoch: usize,
    pub phase: String,
    pub loss: f64,
    pub acc: f64,
    pub seconds: f64,
    /// Of `seconds`, the time spent waiting for or augmenting batches (train phases).
    #[serde(default)]
    pub data_wait_seconds: f64,
    /// The learning rate of the epoch.
    #[serde(default)]
    pub lr: f64,
    /// Macro-F1 and balanced accuracy of the phase's predictions (val
    /// phases; none for train phases and rows saved before them).
    #[serde(default)]
    pub macro_f1: Option<f64>,
    #[serde(default)]
    pub balanced_acc: Option<f64>,
}

/// Running sums over one phase of one epoch.
#[derive(Debug, Default)]
pub struct PhaseTotals {
    pub loss_sum: f64,
    pub correct: i64,
    pub count: i64,
    pub data_wait_seconds: f64,
}

impl PhaseTotals {
    /// Adds a batch: its mean loss and its number of correct predictions.
    pub fn add(&mut self, mean_loss: f64, correct: i64, batch: i64) {
        self.loss_sum += mean_loss * batch as f64;
        self.correct += correct;
        self.count += batch;
    }
    pub fn loss(&self) -> f64 {
        self.loss_sum / self.count.max(1) as f64
    }
    pub fn acc(&self) -> f64 {
        self.correct as f64 / self.count.max(1) as f64
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct History {
    pub rows: Vec<EpochRow>,
}

impl History {
    pub fn push(&mut self, row: EpochRow) {
        self.rows.push(row);
    }

    pub fn phase(&self, phase: &str) -> Vec<&EpochRow> {
        self.rows.iter().filter(|r| r.phase == phase).collect()
    }

    /// The epoch with the highest val accuracy (the first one on ties, as
    /// the tutorial keeps a model only when accuracy strictly improves).
    pub fn best_val(&self) -> Option<&EpochRow> {
        self.phase("val").into_iter().fold(None, |best: Option<&EpochRow>, r| match best {
            Some(b) if b.acc >= r.acc => Some(b),
            _ => Some(r),
        })
    }

    pub fn write_csv(&self, path: &Path) -> Result<()> {
        let mut text = String::from("epoch,phase,loss,acc,lr,seconds,data_wait_seconds,macro_f1,balanced_acc\n");
        let cell = |value: Option<f64>| value.map_or(String::new(), |v| format!("{v:.6}"));
        for r in &self.rows {
            let (epoch, phase, loss, acc, lr, seconds, wait) =
                (r.epoch, &r.phase, r.loss, r.acc, r.lr, r.seconds, r.data_wait_seconds);
            let (f1, balanced) = (cell(r.macro_f1), cell(r.balanced_acc));
            text += &format!("{epoch},{phase},{loss:.6},{acc:.6},{lr:e},{seconds:.3},{wait:.3},{f1},{balanced}\n");
        }
        write_atomically(path, text.as_bytes())
    }
}

/// Mean and sample standard deviation (0 for fewer than two values).
pub fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n.max(1.0);
    if values.len() < 2 {
        return (mean, 0.0);
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// `40m 49s`, as the tutorial prints elapsed time.
pub fn format_minutes(seconds: f64) -> String {
    let s = seconds.round() as u64;
    format!("{}m {}s", s / 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_val_keeps_the_first_of_equal_accuracies() {
        let mut h = History::default();
        for (epoch, acc) in [(0, 0.9), (1, 0.95), (2, 0.95), (3, 0.93)] {
            h.push(EpochRow {
                epoch,
                phase: "val".into(),
                loss: 0.1,
                acc,
                seconds: 1.0,
                data_wait_seconds: 0.0,
                lr: 0.001,
                macro_f1: None,
                balanced_acc: None,
            });
        }
        assert_eq!(h.best_val().unwrap().epoch, 1);
    }

    #[test]
    fn minutes_format_matches_the_reference() {
        assert_eq!(format_minutes(2449.0), "40m 49s");
        assert_eq!(format_minutes(59.6), "1m 0s");
    }
}
