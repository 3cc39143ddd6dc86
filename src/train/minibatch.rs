//! The minibatch engine of the tools that train on tensors held in memory
//! (`mnist`, `caption`): every epoch the training rows in a seeded order,
//! minibatches through the task's step (gradients as values, from a
//! `crate::grad::HandDerived` network's own backward pass or autograd),
//! Adam ([`AdamW`] without weight decay, `torch.optim.Adam`'s update), the
//! learning rate multiplied by the decay after every epoch, non-finite
//! losses refused, Ctrl-C honoured at the next minibatch, then the task's
//! evaluation and the [`KeepRule`]. Everything it needs to go on lives in
//! [`TrainState`], which the caller saves after every epoch and a resumed
//! run loads: a run killed and resumed ends with the same numbers as one
//! that ran through.
//!
//! The task supplies its step and its evaluation ([`Task`], as
//! burn-train's `TrainStep`/`ValidStep`); the engine knows no network, no
//! data set and no file.

use super::optim::{AdamW, Optimizer};
use crate::grad::{GradMode, Gradients, Params};
use crate::interrupt::{Interrupt, Interrupted};
use crate::persist::safetensors;
use crate::persist::weights::{check_complete, copy_by_name, read_named_tensors};
use crate::report::Reporter;
use anyhow::{bail, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Instant;
use tch::{Kind, Tensor};

/// How a task trains (recorded with its results).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Recipe {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    /// The learning rate is multiplied by this after every epoch.
    pub lr_decay: f64,
    /// Seeds the row order of every epoch.
    pub seed: u64,
    pub grad: GradMode,
}

impl Recipe {
    /// Refuses a recipe the engine cannot run (a resumed run's options come
    /// from a file, not through the command line's checks).
    pub fn check(&self) -> Result<()> {
        let rate_ok = self.lr.is_finite() && self.lr > 0.0 && self.lr_decay > 0.0 && self.lr_decay <= 1.0;
        if self.epochs == 0 || self.batch_size == 0 || !rate_ok {
            bail!(
                "recipe: epochs {} and batch size {} must be at least 1, lr {} above 0, lr decay {} in (0, 1]",
                self.epochs,
                self.batch_size,
                self.lr,
                self.lr_decay
            );
        }
        Ok(())
    }

    /// The learning rate of `epoch` (numbered from 0).
    pub fn lr(&self, epoch: usize) -> f64 {
        (0..epoch).fold(self.lr, |lr, _| lr * self.lr_decay)
    }
}

/// What a task supplies to the engine.
pub trait Task {
    /// How many training rows there are to batch.
    fn train_rows(&self) -> i64;
    /// The parameters the optimizer updates.
    fn params(&self) -> &Params;
    /// The loss (detached) and gradients of the training rows `rows` (row
    /// indices on the task's device), the way `grad` says.
    fn train_step(&self, rows: &Tensor, grad: GradMode) -> (Tensor, Gradients);
    /// What an epoch's record keeps after it, by name (`val_loss`, …).
    fn valid_step(&self) -> BTreeMap<String, f64>;
}

/// One epoch, numbered from 0.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EpochRecord {
    pub epoch: usize,
    /// The mean loss of the epoch's minibatches.
    pub train_loss: f64,
    pub lr: f64,
    pub seconds: f64,
    /// What the task's evaluation measured after the epoch.
    #[serde(flatten)]
    pub scores: BTreeMap<String, f64>,
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
    /// The epoch with the lowest value of the score named (a copy of its
    /// weights is kept in [`TrainState::kept`]).
    Lowest(&'static str),
    /// The last epoch: the live weights (nothing is copied).
    Last,
}

/// The weights the [`KeepRule`] chose, with their epoch and score.
pub struct Kept {
    pub epoch: usize,
    pub score: f64,
    pub tensors: Vec<Tensor>,
}

impl KeepRule {
    /// The score of `record` to keep it by, when it beats `kept`.
    fn improves(self, record: &EpochRecord, kept: Option<&Kept>) -> Option<f64> {
        let KeepRule::Lowest(name) = self else { return None };
        let score = record.score(name);
        kept.is_none_or(|kept| score < kept.score).then_some(score)
    }
}

/// Everything training carries from one epoch to the next.
pub struct TrainState {
    pub epochs: Vec<EpochRecord>,
    /// Every minibatch's loss, in order.
    pub batch_losses: Vec<f64>,
    pub optimizer: AdamW,
    pub kept: Option<Kept>,
}

