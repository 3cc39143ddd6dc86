//! The options of `mnist mlp` and `mnist cnn`, as the command line and a
//! sweep file give them (the binary parses them; `crate::sweep` checks a
//! sweep's points with the same parser). Parsing only: nothing here runs.

use crate::cli::parse::{at_least_one, decay_factor, hidden_size, learning_rate};
use crate::cli::RunArgs;
use crate::grad::GradMode;
use clap::Args;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Args, Serialize, Deserialize)]
pub struct MlpArgs {
    /// Hidden sizes to sweep, comma separated (each at least 1); the best by val accuracy is retrained on train+val and tested.
    #[arg(long, value_name = "H,H,...", value_delimiter = ',', default_value = "10,50,100,250,500,800,1200,1600",
          value_parser = hidden_size, allow_hyphen_values = true)]
    pub hidden: Vec<i64>,
    /// Passes over the training images, for every size and for the retrain (at least 1).
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = at_least_one, allow_negative_numbers = true)]
    pub epochs: usize,
    #[command(flatten)]
    #[serde(flatten)]
    pub common: Common,
}

#[derive(Args, Serialize, Deserialize)]
pub struct CnnArgs {
    /// Width of the hidden affine layer after the pooling (at least 1).
    #[arg(long, value_name = "H", default_value_t = 100, value_parser = hidden_size, allow_negative_numbers = true)]
    pub hidden: i64,
    /// Passes over the training images (at least 1).
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = at_least_one, allow_negative_numbers = true)]
    pub epochs: usize,
    #[command(flatten)]
    #[serde(flatten)]
    pub common: Common,
}

#[derive(Args, Serialize, Deserialize)]
pub struct Common {
    /// Folder with the four IDX files (.gz or not).
    #[arg(long, value_name = "DIR", default_value = "data/mnist")]
    pub data: PathBuf,
    /// manual: the layers' explicit backward passes; autograd: libtorch's.
    #[arg(long, value_enum, default_value = "manual")]
    pub grad: GradMode,
    /// Images per Adam step (at least 1).
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = at_least_one, allow_negative_numbers = true)]
    pub batch_size: usize,
    /// Adam learning rate (finite, greater than 0).
    #[arg(long, value_name = "LR", default_value_t = 1e-3, value_parser = learning_rate, allow_negative_numbers = true)]
    pub lr: f64,
    /// Learning-rate multiplier applied after every epoch, in (0, 1]; 1 keeps it constant.
    #[arg(long, value_name = "F", default_value_t = 0.9, value_parser = decay_factor, allow_negative_numbers = true)]
    pub lr_decay: f64,
    #[command(flatten)]
    pub seed: crate::cli::SeedArg,
    #[command(flatten)]
    #[serde(flatten)]
    pub device: crate::device::DeviceArg,
    /// Train on only the first N of the 50,000 training images (quick checks); all: every one.
    #[arg(long, value_name = "N", default_value = "all", value_parser = train_limit, allow_negative_numbers = true)]
    pub train_limit: TrainLimit,
    /// Folder for the results, the run state and TensorBoard events [default: runs/mnist-<mlp|cnn>, or the next free runs/mnist-<mlp|cnn>-N].
    #[arg(help_heading = crate::cli::HOW_IT_RUNS, long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    #[serde(skip)]
    pub run: RunArgs,
}

/// `--train-limit`: a count, or `all` (no limit).
#[derive(Clone, Copy, Serialize, Deserialize)]
pub struct TrainLimit(pub Option<usize>);

pub fn train_limit(s: &str) -> Result<TrainLimit, String> {
    if s.trim() == "all" {
        return Ok(TrainLimit(None));
    }
    at_least_one(s).map(|n| TrainLimit(Some(n))).map_err(|e| format!("{e}, or all"))
}

impl Common {
    /// The data folder as a fresh run saves it: absolute, so that the run
    /// resumes from any folder (the binary and a sweep's points both
    /// resolve it here).
    pub fn resolve_paths(&mut self) {
        self.data = std::path::absolute(&self.data).unwrap_or_else(|_| self.data.clone());
    }
}
