//! PNG figures with `plotters` and an embedded DejaVu font (so text renders
//! the same on any machine): training curves with the best epoch marked, line
//! charts for sweeps, a dot chart of runs per configuration, a grid of
//! validation predictions, a confusion matrix, caption samples under their
//! pictures, where a captioning network attended word by word, pairs of
//! pictures side by side (a dataset audit's duplicates), and the figures of
//! a PCA of faces ([`faces`]).

use crate::data::loader::{image_tensor, DecodedSplit};
use crate::data::transforms::val_transform;
use crate::metrics::{EpochRow, History};
use anyhow::{Context, Result};
use plotters::prelude::*;
use std::path::Path;
use std::sync::Once;
use tch::{Kind, Tensor};

mod attention_map;
mod axis;
mod caption_grid;
pub mod faces;
mod legend;
mod pair_grid;
mod spread;
#[cfg(test)]
mod tests;

pub use attention_map::{attention_maps, AttentionPanel};
use axis::*;
pub use caption_grid::{caption_samples, CaptionPanel};
pub use pair_grid::{image_pairs, PairPanel};
pub use spread::{spread_chart, SpreadRow};

const FONT: &str = "sans-serif";
const LEGEND_FONT_PX: i32 = 16;

fn register_fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
        let _ = plotters::style::register_font(FONT, FontStyle::Bold, dejavu::sans::bold());
    });
}

fn plot_err<E: std::fmt::Debug>(path: &Path) -> impl Fn(E) -> anyhow::Error + '_ {
    move |e| anyhow::anyhow!("drawing {}: {e:?}", path.display())
}

/// One line of a chart: a name, a colour, and (x, y) points.
pub struct Series<'a> {
    pub name: &'a str,
    pub color: RGBColor,
    pub points: Vec<(f64, f64)>,
}

/// What a line chart says around its data.
pub struct Chart<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub log_x: bool,
    /// Where the legend goes (out of the data's way).
    pub legend: SeriesLabelPosition,
}

/// A line chart with a legend; `marker` draws a labelled vertical line.
/// The legend goes where the chart asks unless a line runs under it
/// (`legend::place`).
///
/// The x axis is labelled at round values that fit side by side (whole
/// numbers when every x is whole, as epochs and iterations are), and padded
/// so that the first and last points and the marker stay off the frame.
pub fn line_chart(path: &Path, chart_spec: &Chart, series: &[Series], marker: Option<(f64, &str)>) -> Result<()> {
    draw_line_chart(path, chart_spec, series, marker).map(|_| ())
}

/// [`line_chart`], saying where its legend went.
fn draw_line_chart(
    path: &Path,
    chart_spec: &Chart,
    series: &[Series],
    marker: Option<(f64, &str)>,
) -> Result<legend::Placement> {
    let &Chart { title, x_label, y_label, log_x, ref legend } = chart_spec;
    register_fonts();
    let err = plot_err(path);
    let root = BitMapBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(&err)?;
    let mut xs: Vec<f64> = series.iter().flat_map(|s| s.points.iter().map(|p| p.0)).collect();
    xs.extend(marker.map(|m| m.0));
    let ys: Vec<f64> = series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).collect();
    let (y_min, y_max) = ys.iter().fold((f64::MAX, f64::MIN), |(a, b), &y| (a.min(y), b.max(y)));
    let (y_min, y_max) = if y_min <= y_max { (y_min, y_max) } else { (0.0, 1.0) };
    let pad = ((y_max - y_min) * 0.08).max(1e-3);
    let axis = x_axis(&xs, log_x);
    let log = log_x && axis.range.0 > 0.0;
    let x_coord = XCoord { range: axis.range, log, ticks: axis.ticks.clone() };
    let y_range = (y_min - pad)..(y_max + pad);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 26))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(x_coord, y_range.clone())
        .map_err(&err)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .x_label_formatter(&|x| axis.label(*x))
        .y_desc(y_label)
        .label_style((FONT, 16))
        .draw()
        .map_err(&err)?;
    draw_series(&mut chart, series, &err)?;
    let mut lines: Vec<Vec<(f64, f64)>> = series.iter().map(|s| s.points.clone()).collect();
    let mut labels: Vec<String> = series.iter().map(|s| s.name.to_owned()).collect();
    if let Some((x, label)) = marker {
        let style = ShapeStyle::from(&BLACK.mix(0.6)).stroke_width(2);
        vertical_marker(&mut chart, x, (y_range.start, y_range.end), style, label, &err)?;
        lines.push(vec![(x, y_range.start), (x, y_range.end)]);
        labels.push(label.to_owned());
    }
    let placement = legend::place(&chart, legend.clone(), &labels, &lines)?;
    draw_legend(&mut chart, placement, &err)?;
    root.present().map_err(&err)?;
    Ok(placement)
}

