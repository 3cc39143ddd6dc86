//! Image features for captioning from this crate's own pretrained backbones:
//! each image decoded, `Resize(256)` + `CenterCrop(224)`, through the frozen,
//! eval-mode backbone (the feature-extract mode's frozen pass, in lanes on
//! the CPU), either pooled to `[images, D]` (f32, the course's path) or as
//! the grid of a convolutional map, `[images, h·w, C]` (f16: a 4,500-image
//! set of Lite0 7×7×1280 grids is 0.56 GB so, 1.1 GB in f32; see the README).
//! Features are cached in a `.safetensors` file keyed by the backbone, its
//! weights, its sizing, the feature shape and the image list, so a second
//! run over the same images starts at once; a cache that does not read back
//! whole is computed again.

use crate::choice_names::Named;
use crate::data::decode::decode_rgb;
use crate::data::loader::image_tensor;
use crate::data::transforms::{val_transform_sized, Sizing};
use crate::models::{Arch, Classifier, GridLayer};
use crate::persist::{safetensors, weights};
use crate::report::Reporter;
use crate::train::amp::Autocast;
use crate::train::frozen_backbone::{backbone_features, backbone_grid, FrozenPass};
use anyhow::{bail, Result};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// What a captioning network reads of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FeatureShape {
    /// The backbone's pooled features, `[images, D]` in f32.
    #[default]
    Pooled,
    /// The map `GridLayer` ends with, `[images, h·w, C]` in f16: half the
    /// memory, for a rounding of 3e-5 of a channel's deviation on average
    /// (`examples/grid_precision.rs`).
    Grid(GridLayer),
}

impl FeatureShape {
    /// The element kind features of this shape are stored in, on disk and
    /// in memory (a batch is made f32 when it is used).
    pub fn storage_kind(self) -> Kind {
        match self {
            FeatureShape::Pooled => Kind::Float,
            FeatureShape::Grid(_) => Kind::Half,
        }
    }

    /// The features a network reads: the grid of `layer` (by default the
    /// last map) when it `takes_grid`, the pooled vector otherwise (where a
    /// layer is refused: the course's cells keep their pooled path).
    pub fn for_network(takes_grid: bool, layer: Option<GridLayer>) -> Result<Self> {
        match (takes_grid, layer) {
            (true, layer) => Ok(FeatureShape::Grid(layer.unwrap_or(GridLayer::Last))),
            (false, None) => Ok(FeatureShape::Pooled),
            (false, Some(_)) => {
                bail!("--feature-grid is for --cell attention|transformer (rnn and lstm read the pooled feature)")
            }
        }
    }

    /// Refuses a grid of a backbone that has none.
    pub fn check(self, arch: Arch) -> Result<()> {
        if let FeatureShape::Grid(_) = self {
            if !arch.has_grid() {
                bail!(
                    "{}: no convolutional grid of features for attention (the CNNs have one, e.g. efficientnet-lite0)",
                    arch.name()
                );
            }
        }
        Ok(())
    }
}

/// Which backbone computes the features, with which weights, at which
/// input size, where, and their shape.
#[derive(Debug, Clone)]
pub struct Extractor {
    pub arch: Arch,
    pub weights: PathBuf,
    /// The side of the square the backbone sees (its published crop when
    /// `None`); a larger side gives a finer grid.
    pub image_size: Option<i64>,
    pub device: Device,
    pub shape: FeatureShape,
}

/// Images decoded and passed through the backbone at a time.
const CHUNK: usize = 64;

impl Extractor {
    /// How an image is resized and cropped for the backbone.
    pub fn sizing(&self) -> Sizing {
        Sizing::of(&self.arch.preprocessing(), self.image_size)
    }

    /// The cache file of this extractor's features of `split` in `dir`: the
    /// pooled ones at the published size keep the name they always had.
    pub fn cache_file(&self, dir: &Path, split: &str) -> PathBuf {
        let size = match self.image_size {
            Some(size) if size != self.arch.preprocessing().crop => format!("-{size}px"),
            _ => String::new(),
        };
        let name = self.arch.name();
        dir.join(match self.shape {
            FeatureShape::Pooled => format!("{name}{size}-{split}.safetensors"),
            FeatureShape::Grid(layer) => format!("{name}{size}-grid-{}-{split}.safetensors", layer.name()),
        })
    }

