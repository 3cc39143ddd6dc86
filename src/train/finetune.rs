//! The transfer-learning run: the PyTorch tutorial's epoch loop (train phase
//! then val phase, SGD + StepLR, keep the best val model), in two modes.
//! `feature-extract` freezes the backbone (eval mode, no autograd), computes
//! val features once, and trains only the new head; `full` trains everything.
//! On CUDA, batches are staged in pinned memory and copied without blocking,
//! and `--amp` runs the forward passes in mixed precision.

use super::amp;
use super::feed::{for_each_augmented_batch, single_threaded_helper};
use super::frozen::{augmented_features, backbone_features, predict_probabilities, FrozenPass};
use super::metrics::{format_minutes, EpochRow, History, PhaseTotals};
use super::sgd::{step_lr, Sgd};
use super::state::RunState;
use crate::data::image_folder::ImageFolder;
use crate::data::loader::{DecodedSplit, EpochPlan, PixelBudget, DEFAULT_PIXEL_BUDGET_MB};
use crate::models::checkpoint_io::save_safetensors;
use crate::models::winograd::Tape;
use crate::models::{Arch, Classifier};
use crate::report::{plots, progress};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

pub const BEST_MODEL_FILE: &str = "best_model.safetensors";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Frozen pretrained backbone, new head trained.
    FeatureExtract,
    /// Every weight trained.
    Full,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::FeatureExtract => "feature-extract",
            Mode::Full => "full",
        }
    }
}

fn default_cache_mb() -> u64 {
    DEFAULT_PIXEL_BUDGET_MB
}

/// Everything that defines a run; saved with it so `--resume` replays it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FinetuneConfig {
    pub mode: Mode,
    pub arch: Arch,
    pub data: PathBuf,
    pub weights: Option<PathBuf>,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub momentum: f64,
    pub step_size: usize,
    pub gamma: f64,
    pub seed: u64,
    pub out: PathBuf,
    pub workers: usize,
    pub cache_features: bool,
    /// Memory budget for decoded images (`--cache-mb`).
    #[serde(default = "default_cache_mb")]
    pub cache_mb: u64,
    pub strict: bool,
    /// Mixed precision on CUDA.
    #[serde(default)]
    pub amp: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub arch: String,
    pub mode: String,
    pub cache_features: bool,
    pub weights: Option<PathBuf>,
    pub device: String,
    pub amp: bool,
    /// Seconds the train phases of this process waited for augmented batches,
    /// and that as a share of their time.
    pub data_wait_seconds: f64,
    pub data_wait_share: f64,
    pub epochs: usize,
    pub best_val_acc: f64,
    pub best_epoch: usize,
    pub seconds: f64,
    pub train_images: usize,
    pub val_images: usize,
    pub classes: Vec<String>,
    pub bad_files: Vec<String>,
}

/// Set by Ctrl-C; the loop stops at the next batch boundary.
pub static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);

/// Decoded data of a run.
struct Splits {
    train: DecodedSplit,
    val: DecodedSplit,
    /// Val images after the val transform, `[N, 3, 224, 224]` in [0, 1].
    val_images: Tensor,
}

