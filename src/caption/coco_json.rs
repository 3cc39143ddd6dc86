//! An image folder captioned in the COCO format, the way a user brings their
//! own photos: `DIR/annotations/captions_train*.json` and
//! `captions_val*.json` (`images[{id, file_name}]`,
//! `annotations[{image_id, caption}]`), the images in `DIR/train*/` and
//! `DIR/val*/`. Captions are tokenized, the vocabulary is built from the
//! training captions, and the image features come from a [`Extractor`].

use super::dataset::{token_rows, CaptionData, CaptionSplit, ImageSource};
use super::features::{Extractor, Unreadable};
use super::vocab::{tokenize, Vocabulary};
use crate::report::Reporter;
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use tch::Tensor;

#[derive(Deserialize)]
struct CaptionsFile {
    images: Vec<ImageEntry>,
    annotations: Vec<Annotation>,
}

#[derive(Deserialize)]
struct ImageEntry {
    id: i64,
    file_name: String,
}

#[derive(Deserialize)]
struct Annotation {
    image_id: i64,
    caption: String,
}

/// One split as read from its files: image paths, and each caption's words
/// with the index of its image.
pub struct RawSplit {
    pub images: Vec<PathBuf>,
    pub captions: Vec<(usize, Vec<String>)>,
}

/// How the folder's captions become token rows.
#[derive(Debug, Clone, Copy)]
pub struct TextOptions {
    /// Words seen fewer times in the training captions are `<UNK>`.
    pub min_count: usize,
    /// Longer captions are cut to this many words.
    pub max_words: usize,
}

/// Reads both splits of `dir`, builds the vocabulary and computes (or reads
/// cached) features into `dir/features/`, with bars and notes to `reporter`.
pub fn load(dir: &Path, text: TextOptions, extractor: &Extractor, reporter: &dyn Reporter) -> Result<CaptionData> {
    check_caption_set(dir)?;
    let cache_dir = dir.join("features");
    let mut read = Vec::new();
    for name in ["train", "val"] {
        let raw = read_split(dir, name)?;
        let cache = extractor.cache_file(&cache_dir, name);
        let (features, unreadable) = extractor.features(&raw.images, &cache, name, reporter)?;
        read.push((name, raw.without(&unreadable, reporter), features));
    }
    let train_captions = read[0].1.captions.iter().map(|(_, words)| words.as_slice());
    let vocab = Vocabulary::build(train_captions, text.min_count);
    let mut splits =
        read.into_iter().map(|(name, raw, features)| encode_split(name, raw, features, &vocab, text.max_words));
    let (train, val) = (splits.next().expect("two splits"), splits.next().expect("two splits"));
    Ok(CaptionData { vocab, train, val, max_words: text.max_words })
}

/// A folder that is no caption set at all is one line saying what one
/// holds (rather than "reading DIR/annotations: No such file").
fn check_caption_set(dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        bail!("--data {}: not found", dir.display());
    }
    if !dir.join("annotations").is_dir() {
        bail!(
            "--data {}: not a caption set: it has no annotations/ folder (an image folder holds annotations/captions_train*.json, annotations/captions_val*.json, train*/ and val*/; the course's coco_captioning/ holds coco2014_captions.h5)",
            dir.display()
        );
    }
    Ok(())
}

impl RawSplit {
    /// The split without the images that do not decode and their captions,
    /// each said to `reporter` (as `finetune` skips an image it cannot read).
    fn without(self, unreadable: &[Unreadable], reporter: &dyn Reporter) -> Self {
        if unreadable.is_empty() {
            return self;
        }
        for image in unreadable {
            reporter.warning(&format!(
                "skipped {}: {} (and its captions)",
                self.images[image.index].display(),
                image.why
            ));
        }
        let dropped: HashSet<usize> = unreadable.iter().map(|u| u.index).collect();
        let mut new_index = vec![None; self.images.len()];
        let mut images = Vec::with_capacity(self.images.len() - dropped.len());
        for (old, path) in self.images.into_iter().enumerate() {
            if !dropped.contains(&old) {
                new_index[old] = Some(images.len());
                images.push(path);
            }
        }
        let captions =
            self.captions.into_iter().filter_map(|(image, words)| new_index[image].map(|new| (new, words))).collect();
        Self { images, captions }
    }
}

fn encode_split(name: &str, raw: RawSplit, features: Tensor, vocab: &Vocabulary, max_words: usize) -> CaptionSplit {
    let rows: Vec<Vec<i64>> = raw.captions.iter().map(|(_, words)| vocab.encode(words, max_words)).collect();
    let image_of_caption: Vec<i64> = raw.captions.iter().map(|&(image, _)| image as i64).collect();
    CaptionSplit {
        name: name.to_string(),
        features,
        captions: token_rows(&rows, max_words + 2),
        image_of_caption: Tensor::from_slice(&image_of_caption),
        sources: raw.images.into_iter().map(ImageSource::File).collect(),
    }
}

/// The split's captions file and image folder, checked: every annotation
/// names a listed image, every listed image exists.
pub fn read_split(dir: &Path, split: &str) -> Result<RawSplit> {
    let captions_path = find_one(&dir.join("annotations"), &format!("captions_{split}"), true)?;
    let images_dir = find_one(dir, split, false)?;
    let text =
        std::fs::read_to_string(&captions_path).with_context(|| format!("reading {}", captions_path.display()))?;
    let file: CaptionsFile = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a COCO captions file (images, annotations)", captions_path.display()))?;
    let mut images = Vec::with_capacity(file.images.len());
    let mut row_of_id = HashMap::with_capacity(file.images.len());
    for entry in &file.images {
        let path = images_dir.join(&entry.file_name);
        if !path.is_file() || Path::new(&entry.file_name).components().count() != 1 {
            bail!(
                "{}: image {} ({}) not found in {}",
                captions_path.display(),
                entry.id,
                entry.file_name,
                images_dir.display()
            );
        }
        if row_of_id.insert(entry.id, images.len()).is_some() {
            bail!("{}: image id {} listed twice", captions_path.display(), entry.id);
        }
        images.push(path);
    }
    let mut captions = Vec::with_capacity(file.annotations.len());
    for annotation in file.annotations {
        let Some(&image) = row_of_id.get(&annotation.image_id) else {
            bail!(
                "{}: a caption of image {}, which is not in its images list",
                captions_path.display(),
                annotation.image_id
            );
        };
        captions.push((image, tokenize(&annotation.caption)));
    }
    if captions.is_empty() {
        bail!("{}: no captions", captions_path.display());
    }
    Ok(RawSplit { images, captions })
}

/// The one entry of `dir` whose name starts with `prefix` (a `.json` file or
/// a folder), e.g. `captions_train2014.json` or `train2014/`.
fn find_one(dir: &Path, prefix: &str, json_file: bool) -> Result<PathBuf> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(prefix)))
        .filter(|p| if json_file { p.extension().is_some_and(|e| e == "json") } else { p.is_dir() })
        .collect();
    found.sort();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => {
            bail!("{}: no {} named {prefix}*", dir.display(), if json_file { "captions file" } else { "image folder" })
        }
        _ => bail!(
            "{}: several entries named {prefix}*: {}",
            dir.display(),
            found.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        ),
    }
}
