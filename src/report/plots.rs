//! PNG figures with `plotters` and an embedded DejaVu font (so text renders
//! the same on any machine): training curves with the best epoch marked, line
//! charts for sweeps, a grid of validation predictions, a confusion matrix.

use crate::data::loader::{image_tensor, DecodedSplit};
use crate::data::transforms::val_transform;
use crate::metrics::{EpochRow, History};
use anyhow::{Context, Result};
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::prelude::*;
use std::path::Path;
use std::sync::Once;
use tch::{Kind, Tensor};

const FONT: &str = "sans-serif";

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

/// Pixels across the plotting area of a 900-pixel-wide [`line_chart`] (less
/// the margins and the y label area).
const PLOT_WIDTH_PX: f64 = 900.0 - 2.0 * 20.0 - 70.0;
/// About how wide one character of a tick label (DejaVu Sans, 16 px) is.
const LABEL_CHAR_PX: f64 = 10.0;

/// Where an x axis starts and ends, and where its labelled ticks go.
#[derive(Debug, Clone, PartialEq)]
struct XAxis {
    /// The data's range, padded so that no point (and no marker) sits on the frame.
    range: (f64, f64),
    ticks: Vec<f64>,
    /// Digits after the point in the tick labels.
    decimals: usize,
}

impl XAxis {
    fn label(&self, x: f64) -> String {
        format!("{x:.*}", self.decimals)
    }
}

/// The x axis for data at `xs`: whole-number ticks when every x is a whole
/// number (epochs, iterations, layer sizes), never more than fit side by
/// side, and a range padded past the first and last points.
fn x_axis(xs: &[f64], log: bool) -> XAxis {
    let lo = xs.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let (lo, hi) = if lo.is_finite() && hi.is_finite() { (lo, hi) } else { (0.0, 1.0) };
    let whole = xs.iter().all(|x| x.fract() == 0.0);
    if log && lo > 0.0 {
        // Pad by 5% of the (log) span each side; a single value gets a factor 1.5.
        let factor = if hi > lo { (hi / lo).powf(0.05) } else { 1.5 };
        let range = (lo / factor, hi * factor);
        let ticks = log_ticks(xs, range);
        let decimals = ticks.iter().map(|&t| decimals_for(t)).max().unwrap_or(0);
        return XAxis { range, ticks, decimals };
    }
    let max_ticks = max_ticks_for(lo, hi, whole);
    let step = tick_step(hi - lo, max_ticks, whole);
    let pad = ((hi - lo) * 0.05).max(step * 0.4);
    let ticks = ticks_on(lo, hi, step);
    XAxis { range: (lo - pad, hi + pad), ticks, decimals: decimals_for(step) }
}

/// How many labels fit along the axis, judged by the widest one.
fn max_ticks_for(lo: f64, hi: f64, whole: bool) -> usize {
    let digits = |x: f64| format!("{:.0}", x.abs()).len() + usize::from(x < 0.0);
    let chars = digits(lo).max(digits(hi)) + if whole { 0 } else { 2 };
    // Each label gets its width plus three characters of space.
    ((PLOT_WIDTH_PX / ((chars + 3) as f64 * LABEL_CHAR_PX)) as usize).clamp(2, 15)
}

/// The smallest of 1, 2, 5, 10, 20, 50, … (or a decimal fraction of these,
/// unless `whole`) that puts at most `max_ticks` ticks on a span.
fn tick_step(span: f64, max_ticks: usize, whole: bool) -> f64 {
    let floor: f64 = if whole { 1.0 } else { 1e-12 };
    if span <= 0.0 {
        return floor.max(1.0);
    }
    let mut magnitude = 10f64.powf((span / max_ticks as f64).log10().floor()).max(floor);
    loop {
        for m in [1.0, 2.0, 5.0] {
            let step = m * magnitude;
            // floor(span / step) + 1 ticks at most.
            if ((span / step).floor() as usize) < max_ticks {
                return step;
            }
        }
        magnitude *= 10.0;
    }
}

