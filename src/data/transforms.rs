//! torchvision's transfer-learning transforms over decoded images, on tensors:
//! `RandomResizedCrop(crop)` + `RandomHorizontalFlip()` for training and
//! `Resize(resize)` + `CenterCrop(crop)` for validation, with the backbone's
//! antialiased interpolation (bilinear as PIL's filter, or bicubic as
//! torchvision v2 on uint8 tensors), rounded to 8-bit levels, then the
//! backbone's normalization. The presets beyond the crop and flip live in
//! [`super::augment`]. It never touches files.

use rand::Rng;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

pub const CROP_SIZE: i64 = 224;
pub const RESIZE_SIZE: i64 = 256;

/// How pixel values in [0, 1] are mapped before the backbone sees them.
/// Its name (`imagenet`, `tf-lite`) is the clap/serde one (`crate::choice_names::Named`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Normalization {
    /// `(x - mean) / std` with ImageNet's statistics (torchvision models).
    Imagenet,
    /// TF-Lite's `(255·x - 127) / 128` (EfficientNet-Lite's training inputs).
    TfLite,
}

impl Normalization {
    /// Normalizes an `[N, 3, H, W]` float tensor holding values in [0, 1].
    pub fn apply(self, images: &Tensor) -> Tensor {
        let device = images.device();
        match self {
            Normalization::Imagenet => {
                let mean = Tensor::from_slice(&[0.485f32, 0.456, 0.406]).view([1, 3, 1, 1]).to_device(device);
                let std = Tensor::from_slice(&[0.229f32, 0.224, 0.225]).view([1, 3, 1, 1]).to_device(device);
                (images - mean) / std
            }
            Normalization::TfLite => (images * 255.0 - 127.0) / 128.0,
        }
    }

    /// The value in [0, 1] of each channel that normalizes to 0 (random
    /// erasing's fill).
    pub fn zero_point(self) -> [f32; 3] {
        match self {
            Normalization::Imagenet => [0.485, 0.456, 0.406],
            Normalization::TfLite => [127.0 / 255.0; 3],
        }
    }
}

/// How an image is resampled to the sizes the backbone expects (torchvision's
/// `InterpolationMode`, both antialiased when shrinking).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Interpolation {
    Bilinear,
    Bicubic,
}

/// What a backbone's published weights expect of an evaluation image
/// (torchvision's `weights.transforms()`): the shorter side resized to
/// `resize`, the central `crop`², `interpolation`, then `normalization`.
/// Training crops to `crop`² too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preprocessing {
    pub resize: i64,
    pub crop: i64,
    pub interpolation: Interpolation,
    pub normalization: Normalization,
}

/// How a run's images are sized: the side of the square the network sees,
/// the shorter side validation resizes to before its central crop, and the
/// interpolation of every resize (training's too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sizing {
    pub size: i64,
    pub resize: i64,
    pub interpolation: Interpolation,
}

impl Sizing {
    /// The PyTorch tutorial's: 224 from 256, bilinear.
    pub const TUTORIAL: Sizing =
        Sizing { size: CROP_SIZE, resize: RESIZE_SIZE, interpolation: Interpolation::Bilinear };

    /// `preprocessing` at `size`² (its crop unless given): validation resizes
    /// to `resize·size/crop`, rounded, keeping the published proportion.
    pub fn of(preprocessing: &Preprocessing, size: Option<i64>) -> Self {
        let size = size.unwrap_or(preprocessing.crop);
        let resize = (size as f64 * preprocessing.resize as f64 / preprocessing.crop as f64).round() as i64;
        Sizing { size, resize, interpolation: preprocessing.interpolation }
    }

    /// The tutorial's proportion and interpolation at `size`²: what every run
    /// and saved model used before backbones stated their own.
    pub fn tutorial(size: i64) -> Self {
        let resize = (size as f64 * RESIZE_SIZE as f64 / CROP_SIZE as f64).round() as i64;
        Sizing { size, resize, interpolation: Interpolation::Bilinear }
    }
}

/// A crop box in pixels: top, left, height, width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropBox {
    pub top: i64,
    pub left: i64,
    pub height: i64,
    pub width: i64,
}

/// What one training sample gets this epoch, drawn before any pixel work so
/// the draw order (and so the result for a seed) is independent of threading.
#[derive(Debug, Clone, Copy)]
pub struct Augmentation {
    pub crop: CropBox,
    pub flip: bool,
}

