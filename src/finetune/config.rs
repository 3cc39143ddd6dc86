//! What defines a fine-tuning run: the options a user gives
//! ([`super::options::TrainOptions`]) checked and resolved into a
//! [`FinetuneConfig`] (absolute paths, the output folder named, every number
//! validated with a one-line reason; whether that folder may be used is
//! `crate::run_dir::RunDir`'s call). The config is saved with the run, so
//! `--resume` replays it; [`FinetuneConfig::resume`] decides which options
//! may change then.

pub use super::options::{
    ClassWeighting, FoldsOver, Mode, Monitor, OptimizerKind, Precision, Preset, Sampler, SchedulerKind, TrainOptions,
    DEFAULT_THRESHOLD,
};
use crate::choice_names::Named;
use crate::cli::options_file::BadValue;
use crate::data::augment::mix::MixRecipe;
use crate::data::augment::AugmentRecipe;
use crate::data::folds::KFold;
use crate::data::transforms::Sizing;
use crate::models::Arch;
use crate::report::{Reporter, Silent};
use crate::train::amp::Autocast;
use crate::train::schedule::Schedule;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use tch::Device;

/// Everything that defines a run, resolved; saved with it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FinetuneConfig {
    pub mode: Mode,
    pub arch: Arch,
    /// The dataset folder, absolute.
    pub data: PathBuf,
    #[serde(default = "default_val_dir")]
    pub val_dir: String,
    #[serde(default)]
    pub val_split: Option<f64>,
    /// `--labels`: the labels file, absolute (its relative paths start at
    /// `data`); none for the folder layout.
    #[serde(default)]
    pub labels: Option<PathBuf>,
    /// The labels file's checksum when the run started: a run does not go
    /// on over a changed file (its rows decide the classes and splits).
    #[serde(default)]
    pub labels_digest: Option<String>,
    /// `--label-delim`: multi-label data, its labels separated by this.
    #[serde(default)]
    pub label_delim: Option<char>,
    /// Multi-label runs: a label is predicted above this probability.
    #[serde(default)]
    pub threshold: Option<f64>,
    /// K-fold cross-validation: the number of folds, the one that
    /// validates, the seed that deals them and the images dealt (none of
    /// them saved by runs before `--folds`).
    #[serde(default)]
    pub folds: Option<usize>,
    #[serde(default)]
    pub fold: Option<usize>,
    #[serde(default)]
    pub fold_seed: u64,
    #[serde(default)]
    pub folds_over: FoldsOver,
    /// The pretrained weights, absolute; none for random init.
    pub weights: Option<PathBuf>,
    pub epochs: usize,
    pub batch_size: usize,
    #[serde(default = "default_optimizer")]
    pub optimizer: OptimizerKind,
    pub lr: f64,
    pub momentum: f64,
    #[serde(default)]
    pub nesterov: bool,
    #[serde(default)]
    pub lr_mult: Option<f64>,
    #[serde(default)]
    pub layer_decay: Option<f64>,
    /// `--mode staged`: the epochs of the frozen stage.
    #[serde(default = "one")]
    pub freeze_epochs: usize,
    #[serde(default)]
    pub weight_decay: f64,
    #[serde(default = "default_scheduler")]
    pub scheduler: SchedulerKind,
    pub step_size: usize,
    pub gamma: f64,
    #[serde(default)]
    pub warmup_epochs: usize,
    #[serde(default)]
    pub label_smoothing: f64,
    /// The training loss's per-class weights (`auto`, or a file, absolute), when weighted.
    #[serde(default)]
    pub class_weights: Option<ClassWeighting>,
    #[serde(default)]
    pub sampler: Sampler,
    /// Batches whose gradients each optimizer step sums (1 before `--accumulate`).
    #[serde(default = "one")]
    pub accumulate: usize,
    #[serde(default)]
    pub clip_grad_norm: Option<f64>,
    /// The decay of the weights' moving average, when one is kept.
    #[serde(default)]
    pub ema: Option<f64>,
    /// The val score that picks the best epoch and that early stopping watches.
    #[serde(default)]
    pub monitor: Monitor,
    #[serde(default)]
    pub early_stop: Option<usize>,
    #[serde(default = "default_image_size")]
    pub image_size: i64,
    #[serde(default = "default_augment")]
    pub augment: Preset,
    #[serde(default = "default_randaugment_n")]
    pub randaugment_n: usize,
    #[serde(default = "default_randaugment_m")]
    pub randaugment_m: usize,
    #[serde(default)]
    pub random_erase: f64,
    /// ColorJitter's four amounts, when jittered.
    #[serde(default)]
    pub color_jitter: Option<Vec<f64>>,
    /// MixUp's and CutMix's α, when mixed.
    #[serde(default)]
    pub mixup: Option<f64>,
    #[serde(default)]
    pub cutmix: Option<f64>,
    pub seed: u64,
    pub out: PathBuf,
    pub workers: usize,
    #[serde(default)]
    pub threads: Option<usize>,
    pub cache_features: bool,
    #[serde(default = "default_cache_mb")]
    pub cache_mb: u64,
    /// The frozen features' on-disk cache, absolute (how the run is carried
    /// out: it changes no result).
    #[serde(default)]
    pub feature_cache: Option<PathBuf>,
    pub strict: bool,
    #[serde(default)]
    pub amp: bool,
    #[serde(default)]
    pub precision: Precision,
    /// Run bf16 on a CPU without bf16 instructions (not part of the recipe).
    #[serde(skip)]
    pub force: bool,
    /// Replace an earlier run in `out` (once this one has saved an epoch).
    #[serde(skip)]
    pub overwrite: bool,
}

fn default_val_dir() -> String {
    "val".into()
}
fn default_optimizer() -> OptimizerKind {
    OptimizerKind::Sgd
}
fn default_scheduler() -> SchedulerKind {
    SchedulerKind::Step
}
fn one() -> usize {
    1
}
fn default_image_size() -> i64 {
    crate::data::transforms::CROP_SIZE
}
fn default_augment() -> Preset {
    Preset::Tutorial
}
fn default_randaugment_n() -> usize {
    AugmentRecipe::TUTORIAL.randaugment_n
}
fn default_randaugment_m() -> usize {
    AugmentRecipe::TUTORIAL.randaugment_m
}
fn default_cache_mb() -> u64 {
    crate::data::loader::DEFAULT_PIXEL_BUDGET_MB
}

/// The image folder when neither `--data` nor `--labels` is given.
pub const DEFAULT_DATA: &str = "data/hymenoptera_data";

