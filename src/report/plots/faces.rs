//! Figures of a PCA of images: the eigenvalue spectrum on a log scale with
//! the variance counts marked, and captioned grids of grey tiles (mean face,
//! eigenfaces, reconstructions).

use super::*;

/// One grey image of a grid, with up to two caption lines.
pub struct Tile {
    /// Row-major grey values, `height × width`.
    pub pixels: Vec<u8>,
    pub height: u32,
    pub width: u32,
    pub caption: String,
}

/// Grey values in `[low, high]` mapped to 0–255 (clamped).
pub fn to_gray_bytes(values: &[f64], low: f64, high: f64) -> Vec<u8> {
    let span = if high > low { high - low } else { 1.0 };
    values.iter().map(|v| (((v - low) / span).clamp(0.0, 1.0) * 255.0).round() as u8).collect()
}

/// Values stretched so that their own minimum is black and maximum white
/// (eigenfaces have no natural grey scale).
pub fn stretched(values: &[f64]) -> Vec<u8> {
    let (low, high) = values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    to_gray_bytes(values, low, high)
}

/// `eigenvalues.png`: every eigenvalue against its index on a log scale,
/// with a labelled vertical line at each of `marks` (a component count),
/// and the legend where none of them runs under it.
pub fn spectrum_chart(path: &Path, title: &str, eigenvalues: &[f64], marks: &[(i64, String)]) -> Result<()> {
    draw_spectrum(path, title, eigenvalues, marks).map(|_| ())
}

/// [`spectrum_chart`], saying where its legend went.
pub(super) fn draw_spectrum(
    path: &Path,
    title: &str,
    eigenvalues: &[f64],
    marks: &[(i64, String)],
) -> Result<legend::Placement> {
    register_fonts();
    let err = plot_err(path);
    let root = BitMapBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(&err)?;
    let points: Vec<(f64, f64)> =
        eigenvalues.iter().enumerate().filter(|(_, &v)| v > 0.0).map(|(i, &v)| ((i + 1) as f64, v)).collect();
    let xs: Vec<f64> = points.iter().map(|p| p.0).collect();
    let (low, high) = points.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let (low, high) = if low <= high { (low / 2.0, high * 2.0) } else { (0.1, 10.0) };
    let axis = x_axis(&xs, false);
    let x_coord = XCoord { range: axis.range, log: false, ticks: axis.ticks.clone() };
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 24))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(x_coord, (low..high).log_scale())
        .map_err(&err)?;
    chart
        .configure_mesh()
        .x_desc("component (by decreasing eigenvalue)")
        .x_label_formatter(&|x| axis.label(*x))
        .y_desc("eigenvalue (log scale)")
        .y_label_formatter(&|y| format!("{y:.0e}"))
        .label_style((FONT, 16))
        .draw()
        .map_err(&err)?;
    let style = BLUE.stroke_width(2);
    chart
        .draw_series(LineSeries::new(points.clone(), style))
        .map_err(&err)?
        .label("eigenvalue")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
    if points.len() <= 100 {
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, style.filled()))).map_err(&err)?;
    }
    let mut lines = vec![points.clone()];
    let mut labels = vec!["eigenvalue".to_owned()];
    for (&(count, ref label), color) in marks.iter().zip([RED, RGBColor(0, 130, 0), BLACK].iter().cycle()) {
        vertical_marker(&mut chart, count as f64, (low, high), color.stroke_width(2), label, &err)?;
        lines.push(vec![(count as f64, low), (count as f64, high)]);
        labels.push(label.clone());
    }
    let placement = legend::place(&chart, SeriesLabelPosition::UpperRight, &labels, &lines)?;
    draw_legend(&mut chart, placement, &err)?;
    root.present().map_err(&err)?;
    Ok(placement)
}

const TITLE_PX: u32 = 34;
const CAPTION_PX: u32 = 40;
const GAP_PX: u32 = 8;

/// A grid of captioned grey tiles, `cols` to a row, under a title. Tiles
/// are enlarged by a whole factor (nearest neighbour: pixels stay visible)
/// to about 130 pixels.
pub fn tile_grid(path: &Path, title: &str, tiles: &[Tile], cols: usize) -> Result<()> {
    register_fonts();
    let (tile_h, tile_w) = tiles.iter().fold((1, 1), |(h, w), t| (t.height.max(h), t.width.max(w)));
    let zoom = (130 / tile_h.max(tile_w)).clamp(1, 8);
    let cell_w = (tile_w * zoom).max(150) + GAP_PX;
    let cell_h = tile_h * zoom + CAPTION_PX + GAP_PX;
    let cols = cols.clamp(1, tiles.len().max(1)) as u32;
    let rows = (tiles.len() as u32).div_ceil(cols);
    let width = (cols * cell_w + GAP_PX).max(8 * title.chars().count() as u32 + 2 * GAP_PX);
    let height = TITLE_PX + rows * cell_h + GAP_PX;
    let mut buffer = vec![255u8; (width * height * 3) as usize];
    let origin = |slot: u32| (GAP_PX + (slot % cols) * cell_w, TITLE_PX + (slot / cols) * cell_h);
    for (slot, tile) in tiles.iter().enumerate() {
        let gray = image::GrayImage::from_raw(tile.width, tile.height, tile.pixels.clone())
            .with_context(|| format!("tile {slot}: {} values for {}x{}", tile.pixels.len(), tile.height, tile.width))?;
        let big =
            image::imageops::resize(&gray, tile.width * zoom, tile.height * zoom, image::imageops::FilterType::Nearest);
        let (x0, y0) = origin(slot as u32);
        for (x, y, pixel) in big.enumerate_pixels() {
            let at = (((y0 + CAPTION_PX + y) * width + x0 + x) * 3) as usize;
            buffer[at..at + 3].fill(pixel.0[0]);
        }
    }
    {
        let err = plot_err(path);
        let root = BitMapBackend::with_buffer(&mut buffer, (width, height)).into_drawing_area();
        root.draw(&Text::new(title.to_owned(), (GAP_PX as i32, 8), (FONT, 18))).map_err(&err)?;
        for (slot, tile) in tiles.iter().enumerate() {
            let (x0, y0) = origin(slot as u32);
            for (line_index, line) in tile.caption.lines().take(2).enumerate() {
                let at = (x0 as i32, (y0 + 2 + 18 * line_index as u32) as i32);
                root.draw(&Text::new(line.to_owned(), at, (FONT, 15))).map_err(&err)?;
            }
        }
        root.present().map_err(&err)?;
    }
    let image = image::RgbImage::from_raw(width, height, buffer).context("grid buffer size")?;
    image.save(path).with_context(|| format!("writing {}", path.display()))
}
