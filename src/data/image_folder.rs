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
    pub class_index: usize,
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
                    samples.push(Sample { path, class_index });
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
        let train = Self::scan(&data.join("train"))?;
        let val = Self::scan(&data.join("val"))?;
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
