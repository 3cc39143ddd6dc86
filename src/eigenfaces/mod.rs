//! The eigenfaces exercise as the course sets it, and beyond: a PCA of a
//! face set ([`crate::pca`]) with its numbers (eigenvalues.csv,
//! summary.json) and figures (spectrum, eigenfaces, reconstructions),
//! recognition in eigenspace when faces are grouped by person
//! (recognition.csv, accuracy_vs_k.png), the
//! components saved for later, and the projection of new faces onto them.
//! It orchestrates and reports; the maths is in `pca`, the reading in `data`.

mod components;
mod tables;

pub use components::{project, read_components, report_projections, ComponentsCard, Projection, Saved};

use crate::data::faces::{self, FaceSize, Faces};
use crate::interrupt::{Interrupt, Interrupted};
use crate::pca::recognition::{self, Recognition};
use crate::pca::{self, Divisor, Method, Pca};
use crate::report::plots::faces::{spectrum_chart, stretched, tile_grid, to_gray_bytes, Tile};
use crate::report::plots::{line_chart, Chart, Series};
use crate::report::Reporter;
use crate::run_dir::{RunDir, RunSummary, Start};
use anyhow::{bail, Result};
use plotters::chart::SeriesLabelPosition;
use plotters::style::{BLUE, RED};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// How a face set is analysed and what is written.
#[derive(Debug, Clone)]
pub struct Options {
    pub divisor: Divisor,
    pub method: Method,
    /// `Kind::Double` or `Kind::Float`.
    pub precision: Kind,
    pub device: Device,
    /// Rows and columns of eigenfaces.png (the mean takes the first tile).
    pub grid: (usize, usize),
    pub figures: bool,
    /// Held out per person for recognition, and the split's seed.
    pub test_fraction: f64,
    pub seed: u64,
    /// The run folder, and whether an earlier run there may be replaced.
    pub out: PathBuf,
    pub overwrite: bool,
    /// The options as given, for `summary.json`.
    pub config: serde_json::Value,
}

/// The variance kept with k components, over the whole set.
#[derive(Debug, Clone, Serialize)]
pub struct Rebuilt {
    pub k: i64,
    /// Mean over faces of the squared error summed over pixels, measured
    /// from the faces' coordinates (with the figures only: it costs a
    /// projection of every face onto every component).
    pub mean_squared_error: Option<f64>,
    /// The same per pixel: what the reconstruction figures print as MSE.
    pub mse_per_pixel: Option<f64>,
    /// The same from the eigenvalues: (divisor / N) × the sum of those discarded.
    pub from_discarded_eigenvalues: f64,
    pub variance_kept: f64,
}

/// What a run measured (`summary.json` beside the keys every tool writes).
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub input: String,
    pub faces: usize,
    /// Files of the input folder that are not among the faces, and why.
    pub left_out: Vec<String>,
    pub height: u32,
    pub width: u32,
    pub pixels: usize,
    /// The value of a white pixel (eigenvalues are on this scale, squared).
    pub white: f64,
    pub precision: String,
    pub method: Method,
    /// What the covariance is divided by: "N-1" (scikit-learn, numpy.cov) or "N".
    pub covariance_divisor: Divisor,
    /// What took the eigendecomposition: OpenBLAS (and which) or libtorch.
    pub eigensolver: String,
    pub rank: i64,
    pub total_variance: f64,
    pub top_10_eigenvalues: Vec<f64>,
    pub components_95: i64,
    pub components_99: i64,
    /// 100 × (1 − k / pixels).
    pub reduction_95_percent: f64,
    pub reduction_99_percent: f64,
    pub rebuilt: Vec<Rebuilt>,
    pub recognition: Option<Recognition>,
    pub fit_seconds: f64,
}

/// Loads faces and reports where they came from.
pub fn load(input: &Path, size: Option<FaceSize>, reporter: &dyn Reporter) -> Result<Faces> {
    let faces = faces::load(input, size, reporter)?;
    reporter.line(&faces.description);
    Ok(faces)
}

