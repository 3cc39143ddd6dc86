//! The one place that says what the two modes mean.
//!
//! - [`FeatureExtract`]: the backbone is frozen (eval mode, no autograd); val
//!   features are computed once; each epoch the augmented train images go
//!   through the backbone first (in CPU lanes) and the head then takes the
//!   recipe's small steps over their features; `--cache-features` computes
//!   un-augmented train features once instead. With `--feature-cache DIR`
//!   those fixed features come from (and go to) the on-disk cache of the
//!   backbone's [`FeatureSpace`].
//! - [`Full`]: every weight trains; each batch is a full forward and
//!   backward pass, mixed first under `--mixup`/`--cutmix` (soft-target
//!   cross-entropy; training accuracy counts each image's dominant label).
//! - [`Staged`]: feature extraction's epochs while the run's stage is frozen
//!   (`--freeze-epochs`), then full ones. The optimizer holds every weight
//!   from the start; a frozen epoch gives the backbone no gradient, so its
//!   weights and batch-norm statistics stay as loaded.
//!
//! Every mode's training loss is `crate::train::loss`'s, weighted per class
//! under `--class-weights`; multi-label data (`--label-delim`) changes it to
//! binary cross-entropy on multi-hot targets (mixed as the images are),
//! training accuracy the exact-match ratio at the run's threshold.
//!
//! The fine-tuning task (`super::run`) asks a strategy for a train phase and
//! for val probabilities, and knows nothing else of the mode.

use super::config::{FinetuneConfig, Mode};
use super::evaluate::correct;
use super::multi_label::exact_matches;
use super::splits::Splits;
use crate::choice_names::Named;
use crate::data::augment::mix::{self, BatchMix};
use crate::data::loader::{DecodedSplit, EpochPlan};
use crate::interrupt::{Interrupt, Interrupted};
use crate::metrics::PhaseTotals;
use crate::models::Classifier;
use crate::report::Reporter;
use crate::train::augmented_batches::for_each_augmented_batch;
use crate::train::data_parallel::Ranks;
use crate::train::feature_cache::{BackboneWeights, CacheUse, FeatureCache, FeatureSpace, FileStamp};
use crate::train::frozen_backbone::{
    augmented_features, fixed_features, head_probabilities, predict_probabilities, FixedImages, FrozenPass,
};
use crate::train::loss::{cross_entropy, soft_cross_entropy, SoftWeighting};
use crate::train::optim::Optimizer;
use crate::train::step::{GradientStep, StepError};
use anyhow::Result;
use tch::{Device, Kind, Reduction, Tensor};

/// What an epoch's phases need besides the model and its gradient step.
pub struct EpochContext<'a> {
    pub config: &'a FinetuneConfig,
    pub splits: &'a Splits,
    pub device: Device,
    pub interrupt: &'a Interrupt,
    /// The processes of a data-parallel run (or this one alone).
    pub ranks: &'a Ranks,
    pub epoch: usize,
    /// Where the phases' progress bars come from.
    pub reporter: &'a dyn Reporter,
    /// The training loss's per-class weights `[classes]` on the device (`--class-weights`).
    pub class_weights: Option<&'a Tensor>,
}

