//! Face sets as one matrix of grey pixel rows: from a `.npy` array
//! `(N, h, w)` or `(N, h·w)`, or from an image folder, flat or with one
//! subfolder per person (AT&T/ORL `s1 … s40`, or any JPEG/PNG faces).
//! Images become grey as PIL's `convert("L")` makes them and are resized to
//! one size when they differ. It loads faces; what is computed from them
//! belongs to [`crate::pca`].

use super::decode::decode_rgb;
use super::image_folder::{has_image_extension, ImageFolder};
use super::npy;
use crate::reporter::Reporter;
use anyhow::{bail, Context, Result};
use image::imageops::FilterType;
use image::{GrayImage, RgbImage};
use rayon::prelude::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

/// A face image's height and width in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaceSize {
    pub height: u32,
    pub width: u32,
}

impl FaceSize {
    pub fn pixels(self) -> usize {
        self.height as usize * self.width as usize
    }
}

impl std::fmt::Display for FaceSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}", self.height, self.width)
    }
}

/// Parses `HxW` (height first, as numpy shapes are written), e.g. `48x42`.
pub fn parse_size(text: &str) -> Result<FaceSize, String> {
    let (h, w) = text.trim().split_once(['x', 'X']).ok_or("expected HxW, e.g. 48x42 (height by width)")?;
    let dim = |s: &str| match s.trim().parse::<u32>() {
        Ok(n) if (1..=4096).contains(&n) => Ok(n),
        _ => Err(format!("{s:?} is not a size from 1 to 4096")),
    };
    Ok(FaceSize { height: dim(h)?, width: dim(w)? })
}

/// Who each face is, when the folder has one subfolder per person.
#[derive(Debug, Clone)]
pub struct People {
    /// Subfolder names, sorted.
    pub names: Vec<String>,
    /// Index into `names` of every face, in row order.
    pub labels: Vec<usize>,
    /// The image file of every face, in row order.
    pub files: Vec<PathBuf>,
}

impl People {
    /// The faces at `indices` (in order), without the names left with none.
    fn keep(self, indices: &[usize]) -> Self {
        let mut used: Vec<usize> = indices.iter().map(|&i| self.labels[i]).collect();
        used.sort_unstable();
        used.dedup();
        let new_label = |old: usize| used.binary_search(&old).expect("a kept face's person is used");
        Self {
            names: used.iter().map(|&i| self.names[i].clone()).collect(),
            labels: indices.iter().map(|&i| new_label(self.labels[i])).collect(),
            files: indices.iter().map(|&i| self.files[i].clone()).collect(),
        }
    }
}

/// N faces of one size, one row of grey values each.
pub struct Faces {
    /// `[N, h·w]` f64, pixel values as read (0–255 for images and uint8 arrays).
    pub pixels: Tensor,
    pub size: FaceSize,
    pub people: Option<People>,
    /// The value of a white pixel: 255, or 1 for float arrays within [0, 1].
    pub white: f64,
    /// Where the faces came from and how they were read, for reports.
    pub description: String,
    /// Files of the folder that are not among the faces, and why (an image
    /// that does not decode, a file beside the per-person folders).
    pub left_out: Vec<String>,
}

