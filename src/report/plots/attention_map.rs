//! Where a captioning network looked, as Xu et al.'s figure 3 (Show, Attend
//! and Tell): for each image a row of panels — the picture, then one per
//! generated word with that step's attention weights over the feature grid
//! upsampled (bilinear) to the picture and laid over it, the picture lit
//! where the weights are high and dimmed where they are low, the word
//! underneath. A long caption wraps onto more rows under the words; images
//! of one map each (a class map per image) sit side by side, four pairs to
//! a row, and the figure is as wide as its widest row.
//!
//! The light is on one scale for every map, not stretched to each map's
//! peak: a location is fully lit at [`FULL_SHARE`] times the uniform weight
//! 1/L and above, so a map spread evenly over the grid stays dim and a
//! peaked one shines.

use super::{blit, plot_err, register_fonts, FONT};
use anyhow::{bail, Context, Result};
use plotters::prelude::*;
use std::path::Path;
use tch::{Kind, Tensor};

/// One image of the figure.
pub struct AttentionPanel {
    /// `[3, H, W]` uint8: the picture as the backbone saw it (after its
    /// centre crop), so that the grid lies over it.
    pub picture: Tensor,
    /// The generated words, one per attention map.
    pub words: Vec<String>,
    /// `[T, h, w]` attention weights over the grid, T ≥ the words (steps
    /// after the last word, such as `<END>`'s, are not drawn).
    pub weights: Tensor,
}

const PANEL: u32 = 150;
const GAP: u32 = 6;
const WORD: u32 = 24;
const COLS: u32 = 8;
const TITLE: u32 = 40;
/// What one character of the title takes at most, in pixels (20 px type).
const TITLE_CHAR_WIDTH: u32 = 12;
/// The characters of a word label that fit under its panel (17 px type).
const LABEL_CHARS: usize = 16;
const IMAGE_GAP: u32 = 14;
/// The picture's share of brightness where the weights are 0; the rest of
/// the range, and a white glow, where they are fully lit.
const DIM: f64 = 0.35;
const GLOW: f64 = 0.45;
/// A weight this many times the uniform 1/L is fully lit.
pub const FULL_SHARE: f64 = 4.0;

const CELL_WIDTH: u32 = PANEL + GAP;
const LINE_HEIGHT: u32 = PANEL + WORD;

/// Rows of panels an image with `words` words takes.
fn lines(words: usize) -> u32 {
    (words as u32).div_ceil(COLS - 1).max(1)
}

/// Where an image's panels start: the top of its block and its first column.
#[derive(Clone, Copy)]
struct Block {
    top: u32,
    column: u32,
}

/// The block of each image, the figure's columns and the blocks' total
/// height: one image per block row, or when no image has more than one
/// word, `COLS / 2` of them side by side.
fn layout(images: &[AttentionPanel]) -> (Vec<Block>, u32, u32) {
    let side_by_side = images.iter().all(|image| image.words.len() <= 1);
    let per_row = if side_by_side { (COLS / 2) as usize } else { 1 };
    let mut blocks = Vec::with_capacity(images.len());
    let mut top = TITLE;
    for row in images.chunks(per_row) {
        for k in 0..row.len() as u32 {
            blocks.push(Block { top, column: 2 * k });
        }
        top += row.iter().map(|image| lines(image.words.len())).max().unwrap_or(1) * LINE_HEIGHT + IMAGE_GAP;
    }
    let widest_caption = images.iter().map(|image| image.words.len() as u32).max().unwrap_or(1);
    let columns = match side_by_side {
        true => 2 * images.len().clamp(1, per_row) as u32,
        false => 1 + widest_caption.min(COLS - 1),
    };
    (blocks, columns, top - TITLE)
}

/// The top-left corner of panel `slot` (0: the picture, then the words) of
/// an image's `block`.
fn corner(block: Block, slot: usize) -> (u32, u32) {
    let slot = slot as u32;
    let (line, col) = match slot {
        0 => (0, 0),
        _ => ((slot - 1) / (COLS - 1), 1 + (slot - 1) % (COLS - 1)),
    };
    (GAP + (block.column + col) * CELL_WIDTH, block.top + line * LINE_HEIGHT)
}

/// `word`, cut to [`LABEL_CHARS`] with an ellipsis when longer, so that a
/// label never runs under the next panel.
fn fitted(word: &str) -> String {
    match word.chars().count() > LABEL_CHARS {
        true => word.chars().take(LABEL_CHARS - 1).chain(['…']).collect(),
        false => word.to_owned(),
    }
}

/// `picture` `[3, h, w]` (0–255) lit by `map` `[h, w]`, the weights of a
/// grid of `locations`.
fn lit(picture: &Tensor, map: &Tensor, locations: i64) -> Tensor {
    let weight = (map * (locations as f64 / FULL_SHARE)).clamp(0.0, 1.0).unsqueeze(0);
    (picture * (&weight * (1.0 - DIM) + DIM) + &weight * (255.0 * GLOW)).clamp(0.0, 255.0)
}