/// The whole run: PCA, numbers, figures, recognition, saved components.
/// `interrupt` (Ctrl-C) is honoured before each step and never while the
/// results are written: an interrupted run saved nothing, and a folder it
/// made goes again (`RunDir`), while an earlier run there stays whole.
pub fn run(faces: &Faces, options: &Options, interrupt: &Interrupt, reporter: &dyn Reporter) -> Result<Results> {
    let started = Instant::now();
    let stop_if_asked = || match interrupt.requested() {
        true => Err(Interrupted("eigenfaces: interrupted before its results were written; nothing was saved".into())),
        false => Ok(()),
    };
    stop_if_asked()?;
    let dir = RunDir::prepare(&options.out, Start::Fresh, options.overwrite)?;
    let out = dir.path();
    let data = faces.pixels.to_kind(options.precision).to_device(options.device);
    let method = options.method.resolve(faces.len() as i64, faces.size.pixels() as i64);
    announce(faces, options, method, reporter);
    let fit_started = Instant::now();
    let pca = pca::fit(&data, options.divisor, method)?;
    let fit_seconds = fit_started.elapsed().as_secs_f64();
    stop_if_asked()?;
    let varies = pca.total_variance > 0.0; // false for NaN too
    if !varies || pca.rank() == 0 {
        bail!(
            "{}: the {} faces are one image repeated (total variance {:e}): there is nothing to decompose",
            options.config["input"].as_str().unwrap_or("--input"),
            faces.len(),
            pca.total_variance
        );
    }
    let recognition = match &faces.people {
        Some(people) if people.names.len() < 2 => {
            reporter.line(&format!(
                "recognition skipped: the faces are of one person ({}), so every face would be \"recognised\"",
                people.names.first().map_or("", String::as_str)
            ));
            None
        }
        Some(people) => Some(recognise(&data, &people.labels, options)?),
        None => None,
    };
    stop_if_asked()?;
    let summary = summarise(faces, options, &pca, &data, recognition, fit_seconds);
    stop_if_asked()?;
    report_summary(&summary, reporter);
    let written = write_outputs(&pca, faces, &data, &summary, options, out)?;
    // The new results are written: what an earlier run left beside them goes.
    dir.mark_saved();
    let seconds = started.elapsed().as_secs_f64();
    dir.write_summary(&RunSummary::new("eigenfaces", &options.config, options.device, seconds, &summary))?;
    reporter.line(&format!(
        "PCA took {fit_seconds:.3} s (eigendecomposition by {}), the whole run {seconds:.2} s; wrote {}/{{summary.json, {}}}",
        summary.eigensolver,
        out.display(),
        written.join(", ")
    ));
    Ok(summary)
}

/// One line saying which matrix is decomposed, how, and where.
fn announce(faces: &Faces, options: &Options, method: Method, reporter: &dyn Reporter) {
    let (n, d) = (faces.len(), faces.size.pixels());
    let (size, name) = if method == Method::Gram { (n, "Gram") } else { (d, "covariance") };
    reporter.line(&format!(
        "PCA of {n} faces × {d} pixels: eigendecomposition of the {size}×{size} {name} matrix, \
         covariance divided by {}, {} on {}",
        options.divisor.name(),
        precision_name(options.precision),
        crate::device::name(options.device)
    ));
}

fn summarise(
    faces: &Faces,
    options: &Options,
    pca: &Pca,
    data: &Tensor,
    recognition: Option<Recognition>,
    fit_seconds: f64,
) -> Results {
    let eigenvalues = pca.eigenvalues_vec();
    let pixels = faces.size.pixels();
    let (k95, k99) = (pca.components_for(0.95), pca.components_for(0.99));
    let reduction = |k: i64| 100.0 * (1.0 - k as f64 / pixels as f64);
    Results {
        input: faces.description.clone(),
        faces: faces.len(),
        left_out: faces.left_out.clone(),
        height: faces.size.height,
        width: faces.size.width,
        pixels,
        white: faces.white,
        precision: precision_name(options.precision).to_owned(),
        method: pca.method,
        covariance_divisor: options.divisor,
        eigensolver: pca.eigensolver.clone(),
        rank: pca.rank(),
        total_variance: pca.total_variance,
        top_10_eigenvalues: eigenvalues.iter().take(10).copied().collect(),
        components_95: k95,
        components_99: k99,
        reduction_95_percent: reduction(k95),
        reduction_99_percent: reduction(k99),
        rebuilt: rebuild_errors(pca, options.figures.then_some(data), &eigenvalues),
        recognition,
        fit_seconds,
    }
}

/// Writes everything but summary.json; returns the file names written.
fn write_outputs(
    pca: &Pca,
    faces: &Faces,
    data: &Tensor,
    summary: &Results,
    options: &Options,
    out: &Path,
) -> Result<Vec<&'static str>> {
    tables::write_eigenvalues(pca, &out.join("eigenvalues.csv"))?;
    components::save_components(pca, faces, summary, &out.join("components.safetensors"))?;
    let mut written = vec!["eigenvalues.csv", "components.safetensors"];
    if let (Some(recognition), Some(people)) = (&summary.recognition, &faces.people) {
        tables::write_matches(recognition, people, &out.join("recognition.csv"))?;
        written.push("recognition.csv");
    }
    if options.figures {
        figures(pca, faces, data, summary, options.grid, out)?;
        written.extend(["eigenvalues.png", "eigenfaces.png", "reconstructions.png"]);
        if let Some(recognition) = &summary.recognition {
            accuracy_chart(recognition, &out.join("accuracy_vs_k.png"))?;
            written.push("accuracy_vs_k.png");
        }
    }
    Ok(written)
}

