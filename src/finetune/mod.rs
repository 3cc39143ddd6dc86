//! `finetune`, the transfer-learning tool, by concept:
//!
//! - [`options`] → [`config`]: what a run is (options as given, `--config`
//!   files, validation, what `--resume` may change); [`monitor`]: the val
//!   score that picks the best epoch; [`class_weights`]: the loss's
//!   per-class weights;
//! - [`run`]: the PyTorch tutorial's epochs as a task of the one training
//!   loop (`crate::train::engine`); [`strategy`]: what feature-extract and
//!   full mode train; [`splits`]: the run's data;
//! - [`checkpoint`]: the best model and state files, and an epoch's record
//!   as `metrics.csv` rows; [`evaluate`]: loss, accuracy, macro-F1 and
//!   balanced accuracy of predictions; [`multi_label`]: what a multi-label
//!   run measures (mAP, F1, exact match);
//!   [`summary`] (with [`crate::metrics`]): what a run reports;
//!   [`outcomes`]: each val image's prediction at the kept epoch;
//! - [`lr_find`]: the learning-rate range test on a run's recipe;
//! - [`predict`]: a saved model used again (probabilities for image files,
//!   evaluation of a split with a confusion matrix); [`export`]: written as
//!   ONNX for other runtimes;
//! - [`audit`]: what is wrong with a data set before training on it (counts,
//!   unreadable files, duplicates and train/val leakage).

pub mod audit;
pub mod cam;
pub mod checkpoint;
pub mod class_weights;
pub mod config;
pub mod evaluate;
pub mod export;
pub mod lr_find;
pub mod monitor;
pub mod multi_label;
pub mod options;
pub mod outcomes;
pub mod predict;
pub mod run;
pub mod splits;
pub mod strategy;
pub mod summary;
