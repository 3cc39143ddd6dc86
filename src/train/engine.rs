//! The one training loop every tool goes through: for each epoch the rate
//! its schedule gives, the task's train phase (its minibatches, updated by
//! the run's [`Optimizer`]), the task's evaluation, non-finite scores
//! refused, the [`KeepRule`] (which epoch's weights the run keeps), early
//! stopping, and the caller's `after_epoch` (save, report) before Ctrl-C is
//! honoured at the epoch's end. Everything it needs to go on lives in
//! [`TrainState`], saved after every epoch and loaded strictly on resume:
//! a run killed and resumed ends with the same numbers as one that ran
//! through.
//!
//! The task supplies its train phase and its evaluation ([`Task`], as
//! burn-train's `TrainStep`/`ValidStep`); the engine knows no network, no
//! data set and no file name. A task that keeps an exponential moving
//! average of its weights (`super::ema`) scores it beside the live model
//! (`ema_`-prefixed scores): the keep rule may then keep an epoch for the
//! average's weights ([`KeptFrom`]), and the averages travel in the state
//! as the task's [`Task::carried`] tensors. In-memory row batching lives in
//! [`super::minibatch`]; a tool that streams images batches them itself.

use super::optim::Optimizer;
use crate::grad::Params;
use crate::interrupt::{Interrupt, Interrupted};
use crate::persist::card::{self, Card};
use crate::persist::weights::{check_complete, copy_by_name, read_named_tensors};
use crate::report::Reporter;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Instant;
use tch::Tensor;

/// Scores by name (`val_loss`, `train_acc`, …).
pub type Scores = BTreeMap<String, f64>;

/// What one epoch's train phase reports.
#[derive(Debug, Default)]
pub struct TrainPhase {
    /// The epoch's training loss, as the task averages it.
    pub loss: f64,
    /// Every minibatch's loss, in order.
    pub batch_losses: Vec<f64>,
    /// What else the phase measured (`train_acc`, `data_wait_seconds`, …).
    pub scores: Scores,
}

/// Where an epoch stands, as the task's phases see it.
pub struct Epoch<'a> {
    /// Numbered from 0.
    pub index: usize,
    pub lr: f64,
    /// Names the run in bars and messages (`hidden 100`, `caption`, …).
    pub label: &'a str,
    pub interrupt: &'a Interrupt,
    /// Where the phases' progress bars and lines go.
    pub reporter: &'a dyn Reporter,
}

/// What a task supplies to the engine.
pub trait Task {
    /// The parameters the optimizer updates.
    fn params(&self) -> &Params;
    /// Every tensor of the model by name: what a state saves and what the
    /// keep rule copies (buffers included).
    fn model(&self) -> Vec<(String, Tensor)>;
    /// One epoch's training, each update through `optimizer` at `epoch.lr`.
    fn train_epoch(&mut self, epoch: &Epoch, optimizer: &mut dyn Optimizer) -> Result<TrainPhase>;
    /// What the epoch's record keeps after training, by name.
    fn valid_epoch(&mut self, epoch: &Epoch) -> Result<Scores>;
    /// Whether to stop after this epoch for `interrupt`: asked once per
    /// epoch, after it is saved. A task of several processes decides it with
    /// all of them (each may have been asked, or not).
    fn stop_requested(&self, interrupt: &Interrupt) -> Result<bool> {
        Ok(interrupt.requested())
    }
    /// Every tensor of [`Task::model`] with the moving average's values in
    /// place of the averaged ones, when the task keeps an average: what an
    /// epoch kept for [`KeptFrom::Ema`] keeps.
    fn ema_model(&self) -> Option<Vec<(String, Tensor)>> {
        None
    }
    /// Tensors the task carries from one epoch to the next besides the model
    /// and the optimizer (a moving average's values), by name: saved with the
    /// state and copied back into these same tensors on resume.
    fn carried(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
}

/// Which weights of an epoch the keep rule kept: the live model's, or its
/// moving average's (scored under the `ema_`-prefixed names).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeptFrom {
    #[default]
    Model,
    Ema,
}

impl KeptFrom {
    /// The name of score `name` of these weights (`val_acc`, `ema_val_acc`).
    pub fn score_name(self, name: &str) -> String {
        match self {
            KeptFrom::Model => name.to_owned(),
            KeptFrom::Ema => format!("ema_{name}"),
        }
    }
}