/// The multiples of `step` in `[lo, hi]`.
fn ticks_on(lo: f64, hi: f64, step: f64) -> Vec<f64> {
    let (first, last) = ((lo / step - 1e-9).ceil() as i64, (hi / step + 1e-9).floor() as i64);
    let decimals = decimals_for(step) as i32;
    let scale = 10f64.powi(decimals);
    (first..=last).map(|k| (k as f64 * step * scale).round() / scale).collect()
}

/// Digits after the point that show `x` exactly (up to 6).
fn decimals_for(x: f64) -> usize {
    (0..6).find(|&d| ((x * 10f64.powi(d as i32)).round() - x * 10f64.powi(d as i32)).abs() < 1e-6).unwrap_or(6)
}

/// Ticks for a log axis: the data's own x values (a sweep's sizes) when
/// they are few and their labels do not collide, else 1, 2, 5 per decade
/// (or fewer, until the labels fit) between the first and last value.
/// `(lo, hi)` is the padded axis range.
fn log_ticks(xs: &[f64], (lo, hi): (f64, f64)) -> Vec<f64> {
    let px = |a: f64, b: f64| PLOT_WIDTH_PX * (b / a).ln() / (hi / lo).ln();
    let fits = |ticks: &[f64]| {
        ticks.windows(2).all(|w| {
            let half_widths = (format!("{}", w[0]).len() + format!("{}", w[1]).len()) as f64 * LABEL_CHAR_PX / 2.0;
            px(w[0], w[1]) >= half_widths + LABEL_CHAR_PX
        })
    };
    let mut values: Vec<f64> = xs.to_vec();
    values.sort_by(f64::total_cmp);
    values.dedup();
    if values.len() <= 12 && fits(&values) {
        return values;
    }
    for multiples in [&[1.0, 2.0, 5.0][..], &[1.0, 3.0], &[1.0]] {
        let ticks: Vec<f64> = (lo.log10().floor() as i32..=hi.log10().ceil() as i32)
            .flat_map(|e| multiples.iter().map(move |m| m * 10f64.powi(e)))
            .filter(|&t| t >= values[0] && t <= values[values.len() - 1])
            .collect();
        if fits(&ticks) {
            return ticks;
        }
    }
    // Very many decades: every n-th power of ten.
    let decades = (hi / lo).log10();
    let every = (decades / 8.0).ceil().max(1.0) as i32;
    (lo.log10().ceil() as i32..=hi.log10().floor() as i32).filter(|e| e % every == 0).map(|e| 10f64.powi(e)).collect()
}

/// An x coordinate (linear or log) whose labelled ticks are exactly
/// [`XAxis::ticks`]: plotters' own pick gives fractional epochs.
struct XCoord {
    range: (f64, f64),
    log: bool,
    ticks: Vec<f64>,
}

impl Ranged for XCoord {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let t = |x: f64| if self.log { x.ln() } else { x };
        let (lo, hi) = (t(self.range.0), t(self.range.1));
        let fraction = if hi > lo { (t(*value) - lo) / (hi - lo) } else { 0.5 };
        limit.0 + (fraction * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        // Bold grid lines at the ticks; no light ones in between.
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.range.0..self.range.1
    }
}

