//! Perceptual hashes of images, as the `imagehash` package's `phash`: the
//! picture in grey (PIL's `L` weights), shrunk to 32×32, its 2-D DCT-II, and
//! one bit per coefficient of the 8×8 lowest frequencies: whether it is
//! above their median. Re-encoding, resizing and slight crops change few
//! bits; different pictures differ in about half of the 64.

use image::imageops::FilterType;
use image::{GrayImage, RgbImage};

/// The side of the grey square the DCT is taken of.
pub const GREY_SIDE: usize = 32;
/// The side of the square of low frequencies kept (8 × 8 = 64 bits).
const LOW_SIDE: usize = 8;

/// The 64-bit perceptual hash of an image.
pub fn phash(rgb: &RgbImage) -> u64 {
    let small = image::imageops::resize(&grey(rgb), GREY_SIDE as u32, GREY_SIDE as u32, FilterType::Triangle);
    let pixels: Vec<f64> = small.as_raw().iter().map(|&v| v as f64).collect();
    phash_of_grey(&pixels)
}

/// The hash of a [`GREY_SIDE`]² grey picture given row by row: bit
/// `8·row + column` (counted from the most significant) is set when that
/// coefficient of the 8×8 lowest frequencies exceeds their median.
pub fn phash_of_grey(pixels: &[f64]) -> u64 {
    assert_eq!(pixels.len(), GREY_SIDE * GREY_SIDE, "a {GREY_SIDE}x{GREY_SIDE} grey picture");
    let low = low_frequencies(pixels);
    let median = median(&low);
    low.iter().fold(0u64, |bits, &c| (bits << 1) | u64::from(c > median))
}

/// How many of the 64 bits two hashes differ in.
pub fn distance(a: u64, b: u64) -> u32 {
    (a ^ b).count_ones()
}

/// PIL's `convert("L")`: 0.299 R + 0.587 G + 0.114 B in its 16-bit fixed point.
fn grey(rgb: &RgbImage) -> GrayImage {
    let (w, h) = rgb.dimensions();
    let luma = rgb.pixels().map(|p| {
        let [r, g, b] = p.0.map(u32::from);
        ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16) as u8
    });
    GrayImage::from_raw(w, h, luma.collect()).expect("one grey value per pixel")
}

/// The 8×8 lowest coefficients of the unnormalised DCT-II along columns then
/// rows (scipy's `dct(dct(x, axis=0), axis=1)`), row by row.
fn low_frequencies(pixels: &[f64]) -> Vec<f64> {
    let n = GREY_SIDE;
    let basis: Vec<f64> = (0..LOW_SIDE * n)
        .map(|i| {
            let (k, x) = (i / n, i % n);
            2.0 * (std::f64::consts::PI * k as f64 * (2 * x + 1) as f64 / (2 * n) as f64).cos()
        })
        .collect();
    let cos = |k: usize, x: usize| basis[k * n + x];
    // Along the columns: the first LOW_SIDE frequencies of every column.
    let mut by_column = vec![0.0; LOW_SIDE * n];
    for k in 0..LOW_SIDE {
        for col in 0..n {
            by_column[k * n + col] = (0..n).map(|row| cos(k, row) * pixels[row * n + col]).sum();
        }
    }
    // Then along the rows of that.
    let mut low = vec![0.0; LOW_SIDE * LOW_SIDE];
    for k in 0..LOW_SIDE {
        for l in 0..LOW_SIDE {
            low[k * LOW_SIDE + l] = (0..n).map(|col| cos(l, col) * by_column[k * n + col]).sum();
        }
    }
    low
}

/// numpy's median: the middle value, or the mean of the two middle ones.
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, ((x + y) % 256) as u8]))
    }

    #[test]
    fn a_resized_copy_hashes_alike_and_a_transposed_one_does_not() {
        let picture = gradient(320, 240);
        let resized = image::imageops::resize(&picture, 200, 150, FilterType::Lanczos3);
        assert!(distance(phash(&picture), phash(&resized)) <= 2);
        let turned = image::imageops::rotate90(&picture);
        assert!(distance(phash(&picture), phash(&turned)) >= 10);
    }

    #[test]
    fn a_constant_picture_has_only_its_mean() {
        let low = low_frequencies(&vec![10.0; GREY_SIDE * GREY_SIDE]);
        // DC: 2·N·value along each axis; every other coefficient is zero.
        assert!((low[0] - 4.0 * 32.0 * 32.0 * 10.0).abs() < 1e-6);
        assert!(low[1..].iter().all(|c| c.abs() < 1e-6));
        assert_eq!(phash_of_grey(&vec![10.0; GREY_SIDE * GREY_SIDE]) >> 63, 1, "the mean is above the median");
    }

    #[test]
    fn grey_rounds_as_pil() {
        let rgb = RgbImage::from_raw(2, 1, vec![255, 0, 0, 10, 200, 30]).unwrap();
        // Image.frombytes("RGB", (2, 1), ...).convert("L") gives 76 and 124.
        assert_eq!(grey(&rgb).as_raw(), &[76, 124]);
    }
}
