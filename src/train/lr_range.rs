//! The learning-rate range test's arithmetic (fastai's `lr_find`, after
//! Smith 2015): the rate of each step (exponential from `start` to `end`
//! over `steps`), the smoothed loss it records (an exponential moving
//! average with bias correction, β = 0.98), when it stops (the smoothed
//! loss above 4 × its lowest, or the steps done), and the two suggestions
//! fastai makes of the curve (`valley`, `steep`). It runs no step itself:
//! `crate::finetune::lr_find` trains and feeds it.

use serde::Serialize;

/// The sweep of rates: fastai's `start_lr`, `end_lr`, `num_it`, `stop_div`.
#[derive(Debug, Clone, Copy)]
pub struct RangeTest {
    pub start_lr: f64,
    pub end_lr: f64,
    pub steps: usize,
    /// Stop once the smoothed loss exceeds 4 × the lowest seen.
    pub stop_on_divergence: bool,
}

impl Default for RangeTest {
    fn default() -> Self {
        Self { start_lr: 1e-7, end_lr: 10.0, steps: 100, stop_on_divergence: true }
    }
}

impl RangeTest {
    /// An error naming the option at fault unless the sweep makes sense.
    pub fn check(&self) -> anyhow::Result<()> {
        if !(self.start_lr > 0.0 && self.start_lr.is_finite()) {
            anyhow::bail!("--start-lr {}: a rate above 0", self.start_lr);
        }
        if !(self.end_lr > self.start_lr && self.end_lr.is_finite()) {
            anyhow::bail!("--end-lr {}: a rate above --start-lr {}", self.end_lr, self.start_lr);
        }
        if self.steps < 7 {
            anyhow::bail!("--steps {}: at least 7 (the first tenth and the last 5 are not judged)", self.steps);
        }
        Ok(())
    }

    /// The rate of step `step` (from 0): `start · (end / start)^(step / steps)`.
    pub fn lr(&self, step: usize) -> f64 {
        self.start_lr * (self.end_lr / self.start_lr).powf(step as f64 / self.steps as f64)
    }
}

/// What the test recorded: each step's rate and smoothed loss.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RangeCurve {
    pub lrs: Vec<f64>,
    pub smoothed_losses: Vec<f64>,
    /// Why it ended early (`None`: all steps ran).
    pub stopped: Option<String>,
}

/// Whether the test goes on after a step.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    Step,
    Stop,
}

/// The running record of a test: feed it each step's loss.
pub struct RangeRecorder {
    test: RangeTest,
    average: f64,
    best: f64,
    pub curve: RangeCurve,
}

/// fastai's `AvgSmoothLoss` β.
const SMOOTHING: f64 = 0.98;

impl RangeRecorder {
    pub fn new(test: RangeTest) -> Self {
        Self { test, average: 0.0, best: f64::INFINITY, curve: RangeCurve::default() }
    }

    /// The rate the next step runs at.
    pub fn next_lr(&self) -> f64 {
        self.test.lr(self.curve.lrs.len())
    }

    /// Records the step just run at [`RangeRecorder::next_lr`] with `loss`.
    pub fn record(&mut self, loss: f64) -> Next {
        let lr = self.next_lr();
        let count = self.curve.lrs.len() as i32 + 1;
        self.average = SMOOTHING * self.average + (1.0 - SMOOTHING) * loss;
        let smoothed = self.average / (1.0 - SMOOTHING.powi(count));
        self.curve.lrs.push(lr);
        self.curve.smoothed_losses.push(smoothed);
        self.best = self.best.min(smoothed);
        if !smoothed.is_finite() {
            self.curve.stopped = Some(format!("the loss was not finite at lr {lr:.3e}"));
            return Next::Stop;
        }
        if self.test.stop_on_divergence && smoothed > 4.0 * self.best {
            self.curve.stopped = Some(format!("the smoothed loss diverged at lr {lr:.3e}"));
            return Next::Stop;
        }
        match self.curve.lrs.len() >= self.test.steps {
            true => Next::Stop,
            false => Next::Step,
        }
    }
}

/// The error a training phase ends with when the range test it ran has
/// its curve (see `GradientStep::with_range_test`): not a failure.
#[derive(Debug)]
pub struct RangeTestEnded;

impl std::fmt::Display for RangeTestEnded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the learning-rate range test ended")
    }
}

impl std::error::Error for RangeTestEnded {}

/// A suggested rate and the point of the curve it marks.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Suggestion {
    pub lr: f64,
    pub loss: f64,
}

/// fastai's two suggestions of a curve.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Suggestions {
    /// Halfway down the longest descending stretch (fastai's default).
    pub valley: Suggestion,
    /// Where the loss falls fastest per decade of rate.
    pub steep: Suggestion,
}

/// The suggestions fastai's `lr_find` makes of `curve`: the first tenth of
/// the planned steps and the last five points left out, and everything from
/// the first non-finite loss on; `None` when fewer than two points remain.
pub fn suggest(curve: &RangeCurve, planned_steps: usize) -> Option<Suggestions> {
    let end = curve.lrs.len().saturating_sub(5);
    let start = (planned_steps / 10).min(end);
    let mut lrs = &curve.lrs[start..end];
    let mut losses = &curve.smoothed_losses[start..end];
    if let Some(first_bad) = losses.iter().position(|l| l.is_nan()) {
        (lrs, losses) = (&lrs[..first_bad], &losses[..first_bad]);
    }
    (lrs.len() >= 2).then(|| Suggestions { valley: valley(lrs, losses), steep: steep(lrs, losses) })
}