impl EpochContext<'_> {
    fn frozen_pass(&self) -> FrozenPass {
        frozen_pass(self.config, self.device)
    }

    fn interrupted(&self) -> anyhow::Error {
        Interrupted(format!("interrupted during epoch {}", self.epoch)).into()
    }

    fn step_failed(&self, error: StepError, batch: usize) -> anyhow::Error {
        match error {
            StepError::NonFinite { loss, batches_before } => {
                let batch = batch - batches_before;
                anyhow::anyhow!("non-finite loss ({loss}) at epoch {}, batch {batch}; stopped", self.epoch)
            }
            StepError::Ranks(error) => error.context(format!("epoch {}, batch {batch}", self.epoch)),
            StepError::RangeTestEnded => crate::train::lr_range::RangeTestEnded.into(),
        }
    }

    /// Whether to stop here: Ctrl-C reached this process, or any rank of a
    /// data-parallel run.
    pub(super) fn stop_requested(&self) -> Result<bool> {
        self.ranks.stop_requested(self.interrupt)
    }

    /// The rate of batch `batch` of the epoch's `batches`.
    fn lr_at(&self, batch: usize, batches: usize) -> f64 {
        self.config.lr_at(self.epoch, batch, batches)
    }

    /// The step of the epoch's last, shorter group of accumulated batches,
    /// at the last batch's rate.
    fn flush(&self, grad_step: &mut GradientStep, optimizer: &mut dyn Optimizer, batches: usize) -> Result<()> {
        let last = batches.saturating_sub(1);
        grad_step.flush(optimizer, self.lr_at(last, batches)).map_err(|error| self.step_failed(error, last))
    }

    /// This process's share of the epoch's plan (all of it when alone).
    fn plan(&self) -> EpochPlan {
        self.ranks.share(EpochPlan::draw(&self.splits.train, self.config.seed, self.epoch))
    }

    /// The training loss of a batch mixed by `mix`: cross-entropy with its
    /// soft targets (the run's smoothing in them), weighted per class when
    /// the run is; for multi-label data binary cross-entropy with the mixed
    /// multi-hot targets.
    fn soft_loss(&self, mix: &BatchMix, labels: &Tensor, classes: i64) -> Box<dyn Fn(&Tensor) -> Tensor + '_> {
        if self.config.multi_label() {
            let targets = mix.mixed_targets(labels);
            return Box::new(move |logits: &Tensor| binary_cross_entropy(logits, &targets));
        }
        let targets = mix.targets(labels, classes, self.config.label_smoothing);
        let mixed_labels = self.class_weights.map(|_| mix.targets(labels, classes, 0.0));
        Box::new(move |logits: &Tensor| {
            let weighting = self.class_weights.zip(mixed_labels.as_ref());
            let weighting = weighting.map(|(weights, mixed_labels)| SoftWeighting { weights, mixed_labels });
            soft_cross_entropy(logits, &targets, weighting)
        })
    }

    /// The training loss: cross-entropy with the run's label smoothing and
    /// class weights, or for multi-label data (`labels` multi-hot) binary
    /// cross-entropy.
    fn loss(&self, labels: &Tensor) -> impl Fn(&Tensor) -> Tensor + '_ {
        let labels = labels.shallow_clone();
        let multi_label = self.config.multi_label();
        move |logits: &Tensor| match multi_label {
            true => binary_cross_entropy(logits, &labels),
            false => cross_entropy(logits, &labels, self.class_weights, self.config.label_smoothing),
        }
    }

    /// The images of a batch its `logits` get right: the top class, or for
    /// multi-label data the whole label set at the run's threshold.
    fn correct(&self, logits: &Tensor, labels: &Tensor) -> i64 {
        match self.config.multi_label() {
            true => exact_matches(logits, labels, self.config.label_threshold()),
            false => correct(logits, labels),
        }
    }
}

/// Torch's `BCEWithLogitsLoss` (mean over images and classes) of `logits`
/// against (possibly soft) multi-hot `targets`.
fn binary_cross_entropy(logits: &Tensor, targets: &Tensor) -> Tensor {
    let targets = targets.to_device(logits.device());
    logits.to_kind(Kind::Float).binary_cross_entropy_with_logits(
        &targets,
        None::<Tensor>,
        None::<Tensor>,
        Reduction::Mean,
    )
}

pub fn frozen_pass(config: &FinetuneConfig, device: Device) -> FrozenPass {
    FrozenPass { normalization: config.arch.normalization(), device, autocast: config.autocast(device) }
}

