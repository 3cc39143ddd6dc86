//! The fine-tuning run: the PyTorch tutorial's epoch loop (train phase, then
//! val phase; keep the best val model), with what a run needs around it —
//! checks before any slow work, resumable state after every epoch, early
//! stopping, and the run's files. What a mode trains lives in
//! [`super::strategy`], how a step updates weights in [`crate::train::step`], what is
//! kept on disk in [`super::checkpoint`].

use super::checkpoint::{
    self, history_of, DATA_WAIT_SECONDS, TRAIN_ACC, TRAIN_SECONDS, VAL_ACC, VAL_BALANCED_ACC, VAL_LOSS, VAL_MACRO_F1,
    VAL_SECONDS,
};
use super::class_weights::{ClassWeights, ClassWeightsPlan};
use super::config::{FinetuneConfig, Precision};
use super::evaluate::ValScores;
use super::multi_label::{self, VAL_MAP, VAL_MICRO_F1};
use super::outcomes;
use super::splits::{Folders, Splits};
use super::strategy::{self, EpochContext, Strategy};
use super::summary::FinetuneSummary;
use crate::choice_names::Named;
use crate::data::loader::EpochPlan;
use crate::grad::Params;
use crate::interrupt::Interrupt;
use crate::metrics::{format_minutes, History, PhaseTotals};
use crate::models::Classifier;
use crate::persist::model_card::{ModelCard, MultiLabelCard};
use crate::report::plots;
use crate::report::tensorboard::EventWriter;
use crate::report::Reporter;
pub use crate::run_dir::Start;
use crate::run_dir::{
    RunDir, BEST_MODEL_FILE, METRICS_FILE, MULTILABEL_METRICS_FILE, RUN_CONFIG_FILE, SUMMARY_FILE,
    VAL_PREDICTIONS_FILE, VAL_SCORES_FILE,
};
use crate::train::data_parallel::Ranks;
use crate::train::engine::{self, Epoch, EpochRecord, Fit, Kept, KeptFrom, Live, Scores, Task, TrainPhase, TrainState};
use crate::train::feature_cache::CacheUse;
use crate::train::frozen_backbone::predict_probabilities;
use crate::train::optim::{self, Optimizer};
use crate::train::step::GradientStep;
use anyhow::{Context, Result};
use std::time::Instant;
use tch::{Device, Tensor};

/// Fine-tuning as the engine's task: a mode's strategy over the run's splits.
struct Finetune<'a> {
    config: &'a FinetuneConfig,
    model: &'a Classifier,
    strategy: Box<dyn Strategy>,
    grad_step: GradientStep,
    splits: &'a Splits,
    device: Device,
    ranks: &'a Ranks,
    /// The training loss's per-class weights on the device, when weighted.
    class_weights: Option<&'a Tensor>,
    /// The val probabilities of the last evaluation, of the model and of
    /// its moving average.
    val_probs: Option<Tensor>,
    ema_val_probs: Option<Tensor>,
}

impl<'a> Finetune<'a> {
    /// What the strategy's phases need of `epoch`.
    fn context<'e>(&self, epoch: &'e Epoch) -> EpochContext<'e>
    where
        'a: 'e,
    {
        EpochContext {
            config: self.config,
            splits: self.splits,
            device: self.device,
            interrupt: epoch.interrupt,
            ranks: self.ranks,
            epoch: epoch.index,
            reporter: epoch.reporter,
            class_weights: self.class_weights,
        }
    }
}

