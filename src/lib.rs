//! # tchlab: the ML-assignment experiments, rebuilt in Rust on libtorch
//!
//! How data flows through the crate:
//!
//! ```text
//! image files ─► data::image_folder (classes, files; non-images reported; val folder or held-out split),
//!                or data::labels_file (a CSV/TSV of paths and labels, single- or multi-label; bad rows by line)
//!             ─► data::loader (decode once within a memory budget, augment per epoch, batch, in parallel;
//!                the epoch's samples drawn by data::sampler: shuffled, or class-balanced)
//!             ─► data::transforms (torchvision's crops/resizes, normalization)
//!                  └ data::augment (presets, color jitter, erasing, MixUp/CutMix: draws, then pixel ops)
//!             ─► models (backbone built by name, new linear head)
//!                  ◄─ persist (.pth / .safetensors weights loaded by name; persist::card, the one
//!                     typed metadata format of every saved file)
//!             ─► finetune::run (the tutorial's epochs as a task, configured by finetune::options → config)
//!                  ├ finetune::strategy (what feature-extract and full mode train)
//!                  ├ finetune::checkpoint (best model, state files) / finetune::summary (summary.json)
//!                  ├ finetune::monitor (the val score that picks the best epoch) / finetune::class_weights
//!                  ├ finetune::multi_label (mAP, F1, exact match of sigmoid outputs, as scikit-learn's)
//!                  └ train::engine (the one training loop of every tool: epochs, the keep rule,
//!                    early stop, Ctrl-C, resumable state)
//!                       └ train::step (forward, train::loss, grad::Backprop → gradients as values,
//!                         train::amp unscales, train::optim applies at train::schedule's rate)
//!             ─► metrics (metrics.csv; metrics::confusion: macro-F1, balanced accuracy)
//!                / report (plots, TensorBoard events; the reporter: lines, bars)
//! ```
//!
//! CPU speed code lives behind one seam, [`accel`]: Winograd weight
//! gradients for ResNet's 3×3 convolutions (a [`grad::Backprop`]), OpenMP
//! regions on libtorch's threads, eval lanes over read-only model views,
//! memory-layout choices (channels-last weights under bf16), and the PCA's
//! f64 products and eigendecompositions by OpenBLAS where it is installed.
//! Nothing outside it asks how. Reduced precision
//! (`--amp`, `--precision bf16`) is libtorch's autocast ([`autocast`]),
//! switched on around forward passes by `train::amp`; the seam keeps to
//! what fits it (no Winograd weight gradients for bf16 convolutions).
//!
//! Data-parallel runs: [`dist`] joins a process group of PyTorch's c10d
//! (Gloo on the CPU) from torchrun's, Slurm's or `--nproc`'s launch
//! variables and issues the collectives (broadcast, bucketed gradient mean,
//! metric sums, all-gather, barrier); `train::data_parallel::Ranks` gives
//! them DDP's meaning in training (shared-out epochs, gradients averaged in
//! `train::step`, batch-norm buffers from rank 0, sharded eval passes,
//! agreed Ctrl-C and failures), and `cli::data_parallel` starts local ranks
//! or joins the launcher's. Rank 0 alone writes the run's files.
//!
//! A data set is checked before training by `finetune::audit` (counts per
//! class and split, files that do not decode, exact and near duplicates and
//! the train/val leakage among them), through the same decode path and
//! frozen pass. A saved model is used again through `finetune::predict` (probabilities
//! for image files, evaluation of a split with a confusion matrix). Many
//! runs at once are a [`sweep`]: a grid of options run as processes of one
//! tool (`finetune`, `mnist mlp|cnn`, `caption train`) over the GPUs or CPU,
//! or as a Slurm array, summed up in one report. Runs may validate on one
//! fold of a stratified K-fold split (`data::folds`); each writes its
//! outcome on every val image, so the report pairs configurations scored on
//! the same images and tests their difference ([`stats`]: McNemar's exact
//! test, a paired bootstrap interval).
//!
//! Every run writes into a [`run_dir`]: the one owner of the run files'
//! names, the overwrite rule (a folder holding a run is refused without
//! `--overwrite`; no `--out` takes the next free `runs/<tool>-…`), the
//! resume hint, and the keys every `summary.json` starts with.
//!
//! MNIST takes the same road from `data::mnist` (IDX files) into `nets`,
//! built from the hand-derived `layers` (each net a `grad::HandDerived`:
//! `grad::gradients` chooses its explicit backward pass or autograd),
//! trained by `train::engine` on `train::minibatch`'s rows held in memory
//! (seeded minibatches, Adam, the keep rule, resumable state after every
//! epoch, Ctrl-C at the next minibatch); [`mnist`] runs
//! the assignment's sweep and CNN (resumable at the size and epoch reached)
//! and writes their tables and figures.
//!
//! Captioning: image features (the course's HDF5 files read by
//! `caption::coco_h5`, or a COCO-format image folder through
//! `caption::coco_json` with features from this crate's frozen backbones,
//! `caption::features`) ─► [`caption`]'s network of hand-derived recurrent
//! `layers` (embedding, RNN/LSTM, temporal affine and loss), trained by
//! `train::engine` on `caption::task`'s rows, evaluated against two baselines
//! (`caption::evaluate`: BLEU, ROUGE-L and CIDEr-D as the COCO caption
//! evaluation computes them, and on the digit scenes what each caption says
//! is where, read back by `caption::scenes`), written by `caption::run`.
//!
//! Eigenfaces: `data::npy` / `data::faces` (a `.npy` array or an image
//! folder, one subfolder per person for recognition) ─► [`pca`] (centre,
//! eigendecomposition of the covariance or the Gram matrix, projection,
//! recognition in eigenspace) ─► [`eigenfaces`] (the run: numbers, figures,
//! saved components, projection of new faces).
//!
//! Binaries (`src/bin`) parse arguments, call into this library and report.
//! The library prints nothing itself: its entry points are given a
//! [`report::Reporter`] and say their lines, warnings and progress bars
//! through it; the binaries give [`report::Terminal`] (stdout, stderr, the
//! tool's bars), a library user may give [`report::Silent`] or
//! [`report::Capture`].
//! [`device`] decides where tensors live (one shared `--device` argument),
//! [`cli`] turns errors into one-line messages and exit codes (ending the
//! process without libtorch's teardown), and
//! [`interrupt`] carries Ctrl-C to long work as a value; [`choice_names`] gives
//! every choice its command-line name.

pub mod accel;
pub mod autocast;
pub mod caption;
pub mod choice_names;
pub mod cli;
pub mod data;
pub mod device;
pub mod dist;
pub mod eigenfaces;
pub mod finetune;
pub mod grad;
pub mod interrupt;
pub mod layers;
pub mod metrics;
pub mod mnist;
pub mod models;
pub mod nets;
pub mod pca;
pub mod persist;
pub mod report;
pub mod reporter;
pub mod run_dir;
pub mod stats;
pub mod sweep;
pub mod train;
