//! A trained model written for other runtimes: `finetune export --format
//! onnx` writes the classifier as an ONNX graph (opset 17, any batch size;
//! onnxruntime, OpenCV's DNN, TensorRT) and, beside it, the preprocessing
//! its input needs as JSON. The graph itself is `crate::models::onnx`'s.

use super::predict::TrainedModel;
use crate::choice_names::Named;
use crate::data::transforms::Normalization;
use crate::models::onnx::{INPUT, OUTPUT};
use anyhow::Result;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The formats `export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// ONNX, opset 17.
    Onnx,
}

/// What an exported graph expects and gives, written beside it.
#[derive(Debug, Serialize)]
pub struct ExportCard {
    pub arch: String,
    pub classes: Vec<String>,
    pub opset: i64,
    pub input: String,
    /// `[batch, 3, S, S]`, the batch any size.
    pub input_shape: (String, i64, i64, i64),
    pub output: String,
    /// The preprocessing of an image file: RGB, the shorter side resized
    /// to `resize` (`interpolation`, antialiased), the central `crop`²,
    /// values scaled to [0, 1], then `normalize`.
    pub resize: i64,
    pub crop: i64,
    pub interpolation: String,
    pub normalize: String,
    /// The run's val accuracy with these weights, and the epoch they are from.
    pub val_acc: f64,
    pub epoch: usize,
    /// A multi-label model's outputs: each logit's sigmoid is its label's
    /// probability, a label predicted above the threshold (absent for a
    /// single-label model: a softmax over the logits).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multi_label: Option<crate::persist::model_card::MultiLabelCard>,
}

/// The files an export wrote.
pub struct Exported {
    pub model: PathBuf,
    pub card: PathBuf,
    pub nodes: usize,
}

/// Writes `trained` as `out` (an `.onnx` file) and `out` + `.json`.
pub fn export(trained: &TrainedModel, out: &Path) -> Result<Exported> {
    let sizing = trained.card.sizing();
    let size = sizing.size;
    let mut graph = crate::models::onnx::graph(&trained.model, size)?;
    let card = ExportCard {
        arch: trained.card.arch.name(),
        classes: trained.classes.clone(),
        opset: crate::persist::onnx::OPSET,
        input: INPUT.into(),
        input_shape: ("batch".into(), 3, size, size),
        output: OUTPUT.into(),
        resize: sizing.resize,
        crop: size,
        interpolation: sizing.interpolation.name(),
        normalize: match trained.card.normalization {
            Normalization::Imagenet => "(x - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225] per channel".into(),
            Normalization::TfLite => "(255·x - 127) / 128".into(),
        },
        val_acc: trained.card.val_acc,
        epoch: trained.card.epoch,
        multi_label: trained.card.multi_label.clone(),
    };
    let card_json = serde_json::to_string_pretty(&card)?;
    graph.add_metadata("tchlab.preprocessing", &card_json);
    graph.write(out)?;
    let card_path = PathBuf::from(format!("{}.json", out.display()));
    crate::persist::write_atomically(&card_path, card_json.as_bytes())?;
    Ok(Exported { model: out.to_owned(), card: card_path, nodes: graph.node_count() })
}