impl Task for Finetune<'_> {
    fn params(&self) -> &Params {
        &self.grad_step.params
    }

    fn model(&self) -> Vec<(String, Tensor)> {
        self.model.named_tensors()
    }

    fn train_epoch(&mut self, epoch: &Epoch, optimizer: &mut dyn Optimizer) -> Result<TrainPhase> {
        epoch.reporter.line(&format!("Epoch {}/{}", epoch.index, self.config.epochs - 1));
        epoch.reporter.line("----------");
        tch::manual_seed(epoch_seed(self.config.seed, epoch.index));
        let started = Instant::now();
        let ctx = self.context(epoch);
        let mut totals = self.strategy.train_epoch(self.model, &mut self.grad_step, optimizer, &ctx)?;
        totals = summed_over(totals, self.ranks)?;
        epoch.reporter.line(&format!("train Loss: {:.4} Acc: {:.4}", totals.loss(), totals.acc()));
        let scores = Scores::from([
            (TRAIN_ACC.to_owned(), totals.acc()),
            (TRAIN_SECONDS.to_owned(), started.elapsed().as_secs_f64()),
            (DATA_WAIT_SECONDS.to_owned(), totals.data_wait_seconds),
        ]);
        Ok(TrainPhase { loss: totals.loss(), batch_losses: Vec::new(), scores })
    }

    fn valid_epoch(&mut self, epoch: &Epoch) -> Result<Scores> {
        let started = Instant::now();
        let ctx = self.context(epoch);
        let probs = self.strategy.val_probabilities(self.model, &ctx)?;
        let mut scores = self.val_scores(&probs, KeptFrom::Model, epoch);
        self.val_probs = Some(probs);
        if let Some(ema) = self.grad_step.ema() {
            let probs = ema.swapped_in(|| self.strategy.val_probabilities(self.model, &ctx))?;
            scores.extend(self.val_scores(&probs, KeptFrom::Ema, epoch));
            self.ema_val_probs = Some(probs);
        }
        epoch.reporter.line("");
        scores.insert(VAL_SECONDS.to_owned(), started.elapsed().as_secs_f64());
        Ok(scores)
    }

    /// Every rank stops after this epoch when any of them was asked to.
    fn stop_requested(&self, interrupt: &Interrupt) -> Result<bool> {
        self.ranks.stop_requested(interrupt)
    }

    fn ema_model(&self) -> Option<Vec<(String, Tensor)>> {
        self.grad_step.ema().map(|ema| ema.applied_to(self.model.named_tensors()))
    }

    fn carried(&self) -> Vec<(String, Tensor)> {
        carried(&self.grad_step)
    }
}

impl Finetune<'_> {
    /// Val loss, accuracy, macro-F1 and balanced accuracy of `probs`, the
    /// predictions of `from`'s weights, said and scored under its names
    /// (`val_acc`, `ema_val_acc`).
    fn val_scores(&self, probs: &Tensor, from: KeptFrom, epoch: &Epoch) -> Scores {
        if self.config.multi_label() {
            return self.multi_label_scores(probs, from, epoch);
        }
        let ValScores { loss, acc, macro_f1, balanced_acc } = ValScores::of(probs, &self.splits.val.labels_tensor());
        let who = match from {
            KeptFrom::Model => "val",
            KeptFrom::Ema => "val (EMA)",
        };
        epoch.reporter.line(&format!(
            "{who} Loss: {loss:.4} Acc: {acc:.4} Macro-F1: {macro_f1:.4} Balanced Acc: {balanced_acc:.4}"
        ));
        Scores::from([
            (from.score_name(VAL_LOSS), loss),
            (from.score_name(VAL_ACC), acc),
            (from.score_name(VAL_MACRO_F1), macro_f1),
            (from.score_name(VAL_BALANCED_ACC), balanced_acc),
        ])
    }

    /// [`Finetune::val_scores`] of a multi-label run: the loss, mAP, F1
    /// and the exact-match ratio (as `val_acc`).
    fn multi_label_scores(&self, probs: &Tensor, from: KeptFrom, epoch: &Epoch) -> Scores {
        let val = &self.splits.val;
        let s = multi_label::score(probs, &val.labels_tensor(), &val.classes, self.config.label_threshold());
        let who = match from {
            KeptFrom::Model => "val",
            KeptFrom::Ema => "val (EMA)",
        };
        epoch.reporter.line(&format!(
            "{who} Loss: {:.4} mAP: {:.4} F1 macro: {:.4} micro: {:.4} exact match: {:.4}",
            s.loss, s.map, s.macro_f1, s.micro_f1, s.exact_match
        ));
        let named = [(VAL_LOSS, s.loss), (VAL_ACC, s.exact_match), (VAL_MAP, s.map)];
        let named = named.into_iter().chain([(VAL_MACRO_F1, s.macro_f1), (VAL_MICRO_F1, s.micro_f1)]);
        named.map(|(name, value)| (from.score_name(name), value)).collect()
    }
}

