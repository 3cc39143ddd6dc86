//! Paired comparisons between a report's configurations: two configurations
//! are compared where they were scored on the same images. Their done runs
//! are paired by fold and seed (the first unpaired run of the other
//! configuration with the same ones), and a pair counts when both runs
//! validated on the same images (the paths of their `val_predictions.csv`,
//! [`crate::finetune::outcomes`]). Each image of every pair is one paired
//! outcome; pooled, they give McNemar's exact test and a paired bootstrap
//! interval of the accuracy difference ([`crate::stats`]). Reads nothing
//! itself: the report hands it the runs' outcomes.

use crate::finetune::outcomes::ImageOutcome;
use crate::stats::{self, Interval};

/// Bootstrap resamples of each comparison.
pub const RESAMPLES: usize = 10_000;
/// The bootstrap's seed: the same runs give the same interval.
pub const BOOTSTRAP_SEED: u64 = 0;
/// The level a difference is called significant at.
pub const ALPHA: f64 = 0.05;

/// A done run of a configuration, as pairing sees it.
#[derive(Debug, Clone)]
pub struct PairableRun {
    /// The fold (`—` for none) and seed the run ran, as option texts.
    pub fold: String,
    pub seed: String,
    /// Its outcome on each val image, in path order.
    pub outcomes: Vec<ImageOutcome>,
}

/// Two configurations compared on their paired outcomes.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// The configurations' indices (first < second).
    pub first: usize,
    pub second: usize,
    /// Pairs of runs, and images over them.
    pub run_pairs: usize,
    pub images: usize,
    pub first_acc: f64,
    pub second_acc: f64,
    /// Images only the first got right (McNemar's b), only the second (c).
    pub only_first: u64,
    pub only_second: u64,
    pub p_value: f64,
    /// 95 % interval of `first_acc − second_acc`.
    pub interval: Interval,
}

impl Comparison {
    pub fn significant(&self) -> bool {
        self.p_value < ALPHA
    }
}

/// Every two configurations (`runs[c]`: the done runs of configuration `c`)
/// that have paired outcomes, compared; in configuration order.
pub fn compare_all(runs: &[Vec<PairableRun>]) -> Vec<Comparison> {
    let mut comparisons = Vec::new();
    for first in 0..runs.len() {
        for second in first + 1..runs.len() {
            comparisons.extend(compare(&runs[first], &runs[second]).map(|mut c| {
                (c.first, c.second) = (first, second);
                c
            }));
        }
    }
    comparisons
}

/// The comparison of two configurations' runs, if any pair.
fn compare(first: &[PairableRun], second: &[PairableRun]) -> Option<Comparison> {
    let (mut first_correct, mut second_correct) = (Vec::new(), Vec::new());
    let mut taken = vec![false; second.len()];
    let mut run_pairs = 0;
    for run in first {
        let same_images = |other: &PairableRun| {
            other.fold == run.fold
                && other.seed == run.seed
                && other.outcomes.len() == run.outcomes.len()
                && other.outcomes.iter().zip(&run.outcomes).all(|(a, b)| a.path == b.path)
        };
        let Some(partner) = (0..second.len()).find(|&i| !taken[i] && same_images(&second[i])) else { continue };
        taken[partner] = true;
        run_pairs += 1;
        first_correct.extend(run.outcomes.iter().map(|o| o.correct));
        second_correct.extend(second[partner].outcomes.iter().map(|o| o.correct));
    }
    let interval = stats::paired_bootstrap(&first_correct, &second_correct, RESAMPLES, BOOTSTRAP_SEED, 0.95)?;
    let count = |pick: &dyn Fn(bool, bool) -> bool| {
        first_correct.iter().zip(&second_correct).filter(|&(&a, &b)| pick(a, b)).count() as u64
    };
    let (only_first, only_second) = (count(&|a, b| a && !b), count(&|a, b| !a && b));
    let images = first_correct.len();
    let accuracy = |correct: &[bool]| correct.iter().filter(|&&c| c).count() as f64 / images as f64;
    Some(Comparison {
        first: 0,
        second: 0,
        run_pairs,
        images,
        first_acc: accuracy(&first_correct),
        second_acc: accuracy(&second_correct),
        only_first,
        only_second,
        p_value: stats::mcnemar_exact(only_first, only_second),
        interval,
    })
}

/// A p-value as people read it: four decimals, or two significant digits
/// in scientific notation below 0.001.
pub fn p_text(p: f64) -> String {
    if p < 1e-3 {
        format!("{p:.1e}")
    } else {
        format!("{p:.4}")
    }
}

