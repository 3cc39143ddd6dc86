//! torchvision's MobileNetV3-Large, EfficientNet-B0–B4 and EfficientNetV2-S
//! against real torchvision code: each loads a checkpoint torchvision writes
//! at test time (random init, a 3-class head) and gives its logits in eval
//! and train mode, the running statistics that train mode leaves, and the
//! losses of three SGD steps through the trainer's own step; `finetune
//! --list-archs` gives torchvision's parameter counts, file names and
//! preprocessing.
//!
//! Train mode runs with the real stochastic depth and dropout rates: both
//! sides seed libtorch's CPU generator alike (`torch.manual_seed`,
//! `tch::manual_seed`) and draw the same masks in the same order. The
//! generator is the process's, so the tests here draw from it (building a
//! model, the seeded steps) one at a time ([`RANDOM`]).

mod common;

use clap::ValueEnum;
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};
use tch::{Device, Kind, Tensor};
use tchlab::choice_names::Named;
use tchlab::data::transforms::{Interpolation, Normalization};
use tchlab::models::{Arch, Classifier};
use tchlab::persist::pth::read_state_dict;
use tchlab::persist::weights::load_all;
use tchlab::train::optim::Sgd;
use tchlab::train::step::GradientStep;

/// The members tested here, with torchvision's builder names, in the
/// order the test harness starts their tests (by name).
const MEMBERS: [(Arch, &str); 7] = [
    (Arch::EfficientnetB0, "efficientnet_b0"),
    (Arch::EfficientnetB1, "efficientnet_b1"),
    (Arch::EfficientnetB2, "efficientnet_b2"),
    (Arch::EfficientnetB3, "efficientnet_b3"),
    (Arch::EfficientnetB4, "efficientnet_b4"),
    (Arch::EfficientnetV2S, "efficientnet_v2_s"),
    (Arch::MobilenetV3Large, "mobilenet_v3_large"),
];

/// Relative tolerance of every comparison with PyTorch.
const TOLERANCE: f64 = 1e-4;

/// Held while a test draws from libtorch's default CPU generator.
static RANDOM: Mutex<()> = Mutex::new(());

fn fixture_script() -> PathBuf {
    common::repo().join("tests/fixtures/make_efficientnet_family.py")
}

fn fixture_dir() -> PathBuf {
    common::repo().join("target/test-fixtures/efficientnet-family")
}

/// How the writer ended (`None` while it runs).
static WRITER_ENDED: Mutex<Option<String>> = Mutex::new(None);

/// Starts, once per test binary, the Python process that writes the
/// fixtures of [`MEMBERS`] into a fresh [`fixture_dir`], one member after
/// another in their tests' order, while the tests check the members it has
/// written.
fn start_writer() {
    static START: Once = Once::new();
    START.call_once(|| {
        // Tests run side by side beside the writer: one libtorch thread each.
        tch::set_num_threads(1);
        let dir = fixture_dir();
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let names = MEMBERS.map(|(_, name)| name);
        let mut command = Command::new(common::python());
        command.arg(fixture_script()).arg(&dir).arg("--build").args(names);
        command.stdout(Stdio::null()).stderr(std::fs::File::create(dir.join("stderr.txt")).unwrap());
        common::die_with_parent(&mut command);
        // Spawned and waited for on a thread of its own: the parent-death
        // signal follows the thread that spawns, which must outlive the tests.
        std::thread::spawn(move || {
            let ended = command.status().map_or_else(|e| format!("could not start: {e}"), |s| s.to_string());
            *WRITER_ENDED.lock().unwrap() = Some(ended);
        });
    });
}