/// The panels of one image as RGB bytes, each [`PANEL`]² (the picture
/// resized to fit, aspect kept, centred on white): the picture, then one
/// lit by each word's map.
fn image_panels(image: &AttentionPanel) -> Result<Vec<Vec<u8>>> {
    let (_, h, w) = image.picture.size3().context("an attention picture is [3, H, W]")?;
    let (steps, grid_h, grid_w) = image.weights.size3().context("attention weights are [T, h, w]")?;
    if (steps as usize) < image.words.len() {
        bail!("{} words but attention weights for {steps} steps", image.words.len());
    }
    let scale = PANEL as f64 / h.max(w) as f64;
    let (nh, nw) = (((h as f64 * scale).round() as i64).max(1), ((w as f64 * scale).round() as i64).max(1));
    let picture =
        image.picture.to_kind(Kind::Float).unsqueeze(0).upsample_bilinear2d([nh, nw], false, None, None).squeeze_dim(0);
    let maps = image
        .weights
        .narrow(0, 0, image.words.len() as i64)
        .to_kind(Kind::Float)
        .unsqueeze(1)
        .upsample_bilinear2d([nh, nw], false, None, None)
        .squeeze_dim(1);
    let on_canvas = |pixels: Tensor| -> Result<Vec<u8>> {
        let side = PANEL as i64;
        let canvas = Tensor::full([3, side, side], 255, (Kind::Uint8, tch::Device::Cpu));
        let (top, left) = ((side - nh) / 2, (side - nw) / 2);
        canvas.narrow(1, top, nh).narrow(2, left, nw).copy_(&pixels.clamp(0.0, 255.0).to_kind(Kind::Uint8));
        Ok(Vec::<u8>::try_from(canvas.permute([1, 2, 0]).contiguous().flatten(0, -1))?)
    };
    let mut panels = vec![on_canvas(picture.shallow_clone())?];
    for t in 0..image.words.len() as i64 {
        panels.push(on_canvas(lit(&picture, &maps.get(t), grid_h * grid_w))?);
    }
    Ok(panels)
}

