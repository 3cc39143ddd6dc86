//! Image features for captioning from this crate's own pretrained backbones:
//! each image decoded, `Resize(256)` + `CenterCrop(224)`, through the frozen,
//! eval-mode backbone (the feature-extract mode's frozen pass, in lanes on
//! the CPU), pooled to `[images, D]`. Features are cached in a
//! `.safetensors` file keyed by the backbone, its weights and the image
//! list, so a second run over the same images starts at once.

use crate::choice_names::Named;
use crate::data::decode::decode_rgb;
use crate::data::loader::image_tensor;
use crate::data::transforms::{val_transform_sized, Sizing};
use crate::models::{Arch, Classifier};
use crate::persist::{safetensors, weights};
use crate::report::Reporter;
use crate::train::amp::Autocast;
use crate::train::frozen_backbone::{backbone_features, FrozenPass};
use anyhow::{Context, Result};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use tch::{Device, Tensor};

/// Which backbone computes the features, with which weights, where.
#[derive(Debug, Clone)]
pub struct Extractor {
    pub arch: Arch,
    pub weights: PathBuf,
    pub device: Device,
}

/// Images decoded and passed through the backbone at a time.
const CHUNK: usize = 64;

impl Extractor {
    /// Features of the readable ones of `images`, with the index and the
    /// reason of each that does not decode; from `cache` when it holds
    /// exactly these (same backbone, weights and files), computed and cached
    /// otherwise. Where they came from, a cache that cannot be written and
    /// the bars go to `reporter`.
    pub fn features(
        &self,
        images: &[PathBuf],
        cache: &Path,
        label: &str,
        reporter: &dyn Reporter,
    ) -> Result<(Tensor, Vec<Unreadable>)> {
        let key = self.cache_key(images);
        if let Some(cached) = read_cache(cache, &key) {
            reporter.warning(&format!("{label}: {} image features from {}", images.len(), cache.display()));
            return Ok(cached);
        }
        let (features, unreadable) = self.compute_readable(images, label, reporter)?;
        let metadata =
            HashMap::from([("key".to_string(), key), ("unreadable".to_string(), serde_json::to_string(&unreadable)?)]);
        if let Some(parent) = cache.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        if let Err(e) = safetensors::save(cache, &[("features".to_string(), features.shallow_clone())], metadata) {
            reporter.warning(&format!("warning: features not cached ({e:#})"));
        }
        Ok((features, unreadable))
    }

    /// Features of `images`, computed (a bar from `reporter` per chunk); an
    /// image that does not decode is an error naming it.
    pub fn compute(&self, images: &[PathBuf], label: &str, reporter: &dyn Reporter) -> Result<Tensor> {
        let (features, unreadable) = self.compute_readable(images, label, reporter)?;
        match unreadable.first() {
            Some(Unreadable { why, .. }) => anyhow::bail!("{why}"),
            None => Ok(features),
        }
    }

    /// Features of the images that decode, and which did not.
    pub fn compute_readable(
        &self,
        images: &[PathBuf],
        label: &str,
        reporter: &dyn Reporter,
    ) -> Result<(Tensor, Vec<Unreadable>)> {
        let mut model = Classifier::new(self.arch, 1, self.device);
        weights::load_backbone(&mut model, &self.weights)?;
        let pass =
            FrozenPass { normalization: self.arch.normalization(), device: self.device, autocast: Autocast::Off };
        let sizing = Sizing::of(&self.arch.preprocessing(), None);
        let (mut chunks, mut unreadable) = (Vec::new(), Vec::new());
        for (i, chunk) in images.chunks(CHUNK).enumerate() {
            let mut pixels = Vec::with_capacity(chunk.len());
            for (j, path) in chunk.iter().enumerate() {
                match decode_rgb(path) {
                    Ok(image) => pixels.push(val_transform_sized(&image_tensor(&image), &sizing)),
                    Err(error) => unreadable.push(Unreadable { index: i * CHUNK + j, why: format!("{error:#}") }),
                }
            }
            if pixels.is_empty() {
                continue;
            }
            let what = format!("{label} features {}/{}", i + 1, images.len().div_ceil(CHUNK));
            let features = backbone_features(&model, &Tensor::stack(&pixels, 0), pass, &what, reporter);
            chunks.push(features.to_device(Device::Cpu));
        }
        if chunks.is_empty() {
            anyhow::bail!("{label}: none of the {} images decodes", images.len());
        }
        Ok((Tensor::cat(&chunks, 0), unreadable))
    }

    /// What the cached features must have been computed from.
    fn cache_key(&self, images: &[PathBuf]) -> String {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        for path in images {
            path.hash(&mut hasher);
            // An image edited in place keeps its path and often its size:
            // its modification time (and inode, when replaced) changes.
            let metadata = std::fs::metadata(path).ok();
            metadata.map(|m| (m.len(), m.mtime(), m.mtime_nsec(), m.ino())).hash(&mut hasher);
        }
        let weights_len = std::fs::metadata(&self.weights).map(|m| m.len()).unwrap_or(0);
        format!(
            "{} {:?} {} {weights_len} {} {:016x}",
            self.arch.name(),
            Sizing::of(&self.arch.preprocessing(), None),
            self.weights.display(),
            images.len(),
            hasher.finish()
        )
    }
}

/// An image of the list that does not decode: its index and why.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Unreadable {
    pub index: usize,
    pub why: String,
}

fn read_cache(cache: &Path, key: &str) -> Option<(Tensor, Vec<Unreadable>)> {
    let metadata = safetensors::read_metadata(cache).ok()?;
    if metadata.get("key").map(String::as_str) != Some(key) {
        return None;
    }
    let unreadable = serde_json::from_str(metadata.get("unreadable")?).ok()?;
    let tensors = Tensor::read_safetensors(cache).context("cached features").ok()?;
    tensors.into_iter().find(|(name, _)| name == "features").map(|(_, t)| (t, unreadable))
}