/// fastai's `valley`: the longest run of decreasing losses (as the longest
/// decreasing subsequence ending at each point), and the point a third plus
/// a sixth (about half) of the way down it.
fn valley(lrs: &[f64], losses: &[f64]) -> Suggestion {
    let n = losses.len();
    let mut run = vec![1usize; n];
    let (mut max_start, mut max_end) = (0usize, 0usize);
    for i in 1..n {
        for j in 0..i {
            if losses[i] < losses[j] && run[i] < run[j] + 1 {
                run[i] = run[j] + 1;
            }
            if run[max_end] < run[i] {
                max_end = i;
                max_start = max_end - run[max_end];
            }
        }
    }
    let sections = (max_end - max_start) as f64 / 3.0;
    let index = max_start + sections as usize + (sections / 2.0) as usize;
    Suggestion { lr: lrs[index], loss: losses[index] }
}

/// fastai's `steep`: the point where the loss's slope against log(rate) is
/// most negative.
fn steep(lrs: &[f64], losses: &[f64]) -> Suggestion {
    let slope = |i: usize| (losses[i + 1] - losses[i]) / (lrs[i + 1].ln() - lrs[i].ln());
    let index = (0..lrs.len() - 1).fold(0, |best, i| if slope(i) < slope(best) { i } else { best });
    Suggestion { lr: lrs[index], loss: losses[index] }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_grow_exponentially_from_start_toward_end() {
        let test = RangeTest { start_lr: 1e-6, end_lr: 1.0, steps: 6, stop_on_divergence: true };
        let rates: Vec<f64> = (0..=6).map(|s| test.lr(s)).collect();
        let expected = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0];
        for (rate, want) in rates.iter().zip(expected) {
            assert!((rate / want - 1.0).abs() < 1e-12, "{rates:?}");
        }
    }

    #[test]
    fn the_smoothed_loss_is_debiased_and_divergence_stops_the_test() {
        let mut recorder = RangeRecorder::new(RangeTest { steps: 10, ..RangeTest::default() });
        assert_eq!(recorder.record(2.0), Next::Step);
        // The first smoothed value is the loss itself (bias correction).
        assert!((recorder.curve.smoothed_losses[0] - 2.0).abs() < 1e-12);
        assert_eq!(recorder.record(1.0), Next::Step);
        let expected = (0.98 * 0.02 * 2.0 + 0.02 * 1.0) / (1.0 - 0.98f64.powi(2));
        assert!((recorder.curve.smoothed_losses[1] - expected).abs() < 1e-12);
        assert_eq!(recorder.record(1e6), Next::Stop);
        assert!(recorder.curve.stopped.as_deref().unwrap().starts_with("the smoothed loss diverged at lr"));
    }

    #[test]
    fn the_test_stops_after_its_steps() {
        let mut recorder =
            RangeRecorder::new(RangeTest { steps: 3, stop_on_divergence: false, ..RangeTest::default() });
        let nexts: Vec<Next> = [1.0, 1e9, 1.0].iter().map(|&l| recorder.record(l)).collect();
        assert_eq!(nexts, [Next::Step, Next::Step, Next::Stop]);
        assert_eq!(recorder.curve.stopped, None);
        assert_eq!(recorder.curve.lrs.len(), 3);
    }

    /// fastai's rules worked by hand on a curve: flat at 3.0 (points 0–9),
    /// falling by 0.2 a point (10–19) but for a dip to 1.0 at 13, then
    /// rising. With 30 planned steps, points 3–24 are judged.
    #[test]
    fn suggestions_follow_fastai_on_a_known_curve() {
        let mut losses = vec![3.0; 10];
        losses.extend((1..=10).map(|i| 3.0 - 0.2 * i as f64));
        losses[13] = 1.0;
        losses.extend((1..=10).map(|i| 1.0 + 0.5 * i as f64));
        let curve = RangeCurve {
            lrs: (0..losses.len()).map(|i| 10f64.powf(-7.0 + 0.25 * i as f64)).collect(),
            smoothed_losses: losses.clone(),
            stopped: None,
        };
        let suggestions = suggest(&curve, 30).unwrap();
        // The longest strictly decreasing run ends at point 19 (1.0) and is 10
        // long (9, 10, 11, 12, 14, …, 19), so it starts at judged index 16 − 10 = 6;
        // the valley is index 6 + ⌊10/3⌋ + ⌊10/6⌋ = 10, point 13.
        assert_eq!(suggestions.valley, Suggestion { lr: curve.lrs[13], loss: 1.0 });
        // The steepest fall is 2.4 → 1.0, from point 12.
        assert_eq!(suggestions.steep, Suggestion { lr: curve.lrs[12], loss: losses[12] });
    }

    #[test]
    fn a_non_finite_loss_ends_the_test_and_says_so_even_without_the_divergence_rule() {
        let mut recorder = RangeRecorder::new(RangeTest { stop_on_divergence: false, ..RangeTest::default() });
        assert_eq!(recorder.record(1.0), Next::Step);
        assert_eq!(recorder.record(f64::NAN), Next::Stop);
        assert!(recorder.curve.stopped.as_deref().unwrap().starts_with("the loss was not finite at lr"));
    }

    #[test]
    fn too_short_a_curve_has_no_suggestion() {
        let curve = RangeCurve { lrs: vec![1e-3; 6], smoothed_losses: vec![1.0; 6], stopped: None };
        assert!(suggest(&curve, 100).is_none());
    }
}