/// Options that may be given with `--resume`: how the run is carried out
/// (`crate::cli::resumable`), and `--epochs` (which extends it), `--data`
/// and `--labels` (the same data where it now lives).
fn resumable() -> BTreeSet<String> {
    let mut ids = crate::cli::resumable::<TrainOptions>();
    ids.extend(["epochs".to_owned(), "data".to_owned(), "labels".to_owned()]);
    ids
}

/// A run's epochs that train the same weights under one schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stage {
    pub first_epoch: usize,
    pub epochs: usize,
    /// Whether the backbone is frozen (the head alone trains).
    pub frozen: bool,
}

impl FinetuneConfig {
    /// The stage `epoch` is in: the whole run, except in `--mode staged`
    /// (the frozen epochs, then the rest).
    pub fn stage(&self, epoch: usize) -> Stage {
        let frozen_epochs = match self.mode {
            Mode::Staged => self.freeze_epochs.min(self.epochs),
            Mode::FeatureExtract | Mode::Full => 0,
        };
        match epoch < frozen_epochs {
            true => Stage { first_epoch: 0, epochs: frozen_epochs, frozen: true },
            false => {
                let frozen = self.mode == Mode::FeatureExtract;
                Stage { first_epoch: frozen_epochs, epochs: self.epochs - frozen_epochs, frozen }
            }
        }
    }

    /// The learning rate of each epoch of `stage`, counted from its start
    /// (warm-up only where the backbone trains).
    pub fn schedule(&self, stage: Stage) -> Schedule {
        let staged_and_frozen = self.mode == Mode::Staged && stage.frozen;
        Schedule {
            base_lr: self.lr,
            kind: self.scheduler,
            step_size: self.step_size,
            gamma: self.gamma,
            warmup_epochs: if staged_and_frozen { 0 } else { self.warmup_epochs },
            epochs: stage.epochs,
        }
    }

    /// The rate of batch `batch` of the `batches` in `epoch`.
    pub fn lr_at(&self, epoch: usize, batch: usize, batches: usize) -> f64 {
        let stage = self.stage(epoch);
        self.schedule(stage).lr_at(epoch - stage.first_epoch, batch, batches)
    }

    /// The optimizer's settings over `params` (named as in the checkpoint):
    /// each one's rate scaled by its layer depth under `--lr-mult` or
    /// `--layer-decay`.
    pub fn optimizer_settings(&self, params: &crate::grad::Params) -> crate::train::optim::Settings {
        let last = (self.arch.depth_count() - 1) as f64;
        let scale = |depth: usize| match (self.lr_mult, self.layer_decay) {
            (Some(factor), _) => factor.powf((depth as f64 - last) / last),
            (None, Some(decay)) => decay.powf(last - depth as f64),
            (None, None) => 1.0,
        };
        let lr_scales = params.iter().map(|(name, _)| scale(self.arch.layer_depth(name))).collect();
        crate::train::optim::Settings {
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            nesterov: self.nesterov,
            lr_scales,
        }
    }

    /// How the run's images are sized: `--image-size` with the backbone's
    /// resize proportion and interpolation.
    pub fn sizing(&self) -> Sizing {
        Sizing::of(&self.arch.preprocessing(), Some(self.image_size))
    }

    /// What training samples get beyond the crop and flip.
    pub fn augment_recipe(&self) -> AugmentRecipe {
        AugmentRecipe {
            preset: self.augment,
            randaugment_n: self.randaugment_n,
            randaugment_m: self.randaugment_m,
            random_erase: self.random_erase,
            color_jitter: self.color_jitter.as_deref().and_then(|amounts| amounts.try_into().ok()),
        }
    }

    /// Whether images have sets of labels (`--label-delim`): sigmoid
    /// outputs, binary cross-entropy, the epoch of the best val mAP kept.
    pub fn multi_label(&self) -> bool {
        self.label_delim.is_some()
    }

    /// The val score that picks the best epoch: `--monitor`, whose default
    /// (val accuracy) is val mAP for a multi-label run.
    pub fn monitor(&self) -> Monitor {
        match (self.multi_label(), self.monitor) {
            (true, Monitor::ValAcc) => Monitor::ValMap,
            (_, monitor) => monitor,
        }
    }

    /// The probability above which a multi-label run predicts a label.
    pub fn label_threshold(&self) -> f64 {
        self.threshold.unwrap_or(DEFAULT_THRESHOLD)
    }

    /// How training batches are mixed.
    pub fn mix_recipe(&self) -> MixRecipe {
        MixRecipe { mixup: self.mixup, cutmix: self.cutmix }
    }

    /// The autocast of this run's forward passes on `device`.
    pub fn autocast(&self, device: Device) -> Autocast {
        Autocast::of(self.amp, self.precision, device)
    }

    /// Refuses, in one line, a precision this run cannot use well on `device`.
    pub fn check_precision(&self, device: Device) -> Result<()> {
        crate::train::amp::check_device(self.amp, self.precision, self.force, device)
    }

    /// Resolves and validates a new run's options, saying nothing (a sweep
    /// checking its points): without `--out`, the default folder is chosen
    /// silently.
    pub fn new(options: &TrainOptions) -> Result<Self> {
        Self::new_reporting(options, &Silent)
    }

    /// [`FinetuneConfig::new`], with the note to `reporter` when, without
    /// `--out`, the default folder holds an earlier run and the next free
    /// one is taken.
    pub fn new_reporting(options: &TrainOptions, reporter: &dyn Reporter) -> Result<Self> {
        validate(options).map_err(BadValue::wrap)?;
        let weights = if options.random_init {
            None
        } else {
            let path = options.weights.clone().unwrap_or_else(|| options.arch.default_weights(&options.models_dir));
            if !path.is_file() {
                bail!(
                    "{}: weights file not found. Run scripts/fetch-models.sh {}, pass --weights FILE, or use --random-init",
                    path.display(),
                    options.arch.name()
                );
            }
            Some(absolute(&path)?)
        };
        let labels = options.labels.as_deref().map(absolute).transpose()?;
        Ok(Self {
            mode: options.mode,
            arch: options.arch,
            data: data_folder(options.data.as_deref(), labels.as_deref())?,
            val_dir: options.val_dir.clone(),
            val_split: options.val_split,
            labels_digest: labels.as_deref().map(crate::data::labels_file::digest).transpose()?,
            labels,
            label_delim: options.label_delim,
            threshold: options.label_delim.map(|_| options.threshold),
            folds: options.folds,
            fold: options.fold,
            fold_seed: options.fold_seed,
            folds_over: options.folds_over,
            weights,
            epochs: options.epochs,
            batch_size: options.batch_size,
            optimizer: options.optimizer,
            lr: options.lr,
            momentum: options.momentum,
            nesterov: options.nesterov,
            lr_mult: options.lr_mult,
            layer_decay: options.layer_decay,
            freeze_epochs: options.freeze_epochs,
            weight_decay: options.weight_decay,
            scheduler: options.scheduler,
            step_size: options.step_size,
            gamma: options.gamma,
            warmup_epochs: options.warmup_epochs,
            label_smoothing: options.label_smoothing,
            class_weights: class_weights_file(options.class_weights.as_ref())?,
            sampler: options.sampler,
            accumulate: options.accumulate,
            clip_grad_norm: options.clip_grad_norm,
            ema: options.ema,
            monitor: options.monitor,
            early_stop: options.early_stop,
            image_size: options.image_size.unwrap_or(options.arch.preprocessing().crop),
            augment: options.augment,
            randaugment_n: options.randaugment_n,
            randaugment_m: options.randaugment_m,
            random_erase: options.random_erase,
            color_jitter: options.color_jitter.clone(),
            mixup: options.mixup,
            cutmix: options.cutmix,
            seed: options.seed.seed,
            out: output_folder(options, reporter)?,
            workers: options.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
            threads: options.threads,
            cache_features: options.cache_features,
            cache_mb: options.cache_mb,
            feature_cache: options.feature_cache.as_deref().map(absolute).transpose()?,
            strict: options.strict,
            amp: options.amp,
            precision: options.precision,
            force: options.force,
            overwrite: options.overwrite,
        })
    }

