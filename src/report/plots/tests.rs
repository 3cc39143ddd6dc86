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
            let (macro_f1, balanced_acc) = (None, None);
            let lr = 0.001;
            history.push(EpochRow {
                epoch,
                phase: phase.into(),
                loss,
                acc,
                seconds,
                data_wait_seconds,
                lr,
                macro_f1,
                balanced_acc,
            });
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
    let split =
        DecodedSplit::decode(&folder, true, &mut PixelBudget::default(), &indicatif::ProgressBar::hidden()).unwrap();
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

#[test]
fn a_legend_leaves_its_place_for_the_first_one_no_line_runs_under() {
    use SeriesLabelPosition::*;
    let (area, size) = ((800, 500), (300, 80));
    let curve: Vec<(i32, i32)> = (0..=80).map(|i| (i * 10, 20 + i * 5)).collect();
    assert_eq!(
        legend::free_position(UpperRight, size, area, std::slice::from_ref(&curve)),
        UpperRight,
        "nothing under it"
    );
    let marker = vec![(700, 0), (700, 500)];
    let lines = [curve, marker];
    let moved = legend::free_position(UpperRight, size, area, &lines);
    let legend = legend::legend_box(&moved, size, area);
    assert!(legend.right < 700 || legend.left > 700, "{moved:?}: {legend:?}");
    assert!(!legend::crossed(legend, &lines), "{moved:?}: {legend:?}");
}

#[test]
fn a_line_through_a_box_crosses_it_with_no_point_inside() {
    let rect = legend::Rect { left: 10, top: 10, right: 20, bottom: 20 };
    assert!(legend::crossed(rect, &[vec![(0, 0), (30, 30)]]));
    assert!(legend::crossed(rect, &[vec![(15, 0), (15, 100)]]));
    assert!(legend::crossed(rect, &[vec![(12, 12)]]));
    assert!(!legend::crossed(rect, &[vec![(0, 30), (30, 25)]]));
    assert!(!legend::crossed(rect, &[vec![(21, 0), (21, 100)]]));
}

/// The component count reaching `share` of the variance.
fn components_for(eigenvalues: &[f64], share: f64) -> i64 {
    let total: f64 = eigenvalues.iter().sum();
    let mut sum = 0.0;
    1 + eigenvalues
        .iter()
        .take_while(|&&v| {
            sum += v;
            sum < share * total
        })
        .count() as i64
}

/// Finding 14: the legend of eigenvalues.png, always at the upper right,
/// covered the 99 % line of a spectrum that reaches 99 % far to the right.
#[test]
fn the_eigenvalue_legend_stays_off_the_variance_lines() {
    for n in [40, 400, 1000, 3000] {
        let eigenvalues: Vec<f64> = (1..=n).map(|i| 1e4 * (i as f64).powf(-1.6)).collect();
        let marks: Vec<(i64, String)> = [0.95, 0.99]
            .map(|share| components_for(&eigenvalues, share))
            .iter()
            .zip(["95%", "99%"])
            .map(|(&count, share)| (count, format!("{share} of the variance: {count} components")))
            .collect();
        let path = gallery().join(format!("eigenvalues-{n}.png"));
        let placement =
            faces::draw_spectrum(&path, "Eigenvalues (a power-law spectrum)", &eigenvalues, &marks).unwrap();
        assert!(!placement.over_a_line, "{n} eigenvalues, marks {marks:?}: {placement:?}");
    }
}

/// Finding 14: caption's loss.png did not show which epoch's weights were kept.
#[test]
fn the_caption_loss_chart_marks_the_kept_epoch_beside_its_legend() {
    let (epochs, per_epoch) = (10, 40);
    let val_points: Vec<(f64, f64)> = (0..epochs).map(|e| (((e + 1) * per_epoch) as f64, 30.0 - e as f64)).collect();
    let val = || Series { name: "val loss (end of epoch)", color: RED, points: val_points.clone() };
    let train = Series {
        name: "train loss (each minibatch)",
        color: BLUE,
        points: (0..epochs * per_epoch).map(|i| (i as f64, 60.0 * (-(i as f64) / 150.0).exp() + 20.0)).collect(),
    };
    let chart = Chart {
        title: "Captioning loss history",
        x_label: "iteration",
        y_label: "loss",
        log_x: false,
        legend: SeriesLabelPosition::UpperRight,
    };
    for kept in [3, epochs - 1] {
        let (x, label) = kept_epoch_marker(&val(), kept).unwrap();
        assert_eq!(x, val_points[kept].0, "at the kept epoch's val point");
        assert_eq!(label, format!("kept: epoch {kept} (val loss {:.4})", val_points[kept].1));
        let path = gallery().join(format!("caption-loss-kept-{kept}.png"));
        let series = [Series { points: train.points.clone(), ..train }, val()];
        let placement = draw_line_chart(&path, &chart, &series, Some((x, &label))).unwrap();
        assert!(!placement.over_a_line, "kept {kept}: {placement:?}");
    }
    assert!(kept_epoch_marker(&val(), epochs).is_none(), "an epoch not drawn is not marked");
}

#[test]
fn log_axes_reaching_tiny_rates_label_powers_of_ten() {
    let rates: Vec<f64> = (0..100).map(|i| 1e-7 * 1e8f64.powf(i as f64 / 100.0)).collect();
    let axis = x_axis(&rates, true);
    let labels: Vec<String> = axis.ticks.iter().map(|&t| axis.label(t)).collect();
    assert!(labels.contains(&"1e-6".to_owned()) && labels.contains(&"1e0".to_owned()), "{labels:?}");
    assert!(labels.iter().all(|l| l.len() <= 5), "{labels:?}");
    let sizes = x_axis(&[16.0, 64.0, 256.0, 1024.0], true);
    assert_eq!(sizes.label(64.0), "64");
}