/// The state's numbers that are not tensors, as saved.
#[derive(Serialize, Deserialize)]
struct SavedProgress {
    epochs: Vec<EpochRecord>,
    batch_losses: Vec<f64>,
    kept: Option<(usize, f64)>,
}

impl TrainState {
    pub fn new(params: &Params) -> Self {
        Self { epochs: Vec::new(), batch_losses: Vec::new(), optimizer: AdamW::new(params, 0.0), kept: None }
    }

    pub fn epochs_done(&self) -> usize {
        self.epochs.len()
    }

    /// The kept epoch and its weights' score under `keep`: for
    /// [`KeepRule::Last`] the last epoch (`None` before the first).
    pub fn kept_epoch(&self, keep: KeepRule) -> Option<&EpochRecord> {
        match keep {
            KeepRule::Lowest(_) => self.kept.as_ref().and_then(|k| self.epochs.get(k.epoch)),
            KeepRule::Last => self.epochs.last(),
        }
    }

    /// Writes the state with the live parameters to `path` (atomically),
    /// `metadata` beside it (the caller's: its options, its own progress).
    pub fn save(&self, path: &Path, params: &Params, mut metadata: HashMap<String, String>) -> Result<()> {
        let mut tensors: Vec<(String, Tensor)> =
            params.iter().map(|(name, t)| (format!("model.{name}"), t.shallow_clone())).collect();
        tensors.extend(self.optimizer.state(params).into_iter().map(|(n, t)| (format!("optimizer.{n}"), t)));
        if let Some(kept) = &self.kept {
            let names = params.iter().map(|(name, _)| format!("kept.{name}"));
            tensors.extend(names.zip(kept.tensors.iter().map(Tensor::shallow_clone)));
        }
        let progress = SavedProgress {
            epochs: self.epochs.clone(),
            batch_losses: self.batch_losses.clone(),
            kept: self.kept.as_ref().map(|k| (k.epoch, k.score)),
        };
        metadata.insert("progress".into(), serde_json::to_string(&progress)?);
        safetensors::save(path, &tensors, metadata)
    }

    /// The state saved at `path`, its parameters copied into `params`;
    /// returns it with the file's metadata. Strict: a missing or misshapen
    /// tensor is an error naming it.
    pub fn load(path: &Path, params: &Params) -> Result<(Self, HashMap<String, String>)> {
        let metadata = safetensors::read_metadata(path)?;
        let progress: SavedProgress = serde_json::from_str(
            metadata.get("progress").with_context(|| format!("{}: metadata progress missing", path.display()))?,
        )
        .with_context(|| format!("{}: metadata progress does not parse", path.display()))?;
        let tensors = read_named_tensors(path)?;
        let group = |prefix: &str| -> Vec<(String, Tensor)> {
            tensors
                .iter()
                .filter_map(|(n, t)| n.strip_prefix(prefix).map(|s| (s.to_owned(), t.shallow_clone())))
                .collect()
        };
        let what = format!("resuming {}", path.display());
        let live: Vec<(String, Tensor)> = params.iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect();
        copy_by_name(&live, &group("model."), &what)?;
        let mut optimizer = AdamW::new(params, 0.0);
        optimizer.load_state(params, &group("optimizer.")).with_context(|| what.clone())?;
        let kept = match progress.kept {
            Some((epoch, _)) if epoch >= progress.epochs.len() => {
                bail!("{}: metadata progress keeps epoch {epoch} of {}", path.display(), progress.epochs.len())
            }
            Some((epoch, score)) => {
                let saved = group("kept.");
                check_complete(&saved, &shapes(params), &what)?;
                let by_name: HashMap<String, Tensor> = saved.into_iter().collect();
                let tensors = params
                    .iter()
                    .map(|(n, p)| by_name.get(n).map(|t| t.to_device(p.device()).to_kind(p.kind())))
                    .collect::<Option<Vec<_>>>()
                    .with_context(|| format!("{what}: a kept tensor is missing"))?;
                Some(Kept { epoch, score, tensors })
            }
            None => None,
        };
        let state = Self { epochs: progress.epochs, batch_losses: progress.batch_losses, optimizer, kept };
        Ok((state, metadata))
    }