/// The figure of `images` under `title`, written to `path`.
pub fn attention_maps(path: &Path, title: &str, images: &[AttentionPanel]) -> Result<()> {
    register_fonts();
    let (blocks, columns, blocks_height) = layout(images);
    let title_width = 16 + TITLE_CHAR_WIDTH * title.chars().count() as u32;
    let width = (GAP + columns * CELL_WIDTH).max(title_width);
    let height = TITLE + blocks_height.max(LINE_HEIGHT);
    let mut buffer = vec![255u8; (width * height * 3) as usize];
    for (image, &block) in images.iter().zip(&blocks) {
        let panels = image_panels(image).with_context(|| format!("drawing {}", path.display()))?;
        for (slot, panel) in panels.iter().enumerate() {
            blit(&mut buffer, width, panel, PANEL, corner(block, slot));
        }
    }
    {
        let err = plot_err(path);
        let root = BitMapBackend::with_buffer(&mut buffer, (width, height)).into_drawing_area();
        root.draw(&Text::new(title.to_string(), (8, 9), (FONT, 20))).map_err(&err)?;
        for (image, &block) in images.iter().zip(&blocks) {
            for (k, word) in image.words.iter().enumerate() {
                let (x, y) = corner(block, k + 1);
                let at = (x as i32 + 4, (y + PANEL + 3) as i32);
                root.draw(&Text::new(fitted(word), at, (FONT, 17))).map_err(&err)?;
            }
        }
        root.present().map_err(&err)?;
    }
    let image = image::RgbImage::from_raw(width, height, buffer).context("attention figure buffer size")?;
    image.save(path).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Weights `[T, 7, 7]`, each step 0.07 on one cell (3.4 times the
    /// uniform share, short of full light) and the rest spread evenly.
    fn peaked(cells: &[(i64, i64)]) -> Tensor {
        let weights = Tensor::full([cells.len() as i64, 7, 7], 0.93 / 48.0, tch::kind::FLOAT_CPU);
        for (t, &(row, col)) in cells.iter().enumerate() {
            let _ = weights.get(t as i64).get(row).get(col).fill_(0.07);
        }
        weights
    }

    /// The (row, column) of the 7×7 grid over a panel where the figure is
    /// brightest, and that brightness.
    fn brightest_cell(figure: &image::RgbImage, (x0, y0): (u32, u32)) -> ((u32, u32), u32) {
        let mut best = ((0, 0), 0);
        for y in 0..PANEL {
            for x in 0..PANEL {
                let pixel = figure.get_pixel(x0 + x, y0 + y).0;
                let brightness = pixel.iter().map(|&c| c as u32).sum();
                if brightness > best.1 {
                    best = ((y * 7 / PANEL, x * 7 / PANEL), brightness);
                }
            }
        }
        best
    }

    #[test]
    fn each_word_panel_is_brightest_where_its_attention_peaks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("attention_val.png");
        // A grey picture with a dark patch (over the unattended cell (3, 1)),
        // so that only the weights make a spot bright.
        let picture = Tensor::full([3, 224, 224], 128, (Kind::Uint8, tch::Device::Cpu));
        let _ = picture.narrow(1, 100, 24).narrow(2, 30, 24).fill_(20);
        let words: Vec<String> =
            ["a", "seven", "to", "the", "left", "of", "a", "two", "<END>"].map(String::from).into();
        let cells = [(0, 0), (1, 5), (2, 2), (3, 3), (4, 1), (5, 6), (6, 0), (6, 6), (3, 0)];
        let images = [
            AttentionPanel { picture: picture.shallow_clone(), words: words.clone(), weights: peaked(&cells) },
            AttentionPanel { picture, words: words[..2].to_vec(), weights: peaked(&[(6, 6), (0, 3), (2, 2)]) },
        ];
        attention_maps(&path, "attention (val)", &images).unwrap();
        let figure = image::open(&path).unwrap().into_rgb8();
        let first_height = lines(9) * LINE_HEIGHT + IMAGE_GAP;
        assert_eq!(lines(9), 2, "nine words wrap onto a second row");
        assert_eq!(figure.dimensions(), (GAP + COLS * CELL_WIDTH, TITLE + first_height + LINE_HEIGHT + IMAGE_GAP));
        for (top, expected) in [(TITLE, &cells[..]), (TITLE + first_height, &[(6, 6), (0, 3)][..])] {
            let block = Block { top, column: 0 };
            let ((_, _), plain) = brightest_cell(&figure, corner(block, 0));
            for (k, &(row, col)) in expected.iter().enumerate() {
                let (cell, brightness) = brightest_cell(&figure, corner(block, k + 1));
                assert_eq!(cell, (row as u32, col as u32), "word {k} at top {top}");
                assert!(brightness > plain + 150, "the peak is lit: {brightness} against the picture's {plain}");
            }
        }
        // A map spread evenly over the grid is dim everywhere.
        let uniform = Tensor::full([1, 7, 7], 1.0 / 49.0, tch::kind::FLOAT_CPU);
        let grey = Tensor::full([3, 224, 224], 128, (Kind::Uint8, tch::Device::Cpu));
        let spread = AttentionPanel { picture: grey, words: vec!["a".into()], weights: uniform };
        let spread_path = dir.path().join("spread.png");
        attention_maps(&spread_path, "spread", &[spread]).unwrap();
        let spread_figure = image::open(&spread_path).unwrap().into_rgb8();
        assert_eq!(
            spread_figure.dimensions(),
            (GAP + 2 * CELL_WIDTH, TITLE + LINE_HEIGHT + IMAGE_GAP),
            "one pair wide"
        );
        let (_, brightness) = brightest_cell(&spread_figure, corner(Block { top: TITLE, column: 0 }, 1));
        assert!(brightness < 128 * 3, "a uniform map is not lit: {brightness}");
        // The picture's far corner is dimmed in a panel whose peak is elsewhere.
        let (x, y) = corner(Block { top: TITLE, column: 0 }, 1);
        let far = figure.get_pixel(x + PANEL - 3, y + PANEL - 3).0;
        assert!(far.iter().all(|&c| c < 100), "{far:?}");
        let short = AttentionPanel {
            picture: Tensor::zeros([3, 8, 8], (Kind::Uint8, tch::Device::Cpu)),
            words,
            weights: peaked(&[(0, 0)]),
        };
        let error = format!("{:#}", attention_maps(&path, "x", &[short]).unwrap_err());
        assert!(error.ends_with("9 words but attention weights for 1 steps"), "{error}");
    }

    #[test]
    fn images_of_one_map_each_sit_four_pairs_to_a_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("top_losses.png");
        let picture = Tensor::full([3, 224, 224], 128, (Kind::Uint8, tch::Device::Cpu));
        let cells = [(0, 0), (1, 5), (2, 2), (3, 3), (4, 1), (5, 6)];
        let images: Vec<AttentionPanel> = cells
            .iter()
            .map(|&cell| AttentionPanel {
                picture: picture.shallow_clone(),
                words: vec!["bees 0.80 (ants)".into()],
                weights: peaked(&[cell]),
            })
            .collect();
        attention_maps(&path, "top losses", &images).unwrap();
        let figure = image::open(&path).unwrap().into_rgb8();
        let row_height = LINE_HEIGHT + IMAGE_GAP;
        assert_eq!(figure.dimensions(), (GAP + COLS * CELL_WIDTH, TITLE + 2 * row_height), "six pairs in two rows");
        for (k, &(row, col)) in cells.iter().enumerate() {
            let block = Block { top: TITLE + (k as u32 / 4) * row_height, column: 2 * (k as u32 % 4) };
            let (cell, _) = brightest_cell(&figure, corner(block, 1));
            assert_eq!(cell, (row as u32, col as u32), "image {k}'s map");
        }
    }
}