fn precision_name(kind: Kind) -> &'static str {
    if kind == Kind::Double {
        "f64"
    } else {
        "f32"
    }
}

/// 1, 5, 10, 25, 50, 100, 250, 500, 1000, … below `rank`, then `rank`.
pub fn rebuild_ladder(rank: i64) -> Vec<i64> {
    let mut ks = vec![1, 5];
    let mut scale = 10;
    while scale < rank {
        ks.extend([scale, scale * 5 / 2, scale * 5]);
        scale *= 10;
    }
    ks.retain(|&k| k < rank);
    ks.push(rank);
    ks
}

/// The variance kept and the reconstruction error for the k of
/// [`rebuild_ladder`]. With `data`, the mean squared error of its faces is
/// measured from one projection onto all components: they are orthonormal,
/// so a face's error with k of them is its squared distance from the mean
/// less its k squared coordinates.
fn rebuild_errors(pca: &Pca, data: Option<&Tensor>, eigenvalues: &[f64]) -> Vec<Rebuilt> {
    let ratio = pca.divisor.of(pca.samples) / pca.samples as f64;
    let fractions = pca.cumulative_fractions();
    let measured = data.map(|data| {
        let spread = (data - &pca.mean).square().sum(Kind::Double).double_value(&[]);
        let by_component = cpu_values(&pca.project(data, pca.rank()).square().sum_dim_intlist(0, false, Kind::Double));
        (spread, by_component, data.size()[0] as f64)
    });
    let pixels = pca.mean.numel() as f64;
    rebuild_ladder(pca.rank())
        .into_iter()
        .map(|k| {
            let kept: f64 = eigenvalues[..k as usize].iter().sum();
            let per_face = measured.as_ref().map(|(spread, by_component, faces)| {
                ((spread - by_component[..k as usize].iter().sum::<f64>()) / faces).max(0.0)
            });
            Rebuilt {
                k,
                mean_squared_error: per_face,
                mse_per_pixel: per_face.map(|e| e / pixels),
                from_discarded_eigenvalues: ratio * (pca.total_variance - kept).max(0.0),
                variance_kept: fractions[k as usize - 1],
            }
        })
        .collect()
}

fn recognise(data: &Tensor, labels: &[usize], options: &Options) -> Result<Recognition> {
    let split = recognition::split_per_person(labels, options.test_fraction, options.seed)?;
    recognition::recognise(data, labels, &split, options.test_fraction, options.seed, options.divisor)
}

fn report_summary(s: &Results, reporter: &dyn Reporter) {
    let top: Vec<String> = s.top_10_eigenvalues.iter().map(|v| format!("{v:.4e}")).collect();
    reporter.line(&format!("top 10 eigenvalues (covariance / {}): {}", s.covariance_divisor.name(), top.join(", ")));
    reporter.line(&format!("rank {}, total variance {:.6e}", s.rank, s.total_variance));
    for (share, k, reduction) in
        [(95, s.components_95, s.reduction_95_percent), (99, s.components_99, s.reduction_99_percent)]
    {
        reporter.line(&format!(
            "{share}% of the variance: {k} components ({} → {k} dimensions, a {} reduction)",
            s.pixels,
            percent(reduction)
        ));
    }
    let discarded = match s.covariance_divisor {
        Divisor::N => "the discarded eigenvalues' sum".to_owned(),
        Divisor::NMinusOne => format!("{}/{} × the discarded eigenvalues' sum", s.faces - 1, s.faces),
    };
    for r in &s.rebuilt {
        let measured = r
            .mean_squared_error
            .zip(r.mse_per_pixel)
            .map(|(e, p)| format!("squared error per face {e:.6e} (MSE per pixel {p:.4e}), "))
            .unwrap_or_default();
        reporter.line(&format!(
            "  k = {:>5}: variance kept {:.4}, {measured}{discarded} {:.6e}",
            r.k, r.variance_kept, r.from_discarded_eigenvalues
        ));
    }
    if let Some(r) = &s.recognition {
        reporter.line(&format!(
            "recognition: {} people, {} training and {} test faces (seed {}): nearest neighbour on raw pixels {:.4}, \
             in eigenspace best {:.4} at k = {}",
            r.people, r.train_faces, r.test_faces, r.seed, r.raw_pixels_accuracy, r.best.accuracy, r.best.k
        ));
        let line: Vec<String> = r.by_k.iter().map(|a| format!("k={} {:.4}", a.k, a.accuracy)).collect();
        reporter.line(&format!("  {}", line.join(", ")));
    }
}