pub fn run(config: &FinetuneConfig, device: Device, resume: bool) -> Result<Summary> {
    let started = Instant::now();
    // Settle this thread's libtorch thread count first: helper threads set
    // theirs to one, and libtorch gives the last value set to any thread
    // that has not run an operator yet.
    let _ = tch::get_num_threads();
    amp::check_device(config.amp, device)?;
    prepare_out_dir(&config.out)?;
    // Decoding and augmentation run on rayon's pool; a second run in the same
    // process keeps the first pool.
    rayon::ThreadPoolBuilder::new()
        .num_threads(config.workers.max(1))
        .start_handler(|_| single_threaded_helper())
        .build_global()
        .ok();
    if !resume && super::state::state_path(&config.out).exists() {
        eprintln!(
            "note: {} already holds a run; its files are replaced as this one progresses (finetune --resume {} continues it instead)",
            config.out.display(),
            config.out.display()
        );
    }
    let splits = load_splits(config)?;
    let (model, mut sgd) = build_model(config, splits.train.classes.len(), device)?;
    let mut progress = if resume { Progress::restore(config, &model, &mut sgd)? } else { Progress::fresh(&model) };
    let frozen =
        (config.mode == Mode::FeatureExtract).then(|| FrozenFeatures::compute(&model, &splits, config, device));

    for epoch in progress.epochs_done..config.epochs {
        println!("Epoch {epoch}/{}", config.epochs - 1);
        println!("----------");
        tch::manual_seed((config.seed as i64) * 1000 + epoch as i64);
        let train_row = train_phase(&model, &mut sgd, &splits, frozen.as_ref(), config, epoch, device)?;
        println!("train Loss: {:.4} Acc: {:.4}", train_row.loss, train_row.acc);
        let (val_row, val_probs) = val_phase(&model, &splits, frozen.as_ref(), config, epoch, device);
        println!("val Loss: {:.4} Acc: {:.4}", val_row.loss, val_row.acc);
        println!();
        progress.record(train_row, val_row, val_probs, &model, config, &splits.train.classes)?;
        progress.save(config, &model, &sgd)?;
        if STOP_REQUESTED.load(Ordering::SeqCst) {
            bail!(interrupted_message(config, epoch));
        }
    }
    finish(config, device, (&model, &sgd), &splits, &progress, started)
}

/// The classifier with its pretrained backbone loaded (and frozen in
/// feature-extract mode), and SGD over the weights this mode trains.
fn build_model(config: &FinetuneConfig, num_classes: usize, device: Device) -> Result<(Classifier, Sgd)> {
    tch::manual_seed(config.seed as i64);
    let mut model = Classifier::new(config.arch, num_classes as i64, device);
    match &config.weights {
        Some(weights) => {
            model.load_backbone(weights)?;
            println!("weights: {} (pretrained backbone)", weights.display());
        }
        None => println!("weights: none (random init; pass --weights for transfer learning)"),
    }
    let mut params: Vec<(String, Tensor)> = model.head_vs.variables().into_iter().collect();
    if config.mode == Mode::FeatureExtract {
        model.backbone_vs.freeze();
    } else {
        params.extend(model.backbone_vs.variables());
    }
    let mut sgd = Sgd::new(params, config.momentum);
    if config.amp && config.mode == Mode::Full {
        sgd = sgd.with_loss_scaling();
    }
    Ok((model, sgd))
}

/// What the epoch loop carries from one epoch to the next, and what a
/// resume restores.
struct Progress {
    history: History,
    best_acc: f64,
    best_model: Vec<(String, Tensor)>,
    /// The best model's val probabilities, when this process computed them
    /// (for the prediction grid, which then needs no extra val pass).
    best_val_probs: Option<Tensor>,
    epochs_done: usize,
}

impl Progress {
    fn fresh(model: &Classifier) -> Self {
        Self {
            history: History::default(),
            best_acc: -1.0,
            best_model: snapshot(model),
            best_val_probs: None,
            epochs_done: 0,
        }
    }

    fn restore(config: &FinetuneConfig, model: &Classifier, sgd: &mut Sgd) -> Result<Self> {
        let state = RunState::load(&config.out)?;
        restore_tensors(&model.named_tensors(), &state.model);
        sgd.load_buffers(&state.momentum);
        println!("resuming {} after epoch {}", config.out.display(), state.epochs_done.saturating_sub(1));
        Ok(Self {
            history: state.history,
            best_acc: state.best_acc,
            best_model: state.best_model,
            best_val_probs: None,
            epochs_done: state.epochs_done,
        })
    }

