//! The fine-tuning run: the PyTorch tutorial's epoch loop (train phase, then
//! val phase; keep the best val model), with what a run needs around it —
//! checks before any slow work, resumable state after every epoch, early
//! stopping, and the run's files. What a mode trains lives in
//! [`super::strategy`], how a step updates weights in [`super::step`], what is
//! kept on disk in [`super::checkpoint`].

use super::amp::Autocast;
use super::checkpoint::{restore, Best, RunState};
use super::config::{FinetuneConfig, Precision};
use super::evaluate::val_row;
use super::frozen::predict_probabilities;
use super::optim;
use super::schedule::Schedule;
use super::splits::{Folders, Splits};
use super::step::Stepper;
use super::strategy::{self, EpochContext, Strategy};
use super::summary::Summary;
use crate::interrupt::{Interrupt, Interrupted};
use crate::metrics::{format_minutes, EpochRow, History};
use crate::models::Classifier;
use crate::names::Named;
use crate::persist::model_card::ModelCard;
use crate::report::plots;
use crate::report::tensorboard::EventWriter;
use crate::report::Reporter;
pub use crate::run_dir::Start;
use crate::run_dir::{RunDir, BEST_MODEL_FILE, METRICS_FILE, RUN_CONFIG_FILE, SUMMARY_FILE};
use anyhow::{Context, Result};
use std::time::Instant;
use tch::Device;

/// What the epoch loop carries from one epoch to the next.
struct Progress {
    history: History,
    best: Best,
    epochs_done: usize,
}

impl Progress {
    fn fresh(model: &Classifier) -> Self {
        Self { history: History::default(), best: Best::none(model), epochs_done: 0 }
    }
}

/// Runs (or resumes) the fine-tuning run `config` on `device`, stopping at
/// the next safe point when `interrupt` is set; its lines and bars go to
/// `reporter`.
pub fn run(
    config: &FinetuneConfig,
    device: Device,
    start: Start,
    interrupt: &Interrupt,
    reporter: &dyn Reporter,
) -> Result<Summary> {
    let started = Instant::now();
    super::amp::check_device(config, device)?;
    let out = RunDir::prepare(&config.out, start, config.overwrite)?;
    let folders = Folders::scan(config)?;
    let mut model = build_model(config, folders.classes().len(), device, reporter)?;
    strategy::prepare_model(config.mode, &mut model);
    crate::accel::arrange_weights(&model.backbone_vs, config.precision == Precision::Bf16 && !config.amp);
    let mut stepper = Stepper::new(
        model.trainable(),
        optim::build(config.optimizer, &model.trainable(), config.momentum, config.weight_decay),
        crate::accel::backprop(device),
    );
    if Autocast::of(config, device).scales_loss() && strategy::backpropagates_through_backbone(config.mode) {
        stepper = stepper.with_loss_scaling();
    }
    let mut progress = match start {
        Start::Fresh => Progress::fresh(&model),
        Start::Resume => restore_progress(config, &model, &mut stepper, reporter)?,
    };
    let splits = Splits::decode(&folders, config, reporter)?;
    let strategy = strategy::for_mode(config, &model, &splits, device, reporter);
    let schedule = Schedule::of(config);
    let mut events: Option<EventWriter> = None;
    // Patience counts from the best epoch, or from where this process resumed.
    let patience_from = progress.epochs_done.saturating_sub(1);
    let mut stopped_early = false;
    for epoch in progress.epochs_done..config.epochs {
        reporter.line(&format!("Epoch {epoch}/{}", config.epochs - 1));
        reporter.line("----------");
        // Wrapping: any u64 seed gives a stream, the usual ones the same as before.
        tch::manual_seed((config.seed as i64).wrapping_mul(1000).wrapping_add(epoch as i64));
        let ctx = EpochContext { config, splits: &splits, device, interrupt, epoch, lr: schedule.lr(epoch), reporter };
        let train_row =
            train_phase(strategy.as_ref(), &model, &mut stepper, &ctx).map_err(|e| out.explain(e, "finetune"))?;
        reporter.line(&format!("train Loss: {:.4} Acc: {:.4}", train_row.loss, train_row.acc));
        let val_started = Instant::now();
        let val_probs = strategy.val_probabilities(&model, &ctx);
        let val_row =
            val_row(&val_probs, &splits.val.labels_tensor(), epoch, ctx.lr, val_started.elapsed().as_secs_f64());
        reporter.line(&format!("val Loss: {:.4} Acc: {:.4}", val_row.loss, val_row.acc));
        reporter.line("");
        let improved = progress.best.consider(val_row.acc, epoch, &model, val_probs);
        progress.history.push(train_row.clone());
        progress.history.push(val_row.clone());
        progress.epochs_done = epoch + 1;
        // The state first: until it is saved, an earlier run in the folder stays whole.
        save_state(config, &model, &stepper, &progress)?;
        out.mark_saved();
        out.write(RUN_CONFIG_FILE, config.to_options_toml()?.as_bytes())?;
        if improved {
            progress.best.save(&out.file(BEST_MODEL_FILE), &card(config, &splits, &progress.best)?)?;
        }
        progress.history.write_csv(&out.file(METRICS_FILE))?;
        log_epoch(&mut events, &config.out, &train_row, &val_row)?;
        let last = epoch + 1 == config.epochs;
        if interrupt.requested() && !last {
            return Err(Interrupted(format!(
                "interrupted after epoch {epoch}; the run state is saved. Resume with: finetune --resume {}",
                config.out.display()
            ))
            .into());
        }
        let best = progress.best.epoch.unwrap_or(0).max(patience_from);
        if let Some(patience) = config.early_stop.filter(|&p| !last && epoch >= best + p) {
            reporter.line(&format!(
                "early stop: val accuracy has not improved for {patience} epoch(s) (best at epoch {best})"
            ));
            stopped_early = true;
            break;
        }
    }
    finish(config, &out, device, &model, &stepper, &splits, &progress, stopped_early, started, reporter)
}

