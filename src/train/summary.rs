//! A run's output folder and its closing record: [`OutDir`] makes the folder
//! and, when a run fails or is stopped before it saved anything, leaves no
//! empty or half-made folder behind; [`Summary`] is `summary.json`, the
//! resolved config with the results.

use super::checkpoint::{state_path, Start};
use super::config::FinetuneConfig;
use super::splits::Splits;
use crate::metrics::History;
use crate::persist::write_atomically;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use tch::Device;

/// Files a run writes, which `--overwrite` replaces; a folder is a run's
/// when it holds the first of them.
const RUN_FILES: &[&str] = &[
    "state.safetensors",
    "metrics.csv",
    "summary.json",
    "best_model.safetensors",
    "loss.png",
    "accuracy.png",
    "val_predictions.png",
    "run.toml",
];

/// What a launcher (`finetune sweep`) keeps in a run's folder beside the
/// run's own files: the run's output, the claim on the folder and how the
/// last attempt ended. They do not make the folder someone else's.
pub const LAUNCHER_FILES: &[&str] = &[LOG_FILE, LOCK_FILE, EXIT_FILE];
/// The run's output (stdout and stderr), as its launcher keeps it.
pub const LOG_FILE: &str = "log.txt";
/// The claim on the folder while a launcher runs it.
pub const LOCK_FILE: &str = "sweep.lock";
/// How the launcher's last attempt at the run ended.
pub const EXIT_FILE: &str = "exit.json";

/// Whether `path` is something a run wrote (its files, its TensorBoard
/// events, the `eval-*` folders `finetune eval` puts beside its model).
fn written_by_a_run(path: &Path) -> bool {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    RUN_FILES.contains(&name.as_str())
        || name.starts_with("events.out.tfevents.")
        || (name.starts_with("eval-") && path.is_dir())
}

/// The output folder of a run in progress.
pub struct OutDir {
    path: PathBuf,
    /// Made by this run (and so removed again if nothing was saved).
    created: bool,
    /// What an earlier run wrote there (`--overwrite`; other files are left
    /// alone), removed once this run has saved its first epoch: a run that
    /// fails before that leaves the earlier one intact.
    stale: Vec<PathBuf>,
    saved: Cell<bool>,
}

impl OutDir {
    /// Makes the folder (for a fresh run: empty, or holding an earlier run
    /// that `overwrite` allows to replace) and proves it writable, before
    /// any slow work.
    pub fn prepare(path: &Path, start: Start, overwrite: bool) -> Result<Self> {
        let existed = path.exists();
        let mut stale = Vec::new();
        if start == Start::Fresh && existed && holds_files(path) {
            if !state_path(path).exists() {
                bail!(
                    "--out {}: the folder holds files that are not a run's; choose an empty or new folder",
                    path.display()
                );
            }
            if !overwrite {
                bail!(
                    "--out {}: the folder holds a run; use --overwrite to replace it or --resume to continue it",
                    path.display()
                );
            }
            stale = std::fs::read_dir(path)
                .with_context(|| format!("--out {}: cannot list the folder", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| written_by_a_run(p))
                .collect();
        }
        std::fs::create_dir_all(path)
            .with_context(|| format!("--out {}: cannot create the output folder", path.display()))?;
        let probe = path.join(".write-test");
        std::fs::write(&probe, b"ok")
            .with_context(|| format!("--out {}: output folder is not writable", path.display()))?;
        std::fs::remove_file(&probe).ok();
        Ok(Self { path: path.to_owned(), created: !existed, stale, saved: Cell::new(start == Start::Resume) })
    }

    /// The run saved an epoch: the folder stays, whatever happens next, and
    /// what an earlier run left beside this one's files goes.
    pub fn mark_saved(&self) {
        if self.saved.replace(true) {
            return;
        }
        let rewritten = ["metrics.csv", "state.safetensors", "best_model.safetensors"];
        for path in &self.stale {
            if path.file_name().is_some_and(|n| rewritten.iter().any(|r| n == *r)) {
                continue;
            }
            let _ = if path.is_dir() { std::fs::remove_dir_all(path) } else { std::fs::remove_file(path) };
        }
    }
}

impl Drop for OutDir {
    fn drop(&mut self) {
        if self.created && !self.saved.get() && !state_path(&self.path).exists() {
            std::fs::remove_dir_all(&self.path).ok();
        }
    }
}

/// Whether `dir` holds anything but a launcher's files.
fn holds_files(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.filter_map(|e| e.ok()).any(|e| !LAUNCHER_FILES.contains(&e.file_name().to_string_lossy().as_ref()))
    })
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
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
    pub best_val_acc: f64,
    pub best_epoch: usize,
    pub seconds: f64,
    pub train_images: usize,
    pub val_images: usize,
    pub classes: Vec<String>,
    pub bad_files: Vec<String>,
}

impl Summary {
    pub fn new(
        config: &FinetuneConfig,
        device: Device,
        splits: &Splits,
        history: &History,
        best_val_acc: f64,
        stopped_early: bool,
        seconds: f64,
    ) -> Result<Self> {
        let train = history.phase("train");
        let waited: f64 = train.iter().map(|r| r.data_wait_seconds).sum();
        let total: f64 = train.iter().map(|r| r.seconds).sum();
        let best = history.best_val().context("no epoch was run")?;
        let bad_files = splits.train.bad_files.iter().chain(&splits.val.bad_files);
        Ok(Self {
            config: config.clone(),
            device: crate::device::name(device),
            libtorch: crate::device::libtorch_version().to_owned(),
            data_wait_seconds: waited,
            data_wait_share: if total > 0.0 { waited / total } else { 0.0 },
            epochs: config.epochs,
            epochs_run: train.len(),
            stopped_early,
            best_val_acc,
            best_epoch: best.epoch,
            seconds,
            train_images: splits.train.len(),
            val_images: splits.val.len(),
            classes: splits.train.classes.clone(),
            bad_files: bad_files.map(|b| format!("{}: {}", b.path.display(), b.reason)).collect(),
        })
    }

    pub fn write(&self, out: &Path) -> Result<()> {
        let json = serde_json::to_string_pretty(self)?;
        write_atomically(&out.join("summary.json"), json.as_bytes())
    }
}
