//! Passes through the frozen, eval-mode backbone: the feature-extract epoch's
//! augmented images, fixed image sets (val, `--cache-features`), and class
//! probabilities for evaluation and prediction. On the CPU they run in lanes
//! ([`super::lanes`]); on CUDA in large batches.

use super::amp;
use super::feed::for_each_augmented_batch;
use super::finetune::STOP_REQUESTED;
use super::lanes::{lane_count, map_in_lanes};
use crate::data::loader::{DecodedSplit, EpochPlan};
use crate::data::transforms::Normalization;
use crate::models::Classifier;
use crate::report::progress;
use anyhow::Result;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// How frozen passes run: the input normalization the weights expect, the
/// device, and whether in mixed precision (`--amp`, CUDA).
#[derive(Debug, Clone, Copy)]
pub struct FrozenPass {
    pub normalization: Normalization,
    pub device: Device,
    pub amp: bool,
}

/// Frozen-backbone features of the epoch's augmented train images, in plan
/// order, and the seconds of the pass spent waiting for or augmenting
/// batches. Returns early, with partial features, on Ctrl-C.
pub fn augmented_features(
    model: &Classifier,
    plan: &EpochPlan,
    split: &DecodedSplit,
    pass: FrozenPass,
) -> Result<(Tensor, f64)> {
    let FrozenPass { normalization, device, amp } = pass;
    let batch_images = frozen_batch(device);
    let lanes = lane_count(device);
    let bar = progress::bar(plan.num_batches(batch_images) as u64, "train features");
    let features_of = |model: &Classifier, images: &Tensor| {
        let features = frozen_features(model, &normalization.apply(images), amp);
        bar.inc(1);
        features
    };
    if lanes == 1 {
        // CUDA: a producer thread augments the next batches into pinned
        // memory while the GPU works on this one.
        let mut features = Vec::new();
        let waited = for_each_augmented_batch(plan, split, batch_images, device, |_, images, _| {
            features.push(features_of(model, &images));
            Ok(())
        })?;
        bar.finish_and_clear();
        return Ok((Tensor::cat(&features, 0), waited));
    }
    // CPU: each lane augments its own batches and runs the backbone on them.
    let augment_nanos = AtomicU64::new(0);
    let batches: Vec<usize> = (0..plan.num_batches(batch_images)).collect();
    let features = map_in_lanes(model, batches, lanes, |model, b| {
        if STOP_REQUESTED.load(Ordering::SeqCst) {
            return Tensor::zeros([0, model.arch.feature_count()], (Kind::Float, device));
        }
        let start = Instant::now();
        let (images, _) = plan.batch_here(split, batch_images, b);
        augment_nanos.fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
        features_of(model, &images)
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

/// Eval-mode backbone features in fp32, without autograd.
fn frozen_features(model: &Classifier, images: &Tensor, amp: bool) -> Tensor {
    tch::no_grad(|| amp::autocast(amp, || model.features(images, false)).to_kind(Kind::Float))
}

/// Frozen-backbone features of `[N, 3, 224, 224]` images in [0, 1].
pub fn backbone_features(model: &Classifier, images: &Tensor, pass: FrozenPass, label: &str) -> Tensor {
    let FrozenPass { normalization, device, amp } = pass;
    let n = images.size()[0];
    let batch = frozen_batch(device) as i64;
    let bar = progress::bar(((n + batch - 1) / batch) as u64, label);
    let batches: Vec<Tensor> = (0..n).step_by(batch as usize).map(|s| images.narrow(0, s, batch.min(n - s))).collect();
    let chunks = map_in_lanes(model, batches, lane_count(device), |model, images| {
        let features = frozen_features(model, &normalization.apply(&images.to_device(device)), amp);
        bar.inc(1);
        features
    });
    bar.finish_and_clear();
    Tensor::cat(&chunks, 0)
}

/// Class probabilities `[N, classes]` (on the CPU) for images in [0, 1].
pub fn predict_probabilities(model: &Classifier, images: &Tensor, pass: FrozenPass, label: &str) -> Tensor {
    let features = backbone_features(model, images, pass, label);
    tch::no_grad(|| model.head_forward(&features, false).softmax(-1, Kind::Float)).to_device(Device::Cpu)
}
