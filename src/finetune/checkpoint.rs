//! What a fine-tuning run keeps on disk while it trains: the best model
//! (the epoch the engine kept, saved with its [`ModelCard`]) and the
//! resumable state, the engine's [`TrainState`] written atomically after
//! every epoch (`state.safetensors`) with the run's config and its history
//! in its card beside it (what `--resume`, sweeps and reports read). Random
//! streams derive from (seed, epoch), so no RNG state is stored. States
//! saved before every tool shared one engine (`epochs_done`, `best_acc`,
//! `best_epoch`, `best.*` tensors) still resume.
//!
//! An epoch's record and the two rows of `metrics.csv` (train, val) are
//! turned into each other here, and only here.

use crate::metrics::{EpochRow, History};
use crate::persist::model_card::ModelCard;
use crate::persist::weights::read_named_tensors;
use crate::persist::{card, safetensors};
use crate::run_dir::state_path;
use crate::train::engine::{EpochRecord, Kept, KeptFrom, Live, SavedProgress, Scores, StateCard, Task, TrainState};
use crate::train::optim::Optimizer;
use anyhow::{Context, Result};
use serde::Serialize;
use std::collections::HashMap;
use std::path::Path;
use tch::Tensor;

/// The scores a fine-tuning epoch records besides the training loss.
pub const TRAIN_ACC: &str = "train_acc";
pub const TRAIN_SECONDS: &str = "train_seconds";
pub const DATA_WAIT_SECONDS: &str = "data_wait_seconds";
pub const VAL_LOSS: &str = "val_loss";
pub const VAL_ACC: &str = "val_acc";
pub const VAL_MACRO_F1: &str = "val_macro_f1";
pub const VAL_BALANCED_ACC: &str = "val_balanced_acc";
pub const VAL_SECONDS: &str = "val_seconds";
/// The phase of `metrics.csv`'s rows of the moving average's evaluation.
pub const VAL_EMA_PHASE: &str = "val_ema";

/// Writes the kept weights with their card to `path`.
pub fn save_best(path: &Path, kept: &Kept, card: &ModelCard) -> Result<()> {
    safetensors::save(path, &kept.tensors, card.to_metadata()?)
}

/// Writes the run state of `out`: `state` with `task`'s live tensors, the
/// config (JSON) and the history as metadata.
pub fn save_state(out: &Path, state: &TrainState, task: &dyn Task, config: &impl Serialize) -> Result<()> {
    let history = Some(serde_json::to_value(history_of(&state.epochs))?);
    state.save(&state_path(out), task, &StateCard { history, ..StateCard::new(None, config)? })
}

/// The run state of `out`, copied into the `live` tensors and `optimizer`.
pub fn load_state(out: &Path, live: Live, optimizer: Box<dyn Optimizer>) -> Result<TrainState> {
    let path = state_path(out);
    let card: StateCard = card::read(&path)?;
    if card.progress.is_some() {
        return TrainState::load(&path, live, optimizer);
    }
    let progress = legacy_progress(&safetensors::read_metadata(&path)?, &path)?;
    let tensors = legacy_names(read_named_tensors(&path)?);
    TrainState::from_saved(&path, progress, &tensors, live, optimizer)
}

/// `metrics.csv`'s rows of the epochs `records`: a train row and a val row
/// each, and a `val_ema` row for an epoch that evaluated a moving average.
pub fn history_of(records: &[EpochRecord]) -> History {
    let mut history = History::default();
    for r in records {
        let row = |phase: &str, loss, acc, seconds, data_wait_seconds| EpochRow {
            epoch: r.epoch,
            phase: phase.into(),
            loss,
            acc,
            seconds,
            data_wait_seconds,
            lr: r.lr,
            macro_f1: None,
            balanced_acc: None,
        };
        // The class-balanced scores of `from`'s val predictions, where recorded.
        let with_balanced = |row: EpochRow, from: KeptFrom| EpochRow {
            macro_f1: r.scores.get(&from.score_name(VAL_MACRO_F1)).copied(),
            balanced_acc: r.scores.get(&from.score_name(VAL_BALANCED_ACC)).copied(),
            ..row
        };
        let data_wait = r.score(DATA_WAIT_SECONDS);
        history.push(row("train", r.train_loss, r.score(TRAIN_ACC), r.score(TRAIN_SECONDS), data_wait));
        let val = row("val", r.score(VAL_LOSS), r.score(VAL_ACC), r.score(VAL_SECONDS), 0.0);
        history.push(with_balanced(val, KeptFrom::Model));
        let ema = |name| KeptFrom::Ema.score_name(name);
        if let Some(&acc) = r.scores.get(&ema(VAL_ACC)) {
            history.push(with_balanced(row(VAL_EMA_PHASE, r.score(&ema(VAL_LOSS)), acc, 0.0, 0.0), KeptFrom::Ema));
        }
    }
    history
}