    /// Adds an epoch's rows, keeping (and saving) the model when val accuracy
    /// strictly improves, as the tutorial does.
    fn record(
        &mut self,
        train_row: EpochRow,
        val_row: EpochRow,
        val_probs: Tensor,
        model: &Classifier,
        config: &FinetuneConfig,
        classes: &[String],
    ) -> Result<()> {
        let epoch = val_row.epoch;
        if val_row.acc > self.best_acc {
            self.best_acc = val_row.acc;
            self.best_model = snapshot(model);
            self.best_val_probs = Some(val_probs);
            save_model(&config.out.join(BEST_MODEL_FILE), &self.best_model, config, classes, self.best_acc, epoch)?;
        }
        self.history.push(train_row);
        self.history.push(val_row);
        self.epochs_done = epoch + 1;
        self.history.write_csv(&config.out.join("metrics.csv"))
    }

    /// Writes the resumable state (atomically).
    fn save(&self, config: &FinetuneConfig, model: &Classifier, sgd: &Sgd) -> Result<()> {
        RunState {
            config_json: serde_json::to_string(config)?,
            epochs_done: self.epochs_done,
            best_acc: self.best_acc,
            history: self.history.clone(),
            model: model.named_tensors(),
            momentum: sgd.named_buffers(),
            best_model: self.best_model.iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect(),
        }
        .save(&config.out)
    }
}

/// A copy of every model tensor.
fn snapshot(model: &Classifier) -> Vec<(String, Tensor)> {
    model.named_tensors().into_iter().map(|(n, t)| (n, t.copy())).collect()
}

/// Frozen-backbone features that stay fixed for the whole run.
struct FrozenFeatures {
    val: Tensor,
    /// Train images through the val transform (`--cache-features` only).
    train: Option<Tensor>,
}

impl FrozenFeatures {
    fn compute(model: &Classifier, splits: &Splits, config: &FinetuneConfig, device: Device) -> Self {
        let pass = frozen_pass(config, device);
        let val = backbone_features(model, &splits.val_images, pass, "val features");
        let train =
            config.cache_features.then(|| backbone_features(model, &splits.train.val_tensor(), pass, "train features"));
        Self { val, train }
    }
}

fn train_phase(
    model: &Classifier,
    sgd: &mut Sgd,
    splits: &Splits,
    frozen: Option<&FrozenFeatures>,
    config: &FinetuneConfig,
    epoch: usize,
    device: Device,
) -> Result<EpochRow> {
    let start = Instant::now();
    let lr = step_lr(config.lr, config.step_size, config.gamma, epoch);
    let totals = match frozen.and_then(|f| f.train.as_ref()) {
        Some(features) => train_head_on_features(model, sgd, features, &splits.train, config, epoch, lr)?,
        None => train_epoch(model, sgd, &splits.train, config, epoch, lr, device)?,
    };
    Ok(EpochRow {
        epoch,
        phase: "train".into(),
        loss: totals.loss(),
        acc: totals.acc(),
        seconds: start.elapsed().as_secs_f64(),
        data_wait_seconds: totals.data_wait_seconds,
    })
}

/// The val row of an epoch, and the val probabilities it was computed from.
fn val_phase(
    model: &Classifier,
    splits: &Splits,
    frozen: Option<&FrozenFeatures>,
    config: &FinetuneConfig,
    epoch: usize,
    device: Device,
) -> (EpochRow, Tensor) {
    let start = Instant::now();
    let labels = splits.val.labels_tensor();
    let probs = match frozen {
        Some(features) => head_probabilities(model, &features.val),
        None => predict_probabilities(model, &splits.val_images, frozen_pass(config, device), "val"),
    };
    let (loss, correct) = loss_and_correct(&probs, &labels);
    let acc = correct as f64 / splits.val.len() as f64;
    let row = EpochRow {
        epoch,
        phase: "val".into(),
        loss,
        acc,
        seconds: start.elapsed().as_secs_f64(),
        data_wait_seconds: 0.0,
    };
    (row, probs)
}

