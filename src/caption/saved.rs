//! A trained captioning network on disk: its weights in a `.safetensors`
//! file whose metadata (`caption_card`, JSON) holds everything needed to use
//! it again — sizes, cell, vocabulary, caption length, and where its image
//! features come from.

use super::model::{CaptioningNet, CellKind, Dims};
use super::vocab::Vocabulary;
use crate::models::Arch;
use crate::persist::{safetensors, weights};
use anyhow::{anyhow, bail, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::nn::VarStore;
use tch::Device;

const CARD_KEY: &str = "caption_card";

/// Where a network's image features come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FeatureSource {
    /// One of this crate's backbones with these weights: any image can be captioned.
    Backbone { arch: Arch, weights: PathBuf },
    /// The course's precomputed VGG-16 fc7 PCA features: only those images.
    CourseFeatures,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
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

/// Writes `net` with its card (atomically).
pub fn save(path: &Path, net_store: &VarStore, card: &CaptionCard) -> Result<()> {
    let mut tensors: Vec<(String, tch::Tensor)> = net_store.variables().into_iter().collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let metadata = HashMap::from([(CARD_KEY.to_string(), serde_json::to_string(card)?)]);
    safetensors::save(path, &tensors, metadata)
}

/// A saved network, its vocabulary and its card, on `device`.
pub fn load(path: &Path, device: Device) -> Result<(CaptioningNet, VarStore, Vocabulary, CaptionCard)> {
    let metadata = safetensors::read_metadata(path)?;
    let text = metadata
        .get(CARD_KEY)
        .ok_or_else(|| anyhow!("{}: not a captioning model saved by caption train (no {CARD_KEY})", path.display()))?;
    let card: CaptionCard =
        serde_json::from_str(text).map_err(|e| anyhow!("{}: unreadable {CARD_KEY} ({e})", path.display()))?;
    let vocab = Vocabulary::from_words(card.words.clone(), &path.display().to_string())?;
    let d = card.dims;
    if vocab.len() as i64 != d.vocabulary
        || [d.features, d.wordvec, d.hidden].iter().any(|&s| !(1..=1 << 16).contains(&s))
    {
        bail!("{}: {CARD_KEY} sizes {d:?} do not fit its {} words", path.display(), vocab.len());
    }
    let mut store = VarStore::new(device);
    let net = CaptioningNet::new(&store.root(), d, card.cell, vocab.tokens);
    let tensors = weights::read_named_tensors(path)?;
    weights::load_into(&mut store, &tensors, path)?;
    let known: Vec<String> = store.variables().into_keys().collect();
    weights::reject_unknown(&tensors, &known, None, path)?;
    Ok((net, store, vocab, card))
}
