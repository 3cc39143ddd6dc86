//! Where a trained classifier looked: Grad-CAM maps (Selvaraju et al. 2017)
//! over the backbone's last convolutional map, and the figures that show
//! them — `eval --top-losses K` (the K images the model got most wrong)
//! and `predict --cam DIR` (one picture per image).
//!
//! For this crate's convolutional backbones the pooled feature is the mean
//! of that map `A` `[C, h, w]` and the head is linear, so the gradient of
//! class c's score is `W_ck / (h·w)` at every location: Grad-CAM's channel
//! weights are the head's row, and its map is `ReLU(Σ_k W_ck A_k) / (h·w)`
//! — computed from the map and the head without a backward pass
//! (`tests/class_maps.rs` checks it against autograd's gradients).

use super::predict::TrainedModel;
use crate::choice_names::Named;
use crate::data::decode::decode_rgb;
use crate::data::loader::image_tensor;
use crate::data::transforms::val_transform_sized;
use crate::models::{Classifier, GridLayer};
use crate::report::plots::{attention_maps, AttentionPanel};
use anyhow::{bail, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// An error naming `option` unless the model's backbone has a
/// convolutional map to explain.
pub fn check_explainable(trained: &TrainedModel, option: &str) -> Result<()> {
    let arch = trained.model.arch;
    if !arch.pools_grid_mean() {
        bail!("{option}: {} has no convolutional map to explain (a ResNet or an EfficientNet has one)", arch.name());
    }
    Ok(())
}

/// Grad-CAM maps `[N, h, w]` (on the CPU) of `normalized` images
/// `[N, 3, S, S]` for `classes` (one per image); an error for a backbone
/// without a convolutional map.
pub fn class_maps(model: &Classifier, normalized: &Tensor, classes: &[i64]) -> Result<Tensor> {
    // Only where the pooled feature is the map's mean is the head's row Grad-CAM's weights.
    if !model.arch.pools_grid_mean() {
        bail!(
            "{}: its pooled feature is not the mean of its last convolutional map, so its head does not weigh that map (Grad-CAM here takes a ResNet, RegNet or EfficientNet)",
            model.arch.name()
        )
    }
    let map = tch::no_grad(|| model.feature_map(normalized, GridLayer::Last)).expect("a CNN's last map");
    let map = map.to_kind(Kind::Float);
    let (_, _, h, w) = map.size4()?;
    let rows = Tensor::from_slice(classes).to_device(map.device());
    let weights = model.head_weight().to_kind(Kind::Float).index_select(0, &rows);
    let weighted = map * weights.unsqueeze(-1).unsqueeze(-1);
    let summed = weighted.sum_dim_intlist([1i64].as_slice(), false, Kind::Float);
    Ok((summed / (h * w) as f64).relu().to_device(Device::Cpu))
}

/// The Grad-CAM map `[1, h, w]` of one input `[3, S, S]` in [0, 1] for `class`.
/// The map as shares of its sum, the scale the figure lights (as attention
/// weights are): a peaked map shines, one spread over the image stays dim.
fn class_map(trained: &TrainedModel, input: &Tensor, class: i64, device: Device) -> Result<Tensor> {
    let normalized = trained.card.normalization.apply(&input.unsqueeze(0).to_device(device));
    let map = class_maps(&trained.model, &normalized, &[class])?;
    let total = map.sum_dim_intlist([1i64, 2].as_slice(), true, Kind::Float).clamp_min(1e-12);
    Ok(map / total)
}

/// One image the model scored worst: `−log p(true class)`.
#[derive(Debug, Clone, Serialize)]
pub struct TopLoss {
    pub path: PathBuf,
    pub label: String,
    pub predicted: String,
    /// The probability of the predicted class.
    pub probability: f64,
    pub loss: f64,
}

/// The `k` images of highest loss, highest first, from each image's path,
/// true class and probabilities `[N, classes]`.
pub fn top_losses(paths: &[PathBuf], labels: &[i64], probs: &Tensor, classes: &[String], k: usize) -> Vec<TopLoss> {
    let probs = probs.to_kind(Kind::Double).to_device(Device::Cpu);
    let mut rows: Vec<TopLoss> = paths
        .iter()
        .zip(labels)
        .enumerate()
        .map(|(i, (path, &label))| {
            let row = probs.get(i as i64);
            let predicted = row.argmax(0, false).int64_value(&[]);
            TopLoss {
                path: path.clone(),
                label: classes[label as usize].clone(),
                predicted: classes[predicted as usize].clone(),
                probability: row.double_value(&[predicted]),
                loss: -row.double_value(&[label]).max(f64::MIN_POSITIVE).ln(),
            }
        })
        .collect();
    rows.sort_by(|a, b| b.loss.total_cmp(&a.loss).then_with(|| a.path.cmp(&b.path)));
    rows.truncate(k);
    rows
}

/// The model's input and picture of one file: `[3, S, S]` in [0, 1] and
/// as uint8 (what the backbone saw, its validation crop).
fn seen(trained: &TrainedModel, path: &Path) -> Result<(Tensor, Tensor)> {
    let input = val_transform_sized(&image_tensor(&decode_rgb(path)?), &trained.card.sizing());
    let picture = (&input * 255.0).round().to_kind(Kind::Uint8);
    Ok((input, picture))
}

/// `top_losses.png`: each image, then its Grad-CAM map for the class the
/// model predicted, captioned "predicted p (true)".
pub fn top_losses_figure(trained: &TrainedModel, rows: &[TopLoss], device: Device, out: &Path) -> Result<()> {
    let mut panels = Vec::new();
    for row in rows {
        let (input, picture) = seen(trained, &row.path)?;
        let class = trained.classes.iter().position(|c| *c == row.predicted).unwrap_or_default() as i64;
        let map = class_map(trained, &input, class, device)?;
        let words = vec![format!("{} {:.2} ({})", row.predicted, row.probability, row.label)];
        panels.push(AttentionPanel { picture, words, weights: map });
    }
    let title = format!(
        "The {} val images of highest loss: Grad-CAM of the predicted class (true class in brackets)",
        rows.len()
    );
    attention_maps(out, &title, &panels)
}

/// `predict --cam DIR`: for each readable file, `DIR/NNNNN-<name>.png` (NNNNN
/// its place among the files given), the picture and its Grad-CAM map for
/// the top class. Returns how many were written.
pub fn write_class_maps(trained: &TrainedModel, files: &[PathBuf], dir: &Path, device: Device) -> Result<usize> {
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("--cam {}: cannot create the folder ({e})", dir.display()))?;
    let mut written = 0;
    for (index, path) in files.iter().enumerate() {
        let Ok((input, picture)) = seen(trained, path) else { continue };
        let probs = trained.probabilities(&input.unsqueeze(0), device, &crate::report::Silent);
        let class = probs.argmax(-1, false).int64_value(&[0]);
        let map = class_map(trained, &input, class, device)?;
        let probability = probs.double_value(&[0, class]);
        let name = path.file_stem().map_or("image".into(), |s| s.to_string_lossy().into_owned());
        let panel = AttentionPanel {
            picture,
            words: vec![format!("{} {probability:.2}", trained.classes[class as usize])],
            weights: map,
        };
        attention_maps(&dir.join(format!("{index:05}-{name}.png")), &path.display().to_string(), &[panel])?;
        written += 1;
    }
    Ok(written)
}