/// What the run carries between epochs besides the model: the moving
/// average's values (`ema.<name>`), when kept.
fn carried(grad_step: &GradientStep) -> Vec<(String, Tensor)> {
    let averages = grad_step.ema().map(|ema| ema.averages()).unwrap_or_default();
    averages.into_iter().map(|(name, t)| (format!("ema.{name}"), t)).collect()
}

/// Runs (or resumes) the fine-tuning run `config` on `device`, as one of
/// `ranks` (rank 0 alone writes the run's files), stopping at the next safe
/// point when `interrupt` is set; its lines and bars go to `reporter`.
pub fn run(
    config: &FinetuneConfig,
    (device, ranks): (Device, &Ranks),
    start: Start,
    interrupt: &Interrupt,
    reporter: &dyn Reporter,
) -> Result<FinetuneSummary> {
    let started = Instant::now();
    config.check_precision(device)?;
    let out = ranks.leads().then(|| RunDir::prepare(&config.out, start, config.overwrite)).transpose();
    let out = ranks.agree(out, "to prepare the run folder")?;
    let folders = ranks.agree(Folders::scan(config), "to read the image folders")?;
    let weights_plan = ClassWeightsPlan::new(config.class_weights.as_ref(), folders.classes());
    let weights_plan = ranks.agree(weights_plan, "to read --class-weights")?;
    let model = build_model(config, folders.classes().len(), device, reporter);
    let mut model = ranks.agree(model, "to build the model")?;
    ranks.broadcast_from_leader(&model.named_tensors().into_iter().map(|(_, t)| t).collect::<Vec<_>>())?;
    strategy::prepare_model(config.mode, &mut model);
    crate::accel::arrange_weights(&model.backbone_vs, config.precision == Precision::Bf16 && !config.amp);
    let grad_step = gradient_step(config, &model, (device, ranks));
    let optimizer = optim::build(config.optimizer, &grad_step.params, config.optimizer_settings(&grad_step.params));
    // A resumed state loads before any image is decoded (a wrong one fails in seconds).
    let state = match start {
        Start::Fresh => Ok(TrainState::new(optimizer)),
        Start::Resume => restore_progress(config, &model, &grad_step, optimizer, reporter),
    };
    let mut state = ranks.agree(state, "to load the run state")?;
    let splits = ranks.agree(Splits::decode(&folders, config, reporter), "to decode the images")?;
    let same_data = "images differ from rank 0's (classes, images or labels of a split)";
    ranks.check_same(&splits.fingerprint(), same_data)?;
    let class_weights = ranks.agree(weights_plan.resolve(&splits.train), "to weigh the classes")?;
    if let Some(weights) = &class_weights {
        reporter.line(&weights.describe());
    }
    let weights_tensor = class_weights.as_ref().map(|weights| weights.tensor(device));
    let strategy = strategy::for_mode(config, &model, &splits, (device, ranks, state.epochs.len()), reporter)?;
    let startup = Startup { seconds: started.elapsed().as_secs_f64(), feature_cache: strategy.feature_cache_use() };
    reporter.line(&startup.describe());
    let mut task = Finetune {
        config,
        model: &model,
        strategy,
        grad_step,
        splits: &splits,
        device,
        ranks,
        class_weights: weights_tensor.as_ref(),
        val_probs: None,
        ema_val_probs: None,
    };
    let batches = ranks.share(EpochPlan::draw(&splits.train, config.seed, 0)).num_batches(config.batch_size);
    let fit = Fit {
        epochs: config.epochs,
        lr: Box::new(move |epoch| config.lr_at(epoch, 0, batches)),
        keep: config.monitor().keep_rule(),
        patience: config.early_stop,
        interrupt,
        label: "finetune",
        reporter,
    };
    let mut events: Option<EventWriter> = None;
    let mut best_val_probs: Option<Tensor> = None;
    let outcome = engine::fit(&mut task, &fit, &mut state, &mut |state, task| {
        let saved = match &out {
            Some(out) => save_epoch(config, out, state, task, &mut events, &mut best_val_probs),
            None => Ok(()),
        };
        ranks.agree(saved, "to save the epoch")
    });
    let outcome = outcome.map_err(|e| match &out {
        Some(out) => out.explain(e, "finetune"),
        None => e,
    })?;
    let grad_step = task.grad_step;
    let finished = Finished {
        state: &state,
        best_val_probs,
        stopped_early: outcome.stopped_early,
        started,
        class_weights: class_weights.as_ref(),
        startup,
    };
    finish(config, out.as_ref(), (device, ranks), &model, &grad_step, &splits, finished, reporter)
}

