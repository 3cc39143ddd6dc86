//! MixUp and CutMix over a training batch, as torchvision v2's `MixUp` and
//! `CutMix`: one λ ~ Beta(α, α) per batch, each image mixed with the batch
//! rolled by one; CutMix pastes a box sized from λ and corrects λ to the
//! box's true area. With both, each batch takes one of them with probability
//! 1/2 (timm's `switch_prob`). Targets become mixed one-hot vectors, with
//! label smoothing composed as timm's `mixup_target`. The draws for an epoch
//! are made up front from the run's seed ([`draw_epoch`]); this module holds
//! no model and no loss.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{Kind, Tensor};

/// `--mixup ALPHA` and `--cutmix ALPHA`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct MixRecipe {
    pub mixup: Option<f64>,
    pub cutmix: Option<f64>,
}

impl MixRecipe {
    pub fn mixes(&self) -> bool {
        self.mixup.is_some() || self.cutmix.is_some()
    }
}

/// How one batch is mixed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BatchMix {
    MixUp {
        lam: f64,
    },
    /// The box pasted from the rolled batch, `x1..x2` × `y1..y2`, and λ
    /// corrected to the area left.
    CutMix {
        lam: f64,
        x1: i64,
        y1: i64,
        x2: i64,
        y2: i64,
    },
}

impl BatchMix {
    /// CutMix's box around (`r_x`, `r_y`) for `lam` on `h`×`w` images, as
    /// torchvision's `CutMix.make_params`.
    pub fn cutmix(lam: f64, r_x: i64, r_y: i64, h: i64, w: i64) -> Self {
        let r = 0.5 * (1.0 - lam).sqrt();
        let (r_w_half, r_h_half) = ((r * w as f64) as i64, (r * h as f64) as i64);
        let (x1, y1) = ((r_x - r_w_half).max(0), (r_y - r_h_half).max(0));
        let (x2, y2) = ((r_x + r_w_half).min(w), (r_y + r_h_half).min(h));
        let lam = 1.0 - ((x2 - x1) * (y2 - y1)) as f64 / (w * h) as f64;
        BatchMix::CutMix { lam, x1, y1, x2, y2 }
    }

    /// The weight of each image's own label.
    pub fn lam(&self) -> f64 {
        match *self {
            BatchMix::MixUp { lam } | BatchMix::CutMix { lam, .. } => lam,
        }
    }

    /// `images` (`[B, 3, H, W]` float) mixed with themselves rolled by one.
    pub fn images(&self, images: &Tensor) -> Tensor {
        let rolled = images.roll([1], [0]);
        match *self {
            BatchMix::MixUp { lam } => rolled * (1.0 - lam) + images * lam,
            BatchMix::CutMix { x1, y1, x2, y2, .. } => {
                let output = images.copy();
                let patch = |t: &Tensor| t.narrow(2, y1, y2 - y1).narrow(3, x1, x2 - x1);
                patch(&output).copy_(&patch(&rolled));
                output
            }
        }
    }

    /// The mixed targets `[B, classes]` of `labels` (`[B]` class indices):
    /// λ·y + (1 − λ)·y rolled by one, each y one-hot smoothed by
    /// `smoothing` as timm does (off value smoothing/classes).
    pub fn targets(&self, labels: &Tensor, classes: i64, smoothing: f64) -> Tensor {
        let lam = self.lam();
        let off = smoothing / classes as f64;
        let on = 1.0 - smoothing + off;
        let one_hot = labels.one_hot(classes).to_kind(Kind::Float) * (on - off) + off;
        one_hot.roll([1], [0]) * (1.0 - lam) + one_hot * lam
    }

    /// Multi-hot `targets` (`[B, classes]`, multi-label data) mixed as the
    /// images are: λ·y + (1 − λ)·y rolled by one.
    pub fn mixed_targets(&self, targets: &Tensor) -> Tensor {
        let lam = self.lam();
        targets.roll([1], [0]) * (1.0 - lam) + targets * lam
    }