/// One epoch, numbered from 0.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EpochRecord {
    pub epoch: usize,
    pub train_loss: f64,
    pub lr: f64,
    /// The whole epoch: train phase and evaluation.
    pub seconds: f64,
    /// What the train phase and the evaluation measured.
    #[serde(flatten)]
    pub scores: Scores,
}

impl EpochRecord {
    /// The score `name`, NaN when the task did not measure it.
    pub fn score(&self, name: &str) -> f64 {
        self.scores.get(name).copied().unwrap_or(f64::NAN)
    }
}

/// Which epoch's weights a run keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepRule {
    /// The epoch with the lowest value of the score named (the first on ties).
    Lowest(&'static str),
    /// The epoch with the highest value of the score named (the first on
    /// ties, as the PyTorch tutorial keeps a model only when it improves).
    Highest(&'static str),
    /// The last epoch: the live weights (nothing is copied).
    Last,
}

impl KeepRule {
    /// The weights of `record` to keep and their score, when they beat
    /// `kept`: the live model's, or the moving average's where the record
    /// scored it and it does better (the live model's on ties).
    fn improves(self, record: &EpochRecord, kept: Option<&Kept>) -> Option<(KeptFrom, f64)> {
        let (name, better): (&str, fn(f64, f64) -> bool) = match self {
            KeepRule::Lowest(name) => (name, |a, b| a < b),
            KeepRule::Highest(name) => (name, |a, b| a > b),
            KeepRule::Last => return None,
        };
        let mut best = (KeptFrom::Model, record.score(name));
        if let Some(&ema) = record.scores.get(&KeptFrom::Ema.score_name(name)) {
            if better(ema, best.1) {
                best = (KeptFrom::Ema, ema);
            }
        }
        kept.is_none_or(|k| better(best.1, k.score)).then_some(best)
    }

    /// The score named, in words (`val accuracy`), for messages.
    fn score_words(self) -> String {
        match self {
            KeepRule::Lowest(name) | KeepRule::Highest(name) => name.replace("_acc", " accuracy").replace('_', " "),
            KeepRule::Last => "the last epoch".into(),
        }
    }
}

/// The weights the [`KeepRule`] chose, with their epoch, score and source.
pub struct Kept {
    pub epoch: usize,
    pub score: f64,
    pub from: KeptFrom,
    pub tensors: Vec<(String, Tensor)>,
}

/// Everything training carries from one epoch to the next.
pub struct TrainState {
    pub epochs: Vec<EpochRecord>,
    /// Every minibatch's loss, in order.
    pub batch_losses: Vec<f64>,
    pub optimizer: Box<dyn Optimizer>,
    pub kept: Option<Kept>,
}

/// The state's numbers that are not tensors, as saved.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedProgress {
    pub epochs: Vec<EpochRecord>,
    pub batch_losses: Vec<f64>,
    pub kept: Option<(usize, f64)>,
    /// The kept epoch's weights: the model's (states saved before moving
    /// averages) or its average's.
    #[serde(default)]
    pub kept_from: KeptFrom,
}

/// What a state file says besides its tensors, as a [`Card`]: the run's
/// options and tool, the engine's progress, and a tool's own progress
/// beyond the engine's. Its fields are the keys states were saved with
/// before the card, so older states still resume.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StateCard {
    /// The tool that saved it (`mnist mlp`, `caption train`; none in finetune's states).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// The run's options as saved (what `--resume` reads back).
    pub config: serde_json::Value,
    /// What the engine carries from one epoch to the next (none between a tool's stages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<SavedProgress>,
    /// Where a staged run stands (`mnist`'s sweep: sizes done, the retrain).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stages: Option<serde_json::Value>,
    /// The epochs as `metrics.csv` rows (`finetune`, for sweeps and reports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<serde_json::Value>,
}

impl Card for StateCard {
    const KIND: &'static str = "training state";

    /// A state saved before the card had the same keys.
    fn legacy(metadata: &HashMap<String, String>) -> Option<HashMap<String, String>> {
        metadata.contains_key("config").then(|| metadata.clone())
    }
}