/// The classifier with its pretrained backbone loaded, before any image is
/// decoded (a wrong weights file fails in seconds).
fn build_model(
    config: &FinetuneConfig,
    num_classes: usize,
    device: Device,
    reporter: &dyn Reporter,
) -> Result<Classifier> {
    tch::manual_seed(config.seed as i64);
    let mut model = Classifier::new(config.arch, num_classes as i64, device);
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
    stepper: &mut Stepper,
    reporter: &dyn Reporter,
) -> Result<Progress> {
    let state = RunState::load(&config.out)?;
    let finished = config.out.join(SUMMARY_FILE).exists();
    if state.epochs_done >= config.epochs && finished {
        anyhow::bail!(
            "{}: run already complete ({} epochs); use --epochs M with M > {} to train more",
            config.out.display(),
            state.epochs_done,
            state.epochs_done
        );
    }
    let what = format!("resuming {}", config.out.display());
    restore(model, &state.model, &what)?;
    stepper.optimizer.load_state(&stepper.params, &state.optimizer).with_context(|| what.clone())?;
    let best_epoch = state.best_epoch.or_else(|| state.history.best_val().map(|r| r.epoch));
    let best = Best::restored(model, state.best_acc, best_epoch, state.best_model, &what)?;
    reporter.line(&format!(
        "resuming {} after epoch {} of {}",
        config.out.display(),
        state.epochs_done.saturating_sub(1),
        config.epochs - 1
    ));
    Ok(Progress { history: state.history, best, epochs_done: state.epochs_done })
}

fn train_phase(
    strategy: &dyn Strategy,
    model: &Classifier,
    stepper: &mut Stepper,
    ctx: &EpochContext,
) -> Result<EpochRow> {
    let start = Instant::now();
    let totals = strategy.train_epoch(model, stepper, ctx)?;
    Ok(EpochRow {
        epoch: ctx.epoch,
        phase: "train".into(),
        loss: totals.loss(),
        acc: totals.acc(),
        lr: ctx.lr,
        seconds: start.elapsed().as_secs_f64(),
        data_wait_seconds: totals.data_wait_seconds,
    })
}

fn card(config: &FinetuneConfig, splits: &Splits, best: &Best) -> Result<ModelCard> {
    Ok(ModelCard {
        arch: config.arch,
        classes: splits.train.classes.clone(),
        normalization: config.arch.normalization(),
        image_size: config.image_size,
        mode: config.mode.name(),
        epoch: best.epoch.context("no best epoch yet")?,
        val_acc: best.acc,
        precision: config.precision.name(),
    })
}

/// The epoch's scalars for TensorBoard (the events file is made with the
/// first epoch, so a run that fails earlier leaves none).
fn log_epoch(events: &mut Option<EventWriter>, out: &std::path::Path, train: &EpochRow, val: &EpochRow) -> Result<()> {
    let events = match events {
        Some(events) => events,
        None => events.insert(EventWriter::create(out)?),
    };
    let step = train.epoch as i64;
    events.scalar("loss/train", train.loss, step)?;
    events.scalar("loss/val", val.loss, step)?;
    events.scalar("accuracy/train", train.acc, step)?;
    events.scalar("accuracy/val", val.acc, step)?;
    events.scalar("learning_rate", train.lr, step)?;
    events.flush()
}

fn save_state(config: &FinetuneConfig, model: &Classifier, stepper: &Stepper, progress: &Progress) -> Result<()> {
    RunState {
        config_json: serde_json::to_string(config)?,
        epochs_done: progress.epochs_done,
        best_acc: progress.best.acc,
        best_epoch: progress.best.epoch,
        history: progress.history.clone(),
        model: model.named_tensors(),
        optimizer: stepper.optimizer.state(&stepper.params),
        best_model: progress.best.tensors.iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect(),
    }
    .save(&config.out)
}

/// After the last epoch: the tutorial's closing lines, the best model back
/// in place for the figures, and summary.json.
#[allow(clippy::too_many_arguments)]
fn finish(
    config: &FinetuneConfig,
    out: &RunDir,
    device: Device,
    model: &Classifier,
    stepper: &Stepper,
    splits: &Splits,
    progress: &Progress,
    stopped_early: bool,
    started: Instant,
    reporter: &dyn Reporter,
) -> Result<Summary> {
    let seconds = started.elapsed().as_secs_f64();
    reporter.line(&format!("Training complete in {}", format_minutes(seconds)));
    reporter.line(&format!("Best val Acc: {:.6}", progress.best.acc));
    let summary = Summary::new(config, device, splits, &progress.history, progress.best.acc, stopped_early, seconds)?;
    reporter.line(&format!(
        "data: {:.1} s of the train phases ({:.1} %) waiting for or augmenting batches{}",
        summary.data_wait_seconds,
        100.0 * summary.data_wait_share,
        if config.amp {
            format!(" | mixed precision: {} step(s) skipped on overflow", stepper.skipped_steps())
        } else {
            String::new()
        }
    ));
    restore(model, &progress.best.tensors, "the best model")?;
    plots::training_curves(&progress.history, &config.out)?;
    let val_probs = match &progress.best.val_probs {
        Some(probs) => probs.shallow_clone(),
        None => {
            let pass = strategy::frozen_pass(config, device);
            predict_probabilities(model, &splits.val_images, pass, "val grid", reporter)
        }
    };
    plots::prediction_grid(&splits.val, &val_probs, &config.out.join("val_predictions.png"))?;
    summary.write(out)?;
    Ok(summary)
}