    /// The saved config of the run in `out`, with the options given beside
    /// `--resume` applied: those [`resumable`] allows change it (`--epochs` extends
    /// the run), any other is refused in one line.
    pub fn resume(saved_json: &str, out: &Path, options: &TrainOptions, given: &BTreeSet<String>) -> Result<Self> {
        let mut config: FinetuneConfig = serde_json::from_str(saved_json)
            .with_context(|| format!("{}: the saved run config does not parse", out.display()))?;
        let allowed = resumable();
        if let Some(refused) = given.iter().find(|id| !allowed.contains(id.as_str())) {
            bail!(
                "--resume continues the run's own recipe: --{} cannot be given with it (allowed: {}); start a new run with --out to change it",
                refused.replace('_', "-"),
                allowed.iter().map(|id| format!("--{}", id.replace('_', "-"))).collect::<Vec<_>>().join(", ")
            );
        }
        let mut check = options.clone();
        check.epochs = if given.contains("epochs") { options.epochs } else { config.epochs };
        validate(&check).map_err(BadValue::wrap)?;
        if given.contains("epochs") {
            config.epochs = options.epochs;
            if config.mode == Mode::Staged && config.epochs <= config.freeze_epochs {
                bail!(
                    "--epochs {}: this staged run freezes its backbone for {} epoch(s); give more to train every weight",
                    config.epochs,
                    config.freeze_epochs
                );
            }
        }
        if let Some(data) = options.data.as_deref().filter(|_| given.contains("data")) {
            config.data = absolute(data)?;
        }
        if let Some(labels) = options.labels.as_deref().filter(|_| given.contains("labels")) {
            if config.labels.is_none() {
                bail!(
                    "--labels: this run reads class folders (--data {}); it cannot be given with --resume",
                    config.data.display()
                );
            }
            config.labels = Some(absolute(labels)?);
        }
        if given.contains("workers") {
            config.workers = options.workers.unwrap_or(config.workers);
        }
        if given.contains("threads") {
            config.threads = options.threads;
        }
        if given.contains("cache_mb") {
            config.cache_mb = options.cache_mb;
        }
        if given.contains("feature_cache") {
            if config.mode == Mode::Full && options.feature_cache.is_some() {
                bail!("--feature-cache keeps a frozen backbone's features: this run trains every weight (--mode full)");
            }
            config.feature_cache = options.feature_cache.as_deref().map(absolute).transpose()?;
        }
        config.force = options.force;
        config.out = absolute(out)?;
        Ok(config)
    }

    /// This config as a `--config` file: `finetune --config <it> --out DIR`
    /// runs the same recipe again (the output folder is left out).
    pub fn to_options_toml(&self) -> Result<String> {
        let serde_json::Value::Object(mut fields) = serde_json::to_value(self)? else { bail!("config") };
        fields.insert("random_init".into(), self.weights.is_none().into());
        // The checksum is the run's, not an option (a new run takes the file as it is then).
        fields.remove("labels_digest");
        crate::run_dir::options_toml("finetune", &serde_json::Value::Object(fields))
    }

    /// The validation folder, or how it is split off.
    pub fn val_description(&self) -> String {
        match (&self.labels, self.val_split, self.kfold()) {
            (None, Some(fraction), _) => format!("{:.0} % of train/ held out", fraction * 100.0),
            (Some(_), Some(fraction), _) => format!("{:.0} % of the train rows held out", fraction * 100.0),
            (labels, None, Some(kfold)) => {
                let over = match (labels, self.folds_over) {
                    (None, FoldsOver::TrainAndVal) => format!("train/ and {}/", self.val_dir),
                    (None, FoldsOver::Train) => "train/".to_owned(),
                    (Some(_), FoldsOver::TrainAndVal) => "every row of the labels file".to_owned(),
                    (Some(_), FoldsOver::Train) => "the train rows of the labels file".to_owned(),
                };
                format!("fold {} of {} over {over}, fold seed {}", kfold.fold, kfold.folds, kfold.seed)
            }
            (None, None, None) => format!("{}/", self.val_dir),
            (Some(_), None, None) => "the val rows".into(),
        }
    }

    /// The K-fold cross-validation of the run, when it has one.
    pub fn kfold(&self) -> Option<KFold> {
        let (folds, fold) = self.folds.zip(self.fold)?;
        Some(KFold { folds, fold, seed: self.fold_seed })
    }