pub trait Strategy {
    /// One epoch's train phase, updating through `optimizer`: the batches'
    /// loss and accuracy totals.
    fn train_epoch(
        &self,
        model: &Classifier,
        grad_step: &mut GradientStep,
        optimizer: &mut dyn Optimizer,
        ctx: &EpochContext,
    ) -> Result<PhaseTotals>;
    /// Val-split class probabilities `[N, classes]` (on the CPU) of the model as it is.
    fn val_probabilities(&self, model: &Classifier, ctx: &EpochContext) -> Result<Tensor>;
    /// What `--feature-cache` served this strategy's fixed features.
    fn feature_cache_use(&self) -> Option<CacheUse> {
        None
    }
}

/// The strategy of `config.mode` for a `model` that [`prepare_model`] has
/// prepared, training from `first_epoch` on (feature-extract mode, and a
/// staged run still frozen then, computes its fixed val features here,
/// shared out between `ranks`, with bars from `reporter`).
pub fn for_mode(
    config: &FinetuneConfig,
    model: &Classifier,
    splits: &Splits,
    (device, ranks, first_epoch): (Device, &Ranks, usize),
    reporter: &dyn Reporter,
) -> Result<Box<dyn Strategy>> {
    let frozen = || FeatureExtract::new(config, model, splits, (device, ranks), reporter);
    Ok(match config.mode {
        Mode::FeatureExtract => Box::new(frozen()?),
        Mode::Full => Box::new(Full),
        Mode::Staged => {
            let frozen = config.stage(first_epoch).frozen.then(frozen).transpose()?;
            Box::new(Staged { frozen })
        }
    })
}

/// Whether `mode`'s steps backpropagate through the backbone (where fp16
/// gradients need loss scaling under `--amp`); the head alone, trained in
/// fp32, does not.
pub fn backpropagates_through_backbone(mode: Mode) -> bool {
    mode != Mode::FeatureExtract
}

/// The buffers `mode`'s training changes (batch norm's running statistics
/// in full and staged mode; none of the frozen backbone's), by name.
pub fn trained_buffers(mode: Mode, model: &Classifier) -> Vec<(String, Tensor)> {
    match mode {
        Mode::FeatureExtract => Vec::new(),
        Mode::Full | Mode::Staged => model.named_buffers(),
    }
}

/// Freezes what `mode` does not train; call before collecting parameters.
pub fn prepare_model(mode: Mode, model: &mut Classifier) {
    if mode == Mode::FeatureExtract {
        model.backbone_vs.freeze();
    }
}

pub struct FeatureExtract {
    val_features: Tensor,
    /// Train images through the val transform (`--cache-features` only).
    cached_train_features: Option<Tensor>,
    /// What `--feature-cache` served the two.
    cache_use: Option<CacheUse>,
}

impl FeatureExtract {
    fn new(
        config: &FinetuneConfig,
        model: &Classifier,
        splits: &Splits,
        (device, ranks): (Device, &Ranks),
        reporter: &dyn Reporter,
    ) -> Result<Self> {
        let pass = frozen_pass(config, device);
        let cache = match &config.feature_cache {
            Some(dir) => Some(FeatureCache::open(dir, feature_space(config, splits.train.classes.len(), device)?)?),
            None => None,
        };
        let features = |images: FixedImages| fixed_features(model, images, pass, (ranks, cache.as_ref()), reporter);
        let val = FixedImages { split: &splits.val, transformed: Some(&splits.val_images), label: "val features" };
        let (val_features, mut cache_use) = features(val)?;
        let cached_train_features = match config.cache_features {
            true => {
                let train = FixedImages { split: &splits.train, transformed: None, label: "train features" };
                let (train_features, train_use) = features(train)?;
                cache_use = cache_use.zip(train_use).map(|(val, train)| val.together_with(&train));
                Some(train_features.to_device(device))
            }
            false => None,
        };
        Ok(Self { val_features: val_features.to_device(device), cached_train_features, cache_use })
    }

