//! The audit's one pass over the files: each is read (at most
//! [`MAX_FILE_BYTES`]), hashed by content (SHA-256), decoded by the decode
//! path training uses (`crate::data::decode`, with its pixel limit),
//! perceptually hashed, and put through the frozen backbone as
//! `--cache-features` puts train images (the arch's val transform, the
//! frozen pass of `crate::train::frozen_backbone`). Files are decoded a
//! chunk at a time in parallel, so memory holds one chunk of images.

use crate::data::decode::decode_rgb_bytes;
use crate::data::loader::image_tensor;
use crate::data::phash::phash;
use crate::data::transforms::{val_transform_sized, Sizing};
use crate::models::{Arch, Classifier};
use crate::persist::weights;
use crate::report::{Reporter, Silent};
use crate::train::amp::Autocast;
use crate::train::frozen_backbone::{backbone_features, FrozenPass};
use anyhow::{Context, Result};
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{Device, Tensor};

/// Files larger than this are not read (no image of a training set comes
/// near; a device or a huge file named `.jpg` must not fill memory).
pub const MAX_FILE_BYTES: u64 = 256 << 20;

/// Files decoded (and then passed through the backbone) at a time.
const CHUNK: usize = 32;

/// What the pass found of one file.
#[derive(Debug, Clone)]
pub struct Inspected {
    /// SHA-256 of the bytes; none when the file could not be read.
    pub sha256: Option<[u8; 32]>,
    /// The perceptual hash, or why the file is not a usable image.
    pub phash: Result<u64, String>,
}

/// The frozen backbone that gives each image its feature vector.
pub struct FeatureModel {
    pub arch: Arch,
    pub weights: PathBuf,
    model: Classifier,
    pass: FrozenPass,
    sizing: Sizing,
}

impl FeatureModel {
    /// `arch` with the backbone of `weights`, on `device`.
    pub fn load(arch: Arch, weights: &Path, device: Device) -> Result<Self> {
        let mut model = Classifier::new(arch, 1, device);
        weights::load_backbone(&mut model, weights)?;
        let pass = FrozenPass { normalization: arch.normalization(), device, autocast: Autocast::Off };
        let sizing = Sizing::of(&arch.preprocessing(), None);
        Ok(Self { arch, weights: weights.to_owned(), model, pass, sizing })
    }

    /// Pooled features `[N, D]` (on the CPU) of `[N, 3, H, W]` images in [0, 1].
    fn features(&self, images: &Tensor) -> Tensor {
        backbone_features(&self.model, images, self.pass, "features", &Silent).to_device(Device::Cpu)
    }
}

/// The whole pass's results.
pub struct Pass {
    /// One per file, in order.
    pub files: Vec<Inspected>,
    /// Unit-length features `[readable, D]` of the files whose phash is
    /// `Ok`, in order; none without a model.
    pub features: Option<Tensor>,
    /// Seconds of the whole pass.
    pub seconds: f64,
}

/// Inspects `paths` in order; `model` gives features (none: hashes only).
/// A bar from `reporter` counts the files.
pub fn inspect(paths: &[PathBuf], model: Option<&FeatureModel>, reporter: &dyn Reporter) -> Result<Pass> {
    let started = Instant::now();
    let bar = reporter.bar(paths.len() as u64, if model.is_some() { "features" } else { "hashes" });
    let mut files = Vec::with_capacity(paths.len());
    let mut features = Vec::new();
    let sizing = model.map(|m| m.sizing);
    for chunk in paths.chunks(CHUNK) {
        let results: Vec<(Inspected, Option<Tensor>)> =
            chunk.par_iter().map(|path| inspect_file(path, sizing.as_ref())).collect();
        let pixels: Vec<Tensor> =
            results.iter().filter_map(|(_, pixels)| pixels.as_ref().map(|p| p.shallow_clone())).collect();
        if let (Some(model), false) = (model, pixels.is_empty()) {
            features.push(model.features(&Tensor::stack(&pixels, 0)));
        }
        files.extend(results.into_iter().map(|(inspected, _)| inspected));
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let features = match (model, features.is_empty()) {
        (Some(model), true) => Some(Tensor::zeros([0, model.arch.feature_count()], (tch::Kind::Float, Device::Cpu))),
        (Some(_), false) => Some(unit_rows(&Tensor::cat(&features, 0))),
        (None, _) => None,
    };
    Ok(Pass { files, features, seconds: started.elapsed().as_secs_f64() })
}

/// One file: its hashes, and its pixels through the val transform of
/// `sizing` when features are wanted.
fn inspect_file(path: &Path, sizing: Option<&Sizing>) -> (Inspected, Option<Tensor>) {
    let bytes = match read_bounded(path) {
        Ok(bytes) => bytes,
        Err(error) => return (Inspected { sha256: None, phash: Err(format!("{error:#}")) }, None),
    };
    let sha256 = Some(Sha256::digest(&bytes).into());
    match decode_rgb_bytes(&bytes) {
        Ok(rgb) => {
            let pixels = sizing.map(|sizing| val_transform_sized(&image_tensor(&rgb), sizing));
            (Inspected { sha256, phash: Ok(phash(&rgb)) }, pixels)
        }
        Err(error) => (Inspected { sha256, phash: Err(format!("{error:#}")) }, None),
    }
}

/// The file's bytes, refusing a file that is not a regular one (a device or
/// a pipe named `.jpg` could be endless) or holds more than
/// [`MAX_FILE_BYTES`] (read through that limit too, should it grow).
pub fn read_bounded(path: &Path) -> Result<Vec<u8>> {
    let metadata = std::fs::metadata(path).context("cannot read")?;
    if !metadata.is_file() {
        anyhow::bail!("not a regular file: not read");
    }
    if metadata.len() > MAX_FILE_BYTES {
        anyhow::bail!("larger than {} MB: not read", MAX_FILE_BYTES >> 20);
    }
    let file = std::fs::File::open(path).context("cannot open")?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes).context("cannot read")?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        anyhow::bail!("larger than {} MB: not read", MAX_FILE_BYTES >> 20);
    }
    Ok(bytes)
}

/// Each row divided by its length (zero rows stay zero).
fn unit_rows(features: &Tensor) -> Tensor {
    features / features.norm_scalaropt_dim(2.0, [1], true).clamp_min(1e-12)
}
