//! Decodes one image file into 8-bit RGB, as PIL's `.convert("RGB")` would:
//! grey, palette, alpha and 16-bit images become RGB, CMYK JPEGs are converted,
//! and the EXIF orientation is honoured. A file that cannot be decoded is an
//! error naming the file and the reason; callers decide whether to skip it.

use anyhow::{bail, Context, Result};
use image::{DynamicImage, ImageReader, RgbImage};
use std::path::Path;

/// Images larger than this many pixels are refused (a decompression bomb
/// guard; 8000×8000 photos still fit).
pub const MAX_PIXELS: u64 = 100_000_000;

pub fn decode_rgb(path: &Path) -> Result<RgbImage> {
    Ok(read_and_decode(path)?.1)
}

/// The file's bytes and its decoded pixels.
pub fn read_and_decode(path: &Path) -> Result<(Vec<u8>, RgbImage)> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let rgb = decode_rgb_bytes(&bytes).with_context(|| format!("{}", path.display()))?;
    Ok((bytes, rgb))
}

pub fn decode_rgb_bytes(bytes: &[u8]) -> Result<RgbImage> {
    if bytes.is_empty() {
        bail!("empty file (0 bytes)");
    }
    let mut reader =
        ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format().context("cannot guess the image format")?;
    match reader.format() {
        None => bail!("not an image (unrecognised file header)"),
        Some(image::ImageFormat::Jpeg) if !has_jpeg_end_marker(bytes) => {
            // The decoder would fill the missing part with grey; PIL refuses
            // such files, and so do we.
            bail!("cannot decode: truncated JPEG (no end-of-image marker)")
        }
        Some(_) => {}
    }
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(MAX_PIXELS * 8);
    reader.limits(limits);
    let decoded = reader.decode().map_err(|e| anyhow::anyhow!("cannot decode: {e}"))?;
    if decoded.width() == 0 || decoded.height() == 0 {
        bail!("image has no pixels");
    }
    let oriented = apply_exif_orientation(decoded, exif_orientation(bytes));
    Ok(oriented.to_rgb8())
}

/// Whether a JPEG ends with its end-of-image marker (trailing padding allowed).
fn has_jpeg_end_marker(bytes: &[u8]) -> bool {
    let end = bytes.iter().rposition(|&b| !matches!(b, 0 | b' ' | b'\r' | b'\n' | b'\t')).map_or(0, |i| i + 1);
    bytes[..end].ends_with(&[0xFF, 0xD9])
}

/// The EXIF orientation tag (1–8), or 1 when absent.
fn exif_orientation(bytes: &[u8]) -> u32 {
    let reader = exif::Reader::new();
    reader
        .read_from_container(&mut std::io::Cursor::new(bytes))
        .ok()
        .and_then(|exif| exif.get_field(exif::Tag::Orientation, exif::In::PRIMARY).and_then(|f| f.value.get_uint(0)))
        .unwrap_or(1)
}

fn apply_exif_orientation(img: DynamicImage, orientation: u32) -> DynamicImage {
    match orientation {
        2 => img.fliph(),
        3 => img.rotate180(),
        4 => img.flipv(),
        5 => img.rotate90().fliph(),
        6 => img.rotate90(),
        7 => img.rotate270().fliph(),
        8 => img.rotate270(),
        _ => img,
    }
}
