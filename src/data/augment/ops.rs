//! The pixel operations of the augmentation presets, each equal to
//! torchvision v2's functional op (`torchvision.transforms.v2.functional`)
//! on a `[3, H, W]` uint8 tensor with the same parameters: the same float32
//! arithmetic, truncation to uint8 where torchvision truncates, rounding
//! where it rounds. They draw nothing: parameters come from
//! [`super::draw`].

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// One operation with torchvision's functional parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    Identity,
    /// `F.affine(angle, translate, scale=1, shear, NEAREST or BILINEAR, fill=None, center)`.
    Affine {
        angle: f64,
        translate: [i64; 2],
        shear: [f64; 2],
        center: Option<[f64; 2]>,
        #[serde(default)]
        bilinear: bool,
    },
    /// `F.rotate(angle, NEAREST or BILINEAR, expand=False, fill=None)`.
    Rotate {
        angle: f64,
        #[serde(default)]
        bilinear: bool,
    },
    Brightness {
        factor: f64,
    },
    Saturation {
        factor: f64,
    },
    Contrast {
        factor: f64,
    },
    Sharpness {
        factor: f64,
    },
    Hue {
        factor: f64,
    },
    Posterize {
        bits: u8,
    },
    Solarize {
        threshold: f64,
    },
    Autocontrast,
    Equalize,
    Invert,
}

impl Op {
    /// `image` (`[3, H, W]` uint8) through this operation, uint8.
    pub fn apply(&self, image: &Tensor) -> Tensor {
        match *self {
            Op::Identity => image.shallow_clone(),
            Op::Affine { angle, translate, shear, center, bilinear } => {
                affine(image, angle, translate, shear, center, bilinear)
            }
            Op::Rotate { angle, bilinear } => rotate(image, angle, bilinear),
            Op::Brightness { factor } => to_u8(&(as_float(image) * factor).clamp(0.0, 255.0)),
            Op::Saturation { factor } => blend(image, &grayscale(image), factor),
            Op::Contrast { factor } => {
                let mean = grayscale(image).mean(Kind::Float);
                blend(image, &mean, factor)
            }
            Op::Sharpness { factor } => sharpness(image, factor),
            Op::Hue { factor } => hue(image, factor),
            Op::Posterize { bits } => posterize(image, bits),
            Op::Solarize { threshold } => {
                let above = as_float(image).ge(threshold);
                image.where_self(&above.logical_not(), &invert(image))
            }
            Op::Autocontrast => autocontrast(image),
            Op::Equalize => equalize(image),
            Op::Invert => invert(image),
        }
    }
}

fn as_float(image: &Tensor) -> Tensor {
    image.to_kind(Kind::Float)
}

/// Float to uint8 as torch's `.to(torch.uint8)`: truncated toward zero.
fn to_u8(values: &Tensor) -> Tensor {
    values.to_kind(Kind::Uint8)
}

/// torchvision's `_blend`: `image·ratio + other·(1 − ratio)`, clamped, truncated.
fn blend(image: &Tensor, other: &Tensor, ratio: f64) -> Tensor {
    to_u8(&(as_float(image) * ratio + other * (1.0 - ratio)).clamp(0.0, 255.0))
}

/// torchvision's float luminance of an integer image, floored: `[1, H, W]`.
fn grayscale(image: &Tensor) -> Tensor {
    let rgb = as_float(image);
    let (r, g, b) = (rgb.get(0), rgb.get(1), rgb.get(2));
    (r * 0.2989 + g * 0.587 + b * 0.114).floor().unsqueeze(0)
}

fn invert(image: &Tensor) -> Tensor {
    image.bitwise_not()
}

fn posterize(image: &Tensor, bits: u8) -> Tensor {
    if bits >= 8 {
        return image.shallow_clone();
    }
    let mask = ((1i64 << bits) - 1) << (8 - bits);
    image.bitwise_and(mask)
}

/// The 3×3 smoothing kernel (1s around a 5, over 13) blended with the image
/// inside its one-pixel border, as `adjust_sharpness_image`.
fn sharpness(image: &Tensor, factor: f64) -> Tensor {
    let (_, h, w) = image.size3().unwrap();
    if h <= 2 || w <= 2 {
        return image.shallow_clone();
    }
    let (a, b) = (1.0f32 / 13.0, 5.0f32 / 13.0);
    let kernel = Tensor::from_slice(&[a, a, a, a, b, a, a, a, a]).view([1, 1, 3, 3]).expand([3, 1, 3, 3], false);
    let output = as_float(image);
    let blurred = output.unsqueeze(0).conv2d(&kernel, None::<Tensor>, [1, 1], [0, 0], [1, 1], 3).squeeze_dim(0).round();
    let inner = output.narrow(1, 1, h - 2).narrow(2, 1, w - 2);
    let blended = &inner + (blurred - &inner) * (1.0 - factor);
    let mut output = output.copy();
    output.narrow(1, 1, h - 2).narrow(2, 1, w - 2).copy_(&blended);
    to_u8(&output.clamp_(0.0, 255.0))
}