    /// One line naming the recipe, printed at start.
    pub fn describe(&self) -> String {
        let schedule = match self.scheduler {
            SchedulerKind::Step => format!("StepLR({}, {})", self.step_size, self.gamma),
            SchedulerKind::Cosine => "cosine".into(),
            SchedulerKind::OneCycle => "one-cycle".into(),
        };
        let warmup = if self.warmup_epochs > 0 {
            format!(" after {} warm-up epoch(s)", self.warmup_epochs)
        } else {
            String::new()
        };
        let optimizer = match self.optimizer {
            OptimizerKind::Sgd if self.nesterov => format!("SGD lr {} Nesterov momentum {}", self.lr, self.momentum),
            OptimizerKind::Sgd => format!("SGD lr {} momentum {}", self.lr, self.momentum),
            OptimizerKind::Adamw => format!("AdamW lr {}", self.lr),
            OptimizerKind::Rmsprop => format!("RMSprop lr {} momentum {}", self.lr, self.momentum),
        };
        let mut extras = Vec::new();
        if let Some(labels) = &self.labels {
            extras.push(format!("labels from {}", labels.display()));
        }
        if let Some(delim) = self.label_delim {
            extras.push(format!("multi-label (labels split on {delim:?}, threshold {})", self.label_threshold()));
        }
        if self.mode == Mode::Staged {
            extras.push(format!("backbone frozen for {} epoch(s)", self.freeze_epochs));
        }
        if let Some(factor) = self.lr_mult {
            extras.push(format!("rates from lr/{factor} (stem) to lr (head)"));
        }
        if let Some(decay) = self.layer_decay {
            extras.push(format!("layer decay {decay}"));
        }
        extras.extend(self.describe_augmentation());
        if self.weight_decay > 0.0 {
            extras.push(format!("weight decay {}", self.weight_decay));
        }
        if self.label_smoothing > 0.0 {
            extras.push(format!("label smoothing {}", self.label_smoothing));
        }
        if let Some(weighting) = &self.class_weights {
            extras.push(format!("class weights {weighting}"));
        }
        if self.sampler == Sampler::Balanced {
            extras.push("class-balanced sampler".into());
        }
        if self.accumulate > 1 {
            extras.push(format!("gradients of {} batches per step", self.accumulate));
        }
        if let Some(max_norm) = self.clip_grad_norm {
            extras.push(format!("gradient norm clipped to {max_norm}"));
        }
        if let Some(decay) = self.ema {
            extras.push(format!("EMA of the weights (decay {decay})"));
        }
        if self.monitor != Monitor::ValAcc {
            extras.push(format!("best epoch by {}", self.monitor().name()));
        }
        if let Some(patience) = self.early_stop {
            extras.push(format!("early stop after {patience} epoch(s) without improvement"));
        }
        if self.amp {
            extras.push("mixed precision (--amp)".into());
        }
        if self.precision == Precision::Bf16 {
            extras.push("bf16 autocast (--precision bf16)".into());
        }
        let extras = if extras.is_empty() { String::new() } else { format!(" | {}", extras.join(", ")) };
        format!(
            "finetune: {} {} | epochs {} batch {} {optimizer} {schedule}{warmup} seed {} image {}{extras} | out {}",
            self.arch.name(),
            self.mode.name(),
            self.epochs,
            self.batch_size,
            self.seed,
            self.image_size,
            self.out.display()
        )
    }
}

impl FinetuneConfig {
    /// The augmentation beyond the crop and flip, in words (none under the tutorial's).
    fn describe_augmentation(&self) -> Vec<String> {
        let mut said = Vec::new();
        if let Some(amounts) = &self.color_jitter {
            let amounts: Vec<String> = amounts.iter().map(f64::to_string).collect();
            said.push(format!("color jitter {}", amounts.join(",")));
        }
        match self.augment {
            Preset::Tutorial => {}
            Preset::Randaugment => {
                said.push(format!("randaugment (n {}, m {})", self.randaugment_n, self.randaugment_m))
            }
            preset => said.push(preset.name()),
        }
        if self.random_erase > 0.0 {
            said.push(format!("random erase {}", self.random_erase));
        }
        let mixes = [("mixup", self.mixup), ("cutmix", self.cutmix)];
        said.extend(mixes.iter().filter_map(|(name, alpha)| alpha.map(|alpha| format!("{name} α {alpha}"))));
        said
    }
}

/// The augmentation options checked, with a one-line reason naming the option.
fn validate_augmentation(o: &TrainOptions) -> Result<()> {
    if o.randaugment_m > 30 {
        bail!("--randaugment-m {}: must be a magnitude bin from 0 to 30", o.randaugment_m);
    }
    if o.randaugment_n > 16 {
        bail!("--randaugment-n {}: at most 16 operations per image", o.randaugment_n);
    }
    if !(0.0..=1.0).contains(&o.random_erase) {
        bail!("--random-erase {}: must be in [0, 1]", o.random_erase);
    }
    if let Some(amounts) = &o.color_jitter {
        let given = amounts.iter().map(f64::to_string).collect::<Vec<_>>().join(",");
        if amounts.len() != 4 {
            bail!("--color-jitter {given}: must be four amounts B,C,S,H (e.g. 0.4,0.4,0.4,0.1)");
        }
        if amounts.iter().any(|a| !(a.is_finite() && *a >= 0.0)) {
            bail!("--color-jitter {given}: the amounts must be 0 or more");
        }
        if amounts[3] > 0.5 {
            bail!("--color-jitter {given}: the hue amount must be at most 0.5");
        }
    }
    for (name, alpha) in [("mixup", o.mixup), ("cutmix", o.cutmix)] {
        match alpha {
            Some(alpha) if !(alpha.is_finite() && alpha > 0.0) => {
                bail!("--{name} {alpha}: α must be a positive number (e.g. 0.2 for mixup, 1.0 for cutmix)")
            }
            Some(_) if o.mode != Mode::Full => {
                bail!("--{name} mixes the images of a training batch: it needs --mode full (feature-extract and staged's frozen epochs train the head on features of unmixed images)")
            }
            _ => {}
        }
    }
    let augments = o.augment != Preset::Tutorial || o.random_erase > 0.0 || o.color_jitter.is_some();
    if o.cache_features && augments {
        bail!("--cache-features trains on un-augmented features: it cannot take --augment, --random-erase or --color-jitter");
    }
    Ok(())
}

/// The labels-file options checked, with a one-line reason naming the option.
fn validate_labels(o: &TrainOptions) -> Result<()> {
    if let Some(delim) = o.label_delim {
        if o.labels.is_none() {
            bail!("--label-delim {delim:?}: multi-label data comes from a labels file; give --labels FILE.csv");
        }
        if matches!(delim, '"' | '\n' | '\r') {
            bail!("--label-delim {delim:?}: a quote or line break cannot separate labels");
        }
    }
    if !(o.threshold > 0.0 && o.threshold < 1.0) {
        bail!("--threshold {}: must be a probability between 0 and 1", o.threshold);
    }
    if o.label_delim.is_none() && o.threshold != DEFAULT_THRESHOLD {
        bail!("--threshold {}: only multi-label runs (--label-delim) threshold their outputs", o.threshold);
    }
    if o.labels.is_some() && o.val_dir != default_val_dir() {
        bail!("--val-dir {:?} names a folder of the folder layout; with --labels the split column says which rows are val (or give --val-split)", o.val_dir);
    }
    if o.label_delim.is_some() && o.label_smoothing > 0.0 {
        bail!("--label-smoothing {}: smooths cross-entropy's one-hot targets; multi-label runs train binary cross-entropy", o.label_smoothing);
    }
    if o.label_delim.is_some() && o.class_weights.is_some() {
        bail!("--class-weights: weighs cross-entropy's classes; multi-label runs train binary cross-entropy");
    }
    if o.label_delim.is_some() && o.sampler != Sampler::default() {
        bail!("--sampler {}: balances single labels; a multi-label image has several", o.sampler.name());
    }
    match (o.label_delim.is_some(), o.monitor) {
        (true, Monitor::ValBalancedAcc) => {
            bail!("--monitor val_balanced_acc: multi-label runs measure val_map, val_macro_f1, val_acc (exact match) and val_loss")
        }
        (false, Monitor::ValMap) => bail!("--monitor val_map: only multi-label runs (--label-delim) measure mAP"),
        _ => {}
    }
    Ok(())
}

