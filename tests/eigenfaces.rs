//! The eigenfaces PCA against what is known in advance: synthetic faces
//! built with exact eigenvalues and eigenfaces, scikit-learn's PCA on the
//! real LFW faces (fixtures made at test time), the Gram and covariance
//! paths against each other, and the `eigenfaces` binary end to end.
// Needs the data tier (data/ and models/ fetched; see build.rs).
#![cfg(tchlab_data)]

mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use tch::{Device, Kind, Tensor};
use tchlab::data::npy;
use tchlab::pca::{self, Divisor, Method, Pca};

const HEIGHT: i64 = 12;
const WIDTH: i64 = 10;
/// The synthetic set's eigenvalues, by design.
const VARIANCES: [f64; 10] = [40.0, 25.0, 15.0, 8.0, 5.0, 3.0, 2.0, 1.2, 0.5, 0.3];

/// Orthonormal HEIGHT×WIDTH images: 2-D DCT-II basis images (u, v), by
/// increasing frequency u + v, the constant one left out.
fn dct_images(count: usize) -> Tensor {
    let mut pairs: Vec<(i64, i64)> =
        (0..HEIGHT).flat_map(|u| (0..WIDTH).map(move |v| (u, v))).filter(|&p| p != (0, 0)).collect();
    pairs.sort_by_key(|&(u, v)| (u + v, u));
    let scale = |f: i64, n: i64| if f == 0 { (1.0 / n as f64).sqrt() } else { (2.0 / n as f64).sqrt() };
    let mut values = Vec::new();
    for &(u, v) in pairs.iter().take(count) {
        for y in 0..HEIGHT {
            for x in 0..WIDTH {
                let cy = (std::f64::consts::PI * (2 * y + 1) as f64 * u as f64 / (2 * HEIGHT) as f64).cos();
                let cx = (std::f64::consts::PI * (2 * x + 1) as f64 * v as f64 / (2 * WIDTH) as f64).cos();
                values.push(scale(u, HEIGHT) * scale(v, WIDTH) * cy * cx);
            }
        }
    }
    Tensor::from_slice(&values).view([count as i64, HEIGHT * WIDTH])
}

/// Synthetic faces: a mean face plus the known images times coefficients
/// whose sample covariance is exactly diag(VARIANCES) in `divisor`'s
/// convention (random, then centred and orthogonalised), so the PCA must
/// give VARIANCES as eigenvalues and the known images as components.
struct Synthetic {
    rows: Tensor,
    mean: Tensor,
    basis: Tensor,
}

fn synthetic(faces: i64, divisor: Divisor, seed: i64) -> Synthetic {
    let known = VARIANCES.len() as i64;
    let coefficients = {
        let _rng = common::seeded(seed);
        Tensor::randn([faces, known], (Kind::Double, Device::Cpu))
    };
    let centred = &coefficients - coefficients.mean_dim(0, true, Kind::Double);
    let (orthonormal, _) = Tensor::linalg_qr(&centred, "reduced");
    let spread: Vec<f64> = VARIANCES.iter().map(|v| (v * divisor.of(faces)).sqrt()).collect();
    let coefficients = orthonormal * Tensor::from_slice(&spread);
    let basis = dct_images(VARIANCES.len());
    let ys = Tensor::arange(HEIGHT, (Kind::Double, Device::Cpu)).view([HEIGHT, 1]) - HEIGHT as f64 / 2.0;
    let xs = Tensor::arange(WIDTH, (Kind::Double, Device::Cpu)).view([1, WIDTH]) - WIDTH as f64 / 2.0;
    let mean = ((ys.square() + xs.square()) / -20.0).exp().view([HEIGHT * WIDTH]) * 80.0 + 90.0;
    Synthetic { rows: coefficients.mm(&basis) + &mean, mean, basis }
}

fn values(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_kind(Kind::Double).flatten(0, -1)).unwrap()
}

fn assert_relative(got: &[f64], expected: &[f64], tolerance: f64, what: &str) {
    assert_eq!(got.len(), expected.len(), "{what}: lengths");
    for (i, (g, e)) in got.iter().zip(expected).enumerate() {
        let error = (g - e).abs() / e.abs();
        assert!(error <= tolerance, "{what} [{i}]: {g} vs {e}, relative error {error:e} > {tolerance:e}");
    }
}