fn figures(pca: &Pca, faces: &Faces, data: &Tensor, summary: &Results, grid: (usize, usize), out: &Path) -> Result<()> {
    let name = faces.description.split(':').next().unwrap_or_default();
    let name = Path::new(name).file_name().map_or(name.to_owned(), |f| f.to_string_lossy().into_owned());
    let marks = [
        (summary.components_95, format!("95% of the variance: {} components", summary.components_95)),
        (summary.components_99, format!("99% of the variance: {} components", summary.components_99)),
    ];
    let title =
        format!("Eigenvalues of {name} ({} faces, covariance / {})", summary.faces, summary.covariance_divisor.name());
    spectrum_chart(&out.join("eigenvalues.png"), &title, &pca.eigenvalues_vec(), &marks)?;
    eigenface_grid(pca, faces, grid, &name, &out.join("eigenfaces.png"))?;
    reconstruction_grid(pca, faces, data, &name, &out.join("reconstructions.png"))
}

fn cpu_values(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_kind(Kind::Double).to_device(Device::Cpu).flatten(0, -1))
        .expect("a flat f64 CPU tensor converts to Vec<f64>")
}

fn tile(faces: &Faces, pixels: Vec<u8>, caption: String) -> Tile {
    Tile { pixels, height: faces.size.height, width: faces.size.width, caption }
}

fn eigenface_grid(pca: &Pca, faces: &Faces, (rows, cols): (usize, usize), name: &str, path: &Path) -> Result<()> {
    let shown = ((rows * cols).saturating_sub(1) as i64).min(pca.rank());
    let mut tiles = vec![tile(faces, to_gray_bytes(&cpu_values(&pca.mean), 0.0, faces.white), "mean face".into())];
    let eigenvalues = pca.eigenvalues_vec();
    for i in 0..shown {
        let share = 100.0 * eigenvalues[i as usize] / pca.total_variance;
        let caption = format!("eigenface {}\nλ {:.3e} ({share:.1}%)", i + 1, eigenvalues[i as usize]);
        tiles.push(tile(faces, stretched(&cpu_values(&pca.components.get(i))), caption));
    }
    let title = format!("{name}: mean face and eigenfaces 1-{shown} (each stretched black to white)");
    tile_grid(path, &title, &tiles, cols)
}

/// Faces spread through the set, each rebuilt from more and more components.
fn reconstruction_grid(pca: &Pca, faces: &Faces, data: &Tensor, name: &str, path: &Path) -> Result<()> {
    let count = faces.len().min(4);
    let picks: Vec<i64> = (0..count).map(|i| (i * faces.len() / count) as i64).collect();
    let ks = rebuild_ladder(pca.rank());
    let d = faces.size.pixels() as f64;
    let mut tiles = Vec::new();
    for &row in &picks {
        let face = data.get(row).unsqueeze(0);
        tiles.push(tile(
            faces,
            to_gray_bytes(&cpu_values(&face), 0.0, faces.white),
            format!("face {}\noriginal", row + 1),
        ));
        for &k in &ks {
            let rebuilt = pca.reconstruct(&pca.project(&face, k));
            let mse = (&rebuilt - &face).square().sum(Kind::Double).double_value(&[]) / d;
            let pixels = to_gray_bytes(&cpu_values(&rebuilt), 0.0, faces.white);
            tiles.push(tile(faces, pixels, format!("k = {k}\nMSE {mse:.2e}")));
        }
    }
    let title =
        format!("{name}: faces rebuilt from k components (MSE: mean squared error per pixel, white = {})", faces.white);
    tile_grid(path, &title, &tiles, ks.len() + 1)
}

fn accuracy_chart(r: &Recognition, path: &Path) -> Result<()> {
    let eigen: Vec<(f64, f64)> = r.by_k.iter().map(|a| (a.k as f64, a.accuracy)).collect();
    let raw = eigen.iter().map(|&(k, _)| (k, r.raw_pixels_accuracy)).collect();
    let title = format!("Recognition: nearest neighbour, {} people, {} test faces", r.people, r.test_faces);
    line_chart(
        path,
        &Chart {
            title: &title,
            x_label: "k, components (log scale)",
            y_label: "test accuracy",
            log_x: true,
            legend: SeriesLabelPosition::LowerRight,
        },
        &[
            Series { name: "first k eigenface coordinates", color: BLUE, points: eigen },
            Series { name: "raw pixels", color: RED, points: raw },
        ],
        None,
    )
}