/// `--data` as given, or the labels file's folder, or [`DEFAULT_DATA`]: absolute.
fn data_folder(data: Option<&Path>, labels: Option<&Path>) -> Result<PathBuf> {
    match (data, labels.and_then(Path::parent)) {
        (Some(data), _) => absolute(data),
        (None, Some(labels_folder)) => Ok(labels_folder.to_owned()),
        (None, None) => absolute(Path::new(DEFAULT_DATA)),
    }
}

/// Every number checked, with a one-line reason naming the option.
fn validate(o: &TrainOptions) -> Result<()> {
    let positive = |name: &str, value: f64| -> Result<()> {
        if !(value.is_finite() && value > 0.0) {
            bail!("--{name} {value}: must be a positive number");
        }
        Ok(())
    };
    positive("lr", o.lr)?;
    validate_augmentation(o)?;
    validate_labels(o)?;
    positive("gamma", o.gamma)?;
    if !(0.0..1.0).contains(&o.momentum) {
        bail!("--momentum {}: must be at least 0 and below 1", o.momentum);
    }
    if !(o.weight_decay.is_finite() && o.weight_decay >= 0.0) {
        bail!("--weight-decay {}: must be 0 or more", o.weight_decay);
    }
    if !(0.0..1.0).contains(&o.label_smoothing) {
        bail!("--label-smoothing {}: must be at least 0 and below 1", o.label_smoothing);
    }
    if let Some(max_norm) = o.clip_grad_norm {
        positive("clip-grad-norm", max_norm)?;
    }
    if let Some(decay) = o.ema.filter(|d| !(*d > 0.0 && *d < 1.0)) {
        bail!("--ema {decay}: the decay must be above 0 and below 1 (e.g. 0.999)");
    }
    for (name, value) in
        [("epochs", o.epochs), ("batch-size", o.batch_size), ("step-size", o.step_size), ("accumulate", o.accumulate)]
    {
        if value == 0 {
            bail!("--{name} 0: must be at least 1");
        }
    }
    for (name, value) in [("workers", o.workers), ("threads", o.threads), ("early-stop", o.early_stop)] {
        if value == Some(0) {
            bail!("--{name} 0: must be at least 1");
        }
    }
    let trained_epochs = match o.mode {
        Mode::Staged if o.freeze_epochs >= o.epochs => {
            bail!(
                "--freeze-epochs {}: must be fewer than --epochs {} (the rest train every weight)",
                o.freeze_epochs,
                o.epochs
            )
        }
        Mode::Staged if o.freeze_epochs == 0 => bail!("--freeze-epochs 0: must be at least 1 (or use --mode full)"),
        Mode::Staged => o.epochs - o.freeze_epochs,
        Mode::FeatureExtract | Mode::Full => o.epochs,
    };
    if o.warmup_epochs > 0 && o.warmup_epochs >= trained_epochs {
        bail!("--warmup-epochs {}: must be fewer than the {trained_epochs} epochs it warms up", o.warmup_epochs);
    }
    if o.warmup_epochs > 0 && o.scheduler == SchedulerKind::OneCycle {
        bail!(
            "--warmup-epochs {}: one-cycle warms up itself (its first 30 % of batches); leave it out",
            o.warmup_epochs
        );
    }
    if o.mode != Mode::Staged && o.freeze_epochs != TrainOptions::defaults().freeze_epochs {
        bail!("--freeze-epochs {}: only --mode staged freezes its backbone for some epochs", o.freeze_epochs);
    }
    if let (Mode::Staged, Some(patience)) = (o.mode, o.early_stop.filter(|p| *p <= o.freeze_epochs)) {
        bail!(
            "--early-stop {patience}: the backbone is frozen for --freeze-epochs {}; give a patience above it, or it may stop before the backbone trains",
            o.freeze_epochs
        );
    }
    if o.nesterov && (o.optimizer != OptimizerKind::Sgd || o.momentum == 0.0) {
        bail!("--nesterov needs --optimizer sgd with a --momentum above 0");
    }
    if let Some(factor) = o.lr_mult {
        if !(factor.is_finite() && factor >= 1.0) {
            bail!("--lr-mult {factor}: must be 1 or more (the stem trains at --lr divided by it)");
        }
    }
    if let Some(decay) = o.layer_decay {
        if !(decay > 0.0 && decay <= 1.0) {
            bail!("--layer-decay {decay}: must be above 0 and at most 1 (e.g. 0.75)");
        }
    }
    if o.lr_mult.is_some() && o.layer_decay.is_some() {
        bail!("--lr-mult and --layer-decay both scale rates by depth: give one of them");
    }
    if (o.lr_mult.is_some() || o.layer_decay.is_some()) && o.mode == Mode::FeatureExtract {
        bail!("--lr-mult and --layer-decay scale the backbone's rates: they need --mode full or staged");
    }
    if o.seed.seed > i64::MAX as u64 {
        bail!("--seed {}: must be at most {}", o.seed.seed, i64::MAX);
    }
    if let Some(size) = o.image_size.filter(|size| !(32..=1024).contains(size)) {
        bail!("--image-size {size}: must be between 32 and 1024 pixels");
    }
    let image_size = o.image_size.unwrap_or(o.arch.preprocessing().crop);
    if let Some(patch) = o.arch.patch_size().filter(|patch| image_size % patch != 0) {
        bail!(
            "--image-size {image_size}: --arch {} cuts images into {patch}-pixel patches; give a multiple of {patch}",
            o.arch.name()
        );
    }
    if let Some(fraction) = o.val_split {
        if !(fraction > 0.0 && fraction < 1.0) {
            bail!("--val-split {fraction}: must be a fraction between 0 and 1 (e.g. 0.2)");
        }
    }
    validate_folds(o)?;
    if o.val_dir.is_empty() || o.val_dir.contains(['/', '\\']) || o.val_dir == ".." || o.val_dir == "." {
        bail!("--val-dir {:?}: must be the name of a folder inside --data", o.val_dir);
    }
    if o.amp && o.precision == Precision::Bf16 {
        bail!("--amp is fp16 mixed precision and --precision bf16 is bf16 autocast: give one of them");
    }
    if o.cache_features && o.mode == Mode::Full {
        bail!("--cache-features needs --mode feature-extract or staged (in full mode the features change every step)");
    }
    if o.feature_cache.is_some() && o.mode == Mode::Full {
        bail!("--feature-cache keeps a frozen backbone's features: it needs --mode feature-extract or staged");
    }
    Ok(())
}

