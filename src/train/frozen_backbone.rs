//! Passes through the frozen, eval-mode backbone: the feature-extract epoch's
//! augmented images, fixed image sets (val, `--cache-features`; shared out
//! between data-parallel ranks, and through a [`FeatureCache`] when the run
//! keeps one), and class probabilities for evaluation and prediction. On the
//! CPU they run in lanes (`crate::accel::eval_lanes`) over the model's
//! read-only [`FrozenView`]; on CUDA in large batches.

use super::amp::Autocast;
use super::augmented_batches::for_each_augmented_batch;
use super::data_parallel::Ranks;
use super::feature_cache::{CacheUse, FeatureCache};
use crate::accel::eval_lanes::{lane_count, map_in_lanes};
use crate::choice_names::Named;
use crate::data::loader::{DecodedSplit, EpochPlan};
use crate::data::transforms::Normalization;
use crate::interrupt::Interrupt;
use crate::models::{Classifier, FrozenView, GridLayer};
use crate::report::Reporter;
use anyhow::Result;
use std::path::PathBuf;
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

    /// Fp32 grid features `[N, h·w, C]` of `[N, 3, H, W]` images in [0, 1].
    fn grid(&self, model: &FrozenView, images: &Tensor, layer: GridLayer) -> Option<Tensor> {
        self.autocast.run(|| model.grid(&self.normalization.apply(images), layer))
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
    in_lanes(model, images, pass, (label, reporter), |view, images| pass.features(view, images))
}

/// Frozen-backbone grid features `[N, h·w, C]` of `[N, 3, H, W]` images in
/// [0, 1] at `layer`, counted by `reporter`'s bar `label`; an error for a
/// backbone without a grid ([`crate::models::Arch::has_grid`]).
pub fn backbone_grid(
    model: &Classifier,
    images: &Tensor,
    (pass, layer): (FrozenPass, GridLayer),
    label: &str,
    reporter: &dyn Reporter,
) -> Result<Tensor> {
    let arch = model.arch;
    if !arch.has_grid() {
        anyhow::bail!("{}: no convolutional grid of features (a CNN has one)", arch.name());
    }
    Ok(in_lanes(model, images, pass, (label, reporter), |view, images| {
        pass.grid(view, images, layer).expect("a backbone with a grid")
    }))
}

/// `per_batch` over frozen-pass batches of `images`, in lanes on the CPU,
/// concatenated; a bar counts the batches.
fn in_lanes(
    model: &Classifier,
    images: &Tensor,
    pass: FrozenPass,
    (label, reporter): (&str, &dyn Reporter),
    per_batch: impl Fn(&FrozenView, &Tensor) -> Tensor + Sync,
) -> Tensor {
    let view = model.frozen();
    let n = images.size()[0];
    let batch = frozen_batch(pass.device) as i64;
    let bar = reporter.bar(((n + batch - 1) / batch) as u64, label);
    let batches: Vec<Tensor> = (0..n).step_by(batch as usize).map(|s| images.narrow(0, s, batch.min(n - s))).collect();
    let chunks = map_in_lanes(&view, batches, lane_count(pass.device), |view, images| {
        let features = per_batch(view, &images.to_device(pass.device));
        bar.inc(1);
        features
    });
    bar.finish_and_clear();
    Tensor::cat(&chunks, 0)
}

/// A fixed set of images whose features a run computes once: a split
/// through the val transform.
pub struct FixedImages<'a> {
    pub split: &'a DecodedSplit,
    /// The whole split already through the val transform, when at hand.
    pub transformed: Option<&'a Tensor>,
    /// The bar's name (`val features`).
    pub label: &'a str,
}

impl FixedImages<'_> {
    fn all(&self) -> Tensor {
        match self.transformed {
            Some(images) => images.shallow_clone(),
            None => self.split.val_tensor(),
        }
    }

    fn rows(&self, rows: &[usize]) -> Tensor {
        match self.transformed {
            Some(images) => {
                let rows: Vec<i64> = rows.iter().map(|&i| i as i64).collect();
                images.index_select(0, &Tensor::from_slice(&rows).to_device(images.device()))
            }
            None => self.split.val_tensor_of(rows),
        }
    }

    fn paths(&self) -> &[PathBuf] {
        &self.split.paths
    }
}

/// Frozen-backbone features `[N, dim]` of `images`, computed in a pass
/// shared out between `ranks`; with a `cache`, rank 0 loads those it holds,
/// only the others are computed (shared out the same way) and added to it,
/// and every rank gets rank 0's features. Returns what the cache served.
pub fn fixed_features(
    model: &Classifier,
    images: FixedImages,
    pass: FrozenPass,
    (ranks, cache): (&Ranks, Option<&FeatureCache>),
    reporter: &dyn Reporter,
) -> Result<(Tensor, Option<CacheUse>)> {
    let compute = |inputs: &Tensor| {
        ranks.sharded_pass(inputs, |share| backbone_features(model, share, pass, images.label, reporter))
    };
    let Some(cache) = cache else { return Ok((compute(&images.all())?, None)) };
    let look_up = ranks.leads().then(|| cache.look_up(images.paths(), reporter)).transpose();
    let look_up = ranks.agree(look_up, "to read the feature cache")?;
    let missing = missing_on_every_rank(ranks, look_up.as_ref().map(|l| l.missing()))?;
    let computed = match missing.len() {
        0 => Tensor::zeros([0, cache.space().dim], (Kind::Float, Device::Cpu)),
        _ => compute(&images.rows(&missing))?.to_device(Device::Cpu),
    };
    let served = look_up.map(|look_up| look_up.complete(&computed)).transpose();
    let served = ranks.agree(served, "to write the feature cache")?;
    let n = images.paths().len();
    let (features, used) = served.unwrap_or_else(|| {
        let used = CacheUse { dir: cache.dir().to_owned(), loaded: n - missing.len(), computed: missing.len() };
        (Tensor::zeros([n as i64, cache.space().dim], (Kind::Float, Device::Cpu)), used)
    });
    ranks.broadcast_from_leader(&[features.shallow_clone()])?;
    reporter.line(&format!(
        "feature cache: {} of {n} images: {} loaded, {} computed ({})",
        images.label,
        used.loaded,
        used.computed,
        cache.store_path().display()
    ));
    Ok((features, Some(used)))
}

/// Rank 0's missing rows, on every rank (the others pass `None`).
fn missing_on_every_rank(ranks: &Ranks, leaders: Option<&[usize]>) -> Result<Vec<usize>> {
    let mut count = [leaders.map_or(0, <[usize]>::len) as f64];
    ranks.sum(&mut count)?;
    let rows: Vec<i64> = match leaders {
        Some(rows) => rows.iter().map(|&i| i as i64).collect(),
        None => vec![0; count[0] as usize],
    };
    let rows = Tensor::from_slice(&rows);
    if count[0] > 0.0 {
        ranks.broadcast_from_leader(&[rows.shallow_clone()])?;
    }
    Ok(Vec::<i64>::try_from(&rows)?.into_iter().map(|i| i as usize).collect())
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
