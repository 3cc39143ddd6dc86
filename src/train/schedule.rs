//! The learning rate of each epoch, or each batch: an optional linear
//! warm-up, then StepLR (the tutorial's) or cosine annealing, per epoch; or
//! torch's `OneCycleLR`, per batch.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SchedulerKind {
    /// StepLR: the rate times --gamma every --step-size epochs (the tutorial's).
    Step,
    /// Cosine annealing from --lr towards 0 over the run.
    Cosine,
    /// OneCycleLR per batch: from --lr/25 up to --lr over the first 30 % of the batches, then cosine down to --lr/25e4 (momentum stays --momentum).
    OneCycle,
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

/// torch's `OneCycleLR` defaults.
const ONE_CYCLE_PCT_START: f64 = 0.3;
const ONE_CYCLE_DIV: f64 = 25.0;
const ONE_CYCLE_FINAL_DIV: f64 = 1e4;

impl Schedule {
    /// The rate of `epoch` (0-based): that of its first batch. Warm-up
    /// epochs rise linearly to the base rate (`base·(e+1)/(W+1)`); the
    /// schedule then counts its epochs from the end of the warm-up.
    pub fn lr(&self, epoch: usize) -> f64 {
        self.lr_at(epoch, 0, 1)
    }

    /// The rate of batch `batch` (0-based) of the `batches` in `epoch`:
    /// the epoch's, except under one-cycle, which moves every batch.
    pub fn lr_at(&self, epoch: usize, batch: usize, batches: usize) -> f64 {
        let warmup = self.warmup_epochs;
        if epoch < warmup {
            return self.base_lr * (epoch + 1) as f64 / (warmup + 1) as f64;
        }
        let e = epoch - warmup;
        let span = self.epochs.saturating_sub(warmup).max(1);
        match self.kind {
            SchedulerKind::Step => step_lr(self.base_lr, self.step_size, self.gamma, e),
            // torch's CosineAnnealingLR with T_max = the epochs after warm-up, eta_min 0.
            SchedulerKind::Cosine => cosine_between(self.base_lr, 0.0, e as f64 / span as f64),
            SchedulerKind::OneCycle => {
                let batches = batches.max(1);
                one_cycle_lr(self.base_lr, e * batches + batch.min(batches - 1), span * batches)
            }
        }
    }
}

/// From `start` at `pct` 0 to `end` at 1 along half a cosine.
fn cosine_between(start: f64, end: f64, pct: f64) -> f64 {
    end + (start - end) / 2.0 * (1.0 + (std::f64::consts::PI * pct).cos())
}

/// torch's `OneCycleLR(max_lr, total_steps)` rate at step `step` (two
/// phases, cosine annealing, its default divisions).
fn one_cycle_lr(max_lr: f64, step: usize, total_steps: usize) -> f64 {
    let initial = max_lr / ONE_CYCLE_DIV;
    let last = initial / ONE_CYCLE_FINAL_DIV;
    let peak_step = ONE_CYCLE_PCT_START * total_steps as f64 - 1.0;
    let end_step = total_steps as f64 - 1.0;
    let step = step as f64;
    if step <= peak_step {
        cosine_between(initial, max_lr, step / peak_step)
    } else {
        cosine_between(max_lr, last, (step - peak_step) / (end_step - peak_step))
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

    #[test]
    fn one_cycle_matches_torchs_one_cycle_lr_batch_by_batch() {
        // torch.optim.lr_scheduler.OneCycleLR(SGD(lr=0.1), max_lr=0.1, total_steps=20),
        // cycle_momentum=False: its lr before each of the 20 steps (printed by torch 2.11):
        let torch = [
            0.0040000000000000036,
            0.013167184270002533,
            0.037167184270002526,
            0.06683281572999747,
            0.09083281572999748,
            0.1,
            0.09874640062350874,
            0.09504846320134738,
            0.089091617757105,
            0.0811745653949763,
            0.07169430017913009,
            0.06112620219362893,
            0.0500002,
            0.03887419780637107,
            0.028306099820869922,
            0.0188258346050237,
            0.010908782242895003,
            0.004951936798652629,
            0.0012539993764912555,
            4e-07,
        ];
        let s = Schedule { base_lr: 0.1, ..schedule(SchedulerKind::OneCycle, 0) };
        let s = Schedule { epochs: 4, ..s };
        for (step, expected) in torch.iter().enumerate() {
            let lr = s.lr_at(step / 5, step % 5, 5);
            assert!((lr - expected).abs() < 1e-9, "step {step}: {lr} against torch's {expected}");
        }
    }
}
