//! `finetune`, the transfer-learning tool, by concept:
//!
//! - [`options`] → [`config`]: what a run is (options as given, `--config`
//!   files, validation, what `--resume` may change);
//! - [`run`]: the PyTorch tutorial's epochs as a task of the one training
//!   loop (`crate::train::engine`); [`strategy`]: what feature-extract and
//!   full mode train; [`splits`]: the run's data;
//! - [`checkpoint`]: the best model and state files, and an epoch's record
//!   as `metrics.csv` rows; [`evaluate`]: loss and accuracy of predictions;
//!   [`multi_label`]: what a multi-label run measures (mAP, F1, exact match);
//!   [`summary`] (with [`crate::metrics`]): what a run reports;
//! - [`lr_find`]: the learning-rate range test on a run's recipe;
//! - [`predict`]: a saved model used again (probabilities for image files,
//!   evaluation of a split with a confusion matrix); [`export`]: written as
//!   ONNX for other runtimes.

pub mod checkpoint;
pub mod config;
pub mod evaluate;
pub mod export;
pub mod lr_find;
pub mod multi_label;
pub mod options;
pub mod predict;
pub mod run;
pub mod splits;
pub mod strategy;
pub mod summary;
