//! The random part of the presets: which operations a sample gets, their
//! magnitudes and signs, color jitter's factors and order, random erasing's
//! box — drawn from the loader's seeded RNG in its draw phase, before any
//! pixel work, with torchvision v2's distributions and magnitude tables
//! (`_auto_augment.py`, `ColorJitter`, `RandomErasing`). It touches no pixels.

use super::ops::Op;
use super::{AugmentRecipe, Preset};
use crate::data::transforms::CropBox;
use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// torchvision's auto-augment transform ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Transform {
    Identity,
    ShearX,
    ShearY,
    TranslateX,
    TranslateY,
    Rotate,
    Brightness,
    Color,
    Contrast,
    Sharpness,
    Posterize,
    Solarize,
    AutoContrast,
    Equalize,
    Invert,
}

/// The operation torchvision's `_apply_image_or_video_transform` applies for
/// `transform` at `magnitude`, nearest-neighbour (the presets' interpolation).
pub fn op_of(transform: Transform, magnitude: f64) -> Op {
    op_interpolated(transform, magnitude, false)
}

/// [`op_of`] with bilinear geometric operations where `bilinear` (AugMix's).
pub fn op_interpolated(transform: Transform, magnitude: f64, bilinear: bool) -> Op {
    let shear = |x: f64, y: f64| Op::Affine {
        angle: 0.0,
        translate: [0, 0],
        shear: [x, y],
        center: Some([0.0, 0.0]),
        bilinear,
    };
    let translate =
        |x: i64, y: i64| Op::Affine { angle: 0.0, translate: [x, y], shear: [0.0, 0.0], center: None, bilinear };
    match transform {
        Transform::Identity => Op::Identity,
        Transform::ShearX => shear(magnitude.atan().to_degrees(), 0.0),
        Transform::ShearY => shear(0.0, magnitude.atan().to_degrees()),
        Transform::TranslateX => translate(magnitude as i64, 0),
        Transform::TranslateY => translate(0, magnitude as i64),
        Transform::Rotate => Op::Rotate { angle: magnitude, bilinear },
        Transform::Brightness => Op::Brightness { factor: 1.0 + magnitude },
        Transform::Color => Op::Saturation { factor: 1.0 + magnitude },
        Transform::Contrast => Op::Contrast { factor: 1.0 + magnitude },
        Transform::Sharpness => Op::Sharpness { factor: 1.0 + magnitude },
        Transform::Posterize => Op::Posterize { bits: magnitude as u8 },
        Transform::Solarize => Op::Solarize { threshold: 255.0 * magnitude },
        Transform::AutoContrast => Op::Autocontrast,
        Transform::Equalize => Op::Equalize,
        Transform::Invert => Op::Invert,
    }
}

/// One transform of a space: its magnitudes by bin (none for those without)
/// and whether a magnitude's sign is drawn.
struct Entry {
    transform: Transform,
    magnitudes: Option<Vec<f64>>,
    signed: bool,
}

/// torchvision's `torch.linspace(start, end, bins)` in float32, as f64.
fn linspace(start: f64, end: f64, bins: i64) -> Vec<f64> {
    let values = Tensor::linspace(start, end, bins, (Kind::Float, Device::Cpu)).to_kind(Kind::Double);
    Vec::try_from(values).expect("linspace values")
}

/// `(8 - arange(bins) / ((bins - 1) / levels)).round().int()` in float32.
fn posterize_bits(bins: i64, levels: f64) -> Vec<f64> {
    let divisor = ((bins - 1) as f64 / levels) as f32;
    (0..bins).map(|k| (8.0f32 - k as f32 / divisor).round_ties_even() as f64).collect()
}

/// Which of torchvision's augmentation spaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SpaceKind {
    TrivialAugmentWide,
    /// RandAugment's, AutoAugment's (with Invert) and AugMix's.
    RandAugment,
    AutoAugment,
    AugMix,
}

