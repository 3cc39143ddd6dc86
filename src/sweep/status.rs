//! What a run folder says about its run, from the files the run and its
//! launcher leave there: `summary.json` (finished), `state.safetensors`
//! (epochs saved, read from its header alone), `exit.json` (how the
//! launcher's last attempt ended) and `sweep.lock` (who runs it now), for a
//! run of any tool a sweep runs ([`Tool`]). Shared by `--list`, the runner,
//! `--slurm` and the report; this module only reads, except for
//! [`ExitRecord::write`].

use super::lock::{self, Holder};
use super::tool::Tool;
use crate::metrics::History;
use crate::persist::{safetensors, write_atomically};
use crate::run_dir::{state_path, EXIT_FILE, LOCK_FILE, SUMMARY_FILE};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
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
    /// The tool the launcher started (`mnist mlp`); absent in records of
    /// sweeps that ran only `finetune`.
    #[serde(default)]
    pub tool: Option<String>,
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
    /// The tool that wrote the run, as its files name it (`None`: no file
    /// says, e.g. a point that failed before it saved anything).
    pub tool: Option<String>,
    /// `summary.json`, as it is: its keys depend on the tool.
    pub summary: Option<Value>,
    /// The saved config, epochs and history of `state.safetensors`.
    pub saved: Option<SavedState>,
    pub exit: Option<ExitRecord>,
    /// The lock's holder, when it is another process, alive.
    pub holder: Option<Holder>,
}

#[derive(Debug, Clone)]
pub struct SavedState {
    pub config: Value,
    pub epochs_done: usize,
    /// `finetune`'s per-epoch history (the other tools keep theirs in their
    /// own progress record).
    pub history: Option<History>,
    /// The `tool` metadata (none in `finetune`'s states).
    pub tool: Option<String>,
}

impl RunFolder {
    /// Reads what `dir` holds; files that are missing are `None`, files that
    /// are there but do not parse are errors naming them.
    pub fn read(dir: &Path) -> Result<Self> {
        let summary_path = dir.join(SUMMARY_FILE);
        let summary: Option<Value> = match std::fs::read_to_string(&summary_path) {
            Ok(text) => Some(
                serde_json::from_str(&text).with_context(|| format!("{}: does not parse", summary_path.display()))?,
            ),
            Err(_) => None,
        };
        let saved = if state_path(dir).exists() { Some(read_state(dir)?) } else { None };
        let exit = ExitRecord::read(dir)?;
        let tool = match (&summary, &saved) {
            (Some(summary), _) => Some(summary.get("tool").and_then(Value::as_str).unwrap_or("finetune").to_owned()),
            (None, Some(saved)) => Some(saved.tool.clone().unwrap_or_else(|| Tool::Finetune.name().to_owned())),
            (None, None) => exit.as_ref().and_then(|e| e.tool.clone()),
        };
        let holder = lock::holder(&dir.join(LOCK_FILE))?.filter(|h| !h.is_stale() && !h.is_this_process());
        Ok(Self { dir: dir.to_owned(), tool, summary, saved, exit, holder })
    }

    /// A folder with no run in it (a point not started).
    pub fn empty(dir: &Path) -> Self {
        Self { dir: dir.to_owned(), tool: None, summary: None, saved: None, exit: None, holder: None }
    }

    /// The tool that wrote the run when a sweep can run it.
    pub fn sweep_tool(&self) -> Option<Tool> {
        self.tool.as_deref().and_then(|name| Tool::from_name(name).ok())
    }