/// After an epoch, rank 0's files: the state first (until it is saved, an
/// earlier run in the folder stays whole), the options, the kept model when
/// this epoch is kept, metrics.csv and the TensorBoard scalars.
fn save_epoch(
    config: &FinetuneConfig,
    out: &RunDir,
    state: &TrainState,
    task: &Finetune,
    events: &mut Option<EventWriter>,
    best_val_probs: &mut Option<Tensor>,
) -> Result<()> {
    checkpoint::save_state(&config.out, state, task, config)?;
    out.mark_saved();
    out.write(RUN_CONFIG_FILE, config.to_options_toml()?.as_bytes())?;
    let record = state.epochs.last().expect("an epoch ended");
    if let Some(kept) = state.kept.as_ref().filter(|k| k.epoch == record.epoch) {
        checkpoint::save_best(&out.file(BEST_MODEL_FILE), kept, &card(config, task.splits, kept, record))?;
        let probs = match kept.from {
            KeptFrom::Model => &task.val_probs,
            KeptFrom::Ema => &task.ema_val_probs,
        };
        *best_val_probs = probs.as_ref().map(Tensor::shallow_clone);
        if let Some(probs) = probs.as_ref().filter(|_| config.multi_label()) {
            let val = &task.splits.val;
            multi_label::write_val_scores(
                &out.file(VAL_SCORES_FILE),
                &val.paths,
                &val.classes,
                &val.labels_tensor(),
                probs,
            )?;
        }
    }
    history_of(&state.epochs).write_csv(&out.file(METRICS_FILE))?;
    if config.multi_label() {
        multi_label::write_epochs(&out.file(MULTILABEL_METRICS_FILE), &multi_label_rows(&state.epochs))?;
    }
    log_epoch(events, &config.out, record)
}

/// `totals` of this process's share, summed over the ranks.
fn summed_over(totals: PhaseTotals, ranks: &Ranks) -> Result<PhaseTotals> {
    let mut sums = [totals.loss_sum, totals.correct as f64, totals.count as f64, totals.data_wait_seconds];
    ranks.sum(&mut sums)?;
    let [loss_sum, correct, count, data_wait] = sums;
    let world = ranks.world_size() as f64;
    // Data wait is each rank's own time: their mean.
    Ok(PhaseTotals { loss_sum, correct: correct as i64, count: count as i64, data_wait_seconds: data_wait / world })
}

/// The run's training step on `model`: its backprop on `device`, averaged
/// over `ranks`, with the recipe's loss scaling, accumulation, clipping and
/// moving average.
pub(super) fn gradient_step(
    config: &FinetuneConfig,
    model: &Classifier,
    (device, ranks): (Device, &Ranks),
) -> GradientStep {
    let mut grad_step = GradientStep::new(model.trainable(), crate::accel::backprop(device)).over(ranks.clone());
    if config.autocast(device).scales_loss() && strategy::backpropagates_through_backbone(config.mode) {
        grad_step = grad_step.with_loss_scaling();
    }
    grad_step
        .accumulating(config.accumulate)
        .clipping(config.clip_grad_norm)
        .with_buffers(strategy::trained_buffers(config.mode, model))
        .with_ema(config.ema)
}

