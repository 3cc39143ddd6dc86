//! The card a saved model carries in its `.safetensors` metadata: what
//! `predict` and `eval` need to use it (architecture, classes, input
//! normalization and size) and how it was made. One typed struct, written as
//! one metadata entry per field (strings as they are, other values as JSON),
//! so the files stay readable by any safetensors tool and older files with
//! the same keys still load.

use crate::data::transforms::Normalization;
use crate::models::Arch;
use anyhow::{anyhow, bail, Result};
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
    pub mode: String,
    /// 0-based epoch whose weights these are.
    pub epoch: usize,
    pub val_acc: f64,
    /// How it was trained: `fp32`, or `bf16` autocast (the weights are fp32 either way; older files: fp32).
    #[serde(default = "default_precision")]
    pub precision: String,
}

fn default_precision() -> String {
    "fp32".into()
}

fn default_image_size() -> i64 {
    crate::data::transforms::CROP_SIZE
}

impl ModelCard {
    /// The card as safetensors metadata.
    pub fn to_metadata(&self) -> Result<HashMap<String, String>> {
        let serde_json::Value::Object(fields) = serde_json::to_value(self)? else {
            anyhow::bail!("model card is not a JSON object");
        };
        Ok(fields
            .into_iter()
            .map(|(key, value)| match value {
                serde_json::Value::String(text) => (key, text),
                other => (key, other.to_string()),
            })
            .collect())
    }

    /// The card from a saved model's metadata; `source` names the file in errors.
    pub fn from_metadata(metadata: &HashMap<String, String>, source: &Path) -> Result<Self> {
        let fields = metadata
            .iter()
            .map(|(key, text)| {
                let value = serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.clone()));
                (key.clone(), value)
            })
            .collect::<serde_json::Map<_, _>>();
        let card: Self = serde_json::from_value(serde_json::Value::Object(fields))
            .map_err(|e| anyhow!("{}: not a model saved by finetune (model card: {e})", source.display()))?;
        if !(32..=1024).contains(&card.image_size) || card.classes.is_empty() {
            bail!(
                "{}: model card has image_size {} and {} classes (expected 32–1024 pixels, at least one class)",
                source.display(),
                card.image_size,
                card.classes.len()
            );
        }
        Ok(card)
    }

    /// Reads the card of a saved model file.
    pub fn read(path: &Path) -> Result<Self> {
        Self::from_metadata(&super::safetensors::read_metadata(path)?, path)
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
            mode: "full".into(),
            epoch: 3,
            val_acc: 0.954248,
            precision: "fp32".into(),
        }
    }

    #[test]
    fn a_card_survives_metadata_and_reads_the_older_loose_keys() {
        let metadata = card().to_metadata().unwrap();
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
