//! Caption samples as the assignment's report shows them: each picture with
//! the sampled caption and the true one under it. A sample without a
//! picture at hand says so in its cell and shows the text.

use super::{blit, plot_err, register_fonts, FONT};
use anyhow::{Context, Result};
use plotters::prelude::*;
use std::path::Path;
use tch::{Kind, Tensor};

/// One cell of the figure.
pub struct CaptionPanel {
    /// `[3, H, W]` uint8, or why there is none.
    pub picture: Result<Tensor, String>,
    pub sampled: String,
    pub truth: String,
}

const PICTURE: u32 = 224;
const CELL_WIDTH: u32 = 300;
const LINE: u32 = 19;
const TEXT_LINES: u32 = 5;
const COLS: u32 = 4;
const TITLE: u32 = 40;
const CHARS_PER_LINE: usize = 34;

/// Words wrapped into lines of at most [`CHARS_PER_LINE`] characters.
fn wrap(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = vec![String::new()];
    for word in text.split_whitespace() {
        let last = lines.last_mut().expect("one line");
        if !last.is_empty() && last.len() + 1 + word.len() > CHARS_PER_LINE {
            lines.push(word.to_string());
        } else {
            if !last.is_empty() {
                last.push(' ');
            }
            last.push_str(word);
        }
    }
    lines
}

/// The picture resized to fit [`PICTURE`]² (aspect kept, centred on white), as RGB bytes.
fn fitted(picture: &Tensor) -> Result<Vec<u8>> {
    let (_, h, w) = picture.size3()?;
    let scale = PICTURE as f64 / h.max(w) as f64;
    let (nh, nw) = (((h as f64 * scale).round() as i64).max(1), ((w as f64 * scale).round() as i64).max(1));
    let resized = picture
        .to_kind(Kind::Float)
        .unsqueeze(0)
        .upsample_bilinear2d([nh, nw], false, None, None)
        .squeeze_dim(0)
        .clamp(0.0, 255.0)
        .to_kind(Kind::Uint8);
    let side = PICTURE as i64;
    let (top, left) = ((side - nh) / 2, (side - nw) / 2);
    let canvas = Tensor::full([3, side, side], 255, (Kind::Uint8, tch::Device::Cpu));
    canvas.narrow(1, top, nh).narrow(2, left, nw).copy_(&resized);
    Ok(Vec::<u8>::try_from(canvas.permute([1, 2, 0]).contiguous().flatten(0, -1))?)
}

/// A grid of `panels` (four across) under `title`, written to `path`.
pub fn caption_samples(path: &Path, title: &str, panels: &[CaptionPanel]) -> Result<()> {
    register_fonts();
    let rows = (panels.len() as u32).div_ceil(COLS).max(1);
    let cell_height = PICTURE + TEXT_LINES * LINE + 12;
    let (width, height) = (COLS * CELL_WIDTH, TITLE + rows * cell_height);
    let mut buffer = vec![255u8; (width * height * 3) as usize];
    let corner = |slot: usize| ((slot as u32 % COLS) * CELL_WIDTH, TITLE + (slot as u32 / COLS) * cell_height);
    for (slot, panel) in panels.iter().enumerate() {
        if let Ok(picture) = &panel.picture {
            let (x, y) = corner(slot);
            blit(&mut buffer, width, &fitted(picture)?, PICTURE, (x + (CELL_WIDTH - PICTURE) / 2, y));
        }
    }
    {
        let err = plot_err(path);
        let root = BitMapBackend::with_buffer(&mut buffer, (width, height)).into_drawing_area();
        root.draw(&Text::new(title.to_string(), (8, 9), (FONT, 20))).map_err(&err)?;
        for (slot, panel) in panels.iter().enumerate() {
            let (x, y) = corner(slot);
            let (x, y) = (x as i32 + 8, y as i32);
            if let Err(why) = &panel.picture {
                let frame = [(x + 30, y + 2), (x + 30 + PICTURE as i32 - 4, y + PICTURE as i32 - 2)];
                root.draw(&Rectangle::new(frame, RGBColor(200, 200, 200).filled())).map_err(&err)?;
                for (k, line) in wrap(why).iter().enumerate().take(8) {
                    let at = (x + 38, y + 80 + k as i32 * LINE as i32);
                    root.draw(&Text::new(line.clone(), at, (FONT, 15))).map_err(&err)?;
                }
            }
            let mut lines: Vec<(String, RGBColor)> = Vec::new();
            let sampled = wrap(&format!("sampled: {}", panel.sampled));
            lines.extend(sampled.into_iter().take(3).map(|l| (l, RGBColor(0, 70, 160))));
            lines.extend(wrap(&format!("true: {}", panel.truth)).into_iter().map(|l| (l, BLACK)));
            for (k, (line, color)) in lines.into_iter().take(TEXT_LINES as usize).enumerate() {
                let at = (x, y + PICTURE as i32 + 6 + k as i32 * LINE as i32);
                root.draw(&Text::new(line, at, (FONT, 16).into_font().color(&color))).map_err(&err)?;
            }
        }
        root.present().map_err(&err)?;
    }
    let image = image::RgbImage::from_raw(width, height, buffer).context("caption grid buffer size")?;
    image.save(path).with_context(|| format!("writing {}", path.display()))
}