/// The classifier with its pretrained backbone loaded, before any image is
/// decoded (a wrong weights file fails in seconds).
pub(super) fn build_model(
    config: &FinetuneConfig,
    num_classes: usize,
    device: Device,
    reporter: &dyn Reporter,
) -> Result<Classifier> {
    tch::manual_seed(config.seed as i64);
    let mut model = Classifier::for_images(config.arch, num_classes as i64, config.image_size, device);
    model.multi_label = config.multi_label();
    match &config.weights {
        Some(weights) => {
            crate::persist::weights::load_backbone(&mut model, weights)?;
            reporter.line(&format!("weights: {} (pretrained backbone)", weights.display()));
        }
        None => reporter.line("weights: none (random init; pass --weights for transfer learning)"),
    }
    Ok(model)
}

fn restore_progress(
    config: &FinetuneConfig,
    model: &Classifier,
    grad_step: &GradientStep,
    optimizer: Box<dyn Optimizer>,
    reporter: &dyn Reporter,
) -> Result<TrainState> {
    let (model, carried) = (model.named_tensors(), carried(grad_step));
    let live = Live { model: &model, carried: &carried, params: &grad_step.params };
    let state = checkpoint::load_state(&config.out, live, optimizer)?;
    let (done, finished) = (state.epochs_done(), config.out.join(SUMMARY_FILE).exists());
    if done >= config.epochs && finished {
        anyhow::bail!(
            "{}: run already complete ({done} epochs); use --epochs M with M > {done} to train more",
            config.out.display()
        );
    }
    reporter.line(&format!(
        "resuming {} after epoch {} of {}",
        config.out.display(),
        done.saturating_sub(1),
        config.epochs - 1
    ));
    Ok(state)
}

/// The rows of `multilabel_metrics.csv`: each epoch's val scores, and its
/// moving average's where evaluated.
fn multi_label_rows(records: &[EpochRecord]) -> Vec<multi_label::EpochRow> {
    let row = |r: &EpochRecord, from: KeptFrom, phase| multi_label::EpochRow {
        epoch: r.epoch,
        phase,
        loss: r.score(&from.score_name(VAL_LOSS)),
        map: r.score(&from.score_name(VAL_MAP)),
        macro_f1: r.score(&from.score_name(VAL_MACRO_F1)),
        micro_f1: r.score(&from.score_name(VAL_MICRO_F1)),
        exact_match: r.score(&from.score_name(VAL_ACC)),
    };
    let ema = |r: &EpochRecord| r.scores.contains_key(&KeptFrom::Ema.score_name(VAL_MAP));
    records
        .iter()
        .flat_map(|r| {
            std::iter::once(row(r, KeptFrom::Model, "val")).chain(ema(r).then(|| row(r, KeptFrom::Ema, "val_ema")))
        })
        .collect()
}

/// The card of the weights `kept` at the epoch `record`: its val accuracy
/// (a multi-label run's exact-match ratio, its mAP beside it).
fn card(config: &FinetuneConfig, splits: &Splits, kept: &Kept, record: &EpochRecord) -> ModelCard {
    let multi_label = config.label_delim.map(|label_delim| MultiLabelCard {
        threshold: config.label_threshold(),
        label_delim,
        val_map: record.score(&kept.from.score_name(VAL_MAP)),
    });
    ModelCard {
        arch: config.arch,
        classes: splits.train.classes.clone(),
        normalization: config.arch.normalization(),
        image_size: config.image_size,
        resize: Some(config.sizing().resize),
        interpolation: Some(config.sizing().interpolation),
        mode: config.mode.name(),
        epoch: kept.epoch,
        val_acc: record.score(&kept.from.score_name(VAL_ACC)),
        precision: config.precision.name(),
        multi_label,
    }
}