/// A space's transforms in torchvision's order, for `bins` magnitude bins
/// and `size`² images.
fn space(kind: SpaceKind, bins: i64, size: i64) -> Vec<Entry> {
    use Transform::*;
    if kind == SpaceKind::AugMix {
        return augmix_space(bins, size);
    }
    let wide = kind == SpaceKind::TrivialAugmentWide;
    let lin = |end: f64| Some(linspace(0.0, end, bins));
    let (shear, rotate, color) = if wide { (0.99, 135.0, 0.99) } else { (0.3, 30.0, 0.9) };
    let translate = if wide { 32.0 } else { 150.0 / 331.0 * size as f64 };
    let posterize = posterize_bits(bins, if wide { 6.0 } else { 4.0 });
    let mut entries = vec![
        (ShearX, lin(shear), true),
        (ShearY, lin(shear), true),
        (TranslateX, lin(translate), true),
        (TranslateY, lin(translate), true),
        (Rotate, lin(rotate), true),
        (Brightness, lin(color), true),
        (Color, lin(color), true),
        (Contrast, lin(color), true),
        (Sharpness, lin(color), true),
        (Posterize, Some(posterize), false),
        (Solarize, Some(linspace(1.0, 0.0, bins)), false),
        (AutoContrast, None, false),
        (Equalize, None, false),
    ];
    match kind {
        SpaceKind::AutoAugment => entries.push((Invert, None, false)),
        _ => entries.insert(0, (Identity, None, false)),
    }
    entries.into_iter().map(|(transform, magnitudes, signed)| Entry { transform, magnitudes, signed }).collect()
}

/// AugMix's space with all operations, in torchvision's order.
fn augmix_space(bins: i64, size: i64) -> Vec<Entry> {
    use Transform::*;
    let lin = |end: f64| Some(linspace(0.0, end, bins));
    let divisor = ((bins - 1) as f64 / 4.0) as f32;
    let posterize = (0..bins).map(|k| (4.0f32 - k as f32 / divisor).round_ties_even() as f64);
    let entries = vec![
        (ShearX, lin(0.3), true),
        (ShearY, lin(0.3), true),
        (TranslateX, lin(size as f64 / 3.0), true),
        (TranslateY, lin(size as f64 / 3.0), true),
        (Rotate, lin(30.0), true),
        (Posterize, Some(posterize.collect()), false),
        (Solarize, Some(linspace(1.0, 0.0, bins)), false),
        (AutoContrast, None, false),
        (Equalize, None, false),
        (Brightness, lin(0.9), true),
        (Color, lin(0.9), true),
        (Contrast, lin(0.9), true),
        (Sharpness, lin(0.9), true),
    ];
    entries.into_iter().map(|(transform, magnitudes, signed)| Entry { transform, magnitudes, signed }).collect()
}

/// AugMix's defaults: severity (magnitude bins drawn from), chains, chain
/// depth drawn from 1–3, Dirichlet/Beta α.
const AUGMIX_SEVERITY: usize = 3;
const AUGMIX_WIDTH: usize = 3;
const AUGMIX_ALPHA: f64 = 1.0;

/// One image's AugMix: the weight of the original and each chain's weight
/// and operations (bilinear), as torchvision's `AugMix.forward` draws them.
#[derive(Debug, Clone, PartialEq)]
pub struct AugMixDraw {
    pub original: f32,
    pub chains: Vec<(f32, Vec<Op>)>,
}

/// A Dirichlet(α, …, α) draw of `n` weights.
fn dirichlet(alpha: f64, n: usize, rng: &mut impl Rng) -> Vec<f64> {
    let draws: Vec<f64> = (0..n).map(|_| super::mix::gamma(alpha, rng)).collect();
    let total: f64 = draws.iter().sum();
    draws.iter().map(|g| if total > 0.0 { g / total } else { 1.0 / n as f64 }).collect()
}

fn draw_augmix(entries: &[Entry], rng: &mut impl Rng) -> AugMixDraw {
    let m = dirichlet(AUGMIX_ALPHA, 2, rng);
    let weights = dirichlet(AUGMIX_ALPHA, AUGMIX_WIDTH, rng);
    let chains = weights
        .iter()
        .map(|&w| {
            let depth = rng.gen_range(1..=3);
            let ops = (0..depth)
                .map(|_| {
                    let entry = &entries[rng.gen_range(0..entries.len())];
                    let bin = entry.magnitudes.as_ref().map(|_| rng.gen_range(0..AUGMIX_SEVERITY));
                    let op = signed_op(entry, bin, rng);
                    with_bilinear(op)
                })
                .collect();
            (w as f32 * m[1] as f32, ops)
        })
        .collect();
    AugMixDraw { original: m[0] as f32, chains }
}

