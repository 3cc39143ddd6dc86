//! The training engine every tool shares, by concept:
//!
//! - [`engine`]: the one training loop (epochs at the rate a [`schedule`]
//!   gives, the task's train phase and evaluation, the keep rule, early
//!   stopping, Ctrl-C, resumable [`engine::TrainState`]);
//! - [`minibatch`]: rows held in memory as the engine's task (`mnist`,
//!   `caption`);
//! - [`step`]: one training step (gradients as values from a
//!   `crate::grad::Backprop`, accumulated over batches, unscaled by [`amp`],
//!   clipped, applied by an [`optim`] optimizer, followed by an [`ema`]);
//! - [`loss`]: the classification losses of a step (cross-entropy, soft
//!   targets of mixed batches), weighted per class when asked;
//! - [`ema`]: the exponential moving average of the weights (`--ema`);
//! - [`amp`]: reduced precision (`--amp`, `--precision bf16`): which
//!   autocast forward passes run under, and the loss scaling fp16 needs;
//! - [`data_parallel`]: a process's part in a data-parallel run (DDP's
//!   semantics over `crate::dist`);
//! - [`lr_range`]: the learning-rate range test's rates, smoothed loss,
//!   stop rule and suggestions (fastai's `lr_find`);
//! - [`augmented_batches`] and [`frozen_backbone`]: image batches to the device, passes of a
//!   frozen classifier (features, probabilities);
//! - [`feature_cache`]: frozen-backbone features on disk, keyed by what
//!   they depend on, shared by runs (`--feature-cache`).
//!
//! It knows no tool: the tools (`crate::finetune`, `crate::mnist`,
//! `crate::caption`) supply their tasks. Models and data come in from
//! [`crate::models`] and [`crate::data`]; CPU speed code stays behind
//! [`crate::accel`].

pub mod amp;
pub mod augmented_batches;
pub mod data_parallel;
pub mod ema;
pub mod engine;
pub mod feature_cache;
pub mod frozen_backbone;
pub mod loss;
pub mod lr_range;
pub mod minibatch;
pub mod optim;
pub mod schedule;
pub mod step;