/// torchvision's `RandomResizedCrop.get_params` with scale (0.08, 1) and ratio
/// (3/4, 4/3): ten tries at a random area and aspect ratio, then the central
/// crop clamped to the ratio range.
pub fn random_resized_crop_box(height: i64, width: i64, rng: &mut impl Rng) -> CropBox {
    let (scale_min, scale_max) = (0.08f64, 1.0f64);
    let (ratio_min, ratio_max) = (3.0f64 / 4.0, 4.0f64 / 3.0);
    let area = (height * width) as f64;
    for _ in 0..10 {
        let target_area = area * rng.gen_range(scale_min..scale_max);
        let aspect = rng.gen_range(ratio_min.ln()..ratio_max.ln()).exp();
        let w = (target_area * aspect).sqrt().round_ties_even() as i64;
        let h = (target_area / aspect).sqrt().round_ties_even() as i64;
        if 0 < w && w <= width && 0 < h && h <= height {
            let top = rng.gen_range(0..=height - h);
            let left = rng.gen_range(0..=width - w);
            return CropBox { top, left, height: h, width: w };
        }
    }
    let in_ratio = width as f64 / height as f64;
    let (h, w) = if in_ratio < ratio_min {
        ((width as f64 / ratio_min).round_ties_even() as i64, width)
    } else if in_ratio > ratio_max {
        (height, (height as f64 * ratio_max).round_ties_even() as i64)
    } else {
        (height, width)
    };
    CropBox { top: (height - h) / 2, left: (width - w) / 2, height: h, width: w }
}

pub fn draw_augmentation(height: i64, width: i64, rng: &mut impl Rng) -> Augmentation {
    let crop = random_resized_crop_box(height, width, rng);
    let flip = rng.gen_bool(0.5);
    Augmentation { crop, flip }
}

/// Resizes a `[3, H, W]` uint8 image to `[3, out_h, out_w]` float values on the
/// 0–255 grid, antialiased and rounded: bilinear as PIL's resize (float,
/// rounded), bicubic as torchvision v2's on uint8 tensors (libtorch's native
/// uint8 kernel, which torchvision calls for bicubic on the CPU).
pub fn resize_u8(image: &Tensor, out_h: i64, out_w: i64, interpolation: Interpolation) -> Tensor {
    let (_, h, w) = image.size3().unwrap();
    let batch = image.unsqueeze(0);
    let resized = if (h, w) == (out_h, out_w) {
        batch.to_kind(Kind::Float)
    } else {
        match interpolation {
            Interpolation::Bilinear => {
                let resized =
                    batch.to_kind(Kind::Float).internal_upsample_bilinear2d_aa([out_h, out_w], false, None, None);
                resized.round().clamp(0.0, 255.0)
            }
            Interpolation::Bicubic => batch
                .contiguous()
                .internal_upsample_bicubic2d_aa([out_h, out_w], false, None, None)
                .to_kind(Kind::Float),
        }
    };
    resized.squeeze_dim(0)
}

/// The training transform of one `[3, H, W]` uint8 image: crop, resize to
/// `size`² (224 in the tutorial), optional flip; returns float values in [0, 1].
pub fn train_transform(image: &Tensor, aug: &Augmentation, sizing: &Sizing) -> Tensor {
    train_pixels(image, aug, sizing).to_kind(Kind::Float) / 255.0
}

/// [`train_transform`] before the scaling to [0, 1]: `[3, size, size]` uint8
/// (exact, since the resize rounds to the 0–255 grid as PIL does).
pub fn train_pixels(image: &Tensor, aug: &Augmentation, sizing: &Sizing) -> Tensor {
    let (c, size) = (aug.crop, sizing.size);
    let cropped = image.narrow(1, c.top, c.height).narrow(2, c.left, c.width);
    let resized = resize_u8(&cropped, size, size, sizing.interpolation).to_kind(Kind::Uint8);
    if aug.flip {
        resized.flip([2])
    } else {
        resized
    }
}

/// The size `Resize(256)` gives: the shorter side becomes 256, the longer one
/// scales with it (truncated, as torchvision does).
pub fn resize_shorter_side(height: i64, width: i64, target: i64) -> (i64, i64) {
    if height <= width {
        (target, (target as f64 * width as f64 / height as f64) as i64)
    } else {
        ((target as f64 * height as f64 / width as f64) as i64, target)
    }
}