/// The epochs of an older state's history (its train and val rows).
fn records_of(history: &History) -> Vec<EpochRecord> {
    let (train, val) = (history.phase("train"), history.phase("val"));
    train
        .iter()
        .zip(val)
        .map(|(t, v)| {
            let mut scores = Scores::from([
                (TRAIN_ACC.to_owned(), t.acc),
                (TRAIN_SECONDS.to_owned(), t.seconds),
                (DATA_WAIT_SECONDS.to_owned(), t.data_wait_seconds),
                (VAL_LOSS.to_owned(), v.loss),
                (VAL_ACC.to_owned(), v.acc),
                (VAL_SECONDS.to_owned(), v.seconds),
            ]);
            let balanced = [(VAL_MACRO_F1, v.macro_f1), (VAL_BALANCED_ACC, v.balanced_acc)];
            scores.extend(balanced.into_iter().filter_map(|(name, value)| Some((name.to_owned(), value?))));
            EpochRecord { epoch: t.epoch, train_loss: t.loss, lr: t.lr, seconds: t.seconds + v.seconds, scores }
        })
        .collect()
}

/// The progress of a state saved before the one engine.
fn legacy_progress(metadata: &HashMap<String, String>, path: &Path) -> Result<SavedProgress> {
    let field = |key: &str| metadata.get(key).with_context(|| format!("{}: metadata {key} missing", path.display()));
    let bad = |key: &str| format!("{}: metadata {key} does not parse", path.display());
    let history: History = serde_json::from_str(field("history")?).with_context(|| bad("history"))?;
    let best_acc: f64 = field("best_acc")?.parse().with_context(|| bad("best_acc"))?;
    let best_epoch: Option<usize> = match metadata.get("best_epoch") {
        Some(text) => serde_json::from_str(text).with_context(|| bad("best_epoch"))?,
        None => None,
    };
    let best_epoch = best_epoch.or_else(|| history.best_val().map(|r| r.epoch));
    let epochs = records_of(&history);
    let kept = best_epoch.map(|epoch| (epoch, best_acc));
    Ok(SavedProgress { epochs, batch_losses: Vec::new(), kept, kept_from: KeptFrom::Model })
}

/// An older state's tensor names as the engine's: `best.` was `kept.`, and
/// the oldest kept SGD's momentum outside the optimizer's group.
fn legacy_names(tensors: Vec<(String, Tensor)>) -> Vec<(String, Tensor)> {
    let has_optimizer_group = tensors.iter().any(|(n, _)| n.starts_with("optimizer."));
    tensors
        .into_iter()
        .map(|(name, t)| match name.strip_prefix("best.") {
            Some(rest) => (format!("kept.{rest}"), t),
            None if !has_optimizer_group && name.starts_with("momentum.") => (format!("optimizer.{name}"), t),
            None => (name, t),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(epoch: usize, val_acc: f64) -> EpochRecord {
        EpochRecord {
            epoch,
            train_loss: 0.5,
            lr: 0.001,
            seconds: 3.0,
            scores: Scores::from([
                (TRAIN_ACC.to_owned(), 0.75),
                (TRAIN_SECONDS.to_owned(), 2.0),
                (DATA_WAIT_SECONDS.to_owned(), 0.25),
                (VAL_LOSS.to_owned(), 0.4),
                (VAL_ACC.to_owned(), val_acc),
                (VAL_MACRO_F1.to_owned(), val_acc - 0.1),
                (VAL_BALANCED_ACC.to_owned(), val_acc - 0.05),
                (VAL_SECONDS.to_owned(), 1.0),
            ]),
        }
    }

    #[test]
    fn records_and_metrics_rows_turn_into_each_other() {
        let records = vec![record(0, 0.8), record(1, 0.9)];
        let history = history_of(&records);
        assert_eq!(history.rows.len(), 4);
        assert_eq!((history.rows[1].phase.as_str(), history.rows[1].acc), ("val", 0.8));
        assert_eq!((history.rows[1].macro_f1, history.rows[0].macro_f1), (Some(0.8 - 0.1), None));
        assert_eq!(history.best_val().map(|r| r.epoch), Some(1));
        assert_eq!(records_of(&history), records);
    }

    #[test]
    fn an_older_states_names_become_the_engines() {
        let t = || Tensor::zeros([1], (tch::Kind::Float, tch::Device::Cpu));
        let names = |tensors: Vec<(String, Tensor)>| tensors.into_iter().map(|(n, _)| n).collect::<Vec<_>>();
        let oldest = vec![("model.w".to_owned(), t()), ("best.w".to_owned(), t()), ("momentum.w".to_owned(), t())];
        assert_eq!(names(legacy_names(oldest)), ["model.w", "kept.w", "optimizer.momentum.w"]);
        let old = vec![("optimizer.momentum.w".to_owned(), t()), ("momentum.x".to_owned(), t())];
        assert_eq!(names(legacy_names(old)), ["optimizer.momentum.w", "momentum.x"]);
    }
}
