//! What defines a fine-tuning run, and where each value comes from: the
//! options a user gives ([`TrainOptions`], on the command line or in a
//! `--config` TOML file with the same keys, flags winning), checked and
//! resolved into a [`FinetuneConfig`] (absolute paths, a fresh output folder,
//! every number validated with a one-line reason). The config is saved with
//! the run, so `--resume` replays it; [`FinetuneConfig::resume`] decides which
//! options may change then.

use crate::models::Arch;
use crate::names::Named;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Frozen pretrained backbone, new head trained.
    FeatureExtract,
    /// Every weight trained.
    Full,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OptimizerKind {
    /// SGD with momentum (torch.optim.SGD), the tutorial's.
    Sgd,
    /// Adam with decoupled weight decay (torch.optim.AdamW).
    Adamw,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SchedulerKind {
    /// StepLR: the rate times --gamma every --step-size epochs (the tutorial's).
    Step,
    /// Cosine annealing from --lr towards 0 over the run.
    Cosine,
}

/// The options of a training run as a user gives them. Every field is also a
/// key of a `--config` TOML file (`batch-size = 8`, or `batch_size`).
#[derive(Debug, Clone, clap::Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainOptions {
    /// feature-extract: frozen backbone, new head; full: train every weight.
    #[arg(long, value_enum, default_value = "feature-extract")]
    pub mode: Mode,
    /// Backbone.
    #[arg(long, value_enum, default_value = "resnet18")]
    pub arch: Arch,
    /// Image folder: <DIR>/train/<class>/* and <DIR>/<val-dir>/<class>/*.
    #[arg(long, value_name = "DIR", default_value = "data/hymenoptera_data")]
    pub data: PathBuf,
    /// Name of the validation folder inside --data.
    #[arg(long, value_name = "NAME", default_value = "val")]
    pub val_dir: String,
    /// Hold out this fraction of train/ (per class, fixed by --seed) for validation, for folders without a val folder.
    #[arg(long, value_name = "FRACTION")]
    pub val_split: Option<f64>,
    /// Pretrained weights (.pth state_dict or .safetensors) [default: the arch's file in --models-dir].
    #[arg(long, value_name = "FILE")]
    pub weights: Option<PathBuf>,
    /// Where scripts/fetch-models.sh puts weights.
    #[arg(long, value_name = "DIR", default_value = "models")]
    pub models_dir: PathBuf,
    /// Train from random weights instead of pretrained ones.
    #[arg(long)]
    pub random_init: bool,
    /// Epochs to train (with --resume: the new total, to train more).
    #[arg(long, default_value_t = 25)]
    pub epochs: usize,
    /// Images per training step.
    #[arg(long, default_value_t = 4)]
    pub batch_size: usize,
    #[arg(long, value_enum, default_value = "sgd")]
    pub optimizer: OptimizerKind,
    /// Learning rate (at the start, after any warm-up).
    #[arg(long, default_value_t = 0.001)]
    pub lr: f64,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,
    /// Weight decay (SGD: L2 added to the gradient, as torch; AdamW: decoupled).
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Learning-rate schedule, per epoch.
    #[arg(long, value_enum, default_value = "step")]
    pub scheduler: SchedulerKind,
    /// StepLR: multiply the learning rate by --gamma every this many epochs.
    #[arg(long, default_value_t = 7)]
    pub step_size: usize,
    /// StepLR: the factor.
    #[arg(long, default_value_t = 0.1)]
    pub gamma: f64,
    /// Epochs of linear warm-up to --lr before the schedule starts.
    #[arg(long, value_name = "EPOCHS", default_value_t = 0)]
    pub warmup_epochs: usize,
    /// Label smoothing of the training loss (as torch's CrossEntropyLoss).
    #[arg(long, value_name = "EPSILON", default_value_t = 0.0)]
    pub label_smoothing: f64,
    /// Stop when val accuracy has not improved for this many epochs.
    #[arg(long, value_name = "PATIENCE")]
    pub early_stop: Option<usize>,
    /// Side of the square images the network sees (validation resizes to 8/7 of it, then crops).
    #[arg(long, value_name = "PIXELS", default_value_t = 224)]
    pub image_size: i64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output folder [default: runs/<arch>-<mode>, or the next free runs/<arch>-<mode>-N].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Replace what an existing --out folder holds.
    #[arg(long)]
    pub overwrite: bool,
    /// Threads that decode and augment images [default: one per CPU].
    #[arg(long)]
    pub workers: Option<usize>,
    /// libtorch's compute threads [default: libtorch's choice, or OMP_NUM_THREADS].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Memory for decoded images in MB (train split first); images beyond it
    /// are kept as file bytes and decoded at each use: slower, same results.
    #[arg(long, value_name = "MB", default_value_t = crate::data::loader::DEFAULT_PIXEL_BUDGET_MB)]
    pub cache_mb: u64,
    /// feature-extract only: compute train features once (no augmentation) and train the head on them.
    #[arg(long)]
    pub cache_features: bool,
    /// Fail on the first undecodable image instead of skipping it.
    #[arg(long)]
    pub strict: bool,
    /// Mixed precision on CUDA: fp16 autocast forward passes, loss scaling in full mode.
    #[arg(long)]
    pub amp: bool,
}

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
    /// The pretrained weights, absolute; none for random init.
    pub weights: Option<PathBuf>,
    pub epochs: usize,
    pub batch_size: usize,
    #[serde(default = "default_optimizer")]
    pub optimizer: OptimizerKind,
    pub lr: f64,
    pub momentum: f64,
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
    #[serde(default)]
    pub early_stop: Option<usize>,
    #[serde(default = "default_image_size")]
    pub image_size: i64,
    pub seed: u64,
    pub out: PathBuf,
    pub workers: usize,
    #[serde(default)]
    pub threads: Option<usize>,
    pub cache_features: bool,
    #[serde(default = "default_cache_mb")]
    pub cache_mb: u64,
    pub strict: bool,
    #[serde(default)]
    pub amp: bool,
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
fn default_image_size() -> i64 {
    crate::data::transforms::CROP_SIZE
}
fn default_cache_mb() -> u64 {
    crate::data::loader::DEFAULT_PIXEL_BUDGET_MB
}