/// Each channel stretched to the full range (`autocontrast_image`).
fn autocontrast(image: &Tensor) -> Tensor {
    let float = as_float(image);
    let minimum = float.amin([1, 2], true);
    let maximum = float.amax([1, 2], true);
    let flat = maximum.eq_tensor(&minimum);
    let inv_scale = (&maximum - &minimum) * (1.0 / 255.0);
    let minimum = minimum.where_self(&flat.logical_not(), &Tensor::zeros_like(&minimum));
    let inv_scale = inv_scale.where_self(&flat.logical_not(), &Tensor::ones_like(&inv_scale));
    to_u8(&((float - minimum) / inv_scale).clamp(0.0, 255.0))
}

/// Histogram equalization per channel with PIL's lookup table, as `equalize_image`.
fn equalize(image: &Tensor) -> Tensor {
    let (c, h, w) = image.size3().unwrap();
    let pixels: Vec<u8> = Vec::try_from(image.contiguous().view([-1])).expect("uint8 pixels");
    let per_channel = (h * w) as usize;
    let mut out = Vec::with_capacity(pixels.len());
    for channel in pixels.chunks(per_channel) {
        let mut hist = [0u64; 256];
        channel.iter().for_each(|&v| hist[v as usize] += 1);
        let last_used = (0..256).rev().find(|&v| hist[v] > 0).unwrap_or(0);
        let step = (per_channel as u64 - hist[last_used]) / 255;
        if step == 0 {
            out.extend_from_slice(channel);
            continue;
        }
        let mut lut = [0u8; 256];
        let mut cumulative = 0u64;
        for k in 1..256 {
            cumulative += hist[k - 1];
            lut[k] = ((cumulative + step / 2) / step).min(255) as u8;
        }
        out.extend(channel.iter().map(|&v| lut[v as usize]));
    }
    Tensor::from_slice(&out).view([c, h, w])
}

/// torchvision's `_get_inverse_affine_matrix` (inverted), in f64.
fn inverse_affine_matrix(center: [f64; 2], angle: f64, translate: [f64; 2], shear: [f64; 2]) -> [f64; 6] {
    let rot = angle.to_radians();
    let (sx, sy) = (shear[0].to_radians(), shear[1].to_radians());
    let [cx, cy] = center;
    let [tx, ty] = translate;
    let cos_sy = sy.cos();
    let tan_sx = sx.tan();
    let rot_minus_sy = rot - sy;
    let (cx_plus_tx, cy_plus_ty) = (cx + tx, cy + ty);
    let a = rot_minus_sy.cos() / cos_sy;
    let b = -(a * tan_sx + rot.sin());
    let c = rot_minus_sy.sin() / cos_sy;
    let d = rot.cos() - c * tan_sx;
    let mut m = [d, -b, 0.0, -c, a, 0.0];
    m[2] += cx - m[0] * cx_plus_tx - m[1] * cy_plus_ty;
    m[5] += cy - m[3] * cx_plus_tx - m[4] * cy_plus_ty;
    m
}

/// torchvision's `_affine_grid` for an output the size of the input.
fn affine_grid(matrix: [f64; 6], h: i64, w: i64) -> Tensor {
    let options = (Kind::Float, Device::Cpu);
    let xs = Tensor::linspace((1.0 - w as f64) * 0.5, (w as f64 - 1.0) * 0.5, w, options);
    let ys = Tensor::linspace((1.0 - h as f64) * 0.5, (h as f64 - 1.0) * 0.5, h, options);
    let base = Tensor::stack(
        &[xs.view([1, w]).expand([h, w], false), ys.view([h, 1]).expand([h, w], false), Tensor::ones([h, w], options)],
        -1,
    )
    .view([1, h * w, 3]);
    let theta: Vec<f32> = matrix.iter().map(|&v| v as f32).collect();
    let scale = Tensor::from_slice(&[0.5 * w as f32, 0.5 * h as f32]);
    let rescaled = Tensor::from_slice(&theta).view([1, 2, 3]).transpose(1, 2) / scale;
    base.bmm(&rescaled).view([1, h, w, 2])
}

