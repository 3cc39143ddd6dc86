//! The options of a training run as a user gives them: on the command line
//! (a `clap::Args` struct the binary flattens) or in a `--config` TOML file
//! with the same keys, flags winning. [`super::config`] checks and resolves
//! them.

pub use super::class_weights::ClassWeighting;
pub use super::monitor::Monitor;
use crate::cli::data_parallel::{BackendChoice, DataParallel};
pub use crate::data::augment::Preset;
pub use crate::data::sampler::Sampler;
use crate::models::Arch;
pub use crate::train::amp::Precision;
pub use crate::train::optim::OptimizerKind;
pub use crate::train::schedule::SchedulerKind;
use anyhow::{bail, Context, Result};
use clap::{Args, FromArgMatches};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// `--threshold`'s default: a label is predicted when more likely than not.
pub const DEFAULT_THRESHOLD: f64 = 0.5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Frozen pretrained backbone, new head trained.
    FeatureExtract,
    /// Every weight trained.
    Full,
    /// fastai's fine_tune: the backbone frozen (as feature-extract) for --freeze-epochs, then every weight trained; the schedule restarts at the unfreezing.
    Staged,
}

/// The images `--folds` deals into folds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FoldsOver {
    /// train/ and the --val-dir folder pooled (a labels file: all its rows).
    #[default]
    TrainAndVal,
    /// train/ alone; the val folder is left untouched (a labels file: its train rows).
    Train,
}