/// The epoch's scalars for TensorBoard (the events file is made with the
/// first epoch, so a run that fails earlier leaves none).
fn log_epoch(events: &mut Option<EventWriter>, out: &std::path::Path, record: &EpochRecord) -> Result<()> {
    let events = match events {
        Some(events) => events,
        None => events.insert(EventWriter::create(out)?),
    };
    let step = record.epoch as i64;
    events.scalar("loss/train", record.train_loss, step)?;
    events.scalar("loss/val", record.score(VAL_LOSS), step)?;
    events.scalar("accuracy/train", record.score(TRAIN_ACC), step)?;
    events.scalar("accuracy/val", record.score(VAL_ACC), step)?;
    match record.scores.get(VAL_MAP) {
        Some(&map) => events.scalar("map/val", map, step)?,
        None => events.scalar("balanced_accuracy/val", record.score(VAL_BALANCED_ACC), step)?,
    }
    events.scalar("macro_f1/val", record.score(VAL_MACRO_F1), step)?;
    if let Some(&acc) = record.scores.get(&KeptFrom::Ema.score_name(VAL_ACC)) {
        events.scalar("loss/val_ema", record.score(&KeptFrom::Ema.score_name(VAL_LOSS)), step)?;
        events.scalar("accuracy/val_ema", acc, step)?;
    }
    events.scalar("learning_rate", record.lr, step)?;
    events.flush()
}

/// How training ended, for the run's closing lines and files.
struct Finished<'a> {
    state: &'a TrainState,
    /// The kept epoch's val probabilities, when this process evaluated it.
    best_val_probs: Option<Tensor>,
    stopped_early: bool,
    started: Instant,
    /// The training loss's class weights, when weighted.
    class_weights: Option<&'a ClassWeights>,
    startup: Startup,
}

/// What came before the first training step: its seconds, and what the
/// feature cache served.
struct Startup {
    seconds: f64,
    feature_cache: Option<CacheUse>,
}

impl Startup {
    fn describe(&self) -> String {
        let cache = match &self.feature_cache {
            Some(used) => format!(" (feature cache: {} loaded, {} computed)", used.loaded, used.computed),
            None => String::new(),
        };
        format!("start-up: {:.1} s to the first training step{cache}", self.seconds)
    }
}