/// `name`'s checkpoint and reference passes, once the writer has written
/// them (the passes last); a writer that ends without them fails the test
/// with its stderr.
fn member_fixtures(name: &str) -> (PathBuf, PathBuf) {
    start_writer();
    let (checkpoint, io) = (fixture_dir().join(format!("{name}.pth")), fixture_dir().join(format!("{name}_io.pth")));
    loop {
        let ended = WRITER_ENDED.lock().unwrap().clone();
        if io.exists() {
            return (checkpoint, io);
        }
        if let Some(ended) = ended {
            let stderr = std::fs::read_to_string(fixture_dir().join("stderr.txt")).unwrap_or_default();
            panic!("{} ended ({ended}) without writing {}:\n{stderr}", fixture_script().display(), io.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The largest difference over the largest magnitude of the reference.
fn max_relative_difference(ours: &Tensor, theirs: &Tensor) -> f64 {
    assert_eq!(ours.size(), theirs.size());
    let ours = ours.to_kind(Kind::Double);
    let theirs = theirs.to_kind(Kind::Double);
    (&ours - &theirs).abs().max().double_value(&[]) / theirs.abs().max().double_value(&[])
}

/// The running statistics of `model` against `after_train.<name>` in `io`,
/// every one of them: the largest relative difference.
fn running_statistics_difference(model: &Classifier, io: &HashMap<String, Tensor>) -> f64 {
    let statistics: Vec<(String, Tensor)> =
        model.named_tensors().into_iter().filter(|(name, _)| name.contains(".running_")).collect();
    assert!(statistics.len() > 90, "{} running statistics", statistics.len());
    let expected = io.keys().filter(|key| key.starts_with("after_train.")).count();
    assert_eq!(statistics.len(), expected, "every batch norm's statistics are compared");
    let difference =
        |(name, ours): &(String, Tensor)| max_relative_difference(ours, &io[&format!("after_train.{name}")]);
    statistics.iter().map(difference).fold(0.0, f64::max)
}

/// One member against torchvision: eval-mode logits (twice: eval mode draws
/// nothing); the first SGD step's train-mode logits and the running
/// statistics it leaves; the losses of three SGD steps (momentum 0.9)
/// through the trainer's own step (`GradientStep` with the CPU's backprop),
/// and the loss after them, all in train mode from the fixture's seed.
fn check_member(arch: Arch, name: &str) {
    let started = Instant::now();
    let (checkpoint, io) = member_fixtures(name);
    let io: HashMap<String, Tensor> = read_state_dict(&io).unwrap().into_iter().collect();
    let mut model = {
        let _random = RANDOM.lock().unwrap_or_else(|e| e.into_inner());
        Classifier::new(arch, 3, Device::Cpu)
    };
    load_all(&mut model, &checkpoint).unwrap();
    std::fs::remove_file(&checkpoint).unwrap();
    let (input, labels) = (&io["input"], &io["labels"]);

    let eval_logits = tch::no_grad(|| model.forward(input, false));
    let eval = max_relative_difference(&eval_logits, &io["eval_logits"]);
    assert!(tch::no_grad(|| model.forward(input, false)).equal(&eval_logits), "{name}: eval mode is deterministic");

    let lr = io["lr"].double_value(&[0]);
    let mut step = GradientStep::new(model.trainable(), tchlab::accel::backprop(Device::Cpu));
    let mut sgd = Sgd::new(&step.params, 0.9, 0.0);
    let loss = |logits: &Tensor| logits.cross_entropy_for_logits(labels);
    let mut losses = Vec::new();
    let (mut train, mut statistics) = (f64::NAN, f64::NAN);
    {
        let _random = RANDOM.lock().unwrap_or_else(|e| e.into_inner());
        tch::manual_seed(io["seed"].int64_value(&[0]));
        for i in 0..3 {
            let outcome = step.step(&mut sgd, &mut || model.forward(input, true), &loss, lr).unwrap();
            if i == 0 {
                train = max_relative_difference(&outcome.logits, &io["train_logits"]);
                statistics = running_statistics_difference(&model, &io);
            }
            losses.push(outcome.loss);
        }
        losses.push(tch::no_grad(|| loss(&model.forward(input, true))).double_value(&[]));
    }
    let losses = Tensor::from_slice(&losses);
    let loss_difference = max_relative_difference(&losses, &io["losses"]);
    let dropped = io["dropped_rows"].int64_value(&[0]);
    println!(
        "{name}: max relative difference from torchvision: eval logits {eval:.1e}, train logits {train:.1e}, \
         running statistics {statistics:.1e}, losses of 3 SGD steps and after {loss_difference:.1e} \
         ({dropped} rows dropped by stochastic depth in the first step; {:.1} s)",
        started.elapsed().as_secs_f64()
    );
    assert!(eval <= TOLERANCE, "{name}: eval-mode logits differ by {eval:e}");
    assert!(train <= TOLERANCE, "{name}: train-mode logits differ by {train:e}");
    assert!(statistics <= TOLERANCE, "{name}: running statistics differ by {statistics:e}");
    assert!(loss_difference <= TOLERANCE, "{name}: losses {losses} against {}", io["losses"]);
    // The comparisons can fail: the modes give other logits, the updates
    // move the losses, and stochastic depth drops residual branches.
    assert!(max_relative_difference(&io["train_logits"], &io["eval_logits"]) > 100.0 * TOLERANCE);
    let moved = max_relative_difference(&io["losses"], &io["losses_frozen"]);
    assert!(moved > 100.0 * TOLERANCE, "{name}: the SGD steps moved the losses by {moved:e} only");
    assert_eq!(dropped > 0, arch != Arch::MobilenetV3Large, "{name}: {dropped} rows dropped");
}

#[test]
fn efficientnet_b0_matches_torchvision() {
    check_member(Arch::EfficientnetB0, "efficientnet_b0");
}

#[test]
fn efficientnet_b1_matches_torchvision() {
    check_member(Arch::EfficientnetB1, "efficientnet_b1");
}

#[test]
fn efficientnet_b2_matches_torchvision() {
    check_member(Arch::EfficientnetB2, "efficientnet_b2");
}

#[test]
fn efficientnet_b3_matches_torchvision() {
    check_member(Arch::EfficientnetB3, "efficientnet_b3");
}

#[test]
fn efficientnet_b4_matches_torchvision() {
    check_member(Arch::EfficientnetB4, "efficientnet_b4");
}

#[test]
fn efficientnet_v2_s_matches_torchvision() {
    check_member(Arch::EfficientnetV2S, "efficientnet_v2_s");
}

#[test]
fn mobilenet_v3_large_matches_torchvision() {
    check_member(Arch::MobilenetV3Large, "mobilenet_v3_large");
}

/// `--list-archs`' rows: arch → (parameters, features, weights file name).
fn list_archs(models_dir: &Path) -> HashMap<String, (i64, i64, String)> {
    let output =
        common::run_ok(common::finetune().args(["--list-archs", "--threads", "1", "--models-dir"]).arg(models_dir));
    let text = common::stdout(&output);
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["arch", "parameters", "features", "weights", "present"], "{text}");
    let row = |line: &str| {
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cells.len(), 5, "{line}");
        let file = Path::new(cells[3]).file_name().unwrap().to_str().unwrap().to_owned();
        (cells[0].to_owned(), (cells[1].replace(',', "").parse().unwrap(), cells[2].parse().unwrap(), file))
    };
    lines.map(row).collect()
}

#[test]
fn list_archs_gives_torchvisions_parameter_counts_files_and_preprocessing() {
    let catalogue_dir = common::temp_dir();
    let names = MEMBERS.map(|(_, name)| name);
    let script = fixture_script();
    common::run_ok(Command::new(common::python()).arg(script).arg(catalogue_dir.path()).arg("--describe").args(names));
    let published = common::read_json(&catalogue_dir.path().join("published.json"));
    let models_dir = common::temp_dir();
    let rows = list_archs(models_dir.path());
    assert_eq!(rows.len(), Arch::value_variants().len(), "one row per arch");

    let (mean, std) = imagenet_mean_std();
    for (arch, name) in MEMBERS {
        let reference = &published[name];
        let (parameters, features, file) = &rows[&arch.name()];
        assert_eq!(*parameters, reference["parameters"].as_i64().unwrap(), "{name}");
        assert_eq!(*features, arch.feature_count(), "{name}");
        assert_eq!(Some(file.as_str()), reference["file"].as_str(), "{name}");
        let preprocessing = arch.preprocessing();
        assert_eq!(reference["resize"], Value::from(vec![preprocessing.resize]), "{name}");
        assert_eq!(reference["crop"], Value::from(vec![preprocessing.crop]), "{name}");
        let interpolation = match preprocessing.interpolation {
            Interpolation::Bilinear => "bilinear",
            Interpolation::Bicubic => "bicubic",
        };
        assert_eq!(reference["interpolation"], interpolation, "{name}");
        assert_eq!(preprocessing.normalization, Normalization::Imagenet, "{name}");
        for c in 0..3 {
            assert!((mean[c] - reference["mean"][c].as_f64().unwrap()).abs() < 1e-6, "{name}: mean {mean:?}");
            assert!((std[c] - reference["std"][c].as_f64().unwrap()).abs() < 1e-6, "{name}: std {std:?}");
        }
    }
}

/// The per-channel mean and std that [`Normalization::Imagenet`] applies,
/// read back from what it makes of black and white.
fn imagenet_mean_std() -> ([f64; 3], [f64; 3]) {
    let white = Tensor::ones([1, 3, 1, 1], (Kind::Float, Device::Cpu));
    let (zero, one) = (Normalization::Imagenet.apply(&white.zeros_like()), Normalization::Imagenet.apply(&white));
    let channel = |t: &Tensor, c: usize| t.double_value(&[0, c as i64, 0, 0]);
    let mean = std::array::from_fn(|c| -channel(&zero, c) / (channel(&one, c) - channel(&zero, c)));
    let std = std::array::from_fn(|c| 1.0 / (channel(&one, c) - channel(&zero, c)));
    (mean, std)
}

#[test]
fn fetch_models_lists_the_family_and_leaves_it_out_of_the_default_set() {
    let script = common::repo().join("scripts/fetch-models.sh");
    let text = common::stdout(&common::run_ok(Command::new("bash").arg(&script).arg("--list")));
    let listed: HashMap<&str, &str> = text.lines().map(|line| line.split_once(' ').unwrap()).collect();
    for (arch, _) in MEMBERS {
        assert_eq!(listed.get(arch.name().as_str()), Some(&arch.weights_file()), "{text}");
    }
    let help = common::stdout(&common::run_ok(Command::new("bash").arg(&script).arg("--help")));
    let default = help.lines().find(|line| line.contains("default:")).unwrap_or_default();
    assert!(default.contains("resnet18") && !default.contains("efficientnet-b0"), "{help}");
    for (arch, _) in MEMBERS {
        assert!(help.contains(&arch.name()), "{help}");
    }
}