/// The options of a training run as a user gives them. Every field is also a
/// key of a `--config` TOML file (`batch-size = 8`, or `batch_size`).
#[derive(Debug, Clone, clap::Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainOptions {
    /// feature-extract: frozen backbone, new head; full: train every weight; staged: frozen for --freeze-epochs, then full.
    #[arg(long, value_enum, default_value = "feature-extract")]
    pub mode: Mode,
    /// The pretrained backbone.
    #[arg(long, value_enum, default_value = "resnet18")]
    pub arch: Arch,
    #[arg(
        long,
        value_name = "DIR",
        help = "Image folder: <DIR>/train/<class>/* and <DIR>/<val-dir>/<class>/*; with --labels, where its relative paths start [default: data/hymenoptera_data; with --labels, the labels file's folder]"
    )]
    pub data: Option<PathBuf>,
    /// Labels from a .csv or .tsv file instead of class folders: a header row naming path and label (and optionally split: train or val, train when empty), one image per row, paths relative to the file's folder or to --data when given. Bad rows are reported by line and skipped (--strict: the first is an error) [default: none: the folder layout].
    #[arg(long, value_name = "FILE")]
    pub labels: Option<PathBuf>,
    /// Multi-label data: the label column of --labels holds labels separated by this character (e.g. ';' or ' '); trains sigmoid outputs with binary cross-entropy and keeps the epoch of the best val mAP [default: none: one label per image].
    #[arg(long, value_name = "C")]
    pub label_delim: Option<char>,
    /// Multi-label: a label is predicted when its probability is above this (F1, exact match, predict).
    #[arg(long, value_name = "T", default_value_t = DEFAULT_THRESHOLD)]
    pub threshold: f64,
    /// Name of the validation folder inside --data.
    #[arg(long, value_name = "NAME", default_value = "val")]
    pub val_dir: String,
    /// Hold out this fraction of train/ (per class, fixed by --seed) for validation, for folders without a val folder [default: none: the --val-dir folder].
    #[arg(long, value_name = "FRACTION")]
    pub val_split: Option<f64>,
    /// Stratified K-fold cross-validation: the images of --folds-over dealt into K folds of the same class mix; --fold validates, the other K−1 train [default: none: the --val-dir folder validates].
    #[arg(long, value_name = "K")]
    pub folds: Option<usize>,
    /// With --folds: the fold that validates, 0 to K−1 (a sweep's [grid] may list them all) [default: none; needed with --folds].
    #[arg(long, value_name = "I")]
    pub fold: Option<usize>,
    /// With --folds: the seed of the fold assignment, apart from --seed, so runs of different seeds validate on the same images.
    #[arg(long, value_name = "S", default_value_t = 0)]
    pub fold_seed: u64,
    /// With --folds: the images dealt into folds: train-and-val (train/ and the --val-dir folder pooled; with --labels every row), or train (train/ alone, the val folder left untouched for a final finetune eval; with --labels the train rows).
    #[arg(long, value_enum, value_name = "IMAGES", default_value = "train-and-val")]
    pub folds_over: FoldsOver,
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
    /// The training optimizer.
    #[arg(long, value_enum, default_value = "sgd")]
    pub optimizer: OptimizerKind,
    /// Learning rate (at the start, after any warm-up).
    #[arg(long, default_value_t = 0.001)]
    pub lr: f64,
    /// SGD momentum (and RMSprop's).
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,
    /// SGD with Nesterov momentum (torch.optim.SGD's nesterov=True).
    #[arg(long)]
    pub nesterov: bool,
    /// Discriminative rates: each layer depth (stem, every block, head) trains at a rate geometric from --lr/F at the stem to --lr at the head (fastai's lr_mult) [default: one rate].
    #[arg(long, value_name = "F")]
    pub lr_mult: Option<f64>,
    /// Layer-wise rate decay: depth d of L trains at --lr·D^(L-1-d), the head at --lr (timm's --layer-decay) [default: one rate].
    #[arg(long, value_name = "D")]
    pub layer_decay: Option<f64>,
    /// --mode staged: epochs with the backbone frozen, of --epochs (batch norm in eval mode while frozen).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub freeze_epochs: usize,
    /// Weight decay (SGD: L2 added to the gradient, as torch; AdamW: decoupled).
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Learning-rate schedule (per epoch; one-cycle per batch).
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
    /// Weight the training loss per class, as torch's CrossEntropyLoss(weight=): auto (scikit-learn's "balanced", n_images / (n_classes · count) over the train split) or a FILE of class,weight lines [default: none].
    #[arg(long, value_name = "auto|FILE")]
    pub class_weights: Option<ClassWeighting>,
    /// How an epoch draws its training images: shuffle (each once), or balanced (as many draws with replacement, each class equally likely: torch's WeightedRandomSampler with weights 1/count; data-parallel ranks share the draws out as DistributedSampler does).
    #[arg(long, value_enum, default_value = "shuffle")]
    pub sampler: Sampler,
    /// Sum the gradients of N consecutive batches (each batch's loss scaled by 1/N, as PyTorch's `(loss / N).backward()`) before each optimizer step; an epoch's last, shorter group steps too. Batch norm still sees one batch at a time.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub accumulate: usize,
    /// Clip each optimizer step's gradients to this total L2 norm, as torch.nn.utils.clip_grad_norm_ (after accumulation and the data-parallel average) [default: no clipping].
    #[arg(long, value_name = "MAX_NORM")]
    pub clip_grad_norm: Option<f64>,
    /// Keep an exponential moving average of the weights and batch-norm statistics with this decay after every optimizer step (timm's ModelEmaV2, e.g. 0.999), evaluated on val beside the model each epoch; the best of either is kept [default: none].
    #[arg(long, value_name = "DECAY")]
    pub ema: Option<f64>,
    /// The val metric that picks the best epoch (the saved model, the summary) and that --early-stop watches; val_loss is minimised, the others maximised.
    #[arg(long, value_enum, value_name = "METRIC", default_value = "val_acc")]
    pub monitor: Monitor,
    /// Stop when the --monitor metric has not improved for this many epochs [default: never, train every --epochs].
    #[arg(long, value_name = "PATIENCE")]
    pub early_stop: Option<usize>,
    /// Side of the square images the network sees; validation resizes in the backbone's proportion (256/224 for the ResNets), then crops [default: the backbone's published crop, 224 for the ResNets].
    #[arg(long, value_name = "PIXELS")]
    pub image_size: Option<i64>,
    /// Augmentation after the random crop and flip, as torchvision v2's: tutorial (none), trivialaugment (TrivialAugmentWide), randaugment, autoaugment (ImageNet policy), augmix.
    #[arg(long, value_enum, default_value = "tutorial")]
    pub augment: Preset,
    /// RandAugment: operations per image.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub randaugment_n: usize,
    /// RandAugment: the magnitude bin of the operations, 0 to 30.
    #[arg(long, value_name = "M", default_value_t = 9)]
    pub randaugment_m: usize,
    /// Probability of erasing a random box of each normalized training image to 0, as torchvision's RandomErasing (scale 0.02–0.33, ratio 0.3–3.3).
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    pub random_erase: f64,
    /// ColorJitter's brightness, contrast, saturation and hue amounts (hue at most 0.5), applied in random order after the flip, before --augment [default: none].
    #[arg(long, value_name = "B,C,S,H", value_delimiter = ',')]
    pub color_jitter: Option<Vec<f64>>,
    /// MixUp each training batch with itself rolled by one, λ ~ Beta(ALPHA, ALPHA) per batch, as torchvision v2's MixUp (--mode full) [default: none].
    #[arg(long, value_name = "ALPHA")]
    pub mixup: Option<f64>,
    /// CutMix each training batch with itself rolled by one, λ ~ Beta(ALPHA, ALPHA) per batch, as torchvision v2's CutMix; with --mixup, one of the two per batch at even odds (--mode full) [default: none].
    #[arg(long, value_name = "ALPHA")]
    pub cutmix: Option<f64>,
    #[command(flatten)]
    pub seed: crate::cli::SeedArg,
    #[arg(
        help_heading = crate::cli::HOW_IT_RUNS,
        long,
        value_name = "DIR",
        help = "Output folder [default: runs/<arch>-<mode>, or the next free runs/<arch>-<mode>-N]"
    )]
    pub out: Option<PathBuf>,
    /// Replace what an existing --out folder holds.
    #[arg(help_heading = crate::cli::HOW_IT_RUNS, long)]
    pub overwrite: bool,
    /// Threads that decode and augment images [default: one per CPU].
    #[arg(help_heading = crate::cli::HOW_IT_RUNS, long)]
    pub workers: Option<usize>,
    /// libtorch's compute threads [default: libtorch's choice, or OMP_NUM_THREADS].
    #[arg(help_heading = crate::cli::HOW_IT_RUNS, long)]
    pub threads: Option<usize>,
    /// Memory for decoded images in MB (train split first); images beyond it
    /// are kept as file bytes and decoded at each use: slower, same results.
    #[arg(help_heading = crate::cli::HOW_IT_RUNS, long, value_name = "MB", default_value_t = crate::data::loader::DEFAULT_PIXEL_BUDGET_MB)]
    pub cache_mb: u64,
    /// Keep the frozen backbone's features on disk in DIR (val images; train images too with --cache-features), keyed by backbone, weights file, image size, precision and each image's path, size and time: later runs, and a sweep's other points, load them instead of computing them (feature-extract and staged) [default: none].
    #[arg(help_heading = crate::cli::HOW_IT_RUNS, long, value_name = "DIR")]
    pub feature_cache: Option<PathBuf>,
    /// feature-extract only: compute train features once (no augmentation) and train the head on them.
    #[arg(long)]
    pub cache_features: bool,
    /// Fail on the first undecodable image (or bad --labels row) instead of skipping it.
    #[arg(long)]
    pub strict: bool,
    /// Mixed precision on CUDA: fp16 autocast forward passes, loss scaling in full mode.
    #[arg(long)]
    pub amp: bool,
    /// fp32, or bf16 autocast (CPUs with AMX or AVX-512 BF16 instructions; CUDA without loss scaling).
    #[arg(long, value_enum, default_value = "fp32")]
    pub precision: Precision,
    /// Run what the machine would run slowly: --precision bf16 on a CPU without bf16 instructions.
    #[arg(help_heading = crate::cli::HOW_IT_RUNS, long)]
    pub force: bool,
    /// Start N data-parallel ranks on this machine (the CPU cores split between them), as `torchrun --nproc-per-node N` would; --batch-size is per rank [default: one process, or the ranks torchrun or srun started].
    #[arg(help_heading = crate::cli::HOW_IT_RUNS, long, value_name = "N", value_parser = crate::cli::parse::at_least_one, allow_negative_numbers = true)]
    pub nproc: Option<usize>,
    /// The c10d backend between data-parallel ranks: auto (NCCL for CUDA devices, Gloo for the CPU), gloo or nccl.
    #[arg(help_heading = crate::cli::HOW_IT_RUNS, long, value_name = "NAME", value_enum, default_value_t = BackendChoice::Auto)]
    pub dist_backend: BackendChoice,
    /// Seconds a data-parallel rank waits for the others (joining, and each collective) before it stops with an error naming them.
    #[arg(help_heading = crate::cli::HOW_IT_RUNS, long, value_name = "S", value_parser = crate::cli::parse::at_least_one, allow_negative_numbers = true, default_value_t = 1800)]
    pub dist_timeout: usize,
}

