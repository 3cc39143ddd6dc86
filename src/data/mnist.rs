//! MNIST from its IDX files (gzip-compressed or not): images as `[N, 784]`
//! floats normalized with MNIST's mean/std, labels as int64, and the
//! seeded 50,000/10,000 train/val split of the training file.

use anyhow::{bail, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::io::Read;
use std::path::Path;
use tch::{Kind, Tensor};

pub const MEAN: f64 = 0.1307;
pub const STD: f64 = 0.3081;
const IMAGES_MAGIC: u32 = 2051;
const LABELS_MAGIC: u32 = 2049;

/// Images `[N, 784]` (normalized) and labels `[N]`.
pub struct Split {
    pub images: Tensor,
    pub labels: Tensor,
}

impl Split {
    pub fn len(&self) -> usize {
        self.labels.size()[0] as usize
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub struct Mnist {
    pub train: Split,
    pub val: Split,
    pub test: Split,
}

/// Images of the training file held out for validation.
pub const VAL_SIZE: usize = 10_000;

/// Loads `dir/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`, holds out
/// [`VAL_SIZE`] shuffled training images (by `seed`) for validation, and keeps
/// at most `train_limit` of the rest for training (all 50,000 when `None`).
pub fn load(dir: &Path, seed: u64, train_limit: Option<usize>) -> Result<Mnist> {
    let train_all = load_pair(dir, "train")?;
    let test = load_pair(dir, "t10k")?;
    let n = train_all.len();
    if n <= VAL_SIZE {
        bail!(
            "the training file holds {n} images; at least {} are needed for a {VAL_SIZE}-image validation split",
            VAL_SIZE + 1
        );
    }
    let mut order: Vec<i64> = (0..n as i64).collect();
    order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    let (train_part, val_part) = order.split_at(n - VAL_SIZE);
    let train_part = &train_part[..train_limit.unwrap_or(usize::MAX).min(train_part.len())];
    let take = |range: &[i64]| {
        let index = Tensor::from_slice(range);
        Split { images: train_all.images.index_select(0, &index), labels: train_all.labels.index_select(0, &index) }
    };
    Ok(Mnist { train: take(train_part), val: take(val_part), test })
}

/// The 8-bit pixels and labels of one IDX file pair, as stored.
pub struct RawDigits {
    /// `count × rows × cols` bytes, image after image.
    pub pixels: Vec<u8>,
    pub labels: Vec<u8>,
    pub rows: usize,
    pub cols: usize,
}

/// Reads `dir/{prefix}-images-idx3-ubyte[.gz]` and its labels file, checked
/// to hold as many images as labels.
pub fn read_pair(dir: &Path, prefix: &str) -> Result<RawDigits> {
    let images_path = find(dir, &format!("{prefix}-images-idx3-ubyte"))?;
    let labels_path = find(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
    let (pixels, rows, cols) = read_images(&images_path)?;
    let labels = read_labels(&labels_path)?;
    if pixels.len() != labels.len() * rows * cols {
        bail!(
            "{} holds {} images but {} holds {} labels",
            images_path.display(),
            pixels.len() / (rows * cols).max(1),
            labels_path.display(),
            labels.len()
        );
    }
    Ok(RawDigits { pixels, labels, rows, cols })
}

fn load_pair(dir: &Path, prefix: &str) -> Result<Split> {
    let raw = read_pair(dir, prefix)?;
    let count = raw.labels.len() as i64;
    let images =
        Tensor::from_slice(&raw.pixels).view([count, (raw.rows * raw.cols) as i64]).to_kind(Kind::Float) / 255.0;
    let labels = Tensor::from_slice(&raw.labels).to_kind(Kind::Int64);
    Ok(Split { images: (images - MEAN) / STD, labels })
}

fn find(dir: &Path, stem: &str) -> Result<std::path::PathBuf> {
    for name in [format!("{stem}.gz"), stem.to_owned()] {
        let path = dir.join(name);
        if path.exists() {
            return Ok(path);
        }
    }
    bail!("{}: not found (run scripts/fetch-data.sh)", dir.join(format!("{stem}.gz")).display())
}

/// The whole file, gunzipped when it is gzip.
fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .with_context(|| format!("{}: corrupt gzip data", path.display()))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn header(bytes: &[u8], path: &Path, words: usize) -> Result<Vec<u32>> {
    if bytes.len() < 4 * words {
        bail!("{}: file too short for an IDX header ({} bytes)", path.display(), bytes.len());
    }
    Ok((0..words).map(|i| u32::from_be_bytes(bytes[4 * i..4 * i + 4].try_into().unwrap())).collect())
}

/// Pixels, rows, cols of an IDX3 image file.
pub fn read_images(path: &Path) -> Result<(Vec<u8>, usize, usize)> {
    let bytes = read_bytes(path)?;
    let h = header(&bytes, path, 4)?;
    if h[0] != IMAGES_MAGIC {
        bail!("{}: magic number {} is not an IDX image file's ({IMAGES_MAGIC})", path.display(), h[0]);
    }
    let (count, rows, cols) = (h[1] as usize, h[2] as usize, h[3] as usize);
    let expected = 16 + count * rows * cols;
    if bytes.len() != expected {
        bail!(
            "{}: header says {count} images of {rows}x{cols} ({expected} bytes) but the file has {} bytes",
            path.display(),
            bytes.len()
        );
    }
    Ok((bytes[16..].to_vec(), rows, cols))
}

/// Labels of an IDX1 label file.
pub fn read_labels(path: &Path) -> Result<Vec<u8>> {
    let bytes = read_bytes(path)?;
    let h = header(&bytes, path, 2)?;
    if h[0] != LABELS_MAGIC {
        bail!("{}: magic number {} is not an IDX label file's ({LABELS_MAGIC})", path.display(), h[0]);
    }
    let count = h[1] as usize;
    if bytes.len() != 8 + count {
        bail!("{}: header says {count} labels but the file has {} bytes after it", path.display(), bytes.len() - 8);
    }
    if let Some(bad) = bytes[8..].iter().find(|&&l| l > 9) {
        bail!("{}: label {bad} is not a digit", path.display());
    }
    Ok(bytes[8..].to_vec())
}