/// After the last epoch: the tutorial's closing lines, the best model back
/// in place, and (rank 0) the figures and summary.json.
#[allow(clippy::too_many_arguments)]
fn finish(
    config: &FinetuneConfig,
    out: Option<&RunDir>,
    (device, ranks): (Device, &Ranks),
    model: &Classifier,
    grad_step: &GradientStep,
    splits: &Splits,
    finished: Finished,
    reporter: &dyn Reporter,
) -> Result<FinetuneSummary> {
    let seconds = finished.started.elapsed().as_secs_f64();
    let history = history_of(&finished.state.epochs);
    let kept = finished.state.kept.as_ref().context("no epoch was kept")?;
    reporter.line(&format!("Training complete in {}", format_minutes(seconds)));
    let of_ema = if kept.from == KeptFrom::Ema { " (the moving average's weights)" } else { "" };
    let best = finished.state.epochs.get(kept.epoch).context("the kept epoch has no record")?;
    let best_score = |name: &str| best.score(&kept.from.score_name(name));
    match config.multi_label() {
        true => reporter.line(&format!(
            "Best val mAP: {:.6} (exact match {:.4}){of_ema}",
            best_score(VAL_MAP),
            best_score(VAL_ACC)
        )),
        false => {
            reporter.line(&format!("Best val Acc: {:.6}{of_ema}", best_score(VAL_ACC)));
            reporter.line(&format!(
                "best epoch {} (by {}): val Loss {:.4} Acc {:.4} Macro-F1 {:.4} Balanced Acc {:.4}",
                kept.epoch,
                config.monitor().name(),
                best_score(VAL_LOSS),
                best_score(VAL_ACC),
                best_score(VAL_MACRO_F1),
                best_score(VAL_BALANCED_ACC)
            ));
        }
    }
    let kept_and_how = (kept, best, finished.stopped_early);
    let mut summary = FinetuneSummary::new(config, device, splits, &history, kept_and_how, seconds, ranks)?
        .with_class_weights(finished.class_weights);
    summary.startup_seconds = Some(finished.startup.seconds);
    summary.feature_cache = finished.startup.feature_cache;
    reporter.line(&format!(
        "data: {:.1} s of the train phases ({:.1} %) waiting for or augmenting batches{}",
        summary.data_wait_seconds,
        100.0 * summary.data_wait_share,
        if config.amp {
            format!(" | mixed precision: {} step(s) skipped on overflow", grad_step.skipped_steps())
        } else {
            String::new()
        }
    ));
    let weights: Vec<Tensor> = model.named_tensors().into_iter().map(|(_, t)| t).collect();
    ranks.check_identical(&weights)?;
    if ranks.world_size() > 1 {
        reporter.line(&format!(
            "data-parallel: {} ranks; {:.1} s of the train phases ({:.1} %) averaging gradients",
            ranks.world_size(),
            summary.gradient_averaging_seconds,
            100.0 * summary.gradient_averaging_share
        ));
    }
    finished.state.restore_kept(&model.named_tensors())?;
    let written = match out {
        Some(out) => {
            let results = (&history, &mut summary);
            write_results(config, out, (device, model), splits, results, finished.best_val_probs, reporter)
        }
        None => Ok(()),
    };
    ranks.agree(written, "to write the results")?;
    Ok(summary)
}

/// The figures of the finished run (the kept model's), its outcome on each
/// val image and summary.json (with a multi-label run's scores of the kept
/// model per class).
fn write_results(
    config: &FinetuneConfig,
    out: &RunDir,
    (device, model): (Device, &Classifier),
    splits: &Splits,
    (history, summary): (&History, &mut FinetuneSummary),
    best_val_probs: Option<Tensor>,
    reporter: &dyn Reporter,
) -> Result<()> {
    plots::training_curves(history, &config.out)?;
    let val_probs = match best_val_probs {
        Some(probs) => probs,
        None => {
            let pass = strategy::frozen_pass(config, device);
            predict_probabilities(model, &splits.val_images, pass, "val grid", reporter)
        }
    };
    match config.multi_label() {
        true => {
            let val = &splits.val;
            let scores = multi_label::score(&val_probs, &val.labels_tensor(), &val.classes, config.label_threshold());
            summary.multi_label = Some(scores);
        }
        false => {
            plots::prediction_grid(&splits.val, &val_probs, &config.out.join("val_predictions.png"))?;
            let outcomes = outcomes::of_split(&splits.val, &val_probs, &config.data)?;
            out.write(VAL_PREDICTIONS_FILE, outcomes::csv(&outcomes).as_bytes())?;
        }
    }
    summary.write(out)
}

/// libtorch's seed for `epoch`'s random draws (dropout) in a run of `seed`:
/// defined for every `u64` seed (wrapping), the usual ones giving the
/// streams they always gave.
fn epoch_seed(seed: u64, epoch: usize) -> i64 {
    (seed as i64).wrapping_mul(1000).wrapping_add(epoch as i64)
}

#[cfg(test)]
mod tests {
    use super::epoch_seed;

    #[test]
    fn every_seed_has_an_epoch_seed_and_the_usual_ones_keep_theirs() {
        assert_eq!(epoch_seed(0, 0), 0);
        assert_eq!(epoch_seed(7, 2), 7002);
        assert_eq!(epoch_seed(u64::MAX, 3), -997);
        assert_ne!(epoch_seed(u64::MAX / 2, 1), epoch_seed(u64::MAX / 2 - 1, 1));
    }
}
