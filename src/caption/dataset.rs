//! A captioning dataset in memory, whichever way it came in: per split, one
//! feature row per image (a vector, or a grid of locations), the captions as
//! fixed-length token rows, the image of each caption, and where each image
//! can be seen (for figures).

use super::vocab::Vocabulary;
use anyhow::{bail, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::collections::HashMap;
use std::path::PathBuf;
use tch::{Kind, Tensor};

/// Where an image of the dataset can be found, if anywhere.
#[derive(Debug, Clone, PartialEq)]
pub enum ImageSource {
    File(PathBuf),
    /// Only its address is known (the course's `*_urls.txt`): nothing is downloaded.
    Url(String),
    Unknown,
}

pub struct CaptionSplit {
    pub name: String,
    /// `[images, D]` pooled features (f32), or `[images, L, C]` grid
    /// features over L locations (f16, made f32 per batch where used).
    pub features: Tensor,
    /// `[captions, T]` token rows, int64.
    pub captions: Tensor,
    /// `[captions]`, the row of `features` each caption describes.
    pub image_of_caption: Tensor,
    /// One per image.
    pub sources: Vec<ImageSource>,
}

pub struct CaptionData {
    pub vocab: Vocabulary,
    pub train: CaptionSplit,
    pub val: CaptionSplit,
    /// Words per caption at most (the token rows are two longer).
    pub max_words: usize,
}

impl CaptionSplit {
    pub fn num_captions(&self) -> usize {
        self.captions.size()[0] as usize
    }

    pub fn num_images(&self) -> usize {
        self.features.size()[0] as usize
    }

    /// The width of a feature vector: D, or a grid location's C.
    pub fn feature_width(&self) -> i64 {
        *self.features.size().last().expect("features with dimensions")
    }

    /// Pooled f32 features `[rows, D]` of the images `rows`: a grid is
    /// averaged over its locations (in chunks, so only a chunk of the grid
    /// is ever f32 at once).
    pub fn pooled_features(&self, rows: &[i64]) -> Tensor {
        let pooled: Vec<Tensor> = rows
            .chunks(POOL_CHUNK)
            .map(|chunk| {
                let features = self.features.index_select(0, &Tensor::from_slice(chunk)).to_kind(Kind::Float);
                match features.dim() {
                    3 => features.mean_dim([1i64].as_slice(), false, Kind::Float),
                    _ => features,
                }
            })
            .collect();
        match pooled.is_empty() {
            true => Tensor::zeros([0, self.feature_width()], (Kind::Float, self.features.device())),
            false => Tensor::cat(&pooled, 0),
        }
    }

    /// Every token a valid vocabulary index and every image index a row of
    /// `features`: checked once, so training can index without fear.
    pub fn validate(&self, vocab: &Vocabulary) -> Result<()> {
        let name = &self.name;
        if self.captions.dim() != 2 || self.captions.size()[1] < 2 {
            bail!("{name}_captions: expected [captions, tokens ≥ 2], found {:?}", self.captions.size());
        }
        if self.image_of_caption.size() != [self.captions.size()[0]] {
            bail!(
                "{name}_image_idxs: {:?} entries for {} captions",
                self.image_of_caption.size(),
                self.captions.size()[0]
            );
        }
        let size = self.features.size();
        if !(2..=3).contains(&size.len()) || size[1..].contains(&0) {
            bail!("{name} features: expected [images, D] or [images, locations, C], found {size:?}");
        }
        if self.sources.len() != self.num_images() {
            bail!("{name}: {} image sources for {} feature rows", self.sources.len(), self.num_images());
        }
        check_range(&self.captions, vocab.len() as i64, &format!("{name}_captions"), "the vocabulary's size")?;
        check_range(
            &self.image_of_caption,
            self.num_images() as i64,
            &format!("{name}_image_idxs"),
            "the feature rows",
        )?;
        Ok(())
    }

    /// The first `max` captions of a seeded shuffle (the course's
    /// `max_train`); all when there are fewer.
    pub fn subsample(mut self, max: usize, seed: u64) -> Self {
        if max >= self.num_captions() {
            return self;
        }
        let mut order: Vec<i64> = (0..self.num_captions() as i64).collect();
        order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
        let keep = Tensor::from_slice(&order[..max]);
        self.captions = self.captions.index_select(0, &keep);
        self.image_of_caption = self.image_of_caption.index_select(0, &keep);
        self
    }

    /// The images that have at least one caption, each once, in order.
    pub fn captioned_images(&self) -> Vec<i64> {
        let mut images: Vec<i64> = self.rows_by_image().into_keys().collect();
        images.sort_unstable();
        images
    }

    /// The caption rows of each captioned image, in order.
    pub fn rows_by_image(&self) -> HashMap<i64, Vec<i64>> {
        let images = Vec::<i64>::try_from(&self.image_of_caption).expect("int64 image indices");
        let mut rows: HashMap<i64, Vec<i64>> = HashMap::new();
        for (row, image) in images.into_iter().enumerate() {
            rows.entry(image).or_default().push(row as i64);
        }
        rows
    }

    /// The token rows `rows` as words.
    pub fn decode(&self, rows: &[i64], vocab: &Vocabulary) -> Vec<String> {
        rows.iter().map(|&r| vocab.decode(&Vec::<i64>::try_from(self.captions.get(r)).expect("int64 tokens"))).collect()
    }
}

/// Images whose grid is made f32 at once by [`CaptionSplit::pooled_features`].
const POOL_CHUNK: usize = 256;

fn check_range(values: &Tensor, bound: i64, what: &str, bound_name: &str) -> Result<()> {
    if values.numel() == 0 {
        return Ok(());
    }
    let (low, high) = (values.min().int64_value(&[]), values.max().int64_value(&[]));
    if low < 0 || high >= bound {
        bail!("{what}: values from {low} to {high}, outside 0..{bound} ({bound_name})");
    }
    Ok(())
}

/// `[N, T]` int64 from fixed-length rows.
pub fn token_rows(rows: &[Vec<i64>], length: usize) -> Tensor {
    let flat: Vec<i64> = rows.iter().flatten().copied().collect();
    Tensor::from_slice(&flat).reshape([rows.len() as i64, length as i64]).to_kind(Kind::Int64)
}