/// A line chart with a legend; `marker` draws a labelled vertical line.
///
/// The x axis is labelled at round values that fit side by side (whole
/// numbers when every x is whole, as epochs and iterations are), and padded
/// so that the first and last points and the marker stay off the frame.
pub fn line_chart(path: &Path, chart_spec: &Chart, series: &[Series], marker: Option<(f64, &str)>) -> Result<()> {
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
    if let Some((x, label)) = marker {
        let style = ShapeStyle::from(&BLACK.mix(0.6)).stroke_width(2);
        chart
            .draw_series(LineSeries::new(vec![(x, y_range.start), (x, y_range.end)], style))
            .map_err(&err)?
            .label(label.to_owned())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
    }
    chart
        .configure_series_labels()
        .label_font((FONT, 16))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(legend.clone())
        .draw()
        .map_err(&err)?;
    root.present().map_err(&err)?;
    Ok(())
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
        line_chart(
            &out.join(file),
            &Chart { title, x_label: "epoch", y_label, log_x: false, legend },
            &[
                Series { name: "train", color: BLUE, points: points("train", metric) },
                Series { name: "val", color: RED, points: points("val", metric) },
            ],
            marker,
        )?;
    }
    Ok(())
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
        for row in 0..CELL {
            let dst = (((y0 + row) * width + x0) * 3) as usize;
            let src = (row * CELL * 3) as usize;
            buffer[dst..dst + (CELL * 3) as usize].copy_from_slice(&pixels[src..src + (CELL * 3) as usize]);
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::image_folder::ImageFolder;
    use crate::data::loader::PixelBudget;
    use std::path::PathBuf;

    fn epochs(n: usize) -> Vec<f64> {
        (0..n).map(|e| e as f64).collect()
    }

    /// How far (in pixels) the outermost x values sit inside the frame.
    fn inset_px(axis: &XAxis, xs: &[f64]) -> f64 {
        let (lo, hi) = axis.range;
        let first = xs.iter().copied().fold(f64::INFINITY, f64::min);
        let last = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        PLOT_WIDTH_PX * (first - lo).min(hi - last) / (hi - lo)
    }

    #[test]
    fn epoch_axes_get_whole_ticks_with_a_sensible_step() {
        for (n, step) in [(1, 1), (2, 1), (3, 1), (5, 1), (10, 1), (15, 1), (25, 2), (50, 5), (100, 10), (500, 50)] {
            let xs = epochs(n);
            let axis = x_axis(&xs, false);
            let expected: Vec<f64> = (0..n).step_by(step).map(|e| e as f64).collect();
            assert_eq!(axis.ticks, expected, "{n} epochs");
            assert_eq!(axis.decimals, 0);
            let labels: Vec<String> = axis.ticks.iter().map(|&t| axis.label(t)).collect();
            assert_eq!(labels[0], "0", "{n} epochs: {labels:?}");
            assert!(labels.iter().all(|l| l.chars().all(|c| c.is_ascii_digit())), "{labels:?}");
            assert!(
                inset_px(&axis, &xs) >= 10.0,
                "{n} epochs: first/last point {} px from the frame",
                inset_px(&axis, &xs)
            );
        }
    }

    #[test]
    fn labels_never_crowd() {
        for n in [1usize, 2, 3, 5, 7, 12, 25, 33, 99, 100, 101, 1000, 24_000, 1_000_000] {
            let axis = x_axis(&epochs(n), false);
            let widest = axis.ticks.iter().map(|&t| axis.label(t).len()).max().unwrap() as f64 * LABEL_CHAR_PX;
            let (lo, hi) = axis.range;
            if let [a, b, ..] = axis.ticks[..] {
                let gap = PLOT_WIDTH_PX * (b - a) / (hi - lo);
                assert!(gap >= widest + 2.0 * LABEL_CHAR_PX, "{n}: ticks {gap} px apart, labels {widest} px wide");
            }
            assert!(axis.ticks.len() >= 2 || n == 1, "{n}: {:?}", axis.ticks);
        }
    }

    #[test]
    fn iteration_axes_count_in_round_thousands() {
        let axis = x_axis(&epochs(24_000), false);
        assert_eq!(axis.ticks, [0.0, 5000.0, 10000.0, 15000.0, 20000.0]);
        let axis = x_axis(&epochs(1_960), false);
        assert_eq!(axis.ticks, [0.0, 200.0, 400.0, 600.0, 800.0, 1000.0, 1200.0, 1400.0, 1600.0, 1800.0]);
    }

    #[test]
    fn fractional_axes_get_round_decimal_ticks() {
        let axis = x_axis(&[0.0, 0.25, 0.5, 0.75, 1.0], false);
        let labels: Vec<String> = axis.ticks.iter().map(|&t| axis.label(t)).collect();
        assert_eq!(labels, ["0.0", "0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9", "1.0"]);
    }

    #[test]
    fn a_marker_at_the_first_or_last_epoch_is_off_the_frame() {
        // The marker's x is among the chart's x values; x_axis pads past it.
        let axis = x_axis(&epochs(3), false);
        assert!(axis.range.0 < 0.0 && axis.range.1 > 2.0);
        assert!(inset_px(&axis, &[0.0, 2.0]) >= 10.0);
    }

    #[test]
    fn log_axes_label_a_sweep_by_its_sizes_or_by_1_2_5() {
        let sweep = [64.0, 128.0, 256.0, 512.0, 1024.0];
        assert_eq!(x_axis(&sweep, true).ticks, sweep);
        // The default MLP sweep: 800, 1200, 1600 are too close to label each.
        let default_sweep = [10.0, 50.0, 100.0, 250.0, 500.0, 800.0, 1200.0, 1600.0];
        let axis = x_axis(&default_sweep, true);
        assert_eq!(axis.ticks, [10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0]);
        assert_eq!(axis.label(1000.0), "1000");
        assert!(axis.range.0 < 10.0 && axis.range.1 > 1600.0);
        let wide = x_axis(&[1.0, 1e7], true);
        assert!(wide.ticks.len() >= 2 && wide.ticks.iter().all(|t| t.log10().fract() == 0.0), "{:?}", wide.ticks);
    }

    #[test]
    fn the_grid_title_says_what_it_shows() {
        assert_eq!(
            grid_title(24, 153, 3),
            "24 of 153 val images, evenly spaced through the split: predicted class (probability) and true class; \
             3 of 24 predicted wrong, framed in red"
        );
        assert_eq!(
            grid_title(20, 20, 0),
            "All 20 val images: predicted class (probability) and true class; none predicted wrong"
        );
        assert!(grid_title(5, 5, 1).ends_with("; 1 of 5 predicted wrong, framed in red"), "{}", grid_title(5, 5, 1));
    }

    /// A made-up but realistic fine-tuning history: train loss falling with
    /// noise, val accuracy peaking before the end.
    fn history(n: usize) -> History {
        let mut history = History::default();
        for epoch in 0..n {
            let t = epoch as f64 / n.max(2) as f64;
            let wobble = (epoch as f64 * 2.3).sin() * 0.02;
            for (phase, loss, acc) in [
                ("train", 0.62 * (-1.8 * t).exp() + 0.18 + wobble, 0.68 + 0.24 * (1.0 - (-3.0 * t).exp()) - wobble),
                ("val", 0.34 - 0.12 * t + 0.1 * t * t + wobble, 0.86 + 0.09 * (3.0 * t).sin() / 1.5 + wobble),
            ] {
                let (acc, seconds, data_wait_seconds) = (acc.min(0.99), 12.0, 1.0);
                history.push(EpochRow { epoch, phase: phase.into(), loss, acc, seconds, data_wait_seconds, lr: 0.001 });
            }
        }
        history
    }

    fn gallery() -> PathBuf {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/plot-gallery");
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn png_size(path: &Path) -> (u32, u32) {
        image::image_dimensions(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// Writes the figures to target/plot-gallery/ (to look at) and checks them.
    #[test]
    fn writes_training_curves_for_short_and_long_runs() {
        for n in [1, 2, 3, 5, 25, 100] {
            let out = gallery().join(format!("epochs-{n}"));
            std::fs::create_dir_all(&out).unwrap();
            training_curves(&history(n), &out).unwrap();
            assert_eq!(png_size(&out.join("loss.png")), (900, 600));
            assert_eq!(png_size(&out.join("accuracy.png")), (900, 600));
        }
    }

    #[test]
    fn writes_mnist_style_charts() {
        // Minibatch losses: an exponential fall with hashed noise, and their running mean.
        let noise = |i: u64| (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40) as f64 / (1u64 << 24) as f64 - 0.5;
        let losses: Vec<(f64, f64)> =
            (0..9800u64).map(|i| (i as f64, 2.2 * (-(i as f64) / 900.0).exp() + 0.12 + 0.2 * noise(i))).collect();
        let smoothed: Vec<(f64, f64)> = (0..losses.len())
            .map(|i| {
                let recent = &losses[i.saturating_sub(99)..=i];
                (i as f64, recent.iter().map(|p| p.1).sum::<f64>() / recent.len() as f64)
            })
            .collect();
        let path = gallery().join("loss_history.png");
        let chart = Chart {
            title: "MLP training loss (hidden 800)",
            x_label: "iteration",
            y_label: "training loss",
            log_x: false,
            legend: SeriesLabelPosition::UpperRight,
        };
        let series = [
            Series { name: "minibatch loss", color: RGBColor(150, 170, 230), points: losses },
            Series { name: "mean of the last 100", color: RED, points: smoothed },
        ];
        line_chart(&path, &chart, &series, None).unwrap();
        assert_eq!(png_size(&path), (900, 600));
        let sizes = [10.0, 50.0, 100.0, 250.0, 500.0, 800.0, 1200.0, 1600.0];
        let acc = |base: f64| sizes.iter().map(|&h: &f64| (h, base + 0.015 * (h / 10.0).ln())).collect();
        let path = gallery().join("accuracy_vs_hidden.png");
        let chart = Chart {
            title: "MLP accuracy against hidden size",
            x_label: "hidden size (log scale)",
            y_label: "accuracy",
            log_x: true,
            legend: SeriesLabelPosition::LowerRight,
        };
        let series = [
            Series { name: "train", color: BLUE, points: acc(0.86) },
            Series { name: "val", color: RED, points: acc(0.85) },
        ];
        line_chart(&path, &chart, &series, None).unwrap();
        assert_eq!(png_size(&path), (900, 600));
    }

    #[test]
    fn writes_a_titled_prediction_grid() {
        let data = tempfile::tempdir().unwrap();
        for (class, tint) in [("ants", [200u8, 120, 60]), ("bees", [230, 200, 40])] {
            std::fs::create_dir_all(data.path().join(class)).unwrap();
            for k in 0..15u32 {
                let image = image::RgbImage::from_fn(300, 260, |x, y| {
                    let shade = ((x + y + 20 * k) % 256) as u16;
                    image::Rgb(tint.map(|c| ((u16::from(c) + shade) / 2) as u8))
                });
                image.save(data.path().join(class).join(format!("{k:02}.png"))).unwrap();
            }
        }
        let folder = ImageFolder::scan(data.path()).unwrap();
        let split = DecodedSplit::decode(&folder, true, &mut PixelBudget::default(), &indicatif::ProgressBar::hidden())
            .unwrap();
        // Every seventh image predicted wrong.
        let probs: Vec<f32> = (0..split.len())
            .flat_map(|i| {
                let right = if i % 7 == 3 { 0.3 } else { 0.9 };
                if split.labels[i] == 0 {
                    [right, 1.0 - right]
                } else {
                    [1.0 - right, right]
                }
            })
            .collect();
        let probs = Tensor::from_slice(&probs).view([split.len() as i64, 2]);
        let path = gallery().join("val_predictions.png");
        prediction_grid(&split, &probs, &path).unwrap();
        assert_eq!(png_size(&path), (6 * 224, 40 + 4 * (224 + 44)));
    }
}