impl StateCard {
    /// The card of a run of `tool` (none for finetune) with options `config`.
    pub fn new(tool: Option<&str>, config: &impl Serialize) -> Result<Self> {
        let config = serde_json::to_value(config)?;
        Ok(Self { tool: tool.map(str::to_owned), config, progress: None, stages: None, history: None })
    }
}

impl TrainState {
    pub fn new(optimizer: Box<dyn Optimizer>) -> Self {
        Self { epochs: Vec::new(), batch_losses: Vec::new(), optimizer, kept: None }
    }

    pub fn epochs_done(&self) -> usize {
        self.epochs.len()
    }

    /// The kept epoch under `keep`: for [`KeepRule::Last`] the last epoch
    /// (`None` before the first).
    pub fn kept_epoch(&self, keep: KeepRule) -> Option<&EpochRecord> {
        match keep {
            KeepRule::Lowest(_) | KeepRule::Highest(_) => self.kept.as_ref().and_then(|k| self.epochs.get(k.epoch)),
            KeepRule::Last => self.epochs.last(),
        }
    }

    /// Writes the state with a task's live tensors (its [`Task::model`],
    /// [`Task::carried`] and [`Task::params`]) to `path` atomically, with
    /// `card` (the caller's fields) holding the engine's progress.
    pub fn save(&self, path: &Path, task: &dyn Task, card: &StateCard) -> Result<()> {
        let mut tensors: Vec<(String, Tensor)> =
            task.model().into_iter().map(|(name, t)| (format!("model.{name}"), t)).collect();
        tensors.extend(task.carried().into_iter().map(|(name, t)| (format!("carried.{name}"), t)));
        let optimizer = self.optimizer.state(task.params());
        tensors.extend(optimizer.into_iter().map(|(n, t)| (format!("optimizer.{n}"), t)));
        if let Some(kept) = &self.kept {
            tensors.extend(kept.tensors.iter().map(|(n, t)| (format!("kept.{n}"), t.shallow_clone())));
        }
        let progress = SavedProgress {
            epochs: self.epochs.clone(),
            batch_losses: self.batch_losses.clone(),
            kept: self.kept.as_ref().map(|k| (k.epoch, k.score)),
            kept_from: self.kept.as_ref().map_or(KeptFrom::Model, |k| k.from),
        };
        card::save(path, &tensors, &StateCard { progress: Some(progress), ..card.clone() })
    }

    /// The state saved at `path`, its model and carried tensors copied into
    /// a task's `live` ones and its optimizer's buffers (over `live.params`)
    /// into `optimizer`. Strict: a missing or misshapen tensor is an error
    /// naming it.
    pub fn load(path: &Path, live: Live, optimizer: Box<dyn Optimizer>) -> Result<Self> {
        let card: StateCard = card::read(path)?;
        let progress =
            card.progress.with_context(|| format!("{}: the state holds no epoch's progress", path.display()))?;
        Self::from_saved(path, progress, &read_named_tensors(path)?, live, optimizer)
    }

    /// The state of `progress` and the tensors saved with it (`model.`,
    /// `carried.`, `optimizer.` and `kept.` names), copied as
    /// [`TrainState::load`] does.
    pub fn from_saved(
        path: &Path,
        progress: SavedProgress,
        tensors: &[(String, Tensor)],
        Live { model, carried, params }: Live,
        mut optimizer: Box<dyn Optimizer>,
    ) -> Result<Self> {
        let group = |prefix: &str| -> Vec<(String, Tensor)> {
            tensors
                .iter()
                .filter_map(|(n, t)| n.strip_prefix(prefix).map(|s| (s.to_owned(), t.shallow_clone())))
                .collect()
        };
        let what = format!("resuming {}", path.display());
        copy_by_name(model, &group("model."), &what)?;
        copy_by_name(carried, &group("carried."), &what)?;
        optimizer.load_state(params, &group("optimizer.")).with_context(|| what.clone())?;
        let kept = match progress.kept {
            Some((epoch, _)) if epoch >= progress.epochs.len() => {
                bail!("{}: metadata progress keeps epoch {epoch} of {}", path.display(), progress.epochs.len())
            }
            Some((epoch, score)) => {
                let tensors = kept_tensors(model, group("kept."), &what)?;
                Some(Kept { epoch, score, from: progress.kept_from, tensors })
            }
            None => None,
        };
        Ok(Self { epochs: progress.epochs, batch_losses: progress.batch_losses, optimizer, kept })
    }