/// A labelled vertical line at `x`, from `low` to `high`.
fn vertical_marker<DB: DrawingBackend, CT: plotters::coord::CoordTranslate<From = (f64, f64)>>(
    chart: &mut ChartContext<'_, DB, CT>,
    x: f64,
    (low, high): (f64, f64),
    style: ShapeStyle,
    label: &str,
    err: &impl Fn(DrawingAreaErrorKind<DB::ErrorType>) -> anyhow::Error,
) -> Result<()> {
    chart
        .draw_series(LineSeries::new(vec![(x, low), (x, high)], style))
        .map_err(err)?
        .label(label.to_owned())
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
    Ok(())
}

/// The legend of a chart's series, boxed, where `placement` says: opaque
/// where a line runs under it, so that the line does not cross its text.
fn draw_legend<'a, DB: DrawingBackend + 'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    placement: legend::Placement,
    err: &impl Fn(DrawingAreaErrorKind<DB::ErrorType>) -> anyhow::Error,
) -> Result<()> {
    let opacity = if placement.over_a_line { 1.0 } else { 0.8 };
    chart
        .configure_series_labels()
        .label_font((FONT, LEGEND_FONT_PX))
        .background_style(WHITE.mix(opacity))
        .border_style(BLACK)
        .position(placement.position())
        .draw()
        .map_err(err)
}

fn draw_series<DB: DrawingBackend, CT: plotters::coord::CoordTranslate<From = (f64, f64)>>(
    chart: &mut ChartContext<'_, DB, CT>,
    series: &[Series],
    err: &impl Fn(DrawingAreaErrorKind<DB::ErrorType>) -> anyhow::Error,
) -> Result<()> {
    for s in series {
        // Long series (per-iteration losses) get a thin line and no dots.
        let dense = s.points.len() > 100;
        let style = s.color.stroke_width(if dense { 1 } else { 2 });
        chart
            .draw_series(LineSeries::new(s.points.clone(), style))
            .map_err(err)?
            .label(s.name.to_owned())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style.stroke_width(2)));
        if !dense {
            chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 3, style.filled()))).map_err(err)?;
        }
    }
    Ok(())
}

/// `loss.png` and `accuracy.png`: per-epoch train and val curves, with the
/// epoch of the best val accuracy marked.
pub fn training_curves(history: &History, out: &Path) -> Result<()> {
    let points = |phase: &str, f: fn(&EpochRow) -> f64| -> Vec<(f64, f64)> {
        history.phase(phase).iter().map(|r| (r.epoch as f64, f(r))).collect()
    };
    let best = history.best_val().map(|r| (r.epoch as f64, format!("best val acc {:.4} (epoch {})", r.acc, r.epoch)));
    let marker = best.as_ref().map(|(x, l)| (*x, l.as_str()));
    type Metric = fn(&EpochRow) -> f64;
    let charts: [(&str, &str, &str, Metric, SeriesLabelPosition); 2] = [
        ("loss.png", "Loss per epoch", "cross-entropy loss", |r| r.loss, SeriesLabelPosition::UpperRight),
        ("accuracy.png", "Accuracy per epoch", "accuracy", |r| r.acc, SeriesLabelPosition::LowerRight),
    ];
    for (file, title, y_label, metric, legend) in charts {
        let mut series = vec![
            Series { name: "train", color: BLUE, points: points("train", metric) },
            Series { name: "val", color: RED, points: points("val", metric) },
        ];
        // `--ema`: the moving average's val curve beside the model's.
        let ema = points("val_ema", metric);
        if !ema.is_empty() {
            series.push(Series { name: "val (EMA)", color: GREEN, points: ema });
        }
        line_chart(
            &out.join(file),
            &Chart { title, x_label: "epoch", y_label, log_x: false, legend },
            &series,
            marker,
        )?;
    }
    Ok(())
}