impl TrainOptions {
    /// How the run is spread over data-parallel ranks.
    pub fn data_parallel(&self) -> DataParallel {
        DataParallel { nproc: self.nproc, backend: self.dist_backend, timeout_s: self.dist_timeout }
    }

    /// Every option at its default, as a command line without flags gives them.
    pub fn defaults() -> Self {
        let matches = Self::augment_args(clap::Command::new("options")).get_matches_from(["options"]);
        Self::from_arg_matches(&matches).expect("the defaults of the options parse")
    }

    /// The ids of the options (`batch_size`), in the order `--help` lists them.
    pub fn ids() -> Vec<String> {
        Self::augment_args(clap::Command::new("options")).get_arguments().map(|a| a.get_id().to_string()).collect()
    }

    /// These options with the keys of a TOML `file` applied where the
    /// command line did not give them (`given`: the option ids it gave).
    pub fn with_file(self, file: &Path, given: &BTreeSet<String>) -> Result<Self> {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("--config {}: cannot read", file.display()))?;
        let table: toml::Table = toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("--config {}: {}", file.display(), crate::cli::options_file::one_line(&e)))?;
        self.with_table(&table, given, &format!("--config {}", file.display()))
    }

    /// These options with the keys of `table` applied where `given` does not
    /// hold them; errors are one line starting with `source` (the file, and
    /// the table in it).
    pub fn with_table(self, table: &toml::Table, given: &BTreeSet<String>, source: &str) -> Result<Self> {
        let serde_json::Value::Object(mut merged) = serde_json::to_value(&self)? else { bail!("options") };
        for (key, value) in table {
            let id = key.replace('-', "_");
            if !merged.contains_key(&id) {
                bail!("{source}: unknown key {key:?} (keys are the option names, e.g. batch-size)");
            }
            if !given.contains(&id) {
                merged.insert(id, serde_json::to_value(value)?);
            }
        }
        serde_path_to_error::deserialize(serde_json::Value::Object(merged))
            .map_err(|e| anyhow::anyhow!("{source}: key {}: {}", e.path(), e.inner()))
    }
}
