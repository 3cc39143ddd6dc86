//! The x axes of line charts: whole-number ticks where the data are whole
//! numbers (epochs, iterations, sizes), a tick step that leaves room between
//! labels, and a range padded so that no point or marker sits on the frame.

use super::*;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};

/// Pixels across the plotting area of a 900-pixel-wide [`line_chart`] (less
/// the margins and the y label area).
pub(super) const PLOT_WIDTH_PX: f64 = 900.0 - 2.0 * 20.0 - 70.0;
/// About how wide one character of a tick label (DejaVu Sans, 16 px) is.
pub(super) const LABEL_CHAR_PX: f64 = 10.0;

/// Where an x axis starts and ends, and where its labelled ticks go.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct XAxis {
    /// The data's range, padded so that no point (and no marker) sits on the frame.
    pub(super) range: (f64, f64),
    pub(super) ticks: Vec<f64>,
    /// Digits after the point in the tick labels ([`SCIENTIFIC`]: none, in powers of ten).
    pub(super) decimals: usize,
}

/// [`XAxis::decimals`] of labels written as `1e-7`.
pub(super) const SCIENTIFIC: usize = usize::MAX;

impl XAxis {
    /// A tick's label: fixed decimals, or `1e-7` on log axes reaching below 0.001.
    pub(super) fn label(&self, x: f64) -> String {
        match self.decimals {
            SCIENTIFIC => format!("{x:.0e}"),
            decimals => format!("{x:.decimals$}"),
        }
    }
}

/// The x axis for data at `xs`: whole-number ticks when every x is a whole
/// number (epochs, iterations, layer sizes), never more than fit side by
/// side, and a range padded past the first and last points.
pub(super) fn x_axis(xs: &[f64], log: bool) -> XAxis {
    let lo = xs.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let (lo, hi) = if lo.is_finite() && hi.is_finite() { (lo, hi) } else { (0.0, 1.0) };
    let whole = xs.iter().all(|x| x.fract() == 0.0);
    if log && lo > 0.0 {
        // Pad by 5% of the (log) span each side; a single value gets a factor 1.5.
        let factor = if hi > lo { (hi / lo).powf(0.05) } else { 1.5 };
        let range = (lo / factor, hi * factor);
        let ticks = log_ticks(xs, range);
        let decimals = match lo < 1e-3 {
            true => SCIENTIFIC,
            false => ticks.iter().map(|&t| decimals_for(t)).max().unwrap_or(0),
        };
        return XAxis { range, ticks, decimals };
    }
    let max_ticks = max_ticks_for(lo, hi, whole);
    let step = tick_step(hi - lo, max_ticks, whole);
    let pad = ((hi - lo) * 0.05).max(step * 0.4);
    let ticks = ticks_on(lo, hi, step);
    XAxis { range: (lo - pad, hi + pad), ticks, decimals: decimals_for(step) }
}

/// How many labels fit along the axis, judged by the widest one.
pub(super) fn max_ticks_for(lo: f64, hi: f64, whole: bool) -> usize {
    let digits = |x: f64| format!("{:.0}", x.abs()).len() + usize::from(x < 0.0);
    let chars = digits(lo).max(digits(hi)) + if whole { 0 } else { 2 };
    // Each label gets its width plus three characters of space.
    ((PLOT_WIDTH_PX / ((chars + 3) as f64 * LABEL_CHAR_PX)) as usize).clamp(2, 15)
}

/// The smallest of 1, 2, 5, 10, 20, 50, … (or a decimal fraction of these,
/// unless `whole`) that puts at most `max_ticks` ticks on a span.
pub(super) fn tick_step(span: f64, max_ticks: usize, whole: bool) -> f64 {
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
pub(super) fn ticks_on(lo: f64, hi: f64, step: f64) -> Vec<f64> {
    let (first, last) = ((lo / step - 1e-9).ceil() as i64, (hi / step + 1e-9).floor() as i64);
    let decimals = decimals_for(step) as i32;
    let scale = 10f64.powi(decimals);
    (first..=last).map(|k| (k as f64 * step * scale).round() / scale).collect()
}

/// Digits after the point that show `x` exactly (up to 6).
pub(super) fn decimals_for(x: f64) -> usize {
    (0..6).find(|&d| ((x * 10f64.powi(d as i32)).round() - x * 10f64.powi(d as i32)).abs() < 1e-6).unwrap_or(6)
}

/// Ticks for a log axis: the data's own x values (a sweep's sizes) when
/// they are few and their labels do not collide, else 1, 2, 5 per decade
/// (or fewer, until the labels fit) between the first and last value.
/// `(lo, hi)` is the padded axis range.
pub(super) fn log_ticks(xs: &[f64], (lo, hi): (f64, f64)) -> Vec<f64> {
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
pub(super) struct XCoord {
    pub(super) range: (f64, f64),
    pub(super) log: bool,
    pub(super) ticks: Vec<f64>,
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
