//! Training augmentation beyond the tutorial's crop and flip, with torchvision
//! v2's semantics: the presets (`--augment trivialaugment|randaugment|autoaugment|augmix`),
//! color jitter and random erasing; MixUp and CutMix over batches ([`mix`]). What a sample gets is drawn in the
//! loader's draw phase ([`draw`]); the pixel work ([`ops`]) runs in the
//! loader's workers on the cropped, flipped uint8 image, except erasing,
//! which applies to the float image. It never touches files and knows
//! nothing of the model.

pub mod draw;
pub mod mix;
pub mod ops;

use crate::data::transforms::CropBox;
use serde::{Deserialize, Serialize};
use tch::Tensor;

/// `--augment`: what follows the crop and flip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// The tutorial's RandomResizedCrop and horizontal flip alone.
    Tutorial,
    /// TrivialAugmentWide: one random operation at a random magnitude of 31.
    Trivialaugment,
    /// RandAugment: --randaugment-n random operations at magnitude --randaugment-m of 31.
    Randaugment,
    /// AutoAugment's ImageNet policy: one of 25 learned pairs of operations.
    Autoaugment,
    /// AugMix: the image mixed with three chains of 1–3 random operations (severity 3, bilinear).
    Augmix,
}

/// The augmentation options of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct AugmentRecipe {
    pub preset: Preset,
    pub randaugment_n: usize,
    /// Magnitude bin of 31 (0–30).
    pub randaugment_m: usize,
    /// Probability of erasing a box of the normalized image.
    pub random_erase: f64,
    /// ColorJitter's brightness, contrast, saturation and hue amounts.
    pub color_jitter: Option<[f64; 4]>,
}

impl AugmentRecipe {
    /// The tutorial's: crop and flip alone.
    pub const TUTORIAL: AugmentRecipe = AugmentRecipe {
        preset: Preset::Tutorial,
        randaugment_n: 2,
        randaugment_m: 9,
        random_erase: 0.0,
        color_jitter: None,
    };

    /// Whether samples get anything beyond the crop and flip.
    pub fn is_tutorial(&self) -> bool {
        self.preset == Preset::Tutorial && self.random_erase == 0.0 && self.color_jitter.is_none()
    }
}

/// `pixels` (`[3, H, W]` uint8, cropped and flipped) through `ops` in order.
pub fn apply_ops(pixels: Tensor, ops: &[ops::Op]) -> Tensor {
    ops.iter().fold(pixels, |image, op| op.apply(&image))
}

/// `pixels` (`[3, H, W]` uint8, cropped and flipped) through a sample's
/// draws, before erasing: its operations, then AugMix's mixture.
pub fn apply(pixels: Tensor, drawn: &draw::SampleDraw) -> Tensor {
    let pixels = apply_ops(pixels, &drawn.ops);
    match &drawn.augmix {
        Some(augmix) => augmix_mixture(&pixels, augmix),
        None => pixels,
    }
}

/// AugMix's float32 mixture of the image and its chains, truncated to uint8
/// as torchvision's `.to(torch.uint8)`.
pub fn augmix_mixture(image: &Tensor, augmix: &draw::AugMixDraw) -> Tensor {
    let original = image.to_kind(tch::Kind::Float) * augmix.original as f64;
    let mixed = augmix.chains.iter().fold(original, |mix, (weight, ops)| {
        let chain = apply_ops(image.shallow_clone(), ops);
        mix + chain.to_kind(tch::Kind::Float) * *weight as f64
    });
    mixed.to_kind(tch::Kind::Uint8)
}

/// `images` (`[N, 3, H, W]` float) with each sample's `erase` box set to
/// `fill` (per channel), in place.
pub fn erase(images: &mut Tensor, boxes: &[Option<CropBox>], fill: [f32; 3]) {
    for (n, b) in boxes.iter().enumerate() {
        if let Some(b) = b {
            let fill = Tensor::from_slice(&fill).view([3, 1, 1]).to_device(images.device());
            images.get(n as i64).narrow(1, b.top, b.height).narrow(2, b.left, b.width).copy_(&fill);
        }
    }
}