/// Options that may be given with `--resume`: they change how the run is
/// carried out or extend it, not its recipe.
const RESUMABLE: &[&str] = &["epochs", "data", "workers", "threads", "cache_mb"];

impl TrainOptions {
    /// These options with the keys of a TOML `file` applied where the
    /// command line did not give them (`given`: the option ids it gave).
    pub fn with_file(self, file: &Path, given: &BTreeSet<String>) -> Result<Self> {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("--config {}: cannot read", file.display()))?;
        let table: toml::Table =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("--config {}: {}", file.display(), one_line(&e)))?;
        let serde_json::Value::Object(mut merged) = serde_json::to_value(&self)? else { bail!("options") };
        for (key, value) in table {
            let id = key.replace('-', "_");
            if !merged.contains_key(&id) {
                bail!("--config {}: unknown key {key:?} (keys are the option names, e.g. batch-size)", file.display());
            }
            if !given.contains(&id) {
                merged.insert(id, serde_json::to_value(value)?);
            }
        }
        serde_path_to_error::deserialize(serde_json::Value::Object(merged))
            .map_err(|e| anyhow::anyhow!("--config {}: key {}: {}", file.display(), e.path(), e.inner()))
    }
}

fn one_line(error: &impl std::fmt::Display) -> String {
    error.to_string().split_whitespace().collect::<Vec<_>>().join(" ")
}

impl FinetuneConfig {
    /// Resolves and validates a new run's options.
    pub fn new(options: &TrainOptions) -> Result<Self> {
        validate(options)?;
        let weights = if options.random_init {
            None
        } else {
            let path = options.weights.clone().unwrap_or_else(|| default_weights(options.arch, &options.models_dir));
            if !path.is_file() {
                bail!(
                    "{}: weights file not found. Run scripts/fetch-models.sh, pass --weights FILE, or use --random-init",
                    path.display()
                );
            }
            Some(absolute(&path)?)
        };
        Ok(Self {
            mode: options.mode,
            arch: options.arch,
            data: absolute(&options.data)?,
            val_dir: options.val_dir.clone(),
            val_split: options.val_split,
            weights,
            epochs: options.epochs,
            batch_size: options.batch_size,
            optimizer: options.optimizer,
            lr: options.lr,
            momentum: options.momentum,
            weight_decay: options.weight_decay,
            scheduler: options.scheduler,
            step_size: options.step_size,
            gamma: options.gamma,
            warmup_epochs: options.warmup_epochs,
            label_smoothing: options.label_smoothing,
            early_stop: options.early_stop,
            image_size: options.image_size,
            seed: options.seed,
            out: output_folder(options)?,
            workers: options.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
            threads: options.threads,
            cache_features: options.cache_features,
            cache_mb: options.cache_mb,
            strict: options.strict,
            amp: options.amp,
            overwrite: options.overwrite,
        })
    }