/// |cos| of the angle between matching rows of `a` and `b`, at least 1 − tolerance.
fn assert_parallel_rows(a: &Tensor, b: &Tensor, tolerance: f64, what: &str) {
    let dot = values(&(a * b).sum_dim_intlist(1, false, Kind::Double));
    let norm_a = values(&a.square().sum_dim_intlist(1, false, Kind::Double).sqrt());
    let norm_b = values(&b.square().sum_dim_intlist(1, false, Kind::Double).sqrt());
    for i in 0..dot.len() {
        let cos = (dot[i] / (norm_a[i] * norm_b[i])).abs();
        assert!(cos >= 1.0 - tolerance, "{what} row {i}: |cos| = {cos}, 1 − |cos| = {:e}", 1.0 - cos);
    }
}

/// The smallest k whose known variances reach `fraction` of their sum.
fn known_count(fraction: f64) -> i64 {
    let total: f64 = VARIANCES.iter().sum();
    let mut sum = 0.0;
    VARIANCES
        .iter()
        .position(|v| {
            sum += v;
            sum >= fraction * total
        })
        .unwrap() as i64
        + 1
}

#[test]
fn synthetic_eigenvalues_components_and_variance_counts_are_the_known_ones() {
    // 200 faces of 120 pixels take the covariance path, 60 faces the Gram path.
    for (faces, path) in [(200, Method::Covariance), (60, Method::Gram)] {
        for divisor in [Divisor::NMinusOne, Divisor::N] {
            let set = synthetic(faces, divisor, 3);
            let pca = pca::fit(&set.rows, divisor, Method::Auto).unwrap();
            let what = format!("{faces} faces, {}, divisor {}", path.name(), divisor.name());
            assert_eq!(pca.method, path, "{what}");
            assert_eq!(pca.rank(), VARIANCES.len() as i64, "{what}: rank");
            assert_relative(&pca.eigenvalues_vec(), &VARIANCES, 1e-8, &format!("{what}: eigenvalues"));
            assert_parallel_rows(&pca.components, &set.basis, 1e-8, &format!("{what}: components"));
            assert!((&pca.mean - &set.mean).abs().max().double_value(&[]) < 1e-10, "{what}: mean");
            assert_eq!(pca.components_for(0.95), known_count(0.95), "{what}: 95% count");
            assert_eq!(pca.components_for(0.99), known_count(0.99), "{what}: 99% count");
        }
    }
    assert_eq!((known_count(0.95), known_count(0.99)), (6, 8), "the design's cumulative shares");
}

/// Mean over faces of the squared error with k components, against
/// (divisor / N) × the sum of the eigenvalues discarded, for every k that
/// discards some.
fn check_reconstruction_identity(pca: &Pca, rows: &Tensor, what: &str) {
    let eigenvalues = pca.eigenvalues_vec();
    let ratio = pca.divisor.of(pca.samples) / pca.samples as f64;
    for k in 1..pca.rank() {
        let error = pca.squared_errors(rows, k).mean(Kind::Double).double_value(&[]);
        let discarded: f64 = eigenvalues[k as usize..].iter().sum();
        assert_relative(&[error], &[ratio * discarded], 1e-8, &format!("{what}: k = {k}"));
    }
}

#[test]
fn mean_squared_reconstruction_error_is_the_sum_of_the_discarded_eigenvalues() {
    let lfw = npy::read(&lfw_faces()).unwrap().values.view([100, 625]);
    for divisor in [Divisor::N, Divisor::NMinusOne] {
        let set = synthetic(200, divisor, 5);
        check_reconstruction_identity(&pca::fit(&set.rows, divisor, Method::Auto).unwrap(), &set.rows, "synthetic");
        check_reconstruction_identity(&pca::fit(&lfw, divisor, Method::Auto).unwrap(), &lfw, "LFW");
    }
}

#[test]
fn gram_and_covariance_paths_agree() {
    let lfw = npy::read(&lfw_faces()).unwrap().values.view([100, 625]);
    let synthetic_rows = synthetic(200, Divisor::NMinusOne, 9).rows;
    for (rows, what) in [(&lfw, "LFW (100 < 625)"), (&synthetic_rows, "synthetic (200 > 120)")] {
        let gram = pca::fit(rows, Divisor::NMinusOne, Method::Gram).unwrap();
        let covariance = pca::fit(rows, Divisor::NMinusOne, Method::Covariance).unwrap();
        assert_eq!((gram.method, covariance.method), (Method::Gram, Method::Covariance));
        assert_eq!(gram.rank(), covariance.rank(), "{what}: rank");
        let top = gram.rank().min(50);
        let (g, c) = (gram.eigenvalues_vec(), covariance.eigenvalues_vec());
        assert_relative(&g[..top as usize], &c[..top as usize], 1e-8, &format!("{what}: eigenvalues"));
        assert_parallel_rows(
            &gram.components.narrow(0, 0, top),
            &covariance.components.narrow(0, 0, top),
            1e-8,
            &format!("{what}: components"),
        );
    }
}

