//! Minibatches of rows held in memory, for the tools that train on tensors
//! (`mnist`, `caption`): every epoch the training rows in a seeded order
//! (one stream, replayed on resume), minibatches through the task's step
//! (gradients as values, from a `crate::grad::HandDerived` network's own
//! backward pass or autograd), non-finite losses refused, Ctrl-C honoured
//! at the next minibatch. [`Rows`] makes such a [`RowTask`] a task of the
//! one training loop, [`super::engine`], which its [`Recipe`] configures:
//! Adam ([`AdamW`] without weight decay, `torch.optim.Adam`'s update) and
//! the learning rate multiplied by the decay after every epoch.

use super::engine::{Epoch, Fit, KeepRule, Scores, Task, TrainPhase};
use super::optim::{AdamW, Optimizer};
use crate::grad::{GradMode, Gradients, Params};
use crate::interrupt::{Interrupt, Interrupted};
use crate::report::Reporter;
use anyhow::{bail, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
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

    /// The optimizer the recipe trains with: Adam.
    pub fn optimizer(&self, params: &Params) -> Box<dyn Optimizer> {
        Box::new(AdamW::new(params, 0.0))
    }
}

/// A task over rows held in memory.
pub trait RowTask {
    /// How many training rows there are to batch.
    fn train_rows(&self) -> i64;
    /// The parameters the optimizer updates (the whole model).
    fn params(&self) -> &Params;
    /// The loss (detached) and gradients of the training rows `rows` (row
    /// indices on the task's device), the way `grad` says.
    fn train_step(&self, rows: &Tensor, grad: GradMode) -> (Tensor, Gradients);
    /// What an epoch's record keeps after it, by name (`val_loss`, …).
    fn valid_step(&self) -> Scores;
}

/// A [`RowTask`] as a task of the engine: seeded row orders, minibatches of
/// the recipe's size, the training loss as the mean of the minibatches'.
pub struct Rows<'a, R: RowTask> {
    pub task: &'a R,
    recipe: &'a Recipe,
    /// Names the run in bars and messages (`hidden 100`, `caption`, …).
    label: &'a str,
    order: ChaCha8Rng,
    /// Epoch orders drawn from `order` so far.
    drawn: usize,
}

impl<'a, R: RowTask> Rows<'a, R> {
    pub fn new(task: &'a R, recipe: &'a Recipe, label: &'a str) -> Result<Self> {
        recipe.check().with_context(|| label.to_owned())?;
        if task.train_rows() < 1 {
            bail!("{label}: no training rows");
        }
        Ok(Self { task, recipe, label, order: ChaCha8Rng::seed_from_u64(recipe.seed), drawn: 0 })
    }

    /// How the engine runs these rows: the recipe's epochs and rates.
    pub fn fit<'f>(&self, keep: KeepRule, interrupt: &'f Interrupt, reporter: &'f dyn Reporter) -> Fit<'f>
    where
        'a: 'f,
    {
        let recipe = self.recipe;
        let lr = Box::new(move |epoch| recipe.lr(epoch));
        Fit { epochs: recipe.epochs, lr, keep, patience: None, interrupt, label: self.label, reporter }
    }

    /// The row order of `epoch`: each epoch's order comes from one seeded
    /// stream, so a resumed run replays the orders of the epochs it has done.
    fn order_of(&mut self, epoch: usize) -> Vec<i64> {
        let rows = self.task.train_rows();
        loop {
            let mut order: Vec<i64> = (0..rows).collect();
            order.shuffle(&mut self.order);
            self.drawn += 1;
            if self.drawn > epoch {
                return order;
            }
        }
    }
}

impl<R: RowTask> Task for Rows<'_, R> {
    fn params(&self) -> &Params {
        self.task.params()
    }

    fn model(&self) -> Vec<(String, Tensor)> {
        self.task.params().iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect()
    }

    fn train_epoch(&mut self, epoch: &Epoch, optimizer: &mut dyn Optimizer) -> Result<TrainPhase> {
        let device = self.task.params().tensors().next().map_or(tch::Device::Cpu, |t| t.device());
        let order = Tensor::from_slice(&self.order_of(epoch.index)).to_device(device);
        let (rows, batch_size) = (self.task.train_rows(), self.recipe.batch_size);
        let batches = (rows as usize).div_ceil(batch_size);
        let bar = epoch
            .reporter
            .bar(batches as u64, &format!("{} ep {}/{}", epoch.label, epoch.index, self.recipe.epochs - 1));
        let mut losses = Vec::with_capacity(batches);
        for b in 0..batches {
            if epoch.interrupt.requested() {
                bar.finish_and_clear();
                return Err(Interrupted(format!("{}: stopped during epoch {}", epoch.label, epoch.index)).into());
            }
            let start = (b * batch_size) as i64;
            let batch = order.narrow(0, start, (batch_size as i64).min(rows - start));
            let (loss, grads) = self.task.train_step(&batch, self.recipe.grad);
            let loss = loss.to_kind(Kind::Double).double_value(&[]);
            if !loss.is_finite() {
                bail!("{}: non-finite loss ({loss}) at epoch {}, batch {b}; lower --lr", epoch.label, epoch.index);
            }
            optimizer.step(self.task.params(), &grads, epoch.lr);
            losses.push(loss);
            bar.inc(1);
        }
        bar.finish_and_clear();
        let loss = losses.iter().sum::<f64>() / losses.len().max(1) as f64;
        Ok(TrainPhase { loss, batch_losses: losses, scores: Scores::new() })
    }

    fn valid_epoch(&mut self, _: &Epoch) -> Result<Scores> {
        Ok(self.task.valid_step())
    }
}