/// A percentage with two decimals, or as many more as it takes not to
/// round a share below 100 % up to "100.00%" (166 500 → 8 dimensions is a
/// 99.995% reduction).
fn percent(value: f64) -> String {
    let decimals = (2..=8).find(|&d| value >= 100.0 || format!("{value:.d$}") != format!("{:.d$}", 100.0)).unwrap_or(8);
    format!("{value:.decimals$}%")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rebuild_ladder_follows_the_course_steps() {
        assert_eq!(rebuild_ladder(99), [1, 5, 10, 25, 50, 99]);
        assert_eq!(rebuild_ladder(2016), [1, 5, 10, 25, 50, 100, 250, 500, 1000, 2016]);
        assert_eq!(rebuild_ladder(3), [1, 3]);
        assert_eq!(rebuild_ladder(1), [1]);
    }

    /// Issue 27, finding 13: 166 500 → 8 dimensions was "a 100.00% reduction".
    #[test]
    fn a_reduction_short_of_all_is_never_printed_as_100_percent() {
        assert_eq!(super::percent(100.0 * (1.0 - 8.0 / 166_500.0)), "99.995%");
        assert_eq!(super::percent(62.5), "62.50%");
        assert_eq!(super::percent(100.0), "100.00%");
    }

    /// Names the reporter a child test process runs [`tiny_run`] with.
    const CHILD_REPORTER: &str = "TCHLAB_TEST_CHILD_REPORTER";

    /// Six random 4×3 faces analysed without figures into `out`.
    fn tiny_run(out: &Path, reporter: &dyn Reporter) -> Results {
        tch::manual_seed(0);
        let faces = Faces {
            pixels: Tensor::rand([6, 12], (Kind::Double, Device::Cpu)) * 255.0,
            size: FaceSize { height: 4, width: 3 },
            people: None,
            white: 255.0,
            description: "six random faces".to_owned(),
            left_out: Vec::new(),
        };
        let options = Options {
            divisor: Divisor::NMinusOne,
            method: Method::Auto,
            precision: Kind::Double,
            device: Device::Cpu,
            grid: (2, 5),
            figures: false,
            test_fraction: 0.3,
            seed: 0,
            out: out.to_owned(),
            overwrite: false,
            config: serde_json::json!({}),
        };
        run(&faces, &options, &Interrupt::new(), reporter).unwrap()
    }

    /// What this test prints on stdout when run alone in a child process
    /// whose run reports to `reporter` ("terminal" or "capture").
    fn child_stdout(reporter: &str) -> String {
        let test = format!("{}::a_run_reports_to_its_reporter_and_prints_nothing_itself", module_path!());
        let test = test.split_once("::").expect("crate::module").1;
        let child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([test, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_REPORTER, reporter)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&child.stdout).into_owned();
        assert!(child.status.success(), "{stdout}{}", String::from_utf8_lossy(&child.stderr));
        stdout
    }

    /// A library run given a capturing reporter prints nothing on stdout
    /// (a child process shows it, beside one given the terminal's), and
    /// every line it would have printed is in the capture.
    #[test]
    fn a_run_reports_to_its_reporter_and_prints_nothing_itself() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        let capture = crate::report::Capture::default();
        if let Ok(child) = std::env::var(CHILD_REPORTER) {
            let reporter: &dyn Reporter = if child == "terminal" { &crate::report::Terminal } else { &capture };
            tiny_run(&out, reporter);
            return;
        }
        let results = tiny_run(&out, &capture);
        let lines = capture.lines();
        assert!(
            lines[0].starts_with("PCA of 6 faces × 12 pixels: eigendecomposition of the 6×6 Gram matrix"),
            "{lines:?}"
        );
        assert!(lines.contains(&format!("rank {}, total variance {:.6e}", results.rank, results.total_variance)));
        assert!(lines.last().unwrap().starts_with("PCA took "), "{lines:?}");
        assert!(capture.warnings().is_empty());
        assert!(child_stdout("terminal").contains("PCA of 6 faces"), "the check sees what a run prints");
        let quiet = child_stdout("capture");
        assert!(!quiet.contains("PCA") && !quiet.contains("rank"), "a captured run printed: {quiet}");
    }
}
