//! Which training samples an epoch visits, in what order (`--sampler`):
//! each once in a shuffled order (torch's `RandomSampler`), or as many
//! draws with replacement, each class equally likely (torch's
//! `WeightedRandomSampler` with weight 1/count of its class per sample,
//! `num_samples` the split's size). The draws come from the RNG the
//! caller seeds (the epoch plan's, from seed and epoch); a data-parallel
//! run shards the drawn order as `DistributedSampler` shards indices
//! (`super::loader::rank_share`).

use rand::distributions::{Distribution, WeightedIndex};
use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Sampler {
    /// Every training image once per epoch, in a shuffled order.
    #[default]
    Shuffle,
    /// As many draws with replacement as the split has images, each class equally likely.
    Balanced,
}

impl Sampler {
    /// The epoch's sample positions for samples labelled `labels`, drawn from `rng`.
    pub fn order(self, labels: &[i64], rng: &mut impl Rng) -> Vec<usize> {
        match self {
            Sampler::Shuffle => {
                let mut order: Vec<usize> = (0..labels.len()).collect();
                order.shuffle(rng);
                order
            }
            Sampler::Balanced => {
                let weights = inverse_class_frequencies(labels);
                let Ok(draw) = WeightedIndex::new(&weights) else { return Vec::new() };
                (0..labels.len()).map(|_| draw.sample(rng)).collect()
            }
        }
    }
}

/// Each sample's weight: 1 / the number of samples of its class.
pub fn inverse_class_frequencies(labels: &[i64]) -> Vec<f64> {
    let classes = labels.iter().copied().max().map_or(0, |max| max as usize + 1);
    let mut counts = vec![0usize; classes];
    labels.iter().for_each(|&label| counts[label as usize] += 1);
    labels.iter().map(|&label| 1.0 / counts[label as usize] as f64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn the_shuffle_visits_every_sample_once() {
        let labels = [0, 0, 0, 1];
        let mut order = Sampler::Shuffle.order(&labels, &mut ChaCha8Rng::seed_from_u64(3));
        order.sort();
        assert_eq!(order, [0, 1, 2, 3]);
    }

    #[test]
    fn balanced_draws_give_each_class_about_the_same_share() {
        // 90 of class 0, 10 of class 1: 1000 epochs' draws of 100.
        let labels: Vec<i64> = (0..100).map(|i| i64::from(i >= 90)).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let ones: usize = (0..1000)
            .map(|_| Sampler::Balanced.order(&labels, &mut rng).iter().filter(|&&i| labels[i] == 1).count())
            .sum();
        // Binomial(100 000, 1/2): standard deviation 158; the shuffle gives 10 000.
        assert!((ones as f64 - 50_000.0).abs() < 800.0, "{ones}");
        assert_eq!(inverse_class_frequencies(&[0, 1, 1, 2]), [1.0, 0.5, 0.5, 1.0]);
    }
}
