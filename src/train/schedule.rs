//! The learning rate of each epoch: an optional linear warm-up, then StepLR
//! (the tutorial's) or cosine annealing.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SchedulerKind {
    /// StepLR: the rate times --gamma every --step-size epochs (the tutorial's).
    Step,
    /// Cosine annealing from --lr towards 0 over the run.
    Cosine,
}

#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub base_lr: f64,
    pub kind: SchedulerKind,
    pub step_size: usize,
    pub gamma: f64,
    pub warmup_epochs: usize,
    pub epochs: usize,
}

impl Schedule {
    /// The rate of `epoch` (0-based). Warm-up epochs rise linearly to the
    /// base rate (`base·(e+1)/(W+1)`); the schedule then counts its epochs
    /// from the end of the warm-up.
    pub fn lr(&self, epoch: usize) -> f64 {
        let warmup = self.warmup_epochs;
        if epoch < warmup {
            return self.base_lr * (epoch + 1) as f64 / (warmup + 1) as f64;
        }
        let e = epoch - warmup;
        match self.kind {
            SchedulerKind::Step => step_lr(self.base_lr, self.step_size, self.gamma, e),
            SchedulerKind::Cosine => {
                // torch's CosineAnnealingLR with T_max = the epochs after warm-up, eta_min 0.
                let span = self.epochs.saturating_sub(warmup).max(1) as f64;
                0.5 * self.base_lr * (1.0 + (std::f64::consts::PI * e as f64 / span).cos())
            }
        }
    }
}

/// `StepLR`: the learning rate of epoch `epoch` (0-based).
pub fn step_lr(base_lr: f64, step_size: usize, gamma: f64, epoch: usize) -> f64 {
    base_lr * gamma.powi((epoch / step_size.max(1)) as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(kind: SchedulerKind, warmup_epochs: usize) -> Schedule {
        Schedule { base_lr: 0.001, kind, step_size: 7, gamma: 0.1, warmup_epochs, epochs: 25 }
    }

    #[test]
    fn step_lr_matches_the_tutorial_schedule() {
        let s = schedule(SchedulerKind::Step, 0);
        assert_eq!(s.lr(0), 0.001);
        assert_eq!(s.lr(6), 0.001);
        assert!((s.lr(7) - 0.0001).abs() < 1e-12);
        assert!((s.lr(24) - 0.000001).abs() < 1e-15);
    }

    #[test]
    fn cosine_falls_from_the_base_rate_after_the_warm_up() {
        let s = schedule(SchedulerKind::Cosine, 4);
        assert!((s.lr(0) - 0.0002).abs() < 1e-15);
        assert!((s.lr(3) - 0.0008).abs() < 1e-15);
        assert_eq!(s.lr(4), 0.001);
        // Half-way through the 21 cosine epochs: cos(π·10.5/21) = 0.
        let halfway = 0.5 * 0.001 * (1.0 + (std::f64::consts::PI * 10.0 / 21.0).cos());
        assert!((s.lr(14) - halfway).abs() < 1e-15);
        assert!(s.lr(24) < 0.00001 && s.lr(24) > 0.0);
    }
}