    /// Where the run stands, for a run that should train `epochs` epochs
    /// (`None`: the epochs it was set to). A finished run of a tool that
    /// cannot extend runs is done whatever `epochs` says (a sweep point of
    /// other epochs is another recipe, refused before this is asked).
    pub fn status(&self, epochs: Option<usize>) -> Status {
        let epochs_done = self.saved.as_ref().map_or(0, |s| s.epochs_done);
        if let Some(holder) = &self.holder {
            return Status::Running(holder.clone());
        }
        if let Some(summary) = &self.summary {
            let extends = self.sweep_tool().is_some_and(Tool::extends_runs);
            let trained = summary.get("epochs").and_then(Value::as_u64).map(|e| e as usize);
            match (extends, trained) {
                (true, Some(trained)) if trained < epochs.unwrap_or(trained) => {}
                _ => return Status::Done,
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
    pub fn config(&self) -> Option<&Value> {
        self.summary.as_ref().and_then(|s| s.get("config")).or(self.saved.as_ref().map(|s| &s.config))
    }
}

/// The run state's metadata: `finetune` saves `epochs_done` and `history`,
/// the minibatch tools their `progress` (epochs of the current stage).
fn read_state(dir: &Path) -> Result<SavedState> {
    #[derive(Deserialize)]
    struct Progress {
        epochs: Vec<Value>,
    }
    let path = state_path(dir);
    let meta = safetensors::read_metadata(&path)?;
    let field = |key: &str| meta.get(key).with_context(|| format!("{}: metadata {key} missing", path.display()));
    let bad = |key: &str| format!("{}: metadata {key} does not parse", path.display());
    let epochs_done = match (meta.get("epochs_done"), meta.get("progress")) {
        (Some(n), _) => n.parse().with_context(|| bad("epochs_done"))?,
        (None, Some(progress)) => {
            serde_json::from_str::<Progress>(progress).with_context(|| bad("progress"))?.epochs.len()
        }
        (None, None) => 0,
    };
    let history = match meta.get("history") {
        Some(text) => Some(serde_json::from_str(text).with_context(|| bad("history"))?),
        None => None,
    };
    Ok(SavedState {
        config: serde_json::from_str(field("config")?).with_context(|| bad("config"))?,
        epochs_done,
        history,
        tool: meta.get("tool").cloned(),
    })
}

/// The first recipe option (as `tool` counts them) in which the run
/// `saved` differs from the one a sweep `wanted`, as `lr 0.01 (the sweep
/// asks 0.001)`.
pub fn recipe_difference(tool: Tool, saved: &Value, wanted: &Value) -> Option<String> {
    let (Value::Object(saved), Value::Object(wanted)) = (saved, wanted) else {
        return Some("a config that is not a table".into());
    };
    let saved = &tool.normalized(&Value::Object(saved.clone()));
    wanted.iter().filter(|(key, _)| tool.is_recipe(key)).find_map(|(key, value)| {
        let was = saved.get(key).unwrap_or(&Value::Null);
        (was != value).then(|| format!("{} {was} (the sweep asks {value})", key.replace('_', "-")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A state file of `metadata` (a later key replaces an earlier one).
    fn state_with(dir: &Path, metadata: &[(&str, &str)]) {
        let metadata: HashMap<String, String> =
            metadata.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let tensors = [("w".to_owned(), tch::Tensor::zeros([2], (tch::Kind::Float, tch::Device::Cpu)))];
        safetensors::save(&state_path(dir), &tensors, metadata).unwrap();
    }

    fn error_of(dir: &Path) -> String {
        format!("{:#}", RunFolder::read(dir).expect_err("a file that does not parse is an error"))
    }

    #[test]
    fn an_exit_record_that_does_not_parse_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        assert!(ExitRecord::read(dir.path()).unwrap().is_none(), "no record is None");
        std::fs::write(dir.path().join(EXIT_FILE), "{\"outcome\": ").unwrap();
        let message = error_of(dir.path());
        assert!(message.contains(EXIT_FILE) && message.contains("does not parse"), "{message}");
    }

    #[test]
    fn a_state_whose_metadata_does_not_parse_is_an_error_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let config = "{\"lr\": 0.001}";
        state_with(dir.path(), &[("config", config), ("progress", "{\"epochs\": [1, 2]}")]);
        assert_eq!(RunFolder::read(dir.path()).unwrap().saved.unwrap().epochs_done, 2);
        for (key, bad_value) in [("progress", "[oops"), ("epochs_done", "two"), ("history", "{"), ("config", "lr=")] {
            state_with(dir.path(), &[("config", config), (key, bad_value)]);
            let message = error_of(dir.path());
            assert!(
                message.contains(crate::run_dir::STATE_FILE) && message.contains(&format!("metadata {key}")),
                "{message}"
            );
        }
        state_with(dir.path(), &[("progress", "{\"epochs\": []}")]);
        assert!(error_of(dir.path()).contains("metadata config missing"));
    }
}
