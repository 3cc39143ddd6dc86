//! Turns an [`ImageFolder`] into batches: every image is decoded once per run
//! (in parallel, bad files reported and dropped), kept in memory as uint8,
//! and augmented per epoch on the rayon pool. Validation images are
//! transformed once, since their transform is deterministic.

use super::decode::decode_rgb;
use super::image_folder::ImageFolder;
use super::transforms::{draw_augmentation, train_pixels, train_transform, val_transform, Augmentation};
use anyhow::{bail, Result};
use image::RgbImage;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::path::PathBuf;
use tch::{Kind, Tensor};

/// A file that could not be used, and why.
#[derive(Debug, Clone)]
pub struct BadFile {
    pub path: PathBuf,
    pub reason: String,
}

/// The decoded images of one split, kept as 8-bit RGB pixels (shareable
/// across threads, unlike tensors).
pub struct DecodedSplit {
    pub images: Vec<RgbImage>,
    pub labels: Vec<i64>,
    pub paths: Vec<PathBuf>,
    pub classes: Vec<String>,
    pub bad_files: Vec<BadFile>,
}

impl DecodedSplit {
    /// Decodes every sample of `folder` in parallel. With `strict`, the first
    /// undecodable file (in folder order) is an error.
    pub fn decode(folder: &ImageFolder, strict: bool, progress: &indicatif::ProgressBar) -> Result<Self> {
        let results: Vec<_> = folder
            .samples
            .par_iter()
            .map(|sample| {
                let decoded = decode_rgb(&sample.path);
                progress.inc(1);
                decoded
            })
            .collect();
        let mut split = DecodedSplit {
            images: Vec::new(),
            labels: Vec::new(),
            paths: Vec::new(),
            classes: folder.classes.clone(),
            bad_files: Vec::new(),
        };
        for (sample, decoded) in folder.samples.iter().zip(results) {
            match decoded {
                Ok(rgb) => {
                    split.images.push(rgb);
                    split.labels.push(sample.class_index as i64);
                    split.paths.push(sample.path.clone());
                }
                Err(err) => {
                    let reason = format!("{:#}", err);
                    if strict {
                        bail!("bad image (--strict): {reason}");
                    }
                    split.bad_files.push(BadFile { path: sample.path.clone(), reason });
                }
            }
        }
        for path in &folder.ignored {
            split.bad_files.push(BadFile {
                path: path.clone(),
                reason: "not an image extension torchvision's ImageFolder accepts; skipped".into(),
            });
        }
        if split.images.is_empty() {
            bail!("{}: no decodable images", folder.root.display());
        }
        Ok(split)
    }

    pub fn len(&self) -> usize {
        self.images.len()
    }

    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    /// The whole split through the validation transform, `[N, 3, 224, 224]`
    /// in [0, 1] (before normalization).
    pub fn val_tensor(&self) -> Tensor {
        let transformed: Vec<Tensor> = self.images.par_iter().map(|rgb| val_transform(&image_tensor(rgb))).collect();
        Tensor::stack(&transformed, 0)
    }

    pub fn labels_tensor(&self) -> Tensor {
        Tensor::from_slice(&self.labels)
    }
}

/// One epoch's plan for the training split: the sample order and each
/// sample's augmentation, all drawn from an RNG seeded by (seed, epoch), so
/// that any epoch can be replayed exactly, e.g. after a resume.
pub struct EpochPlan {
    pub order: Vec<usize>,
    pub augmentations: Vec<Augmentation>,
}

impl EpochPlan {
    pub fn draw(split: &DecodedSplit, seed: u64, epoch: usize) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(1_000_003).wrapping_add(epoch as u64));
        let mut order: Vec<usize> = (0..split.len()).collect();
        order.shuffle(&mut rng);
        let augmentations = order
            .iter()
            .map(|&i| {
                let (w, h) = split.images[i].dimensions();
                draw_augmentation(h as i64, w as i64, &mut rng)
            })
            .collect();
        Self { order, augmentations }
    }

    /// Batch `b` of the epoch: `[B, 3, 224, 224]` in [0, 1] and labels `[B]`,
    /// its images augmented on the rayon pool.
    pub fn batch(&self, split: &DecodedSplit, batch_size: usize, b: usize) -> (Tensor, Tensor) {
        let range = self.batch_range(batch_size, b);
        let images: Vec<Tensor> = range.clone().into_par_iter().map(|k| self.augmented(split, k)).collect();
        (Tensor::stack(&images, 0), self.labels(split, range))
    }

    /// [`EpochPlan::batch`] on the calling thread alone.
    pub fn batch_here(&self, split: &DecodedSplit, batch_size: usize, b: usize) -> (Tensor, Tensor) {
        let range = self.batch_range(batch_size, b);
        let images: Vec<Tensor> = range.clone().map(|k| self.augmented(split, k)).collect();
        (Tensor::stack(&images, 0), self.labels(split, range))
    }

    fn batch_range(&self, batch_size: usize, b: usize) -> std::ops::Range<usize> {
        let start = b * batch_size;
        start..(start + batch_size).min(self.order.len())
    }

    /// The `k`-th image of the epoch, augmented.
    fn augmented(&self, split: &DecodedSplit, k: usize) -> Tensor {
        train_transform(&image_tensor(&split.images[self.order[k]]), &self.augmentations[k])
    }

    fn labels(&self, split: &DecodedSplit, range: std::ops::Range<usize>) -> Tensor {
        Tensor::from_slice(&range.map(|k| split.labels[self.order[k]]).collect::<Vec<i64>>())
    }

    /// Every image of the epoch augmented, in plan order, as `[N, 3, 224, 224]`
    /// uint8 pixels (the 0–255 values [`train_transform`] scales to [0, 1]),
    /// computed on the rayon pool.
    pub fn all_pixels(&self, split: &DecodedSplit) -> Tensor {
        let images: Vec<Tensor> = (0..self.order.len())
            .into_par_iter()
            .map(|k| train_pixels(&image_tensor(&split.images[self.order[k]]), &self.augmentations[k]))
            .collect();
        Tensor::stack(&images, 0)
    }

    /// The labels of the whole epoch, in plan order.
    pub fn all_labels(&self, split: &DecodedSplit) -> Tensor {
        self.labels(split, 0..self.order.len())
    }

    pub fn num_batches(&self, batch_size: usize) -> usize {
        self.order.len().div_ceil(batch_size)
    }
}

/// An RGB image as a `[3, H, W]` uint8 tensor.
pub fn image_tensor(rgb: &RgbImage) -> Tensor {
    let (w, h) = rgb.dimensions();
    Tensor::from_data_size(rgb.as_raw(), &[h as i64, w as i64, 3], Kind::Uint8).permute([2, 0, 1])
}