impl Faces {
    pub fn len(&self) -> usize {
        self.pixels.size()[0] as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Loads a face set from a `.npy` file or an image folder. `size` fixes the
/// image size: the shape of flat `(N, h·w)` rows, or what folder images are
/// resized to (by default the most common size among them); a folder's
/// reading shows a bar from `reporter`.
pub fn load(input: &Path, size: Option<FaceSize>, reporter: &dyn Reporter) -> Result<Faces> {
    let faces = if input.is_dir() {
        load_folder(input, size, reporter)?
    } else if is_image_file(input) {
        bail!(
            "{}: one image; --input takes a .npy array of faces or a folder of face images (flat or one subfolder per person)",
            input.display()
        );
    } else if input.is_file() {
        load_npy(input, size)?
    } else {
        bail!("{}: not found (expected a .npy file or a folder of face images)", input.display());
    };
    if faces.len() < 2 {
        bail!("{}: {} face(s); PCA needs at least 2", input.display(), faces.len());
    }
    Ok(faces)
}

/// A file named as an image (by torchvision's extensions).
fn is_image_file(path: &Path) -> bool {
    let extension = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    path.is_file() && extension.is_some_and(|e| super::image_folder::IMAGE_EXTENSIONS.contains(&e.as_str()))
}

fn load_npy(path: &Path, size: Option<FaceSize>) -> Result<Faces> {
    let array = npy::read(path)?;
    let (count, shape_size) = match array.shape[..] {
        [n, h, w] => {
            let found = FaceSize { height: h as u32, width: w as u32 };
            if let Some(size) = size.filter(|s| *s != found) {
                bail!("{}: holds {found} images but --size {size} was given", path.display());
            }
            (n, found)
        }
        [n, d] => {
            let size = match size {
                Some(s) if s.pixels() as i64 == d => s,
                Some(s) => bail!("{}: rows of {d} pixels cannot be {s} images ({} pixels)", path.display(), s.pixels()),
                None => guess_size(d as u64)
                    .with_context(|| format!("{}: rows of {d} pixels have no image shape", path.display()))?,
            };
            (n, size)
        }
        _ => bail!("{}: shape {:?}; expected (N, h, w) images or (N, h·w) rows", path.display(), array.shape),
    };
    if shape_size.pixels() == 0 {
        bail!("{}: shape {:?} has no pixels", path.display(), array.shape);
    }
    let pixels = array.values.reshape([count, shape_size.pixels() as i64]);
    let max = if count > 0 { pixels.max().double_value(&[]) } else { 0.0 };
    let integer = !array.dtype.contains('f');
    let white = if integer || max > 1.0 { 255.0 } else { 1.0 };
    let guessed = if array.shape.len() == 2 && size.is_none() { " (shape guessed; --size HxW sets it)" } else { "" };
    let description = format!(
        "{}: {count} faces of {shape_size} pixels{guessed}, dtype {}, white = {white}",
        path.display(),
        array.dtype
    );
    Ok(Faces { pixels, size: shape_size, people: None, white, description, left_out: Vec::new() })
}

/// The factorisation h·w = d with h ≥ w closest to square (faces are taller
/// than wide), or none for d = 0.
fn guess_size(d: u64) -> Result<FaceSize> {
    let width = (1..=(d as f64).sqrt() as u64).rev().find(|w| d.is_multiple_of(*w)).context("no pixels")?;
    let height = u32::try_from(d / width).ok().filter(|&h| h <= 4096).context("pass --size HxW")?;
    Ok(FaceSize { height, width: width as u32 })
}

/// The image files of a folder: every file in it (flat), or one subfolder
/// per person.
fn list_folder(root: &Path) -> Result<(Vec<PathBuf>, Option<People>)> {
    let has_subfolders = std::fs::read_dir(root)
        .with_context(|| format!("listing {}", root.display()))?
        .filter_map(|e| e.ok())
        .any(|e| e.path().is_dir());
    if has_subfolders {
        let folder = ImageFolder::scan(root)?;
        let labels = folder.samples.iter().map(|s| s.class_index).collect();
        let files: Vec<PathBuf> = folder.samples.into_iter().map(|s| s.path).collect();
        return Ok((files.clone(), Some(People { names: folder.classes, labels, files })));
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(root)
        .with_context(|| format!("listing {}", root.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && has_image_extension(p))
        .collect();
    files.sort();
    Ok((files, None))
}

/// Files directly in `root` when the faces are in per-person folders: not
/// faces of anyone, so left out, and said.
fn beside_person_folders(root: &Path, per_person: bool) -> Result<Vec<String>> {
    if !per_person {
        return Ok(Vec::new());
    }
    let mut stray: Vec<PathBuf> = std::fs::read_dir(root)
        .with_context(|| format!("listing {}", root.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    stray.sort();
    Ok(stray
        .iter()
        .map(|p| format!("{}: beside the per-person folders (a face goes in its person's folder)", p.display()))
        .collect())
}

fn load_folder(root: &Path, size: Option<FaceSize>, reporter: &dyn Reporter) -> Result<Faces> {
    let (files, people) = list_folder(root)?;
    if files.is_empty() {
        bail!("{}: no image files (flat, or one subfolder per person)", root.display());
    }
    let mut left_out = beside_person_folders(root, people.is_some())?;
    let bar = reporter.bar(files.len() as u64, "reading faces");
    let decoded: Vec<Result<GrayImage>> = files
        .par_iter()
        .map(|path| {
            let gray = read_gray(path);
            bar.inc(1);
            gray
        })
        .collect();
    bar.finish_and_clear();
    let mut images = Vec::with_capacity(files.len());
    let mut kept = Vec::with_capacity(files.len());
    for (index, (path, image)) in files.iter().zip(decoded).enumerate() {
        match image {
            Ok(image) => {
                images.push(image);
                kept.push(index);
            }
            Err(error) => left_out.push(format!("{}: {error:#}", path.display())),
        }
    }
    if images.len() < 2 {
        let why = left_out.last().map(|why| format!(" ({why})")).unwrap_or_default();
        bail!("{}: {} face(s) could be read; PCA needs at least 2{why}", root.display(), images.len());
    }
    left_out.iter().for_each(|line| reporter.warning(&format!("skipped {line}")));
    let people = people.map(|p| p.keep(&kept));
    let (target, resized) = common_size(&images, size);
    let mut values = Vec::with_capacity(images.len() * target.pixels());
    for image in &images {
        values.extend(gray_values(image, target));
    }
    let count = images.len() as i64;
    let pixels = Tensor::from_slice(&values).reshape([count, target.pixels() as i64]).to_kind(Kind::Double);
    let layout = match &people {
        Some(p) => format!("{} people (one subfolder each)", p.names.len()),
        None => "flat folder".to_owned(),
    };
    let resized = match resized {
        0 => String::new(),
        n => format!("; {n} resized to {target}"),
    };
    let skipped = match left_out.len() {
        0 => String::new(),
        n => format!("; {n} file(s) left out (said above)"),
    };
    let description = format!("{}: {count} faces of {target} pixels, {layout}{resized}{skipped}", root.display());
    Ok(Faces { pixels, size: target, people, white: 255.0, description, left_out })
}

/// Reads one image file as grey, as PIL's `convert("L")` does.
pub fn read_gray(path: &Path) -> Result<GrayImage> {
    Ok(to_gray(&decode_rgb(path)?))
}

/// ITU-R 601-2 luma in PIL's fixed point: L = (19595 R + 38470 G + 7471 B + 2¹⁵) >> 16.
fn to_gray(rgb: &RgbImage) -> GrayImage {
    GrayImage::from_fn(rgb.width(), rgb.height(), |x, y| {
        let [r, g, b] = rgb.get_pixel(x, y).0.map(u32::from);
        image::Luma([((19595 * r + 38470 * g + 7471 * b + 0x8000) >> 16) as u8])
    })
}

/// The size all faces are brought to (`wanted`, or the most common one,
/// ties to the larger) and how many need resizing.
fn common_size(images: &[GrayImage], wanted: Option<FaceSize>) -> (FaceSize, usize) {
    let size_of = |g: &GrayImage| FaceSize { height: g.height(), width: g.width() };
    let mut counts: HashMap<(u32, u32), usize> = HashMap::new();
    for image in images {
        *counts.entry((image.height(), image.width())).or_default() += 1;
    }
    let most_common = counts
        .iter()
        .max_by_key(|&(&(h, w), &n)| (n, h as u64 * w as u64, h))
        .map(|(&(height, width), _)| FaceSize { height, width })
        .unwrap_or(FaceSize { height: 1, width: 1 });
    let target = wanted.unwrap_or(most_common);
    (target, images.iter().filter(|g| size_of(g) != target).count())
}

/// The grey values of `image` at `size` (bilinear resize when it differs),
/// row by row.
pub fn gray_values(image: &GrayImage, size: FaceSize) -> Vec<f64> {
    let sized;
    let image = if image.dimensions() == (size.width, size.height) {
        image
    } else {
        sized = image::imageops::resize(image, size.width, size.height, FilterType::Triangle);
        &sized
    };
    image.as_raw().iter().map(|&v| f64::from(v)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_height_first_and_refuse_nonsense() {
        assert_eq!(parse_size("48x42").unwrap(), FaceSize { height: 48, width: 42 });
        assert_eq!(parse_size(" 25X25 ").unwrap(), FaceSize { height: 25, width: 25 });
        for bad in ["48", "0x4", "4x-1", "x", "5000x2"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn flat_rows_get_the_nearest_to_square_portrait_shape() {
        assert_eq!(guess_size(2016).unwrap(), FaceSize { height: 48, width: 42 });
        assert_eq!(guess_size(625).unwrap(), FaceSize { height: 25, width: 25 });
        assert_eq!(guess_size(10304).unwrap(), FaceSize { height: 112, width: 92 });
        assert_eq!(guess_size(7).unwrap(), FaceSize { height: 7, width: 1 });
    }

    #[test]
    fn grey_is_pils_luma() {
        let rgb = RgbImage::from_raw(3, 1, vec![255, 0, 0, 0, 255, 0, 10, 20, 30]).unwrap();
        // PIL: Image.new("RGB", ...).convert("L") gives 76, 150, 18 for these pixels.
        assert_eq!(to_gray(&rgb).as_raw(), &[76, 150, 18]);
    }

    #[test]
    fn the_most_common_size_wins_and_others_are_counted() {
        let images = [GrayImage::new(4, 5), GrayImage::new(4, 5), GrayImage::new(8, 8)];
        assert_eq!(common_size(&images, None), (FaceSize { height: 5, width: 4 }, 1));
        assert_eq!(common_size(&images, Some(FaceSize { height: 8, width: 8 })), (FaceSize { height: 8, width: 8 }, 2));
    }
}