/// scikit-learn's PCA of the LFW faces (top 50), written once per test binary.
fn sklearn_fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = repo().join("target/test-fixtures/pca-lfw");
        let script = repo().join("tests/fixtures/make_pca_fixtures.py");
        run_ok(std::process::Command::new(python()).arg(script).arg(&dir).arg(lfw_faces()).arg("50"));
        dir
    })
}

#[test]
fn lfw_eigenvalues_and_components_match_scikit_learn() {
    let lfw = npy::read(&lfw_faces()).unwrap().values.view([100, 625]);
    let pca = pca::fit(&lfw, Divisor::NMinusOne, Method::Auto).unwrap();
    assert_eq!(pca.method, Method::Gram);
    let fixture = |name: &str| npy::read(&sklearn_fixtures().join(name)).unwrap().values;
    let eigenvalues = pca.eigenvalues_vec();
    assert_relative(&eigenvalues[..50], &values(&fixture("eigenvalues.npy")), 1e-8, "eigenvalues vs sklearn");
    assert_parallel_rows(&pca.components.narrow(0, 0, 50), &fixture("components.npy"), 1e-8, "components vs sklearn");
    assert!((&pca.mean - fixture("mean.npy")).abs().max().double_value(&[]) < 1e-12);
}

/// Runs an `eigenfaces` fit into a new folder: its stdout, summary.json and the folder.
fn run_json(cmd: &mut std::process::Command) -> (String, Value, tempfile::TempDir) {
    let out = tempfile::tempdir().unwrap();
    let output = run_ok(cmd.arg("--out").arg(out.path()));
    let summary = serde_json::from_slice(&std::fs::read(out.path().join("summary.json")).unwrap()).unwrap();
    (String::from_utf8_lossy(&output.stdout).into_owned(), summary, out)
}

