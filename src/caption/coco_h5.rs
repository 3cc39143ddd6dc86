//! The course's `coco_captioning/` folder, read as published: captions and
//! image indices from `coco2014_captions.h5`, VGG-16 fc7 PCA features from
//! `{train,val}2014_vgg16_fc7_pca.h5`, the vocabulary from
//! `coco2014_vocab.json`, image addresses from `{train,val}2014_urls.txt`
//! (kept as addresses: nothing is downloaded; an image found under
//! `--image-dir` by its file name is shown in figures).

use super::dataset::{CaptionData, CaptionSplit, ImageSource};
use super::vocab::Vocabulary;
use anyhow::{bail, Context, Result};
use hdf5_metno as hdf5;
use std::path::Path;
use tch::Tensor;

const CAPTIONS_FILE: &str = "coco2014_captions.h5";
const VOCAB_FILE: &str = "coco2014_vocab.json";

/// Whether `dir` looks like the course's folder.
pub fn is_course_folder(dir: &Path) -> bool {
    dir.join(CAPTIONS_FILE).is_file()
}

/// The course's folder: both splits, train cut to `max_train` captions
/// (seeded) when given.
pub fn load(dir: &Path, max_train: Option<usize>, seed: u64, image_dir: Option<&Path>) -> Result<CaptionData> {
    let vocab = Vocabulary::read_course_json(&dir.join(VOCAB_FILE))?;
    let captions_path = dir.join(CAPTIONS_FILE);
    let captions_file = open(&captions_path)?;
    let mut splits = Vec::new();
    for name in ["train", "val"] {
        let captions = read_dataset::<i32>(&captions_file, &captions_path, &format!("{name}_captions"))?;
        let image_idxs = read_dataset::<i32>(&captions_file, &captions_path, &format!("{name}_image_idxs"))?;
        let features_path = dir.join(format!("{name}2014_vgg16_fc7_pca.h5"));
        let features = read_dataset::<f32>(&open(&features_path)?, &features_path, "features")?;
        let urls = read_urls(&dir.join(format!("{name}2014_urls.txt")))?;
        let sources = image_sources(urls, features.size()[0] as usize, image_dir);
        let split = CaptionSplit {
            name: name.to_string(),
            features,
            captions: captions.to_kind(tch::Kind::Int64),
            image_of_caption: image_idxs.to_kind(tch::Kind::Int64).reshape([-1]),
            sources,
        };
        split.validate(&vocab).with_context(|| format!("{}", captions_path.display()))?;
        splits.push(split);
    }
    let val = splits.pop().expect("two splits");
    let mut train = splits.pop().expect("two splits");
    if let Some(max) = max_train {
        train = train.subsample(max, seed);
    }
    let max_words = train.captions.size()[1] as usize - 2;
    Ok(CaptionData { vocab, train, val, max_words })
}

fn open(path: &Path) -> Result<hdf5::File> {
    hdf5::File::open(path).map_err(|e| anyhow::anyhow!("{}: not a readable HDF5 file ({e})", path.display()))
}

/// A numeric dataset as a tensor of its shape, its declared size checked
/// against the file's before anything is allocated.
fn read_dataset<T: hdf5::H5Type + tch::kind::Element>(file: &hdf5::File, path: &Path, name: &str) -> Result<Tensor> {
    let dataset = file.dataset(name).map_err(|e| anyhow::anyhow!("{}: no dataset {name} ({e})", path.display()))?;
    let shape: Vec<i64> = dataset.shape().iter().map(|&d| d as i64).collect();
    let declared = shape.iter().try_fold(std::mem::size_of::<T>() as u64, |acc, &d| acc.checked_mul(d as u64));
    let file_len = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?.len();
    match declared {
        // Compression can make a dataset larger than its file, but not without bound.
        Some(bytes) if bytes <= file_len.saturating_mul(64).max(1 << 20) => {}
        _ => bail!("{}: dataset {name} declares shape {shape:?}, too large for a {file_len}-byte file", path.display()),
    }
    let values: Vec<T> = dataset.read_raw().map_err(|e| anyhow::anyhow!("{}: dataset {name}: {e}", path.display()))?;
    Ok(Tensor::from_slice(&values).reshape(shape))
}

fn read_urls(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text.lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect())
}

/// One source per feature row: the file under `image_dir` named as the
/// address ends, else the address; `Unknown` where the list is short.
fn image_sources(urls: Vec<String>, images: usize, image_dir: Option<&Path>) -> Vec<ImageSource> {
    let mut sources: Vec<ImageSource> = urls
        .into_iter()
        .take(images)
        .map(|url| {
            let local = image_dir.and_then(|dir| url.rsplit('/').next().map(|name| dir.join(name)));
            match local {
                Some(path) if path.is_file() => ImageSource::File(path),
                _ => ImageSource::Url(url),
            }
        })
        .collect();
    sources.resize(images, ImageSource::Unknown);
    sources
}