    /// The saved config of the run in `out`, with the options given beside
    /// `--resume` applied: those in `RESUMABLE` change it (`--epochs` extends
    /// the run), any other is refused in one line.
    pub fn resume(saved_json: &str, out: &Path, options: &TrainOptions, given: &BTreeSet<String>) -> Result<Self> {
        let mut config: FinetuneConfig = serde_json::from_str(saved_json)
            .with_context(|| format!("{}: the saved run config does not parse", out.display()))?;
        if let Some(refused) = given.iter().find(|id| !RESUMABLE.contains(&id.as_str())) {
            bail!(
                "--resume continues the run's own recipe: --{} cannot be given with it (allowed: {}); start a new run with --out to change it",
                refused.replace('_', "-"),
                RESUMABLE.iter().map(|id| format!("--{}", id.replace('_', "-"))).collect::<Vec<_>>().join(", ")
            );
        }
        let mut check = options.clone();
        check.epochs = if given.contains("epochs") { options.epochs } else { config.epochs };
        validate(&check)?;
        if given.contains("epochs") {
            config.epochs = options.epochs;
        }
        if given.contains("data") {
            config.data = absolute(&options.data)?;
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
        config.out = out.to_owned();
        Ok(config)
    }

    /// The validation folder, or how it is split off.
    pub fn val_description(&self) -> String {
        match self.val_split {
            Some(fraction) => format!("{:.0} % of train/ held out", fraction * 100.0),
            None => format!("{}/", self.val_dir),
        }
    }

    /// One line naming the recipe, printed at start.
    pub fn describe(&self) -> String {
        let schedule = match self.scheduler {
            SchedulerKind::Step => format!("StepLR({}, {})", self.step_size, self.gamma),
            SchedulerKind::Cosine => "cosine".into(),
        };
        let warmup = if self.warmup_epochs > 0 {
            format!(" after {} warm-up epoch(s)", self.warmup_epochs)
        } else {
            String::new()
        };
        let optimizer = match self.optimizer {
            OptimizerKind::Sgd => format!("SGD lr {} momentum {}", self.lr, self.momentum),
            OptimizerKind::Adamw => format!("AdamW lr {}", self.lr),
        };
        let mut extras = Vec::new();
        if self.weight_decay > 0.0 {
            extras.push(format!("weight decay {}", self.weight_decay));
        }
        if self.label_smoothing > 0.0 {
            extras.push(format!("label smoothing {}", self.label_smoothing));
        }
        if let Some(patience) = self.early_stop {
            extras.push(format!("early stop after {patience} epoch(s) without improvement"));
        }
        if self.amp {
            extras.push("mixed precision (--amp)".into());
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

/// Every number checked, with a one-line reason naming the option.
fn validate(o: &TrainOptions) -> Result<()> {
    let positive = |name: &str, value: f64| -> Result<()> {
        if !(value.is_finite() && value > 0.0) {
            bail!("--{name} {value}: must be a positive number");
        }
        Ok(())
    };
    positive("lr", o.lr)?;
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
    for (name, value) in [("epochs", o.epochs), ("batch-size", o.batch_size), ("step-size", o.step_size)] {
        if value == 0 {
            bail!("--{name} 0: must be at least 1");
        }
    }
    for (name, value) in [("workers", o.workers), ("threads", o.threads), ("early-stop", o.early_stop)] {
        if value == Some(0) {
            bail!("--{name} 0: must be at least 1");
        }
    }
    if o.warmup_epochs > 0 && o.warmup_epochs >= o.epochs {
        bail!("--warmup-epochs {}: must be fewer than --epochs {}", o.warmup_epochs, o.epochs);
    }
    if !(32..=1024).contains(&o.image_size) {
        bail!("--image-size {}: must be between 32 and 1024 pixels", o.image_size);
    }
    if let Some(fraction) = o.val_split {
        if !(fraction > 0.0 && fraction < 1.0) {
            bail!("--val-split {fraction}: must be a fraction between 0 and 1 (e.g. 0.2)");
        }
    }
    if o.val_dir.is_empty() || o.val_dir.contains(['/', '\\']) || o.val_dir == ".." || o.val_dir == "." {
        bail!("--val-dir {:?}: must be the name of a folder inside --data", o.val_dir);
    }
    if o.cache_features && o.mode != Mode::FeatureExtract {
        bail!("--cache-features needs --mode feature-extract (in full mode the features change every step)");
    }
    Ok(())
}

/// Where `scripts/fetch-models.sh` puts an architecture's weights.
pub fn default_weights(arch: Arch, models_dir: &Path) -> PathBuf {
    let file = match arch {
        Arch::Resnet18 => "resnet18-f37072fd.pth",
        Arch::Resnet34 => "resnet34-b627a593.pth",
        Arch::Resnet50 => "resnet50-0676ba61.pth",
        Arch::EfficientnetLite0 => "efficientnet-lite0-57934424.pth",
    };
    models_dir.join(file)
}

/// `--out` as given (refused when it holds a run, unless `--overwrite`), or
/// `runs/<arch>-<mode>`, or the next free `runs/<arch>-<mode>-N`.
fn output_folder(options: &TrainOptions) -> Result<PathBuf> {
    let holds_files = |dir: &Path| std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some());
    if let Some(out) = &options.out {
        return absolute(out);
    }
    let base = format!("runs/{}-{}", options.arch.name(), options.mode.name());
    let free = std::iter::once(PathBuf::from(&base))
        .chain((2..).map(|n| PathBuf::from(format!("{base}-{n}"))))
        .find(|dir| options.overwrite || !holds_files(dir))
        .context("no free output folder")?;
    if free != Path::new(&base) {
        println!(
            "note: {base} holds an earlier run; this one goes to {} (--out to choose, --overwrite to replace)",
            free.display()
        );
    }
    absolute(&free)
}

fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("{}: cannot make the path absolute", path.display()))
}