#[test]
fn the_binary_on_lfw_writes_numbers_figures_and_components() {
    let (stdout, summary, out) = run_json(eigenfaces().arg("--input").arg(lfw_faces()).args(["--device", "cpu"]));
    let out = out.path();
    let lfw = npy::read(&lfw_faces()).unwrap().values.view([100, 625]);
    let pca = pca::fit(&lfw, Divisor::NMinusOne, Method::Auto).unwrap();
    assert_eq!(summary["method"], "gram");
    assert_eq!(summary["covariance_divisor"], "N-1");
    assert_eq!((summary["faces"].as_u64(), summary["pixels"].as_u64()), (Some(100), Some(625)));
    let top: Vec<f64> = summary["top_10_eigenvalues"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let sklearn_top = values(&npy::read(&sklearn_fixtures().join("eigenvalues.npy")).unwrap().values);
    assert_relative(&top, &sklearn_top[..10], 1e-8, "printed top 10 vs sklearn");
    assert_eq!(summary["components_95"].as_i64(), Some(pca.components_for(0.95)));
    assert_eq!(summary["components_99"].as_i64(), Some(pca.components_for(0.99)));
    let reduction = 100.0 * (1.0 - pca.components_for(0.95) as f64 / 625.0);
    assert!((summary["reduction_95_percent"].as_f64().unwrap() - reduction).abs() < 1e-9);
    assert!(stdout.contains("top 10 eigenvalues") && stdout.contains("95% of the variance"), "{stdout}");
    let rebuilt = summary["rebuilt"].as_array().unwrap();
    assert_eq!(rebuilt.iter().map(|r| r["k"].as_i64().unwrap()).collect::<Vec<_>>(), [1, 5, 10, 25, 50, 99]);
    for r in &rebuilt[..rebuilt.len() - 1] {
        let (measured, expected) =
            (r["mean_squared_error"].as_f64().unwrap(), r["from_discarded_eigenvalues"].as_f64().unwrap());
        assert_relative(&[measured], &[expected], 1e-8, &format!("summary.json rebuilt k = {}", r["k"]));
    }
    let csv = std::fs::read_to_string(out.join("eigenvalues.csv")).unwrap();
    assert_eq!(csv.lines().count() as i64, 1 + pca.rank());
    for figure in ["eigenvalues.png", "eigenfaces.png", "reconstructions.png"] {
        let (width, height) = png_size(&out.join(figure));
        assert!(width >= 600 && height >= 300, "{figure}: {width}x{height}");
    }
    assert!(!out.join("accuracy_vs_k.png").exists(), "no people, no recognition");
    let saved = tchlab::eigenfaces::read_components(&out.join("components.safetensors")).unwrap();
    assert_eq!(saved.pca.eigenvalues_vec(), pca.eigenvalues_vec());
    assert_eq!(saved.white, 1.0);

    // A wider grid shows more eigenfaces in more columns.
    let (_, _, wide) = run_json(eigenfaces().arg("--input").arg(lfw_faces()).args(["--grid", "3x6"]));
    assert!(png_size(&wide.path().join("eigenfaces.png")).0 > png_size(&out.join("eigenfaces.png")).0);
}

#[test]
fn the_covariance_path_is_used_when_pixels_do_not_outnumber_faces() {
    let set = synthetic(200, Divisor::NMinusOne, 11);
    let dir = tempfile::tempdir().unwrap();
    let rows = dir.path().join("rows.npy");
    npy::write_f64(&rows, &values(&set.rows), &[200, (HEIGHT * WIDTH) as usize]).unwrap();
    let (stdout, summary, out) =
        run_json(eigenfaces().arg("--input").arg(&rows).args(["--size", "12x10", "--no-figures"]));
    let out = out.path();
    assert_eq!(summary["method"], "covariance");
    assert!(stdout.contains("120×120 covariance"), "{stdout}");
    assert_eq!(summary["rank"].as_i64(), Some(VARIANCES.len() as i64));
    assert_eq!(summary["components_95"].as_i64(), Some(known_count(0.95)));
    assert_eq!(summary["components_99"].as_i64(), Some(known_count(0.99)));
    assert!(!out.join("eigenfaces.png").exists(), "--no-figures");
    assert!(summary["rebuilt"][0]["mean_squared_error"].is_null(), "--no-figures measures no reconstruction");
    let (_, gram, _) = run_json(eigenfaces().arg("--input").arg(&rows).args(["--method", "gram", "--no-figures"]));
    assert_eq!(gram["method"], "gram");
    assert_eq!((gram["height"].as_u64(), gram["width"].as_u64()), (Some(12), Some(10)), "guessed portrait shape");
}

/// A folder of synthetic identities, one subfolder per person (`s1 …`),
/// as PGM files: each person a fixed pattern, each face that plus noise.
fn identities(root: &Path, people: usize, per_person: usize) {
    let _rng = common::seeded(17);
    let (h, w) = (16u32, 14u32);
    for person in 0..people {
        let pattern = Tensor::rand([(h * w) as i64], (Kind::Double, Device::Cpu)) * 160.0 + 48.0;
        let dir = root.join(format!("s{}", person + 1));
        std::fs::create_dir_all(&dir).unwrap();
        for face in 0..per_person {
            let noisy =
                (&pattern + Tensor::randn([(h * w) as i64], (Kind::Double, Device::Cpu)) * 12.0).clamp(0.0, 255.0);
            let pixels: Vec<u8> = values(&noisy).iter().map(|v| v.round() as u8).collect();
            let image = image::GrayImage::from_raw(w, h, pixels).unwrap();
            // One face of the first person is larger, to be resized.
            let image = if person == 0 && face == 0 {
                image::imageops::resize(&image, w * 2, h * 2, image::imageops::FilterType::Triangle)
            } else {
                image
            };
            image.save(dir.join(format!("{}.pgm", face + 1))).unwrap();
        }
    }
}

#[test]
fn people_in_subfolders_are_recognised_in_eigenspace_and_new_faces_projected() {
    let dir = tempfile::tempdir().unwrap();
    identities(dir.path(), 6, 8);
    let (stdout, summary, out) = run_json(eigenfaces().arg("--input").arg(dir.path()).args(["--seed", "4"]));
    let out = out.path();
    assert!(stdout.contains("6 people (one subfolder each); 1 resized to 16x14"), "{stdout}");
    let recognition = &summary["recognition"];
    assert_eq!(recognition["people"].as_u64(), Some(6));
    assert_eq!((recognition["train_faces"].as_u64(), recognition["test_faces"].as_u64()), (Some(36), Some(12)));
    assert_eq!(recognition["raw_pixels_accuracy"].as_f64(), Some(1.0), "distinct people, mild noise");
    assert_eq!(recognition["best"]["accuracy"].as_f64(), Some(1.0));
    let ks: Vec<i64> = recognition["by_k"].as_array().unwrap().iter().map(|a| a["k"].as_i64().unwrap()).collect();
    assert_eq!(ks, [1, 2, 3, 5, 7, 10, 20, 30, 35], "up to the training rank, 36 − 1");
    assert!(png_size(&out.join("accuracy_vs_k.png")).0 >= 600);
    let table = std::fs::read_to_string(out.join("recognition.csv")).unwrap();
    assert_eq!(table.lines().count(), 1 + 12, "a line per test face:\n{table}");
    let best_k = format!(",{}", recognition["best"]["k"]);
    assert!(table.lines().skip(1).all(|line| line.split(',').count() == 7 && line.ends_with(&best_k)), "{table}");

    // A face of the set lies in the span of the mean and all components: rebuilt exactly.
    let components = out.join("components.safetensors");
    let face = dir.path().join("s2/3.pgm");
    let output = run_ok(eigenfaces().arg("project").arg("--components").arg(&components).arg(&face).arg("--json"));
    let projections: Value = serde_json::from_slice(&output.stdout).unwrap();
    let projection = &projections[0];
    assert_eq!(projection["k"].as_i64(), summary["rank"].as_i64());
    assert_eq!(projection["coordinates"].as_array().unwrap().len() as i64, summary["rank"].as_i64().unwrap());
    assert!(projection["relative_error"].as_f64().unwrap() < 1e-8, "{projection}");
    assert!(projection["resized_from"].is_null());
    // Its coordinates are those of the library's projection.
    let saved = tchlab::eigenfaces::read_components(&components).unwrap();
    let row = tchlab::data::faces::gray_values(&tchlab::data::faces::read_gray(&face).unwrap(), saved.size);
    let expected = values(&saved.pca.project(&Tensor::from_slice(&row).unsqueeze(0), 3));
    let text = run_ok(eigenfaces().arg("project").arg("--components").arg(&components).args(["--k", "3"]).arg(&face));
    let text = String::from_utf8_lossy(&text.stdout);
    let printed = format!("{:.4e} {:.4e} {:.4e}", expected[0], expected[1], expected[2]);
    assert!(text.contains(&printed) && text.contains("k = 3"), "{text} lacks {printed}");
    // The larger face is resized, and says so.
    let big = dir.path().join("s1/1.pgm");
    let output = run_ok(eigenfaces().arg("project").arg("--components").arg(&components).arg(&big).arg("--json"));
    let projections: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(projections[0]["resized_from"], "32x28");
}

#[test]
fn the_full_exit_and_the_quick_exit_print_and_end_alike() {
    let missing = repo().join("no-such-faces.npy");
    for args in [vec!["--help"], vec!["--no-such-option"], vec!["--input", missing.to_str().unwrap()]] {
        let quick = eigenfaces().args(&args).output().unwrap();
        let full = eigenfaces().args(&args).env("TCHLAB_FULL_EXIT", "1").output().unwrap();
        assert_eq!(quick.status.code(), full.status.code(), "{args:?}");
        assert_eq!(quick.stdout, full.stdout, "{args:?}");
        assert_eq!(quick.stderr, full.stderr, "{args:?}");
    }
    let help = eigenfaces().arg("--help").output().unwrap();
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).trim_end().ends_with("to --out."), "the last line too");
}