/// After the last epoch: the tutorial's closing lines, the best model back in
/// place for the figures, and summary.json.
fn finish(
    config: &FinetuneConfig,
    device: Device,
    (model, sgd): (&Classifier, &Sgd),
    splits: &Splits,
    progress: &Progress,
    started: Instant,
) -> Result<Summary> {
    let seconds = started.elapsed().as_secs_f64();
    println!("Training complete in {}", format_minutes(seconds));
    println!("Best val Acc: {:.6}", progress.best_acc);
    let (data_wait_seconds, data_wait_share) = data_wait(&progress.history);
    println!(
        "data: {data_wait_seconds:.1} s of the train phases ({:.1} %) waiting for or augmenting batches{}",
        100.0 * data_wait_share,
        if config.amp {
            format!(" | mixed precision: {} step(s) skipped on overflow", sgd.skipped_steps())
        } else {
            String::new()
        }
    );
    restore_tensors(&model.named_tensors(), &progress.best_model);
    plots::training_curves(&progress.history, &config.out)?;
    let val_probs = match &progress.best_val_probs {
        Some(probs) => probs.shallow_clone(),
        None => predict_probabilities(model, &splits.val_images, frozen_pass(config, device), "val grid"),
    };
    plots::prediction_grid(&splits.val, &val_probs, &config.out.join("val_predictions.png"))?;
    let best = progress.history.best_val().context("no epoch was run")?;
    let bad_files = splits.train.bad_files.iter().chain(&splits.val.bad_files);
    let summary = Summary {
        arch: config.arch.name().into(),
        mode: config.mode.name().into(),
        cache_features: config.cache_features,
        weights: config.weights.clone(),
        device: format!("{device:?}"),
        amp: config.amp,
        data_wait_seconds,
        data_wait_share,
        epochs: config.epochs,
        best_val_acc: progress.best_acc,
        best_epoch: best.epoch,
        seconds,
        train_images: splits.train.len(),
        val_images: splits.val.len(),
        classes: splits.train.classes.clone(),
        bad_files: bad_files.map(|b| format!("{}: {}", b.path.display(), b.reason)).collect(),
    };
    let json = serde_json::to_string_pretty(&summary)?;
    crate::models::checkpoint_io::write_atomically(&config.out.join("summary.json"), json.as_bytes())?;
    Ok(summary)
}

/// How this run's frozen-backbone passes go.
fn frozen_pass(config: &FinetuneConfig, device: Device) -> FrozenPass {
    FrozenPass { normalization: config.arch.normalization(), device, amp: config.amp }
}

/// Total seconds the train phases waited for batches, and their share of those phases' time.
fn data_wait(history: &History) -> (f64, f64) {
    let train = history.phase("train");
    let waited: f64 = train.iter().map(|r| r.data_wait_seconds).sum();
    let total: f64 = train.iter().map(|r| r.seconds).sum();
    (waited, if total > 0.0 { waited / total } else { 0.0 })
}

fn interrupted_message(config: &FinetuneConfig, epoch: usize) -> String {
    format!(
        "interrupted after epoch {epoch}; the run state is saved. Resume with: finetune --resume {}",
        config.out.display()
    )
}

/// Creates `out` and proves it is writable before any work is done.
fn prepare_out_dir(out: &Path) -> Result<()> {
    std::fs::create_dir_all(out)
        .with_context(|| format!("--out {}: cannot create the output folder", out.display()))?;
    let probe = out.join(".write-test");
    std::fs::write(&probe, b"ok").with_context(|| format!("--out {}: output folder is not writable", out.display()))?;
    std::fs::remove_file(&probe).ok();
    Ok(())
}