/// Nearest-neighbour (or bilinear) resampling through `matrix`, zeros
/// outside (`_apply_grid_transform` without a fill).
fn grid_transform(image: &Tensor, matrix: [f64; 6], bilinear: bool) -> Tensor {
    let (_, h, w) = image.size3().unwrap();
    const BILINEAR: i64 = 0;
    const NEAREST: i64 = 1;
    const ZEROS: i64 = 0;
    let mode = if bilinear { BILINEAR } else { NEAREST };
    let grid = affine_grid(matrix, h, w);
    let sampled = Tensor::grid_sampler(&as_float(image).unsqueeze(0), &grid, mode, ZEROS, false);
    to_u8(&sampled.squeeze_dim(0).round())
}

fn affine(
    image: &Tensor,
    angle: f64,
    translate: [i64; 2],
    shear: [f64; 2],
    center: Option<[f64; 2]>,
    bilinear: bool,
) -> Tensor {
    let (_, h, w) = image.size3().unwrap();
    let center = center.map_or([0.0, 0.0], |[x, y]| [x - w as f64 * 0.5, y - h as f64 * 0.5]);
    let matrix = inverse_affine_matrix(center, angle, [translate[0] as f64, translate[1] as f64], shear);
    grid_transform(image, matrix, bilinear)
}

fn rotate(image: &Tensor, angle: f64, bilinear: bool) -> Tensor {
    let angle = angle.rem_euclid(360.0);
    let (_, h, w) = image.size3().unwrap();
    match angle {
        0.0 => return image.copy(),
        180.0 => return image.rot90(2, [1, 2]),
        90.0 if h == w => return image.rot90(1, [1, 2]),
        270.0 if h == w => return image.rot90(3, [1, 2]),
        _ => {}
    }
    grid_transform(image, inverse_affine_matrix([0.0, 0.0], -angle, [0.0, 0.0], [0.0, 0.0]), bilinear)
}

/// Hue shifted by `factor` of a turn through HSV in float32 (`adjust_hue_image`).
fn hue(image: &Tensor, factor: f64) -> Tensor {
    let rgb = as_float(image) * (1.0 / 255.0);
    let hsv = rgb_to_hsv(&rgb);
    let h = (hsv.get(0) + factor).remainder(1.0);
    let shifted = hsv_to_rgb(&h, &hsv.get(1), &hsv.get(2));
    to_u8(&(shifted * (255.0 + 1.0 - 1e-3)))
}

fn rgb_to_hsv(image: &Tensor) -> Tensor {
    let (r, g) = (image.get(0), image.get(1));
    let (minc, maxc) = image.aminmax(Some(0), false);
    let eqc = maxc.eq_tensor(&minc);
    let range = &maxc - &minc;
    let ones = Tensor::ones_like(&maxc);
    let s = &range / ones.where_self(&eqc, &maxc);
    let divisor = ones.where_self(&eqc, &range).unsqueeze(0);
    let scaled = (maxc.unsqueeze(0) - image) / divisor;
    let (rc, gc, bc) = (scaled.get(0), scaled.get(1), scaled.get(2));
    let maxc_neq_r = maxc.not_equal_tensor(&r);
    let maxc_eq_g = maxc.eq_tensor(&g);
    let hg = (&rc + 2.0 - &bc) * maxc_eq_g.logical_and(&maxc_neq_r);
    let hr = (&bc - &gc) * maxc_neq_r.logical_not();
    let hb = (&gc + 4.0 - &rc) * maxc_neq_r.logical_and(&maxc_eq_g.logical_not());
    let h = ((hr + hg + hb) * (1.0 / 6.0) + 1.0).fmod(1.0);
    Tensor::stack(&[h, s, maxc], 0)
}

fn hsv_to_rgb(h: &Tensor, s: &Tensor, v: &Tensor) -> Tensor {
    let h6 = h * 6.0;
    let i = h6.floor();
    let f = &h6 - &i;
    let i = i.to_kind(Kind::Int).remainder(6).to_kind(Kind::Int64);
    let sxf = s * &f;
    let one_minus_s: Tensor = 1.0 - s;
    let q = ((-&sxf + 1.0) * v).clamp(0.0, 1.0);
    let t = ((&sxf + &one_minus_s) * v).clamp(0.0, 1.0);
    let p = (&one_minus_s * v).clamp(0.0, 1.0);
    let vpqt = Tensor::stack(&[v.shallow_clone(), p, q, t], 0);
    let select = Tensor::from_slice(&[0i64, 2, 1, 1, 3, 0, 3, 0, 0, 2, 1, 1, 1, 1, 3, 0, 0, 2]).view([3, 6]);
    let (hh, ww) = (i.size()[0], i.size()[1]);
    let chosen = select.index_select(1, &i.view([-1])).view([3, hh, ww]);
    vpqt.gather(0, &chosen, false)
}
