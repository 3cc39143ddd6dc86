//! Using a trained model: load a `best_model.safetensors` with its recorded
//! architecture, classes and normalization; predict class probabilities for
//! image files; evaluate a labelled split (accuracy, per-class precision and
//! recall, confusion matrix).

use crate::data::decode::decode_rgb;
use crate::data::image_folder::{has_image_extension, ImageFolder};
use crate::data::loader::{image_tensor, DecodedSplit, PixelBudget};
use crate::data::transforms::{val_transform, Normalization};
use crate::models::checkpoint_io::read_safetensors_metadata;
use crate::models::{Arch, Classifier};
use crate::report::progress;
use crate::train::frozen::{predict_probabilities, FrozenPass};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};
use tch::{Device, Tensor};

pub struct TrainedModel {
    pub model: Classifier,
    pub classes: Vec<String>,
    pub normalization: Normalization,
}

impl TrainedModel {
    pub fn load(checkpoint: &Path, device: Device) -> Result<Self> {
        let meta = read_safetensors_metadata(checkpoint)?;
        let field = |key: &str| {
            meta.get(key).cloned().with_context(|| {
                format!("{}: no '{key}' recorded (not a model saved by finetune?)", checkpoint.display())
            })
        };
        let arch = Arch::parse(&field("arch")?)?;
        let classes: Vec<String> = serde_json::from_str(&field("classes")?)?;
        let normalization = match field("normalization")?.as_str() {
            "imagenet" => Normalization::Imagenet,
            "tf-lite" => Normalization::TfLite,
            other => bail!("{}: unknown normalization {other:?}", checkpoint.display()),
        };
        let mut model = Classifier::new(arch, classes.len() as i64, device);
        model.load_all(checkpoint)?;
        Ok(Self { model, classes, normalization })
    }

    /// Probabilities `[N, classes]` for `[N, 3, 224, 224]` images in [0, 1].
    pub fn probabilities(&self, images: &Tensor, device: Device) -> Tensor {
        let pass = FrozenPass { normalization: self.normalization, device, amp: false };
        predict_probabilities(&self.model, images, pass, "predict")
    }
}

#[derive(Debug, Serialize)]
pub struct ClassProbability {
    pub class: String,
    pub probability: f64,
}

#[derive(Debug, Serialize)]
pub struct Prediction {
    pub path: PathBuf,
    /// Highest first; absent when the file could not be decoded.
    pub top: Vec<ClassProbability>,
    pub error: Option<String>,
}

/// Expands folders (recursively, image extensions only) into files.
pub fn collect_images(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let mut found: Vec<PathBuf> = walk(input)?.into_iter().filter(|p| has_image_extension(p)).collect();
            found.sort();
            files.extend(found);
        } else if input.exists() {
            files.push(input.clone());
        } else {
            bail!("{}: no such file or folder", input.display());
        }
    }
    Ok(files)
}

fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            out.extend(walk(&path)?);
        } else {
            out.push(path);
        }
    }
    Ok(out)
}

pub fn predict_files(
    trained: &TrainedModel,
    files: &[PathBuf],
    top_k: usize,
    device: Device,
) -> Result<Vec<Prediction>> {
    let mut predictions = Vec::new();
    let mut decoded = Vec::new();
    let mut decoded_at = Vec::new();
    let bar = progress::bar(files.len() as u64, "decoding");
    for path in files {
        match decode_rgb(path) {
            Ok(rgb) => {
                decoded.push(val_transform(&image_tensor(&rgb)));
                decoded_at.push(predictions.len());
                predictions.push(Prediction { path: path.clone(), top: Vec::new(), error: None });
            }
            Err(e) => {
                predictions.push(Prediction { path: path.clone(), top: Vec::new(), error: Some(format!("{e:#}")) })
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    if decoded.is_empty() {
        return Ok(predictions);
    }
    let probs = trained.probabilities(&Tensor::stack(&decoded, 0), device);
    for (row, &slot) in decoded_at.iter().enumerate() {
        let mut top: Vec<ClassProbability> = trained
            .classes
            .iter()
            .enumerate()
            .map(|(c, class)| ClassProbability {
                class: class.clone(),
                probability: probs.double_value(&[row as i64, c as i64]),
            })
            .collect();
        top.sort_by(|a, b| b.probability.total_cmp(&a.probability));
        top.truncate(top_k.max(1));
        predictions[slot].top = top;
    }
    Ok(predictions)
}

#[derive(Debug, Serialize)]
pub struct ClassReport {
    pub class: String,
    pub precision: f64,
    pub recall: f64,
    pub support: i64,
}

#[derive(Debug, Serialize)]
pub struct Evaluation {
    pub split: PathBuf,
    pub images: usize,
    pub accuracy: f64,
    pub loss: f64,
    pub per_class: Vec<ClassReport>,
    /// `confusion[true][predicted]`.
    pub confusion: Vec<Vec<i64>>,
    pub skipped: Vec<String>,
}

/// Evaluates a trained model on one split folder (`DIR/<class>/*`).
pub fn evaluate_split(trained: &TrainedModel, split_dir: &Path, device: Device) -> Result<Evaluation> {
    let folder = ImageFolder::scan(split_dir)?;
    if folder.classes != trained.classes {
        bail!("{}: classes {:?} differ from the model's {:?}", split_dir.display(), folder.classes, trained.classes);
    }
    let bar = progress::bar(folder.samples.len() as u64, "decoding");
    let split = DecodedSplit::decode(&folder, false, &mut PixelBudget::default(), &bar)?;
    bar.finish_and_clear();
    let probs = trained.probabilities(&split.val_tensor(), device);
    let labels = split.labels_tensor();
    let (loss, correct) = crate::train::finetune::loss_and_correct(&probs, &labels);
    let predicted: Vec<i64> = Vec::try_from(probs.argmax(-1, false))?;
    let n = trained.classes.len();
    let mut confusion = vec![vec![0i64; n]; n];
    for (&truth, &pred) in split.labels.iter().zip(&predicted) {
        confusion[truth as usize][pred as usize] += 1;
    }
    let per_class = (0..n)
        .map(|c| {
            let tp = confusion[c][c] as f64;
            let predicted_c: i64 = confusion.iter().map(|row| row[c]).sum();
            let support: i64 = confusion[c].iter().sum();
            ClassReport {
                class: trained.classes[c].clone(),
                precision: if predicted_c > 0 { tp / predicted_c as f64 } else { 0.0 },
                recall: if support > 0 { tp / support as f64 } else { 0.0 },
                support,
            }
        })
        .collect();
    Ok(Evaluation {
        split: split_dir.to_owned(),
        images: split.len(),
        accuracy: correct as f64 / split.len() as f64,
        loss,
        per_class,
        confusion,
        skipped: split.bad_files.iter().map(|b| format!("{}: {}", b.path.display(), b.reason)).collect(),
    })
}
