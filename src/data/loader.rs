//! Turns an [`ImageFolder`] into batches: every image is decoded once per run
//! (in parallel, bad files reported and dropped) and kept in memory as uint8
//! within a [`PixelBudget`], then augmented per epoch on the rayon pool.
//! Validation images are transformed once, since their transform is
//! deterministic.

use super::augment::draw::{SampleDraw, Spaces};
use super::augment::AugmentRecipe;
use super::decode::{decode_rgb_bytes, read_and_decode};
use super::image_folder::ImageFolder;
use super::sampler::Sampler;
use super::transforms::{draw_augmentation, train_pixels, train_transform, val_transform_sized, Augmentation, Sizing};
use anyhow::{bail, Result};
use image::RgbImage;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::borrow::Cow;
use std::path::PathBuf;
use tch::{Kind, Tensor};

/// A file that could not be used, and why.
#[derive(Debug, Clone)]
pub struct BadFile {
    pub path: PathBuf,
    pub reason: String,
}

/// Memory that decoded images may take (`--cache-mb`). It is spent in load
/// order (the train split first: its images are reused every epoch); images
/// beyond it are held as their file's bytes and decoded again at each use,
/// which is slower but gives the same pixels.
#[derive(Debug, Clone, Copy)]
pub struct PixelBudget {
    remaining_bytes: u64,
}

/// The budget unless given: ants/bees takes 233 MB decoded.
pub const DEFAULT_PIXEL_BUDGET_MB: u64 = 4096;

impl Default for PixelBudget {
    fn default() -> Self {
        Self::megabytes(DEFAULT_PIXEL_BUDGET_MB)
    }
}

impl PixelBudget {
    pub fn megabytes(mb: u64) -> Self {
        Self { remaining_bytes: mb.saturating_mul(1 << 20) }
    }

    /// Spends `bytes` if that many are left.
    fn take(&mut self, bytes: u64) -> bool {
        let fits = bytes <= self.remaining_bytes;
        if fits {
            self.remaining_bytes -= bytes;
        }
        fits
    }
}

/// How one image is held in memory.
enum Held {
    Pixels(RgbImage),
    /// The file's bytes, which decoded without error when the split was loaded.
    Encoded(Vec<u8>),
}

/// Images decoded per round of [`DecodedSplit::decode`]: bounds the memory
/// of images decoded but not yet kept or dropped.
const DECODE_ROUND: usize = 256;

/// The images of one split as 8-bit RGB (shareable across threads, unlike
/// tensors): decoded pixels within the [`PixelBudget`], file bytes beyond it.
pub struct DecodedSplit {
    held: Vec<Held>,
    /// (width, height) of each image.
    dimensions: Vec<(u32, u32)>,
    /// Each image's class (of multi-label data: its first class).
    pub labels: Vec<i64>,
    /// Multi-label data: each image's classes, ascending; none for single-label data.
    pub label_sets: Option<Vec<Vec<usize>>>,
    pub paths: Vec<PathBuf>,
    pub classes: Vec<String>,
    pub bad_files: Vec<BadFile>,
    /// How the transforms size images (`--image-size`, the backbone's resize and interpolation).
    pub sizing: Sizing,
    /// What training samples get beyond the crop and flip.
    pub augment: AugmentRecipe,
    /// The [0, 1] value of each channel that normalizes to 0 (random erasing's fill).
    pub erase_fill: [f32; 3],
    /// Which samples an epoch visits (`--sampler`).
    pub sampler: Sampler,
}