/// `op` with bilinear resampling where it resamples.
fn with_bilinear(op: Op) -> Op {
    match op {
        Op::Affine { angle, translate, shear, center, .. } => {
            Op::Affine { angle, translate, shear, center, bilinear: true }
        }
        Op::Rotate { angle, .. } => Op::Rotate { angle, bilinear: true },
        other => other,
    }
}

/// AutoAugment's ImageNet policy: pairs of (transform, probability, magnitude bin).
const IMAGENET_POLICY: [[(Transform, f64, usize); 2]; 25] = {
    use Transform::*;
    [
        [(Posterize, 0.4, 8), (Rotate, 0.6, 9)],
        [(Solarize, 0.6, 5), (AutoContrast, 0.6, 0)],
        [(Equalize, 0.8, 0), (Equalize, 0.6, 0)],
        [(Posterize, 0.6, 7), (Posterize, 0.6, 6)],
        [(Equalize, 0.4, 0), (Solarize, 0.2, 4)],
        [(Equalize, 0.4, 0), (Rotate, 0.8, 8)],
        [(Solarize, 0.6, 3), (Equalize, 0.6, 0)],
        [(Posterize, 0.8, 5), (Equalize, 1.0, 0)],
        [(Rotate, 0.2, 3), (Solarize, 0.6, 8)],
        [(Equalize, 0.6, 0), (Posterize, 0.4, 6)],
        [(Rotate, 0.8, 8), (Color, 0.4, 0)],
        [(Rotate, 0.4, 9), (Equalize, 0.6, 0)],
        [(Equalize, 0.0, 0), (Equalize, 0.8, 0)],
        [(Invert, 0.6, 0), (Equalize, 1.0, 0)],
        [(Color, 0.6, 4), (Contrast, 1.0, 8)],
        [(Rotate, 0.8, 8), (Color, 1.0, 2)],
        [(Color, 0.8, 8), (Solarize, 0.8, 7)],
        [(Sharpness, 0.4, 7), (Invert, 0.6, 0)],
        [(ShearX, 0.6, 5), (Equalize, 1.0, 0)],
        [(Color, 0.4, 0), (Equalize, 0.6, 0)],
        [(Equalize, 0.4, 0), (Solarize, 0.2, 4)],
        [(Solarize, 0.6, 5), (AutoContrast, 0.6, 0)],
        [(Invert, 0.6, 0), (Equalize, 1.0, 0)],
        [(Color, 0.6, 4), (Contrast, 1.0, 8)],
        [(Equalize, 0.8, 0), (Equalize, 0.6, 0)],
    ]
};

/// A preset's spaces for one epoch's draws (magnitude tables computed once).
pub struct Spaces {
    recipe: AugmentRecipe,
    entries: Vec<Entry>,
}

impl Spaces {
    /// The tables `recipe` draws from for `size`² images.
    pub fn new(recipe: &AugmentRecipe, size: i64) -> Self {
        let entries = match recipe.preset {
            Preset::Tutorial => Vec::new(),
            Preset::Trivialaugment => space(SpaceKind::TrivialAugmentWide, 31, size),
            Preset::Randaugment => space(SpaceKind::RandAugment, 31, size),
            Preset::Autoaugment => space(SpaceKind::AutoAugment, 10, size),
            Preset::Augmix => space(SpaceKind::AugMix, 10, size),
        };
        Self { recipe: recipe.clone(), entries }
    }

    fn entry(&self, transform: Transform) -> &Entry {
        self.entries.iter().find(|e| e.transform == transform).expect("the policy's transforms are in its space")
    }

