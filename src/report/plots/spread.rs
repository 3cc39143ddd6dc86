//! A dot chart of one value per run, one row per configuration: every run a
//! dot, the mean a red tick, ± one standard deviation a black bar (for a
//! sweep's seeds).

use super::*;
use crate::metrics::mean_std;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// One row of a [`spread_chart`]: its label and the values of its runs.
pub struct SpreadRow {
    pub label: String,
    pub values: Vec<f64>,
}

/// Draws `rows` (top to bottom) against a value axis named `x_label`.
pub fn spread_chart(path: &Path, title: &str, x_label: &str, rows: &[SpreadRow]) -> Result<()> {
    register_fonts();
    let err = plot_err(path);
    let n = rows.len().max(1);
    let label_chars = rows.iter().map(|r| r.label.chars().count()).max().unwrap_or(0);
    let label_px = (label_chars as u32 * 9 + 24).clamp(120, 560);
    let height = 150 + 44 * n as u32;
    let root = BitMapBackend::new(path, (label_px + 760, height)).into_drawing_area();
    root.fill(&WHITE).map_err(&err)?;
    let (left, right_end) = value_range(rows);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 24))
        .margin(20)
        .margin_bottom(44)
        .x_label_area_size(50)
        .y_label_area_size(label_px)
        .build_cartesian_2d(left..right_end, (n as f64 - 0.5)..-0.5)
        .map_err(&err)?;
    chart.configure_mesh().x_desc(x_label).y_labels(0).disable_y_mesh().label_style((FONT, 16)).draw().map_err(&err)?;
    let right = Pos::new(HPos::Right, VPos::Center);
    for (i, row) in rows.iter().enumerate() {
        let y = i as f64;
        let (x0, y0) = chart.backend_coord(&(left, y));
        let style = TextStyle::from((FONT, 16).into_font()).pos(right);
        root.draw(&Text::new(row.label.clone(), (x0 - 8, y0), style)).map_err(&err)?;
        if row.values.is_empty() {
            continue;
        }
        let (mean, std) = mean_std(&row.values);
        let (low, high) = ((mean - std).max(left), (mean + std).min(right_end));
        let bar = BLACK.stroke_width(2);
        chart.draw_series(LineSeries::new([(low, y), (high, y)], bar)).map_err(&err)?;
        for end in [low, high] {
            chart.draw_series(LineSeries::new([(end, y - 0.15), (end, y + 0.15)], bar)).map_err(&err)?;
        }
        let dots = row.values.iter().map(|&v| Circle::new((v, y), 5, BLUE.mix(0.6).filled()));
        chart.draw_series(dots).map_err(&err)?;
        chart.draw_series(LineSeries::new([(mean, y - 0.3), (mean, y + 0.3)], RED.stroke_width(3))).map_err(&err)?;
    }
    let key = "dots: one run each · red: mean · black bar: ± one standard deviation";
    root.draw(&Text::new(key, (20, height as i32 - 24), (FONT, 15))).map_err(&err)?;
    root.present().map_err(&err)?;
    Ok(())
}

/// The value axis: every dot and every bar's ends with a margin, kept
/// within [0, 1] when every value is (accuracies, BLEU: a bar of ± one
/// standard deviation near 1 is cut at 1 rather than running the axis past
/// it).
fn value_range(rows: &[SpreadRow]) -> (f64, f64) {
    let values: Vec<f64> = rows.iter().flat_map(|r| r.values.iter().copied()).collect();
    let ends = rows.iter().filter(|r| !r.values.is_empty()).flat_map(|r| {
        let (mean, std) = mean_std(&r.values);
        [mean - std, mean + std]
    });
    let all: Vec<f64> = values.iter().copied().chain(ends).collect();
    let (lo, hi) = all.iter().fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    let (lo, hi) = if lo <= hi { (lo, hi) } else { (0.0, 1.0) };
    let pad = ((hi - lo) * 0.1).max(0.02);
    let (left, right) = (lo - pad, hi + pad);
    if values.iter().all(|v| (0.0..=1.0).contains(v)) {
        (left.max(0.0), right.min(1.0))
    } else {
        (left, right)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(values: &[f64]) -> SpreadRow {
        SpreadRow { label: "r".into(), values: values.to_vec() }
    }

    /// Issue 27, finding 14: the sweep's results.png ran past 1.0.
    #[test]
    fn a_fraction_axis_stays_within_zero_and_one() {
        let (left, right) = value_range(&[row(&[0.99, 1.0, 0.93]), row(&[0.02, 0.5])]);
        assert_eq!((left, right), (0.0, 1.0));
        let (left, right) = value_range(&[row(&[0.95, 0.96])]);
        assert!(left > 0.9 && right < 1.0, "a narrow range keeps its margin: {left}..{right}");
        let (left, right) = value_range(&[row(&[2.0, 3.0])]);
        assert!(left < 2.0 && right > 3.0, "other values are not clipped: {left}..{right}");
        assert_eq!(value_range(&[row(&[])]), (0.0, 1.0));
    }
}