fn load_splits(config: &FinetuneConfig) -> Result<Splits> {
    let (train_folder, val_folder) = ImageFolder::scan_train_val(&config.data)?;
    let total = (train_folder.samples.len() + val_folder.samples.len()) as u64;
    let bar = progress::bar(total, "decoding images");
    let mut budget = PixelBudget::megabytes(config.cache_mb);
    let train = DecodedSplit::decode(&train_folder, config.strict, &mut budget, &bar)?;
    let val = DecodedSplit::decode(&val_folder, config.strict, &mut budget, &bar)?;
    bar.finish_and_clear();
    for bad in train.bad_files.iter().chain(&val.bad_files) {
        eprintln!("skipped {}: {}", bad.path.display(), bad.reason);
    }
    println!(
        "data: {} | classes {:?} | train {} images, val {} images, {} file(s) skipped",
        config.data.display(),
        train.classes,
        train.len(),
        val.len(),
        train.bad_files.len() + val.bad_files.len()
    );
    let ((train_bytes, train_encoded), (val_bytes, val_encoded)) = (train.memory(), val.memory());
    println!(
        "decoded images held: {} MB of --cache-mb {}{}",
        (train_bytes + val_bytes).div_ceil(1 << 20),
        config.cache_mb,
        match train_encoded + val_encoded {
            0 => String::new(),
            n => format!(" ({n} images beyond it are decoded at each use)"),
        }
    );
    let val_images = val.val_tensor();
    Ok(Splits { train, val, val_images })
}

/// Copies saved tensors into the live model variables by name.
fn restore_tensors(live: &[(String, Tensor)], saved: &[(String, Tensor)]) {
    tch::no_grad(|| {
        for (name, var) in live {
            if let Some((_, src)) = saved.iter().find(|(n, _)| n == name) {
                var.shallow_clone().copy_(&src.to_device(var.device()));
            }
        }
    });
}

fn interrupted_during(config: &FinetuneConfig, epoch: usize) -> anyhow::Error {
    anyhow::anyhow!(
        "interrupted during epoch {epoch}; the last completed epoch is saved. Resume with: finetune --resume {}",
        config.out.display()
    )
}

/// One training epoch over augmented images.
fn train_epoch(
    model: &Classifier,
    sgd: &mut Sgd,
    split: &DecodedSplit,
    config: &FinetuneConfig,
    epoch: usize,
    lr: f64,
    device: Device,
) -> Result<PhaseTotals> {
    let plan = EpochPlan::draw(split, config.seed, epoch);
    let normalization = config.arch.normalization();
    if config.mode == Mode::FeatureExtract {
        // The frozen backbone is a fixed function (eval mode), so the features
        // of the epoch's augmented images can be computed first, in lanes;
        // the head then takes the recipe's small SGD steps over them in order.
        let (features, data_seconds) = augmented_features(model, &plan, split, frozen_pass(config, device))?;
        if STOP_REQUESTED.load(Ordering::SeqCst) {
            return Err(interrupted_during(config, epoch));
        }
        let labels = plan.all_labels(split).to_device(device);
        let mut totals = train_head_steps(model, sgd, &features, &labels, config, epoch, lr)?;
        totals.data_wait_seconds = data_seconds;
        return Ok(totals);
    }
    let bar = progress::bar(plan.num_batches(config.batch_size) as u64, "train");
    let mut totals = PhaseTotals::default();
    totals.data_wait_seconds =
        for_each_augmented_batch(&plan, split, config.batch_size, device, |b, images, labels| {
            let (logits, tape) =
                Tape::record(|| amp::autocast(config.amp, || model.forward(&normalization.apply(&images), true)));
            step(sgd, (&logits, &tape), &labels, lr, &mut totals)
                .map_err(|value| non_finite(value, config, epoch, b))?;
            bar.inc(1);
            if STOP_REQUESTED.load(Ordering::SeqCst) {
                return Err(interrupted_during(config, epoch));
            }
            Ok(())
        })?;
    bar.finish_and_clear();
    Ok(totals)
}