#[test]
fn real_orl_faces_are_recognised_face_for_face_as_scikit_learn_recognises_them() {
    let orl = orl_faces();
    let (stdout, summary, out) =
        run_json(eigenfaces().arg("--input").arg(&orl).args(["--no-figures", "--device", "cpu"]));
    assert!(stdout.contains("398 faces of 112x92 pixels, 40 people"), "{stdout}");
    let recognition = &summary["recognition"];
    assert_eq!((recognition["train_faces"].as_u64(), recognition["test_faces"].as_u64()), (Some(278), Some(120)));
    let table = out.path().join("recognition.csv");
    let script = repo().join("tests/fixtures/check_orl_recognition.py");
    let output = run_ok(std::process::Command::new(python()).arg(script).arg(&orl).arg(&table));
    let sklearn: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(sklearn["train_faces"].as_u64(), Some(278), "every other face trained: {sklearn}");
    assert_eq!(sklearn["raw_agree"].as_u64(), Some(120), "nearest faces on raw pixels: {sklearn}");
    assert_eq!(sklearn["eigen_agree"].as_u64(), Some(120), "nearest faces on the best k coordinates: {sklearn}");
    let raw = recognition["raw_pixels_accuracy"].as_f64().unwrap();
    assert_eq!(Some(raw), sklearn["raw_accuracy"].as_f64());
    assert_eq!(recognition["best"]["accuracy"].as_f64(), sklearn["eigen_accuracy"].as_f64());
    // All coordinates keep every distance between training faces, and move each test
    // face's distances by one constant: the nearest face is the raw pixels' one.
    let all = recognition["by_k"].as_array().unwrap().last().unwrap();
    assert_eq!(all["k"].as_i64(), Some(277));
    assert_eq!(all["accuracy"].as_f64(), Some(raw));
    assert!(raw > 0.9, "nearest neighbour on real faces of 40 people: {raw}");
}