    /// The head's steps over features already in the epoch's order, in
    /// batches of `--batch-size`.
    fn head_steps(
        model: &Classifier,
        grad_step: &mut GradientStep,
        optimizer: &mut dyn Optimizer,
        features: &Tensor,
        labels: &Tensor,
        ctx: &EpochContext,
    ) -> Result<PhaseTotals> {
        let n = features.size()[0];
        let batch = ctx.config.batch_size as i64;
        let batches = (n as usize).div_ceil(batch as usize);
        let mut totals = PhaseTotals::default();
        for (b, start) in (0..n).step_by(batch as usize).enumerate() {
            let len = batch.min(n - start);
            let (features, labels) = (features.narrow(0, start, len), labels.narrow(0, start, len));
            let lr = ctx.lr_at(b, batches);
            let outcome = grad_step
                .step(optimizer, &mut || model.head_forward(&features, true), &ctx.loss(&labels), lr)
                .map_err(|error| ctx.step_failed(error, b))?;
            totals.add(outcome.loss, ctx.correct(&outcome.logits, &labels), len);
        }
        ctx.flush(grad_step, optimizer, batches)?;
        Ok(totals)
    }

    /// `--cache-features`: the cached features shuffled by the epoch's plan.
    fn cached_epoch(features: &Tensor, split: &DecodedSplit, ctx: &EpochContext) -> (Tensor, Tensor) {
        let plan = ctx.plan();
        let order: Vec<i64> = plan.order.iter().map(|&i| i as i64).collect();
        let order = Tensor::from_slice(&order).to_device(features.device());
        let labels = split.labels_tensor().to_device(features.device()).index_select(0, &order);
        (features.index_select(0, &order), labels)
    }
}

impl Strategy for FeatureExtract {
    fn train_epoch(
        &self,
        model: &Classifier,
        grad_step: &mut GradientStep,
        optimizer: &mut dyn Optimizer,
        ctx: &EpochContext,
    ) -> Result<PhaseTotals> {
        let split = &ctx.splits.train;
        if let Some(cached) = &self.cached_train_features {
            let (features, labels) = Self::cached_epoch(cached, split, ctx);
            return Self::head_steps(model, grad_step, optimizer, &features, &labels, ctx);
        }
        // The frozen backbone is a fixed function (eval mode), so the features
        // of the epoch's augmented images can be computed first, in lanes.
        let plan = ctx.plan();
        let (features, data_seconds) =
            augmented_features(model, &plan, split, ctx.frozen_pass(), ctx.interrupt, ctx.reporter)?;
        if ctx.stop_requested()? {
            return Err(ctx.interrupted());
        }
        let labels = plan.all_labels(split).to_device(ctx.device);
        let mut totals = Self::head_steps(model, grad_step, optimizer, &features, &labels, ctx)?;
        totals.data_wait_seconds = data_seconds;
        Ok(totals)
    }

    fn val_probabilities(&self, model: &Classifier, ctx: &EpochContext) -> Result<Tensor> {
        // Shared out and gathered, so every rank decides on the same numbers.
        ctx.ranks.sharded_pass(&self.val_features, |share| head_probabilities(model, share))
    }

    fn feature_cache_use(&self) -> Option<CacheUse> {
        self.cache_use.clone()
    }
}

/// What the run's frozen features depend on but the images: the backbone
/// and its weights (the file's identity, or the seed and classes random
/// weights are drawn from), the val transform, the autocast and the kind
/// of device.
fn feature_space(config: &FinetuneConfig, classes: usize, device: Device) -> Result<FeatureSpace> {
    let weights = match &config.weights {
        Some(path) => BackboneWeights::File(FileStamp::of(path)?),
        None => BackboneWeights::RandomInit { seed: config.seed, classes },
    };
    Ok(FeatureSpace {
        backbone: config.arch.name().to_owned(),
        weights,
        sizing: config.sizing(),
        normalization: config.arch.normalization(),
        autocast: config.autocast(device).name().to_owned(),
        device: if device.is_cuda() { "cuda" } else { "cpu" }.to_owned(),
        dim: config.arch.feature_count(),
    })
}

pub struct Full;