/// One SGD step on a batch's logits; returns the loss value when it is not finite.
fn step(
    sgd: &mut Sgd,
    (logits, tape): (&Tensor, &Tape),
    labels: &Tensor,
    lr: f64,
    totals: &mut PhaseTotals,
) -> std::result::Result<(), f64> {
    let loss = logits.to_kind(Kind::Float).cross_entropy_for_logits(labels);
    let loss_value = loss.double_value(&[]);
    if !loss_value.is_finite() {
        return Err(loss_value);
    }
    sgd.minimize_recorded(&loss, tape, lr);
    let correct = logits.argmax(-1, false).eq_tensor(labels).sum(Kind::Int64).int64_value(&[]);
    totals.add(loss_value, correct, labels.size()[0]);
    Ok(())
}

fn non_finite(value: f64, config: &FinetuneConfig, epoch: usize, batch: usize) -> anyhow::Error {
    anyhow::anyhow!(
        "non-finite loss ({value}) at epoch {epoch}, batch {batch}; stopped. The last good state is in {}",
        config.out.display()
    )
}

/// The head's SGD steps over features already in the epoch's order, in
/// batches of `--batch-size`.
fn train_head_steps(
    model: &Classifier,
    sgd: &mut Sgd,
    features: &Tensor,
    labels: &Tensor,
    config: &FinetuneConfig,
    epoch: usize,
    lr: f64,
) -> Result<PhaseTotals> {
    let n = features.size()[0];
    let batch = config.batch_size as i64;
    let mut totals = PhaseTotals::default();
    for (b, start) in (0..n).step_by(config.batch_size).enumerate() {
        let len = batch.min(n - start);
        let logits = model.head_forward(&features.narrow(0, start, len), true);
        step(sgd, (&logits, &Tape::default()), &labels.narrow(0, start, len), lr, &mut totals)
            .map_err(|value| non_finite(value, config, epoch, b))?;
    }
    Ok(totals)
}

/// `--cache-features`: one epoch of the head over features precomputed
/// without augmentation, shuffled by the same (seed, epoch) stream.
fn train_head_on_features(
    model: &Classifier,
    sgd: &mut Sgd,
    features: &Tensor,
    split: &DecodedSplit,
    config: &FinetuneConfig,
    epoch: usize,
    lr: f64,
) -> Result<PhaseTotals> {
    let plan = EpochPlan::draw(split, config.seed, epoch);
    let order: Vec<i64> = plan.order.iter().map(|&i| i as i64).collect();
    let order = Tensor::from_slice(&order).to_device(features.device());
    let labels = split.labels_tensor().to_device(features.device()).index_select(0, &order);
    train_head_steps(model, sgd, &features.index_select(0, &order), &labels, config, epoch, lr)
}

/// Class probabilities from features, on the CPU (as `predict_probabilities`'s).
fn head_probabilities(model: &Classifier, features: &Tensor) -> Tensor {
    tch::no_grad(|| model.head_forward(features, false).softmax(-1, Kind::Float)).to_device(Device::Cpu)
}

/// Mean cross-entropy and number of correct top-1 predictions.
pub fn loss_and_correct(probs: &Tensor, labels: &Tensor) -> (f64, i64) {
    let labels = labels.to_device(probs.device());
    let loss = probs.clamp_min(1e-12).log().nll_loss(&labels).double_value(&[]);
    let correct = probs.argmax(-1, false).eq_tensor(&labels).sum(Kind::Int64).int64_value(&[]);
    (loss, correct)
}

/// Saves a trained model with what `predict`/`eval` need to use it.
pub fn save_model(
    path: &Path,
    tensors: &[(String, Tensor)],
    config: &FinetuneConfig,
    classes: &[String],
    val_acc: f64,
    epoch: usize,
) -> Result<()> {
    let metadata = HashMap::from([
        ("arch".to_owned(), config.arch.name().to_owned()),
        ("classes".to_owned(), serde_json::to_string(classes)?),
        ("normalization".to_owned(), config.arch.normalization().name().to_owned()),
        ("val_acc".to_owned(), format!("{val_acc:.6}")),
        ("epoch".to_owned(), epoch.to_string()),
        ("mode".to_owned(), config.mode.name().to_owned()),
    ]);
    save_safetensors(path, tensors, metadata)
}
