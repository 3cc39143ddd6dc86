//! # tchlab: the ML-assignment experiments, rebuilt in Rust on libtorch
//!
//! How data flows through the crate:
//!
//! ```text
//! image files ─► data::image_folder (classes, files; non-images reported)
//!             ─► data::loader (decode once within a memory budget, augment per epoch, batch, in parallel)
//!             ─► data::transforms (torchvision's crops/resizes, normalization)
//!             ─► models (backbone loaded by name from a published checkpoint,
//!                        new linear head)
//!             ─► train::feed (batches to the device) / train::frozen (frozen-
//!                        backbone passes, in CPU lanes)
//!             ─► train::finetune (SGD + StepLR, best model, resumable state;
//!                        on the CPU, weight gradients of ResNet's stride-1 3×3
//!                        convolutions by models::winograd)
//!             ─► metrics.csv / summary.json / report::plots / .safetensors
//! ```
//!
//! A saved model is used again through `predict` (probabilities for image
//! files, evaluation of a split with a confusion matrix).
//!
//! MNIST takes the same road from `data::mnist` (IDX files) into `nets`,
//! built from the hand-derived `layers`, trained by `train::solver` with
//! either their explicit backward passes or autograd; `mnist_experiments`
//! runs the assignment's sweep and CNN and writes their tables and figures.
//!
//! Binaries (`src/bin`) parse arguments and call into this library; `device`
//! decides where tensors live, `cli` turns errors into one-line messages.

pub mod accel;
pub mod cli;
pub mod data;
pub mod device;
pub mod grad;
pub mod interrupt;
pub mod layers;
pub mod metrics;
pub mod mnist_experiments;
pub mod models;
pub mod names;
pub mod nets;
pub mod persist;
pub mod predict;
pub mod report;
pub mod train;