    /// Copies the kept weights into a task's live `model` tensors (no-op
    /// when none were copied: [`KeepRule::Last`] keeps the live ones).
    pub fn restore_kept(&self, model: &[(String, Tensor)]) -> Result<()> {
        match &self.kept {
            Some(kept) => copy_by_name(model, &kept.tensors, "the kept model"),
            None => Ok(()),
        }
    }
}

/// A task's live tensors, which a state is loaded into.
pub struct Live<'a> {
    /// Every tensor of the model ([`Task::model`]).
    pub model: &'a [(String, Tensor)],
    /// What the task carries besides ([`Task::carried`]; none for most tasks).
    pub carried: &'a [(String, Tensor)],
    /// The parameters the optimizer's buffers are named by.
    pub params: &'a Params,
}

impl<'a> Live<'a> {
    /// The live tensors of a task that carries nothing besides its model.
    pub fn model(model: &'a [(String, Tensor)], params: &'a Params) -> Self {
        Self { model, carried: &[], params }
    }
}

/// The saved kept tensors in `model`'s order, on its devices, each checked.
fn kept_tensors(model: &[(String, Tensor)], saved: Vec<(String, Tensor)>, what: &str) -> Result<Vec<(String, Tensor)>> {
    let shapes: Vec<(String, Vec<i64>)> = model.iter().map(|(n, t)| (n.clone(), t.size())).collect();
    check_complete(&saved, &shapes, what)?;
    let by_name: HashMap<String, Tensor> = saved.into_iter().collect();
    Ok(model.iter().map(|(n, live)| (n.clone(), by_name[n].to_device(live.device()).to_kind(live.kind()))).collect())
}

/// How the engine runs a task.
pub struct Fit<'a> {
    pub epochs: usize,
    /// The learning rate of each epoch (numbered from 0).
    pub lr: Box<dyn Fn(usize) -> f64 + 'a>,
    pub keep: KeepRule,
    /// Stop when the keep rule's score has not improved for this many
    /// epochs (counted from the kept epoch, or from where this process
    /// resumed).
    pub patience: Option<usize>,
    pub interrupt: &'a Interrupt,
    /// Names the run in messages (`hidden 100`, `caption`, …).
    pub label: &'a str,
    pub reporter: &'a dyn Reporter,
}

/// How fitting ended (an interruption and errors are `Err`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub stopped_early: bool,
}

/// Trains `task` from where `state` stands to `how.epochs`, calling
/// `after_epoch` with the state after every epoch (to save it and report).
/// Ctrl-C stops it inside an epoch where the task checks (its minibatches),
/// or after `after_epoch` has run: with an [`Interrupted`] error.
pub fn fit<T: Task>(
    task: &mut T,
    how: &Fit,
    state: &mut TrainState,
    after_epoch: &mut dyn FnMut(&TrainState, &T) -> Result<()>,
) -> Result<Outcome> {
    let resumed_at = state.epochs_done().saturating_sub(1);
    for index in state.epochs_done()..how.epochs {
        let started = Instant::now();
        let (lr, label, interrupt, reporter) = ((how.lr)(index), how.label, how.interrupt, how.reporter);
        let epoch = Epoch { index, lr, label, interrupt, reporter };
        let train = task.train_epoch(&epoch, state.optimizer.as_mut())?;
        let mut scores = task.valid_epoch(&epoch)?;
        if let Some((name, value)) = scores.iter().find(|(_, v)| !v.is_finite()) {
            bail!("{}: non-finite {name} ({value}) after epoch {index}; lower --lr", how.label);
        }
        scores.extend(train.scores);
        let seconds = started.elapsed().as_secs_f64();
        let record = EpochRecord { epoch: index, train_loss: train.loss, lr: epoch.lr, seconds, scores };
        if let Some((from, score)) = how.keep.improves(&record, state.kept.as_ref()) {
            let tensors = weights_of(task, from)?.into_iter().map(|(n, t)| (n, t.detach().copy())).collect();
            state.kept = Some(Kept { epoch: index, score, from, tensors });
        }
        state.batch_losses.extend(train.batch_losses);
        state.epochs.push(record);
        after_epoch(state, task)?;
        let last = index + 1 == how.epochs;
        if !last && task.stop_requested(how.interrupt)? {
            return Err(Interrupted(format!("{}: interrupted after epoch {index}", how.label)).into());
        }
        if !last && patience_ran_out(how, state, resumed_at) {
            return Ok(Outcome { stopped_early: true });
        }
    }
    Ok(Outcome { stopped_early: false })
}