/// The Markdown section of `comparisons` between configurations named
/// `labels`: a table, then one sentence per comparison saying whether the
/// difference is significant at [`ALPHA`]. `unpaired`: done runs without
/// per-image outcomes.
pub fn markdown(comparisons: &[Comparison], labels: &[String], unpaired: usize) -> String {
    let mut text = String::from("\n## Paired comparisons\n\n");
    if comparisons.is_empty() {
        text += "No two configurations were scored on the same images (done runs of the same fold and seed \
                 whose val_predictions.csv list the same images).\n";
    } else {
        text += &format!(
            "Runs of two configurations are paired by fold and seed, and their val images by path; each \
             image of each run pair is one paired outcome (an image validated under several seeds counts once \
             per seed, and those outcomes are not independent: p is then optimistic). b: images only A got \
             right, c: only B. McNemar: exact two-sided test on b and c. 95 % CI: paired bootstrap of A − B \
             over the paired outcomes ({RESAMPLES} resamples, seed {BOOTSTRAP_SEED}, percentile interval). \
             No correction for multiple comparisons.\n\n"
        );
        text += "| A | B | run pairs | images | acc A | acc B | A − B | 95 % CI | b | c | McNemar p |\n";
        text += "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n";
        for c in comparisons {
            text += &format!(
                "| {} | {} | {} | {} | {:.4} | {:.4} | {:+.4} | {:+.4} to {:+.4} | {} | {} | {} |\n",
                labels[c.first].replace('|', "\\|"),
                labels[c.second].replace('|', "\\|"),
                c.run_pairs,
                c.images,
                c.first_acc,
                c.second_acc,
                c.first_acc - c.second_acc,
                c.interval.low,
                c.interval.high,
                c.only_first,
                c.only_second,
                p_text(c.p_value)
            );
        }
        text += "\n";
        for c in comparisons {
            text += &format!("- {}\n", verdict(c, labels));
        }
    }
    if unpaired > 0 {
        text += &format!(
            "\n{unpaired} done run(s) have no val_predictions.csv (runs before it was written) and are not paired.\n"
        );
    }
    text
}

/// One sentence on a comparison.
fn verdict(c: &Comparison, labels: &[String]) -> String {
    let (a, b) = (&labels[c.first], &labels[c.second]);
    let points = |x: f64| format!("{:+.1}", 100.0 * x);
    let evidence = format!(
        "{} points, 95 % CI {} to {}, McNemar p = {}, b = {}, c = {} over {} images",
        points(c.first_acc - c.second_acc),
        points(c.interval.low),
        points(c.interval.high),
        p_text(c.p_value),
        c.only_first,
        c.only_second,
        c.images
    );
    if !c.significant() {
        return format!("`{a}` vs `{b}`: no significant difference at {ALPHA} ({evidence}).");
    }
    let (better, worse) = if c.first_acc >= c.second_acc { (a, b) } else { (b, a) };
    format!("`{a}` vs `{b}`: `{better}` is more accurate than `{worse}`, significant at {ALPHA} ({evidence}).")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(fold: &str, seed: &str, correct: &[bool]) -> PairableRun {
        let outcomes = correct
            .iter()
            .enumerate()
            .map(|(i, &correct)| ImageOutcome {
                path: format!("fold{fold}/{i}.jpg"),
                label: "ants".into(),
                predicted: if correct { "ants" } else { "bees" }.into(),
                probability: 0.9,
                correct,
            })
            .collect();
        PairableRun { fold: fold.into(), seed: seed.into(), outcomes }
    }

    #[test]
    fn runs_pair_by_fold_seed_and_images_and_pool_their_outcomes() {
        let a = vec![run("0", "0", &[true; 10]), run("1", "0", &[true, true, false]), run("2", "0", &[true])];
        let mut other_images = run("2", "0", &[false]);
        other_images.outcomes[0].path = "elsewhere.jpg".into();
        let b = vec![run("1", "0", &[false, true, true]), run("0", "0", &[false; 10]), other_images];
        let comparisons = compare_all(&[a, b, vec![run("0", "1", &[true; 10])]]);
        assert_eq!(comparisons.len(), 1, "the third configuration ran another seed");
        let c = &comparisons[0];
        assert_eq!((c.first, c.second, c.run_pairs, c.images), (0, 1, 2, 13));
        assert_eq!((c.only_first, c.only_second), (11, 1));
        assert!((c.first_acc - 12.0 / 13.0).abs() < 1e-15 && (c.second_acc - 2.0 / 13.0).abs() < 1e-15);
        assert_eq!(c.p_value, stats::mcnemar_exact(11, 1));
        assert!(c.significant() && c.interval.low > 0.0 && c.interval.high <= 1.0);
        let labels = ["lr=0.01".to_owned(), "lr=0.1".to_owned(), "lr=1".to_owned()];
        let text = markdown(&comparisons, &labels, 1);
        assert!(
            text.contains(
                "- `lr=0.01` vs `lr=0.1`: `lr=0.01` is more accurate than `lr=0.1`, significant at 0.05 (+76.9 points"
            ),
            "{text}"
        );
        assert!(text.contains("1 done run(s) have no val_predictions.csv"), "{text}");
    }
}