#[test]
fn bad_inputs_get_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let truncated = dir.path().join("truncated.npy");
    std::fs::write(&truncated, &std::fs::read(lfw_faces()).unwrap()[..20_000]).unwrap();
    let error = one_line_error(
        &eigenfaces().arg("--input").arg(&truncated).arg("--out").arg(dir.path().join("out")).output().unwrap(),
    );
    assert!(error.contains("truncated.npy: not a readable .npy array") && error.contains("data bytes"), "{error}");

    let flat = dir.path().join("flat.npy");
    npy::write_f64(&flat, &[1.0, 2.0, 3.0], &[3]).unwrap();
    let error = one_line_error(
        &eigenfaces().arg("--input").arg(&flat).arg("--out").arg(dir.path().join("out")).output().unwrap(),
    );
    assert!(error.contains("flat.npy: shape [3]; expected (N, h, w)"), "{error}");

    let error =
        one_line_error(&eigenfaces().arg("--input").arg(lfw_faces()).args(["--size", "20x30"]).output().unwrap());
    assert!(error.contains("holds 25x25 images but --size 20x30"), "{error}");

    let error = one_line_error(&eigenfaces().args(["--input", "no/such/faces"]).output().unwrap());
    assert!(error.contains("no/such/faces: not found"), "{error}");

    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    std::fs::write(empty.join("notes.txt"), "not a face").unwrap();
    let error = one_line_error(&eigenfaces().arg("--input").arg(&empty).output().unwrap());
    assert!(error.contains("no image files"), "{error}");

    let broken = dir.path().join("broken");
    std::fs::create_dir_all(broken.join("s1")).unwrap();
    std::fs::write(broken.join("s1/1.pgm"), "P5\n16 16\n255\nshort").unwrap();
    let error = one_line_error(&eigenfaces().arg("--input").arg(&broken).output().unwrap());
    assert!(error.contains("s1/1.pgm: cannot decode"), "{error}");

    let not_components = dir.path().join("other.safetensors");
    tchlab::persist::safetensors::save(
        &not_components,
        &[("w".into(), Tensor::ones([2], (Kind::Double, Device::Cpu)))],
        Default::default(),
    )
    .unwrap();
    let face = dir.path().join("face.png");
    image::GrayImage::new(25, 25).save(&face).unwrap();
    let error = one_line_error(
        &eigenfaces().arg("project").arg("--components").arg(&not_components).arg(&face).output().unwrap(),
    );
    assert!(error.contains("other.safetensors: not an eigenfaces components file"), "{error}");
}

/// Issue 27, finding 11: a run piped into `head` died with the pipe (exit
/// 141) and wrote nothing; a closed stdout stops the printing, not the run.
#[test]
fn a_closed_stdout_stops_the_printing_not_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    // As `eigenfaces … | head -0`: the reader is gone before the first line is printed.
    let mut child = eigenfaces()
        .arg("--input")
        .arg(lfw_faces())
        .args(["--no-figures", "--device", "cpu", "--out"])
        .arg(&out)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    let stderr = common::stderr_after_banner(&output);
    assert!(output.status.success(), "{:?}: {stderr}", output.status);
    assert!(stderr.is_empty(), "only the banner: {stderr}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["tool"], "eigenfaces");
}

