//! A fine-tuning run's closing record: [`FinetuneSummary`] is `summary.json`, the
//! resolved config with the results (the folder itself is
//! [`crate::run_dir`]'s).

use super::checkpoint::{VAL_ACC, VAL_BALANCED_ACC, VAL_LOSS, VAL_MACRO_F1};
use super::class_weights::ClassWeights;
use super::config::FinetuneConfig;
use super::multi_label::{MultiLabelScores, VAL_MAP};
use super::splits::Splits;
use crate::metrics::History;
use crate::run_dir::{RunDir, SUMMARY_FILE};
use crate::train::data_parallel::Ranks;
use crate::train::engine::{EpochRecord, Kept, KeptFrom};
use crate::train::feature_cache::CacheUse;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tch::Device;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FinetuneSummary {
    /// `finetune`, and the crate version that wrote it (the keys every
    /// tool's summary starts with).
    #[serde(default = "finetune_tool")]
    pub tool: String,
    #[serde(default)]
    pub version: String,
    /// The resolved recipe and settings of the run.
    pub config: FinetuneConfig,
    /// As users type it: `cpu`, `cuda:0`.
    pub device: String,
    pub libtorch: String,
    /// Seconds the train phases (all epochs of the run, resumed ones too)
    /// waited for augmented batches, and that as a share of their time.
    pub data_wait_seconds: f64,
    pub data_wait_share: f64,
    /// Epochs the run was set to train, and those it trained (fewer after
    /// an early stop).
    pub epochs: usize,
    pub epochs_run: usize,
    pub stopped_early: bool,
    /// The kept epoch (the best by `config.monitor`; a multi-label run's by
    /// mAP), its val accuracy (a multi-label run's: the exact-match ratio),
    /// and whose weights they are: the model's, or (`--ema`) its moving
    /// average's (`model`, `ema`).
    pub best_val_acc: f64,
    pub best_epoch: usize,
    /// A multi-label run's kept val mAP (the score it keeps by).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_val_map: Option<f64>,
    /// A multi-label run's scores of the kept model on val: mAP, F1, exact
    /// match, and each class's average precision, precision, recall and F1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multi_label: Option<MultiLabelScores>,
    #[serde(default)]
    pub best_from: KeptFrom,
    /// The kept epoch's val loss, macro-F1 and balanced accuracy (none in
    /// summaries written before they were measured).
    #[serde(default)]
    pub best_val_loss: Option<f64>,
    #[serde(default)]
    pub best_val_macro_f1: Option<f64>,
    #[serde(default)]
    pub best_val_balanced_acc: Option<f64>,
    /// The training loss's weight of each class (`--class-weights`), when weighted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_weights: Option<BTreeMap<String, f64>>,
    pub seconds: f64,
    pub train_images: usize,
    pub val_images: usize,
    pub classes: Vec<String>,
    pub bad_files: Vec<String>,
    /// The labels file's rows left out, one line each (`FILE line N: why`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bad_rows: Vec<String>,
    /// The processes that trained the run together (data-parallel ranks),
    /// the c10d backend between them, and the images of one optimizer step
    /// over all of them (`--batch-size` is per process, as in DDP, times
    /// `--accumulate`).
    #[serde(default = "one")]
    pub world_size: usize,
    #[serde(default)]
    pub dist_backend: Option<String>,
    #[serde(default)]
    pub global_batch: usize,
    /// Seconds rank 0 spent averaging gradients with the other ranks, and
    /// that as a share of the train phases.
    #[serde(default)]
    pub gradient_averaging_seconds: f64,
    #[serde(default)]
    pub gradient_averaging_share: f64,
    /// Seconds from the start of this process's run to its first training
    /// step (the model, the images, the fixed features).
    #[serde(default)]
    pub startup_seconds: Option<f64>,
    /// What `--feature-cache` served this process: features loaded from
    /// it, and computed (then added to it).
    #[serde(default)]
    pub feature_cache: Option<CacheUse>,
}

impl FinetuneSummary {
    pub fn new(
        config: &FinetuneConfig,
        device: Device,
        splits: &Splits,
        history: &History,
        (kept, best, stopped_early): (&Kept, &EpochRecord, bool),
        seconds: f64,
        ranks: &Ranks,
    ) -> Result<Self> {
        let train = history.phase("train");
        let waited: f64 = train.iter().map(|r| r.data_wait_seconds).sum();
        let total: f64 = train.iter().map(|r| r.seconds).sum();
        anyhow::ensure!(!train.is_empty(), "no epoch was run");
        let bad_files = splits.train.bad_files.iter().chain(&splits.val.bad_files);
        let best_score = |name: &str| best.scores.get(&kept.from.score_name(name)).copied();
        Ok(Self {
            tool: finetune_tool(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            config: config.clone(),
            device: crate::device::name(device),
            libtorch: crate::device::libtorch_version().to_owned(),
            data_wait_seconds: waited,
            data_wait_share: if total > 0.0 { waited / total } else { 0.0 },
            epochs: config.epochs,
            epochs_run: train.len(),
            stopped_early,
            best_val_acc: best_score(VAL_ACC).unwrap_or(f64::NAN),
            best_epoch: kept.epoch,
            best_val_map: best_score(VAL_MAP).filter(|_| config.multi_label()),
            multi_label: None,
            best_from: kept.from,
            best_val_loss: best_score(VAL_LOSS),
            best_val_macro_f1: best_score(VAL_MACRO_F1),
            best_val_balanced_acc: best_score(VAL_BALANCED_ACC),
            class_weights: None,
            seconds,
            train_images: splits.train.len(),
            val_images: splits.val.len(),
            classes: splits.train.classes.clone(),
            bad_files: bad_files.map(|b| format!("{}: {}", b.path.display(), b.reason)).collect(),
            bad_rows: splits.bad_rows.clone(),
            world_size: ranks.world_size(),
            dist_backend: ranks.backend().map(|b| b.name().to_owned()),
            global_batch: config.batch_size * ranks.world_size() * config.accumulate,
            gradient_averaging_seconds: ranks.averaging_seconds(),
            gradient_averaging_share: if total > 0.0 { ranks.averaging_seconds() / total } else { 0.0 },
            startup_seconds: None,
            feature_cache: None,
        })
    }

    /// This summary recording the class weights the run trained with.
    pub fn with_class_weights(self, weights: Option<&ClassWeights>) -> Self {
        Self { class_weights: weights.map(ClassWeights::by_class), ..self }
    }

    pub fn write(&self, out: &RunDir) -> Result<()> {
        out.write(SUMMARY_FILE, serde_json::to_string_pretty(self)?.as_bytes())
    }
}

fn one() -> usize {
    1
}

fn finetune_tool() -> String {
    "finetune".into()
}