impl DecodedSplit {
    /// Decodes every sample of `folder` in parallel, keeping pixels while
    /// `budget` lasts. With `strict`, the first undecodable file (in folder
    /// order) is an error.
    pub fn decode(
        folder: &ImageFolder,
        strict: bool,
        budget: &mut PixelBudget,
        progress: &indicatif::ProgressBar,
    ) -> Result<Self> {
        let mut split = DecodedSplit {
            held: Vec::new(),
            dimensions: Vec::new(),
            labels: Vec::new(),
            label_sets: folder.is_multi_label().then(Vec::new),
            paths: Vec::new(),
            classes: folder.classes.clone(),
            bad_files: Vec::new(),
            sizing: Sizing::TUTORIAL,
            augment: AugmentRecipe::TUTORIAL,
            erase_fill: [0.0; 3],
            sampler: Sampler::Shuffle,
        };
        for round in folder.samples.chunks(DECODE_ROUND) {
            let results: Vec<_> = round
                .par_iter()
                .map(|sample| {
                    let decoded = read_and_decode(&sample.path);
                    progress.inc(1);
                    decoded
                })
                .collect();
            for (sample, decoded) in round.iter().zip(results) {
                match decoded {
                    Ok((bytes, rgb)) => {
                        split.dimensions.push(rgb.dimensions());
                        let held = if budget.take(rgb.as_raw().len() as u64) {
                            Held::Pixels(rgb)
                        } else {
                            Held::Encoded(bytes)
                        };
                        split.held.push(held);
                        split.labels.push(sample.class_index as i64);
                        if let (Some(sets), Some(set)) = (&mut split.label_sets, &sample.label_set) {
                            sets.push(set.clone());
                        }
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
        }
        for path in &folder.ignored {
            split.bad_files.push(BadFile {
                path: path.clone(),
                reason: "not an image extension torchvision's ImageFolder accepts".into(),
            });
        }
        if split.held.is_empty() {
            bail!("{}: no decodable images", folder.root.display());
        }
        Ok(split)
    }

    /// Image `i`'s pixels: borrowed when held decoded, decoded now otherwise.
    pub fn rgb(&self, i: usize) -> Cow<'_, RgbImage> {
        match &self.held[i] {
            Held::Pixels(rgb) => Cow::Borrowed(rgb),
            Held::Encoded(bytes) => Cow::Owned(
                // The same bytes decoded without error when the split was loaded.
                decode_rgb_bytes(bytes)
                    .unwrap_or_else(|e| panic!("{}: decoded once, not now: {e:#}", self.paths[i].display())),
            ),
        }
    }

    /// Image `i`'s (width, height).
    pub fn dimensions(&self, i: usize) -> (u32, u32) {
        self.dimensions[i]
    }

    /// Bytes of decoded pixels held, and how many images are held encoded.
    pub fn memory(&self) -> (u64, usize) {
        self.held.iter().fold((0, 0), |(bytes, encoded), held| match held {
            Held::Pixels(rgb) => (bytes + rgb.as_raw().len() as u64, encoded),
            Held::Encoded(_) => (bytes, encoded + 1),
        })
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// The whole split through the validation transform, `[N, 3, 224, 224]`
    /// in [0, 1] (before normalization).
    pub fn val_tensor(&self) -> Tensor {
        self.val_tensor_of(&(0..self.len()).collect::<Vec<_>>())
    }

    /// Images `rows` (in that order) through the validation transform, as
    /// [`DecodedSplit::val_tensor`].
    pub fn val_tensor_of(&self, rows: &[usize]) -> Tensor {
        let transformed: Vec<Tensor> =
            rows.par_iter().map(|&i| val_transform_sized(&image_tensor(&self.rgb(i)), &self.sizing)).collect();
        Tensor::stack(&transformed, 0)
    }

    /// The split's targets: class indices `[N]` (int64), or for
    /// multi-label data multi-hot rows `[N, classes]` (float, 1 where the
    /// image has the class).
    pub fn labels_tensor(&self) -> Tensor {
        self.targets(0..self.len())
    }

    /// The targets of the images `indices`, as [`DecodedSplit::labels_tensor`].
    pub fn targets(&self, indices: impl Iterator<Item = usize>) -> Tensor {
        match &self.label_sets {
            None => Tensor::from_slice(&indices.map(|i| self.labels[i]).collect::<Vec<i64>>()),
            Some(sets) => {
                let classes = self.classes.len();
                let mut rows = Vec::new();
                for i in indices {
                    let start = rows.len();
                    rows.resize(start + classes, 0f32);
                    sets[i].iter().for_each(|&class| rows[start + class] = 1.0);
                }
                Tensor::from_slice(&rows).view([-1, classes as i64])
            }
        }
    }

    pub fn is_multi_label(&self) -> bool {
        self.label_sets.is_some()
    }
}

/// The positions in a sequence of `len` items that process `rank` of
/// `world` takes, as torch's `DistributedSampler` takes them: the sequence
/// padded with its first items (again from the start while short) to a
/// multiple of `world`, then every `world`-th from `rank`. Every process gets
/// `len.div_ceil(world)` positions.
pub fn rank_share(len: usize, rank: usize, world: usize) -> Vec<usize> {
    let per_rank = len.div_ceil(world);
    (0..per_rank).map(|i| (i * world + rank) % len.max(1)).collect()
}

/// One epoch's plan for the training split: the samples in order (by the
/// split's [`Sampler`]) and each one's augmentation, all drawn from an RNG
/// seeded by (seed, epoch), so that any epoch can be replayed exactly, e.g.
/// after a resume.
pub struct EpochPlan {
    pub order: Vec<usize>,
    pub augmentations: Vec<Augmentation>,
    /// Each sample's draws beyond the crop and flip; empty under the
    /// tutorial recipe, which draws nothing more.
    pub extras: Vec<SampleDraw>,
}

impl EpochPlan {
    pub fn draw(split: &DecodedSplit, seed: u64, epoch: usize) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(1_000_003).wrapping_add(epoch as u64));
        let order = split.sampler.order(&split.labels, &mut rng);
        let size = split.sizing.size;
        let spaces = (!split.augment.is_tutorial()).then(|| Spaces::new(&split.augment, size));
        let (mut augmentations, mut extras) = (Vec::new(), Vec::new());
        for &i in &order {
            let (w, h) = split.dimensions(i);
            augmentations.push(draw_augmentation(h as i64, w as i64, &mut rng));
            if let Some(spaces) = &spaces {
                extras.push(spaces.draw(size, &mut rng));
            }
        }
        Self { order, augmentations, extras }
    }

    /// The plan of process `rank` of `world` in a data-parallel run: its
    /// share of the order ([`rank_share`]), each sample keeping the
    /// augmentation drawn for it.
    pub fn shard(&self, rank: usize, world: usize) -> Self {
        let share = rank_share(self.order.len(), rank, world);
        Self {
            order: share.iter().map(|&k| self.order[k]).collect(),
            augmentations: share.iter().map(|&k| self.augmentations[k]).collect(),
            extras: share.iter().filter_map(|&k| self.extras.get(k).cloned()).collect(),
        }
    }

    /// Batch `b` of the epoch: `[B, 3, 224, 224]` in [0, 1] and labels `[B]`,
    /// its images augmented on the rayon pool.
    pub fn batch(&self, split: &DecodedSplit, batch_size: usize, b: usize) -> (Tensor, Tensor) {
        let range = self.batch_range(batch_size, b);
        let images: Vec<Tensor> = range.clone().into_par_iter().map(|k| self.augmented(split, k)).collect();
        let mut images = Tensor::stack(&images, 0);
        self.erase(split, &mut images, range.clone());
        (images, self.labels(split, range))
    }

    /// [`EpochPlan::batch`] on the calling thread alone.
    pub fn batch_here(&self, split: &DecodedSplit, batch_size: usize, b: usize) -> (Tensor, Tensor) {
        let range = self.batch_range(batch_size, b);
        let images: Vec<Tensor> = range.clone().map(|k| self.augmented(split, k)).collect();
        let mut images = Tensor::stack(&images, 0);
        self.erase(split, &mut images, range.clone());
        (images, self.labels(split, range))
    }

    fn batch_range(&self, batch_size: usize, b: usize) -> std::ops::Range<usize> {
        let start = b * batch_size;
        start..(start + batch_size).min(self.order.len())
    }

    /// The `k`-th image of the epoch, augmented (before erasing), in [0, 1].
    fn augmented(&self, split: &DecodedSplit, k: usize) -> Tensor {
        match self.extras.get(k) {
            Some(_) => self.augmented_pixels(split, k).to_kind(Kind::Float) / 255.0,
            None => train_transform(&image_tensor(&split.rgb(self.order[k])), &self.augmentations[k], &split.sizing),
        }
    }

    /// The `k`-th image of the epoch, augmented (before erasing), as uint8.
    fn augmented_pixels(&self, split: &DecodedSplit, k: usize) -> Tensor {
        let pixels = train_pixels(&image_tensor(&split.rgb(self.order[k])), &self.augmentations[k], &split.sizing);
        match self.extras.get(k) {
            Some(extra) => super::augment::apply(pixels, extra),
            None => pixels,
        }
    }

    /// Random erasing of the epoch's images `range` (in plan order), given
    /// as `images` in [0, 1]: each drawn box set to the value that normalizes to 0.
    pub fn erase(&self, split: &DecodedSplit, images: &mut Tensor, range: std::ops::Range<usize>) {
        if self.extras.is_empty() {
            return;
        }
        let boxes: Vec<_> = range.map(|k| self.extras[k].erase).collect();
        super::augment::erase(images, &boxes, split.erase_fill);
    }

    /// The targets of the epoch's images `range`, in plan order (as
    /// [`DecodedSplit::labels_tensor`]).
    pub fn labels(&self, split: &DecodedSplit, range: std::ops::Range<usize>) -> Tensor {
        split.targets(range.map(|k| self.order[k]))
    }

    /// The epoch's images `range` (in plan order) augmented (before erasing:
    /// [`EpochPlan::erase`]), as `[N, 3, 224, 224]` uint8 pixels (the 0–255 values [`train_transform`] scales to [0, 1]),
    /// computed on the rayon pool.
    pub fn pixels(&self, split: &DecodedSplit, range: std::ops::Range<usize>) -> Tensor {
        let images: Vec<Tensor> = range.into_par_iter().map(|k| self.augmented_pixels(split, k)).collect();
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

#[cfg(test)]
mod tests {
    use super::rank_share;

    #[test]
    fn ranks_share_as_torchs_distributed_sampler_does() {
        assert_eq!(rank_share(10, 0, 2), [0, 2, 4, 6, 8]);
        assert_eq!(rank_share(10, 1, 2), [1, 3, 5, 7, 9]);
        // Padded with the first items to a multiple of the world size.
        assert_eq!(rank_share(5, 0, 2), [0, 2, 4]);
        assert_eq!(rank_share(5, 1, 2), [1, 3, 0]);
        // Fewer items than processes: again from the start.
        let shares: Vec<Vec<usize>> = (0..4).map(|rank| rank_share(2, rank, 4)).collect();
        assert_eq!(shares, [[0], [1], [0], [1]]);
        assert_eq!(rank_share(7, 0, 1), (0..7).collect::<Vec<_>>());
        assert!(rank_share(0, 1, 2).is_empty());
    }
}