/// The K-fold options checked, with a one-line reason naming the option.
fn validate_folds(o: &TrainOptions) -> Result<()> {
    match (o.folds, o.fold) {
        (None, None) => {}
        (None, Some(fold)) => bail!("--fold {fold}: needs --folds K, the number of folds"),
        (Some(folds), _) if folds < 2 => bail!("--folds {folds}: must be at least 2"),
        (Some(folds), None) => bail!("--folds {folds}: give --fold I, the fold that validates (0 to {})", folds - 1),
        (Some(folds), Some(fold)) if fold >= folds => {
            bail!("--fold {fold}: must be below --folds {folds} (the folds are numbered 0 to {})", folds - 1)
        }
        (Some(_), Some(_)) => {}
    }
    if o.folds.is_some() && o.val_split.is_some() {
        bail!("--folds and --val-split both choose the val images: give one of them");
    }
    if o.fold_seed > i64::MAX as u64 {
        bail!("--fold-seed {}: must be at most {}", o.fold_seed, i64::MAX);
    }
    Ok(())
}

/// `--out` as given (refused when it holds a run, unless `--overwrite`), or
/// `runs/<arch>-<mode>`, or the next free `runs/<arch>-<mode>-N`.
fn output_folder(options: &TrainOptions, reporter: &dyn Reporter) -> Result<PathBuf> {
    let base = format!("runs/{}-{}", options.arch.name(), options.mode.name());
    crate::run_dir::choose(options.out.as_deref(), &base, options.overwrite, reporter)
}

/// `--class-weights` with its file made absolute, checked to be a file.
fn class_weights_file(weighting: Option<&ClassWeighting>) -> Result<Option<ClassWeighting>> {
    match weighting {
        Some(ClassWeighting::File(path)) if !path.is_file() => {
            bail!("--class-weights {}: no such file (give auto, or a file of class,weight lines)", path.display())
        }
        Some(ClassWeighting::File(path)) => Ok(Some(ClassWeighting::File(absolute(path)?))),
        other => Ok(other.cloned()),
    }
}

fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("{}: cannot make the path absolute", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new run's options with the training knobs, random weights, `--out` given.
    fn knobs(accumulate: usize, clip_grad_norm: Option<f64>, ema: Option<f64>) -> TrainOptions {
        let mut options = TrainOptions::defaults();
        options.random_init = true;
        options.out = Some(PathBuf::from("target/test-runs/knobs"));
        (options.accumulate, options.clip_grad_norm, options.ema) = (accumulate, clip_grad_norm, ema);
        options
    }

    #[test]
    fn the_training_knobs_are_saved_and_a_config_saved_before_them_loads_without_them() {
        let config = FinetuneConfig::new(&knobs(4, Some(1.5), Some(0.999))).unwrap();
        let saved = serde_json::to_value(&config).unwrap();
        let loaded: FinetuneConfig = serde_json::from_value(saved.clone()).unwrap();
        assert_eq!((loaded.accumulate, loaded.clip_grad_norm, loaded.ema), (4, Some(1.5), Some(0.999)));
        assert!(config.describe().contains("gradients of 4 batches per step"), "{}", config.describe());
        let serde_json::Value::Object(mut older) = saved else { panic!("a config is an object") };
        for key in ["accumulate", "clip_grad_norm", "ema"] {
            older.remove(key).unwrap();
        }
        let loaded: FinetuneConfig = serde_json::from_value(serde_json::Value::Object(older)).unwrap();
        assert_eq!((loaded.accumulate, loaded.clip_grad_norm, loaded.ema), (1, None, None));
    }

    #[test]
    fn bad_knob_values_are_refused_in_one_line_naming_the_option() {
        for (options, expected) in [
            (knobs(0, None, None), "--accumulate 0: must be at least 1"),
            (knobs(1, Some(0.0), None), "--clip-grad-norm 0: must be a positive number"),
            (knobs(1, Some(f64::NAN), None), "--clip-grad-norm NaN: must be a positive number"),
            (knobs(1, None, Some(1.0)), "--ema 1: the decay must be above 0 and below 1"),
            (knobs(1, None, Some(0.0)), "--ema 0: the decay must be above 0 and below 1"),
        ] {
            let error = FinetuneConfig::new(&options).unwrap_err().to_string();
            assert!(error.starts_with(expected), "{error}");
        }
    }

    fn staged(epochs: usize, freeze_epochs: usize) -> TrainOptions {
        let mut options = knobs(1, None, None);
        (options.mode, options.epochs, options.freeze_epochs) = (Mode::Staged, epochs, freeze_epochs);
        options
    }

    #[test]
    fn a_staged_run_restarts_its_schedule_where_the_backbone_unfreezes() {
        let mut options = staged(10, 2);
        (options.step_size, options.warmup_epochs) = (3, 1);
        let config = FinetuneConfig::new(&options).unwrap();
        assert_eq!(config.stage(1), Stage { first_epoch: 0, epochs: 2, frozen: true });
        assert_eq!(config.stage(2), Stage { first_epoch: 2, epochs: 8, frozen: false });
        let rates: Vec<f64> = (0..10).map(|epoch| config.lr_at(epoch, 0, 1) / config.lr).collect();
        // Frozen: no warm-up, StepLR from the start; then a warm-up epoch, and StepLR counted after it.
        let expected = [1.0, 1.0, 0.5, 1.0, 1.0, 1.0, 0.1, 0.1, 0.1, 0.01];
        for (epoch, (rate, expected)) in rates.iter().zip(expected).enumerate() {
            assert!((rate - expected).abs() < 1e-12, "epoch {epoch}: {rate} against {expected}");
        }
        assert!(config.describe().contains("backbone frozen for 2 epoch(s)"), "{}", config.describe());
        let full = FinetuneConfig::new(&TrainOptions { mode: Mode::Full, freeze_epochs: 1, ..options }).unwrap();
        assert_eq!(full.stage(1), Stage { first_epoch: 0, epochs: 10, frozen: false });
    }

    #[test]
    fn rates_scale_by_layer_depth_from_the_stem_to_the_head() {
        let model = tch::no_grad(|| crate::models::Classifier::new(Arch::Resnet18, 2, Device::Cpu));
        let params = model.trainable();
        let scale_of = |config: &FinetuneConfig, name: &str| {
            let settings = config.optimizer_settings(&params);
            let index = params.iter().position(|(n, _)| n == name).unwrap();
            settings.lr_scales[index]
        };
        let mut options = knobs(1, None, None);
        (options.mode, options.lr_mult) = (Mode::Full, Some(100.0));
        let config = FinetuneConfig::new(&options).unwrap();
        // ResNet-18: the stem at depth 0, 8 blocks, the head at depth 9.
        assert!((scale_of(&config, "conv1.weight") - 0.01).abs() < 1e-12);
        assert!((scale_of(&config, "layer4.1.conv2.weight") - 100f64.powf(-1.0 / 9.0)).abs() < 1e-12);
        assert_eq!(scale_of(&config, "fc.bias"), 1.0);
        (options.lr_mult, options.layer_decay) = (None, Some(0.5));
        let config = FinetuneConfig::new(&options).unwrap();
        assert!((scale_of(&config, "bn1.weight") - 0.5f64.powi(9)).abs() < 1e-15);
        assert!((scale_of(&config, "layer1.0.conv1.weight") - 0.5f64.powi(8)).abs() < 1e-15);
        assert_eq!(scale_of(&config, "fc.weight"), 1.0);
    }

    #[test]
    fn staged_and_rate_options_are_checked_in_one_line() {
        let with = |change: &dyn Fn(&mut TrainOptions)| {
            let mut options = staged(5, 1);
            change(&mut options);
            FinetuneConfig::new(&options).err().map(|e| e.to_string()).unwrap_or_default()
        };
        assert!(with(&|o| o.freeze_epochs = 5).starts_with("--freeze-epochs 5: must be fewer than --epochs 5"));
        assert!(with(&|o| o.freeze_epochs = 0).starts_with("--freeze-epochs 0: must be at least 1"));
        assert!(with(&|o| o.warmup_epochs = 4).starts_with("--warmup-epochs 4: must be fewer than the 4 epochs"));
        assert!(with(&|o| o.lr_mult = Some(0.5)).starts_with("--lr-mult 0.5: must be 1 or more"));
        assert!(with(&|o| o.layer_decay = Some(1.5)).starts_with("--layer-decay 1.5: must be above 0"));
        let both = with(&|o| (o.lr_mult, o.layer_decay) = (Some(10.0), Some(0.7)));
        assert!(both.starts_with("--lr-mult and --layer-decay both scale"), "{both}");
        let frozen = with(&|o| (o.mode, o.layer_decay) = (Mode::FeatureExtract, Some(0.7)));
        assert!(frozen.contains("need --mode full or staged"), "{frozen}");
        let nesterov = with(&|o| (o.nesterov, o.optimizer) = (true, OptimizerKind::Adamw));
        assert!(nesterov.starts_with("--nesterov needs --optimizer sgd"), "{nesterov}");
        let cycle = with(&|o| (o.scheduler, o.warmup_epochs) = (SchedulerKind::OneCycle, 1));
        assert!(cycle.contains("one-cycle warms up itself"), "{cycle}");
        assert!(with(&|o| o.cache_features = true).is_empty(), "staged mode caches its frozen epochs' features");
        let early = with(&|o| (o.freeze_epochs, o.early_stop) = (2, Some(2)));
        assert!(early.starts_with("--early-stop 2: the backbone is frozen for --freeze-epochs 2"), "{early}");
        let not_staged = with(&|o| (o.mode, o.freeze_epochs) = (Mode::Full, 3));
        assert!(not_staged.starts_with("--freeze-epochs 3: only --mode staged"), "{not_staged}");
    }

    #[test]
    fn a_resumed_run_keeps_its_knobs() {
        let config = FinetuneConfig::new(&knobs(2, None, Some(0.9))).unwrap();
        let saved = serde_json::to_string(&config).unwrap();
        let given = BTreeSet::from(["ema".to_owned()]);
        let error = FinetuneConfig::resume(&saved, &config.out, &knobs(2, None, Some(0.5)), &given).unwrap_err();
        assert!(error.to_string().contains("--ema cannot be given with it"), "{error}");
        let resumed = FinetuneConfig::resume(&saved, &config.out, &TrainOptions::defaults(), &BTreeSet::new()).unwrap();
        assert_eq!((resumed.accumulate, resumed.ema), (2, Some(0.9)));
    }

    #[test]
    fn the_feature_cache_may_change_on_resume_and_needs_a_frozen_backbone() {
        let config = FinetuneConfig::new(&knobs(1, None, None)).unwrap();
        assert_eq!((config.mode, config.feature_cache.clone()), (Mode::FeatureExtract, None));
        let saved = serde_json::to_string(&config).unwrap();
        let options = TrainOptions { feature_cache: Some("target/test-runs/cache".into()), ..TrainOptions::defaults() };
        let given = BTreeSet::from(["feature_cache".to_owned()]);
        let resumed = FinetuneConfig::resume(&saved, &config.out, &options, &given).unwrap();
        assert_eq!(resumed.feature_cache, Some(std::path::absolute("target/test-runs/cache").unwrap()));
        let full = augmented(|o| (o.mode, o.feature_cache) = (Mode::Full, Some("cache".into())));
        let error = FinetuneConfig::new(&full).unwrap_err().to_string();
        assert!(error.starts_with("--feature-cache keeps a frozen backbone's features: it needs --mode"), "{error}");
        let full = serde_json::to_string(&FinetuneConfig::new(&augmented(|o| o.mode = Mode::Full)).unwrap()).unwrap();
        let error = FinetuneConfig::resume(&full, &config.out, &options, &given).unwrap_err().to_string();
        assert!(error.contains("this run trains every weight"), "{error}");
    }

    #[test]
    fn a_staged_run_cannot_be_resumed_to_end_frozen() {
        let config = FinetuneConfig::new(&staged(5, 3)).unwrap();
        let saved = serde_json::to_string(&config).unwrap();
        let (epochs, given) =
            (TrainOptions { epochs: 3, ..TrainOptions::defaults() }, BTreeSet::from(["epochs".to_owned()]));
        let error = FinetuneConfig::resume(&saved, &config.out, &epochs, &given).unwrap_err().to_string();
        assert!(error.starts_with("--epochs 3: this staged run freezes its backbone for 3 epoch(s)"), "{error}");
    }

    /// A new run's options with random weights, `--out` given, changed by `change`.
    fn augmented(change: impl FnOnce(&mut TrainOptions)) -> TrainOptions {
        let mut options = knobs(1, None, None);
        change(&mut options);
        options
    }

    #[test]
    fn bad_augmentation_values_are_refused_in_one_line_naming_the_option() {
        for (options, expected) in [
            (augmented(|o| o.random_erase = 1.5), "--random-erase 1.5: must be in [0, 1]"),
            (augmented(|o| o.randaugment_m = 31), "--randaugment-m 31: must be a magnitude bin from 0 to 30"),
            (augmented(|o| o.color_jitter = Some(vec![0.4, 0.4])), "--color-jitter 0.4,0.4: must be four amounts"),
            (augmented(|o| o.color_jitter = Some(vec![0.4, 0.4, 0.4, 0.6])), "--color-jitter 0.4,0.4,0.4,0.6: the hue"),
            (augmented(|o| o.color_jitter = Some(vec![-1.0, 0.0, 0.0, 0.0])), "--color-jitter -1,0,0,0: the amounts"),
            (augmented(|o| o.mixup = Some(0.0)), "--mixup 0: α must be a positive number"),
            (
                augmented(|o| o.cutmix = Some(1.0)),
                "--cutmix mixes the images of a training batch: it needs --mode full",
            ),
            (
                augmented(|o| (o.cache_features, o.augment) = (true, Preset::Randaugment)),
                "--cache-features trains on un-augmented features",
            ),
        ] {
            let error = FinetuneConfig::new(&options).unwrap_err().to_string();
            assert!(error.starts_with(expected) && !error.contains('\n'), "{error}");
        }
    }

    #[test]
    fn augmentation_is_saved_resumed_and_absent_from_older_configs_as_the_tutorials() {
        let options = augmented(|o| {
            (o.mode, o.augment, o.random_erase, o.mixup, o.cutmix) =
                (Mode::Full, Preset::Randaugment, 0.25, Some(0.2), Some(1.0));
            o.color_jitter = Some(vec![0.4, 0.4, 0.4, 0.1]);
        });
        let config = FinetuneConfig::new(&options).unwrap();
        let recipe = config.augment_recipe();
        assert_eq!(
            (recipe.preset, recipe.random_erase, recipe.color_jitter),
            (Preset::Randaugment, 0.25, Some([0.4, 0.4, 0.4, 0.1]))
        );
        assert_eq!(config.mix_recipe(), MixRecipe { mixup: Some(0.2), cutmix: Some(1.0) });
        assert!(config.describe().contains("randaugment (n 2, m 9)"), "{}", config.describe());
        let saved = serde_json::to_string(&config).unwrap();
        let resumed = FinetuneConfig::resume(&saved, &config.out, &TrainOptions::defaults(), &BTreeSet::new()).unwrap();
        assert_eq!((resumed.augment_recipe(), resumed.mix_recipe()), (recipe, config.mix_recipe()));
        let given = BTreeSet::from(["augment".to_owned()]);
        let error = FinetuneConfig::resume(&saved, &config.out, &options, &given).unwrap_err();
        assert!(error.to_string().contains("--augment cannot be given with it"), "{error}");
        let serde_json::Value::Object(mut older) = serde_json::to_value(&config).unwrap() else { panic!("an object") };
        for key in ["augment", "randaugment_n", "randaugment_m", "random_erase", "color_jitter", "mixup", "cutmix"] {
            older.remove(key).unwrap();
        }
        let loaded: FinetuneConfig = serde_json::from_value(serde_json::Value::Object(older)).unwrap();
        assert!(loaded.augment_recipe().is_tutorial() && !loaded.mix_recipe().mixes());
        assert!(config.to_options_toml().unwrap().contains("augment = \"randaugment\""));
    }

    #[test]
    fn the_imbalance_options_are_saved_refused_on_resume_and_default_in_older_configs() {
        let options = augmented(|o| {
            (o.monitor, o.sampler, o.class_weights) =
                (Monitor::ValMacroF1, Sampler::Balanced, Some(ClassWeighting::Auto))
        });
        let config = FinetuneConfig::new(&options).unwrap();
        let said = config.describe();
        assert!(
            said.contains("class weights auto, class-balanced sampler") && said.contains("best epoch by val_macro_f1"),
            "{said}"
        );
        let saved = serde_json::to_string(&config).unwrap();
        let resumed = FinetuneConfig::resume(&saved, &config.out, &TrainOptions::defaults(), &BTreeSet::new()).unwrap();
        assert_eq!(
            (resumed.monitor, resumed.sampler, resumed.class_weights),
            (Monitor::ValMacroF1, Sampler::Balanced, Some(ClassWeighting::Auto))
        );
        for id in ["monitor", "sampler", "class_weights"] {
            let error =
                FinetuneConfig::resume(&saved, &config.out, &options, &BTreeSet::from([id.to_owned()])).unwrap_err();
            assert!(
                error.to_string().contains(&format!("--{} cannot be given with it", id.replace('_', "-"))),
                "{error}"
            );
        }
        let toml = config.to_options_toml().unwrap();
        assert!(toml.contains("monitor = \"val_macro_f1\"") && toml.contains("class_weights = \"auto\""), "{toml}");
        let serde_json::Value::Object(mut older) = serde_json::to_value(&config).unwrap() else { panic!("an object") };
        for key in ["monitor", "sampler", "class_weights"] {
            older.remove(key).unwrap();
        }
        let loaded: FinetuneConfig = serde_json::from_value(serde_json::Value::Object(older)).unwrap();
        assert_eq!((loaded.monitor, loaded.sampler, loaded.class_weights), (Monitor::ValAcc, Sampler::Shuffle, None));
        let missing = augmented(|o| o.class_weights = Some(ClassWeighting::File("no/such/weights.csv".into())));
        let error = FinetuneConfig::new(&missing).unwrap_err().to_string();
        assert!(error.starts_with("--class-weights no/such/weights.csv: no such file"), "{error}");
    }

    #[test]
    fn the_image_size_defaults_to_the_backbones_crop_and_a_given_one_wins() {
        let config = FinetuneConfig::new(&knobs(1, None, None)).unwrap();
        assert_eq!(config.sizing(), Sizing::TUTORIAL);
        let config = FinetuneConfig::new(&augmented(|o| o.image_size = Some(160))).unwrap();
        assert_eq!(config.sizing(), Sizing::tutorial(160));
    }
}