/// The marker of the kept epoch (the one whose weights were saved) on a
/// loss chart whose `val` series has a point per epoch: at that point's x,
/// labelled with the epoch and its val loss; none for an epoch not drawn.
pub fn kept_epoch_marker(val: &Series, kept: usize) -> Option<(f64, String)> {
    let &(x, loss) = val.points.get(kept)?;
    Some((x, format!("kept: epoch {kept} (val loss {loss:.4})")))
}

/// The line above the prediction grid: which images it shows and how to read it.
fn grid_title(shown: usize, total: usize, wrong: usize) -> String {
    let which = if shown == total {
        format!("All {total} val images")
    } else {
        format!("{shown} of {total} val images, evenly spaced through the split")
    };
    let wrong = match wrong {
        0 => "none predicted wrong".to_owned(),
        w => format!("{w} of {shown} predicted wrong, framed in red"),
    };
    format!("{which}: predicted class (probability) and true class; {wrong}")
}

/// A grid of (up to 24) validation images, each captioned with the predicted
/// class and its probability and the true class; wrong ones framed in red.
/// A title says how many of the split's images it shows and how many are wrong.
pub fn prediction_grid(split: &DecodedSplit, probs: &Tensor, path: &Path) -> Result<()> {
    register_fonts();
    const CELL: u32 = 224;
    const CAPTION: u32 = 44;
    const COLS: u32 = 6;
    const TITLE: u32 = 40;
    // Spread the picks over the whole split so every class shows up.
    let count = split.len().min(24);
    let picks: Vec<usize> = (0..count).map(|k| k * split.len() / count).collect();
    let predictions: Vec<(usize, f64)> = picks
        .iter()
        .map(|&i| {
            let predicted = probs.get(i as i64).argmax(0, false).int64_value(&[]) as usize;
            (predicted, probs.double_value(&[i as i64, predicted as i64]))
        })
        .collect();
    let wrong = picks.iter().zip(&predictions).filter(|(&i, p)| p.0 != split.labels[i] as usize).count();
    let rows = (count as u32).div_ceil(COLS);
    let (width, height) = (COLS * CELL, TITLE + rows * (CELL + CAPTION));
    let mut buffer = vec![255u8; (width * height * 3) as usize];
    for (slot, &i) in picks.iter().enumerate() {
        let image =
            (val_transform(&image_tensor(&split.rgb(i))) * 255.0).to_kind(Kind::Uint8).permute([1, 2, 0]).contiguous();
        let pixels = Vec::<u8>::try_from(image.flatten(0, -1))?;
        let (x0, y0) = ((slot as u32 % COLS) * CELL, TITLE + (slot as u32 / COLS) * (CELL + CAPTION) + CAPTION);
        blit(&mut buffer, width, &pixels, CELL, (x0, y0));
    }
    {
        let err = plot_err(path);
        let root = BitMapBackend::with_buffer(&mut buffer, (width, height)).into_drawing_area();
        let title = grid_title(count, split.len(), wrong);
        root.draw(&Text::new(title, (8, 9), (FONT, 20))).map_err(&err)?;
        for (slot, (&i, &(predicted, p))) in picks.iter().zip(&predictions).enumerate() {
            let truth = split.labels[i] as usize;
            let ok = predicted == truth;
            let (x0, y0) = ((slot as u32 % COLS * CELL) as i32, (TITLE + slot as u32 / COLS * (CELL + CAPTION)) as i32);
            let color = if ok { RGBColor(0, 110, 0) } else { RED };
            let line1 = format!("pred: {} ({:.2})", split.classes[predicted], p);
            let line2 = format!("true: {}{}", split.classes[truth], if ok { "" } else { "  WRONG" });
            root.draw(&Text::new(line1, (x0 + 6, y0 + 4), (FONT, 17).into_font().color(&color))).map_err(&err)?;
            root.draw(&Text::new(line2, (x0 + 6, y0 + 23), (FONT, 17).into_font().color(&BLACK))).map_err(&err)?;
            if !ok {
                let frame = [(x0 + 2, y0 + CAPTION as i32), (x0 + CELL as i32 - 3, y0 + (CAPTION + CELL) as i32 - 3)];
                root.draw(&Rectangle::new(frame, RED.stroke_width(4))).map_err(&err)?;
            }
        }
        root.present().map_err(&err)?;
    }
    let image = image::RgbImage::from_raw(width, height, buffer).context("grid buffer size")?;
    image.save(path).with_context(|| format!("writing {}", path.display()))
}

