//! The resumable state of a fine-tuning run, written atomically after every
//! epoch to `<out>/state.safetensors`: model, momentum buffers, best model,
//! and (as JSON metadata) the config, epochs done, best accuracy and history.
//! Random streams are derived from (seed, epoch), so no RNG state is stored.

use super::metrics::History;
use crate::models::checkpoint_io::{read_named_tensors, read_safetensors_metadata, save_safetensors};
use anyhow::{Context, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::Tensor;

pub const STATE_FILE: &str = "state.safetensors";

pub struct RunState {
    /// The run's config as JSON (so a resume uses the same recipe).
    pub config_json: String,
    pub epochs_done: usize,
    pub best_acc: f64,
    pub history: History,
    pub model: Vec<(String, Tensor)>,
    pub momentum: Vec<(String, Tensor)>,
    pub best_model: Vec<(String, Tensor)>,
}

pub fn state_path(out: &Path) -> PathBuf {
    out.join(STATE_FILE)
}

impl RunState {
    pub fn save(&self, out: &Path) -> Result<()> {
        let mut tensors = Vec::new();
        for (prefix, group) in [("model.", &self.model), ("momentum.", &self.momentum), ("best.", &self.best_model)] {
            tensors.extend(group.iter().map(|(n, t)| (format!("{prefix}{n}"), t.shallow_clone())));
        }
        let metadata = HashMap::from([
            ("config".to_owned(), self.config_json.clone()),
            ("epochs_done".to_owned(), self.epochs_done.to_string()),
            ("best_acc".to_owned(), format!("{:.17}", self.best_acc)),
            ("history".to_owned(), serde_json::to_string(&self.history)?),
        ]);
        save_safetensors(&state_path(out), &tensors, metadata)
    }

    pub fn load(out: &Path) -> Result<Self> {
        let path = state_path(out);
        if !path.exists() {
            anyhow::bail!(
                "{}: no run state to resume (was the run started with --out {}?)",
                path.display(),
                out.display()
            );
        }
        let meta = read_safetensors_metadata(&path)?;
        let field =
            |key: &str| meta.get(key).cloned().with_context(|| format!("{}: metadata {key} missing", path.display()));
        let tensors = read_named_tensors(&path)?;
        let group = |prefix: &str| -> Vec<(String, Tensor)> {
            tensors
                .iter()
                .filter_map(|(n, t)| n.strip_prefix(prefix).map(|s| (s.to_owned(), t.shallow_clone())))
                .collect()
        };
        Ok(Self {
            config_json: field("config")?,
            epochs_done: field("epochs_done")?.parse()?,
            best_acc: field("best_acc")?.parse()?,
            history: serde_json::from_str(&field("history")?)?,
            model: group("model."),
            momentum: group("momentum."),
            best_model: group("best."),
        })
    }
}