/// Issue 27, finding 13: a folder with one person's faces reported
/// recognition 1.0 without a word; recognition needs two people.
#[test]
fn one_person_gets_no_recognition_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let person = dir.path().join("s1");
    std::fs::create_dir(&person).unwrap();
    for entry in std::fs::read_dir(orl_faces().join("s1")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, person.join(path.file_name().unwrap())).unwrap();
    }
    let (stdout, summary, _out) = run_json(eigenfaces().arg("--input").arg(dir.path()).arg("--no-figures"));
    assert!(stdout.contains("recognition skipped: the faces are of one person (s1)"), "{stdout}");
    assert!(summary["recognition"].is_null());
}

/// Issue 27, finding 15: one `.pgm` face given as `--input` got "no
/// \x93NUMPY magic"; it is one line saying what --input takes.
#[test]
fn one_image_as_input_says_what_input_takes() {
    let dir = tempfile::tempdir().unwrap();
    let face = dir.path().join("1.pgm");
    std::fs::copy(orl_faces().join("s1/1.pgm"), &face).unwrap();
    let error = one_line_error(
        &eigenfaces().arg("--input").arg(&face).arg("--out").arg(dir.path().join("run")).output().unwrap(),
    );
    assert!(
        error.contains("1.pgm: one image; --input takes a .npy array of faces or a folder of face images"),
        "{error}"
    );
    assert!(!dir.path().join("run").exists());
}

/// Issue 27, finding 13: the console and summary called a per-face sum
/// "mean squared error" while the figures print it per pixel; and faces
/// that are one image repeated gave NaN fractions.
#[test]
fn reconstruction_errors_say_per_face_and_per_pixel_and_constant_faces_are_refused() {
    let (stdout, summary, _out) = run_json(eigenfaces().arg("--input").arg(lfw_faces()));
    let pixels = summary["pixels"].as_f64().unwrap();
    for r in summary["rebuilt"].as_array().unwrap() {
        let (per_face, per_pixel) = (r["mean_squared_error"].as_f64().unwrap(), r["mse_per_pixel"].as_f64().unwrap());
        assert!((per_pixel * pixels - per_face).abs() <= 1e-9 * per_face.max(1.0), "{r}");
    }
    assert!(stdout.contains("squared error per face ") && stdout.contains("(MSE per pixel "), "{stdout}");

    let dir = tempfile::tempdir().unwrap();
    let same = dir.path().join("same.npy");
    npy::write_f64(&same, &[0.5; 4 * 25], &[4, 25]).unwrap();
    let error = one_line_error(
        &eigenfaces().arg("--input").arg(&same).arg("--out").arg(dir.path().join("run")).output().unwrap(),
    );
    assert!(error.contains("the 4 faces are one image repeated (total variance 0"), "{error}");
    assert!(!dir.path().join("run").exists(), "a refused run leaves no folder");
}

/// Issue 27, finding 9: one bad image aborted the run (finetune skips and
/// reports it), and files beside the per-person folders were dropped without
/// a word. Both are left out and named, on stderr and in summary.json.
#[test]
fn a_bad_image_and_files_beside_the_person_folders_are_left_out_and_named() {
    let dir = tempfile::tempdir().unwrap();
    for person in ["s1", "s2"] {
        let folder = dir.path().join(person);
        std::fs::create_dir(&folder).unwrap();
        for entry in std::fs::read_dir(orl_faces().join(person)).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, folder.join(path.file_name().unwrap())).unwrap();
        }
    }
    std::fs::write(dir.path().join("s1/broken.pgm"), b"P5 not really").unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"who is who").unwrap();
    let out = tempfile::tempdir().unwrap();
    let output = run_ok(eigenfaces().arg("--input").arg(dir.path()).args(["--no-figures", "--out"]).arg(out.path()));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("skipped {}: ", dir.path().join("s1/broken.pgm").display())), "{stderr}");
    assert!(stderr.contains("notes.txt: beside the per-person folders"), "{stderr}");
    let summary: Value = serde_json::from_slice(&std::fs::read(out.path().join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["faces"], 20);
    assert_eq!(summary["left_out"].as_array().unwrap().len(), 2, "{}", summary["left_out"]);
    assert_eq!(summary["recognition"]["people"], 2);
}