    /// The label counted for training accuracy: each image's own where its
    /// weight is at least 1/2, else its rolled partner's.
    pub fn dominant_labels(&self, labels: &Tensor) -> Tensor {
        if self.lam() >= 0.5 {
            labels.shallow_clone()
        } else {
            labels.roll([1], [0])
        }
    }
}

/// How each of an epoch's `batches` batches of `size`² images is mixed
/// (none without `--mixup`/`--cutmix`), drawn from (`seed`, `epoch`).
pub fn draw_epoch(recipe: &MixRecipe, batches: usize, size: i64, seed: u64, epoch: usize) -> Vec<Option<BatchMix>> {
    if !recipe.mixes() {
        return vec![None; batches];
    }
    // Its own stream, apart from the plan's (seed, epoch) one: "mixup" in ASCII.
    let stream = seed.wrapping_mul(1_000_003).wrapping_add(epoch as u64) ^ 0x006d_6978_7570;
    let mut rng = ChaCha8Rng::seed_from_u64(stream);
    (0..batches).map(|_| Some(draw_batch(recipe, size, &mut rng))).collect()
}

fn draw_batch(recipe: &MixRecipe, size: i64, rng: &mut impl Rng) -> BatchMix {
    let use_cutmix = match (recipe.mixup, recipe.cutmix) {
        (Some(_), Some(_)) => rng.gen::<f64>() < 0.5,
        (None, Some(_)) => true,
        _ => false,
    };
    if use_cutmix {
        let alpha = recipe.cutmix.expect("cutmix chosen");
        let lam = beta(alpha, rng);
        let (r_x, r_y) = (rng.gen_range(0..size), rng.gen_range(0..size));
        BatchMix::cutmix(lam, r_x, r_y, size, size)
    } else {
        BatchMix::MixUp { lam: beta(recipe.mixup.expect("mixup chosen"), rng) }
    }
}

/// A draw of Beta(α, α), as X / (X + Y) with X, Y ~ Gamma(α).
pub fn beta(alpha: f64, rng: &mut impl Rng) -> f64 {
    let (x, y) = (gamma(alpha, rng), gamma(alpha, rng));
    if x + y > 0.0 {
        x / (x + y)
    } else {
        0.5
    }
}

/// Gamma(shape, 1) by Marsaglia and Tsang, boosted for shapes below 1.
pub(super) fn gamma(shape: f64, rng: &mut impl Rng) -> f64 {
    if shape < 1.0 {
        let u: f64 = rng.gen_range(f64::EPSILON..1.0);
        return gamma(shape + 1.0, rng) * u.powf(1.0 / shape);
    }
    let d = shape - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let x = standard_normal(rng);
        let v = (1.0 + c * x).powi(3);
        if v <= 0.0 {
            continue;
        }
        let u: f64 = rng.gen_range(f64::EPSILON..1.0);
        if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
            return d * v;
        }
    }
}

/// A standard normal draw (Box–Muller).
fn standard_normal(rng: &mut impl Rng) -> f64 {
    let u1: f64 = rng.gen_range(f64::EPSILON..1.0);
    let u2: f64 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beta_draws_have_the_distributions_mean_and_variance() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for alpha in [0.2, 1.0, 2.0] {
            let draws: Vec<f64> = (0..20_000).map(|_| beta(alpha, &mut rng)).collect();
            assert!(draws.iter().all(|d| (0.0..=1.0).contains(d)));
            let mean = draws.iter().sum::<f64>() / draws.len() as f64;
            let var = draws.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / draws.len() as f64;
            let expected_var = 1.0 / (4.0 * (2.0 * alpha + 1.0));
            assert!((mean - 0.5).abs() < 0.01, "alpha {alpha}: mean {mean}");
            assert!((var - expected_var).abs() < 0.01, "alpha {alpha}: variance {var} vs {expected_var}");
        }
    }

    #[test]
    fn cutmix_corrects_lambda_to_the_box_area() {
        let mix = BatchMix::cutmix(0.75, 0, 10, 20, 20);
        // r = 0.25: half sides of 5 pixels, clipped at the left edge.
        assert_eq!(mix, BatchMix::CutMix { lam: 1.0 - 50.0 / 400.0, x1: 0, y1: 5, x2: 5, y2: 15 });
    }
}