/// Every tensor of `task`'s model as the weights `from` hold them (live).
fn weights_of<T: Task>(task: &T, from: KeptFrom) -> Result<Vec<(String, Tensor)>> {
    match from {
        KeptFrom::Model => Ok(task.model()),
        KeptFrom::Ema => task.ema_model().context("an ema_ score was recorded without a moving average"),
    }
}

/// Whether `how.patience` epochs have passed since the kept epoch (or since
/// the epoch this process resumed after); says so when they have.
fn patience_ran_out(how: &Fit, state: &TrainState, resumed_at: usize) -> bool {
    let Some(patience) = how.patience else { return false };
    let Some(kept) = &state.kept else { return false };
    let best = kept.epoch.max(resumed_at);
    let epoch = state.epochs_done() - 1;
    if epoch < best + patience {
        return false;
    }
    how.reporter.line(&format!(
        "early stop: {} has not improved for {patience} epoch(s) (best at epoch {best})",
        how.keep.score_words()
    ));
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Silent;
    use crate::train::optim::Sgd;

    /// A task whose epochs score the values given, one a epoch, and its
    /// moving average those of `ema_acc` (when given); its one weight is 1,
    /// its average's 2.
    struct Scripted {
        params: Params,
        val_acc: Vec<f64>,
        ema_acc: Option<Vec<f64>>,
    }

    impl Task for Scripted {
        fn params(&self) -> &Params {
            &self.params
        }
        fn model(&self) -> Vec<(String, Tensor)> {
            vec![("w".to_owned(), Tensor::from_slice(&[1.0f32]))]
        }
        fn train_epoch(&mut self, epoch: &Epoch, _: &mut dyn Optimizer) -> Result<TrainPhase> {
            Ok(TrainPhase { loss: epoch.lr, batch_losses: vec![epoch.lr], scores: Scores::new() })
        }
        fn valid_epoch(&mut self, epoch: &Epoch) -> Result<Scores> {
            let mut scores = Scores::from([("val_acc".to_owned(), self.val_acc[epoch.index])]);
            if let Some(ema_acc) = &self.ema_acc {
                scores.insert("ema_val_acc".to_owned(), ema_acc[epoch.index]);
            }
            Ok(scores)
        }
        fn ema_model(&self) -> Option<Vec<(String, Tensor)>> {
            self.ema_acc.as_ref().map(|_| vec![("w".to_owned(), Tensor::from_slice(&[2.0f32]))])
        }
        fn carried(&self) -> Vec<(String, Tensor)> {
            vec![("ema.w".to_owned(), Tensor::from_slice(&[3.0f32]))]
        }
    }

    fn fit_scripted(val_acc: &[f64], patience: Option<usize>, interrupt: &Interrupt) -> (Result<Outcome>, TrainState) {
        fit_task(
            Scripted { params: Params::new(Vec::new()), val_acc: val_acc.to_vec(), ema_acc: None },
            patience,
            interrupt,
        )
    }

    fn fit_task(mut task: Scripted, patience: Option<usize>, interrupt: &Interrupt) -> (Result<Outcome>, TrainState) {
        let val_acc = task.val_acc.clone();
        let mut state = TrainState::new(Box::new(Sgd::new(&task.params, 0.0, 0.0)));
        let how = Fit {
            epochs: val_acc.len(),
            lr: Box::new(|epoch| 0.1 / (epoch + 1) as f64),
            keep: KeepRule::Highest("val_acc"),
            patience,
            interrupt,
            label: "scripted",
            reporter: &Silent,
        };
        let outcome = fit(&mut task, &how, &mut state, &mut |_, _| Ok(()));
        (outcome, state)
    }

    #[test]
    fn the_highest_score_is_kept_the_first_on_ties_and_each_epoch_has_its_rate() {
        let (outcome, state) = fit_scripted(&[0.5, 0.8, 0.8, 0.7], None, &Interrupt::new());
        assert_eq!(outcome.unwrap(), Outcome { stopped_early: false });
        assert_eq!(state.kept.as_ref().map(|k| (k.epoch, k.score)), Some((1, 0.8)));
        assert_eq!(state.epochs[2].lr, 0.1 / 3.0);
        assert_eq!(state.batch_losses.len(), 4);
    }

    #[test]
    fn an_epoch_is_kept_for_the_moving_averages_weights_when_they_score_better() {
        let (val_acc, ema_acc) = (vec![0.5, 0.6, 0.6, 0.8], vec![0.5, 0.7, 0.7, 0.8]);
        let task = Scripted { params: Params::new(Vec::new()), val_acc, ema_acc: Some(ema_acc) };
        let (outcome, state) = fit_task(task, None, &Interrupt::new());
        outcome.unwrap();
        let kept = state.kept.as_ref().unwrap();
        assert_eq!((kept.epoch, kept.score, kept.from), (3, 0.8, KeptFrom::Model), "ties go to the model");
        assert_eq!(kept.tensors[0].1.double_value(&[0]), 1.0);
        let task = Scripted { params: Params::new(Vec::new()), val_acc: vec![0.5, 0.6], ema_acc: Some(vec![0.5, 0.7]) };
        let (_, state) = fit_task(task, None, &Interrupt::new());
        let kept = state.kept.as_ref().unwrap();
        assert_eq!((kept.epoch, kept.score, kept.from), (1, 0.7, KeptFrom::Ema));
        assert_eq!(kept.tensors[0].1.double_value(&[0]), 2.0, "the average's weights are kept");
    }

    #[test]
    fn a_state_saves_the_carried_tensors_and_whose_weights_were_kept() {
        let task = Scripted { params: Params::new(Vec::new()), val_acc: vec![0.5], ema_acc: Some(vec![0.7]) };
        let (_, state) = fit_task(task, None, &Interrupt::new());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.safetensors");
        let task = Scripted { params: Params::new(Vec::new()), val_acc: vec![], ema_acc: Some(vec![]) };
        state.save(&path, &task, &StateCard::new(None, &"config").unwrap()).unwrap();
        let zero = || Tensor::from_slice(&[0.0f32]);
        let (model, carried) = (vec![("w".to_owned(), zero())], vec![("ema.w".to_owned(), zero())]);
        let live = Live { model: &model, carried: &carried, params: &task.params };
        let loaded = TrainState::load(&path, live, Box::new(Sgd::new(&task.params, 0.0, 0.0))).unwrap();
        assert_eq!((model[0].1.double_value(&[0]), carried[0].1.double_value(&[0])), (1.0, 3.0));
        let kept = loaded.kept.as_ref().unwrap();
        assert_eq!((kept.from, kept.tensors[0].1.double_value(&[0])), (KeptFrom::Ema, 2.0));
        let missing = Live { model: &model, carried: &[("ema.b".to_owned(), zero())], params: &task.params };
        let error = TrainState::load(&path, missing, Box::new(Sgd::new(&task.params, 0.0, 0.0))).err().unwrap();
        assert!(format!("{error:#}").contains("ema.b is missing"), "{error:#}");
    }

    #[test]
    fn patience_counts_from_the_kept_epoch() {
        let (outcome, state) = fit_scripted(&[0.5, 0.8, 0.7, 0.7, 0.9, 0.9], Some(2), &Interrupt::new());
        assert_eq!(outcome.unwrap(), Outcome { stopped_early: true });
        assert_eq!(state.epochs_done(), 4);
    }

    #[test]
    fn an_interruption_ends_after_the_epoch_it_came_in() {
        let interrupt = Interrupt::new();
        interrupt.request();
        let (outcome, state) = fit_scripted(&[0.5, 0.8], None, &interrupt);
        assert!(outcome.unwrap_err().downcast_ref::<Interrupted>().is_some());
        assert_eq!(state.epochs_done(), 1);
    }

    #[test]
    fn a_non_finite_score_stops_the_run_naming_it() {
        let (outcome, _) = fit_scripted(&[0.5, f64::NAN], None, &Interrupt::new());
        let error = outcome.unwrap_err().to_string();
        assert!(error.contains("non-finite val_acc") && error.contains("after epoch 1"), "{error}");
    }
}
