//! Where a chart's legend goes: where its caller prefers, unless a line of
//! the chart (a curve, a marker) would run under the box; then the first
//! place, corners first, that no line crosses.

use super::*;
use plotters::element::MultiLineText;
use SeriesLabelPosition::*;

/// A box in pixels of the plotting area (y grows downwards).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Rect {
    pub left: i32,
    pub top: i32,
    pub right: i32,
    pub bottom: i32,
}

impl Rect {
    /// This box with `px` more on every side.
    pub fn grown(self, px: i32) -> Self {
        Rect { left: self.left - px, top: self.top - px, right: self.right + px, bottom: self.bottom + px }
    }
}

/// The places tried after the preferred one.
const FALLBACKS: [SeriesLabelPosition; 8] =
    [UpperRight, UpperLeft, LowerLeft, LowerRight, UpperMiddle, LowerMiddle, MiddleRight, MiddleLeft];

/// Pixels of a legend around its text, as plotters draws it: the sample
/// line's area beside the labels, and a margin all round.
const SAMPLE_PX: i32 = 30;
const MARGIN_PX: i32 = 10;
/// Plotters keeps a legend this far from the plotting area's edges.
const INSET_PX: i32 = 5;
/// How near a line may come to a legend: the dots on the points, a thick stroke.
const CLEARANCE_PX: i32 = 4;

/// The size in pixels of a legend listing `labels` in the charts' legend font.
pub(super) fn legend_size(labels: &[String]) -> Result<(i32, i32)> {
    let font = TextStyle::from((FONT, LEGEND_FONT_PX).into_font());
    let mut text = MultiLineText::<_, &str>::new((0, 0), &font);
    labels.iter().for_each(|label| text.push_line(label.as_str()));
    let (width, height) = text.estimate_dimension().map_err(|e| anyhow::anyhow!("measuring the legend: {e:?}"))?;
    Ok((width + SAMPLE_PX + 2 * MARGIN_PX, height + 2 * MARGIN_PX))
}

/// The box a legend of `size` takes at `position` in a plotting area of
/// `area` pixels (plotters' own layout).
pub(super) fn legend_box(position: &SeriesLabelPosition, size: (i32, i32), area: (i32, i32)) -> Rect {
    let (left, top) = match position {
        Coordinate(x, y) => (*x, *y),
        _ => (
            match position {
                UpperLeft | MiddleLeft | LowerLeft => INSET_PX,
                UpperMiddle | MiddleMiddle | LowerMiddle => (area.0 - size.0) / 2,
                _ => area.0 - size.0 - INSET_PX,
            },
            match position {
                UpperLeft | UpperMiddle | UpperRight => INSET_PX,
                MiddleLeft | MiddleMiddle | MiddleRight => (area.1 - size.1) / 2,
                _ => area.1 - size.1 - INSET_PX,
            },
        ),
    };
    Rect { left, top, right: left + size.0, bottom: top + size.1 }
}

/// `preferred` when none of `lines` (polylines in the plotting area's
/// pixels) runs under its box, else the first free fallback; `preferred`
/// when every place is crossed.
pub(super) fn free_position(
    preferred: SeriesLabelPosition,
    size: (i32, i32),
    area: (i32, i32),
    lines: &[Vec<(i32, i32)>],
) -> SeriesLabelPosition {
    let free = |position: &SeriesLabelPosition| !crossed(legend_box(position, size, area).grown(CLEARANCE_PX), lines);
    std::iter::once(preferred.clone()).chain(FALLBACKS).find(free).unwrap_or(preferred)
}

/// Whether any segment of `lines` meets `rect`.
pub(super) fn crossed(rect: Rect, lines: &[Vec<(i32, i32)>]) -> bool {
    lines.iter().any(|line| match line.as_slice() {
        [point] => segment_meets(rect, *point, *point),
        points => points.windows(2).any(|pair| segment_meets(rect, pair[0], pair[1])),
    })
}

/// Whether the segment from `a` to `b` meets `rect` (Liang–Barsky clipping).
fn segment_meets(rect: Rect, a: (i32, i32), b: (i32, i32)) -> bool {
    let (x, y) = (f64::from(a.0), f64::from(a.1));
    let (dx, dy) = (f64::from(b.0 - a.0), f64::from(b.1 - a.1));
    let (mut enter, mut leave) = (0.0_f64, 1.0_f64);
    let edges = [
        (-dx, x - f64::from(rect.left)),
        (dx, f64::from(rect.right) - x),
        (-dy, y - f64::from(rect.top)),
        (dy, f64::from(rect.bottom) - y),
    ];
    for (direction, room) in edges {
        if direction == 0.0 {
            if room < 0.0 {
                return false;
            }
            continue;
        }
        let t = room / direction;
        if direction < 0.0 {
            enter = enter.max(t);
        } else {
            leave = leave.min(t);
        }
        if enter > leave {
            return false;
        }
    }
    true
}

/// Where a chart's legend goes, in pixels of the plotting area, and
/// whether a line runs under it there (no place was free).
#[derive(Debug, Clone, Copy)]
pub(super) struct Placement {
    pub legend: Rect,
    pub over_a_line: bool,
}

impl Placement {
    /// The position plotters draws the legend at.
    pub fn position(&self) -> SeriesLabelPosition {
        Coordinate(self.legend.left, self.legend.top)
    }
}

/// The place for the legend of `chart` (its entries: `labels`) given the
/// lines drawn on it in data coordinates (curves, and markers as two-point
/// lines).
pub(super) fn place<DB: DrawingBackend, CT: plotters::coord::CoordTranslate<From = (f64, f64)>>(
    chart: &ChartContext<'_, DB, CT>,
    preferred: SeriesLabelPosition,
    labels: &[String],
    lines: &[Vec<(f64, f64)>],
) -> Result<Placement> {
    let area = chart.plotting_area();
    let (base_x, base_y) = area.get_base_pixel();
    let lines: Vec<Vec<(i32, i32)>> = lines
        .iter()
        .map(|line| {
            line.iter().map(|point| area.map_coordinate(point)).map(|(x, y)| (x - base_x, y - base_y)).collect()
        })
        .collect();
    let (width, height) = area.dim_in_pixel();
    let area = (width as i32, height as i32);
    let size = legend_size(labels)?;
    let legend = legend_box(&free_position(preferred, size, area, &lines), size, area);
    Ok(Placement { legend, over_a_line: crossed(legend.grown(CLEARANCE_PX), &lines) })
}