    /// Copies the kept weights into `params` (no-op when none were copied:
    /// [`KeepRule::Last`] keeps the live ones).
    pub fn restore_kept(&self, params: &Params) {
        if let Some(kept) = &self.kept {
            tch::no_grad(|| {
                for ((_, param), saved) in params.iter().zip(&kept.tensors) {
                    param.shallow_clone().copy_(saved);
                }
            });
        }
    }
}

fn shapes(params: &Params) -> Vec<(String, Vec<i64>)> {
    params.iter().map(|(n, t)| (n.clone(), t.size())).collect()
}

/// How the engine runs a task.
pub struct Fit<'a> {
    pub recipe: &'a Recipe,
    pub keep: KeepRule,
    pub interrupt: &'a Interrupt,
    /// Names the progress bar (`hidden 100`, `cnn`, …).
    pub label: &'a str,
    /// Where each epoch's progress bar comes from.
    pub reporter: &'a dyn Reporter,
}

/// Trains `task` from where `state` stands to `how.recipe.epochs`, calling
/// `after_epoch` with the state after every epoch (to save it and report).
/// Ctrl-C stops it at the next minibatch with an [`Interrupted`] error: the
/// parameters and Adam's moments in memory then include the minibatches of
/// the unfinished epoch; what `after_epoch` saved last does not.
pub fn fit(
    task: &dyn Task,
    how: &Fit,
    state: &mut TrainState,
    after_epoch: &mut dyn FnMut(&TrainState) -> Result<()>,
) -> Result<()> {
    let recipe = how.recipe;
    recipe.check().with_context(|| how.label.to_owned())?;
    let rows = task.train_rows();
    if rows < 1 {
        bail!("{}: no training rows", how.label);
    }
    let device = task.params().tensors().next().map_or(tch::Device::Cpu, |t| t.device());
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(recipe.seed);
    let order_of_epoch = |rng: &mut rand_chacha::ChaCha8Rng| {
        let mut order: Vec<i64> = (0..rows).collect();
        order.shuffle(rng);
        order
    };
    // Each epoch's order comes from one seeded stream: a resumed run replays
    // the orders of the epochs it has done.
    for _ in 0..state.epochs_done() {
        order_of_epoch(&mut rng);
    }
    let batches = (rows as usize).div_ceil(recipe.batch_size);
    for epoch in state.epochs_done()..recipe.epochs {
        let started = Instant::now();
        let order = Tensor::from_slice(&order_of_epoch(&mut rng)).to_device(device);
        let lr = recipe.lr(epoch);
        let bar = how.reporter.bar(batches as u64, &format!("{} ep {epoch}/{}", how.label, recipe.epochs - 1));
        let mut losses = Vec::with_capacity(batches);
        for b in 0..batches {
            if how.interrupt.requested() {
                bar.finish_and_clear();
                return Err(Interrupted(format!("{}: stopped during epoch {epoch}", how.label)).into());
            }
            let start = (b * recipe.batch_size) as i64;
            let batch = order.narrow(0, start, (recipe.batch_size as i64).min(rows - start));
            let (loss, grads) = task.train_step(&batch, recipe.grad);
            let loss = loss.to_kind(Kind::Double).double_value(&[]);
            if !loss.is_finite() {
                bail!("{}: non-finite loss ({loss}) at epoch {epoch}, batch {b}; lower --lr", how.label);
            }
            state.optimizer.step(task.params(), &grads, lr);
            losses.push(loss);
            bar.inc(1);
        }
        bar.finish_and_clear();
        let scores = task.valid_step();
        if let Some((name, value)) = scores.iter().find(|(_, v)| !v.is_finite()) {
            bail!("{}: non-finite {name} ({value}) after epoch {epoch}; lower --lr", how.label);
        }
        let train_loss = losses.iter().sum::<f64>() / losses.len().max(1) as f64;
        let seconds = started.elapsed().as_secs_f64();
        let record = EpochRecord { epoch, train_loss, lr, seconds, scores };
        if let Some(score) = how.keep.improves(&record, state.kept.as_ref()) {
            let tensors = task.params().tensors().map(|t| t.detach().copy()).collect();
            state.kept = Some(Kept { epoch, score, tensors });
        }
        state.batch_losses.extend(losses);
        state.epochs.push(record);
        after_epoch(state)?;
    }
    Ok(())
}
