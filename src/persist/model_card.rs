//! The card a saved model carries in its `.safetensors` metadata: what
//! `predict` and `eval` need to use it (architecture, classes, input
//! normalization, size, resize and interpolation) and how it was made. A [`Card`] of kind
//! `finetune model`; older files, the same keys without the kind, still load.

use super::card::{self, Card};
use crate::data::transforms::{Interpolation, Normalization, Sizing};
use crate::models::Arch;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    pub arch: Arch,
    pub classes: Vec<String>,
    pub normalization: Normalization,
    /// Side of the square input images (older files: 224).
    #[serde(default = "default_image_size")]
    pub image_size: i64,
    /// The shorter side validation resizes to (older files: the tutorial's
    /// `image_size·256/224`).
    #[serde(default)]
    pub resize: Option<i64>,
    /// The resizes' interpolation (older files: bilinear).
    #[serde(default)]
    pub interpolation: Option<Interpolation>,
    pub mode: String,
    /// 0-based epoch whose weights these are.
    pub epoch: usize,
    pub val_acc: f64,
    /// How it was trained: `fp32`, or `bf16` autocast (the weights are fp32 either way; older files: fp32).
    #[serde(default = "default_precision")]
    pub precision: String,
    /// A multi-label model's settings (sigmoid outputs); none for a
    /// single-label one (a softmax over the classes; older files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multi_label: Option<MultiLabelCard>,
}

/// What using a multi-label model needs beside the classes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MultiLabelCard {
    /// A label is predicted above this probability.
    pub threshold: f64,
    /// The separator of the labels in the training labels file's label column.
    pub label_delim: char,
    /// The kept epoch's val mAP (`val_acc` is its exact-match ratio).
    pub val_map: f64,
}

fn default_precision() -> String {
    "fp32".into()
}

fn default_image_size() -> i64 {
    crate::data::transforms::CROP_SIZE
}

impl Card for ModelCard {
    const KIND: &'static str = "finetune model";

    fn check(&self, path: &Path) -> Result<()> {
        if !(32..=1024).contains(&self.image_size) || self.classes.is_empty() {
            bail!(
                "{}: model card has image_size {} and {} classes (expected 32–1024 pixels, at least one class)",
                path.display(),
                self.image_size,
                self.classes.len()
            );
        }
        if let Some(patch) = self.arch.patch_size().filter(|patch| self.image_size % patch != 0) {
            bail!(
                "{}: model card has image_size {}, not a multiple of the arch's {patch}-pixel patches",
                path.display(),
                self.image_size
            );
        }
        Ok(())
    }

    /// Files before the kind key: the same loose keys.
    fn legacy(metadata: &HashMap<String, String>) -> Option<HashMap<String, String>> {
        metadata.contains_key("arch").then(|| metadata.clone())
    }
}

impl ModelCard {
    /// How images are sized for this model, as it was trained.
    pub fn sizing(&self) -> Sizing {
        let tutorial = Sizing::tutorial(self.image_size);
        Sizing {
            size: self.image_size,
            resize: self.resize.unwrap_or(tutorial.resize),
            interpolation: self.interpolation.unwrap_or(tutorial.interpolation),
        }
    }

    /// The card as safetensors metadata.
    pub fn to_metadata(&self) -> Result<HashMap<String, String>> {
        card::to_metadata(self)
    }

    /// The card from a saved model's metadata; `source` names the file in errors.
    pub fn from_metadata(metadata: &HashMap<String, String>, source: &Path) -> Result<Self> {
        card::from_metadata(metadata, source)
    }

    /// Reads the card of a saved model file.
    pub fn read(path: &Path) -> Result<Self> {
        card::read(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card() -> ModelCard {
        ModelCard {
            arch: Arch::EfficientnetLite0,
            classes: vec!["ants".into(), "bees".into()],
            normalization: Normalization::TfLite,
            image_size: 224,
            resize: None,
            interpolation: None,
            mode: "full".into(),
            epoch: 3,
            val_acc: 0.954248,
            precision: "fp32".into(),
            multi_label: None,
        }
    }

    #[test]
    fn a_card_survives_metadata_and_reads_the_older_loose_keys() {
        let metadata = card().to_metadata().unwrap();
        assert_eq!(metadata[card::KIND_KEY], "finetune model");
        assert_eq!(metadata["arch"], "efficientnet-lite0");
        assert_eq!(metadata["classes"], r#"["ants","bees"]"#);
        assert_eq!(ModelCard::from_metadata(&metadata, Path::new("m")).unwrap(), card());
        let older: HashMap<String, String> = [
            ("arch", "efficientnet-lite0"),
            ("classes", r#"["ants","bees"]"#),
            ("normalization", "tf-lite"),
            ("val_acc", "0.954248"),
            ("epoch", "3"),
            ("mode", "full"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(ModelCard::from_metadata(&older, Path::new("m")).unwrap(), card());
        let error = format!("{:#}", ModelCard::from_metadata(&HashMap::new(), Path::new("x")).unwrap_err());
        assert_eq!(error, "x: not a finetune model file (its metadata names no kind)");
    }

    #[test]
    fn a_card_knows_its_sizing_and_an_older_one_reads_as_the_tutorials() {
        assert_eq!(ModelCard { image_size: 160, ..card() }.sizing(), Sizing::tutorial(160));
        assert_eq!(card().sizing(), Sizing::TUTORIAL);
        let bicubic =
            ModelCard { image_size: 380, resize: Some(384), interpolation: Some(Interpolation::Bicubic), ..card() };
        let read = ModelCard::from_metadata(&bicubic.to_metadata().unwrap(), Path::new("m")).unwrap();
        assert_eq!(read.sizing(), Sizing { size: 380, resize: 384, interpolation: Interpolation::Bicubic });
    }

    #[test]
    fn a_card_that_does_not_fit_is_refused() {
        let metadata = ModelCard { image_size: 8, ..card() }.to_metadata().unwrap();
        let error = format!("{:#}", ModelCard::from_metadata(&metadata, Path::new("x.safetensors")).unwrap_err());
        assert!(error.starts_with("x.safetensors: model card has image_size 8"), "{error}");
    }

    #[test]
    fn a_card_without_an_arch_is_named_in_one_line() {
        let mut metadata = card().to_metadata().unwrap();
        metadata.remove("arch");
        let error = format!("{:#}", ModelCard::from_metadata(&metadata, Path::new("x.safetensors")).unwrap_err());
        assert!(error.contains("x.safetensors") && error.contains("arch"), "{error}");
        assert!(!error.contains('\n'), "{error}");
    }
}
