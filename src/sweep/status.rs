//! What a run folder says about its run, from the files the run and its
//! launcher leave there: `summary.json` (finished), `state.safetensors`
//! (epochs saved, read from its header alone), `exit.json` (how the
//! launcher's last attempt ended) and `sweep.lock` (who runs it now). Shared
//! by `--list`, the runner, `--slurm` and the report; this module only reads,
//! except for [`ExitRecord::write`].

use super::lock::{self, Holder};
use crate::metrics::History;
use crate::persist::{safetensors, write_atomically};
use crate::run_dir::{state_path, EXIT_FILE, LOCK_FILE, SUMMARY_FILE};
use crate::train::config::FinetuneConfig;
use crate::train::summary::Summary;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where a run stands.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    /// Nothing saved yet.
    New,
    /// A live process holds the folder's lock.
    Running(Holder),
    /// Epochs saved, not finished (killed, stopped, or to be extended).
    Partial {
        epochs_done: usize,
    },
    /// The last attempt failed.
    Failed {
        error: String,
        epochs_done: usize,
    },
    Done,
}

impl Status {
    /// One word: done, partial, failed, running or new.
    pub fn word(&self) -> &'static str {
        match self {
            Status::New => "new",
            Status::Running(_) => "running",
            Status::Partial { .. } => "partial",
            Status::Failed { .. } => "failed",
            Status::Done => "done",
        }
    }

    /// The word with what follows from it (`partial (2 epochs saved)`).
    pub fn describe(&self) -> String {
        match self {
            Status::Running(holder) => format!("running ({holder})"),
            Status::Partial { epochs_done } => format!("partial ({epochs_done} epoch(s) saved)"),
            Status::Failed { error, .. } => format!("failed ({error})"),
            other => other.word().to_owned(),
        }
    }
}

/// How a launcher's attempt at a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Under way (what a killed attempt leaves).
    Started,
    Done,
    Failed,
    /// Stopped at a safe point by Ctrl-C.
    Interrupted,
}

/// `exit.json`: the launcher's record of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExitRecord {
    pub outcome: Outcome,
    pub exit_code: Option<i32>,
    /// The error line of a failed attempt.
    #[serde(default)]
    pub error: Option<String>,
    /// Wall time of every attempt, summed.
    pub seconds: f64,
    pub attempts: usize,
    pub host: String,
    pub device: String,
    /// The point's index in its sweep, and its grid values.
    pub index: usize,
    pub point: BTreeMap<String, String>,
}

impl ExitRecord {
    /// The record in `dir`, `None` when there is none; one that does not
    /// parse is an error naming the file.
    pub fn read(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(EXIT_FILE);
        let Ok(text) = std::fs::read_to_string(&path) else { return Ok(None) };
        serde_json::from_str(&text).map(Some).with_context(|| format!("{}: does not parse", path.display()))
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        write_atomically(&dir.join(EXIT_FILE), serde_json::to_string_pretty(self)?.as_bytes())
    }
}

/// What a run folder holds.
#[derive(Debug, Clone)]
pub struct RunFolder {
    pub dir: PathBuf,
    pub summary: Option<Summary>,
    /// The saved config, epochs and history of `state.safetensors`.
    pub saved: Option<SavedState>,
    pub exit: Option<ExitRecord>,
    /// The lock's holder, when it is another process, alive.
    pub holder: Option<Holder>,
}

#[derive(Debug, Clone)]
pub struct SavedState {
    pub config: FinetuneConfig,
    pub epochs_done: usize,
    pub history: History,
}

impl RunFolder {
    /// Reads what `dir` holds; files that are missing are `None`, files that
    /// are there but do not parse are errors naming them.
    pub fn read(dir: &Path) -> Result<Self> {
        let summary_path = dir.join(SUMMARY_FILE);
        let summary = match std::fs::read_to_string(&summary_path) {
            Ok(text) => Some(
                serde_json::from_str(&text).with_context(|| format!("{}: does not parse", summary_path.display()))?,
            ),
            Err(_) => None,
        };
        let saved = if state_path(dir).exists() { Some(read_state(dir)?) } else { None };
        let holder = lock::holder(&dir.join(LOCK_FILE))?.filter(|h| !h.is_stale() && !h.is_this_process());
        Ok(Self { dir: dir.to_owned(), summary, saved, exit: ExitRecord::read(dir)?, holder })
    }

    /// Where the run stands, for a run that should train `epochs` epochs
    /// (`None`: the epochs it was set to).
    pub fn status(&self, epochs: Option<usize>) -> Status {
        let epochs_done = self.saved.as_ref().map_or(0, |s| s.epochs_done);
        if let Some(holder) = &self.holder {
            return Status::Running(holder.clone());
        }
        if let Some(summary) = &self.summary {
            if summary.epochs >= epochs.unwrap_or(summary.epochs) {
                return Status::Done;
            }
        }
        match &self.exit {
            Some(ExitRecord { outcome: Outcome::Failed, error, exit_code, .. }) => Status::Failed {
                error: error.clone().unwrap_or_else(|| format!("exit status {exit_code:?}")),
                epochs_done,
            },
            _ if self.saved.is_some() => Status::Partial { epochs_done },
            _ => Status::New,
        }
    }

    /// The run's config, from `summary.json` or the saved state.
    pub fn config(&self) -> Option<&FinetuneConfig> {
        self.summary.as_ref().map(|s| &s.config).or(self.saved.as_ref().map(|s| &s.config))
    }
}

fn read_state(dir: &Path) -> Result<SavedState> {
    let path = state_path(dir);
    let meta = safetensors::read_metadata(&path)?;
    let field = |key: &str| meta.get(key).with_context(|| format!("{}: metadata {key} missing", path.display()));
    let bad = |key: &str| format!("{}: metadata {key} does not parse", path.display());
    Ok(SavedState {
        config: serde_json::from_str(field("config")?).with_context(|| bad("config"))?,
        epochs_done: field("epochs_done")?.parse().with_context(|| bad("epochs_done"))?,
        history: serde_json::from_str(field("history")?).with_context(|| bad("history"))?,
    })
}

/// Options that change how a run is carried out or how long, not its recipe.
const NOT_RECIPE: &[&str] = &["out", "data", "workers", "threads", "cache_mb", "epochs", "overwrite"];

/// The first recipe option in which the run `saved` differs from the one a
/// sweep `wanted`, as `lr 0.01 (the sweep asks 0.001)`.
pub fn recipe_difference(saved: &FinetuneConfig, wanted: &FinetuneConfig) -> Option<String> {
    let (Ok(serde_json::Value::Object(saved)), Ok(serde_json::Value::Object(wanted))) =
        (serde_json::to_value(saved), serde_json::to_value(wanted))
    else {
        return Some("the configs do not serialize".into());
    };
    wanted.iter().filter(|(key, _)| !NOT_RECIPE.contains(&key.as_str())).find_map(|(key, value)| {
        let was = saved.get(key).unwrap_or(&serde_json::Value::Null);
        (was != value).then(|| format!("{} {was} (the sweep asks {value})", key.replace('_', "-")))
    })
}