/// torchvision's `CenterCrop` offsets: `int(round((size - crop) / 2))`.
pub fn center_offset(size: i64, crop: i64) -> i64 {
    ((size - crop) as f64 / 2.0).round_ties_even() as i64
}

/// The validation transform of one `[3, H, W]` uint8 image: `Resize(256)`,
/// `CenterCrop(224)`; returns float values in [0, 1].
pub fn val_transform(image: &Tensor) -> Tensor {
    val_transform_sized(image, &Sizing::TUTORIAL)
}

/// [`val_transform`] for a run's `sizing`: the shorter side resized to
/// `sizing.resize`, then the central `sizing.size`².
pub fn val_transform_sized(image: &Tensor, sizing: &Sizing) -> Tensor {
    let resized = resized_for_crop(image, sizing);
    let (_, h, w) = resized.size3().expect("[3, H, W]");
    let size = sizing.size;
    crop(&resized, center_offset(h, size), center_offset(w, size), size) / 255.0
}

/// `image` `[3, H, W]` (u8) with its shorter side resized to
/// `sizing.resize`, then padded as torchvision pads a crop larger than the
/// picture (a very elongated image may resize below the crop), so that a
/// `sizing.size`² crop fits.
pub fn resized_for_crop(image: &Tensor, sizing: &Sizing) -> Tensor {
    let (_, h, w) = image.size3().expect("an image tensor is [3, H, W]");
    let size = sizing.size;
    let (rh, rw) = resize_shorter_side(h, w, sizing.resize);
    let resized = resize_u8(image, rh, rw, sizing.interpolation);
    if rh >= size && rw >= size {
        return resized;
    }
    let pad_h = (size - rh).max(0);
    let pad_w = (size - rw).max(0);
    resized.constant_pad_nd([pad_w / 2, pad_w - pad_w / 2, pad_h / 2, pad_h - pad_h / 2])
}

/// The `size`² square of `image` `[3, H, W]` at `top`, `left`.
pub fn crop(image: &Tensor, top: i64, left: i64, size: i64) -> Tensor {
    image.narrow(1, top, size).narrow(2, left, size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn crop_boxes_stay_inside_the_image_and_in_the_scale_range() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for &(h, w) in &[(500, 375), (100, 2000), (1, 1), (224, 224)] {
            for _ in 0..500 {
                let c = random_resized_crop_box(h, w, &mut rng);
                assert!(c.top >= 0 && c.left >= 0 && c.height > 0 && c.width > 0);
                assert!(c.top + c.height <= h && c.left + c.width <= w, "{c:?} in {h}x{w}");
            }
        }
    }

    #[test]
    fn fallback_is_the_ratio_clamped_central_crop() {
        // A 100x2000 strip never fits a crop of ratio <= 4/3 with area >= 8%,
        // so every draw falls back to the centre, clamped to ratio 4/3.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let c = random_resized_crop_box(100, 2000, &mut rng);
        assert_eq!(c, CropBox { top: 0, left: (2000 - 133) / 2, height: 100, width: 133 });
    }

    #[test]
    fn sizing_keeps_the_published_proportion_and_the_tutorials_rounding() {
        let tutorial = Preprocessing {
            resize: 256,
            crop: 224,
            interpolation: Interpolation::Bilinear,
            normalization: Normalization::Imagenet,
        };
        assert_eq!(Sizing::of(&tutorial, None), Sizing::TUTORIAL);
        for size in 32..=1024 {
            let old = (size as f64 * 8.0 / 7.0).round() as i64;
            assert_eq!(Sizing::of(&tutorial, Some(size)).resize, old, "size {size}");
        }
        let bicubic = Preprocessing { resize: 232, interpolation: Interpolation::Bicubic, ..tutorial };
        assert_eq!(
            Sizing::of(&bicubic, Some(160)),
            Sizing { size: 160, resize: 166, interpolation: Interpolation::Bicubic }
        );
    }

    #[test]
    fn resize_keeps_aspect_and_truncates_like_torchvision() {
        assert_eq!(resize_shorter_side(375, 500, 256), (256, 341));
        assert_eq!(resize_shorter_side(500, 333, 256), (384, 256));
    }
}
