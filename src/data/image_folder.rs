//! Scans `DIR/<split>/<class>/*` the way torchvision's `ImageFolder` does:
//! classes are the sorted sub-folder names, files are kept by extension
//! (case-insensitive). It reads directory listings only, never image bytes.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// torchvision's `IMG_EXTENSIONS`.
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "ppm", "bmp", "pgm", "tif", "tiff", "webp"];

#[derive(Debug, Clone)]
pub struct Sample {
    pub path: PathBuf,
    /// The class (of multi-label data: the first of the sample's classes).
    pub class_index: usize,
    /// Multi-label data (`--labels` with `--label-delim`): every class of the
    /// sample, ascending; none for single-label data.
    pub label_set: Option<Vec<usize>>,
}

/// One split of an image folder.
#[derive(Debug, Clone)]
pub struct ImageFolder {
    pub root: PathBuf,
    pub classes: Vec<String>,
    pub samples: Vec<Sample>,
    /// Files ignored because their extension is not an image's (torchvision
    /// skips them silently; we say so).
    pub ignored: Vec<PathBuf>,
}

impl ImageFolder {
    pub fn scan(root: &Path) -> Result<Self> {
        if !root.is_dir() {
            bail!("{}: folder not found (expected <data>/<split>/<class>/<images>)", root.display());
        }
        let mut classes: Vec<String> = read_dir_sorted(root)?
            .into_iter()
            .filter(|p| p.is_dir())
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        classes.sort();
        if classes.is_empty() {
            bail!("{}: no class folders (expected <class>/<images> inside)", root.display());
        }
        let mut samples = Vec::new();
        let mut ignored = Vec::new();
        for (class_index, class) in classes.iter().enumerate() {
            let class_dir = root.join(class);
            let mut found = 0;
            for path in walk_files(&class_dir)? {
                if has_image_extension(&path) {
                    samples.push(Sample { path, class_index, label_set: None });
                    found += 1;
                } else {
                    ignored.push(path);
                }
            }
            if found == 0 {
                bail!("{}: class folder holds no image files ({})", class_dir.display(), IMAGE_EXTENSIONS.join(", "));
            }
        }
        Ok(Self { root: root.to_owned(), classes, samples, ignored })
    }

    /// Scans `data/train` and `data/val`, requiring the same classes in both.
    pub fn scan_train_val(data: &Path) -> Result<(Self, Self)> {
        Self::scan_train_and(data, "val")
    }

    /// Scans `data/train` and `data/<val_dir>`, requiring the same classes in both.
    pub fn scan_train_and(data: &Path, val_dir: &str) -> Result<(Self, Self)> {
        let train = Self::scan(&data.join("train"))?;
        let val_root = data.join(val_dir);
        if !val_root.is_dir() {
            bail!(
                "{}: no {val_dir}/ folder beside train/ (name it with --val-dir, or hold out part of train/ with --val-split 0.2)",
                data.display()
            );
        }
        let val = Self::scan(&val_root)?;
        if train.classes != val.classes {
            bail!(
                "{}: train and val have different classes: train {:?}, val {:?}",
                data.display(),
                train.classes,
                val.classes
            );
        }
        Ok((train, val))
    }
}

impl ImageFolder {
    /// Whether the samples carry label sets (multi-label data).
    pub fn is_multi_label(&self) -> bool {
        self.samples.first().is_some_and(|s| s.label_set.is_some())
    }

    /// Splits off `fraction` of each class's samples (at least one, never
    /// all) as a validation split, chosen by `seed`; the rest stay for
    /// training. Both keep every class. Multi-label samples, which belong to
    /// several classes, are held out from all of them at once.
    pub fn split_off(self, fraction: f64, seed: u64) -> Result<(Self, Self)> {
        use rand::seq::SliceRandom;
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_0fa1);
        let (mut train, mut val) = (Vec::new(), Vec::new());
        // One group per class; multi-label data is one group of every sample.
        let groups: Vec<(&str, Vec<Sample>)> = match self.is_multi_label() {
            true => vec![("(any, multi-label)", self.samples.clone())],
            false => (self.classes.iter().enumerate())
                .map(|(index, class)| {
                    (class.as_str(), self.samples.iter().filter(|s| s.class_index == index).cloned().collect())
                })
                .collect(),
        };
        for (class, mut samples) in groups {
            if samples.len() < 2 {
                bail!(
                    "{}: class {class} has {} image(s); --val-split needs at least 2 per class",
                    self.root.display(),
                    samples.len()
                );
            }
            samples.shuffle(&mut rng);
            let held_out = ((samples.len() as f64 * fraction).round() as usize).clamp(1, samples.len() - 1);
            val.extend(samples.drain(..held_out));
            train.extend(samples);
        }
        let by_path = |a: &Sample, b: &Sample| a.path.cmp(&b.path);
        train.sort_by(by_path);
        val.sort_by(by_path);
        let part =
            |samples| Self { root: self.root.clone(), classes: self.classes.clone(), samples, ignored: Vec::new() };
        let (train, val) = (part(train), part(val));
        Ok((Self { ignored: self.ignored, ..train }, val))
    }
}

pub fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.as_str()))
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    Ok(entries)
}

/// All files below `dir`, sorted, following torchvision's recursive walk.
fn walk_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in read_dir_sorted(dir)? {
        if path.is_dir() {
            files.extend(walk_files(&path)?);
        } else {
            files.push(path);
        }
    }
    Ok(files)
}
/// Image files from the inputs: folders expanded recursively (image
/// extensions only; the number of other files is returned too), files taken
/// as given (missing ones too: reading them fails on their own row).
pub fn collect_images(inputs: &[PathBuf]) -> Result<(Vec<PathBuf>, usize)> {
    let mut files = Vec::new();
    let mut skipped = 0;
    for input in inputs {
        if input.is_dir() {
            let (mut found, others): (Vec<PathBuf>, Vec<PathBuf>) =
                walk(input)?.into_iter().partition(|p| has_image_extension(p));
            skipped += others.len();
            found.sort();
            files.extend(found);
        } else {
            // A missing file is a failed input like an unreadable one: its
            // row says so, and `--allow-errors` goes on past it.
            files.push(input.clone());
        }
    }
    Ok((files, skipped))
}

fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            out.extend(walk(&path)?);
        } else {
            out.push(path);
        }
    }
    Ok(out)
}
