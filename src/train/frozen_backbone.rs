//! Passes through the frozen, eval-mode backbone: the feature-extract epoch's
//! augmented images, fixed image sets (val, `--cache-features`), and class
//! probabilities for evaluation and prediction. On the CPU they run in lanes
//! (`crate::accel::eval_lanes`) over the model's read-only [`FrozenView`]; on CUDA
//! in large batches.

use super::amp::Autocast;
use super::augmented_batches::for_each_augmented_batch;
use crate::accel::eval_lanes::{lane_count, map_in_lanes};
use crate::data::loader::{DecodedSplit, EpochPlan};
use crate::data::transforms::Normalization;
use crate::interrupt::Interrupt;
use crate::models::{Classifier, FrozenView};
use crate::report::Reporter;
use anyhow::Result;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// How frozen passes run: the input normalization the weights expect, the
/// device, and the autocast they run under (`--amp`, `--precision bf16`).
#[derive(Debug, Clone, Copy)]
pub struct FrozenPass {
    pub normalization: Normalization,
    pub device: Device,
    pub autocast: Autocast,
}

impl FrozenPass {
    /// Fp32 features of `[N, 3, H, W]` images in [0, 1].
    fn features(&self, model: &FrozenView, images: &Tensor) -> Tensor {
        self.autocast.run(|| model.features(&self.normalization.apply(images)))
    }
}

/// Frozen-backbone features of the epoch's augmented train images, in plan
/// order, and the seconds of the pass spent waiting for or augmenting
/// batches (a bar from `reporter` counts them). Returns early, with partial
/// features, when `interrupt` is set.
pub fn augmented_features(
    model: &Classifier,
    plan: &EpochPlan,
    split: &DecodedSplit,
    pass: FrozenPass,
    interrupt: &Interrupt,
    reporter: &dyn Reporter,
) -> Result<(Tensor, f64)> {
    let view = model.frozen();
    let batch_images = frozen_batch(pass.device);
    let lanes = lane_count(pass.device);
    let bar = reporter.bar(plan.num_batches(batch_images) as u64, "train features");
    let features_of = |view: &FrozenView, images: &Tensor| {
        let features = pass.features(view, images);
        bar.inc(1);
        features
    };
    if lanes == 1 {
        // CUDA: a producer thread augments the next batches into pinned
        // memory while the GPU works on this one.
        let mut features = Vec::new();
        let waited = for_each_augmented_batch(plan, split, batch_images, pass.device, |_, images, _| {
            features.push(features_of(&view, &images));
            Ok(())
        })?;
        bar.finish_and_clear();
        return Ok((Tensor::cat(&features, 0), waited));
    }
    // CPU: each lane augments its own batches and runs the backbone on them.
    let augment_nanos = AtomicU64::new(0);
    let batches: Vec<usize> = (0..plan.num_batches(batch_images)).collect();
    let feature_count = view.arch().feature_count();
    let features = map_in_lanes(&view, batches, lanes, |view, b| {
        if interrupt.requested() {
            return Tensor::zeros([0, feature_count], (Kind::Float, pass.device));
        }
        let start = Instant::now();
        let (images, _) = plan.batch_here(split, batch_images, b);
        augment_nanos.fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
        features_of(view, &images)
    });
    bar.finish_and_clear();
    let data_seconds = augment_nanos.into_inner() as f64 / 1e9 / lanes as f64;
    Ok((Tensor::cat(&features, 0), data_seconds))
}

/// Images per frozen-backbone (eval-mode) pass: on CPU, small batches in
/// channels-last layout are fastest (`cargo run --release --example
/// bench_forward`); a GPU wants large ones.
pub fn frozen_batch(device: Device) -> usize {
    if device.is_cuda() {
        64
    } else {
        4
    }
}

/// Frozen-backbone features of `[N, 3, H, W]` images in [0, 1], counted by
/// `reporter`'s bar `label`.
pub fn backbone_features(
    model: &Classifier,
    images: &Tensor,
    pass: FrozenPass,
    label: &str,
    reporter: &dyn Reporter,
) -> Tensor {
    let view = model.frozen();
    let n = images.size()[0];
    let batch = frozen_batch(pass.device) as i64;
    let bar = reporter.bar(((n + batch - 1) / batch) as u64, label);
    let batches: Vec<Tensor> = (0..n).step_by(batch as usize).map(|s| images.narrow(0, s, batch.min(n - s))).collect();
    let chunks = map_in_lanes(&view, batches, lane_count(pass.device), |view, images| {
        let features = pass.features(view, &images.to_device(pass.device));
        bar.inc(1);
        features
    });
    bar.finish_and_clear();
    Tensor::cat(&chunks, 0)
}

/// Class probabilities `[N, classes]` (on the CPU) from features.
pub fn head_probabilities(model: &Classifier, features: &Tensor) -> Tensor {
    model.frozen().probabilities(features).to_device(Device::Cpu)
}

/// Class probabilities `[N, classes]` (on the CPU) for images in [0, 1].
pub fn predict_probabilities(
    model: &Classifier,
    images: &Tensor,
    pass: FrozenPass,
    label: &str,
    reporter: &dyn Reporter,
) -> Tensor {
    head_probabilities(model, &backbone_features(model, images, pass, label, reporter))
}
