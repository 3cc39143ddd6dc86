//! What the grid-reading captioning networks ([`super::attend`],
//! [`super::transformer`]) hold alike besides their layers: the per-channel
//! standardization of the image features, saved with the weights, and the
//! dropout rate [`super::decoder::Captioner::set_dropout`] sets. No layer
//! and no gradient lives here.

use std::sync::atomic::{AtomicU64, Ordering};
use tch::{nn, Kind, Tensor};

/// Images per chunk when the per-channel statistics are computed (a grid
/// set in f32 at once would take gigabytes).
const STATISTICS_CHUNK: i64 = 256;

/// `(f − mean) / std` per channel (the last dimension): the identity until
/// [`FeatureScaler::fit`]. Its tensors are the network's `feature_mean` and
/// `feature_std`, saved with the weights, not trained.
pub struct FeatureScaler {
    mean: Tensor,
    std: Tensor,
}

impl FeatureScaler {
    pub fn new(p: &nn::Path, channels: i64) -> Self {
        Self { mean: p.zeros_no_train("feature_mean", &[channels]), std: p.ones_no_train("feature_std", &[channels]) }
    }

    /// `features` standardized, in the scaler's kind.
    pub fn apply(&self, features: &Tensor) -> Tensor {
        (features.to_kind(self.mean.kind()) - &self.mean) / &self.std
    }

    /// Takes the mean and deviation of `train_features` from now on;
    /// channels that never vary are only centred.
    pub fn fit(&mut self, train_features: &Tensor) {
        let (mean, std) = channel_statistics(train_features);
        let std = std.where_self(&std.gt(1e-6), &std.ones_like());
        let (kind, device) = (self.mean.kind(), self.mean.device());
        tch::no_grad(|| {
            self.mean.copy_(&mean.to_kind(kind).to_device(device));
            self.std.copy_(&std.to_kind(kind).to_device(device));
        });
    }
}

/// Per-channel mean and (population) deviation of `features` `[N, …, C]`,
/// summed in f64 over chunks of images so that a large grid is never
/// copied whole.
fn channel_statistics(features: &Tensor) -> (Tensor, Tensor) {
    let channels = *features.size().last().expect("features with a channel dimension");
    let images = features.size()[0];
    let options = (Kind::Double, features.device());
    let (mut sum, mut squares) = (Tensor::zeros([channels], options), Tensor::zeros([channels], options));
    for start in (0..images).step_by(STATISTICS_CHUNK as usize) {
        let chunk = features.narrow(0, start, STATISTICS_CHUNK.min(images - start)).to_kind(Kind::Double);
        let rows = chunk.reshape([-1, channels]);
        sum += rows.sum_dim_intlist([0i64].as_slice(), false, Kind::Double);
        squares += rows.square().sum_dim_intlist([0i64].as_slice(), false, Kind::Double);
    }
    let count = (features.numel() as i64 / channels.max(1)).max(1) as f64;
    let mean = sum / count;
    let variance = (squares / count - mean.square()).clamp_min(0.0);
    (mean, variance.sqrt())
}

/// The dropout rate of the passes that follow: 0 unless a training step set
/// it (shared by `&self` methods, hence atomic).
pub struct DropoutRate(AtomicU64);

impl Default for DropoutRate {
    fn default() -> Self {
        Self(AtomicU64::new(0f64.to_bits()))
    }
}

impl DropoutRate {
    pub fn set(&self, rate: f64) {
        assert!((0.0..1.0).contains(&rate), "a dropout rate in [0, 1), not {rate}");
        self.0.store(rate.to_bits(), Ordering::Relaxed);
    }

    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}