/// Copies a `side`² RGB picture into an RGB buffer `width` pixels wide, its
/// top left corner at `corner`.
fn blit(buffer: &mut [u8], width: u32, pixels: &[u8], side: u32, corner: (u32, u32)) {
    let (x0, y0) = corner;
    for row in 0..side {
        let dst = (((y0 + row) * width + x0) * 3) as usize;
        let src = (row * side * 3) as usize;
        buffer[dst..dst + (side * 3) as usize].copy_from_slice(&pixels[src..src + (side * 3) as usize]);
    }
}

/// A confusion matrix (rows: true class, columns: predicted) as a heat map
/// with counts.
pub fn confusion_matrix(matrix: &[Vec<i64>], classes: &[String], path: &Path) -> Result<()> {
    register_fonts();
    let err = plot_err(path);
    let n = classes.len();
    let cell = (480 / n.max(1)).clamp(40, 160) as i32;
    let margin = 150;
    let size = (margin + cell * n as i32 + 40) as u32;
    let root = BitMapBackend::new(path, (size, size)).into_drawing_area();
    root.fill(&WHITE).map_err(&err)?;
    let max = matrix.iter().flatten().copied().max().unwrap_or(1).max(1) as f64;
    root.draw(&Text::new("Confusion matrix (rows: true, columns: predicted)", (10, 10), (FONT, 18))).map_err(&err)?;
    for (r, row) in matrix.iter().enumerate() {
        for (c, &count) in row.iter().enumerate() {
            let shade = 1.0 - 0.75 * count as f64 / max;
            let fill = RGBColor((255.0 * shade) as u8, (255.0 * shade) as u8, 255);
            let (x, y) = (margin + c as i32 * cell, margin + r as i32 * cell);
            root.draw(&Rectangle::new([(x, y), (x + cell, y + cell)], fill.filled())).map_err(&err)?;
            root.draw(&Rectangle::new([(x, y), (x + cell, y + cell)], BLACK)).map_err(&err)?;
            root.draw(&Text::new(count.to_string(), (x + cell / 2 - 12, y + cell / 2 - 10), (FONT, 20)))
                .map_err(&err)?;
        }
    }
    for (i, class) in classes.iter().enumerate() {
        let label: String = class.chars().take(14).collect();
        root.draw(&Text::new(label.clone(), (10, margin + i as i32 * cell + cell / 2 - 8), (FONT, 16)))
            .map_err(&err)?;
        root.draw(&Text::new(label, (margin + i as i32 * cell + 4, margin - 28), (FONT, 16))).map_err(&err)?;
    }
    root.present().map_err(&err)?;
    Ok(())
}
