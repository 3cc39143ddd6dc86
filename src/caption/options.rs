//! The options of `caption train`, as the command line and a sweep file
//! give them (the binary parses them; `crate::sweep` checks a sweep's points
//! with the same parser). Parsing only: nothing here runs.

use super::model::CellKind;
use super::run::Keep;
use crate::cli::parse::{
    at_least_one, beam_width, decay_factor, dropout_rate, hidden_size, layer_count, learning_rate, non_negative,
};
use crate::cli::RunArgs;
use crate::grad::GradMode;
use crate::models::{Arch, GridLayer};
use clap::{Args, FromArgMatches};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A saved run's options that an older version did not know take the
/// option's default (`Default` is the command line with no flags).
#[derive(Args, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainArgs {
    /// The course's coco_captioning/ folder (coco2014_captions.h5, …), or an image folder with
    /// annotations/captions_train*.json, annotations/captions_val*.json, train*/ and val*/.
    #[arg(long, value_name = "DIR", default_value = "data/mnist-scenes")]
    pub data: PathBuf,
    /// The network: rnn and lstm over the pooled image feature (the course's), attention and transformer over the grid.
    #[arg(long, value_enum, default_value = "rnn")]
    pub cell: CellKind,
    /// transformer: attention heads (they divide --wordvec).
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = layer_count, allow_negative_numbers = true)]
    pub heads: i64,
    /// transformer: decoder layers.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = layer_count, allow_negative_numbers = true)]
    pub layers: i64,
    /// attention: the width A of the attention's hidden layer (tanh(a·W_a + h·W_h + b), A wide).
    #[arg(long, value_name = "A", default_value_t = 256, value_parser = hidden_size, allow_negative_numbers = true)]
    pub attention_width: i64,
    /// Dropout rate while training: attention's on its deep output, transformer's on the embedded words and every sublayer's output [default: attention 0, transformer 0.1].
    #[arg(long, value_name = "P", value_parser = dropout_rate, allow_negative_numbers = true)]
    pub dropout: Option<f64>,
    /// attention: λ of the doubly stochastic penalty λ·Σ_l (1 − Σ_t α_tl)² per caption.
    #[arg(long, value_name = "λ", default_value_t = 1.0, value_parser = non_negative, allow_negative_numbers = true)]
    pub attention_penalty: f64,
    /// Hypotheses kept per image by beam search when the val images are captioned (1: greedy).
    #[arg(long, value_name = "K", default_value_t = 1, value_parser = beam_width, allow_negative_numbers = true)]
    pub beam: usize,
    /// Hidden state width.
    #[arg(long, value_name = "H", default_value_t = 512, value_parser = hidden_size, allow_negative_numbers = true)]
    pub hidden: i64,
    /// Word vector width.
    #[arg(long, value_name = "W", default_value_t = 256, value_parser = hidden_size, allow_negative_numbers = true)]
    pub wordvec: i64,
    /// Passes over the training captions.
    #[arg(long, value_name = "N", default_value_t = 50, value_parser = at_least_one, allow_negative_numbers = true)]
    pub epochs: usize,
    /// Captions per Adam step.
    #[arg(long, value_name = "N", default_value_t = 25, value_parser = at_least_one, allow_negative_numbers = true)]
    pub batch_size: usize,
    /// Adam learning rate.
    #[arg(long, value_name = "LR", default_value_t = 5e-3, value_parser = learning_rate, allow_negative_numbers = true)]
    pub lr: f64,
    /// Learning-rate multiplier after every epoch, in (0, 1].
    #[arg(long, value_name = "F", default_value_t = 0.95, value_parser = decay_factor, allow_negative_numbers = true)]
    pub lr_decay: f64,
    #[command(flatten)]
    pub seed: crate::cli::SeedArg,
    /// manual: the layers' explicit backward passes; autograd: libtorch's.
    #[arg(long, value_enum, default_value = "manual")]
    pub grad: GradMode,
    /// Course folder: train on N captions drawn at random (seeded), as the course's small-data runs do [default: all].
    #[arg(long, value_name = "N", value_parser = at_least_one, allow_negative_numbers = true)]
    pub max_train: Option<usize>,
    /// Course folder: where COCO images are kept, by file name, to show in the sample figures [default: none].
    #[arg(long, value_name = "DIR")]
    pub image_dir: Option<PathBuf>,
    /// Image folder: backbone that computes the image features (frozen, ImageNet weights).
    #[arg(long, value_enum, default_value = "efficientnet-lite0")]
    pub arch: Arch,
    /// Image folder, --cell attention|transformer: the backbone's convolutional map whose grid of locations they attend over [default: last].
    #[arg(long, value_enum, value_name = "LAYER")]
    pub feature_grid: Option<GridLayer>,
    /// Image folder: the side of the square image the backbone sees (448 doubles the grid to 14×14) [default: its published crop, 224].
    #[arg(long, value_name = "PIXELS", value_parser = crate::cli::parse::image_side, allow_negative_numbers = true)]
    pub image_size: Option<i64>,
    /// Image folder: the backbone's weights [default: its file in models/].
    #[arg(long, value_name = "FILE")]
    pub weights: Option<PathBuf>,
    /// Image folder: words seen fewer times in the training captions become <UNK>.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = at_least_one, allow_negative_numbers = true)]
    pub min_count: usize,
    /// Image folder: longer captions are cut to this many words.
    #[arg(long, value_name = "N", default_value_t = 15, value_parser = at_least_one, allow_negative_numbers = true)]
    pub max_words: usize,
    /// Which weights the run keeps, evaluates and saves: best (lowest val loss) or last (the final epoch's).
    #[arg(long, value_enum, default_value = "best")]
    pub keep: Keep,
    /// Output folder [default: runs/caption-<cell>, or the next free runs/caption-<cell>-N].
    #[arg(help_heading = crate::cli::HOW_IT_RUNS, long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    #[serde(skip)]
    pub run: RunArgs,
    #[command(flatten)]
    #[serde(flatten)]
    pub device: crate::device::DeviceArg,
}

impl Default for TrainArgs {
    fn default() -> Self {
        let command = Self::augment_args(clap::Command::new("caption train"));
        let matches = command.try_get_matches_from(["caption train"]).expect("caption train takes no required option");
        Self::from_arg_matches(&matches).expect("the defaults of caption train's options parse")
    }
}

impl TrainArgs {
    /// `--dropout`, or the cell's default: none for the attention LSTM, the
    /// course's 0.1 for the Transformer (and runs saved before the option).
    pub fn dropout_rate(&self) -> f64 {
        self.dropout.unwrap_or(if self.cell == CellKind::Transformer { 0.1 } else { 0.0 })
    }

    /// The paths as a fresh run saves them: absolute (so that the run
    /// resumes from any folder), and for an image folder the backbone's
    /// default weights file named. The binary and a sweep's points both
    /// resolve them here, so a point compares with its saved run.
    pub fn with_paths_resolved(self) -> Self {
        let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_owned());
        let weights = match &self.weights {
            Some(w) => Some(absolute(w)),
            None if !super::coco_h5::is_course_folder(&self.data) => {
                Some(absolute(&self.arch.default_weights(Path::new("models"))))
            }
            None => None,
        };
        let image_dir = self.image_dir.as_deref().map(absolute);
        Self { data: absolute(&self.data), weights, image_dir, ..self }
    }
}
