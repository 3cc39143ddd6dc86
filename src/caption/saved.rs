//! A trained captioning network on disk: its weights in a `.safetensors`
//! file whose metadata, a [`Card`] of kind `caption model`, holds everything
//! needed to use it again — sizes, cell, vocabulary, caption length, and
//! where its image features come from. Files from before the card (one
//! `caption_card` entry of JSON) still load.

use super::decoder::Captioner;
use super::features::FeatureShape;
use super::model::{build, CellKind, Dims};
use super::vocab::Vocabulary;
use crate::models::Arch;
use crate::persist::card::{self, Card};
use crate::persist::weights;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::nn::VarStore;
use tch::Device;

/// The one metadata entry of files written before the card.
const LEGACY_KEY: &str = "caption_card";

/// Where a network's image features come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FeatureSource {
    /// One of this crate's backbones with these weights, pooled or as a
    /// grid (a file from before grids is pooled): any image can be captioned.
    Backbone {
        arch: Arch,
        weights: PathBuf,
        #[serde(default)]
        shape: FeatureShape,
        /// The backbone's input side when not its published crop (a file
        /// from before the option has none).
        #[serde(default)]
        image_size: Option<i64>,
    },
    /// The course's precomputed VGG-16 fc7 PCA features: only those images.
    CourseFeatures,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaptionCard {
    pub dims: Dims,
    pub cell: CellKind,
    pub words: Vec<String>,
    pub max_words: usize,
    pub features: FeatureSource,
    /// 0-based epoch whose weights these are, and its val loss.
    pub epoch: usize,
    pub val_loss: f64,
}

impl Card for CaptionCard {
    const KIND: &'static str = "caption model";

    fn check(&self, path: &Path) -> Result<()> {
        let d = self.dims;
        if self.words.len() as i64 != d.vocabulary
            || [d.features, d.wordvec, d.hidden].iter().any(|&s| !(1..=1 << 16).contains(&s))
        {
            bail!("{}: caption model sizes {d:?} do not fit its {} words", path.display(), self.words.len());
        }
        Ok(())
    }

    fn legacy(metadata: &HashMap<String, String>) -> Option<HashMap<String, String>> {
        card::json_fields(metadata.get(LEGACY_KEY)?)
    }
}

/// Writes `net` with its card (atomically).
pub fn save(path: &Path, net_store: &VarStore, card: &CaptionCard) -> Result<()> {
    let mut tensors: Vec<(String, tch::Tensor)> = net_store.variables().into_iter().collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    card::save(path, &tensors, card)
}

/// A saved network, its vocabulary and its card, on `device`.
pub fn load(path: &Path, device: Device) -> Result<(Box<dyn Captioner>, VarStore, Vocabulary, CaptionCard)> {
    let card: CaptionCard = card::read(path)?;
    let vocab = Vocabulary::from_words(card.words.clone(), &path.display().to_string())?;
    let d = card.dims;
    let mut store = VarStore::new(device);
    let net = build(&store.root(), d, card.cell, vocab.tokens)?;
    let tensors = weights::read_named_tensors(path)?;
    weights::load_into(&mut store, &tensors, path)?;
    let known: Vec<String> = store.variables().into_keys().collect();
    weights::reject_unknown(&tensors, &known, None, path)?;
    Ok((net, store, vocab, card))
}