    /// What one sample gets besides its crop and flip (nothing under the
    /// tutorial recipe, which then draws nothing).
    pub fn draw(&self, size: i64, rng: &mut impl Rng) -> SampleDraw {
        let mut ops = match self.recipe.color_jitter {
            Some(jitter) => color_jitter(jitter, rng),
            None => Vec::new(),
        };
        let mut augmix = None;
        match self.recipe.preset {
            Preset::Tutorial => {}
            Preset::Augmix => augmix = Some(draw_augmix(&self.entries, rng)),
            Preset::Trivialaugment => {
                let entry = &self.entries[rng.gen_range(0..self.entries.len())];
                let bin = entry.magnitudes.as_ref().map(|m| rng.gen_range(0..m.len()));
                ops.push(signed_op(entry, bin, rng));
            }
            Preset::Randaugment => {
                for _ in 0..self.recipe.randaugment_n {
                    let entry = &self.entries[rng.gen_range(0..self.entries.len())];
                    ops.push(signed_op(entry, Some(self.recipe.randaugment_m), rng));
                }
            }
            Preset::Autoaugment => {
                for (transform, probability, bin) in IMAGENET_POLICY[rng.gen_range(0..IMAGENET_POLICY.len())] {
                    if rng.gen::<f64>() <= probability {
                        ops.push(signed_op(self.entry(transform), Some(bin), rng));
                    }
                }
            }
        }
        let erase = if self.recipe.random_erase > 0.0 && rng.gen::<f64>() < self.recipe.random_erase {
            erase_box(size, size, rng)
        } else {
            None
        };
        SampleDraw { ops, augmix, erase }
    }
}

/// `entry`'s operation at magnitude `bin` (none for those without), its
/// sign flipped with probability 1/2 where signed.
fn signed_op(entry: &Entry, bin: Option<usize>, rng: &mut impl Rng) -> Op {
    let magnitude = match (&entry.magnitudes, bin) {
        (Some(magnitudes), Some(bin)) => {
            let magnitude = magnitudes[bin];
            if entry.signed && rng.gen::<f64>() <= 0.5 {
                -magnitude
            } else {
                magnitude
            }
        }
        _ => 0.0,
    };
    op_of(entry.transform, magnitude)
}

/// `ColorJitter(brightness, contrast, saturation, hue)`: a random order of
/// the four, then each factor drawn from its range (absent where 0).
fn color_jitter([brightness, contrast, saturation, hue]: [f64; 4], rng: &mut impl Rng) -> Vec<Op> {
    let mut order = [0, 1, 2, 3];
    order.shuffle(rng);
    let b = around_one(brightness, rng).map(|factor| Op::Brightness { factor });
    let c = around_one(contrast, rng).map(|factor| Op::Contrast { factor });
    let s = around_one(saturation, rng).map(|factor| Op::Saturation { factor });
    let h = (hue > 0.0).then(|| Op::Hue { factor: rng.gen_range(-hue..=hue) });
    let ops = [b, c, s, h];
    order.iter().filter_map(|&k| ops[k]).collect()
}

/// A factor in `[max(0, 1 − amount), 1 + amount]`; none for 0.
fn around_one(amount: f64, rng: &mut impl Rng) -> Option<f64> {
    (amount > 0.0).then(|| rng.gen_range((1.0 - amount).max(0.0)..=1.0 + amount))
}

/// `RandomErasing`'s box (scale 0.02–0.33 of the area, ratio 0.3–3.3): ten
/// tries, then none.
pub fn erase_box(height: i64, width: i64, rng: &mut impl Rng) -> Option<CropBox> {
    let area = (height * width) as f64;
    let (log_min, log_max) = (0.3f64.ln(), 3.3f64.ln());
    for _ in 0..10 {
        let erase_area = area * rng.gen_range(0.02..0.33);
        let aspect = rng.gen_range(log_min..log_max).exp();
        let h = (erase_area * aspect).sqrt().round_ties_even() as i64;
        let w = (erase_area / aspect).sqrt().round_ties_even() as i64;
        if h < height && w < width {
            let top = rng.gen_range(0..=height - h);
            let left = rng.gen_range(0..=width - w);
            return Some(CropBox { top, left, height: h, width: w });
        }
    }
    None
}

/// What one sample gets after its crop and flip: uint8 operations in order,
/// AugMix's mixture, then an erased box of the normalized image.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SampleDraw {
    pub ops: Vec<Op>,
    pub augmix: Option<AugMixDraw>,
    pub erase: Option<CropBox>,
}