impl Strategy for Full {
    fn train_epoch(
        &self,
        model: &Classifier,
        grad_step: &mut GradientStep,
        optimizer: &mut dyn Optimizer,
        ctx: &EpochContext,
    ) -> Result<PhaseTotals> {
        let split = &ctx.splits.train;
        let plan = ctx.plan();
        let normalization = ctx.config.arch.normalization();
        let batches = plan.num_batches(ctx.config.batch_size);
        let (config, classes) = (ctx.config, split.classes.len() as i64);
        let mixes = mix::draw_epoch(&config.mix_recipe(), batches, config.image_size, config.seed, ctx.epoch);
        let bar = ctx.reporter.bar(batches as u64, "train");
        let mut totals = PhaseTotals::default();
        totals.data_wait_seconds =
            for_each_augmented_batch(&plan, split, ctx.config.batch_size, ctx.device, |b, images, labels| {
                // Batch norm's running statistics are rank 0's after every
                // update (the step broadcasts them, as DDP's broadcast_buffers).
                let mixed = mixes[b].map(|mix| mix.images(&images));
                let images = normalization.apply(mixed.as_ref().unwrap_or(&images));
                let autocast = ctx.config.autocast(ctx.device);
                let mut forward = || autocast.run(|| model.forward(&images, true));
                let (outcome, counted) = match mixes[b] {
                    None => (
                        grad_step.step(optimizer, &mut forward, &ctx.loss(&labels), ctx.lr_at(b, batches)),
                        labels.shallow_clone(),
                    ),
                    Some(mix) => {
                        let loss = ctx.soft_loss(&mix, &labels, classes);
                        (
                            grad_step.step(optimizer, &mut forward, &loss, ctx.lr_at(b, batches)),
                            mix.dominant_labels(&labels),
                        )
                    }
                };
                let outcome = outcome.map_err(|error| ctx.step_failed(error, b))?;
                totals.add(outcome.loss, ctx.correct(&outcome.logits, &counted), labels.size()[0]);
                bar.inc(1);
                if ctx.stop_requested()? {
                    return Err(ctx.interrupted());
                }
                Ok(())
            })?;
        bar.finish_and_clear();
        // The epoch's last, shorter group; after it evaluation and the saved
        // state see rank 0's statistics on every rank.
        ctx.flush(grad_step, optimizer, batches)?;
        Ok(totals)
    }

    fn val_probabilities(&self, model: &Classifier, ctx: &EpochContext) -> Result<Tensor> {
        ctx.ranks.sharded_pass(&ctx.splits.val_images, |share| {
            predict_probabilities(model, share, ctx.frozen_pass(), "val", ctx.reporter)
        })
    }
}

pub struct Staged {
    /// The frozen stage's strategy (its val features are the loaded
    /// backbone's), where the run starts in that stage.
    frozen: Option<FeatureExtract>,
}

impl Staged {
    /// The strategy of the stage `ctx`'s epoch is in.
    fn of_stage(&self, ctx: &EpochContext) -> &dyn Strategy {
        match (&self.frozen, ctx.config.stage(ctx.epoch).frozen) {
            (Some(frozen), true) => frozen,
            (None, true) => unreachable!("a staged run that starts unfrozen never returns to its frozen stage"),
            (_, false) => &Full,
        }
    }
}

impl Strategy for Staged {
    fn train_epoch(
        &self,
        model: &Classifier,
        grad_step: &mut GradientStep,
        optimizer: &mut dyn Optimizer,
        ctx: &EpochContext,
    ) -> Result<PhaseTotals> {
        self.of_stage(ctx).train_epoch(model, grad_step, optimizer, ctx)
    }

    fn val_probabilities(&self, model: &Classifier, ctx: &EpochContext) -> Result<Tensor> {
        self.of_stage(ctx).val_probabilities(model, ctx)
    }

    fn feature_cache_use(&self) -> Option<CacheUse> {
        self.frozen.as_ref().and_then(|frozen| frozen.feature_cache_use())
    }
}