    /// Features of the readable ones of `images`, with the index and the
    /// reason of each that does not decode; from `cache` when it holds
    /// exactly these (same backbone, weights, sizing, shape and files),
    /// computed and cached otherwise. Where they came from, a cache that is
    /// damaged or cannot be written, and the bars go to `reporter`.
    pub fn features(
        &self,
        images: &[PathBuf],
        cache: &Path,
        label: &str,
        reporter: &dyn Reporter,
    ) -> Result<(Tensor, Vec<Unreadable>)> {
        let key = self.cache_key(images);
        match self.read_cache(cache, &key, images.len()) {
            Cached::Hit(features, unreadable) => {
                reporter.warning(&format!("{label}: {} image features from {}", images.len(), cache.display()));
                return Ok((features, unreadable));
            }
            Cached::Damaged(why) => reporter.warning(&format!("{label}: computing the features again ({why:#})")),
            Cached::Miss => {}
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

    /// Features of the images that decode, and which did not. They are
    /// written chunk by chunk into one tensor of the storage kind, so the
    /// memory held is the result's and a chunk's.
    pub fn compute_readable(
        &self,
        images: &[PathBuf],
        label: &str,
        reporter: &dyn Reporter,
    ) -> Result<(Tensor, Vec<Unreadable>)> {
        self.shape.check(self.arch)?;
        let sizing = self.sizing();
        if let Some(patch) = self.arch.patch_size().filter(|patch| sizing.size % patch != 0) {
            bail!(
                "--image-size {}: {} cuts images into {patch}-pixel patches; give a multiple of {patch}",
                sizing.size,
                self.arch.name()
            );
        }
        let mut model = Classifier::for_images(self.arch, 1, sizing.size, self.device);
        weights::load_backbone(&mut model, &self.weights)?;
        let pass =
            FrozenPass { normalization: self.arch.normalization(), device: self.device, autocast: Autocast::Off };
        let (mut features, mut rows, mut unreadable) = (None::<Tensor>, 0, Vec::new());
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
            let pixels = Tensor::stack(&pixels, 0);
            let computed = match self.shape {
                FeatureShape::Pooled => backbone_features(&model, &pixels, pass, &what, reporter),
                FeatureShape::Grid(layer) => backbone_grid(&model, &pixels, (pass, layer), &what, reporter)?,
            };
            let computed = computed.to_device(Device::Cpu).to_kind(self.shape.storage_kind());
            let all = features.get_or_insert_with(|| {
                let mut size = computed.size();
                size[0] = images.len() as i64;
                Tensor::empty(size.as_slice(), (computed.kind(), Device::Cpu))
            });
            all.narrow(0, rows, computed.size()[0]).copy_(&computed);
            rows += computed.size()[0];
        }
        match features {
            Some(features) => Ok((features.narrow(0, 0, rows), unreadable)),
            None => bail!("{label}: none of the {} images decodes", images.len()),
        }
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
        // The pooled key is the one it always was, so earlier caches still serve.
        let shape = match self.shape {
            FeatureShape::Pooled => String::new(),
            FeatureShape::Grid(layer) => format!(" grid {} {:?}", layer.name(), self.shape.storage_kind()),
        };
        format!(
            "{}{shape} {:?} {} {weights_len} {} {:016x}",
            self.arch.name(),
            self.sizing(),
            self.weights.display(),
            images.len(),
            hasher.finish()
        )
    }
}

/// The picture a backbone sized by `sizing` sees of the image at `path`
/// (its val transform: resized, centre-cropped), `[3, H, W]` uint8: where
/// a grid of its features lies.
pub fn seen_picture(path: &Path, sizing: &Sizing) -> Result<Tensor> {
    let pixels = val_transform_sized(&image_tensor(&decode_rgb(path)?), sizing);
    Ok((pixels * 255.0).round().clamp(0.0, 255.0).to_kind(Kind::Uint8))
}

/// An image of the list that does not decode: its index and why.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Unreadable {
    pub index: usize,
    pub why: String,
}

/// What a cache file held for a list of images.
enum Cached {
    /// No file, or one for other images, backbone or shape.
    Miss,
    /// The right key but contents that do not read back whole: why.
    Damaged(anyhow::Error),
    Hit(Tensor, Vec<Unreadable>),
}

impl Extractor {
    fn read_cache(&self, cache: &Path, key: &str, images: usize) -> Cached {
        let Ok(metadata) = safetensors::read_metadata(cache) else { return Cached::Miss };
        if metadata.get("key").map(String::as_str) != Some(key) {
            return Cached::Miss;
        }
        match self.cached_contents(cache, &metadata, images) {
            Ok((features, unreadable)) => Cached::Hit(features, unreadable),
            Err(why) => Cached::Damaged(why),
        }
    }

    /// The cached features and unreadable images, checked against the image
    /// list and this shape.
    fn cached_contents(
        &self,
        cache: &Path,
        metadata: &HashMap<String, String>,
        images: usize,
    ) -> Result<(Tensor, Vec<Unreadable>)> {
        let unreadable: Vec<Unreadable> =
            serde_json::from_str(metadata.get("unreadable").map_or("", |s| s.as_str()))
                .map_err(|e| anyhow::anyhow!("{}: its list of unreadable images: {e}", cache.display()))?;
        let features = safetensors::read_tensor(cache, "features")?;
        let dims = match self.shape {
            FeatureShape::Pooled => 2,
            FeatureShape::Grid(_) => 3,
        };
        let rows = images.checked_sub(unreadable.len());
        if features.dim() != dims
            || features.kind() != self.shape.storage_kind()
            || Some(features.size()[0] as usize) != rows
            || unreadable.iter().any(|u| u.index >= images)
        {
            bail!(
                "{}: {:?} {:?} features for {images} images ({} unreadable)",
                cache.display(),
                features.kind(),
                features.size(),
                unreadable.len()
            );
        }
        Ok((features, unreadable))
    }
}
