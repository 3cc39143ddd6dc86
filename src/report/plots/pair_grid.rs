//! Pairs of pictures side by side, each pair under a few lines of text
//! (what the pair is, its two files, how alike they are), two pairs across:
//! the duplicates a dataset audit found. A picture that cannot be shown
//! says why in its place.

use super::{blit, plot_err, register_fonts, FONT};
use anyhow::{Context, Result};
use image::RgbImage;
use plotters::prelude::*;
use std::path::Path;

/// One pair and its text.
pub struct PairPanel {
    pub pictures: [Result<RgbImage, String>; 2],
    /// At most [`TEXT_LINES`] lines, the first in bold colour.
    pub lines: Vec<String>,
    /// Drawn in red (leakage, conflicting classes) rather than dark blue.
    pub alarm: bool,
}

const THUMB: u32 = 200;
const GAP: u32 = 10;
const PAD: u32 = 14;
const LINE: u32 = 18;
const TEXT_LINES: usize = 4;
const COLS: u32 = 2;
const TITLE_LINES: u32 = 2;
const TITLE_LINE: u32 = 24;
/// Characters of a text line that fit over a pair (at 14 px).
const CHARS: usize = 58;

const PANEL_WIDTH: u32 = 2 * THUMB + GAP + 2 * PAD;
const PANEL_HEIGHT: u32 = TEXT_LINES as u32 * LINE + 8 + THUMB + 18;
const TITLE: u32 = TITLE_LINES * TITLE_LINE + 12;

/// `text` cut to [`CHARS`], keeping its end (a path's file name).
fn fit(text: &str) -> String {
    let count = text.chars().count();
    if count <= CHARS {
        return text.to_owned();
    }
    let tail: String = text.chars().skip(count - (CHARS - 1)).collect();
    format!("…{tail}")
}

/// The picture shrunk to fit [`THUMB`]² (aspect kept), centred on white.
fn thumbnail(picture: &RgbImage) -> Vec<u8> {
    let (w, h) = picture.dimensions();
    let scale = THUMB as f64 / w.max(h).max(1) as f64;
    let (nw, nh) =
        (((w as f64 * scale).round() as u32).clamp(1, THUMB), ((h as f64 * scale).round() as u32).clamp(1, THUMB));
    let small = image::imageops::resize(picture, nw, nh, image::imageops::FilterType::Triangle);
    let mut canvas = RgbImage::from_pixel(THUMB, THUMB, image::Rgb([255, 255, 255]));
    image::imageops::overlay(&mut canvas, &small, ((THUMB - nw) / 2) as i64, ((THUMB - nh) / 2) as i64);
    canvas.into_raw()
}

/// `panels` in rows of two under the lines of `title` (at most two), written
/// to `path`; with no panels, `empty` says why in their place.
pub fn image_pairs(path: &Path, title: &[String], panels: &[PairPanel], empty: &str) -> Result<()> {
    register_fonts();
    let rows = (panels.len() as u32).div_ceil(COLS);
    let width = COLS * PANEL_WIDTH;
    let height = TITLE + if panels.is_empty() { 2 * LINE } else { rows * PANEL_HEIGHT };
    let mut buffer = vec![255u8; (width * height * 3) as usize];
    let corner = |slot: usize| ((slot as u32 % COLS) * PANEL_WIDTH, TITLE + (slot as u32 / COLS) * PANEL_HEIGHT);
    let picture_top = TEXT_LINES as u32 * LINE + 8;
    for (slot, panel) in panels.iter().enumerate() {
        let (x, y) = corner(slot);
        for (k, picture) in panel.pictures.iter().enumerate() {
            if let Ok(picture) = picture {
                blit(
                    &mut buffer,
                    width,
                    &thumbnail(picture),
                    THUMB,
                    (x + PAD + k as u32 * (THUMB + GAP), y + picture_top),
                );
            }
        }
    }
    {
        let err = plot_err(path);
        let root = BitMapBackend::with_buffer(&mut buffer, (width, height)).into_drawing_area();
        for (k, line) in title.iter().take(TITLE_LINES as usize).enumerate() {
            let style = (FONT, if k == 0 { 19 } else { 16 });
            root.draw(&Text::new(line.clone(), (8, 8 + k as i32 * TITLE_LINE as i32), style)).map_err(&err)?;
        }
        if panels.is_empty() {
            root.draw(&Text::new(empty.to_owned(), (8, TITLE as i32 + 8), (FONT, 17))).map_err(&err)?;
        }
        for (slot, panel) in panels.iter().enumerate() {
            let (x, y) = corner(slot);
            let (x, y) = ((x + PAD) as i32, y as i32);
            let color = if panel.alarm { RGBColor(200, 0, 0) } else { RGBColor(0, 60, 140) };
            for (k, line) in panel.lines.iter().take(TEXT_LINES).enumerate() {
                let font = if k == 0 {
                    (FONT, 15).into_font().style(FontStyle::Bold).color(&color)
                } else {
                    (FONT, 14).into_font().color(&BLACK)
                };
                root.draw(&Text::new(fit(line), (x, y + 4 + k as i32 * LINE as i32), font)).map_err(&err)?;
            }
            for (k, picture) in panel.pictures.iter().enumerate() {
                let left = x + (k as u32 * (THUMB + GAP)) as i32;
                let top = y + picture_top as i32;
                let frame = [(left, top), (left + THUMB as i32 - 1, top + THUMB as i32 - 1)];
                if let Err(why) = picture {
                    root.draw(&Rectangle::new(frame, RGBColor(225, 225, 225).filled())).map_err(&err)?;
                    for (j, chunk) in why.chars().collect::<Vec<_>>().chunks(26).take(6).enumerate() {
                        let at = (left + 6, top + 60 + j as i32 * LINE as i32);
                        root.draw(&Text::new(chunk.iter().collect::<String>(), at, (FONT, 13))).map_err(&err)?;
                    }
                }
                root.draw(&Rectangle::new(frame, color.stroke_width(if panel.alarm { 3 } else { 1 }))).map_err(&err)?;
            }
        }
        root.present().map_err(&err)?;
    }
    let image = RgbImage::from_raw(width, height, buffer).context("pair grid buffer size")?;
    image.save(path).with_context(|| format!("writing {}", path.display()))
}
