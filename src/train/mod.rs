//! Training, by concept:
//!
//! - [`config`]: what a fine-tuning run is (options, `--config` files,
//!   validation, what `--resume` may change);
//! - [`engine`]: the one training loop of every tool (epochs, the task's
//!   train phase and evaluation, the keep rule, early stopping, Ctrl-C,
//!   resumable [`engine::TrainState`]); [`minibatch`]: rows held in memory
//!   as its task (`mnist`, `caption`);
//! - [`learner`]: fine-tuning as the engine's task; [`strategy`]: what
//!   feature-extract and full mode mean; [`splits`]: the run's data;
//! - [`step`]: one training step (gradients as values from a
//!   `crate::grad::Backprop`, unscaled by [`amp`], applied by an [`optim`]
//!   optimizer at the rate [`schedule`] gives);
//! - [`checkpoint`]: fine-tuning's best model and state files; [`evaluate`]: loss and
//!   accuracy of predictions; [`summary`] (with [`crate::metrics`]): what a run
//!   reports;
//! - [`amp`]: reduced precision (`--amp`, `--precision bf16`): which
//!   autocast forward passes run under, and the loss scaling fp16 needs;
//! - [`feed`] and [`frozen`]: batches to the device, frozen-backbone passes.
//!
//! Models and data come in from [`crate::models`] and [`crate::data`];
//! figures go out through [`crate::report`]; CPU speed code stays behind
//! [`crate::accel`].

pub mod amp;
pub mod checkpoint;
pub mod config;
pub mod engine;
pub mod evaluate;
pub mod feed;
pub mod frozen;
pub mod learner;
pub mod minibatch;
pub mod optim;
pub mod options;
pub mod schedule;
pub mod splits;
pub mod step;
pub mod strategy;
pub mod summary;
