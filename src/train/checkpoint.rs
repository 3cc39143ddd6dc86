//! What a run keeps on disk while it trains: the best model so far (kept
//! when val accuracy strictly improves, as the tutorial does, and saved with
//! its [`ModelCard`]) and the resumable state written atomically after every
//! epoch (`state.safetensors`: model, optimizer state, best model, and as
//! metadata the config, epochs done and history). Random streams derive from
//! (seed, epoch), so no RNG state is stored. Loading is strict: a state that
//! lacks a tensor the run needs is an error naming it.

use crate::metrics::History;
use crate::models::Classifier;
use crate::persist::model_card::ModelCard;
use crate::persist::safetensors;
use crate::persist::weights::{check_complete, copy_by_name, read_named_tensors};
use crate::run_dir::state_path;
use anyhow::{Context, Result};
use std::collections::HashMap;
use std::path::Path;
use tch::Tensor;

/// The best model so far and the val probabilities it scored (kept in
/// memory for the prediction grid, so it needs no extra val pass).
pub struct Best {
    pub acc: f64,
    pub epoch: Option<usize>,
    pub tensors: Vec<(String, Tensor)>,
    pub val_probs: Option<Tensor>,
}

impl Best {
    pub fn none(model: &Classifier) -> Self {
        Self { acc: -1.0, epoch: None, tensors: snapshot(model), val_probs: None }
    }

    /// The best model of a resumed run, checked to hold every tensor of `model`.
    pub fn restored(
        model: &Classifier,
        acc: f64,
        epoch: Option<usize>,
        tensors: Vec<(String, Tensor)>,
        what: &str,
    ) -> Result<Self> {
        check_complete(&tensors, &shapes(model), what)?;
        Ok(Self { acc, epoch, tensors, val_probs: None })
    }

    /// Keeps the model when `acc` strictly beats the best so far; returns
    /// whether it did.
    pub fn consider(&mut self, acc: f64, epoch: usize, model: &Classifier, val_probs: Tensor) -> bool {
        if acc <= self.acc {
            return false;
        }
        *self = Self { acc, epoch: Some(epoch), tensors: snapshot(model), val_probs: Some(val_probs) };
        true
    }

    /// Writes the best model with its card to `path`.
    pub fn save(&self, path: &Path, card: &ModelCard) -> Result<()> {
        safetensors::save(path, &self.tensors, card.to_metadata()?)
    }
}

/// A copy of every model tensor.
pub fn snapshot(model: &Classifier) -> Vec<(String, Tensor)> {
    model.named_tensors().into_iter().map(|(n, t)| (n, t.copy())).collect()
}

/// The name and shape of every model tensor.
pub fn shapes(model: &Classifier) -> Vec<(String, Vec<i64>)> {
    model.named_tensors().iter().map(|(n, t)| (n.clone(), t.size())).collect()
}

/// Copies saved tensors into the live model variables by name; every live
/// variable must be among them.
pub fn restore(model: &Classifier, saved: &[(String, Tensor)], what: &str) -> Result<()> {
    copy_by_name(&model.named_tensors(), saved, what)
}

pub struct RunState {
    /// The run's config as JSON (so a resume uses the same recipe).
    pub config_json: String,
    pub epochs_done: usize,
    pub best_acc: f64,
    pub best_epoch: Option<usize>,
    pub history: History,
    pub model: Vec<(String, Tensor)>,
    pub optimizer: Vec<(String, Tensor)>,
    pub best_model: Vec<(String, Tensor)>,
}

impl RunState {
    pub fn save(&self, out: &Path) -> Result<()> {
        let mut tensors = Vec::new();
        for (prefix, group) in [("model.", &self.model), ("optimizer.", &self.optimizer), ("best.", &self.best_model)] {
            tensors.extend(group.iter().map(|(n, t)| (format!("{prefix}{n}"), t.shallow_clone())));
        }
        let metadata = HashMap::from([
            ("config".to_owned(), self.config_json.clone()),
            ("epochs_done".to_owned(), self.epochs_done.to_string()),
            ("best_acc".to_owned(), format!("{:.17}", self.best_acc)),
            ("best_epoch".to_owned(), serde_json::to_string(&self.best_epoch)?),
            ("history".to_owned(), serde_json::to_string(&self.history)?),
        ]);
        safetensors::save(&state_path(out), &tensors, metadata)
    }

    /// The saved config alone (to decide how to resume before loading tensors).
    pub fn config_json(out: &Path) -> Result<String> {
        crate::run_dir::saved_config(out)
    }

    pub fn load(out: &Path) -> Result<Self> {
        let path = state_path(out);
        let config_json = Self::config_json(out)?;
        let meta = safetensors::read_metadata(&path)?;
        let field = |key: &str| -> Result<&String> {
            meta.get(key).with_context(|| format!("{}: metadata {key} missing", path.display()))
        };
        let number = |key: &str| -> Result<f64> {
            field(key)?.parse().with_context(|| format!("{}: metadata {key} is not a number", path.display()))
        };
        let tensors = read_named_tensors(&path)?;
        let group = |prefix: &str| -> Vec<(String, Tensor)> {
            tensors
                .iter()
                .filter_map(|(n, t)| n.strip_prefix(prefix).map(|s| (s.to_owned(), t.shallow_clone())))
                .collect()
        };
        Ok(Self {
            config_json,
            epochs_done: number("epochs_done")? as usize,
            best_acc: number("best_acc")?,
            best_epoch: match meta.get("best_epoch") {
                Some(text) => serde_json::from_str(text)
                    .with_context(|| format!("{}: metadata best_epoch does not parse", path.display()))?,
                None => None,
            },
            history: serde_json::from_str(field("history")?)
                .with_context(|| format!("{}: metadata history does not parse", path.display()))?,
            model: group("model."),
            optimizer: match group("optimizer.") {
                // Runs saved before the optimizer had a group of its own kept SGD's momentum at the top level.
                legacy if legacy.is_empty() => tensors
                    .iter()
                    .filter(|(n, _)| n.starts_with("momentum."))
                    .map(|(n, t)| (n.clone(), t.shallow_clone()))
                    .collect(),
                saved => saved,
            },
            best_model: group("best."),
        })
    }
}
