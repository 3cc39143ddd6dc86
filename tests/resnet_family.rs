//! torchvision's ResNet family beyond ResNet-18/34/50 against real
//! torchvision code: each member loads a checkpoint torchvision writes at test
//! time (random init, a 3-class head) and gives its logits in eval and train
//! mode, the running statistics that train mode leaves, and the losses of
//! three SGD steps through the trainer's own step; `finetune --list-archs`
//! gives torchvision's parameter counts, file names and preprocessing.

mod common;

use clap::ValueEnum;
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, Once};
use std::time::Duration;
use tch::{Device, Kind, Tensor};
use tchlab::choice_names::Named;
use tchlab::data::transforms::{Normalization, CROP_SIZE, RESIZE_SIZE};
use tchlab::models::{Arch, Classifier};
use tchlab::persist::pth::read_state_dict;
use tchlab::persist::weights::load_all;
use tchlab::train::optim::Sgd;
use tchlab::train::step::GradientStep;

/// The members tested here, with torchvision's builder names, in the
/// order the test harness starts their tests (by name).
const NEW_MEMBERS: [(Arch, &str); 6] = [
    (Arch::Resnet101, "resnet101"),
    (Arch::Resnet152, "resnet152"),
    (Arch::Resnext101_32x8d, "resnext101_32x8d"),
    (Arch::Resnext50_32x4d, "resnext50_32x4d"),
    (Arch::WideResnet101_2, "wide_resnet101_2"),
    (Arch::WideResnet50_2, "wide_resnet50_2"),
];

/// Every ResNet `--arch` takes, with torchvision's builder names.
const ALL_RESNETS: [(Arch, &str); 9] = [
    (Arch::Resnet18, "resnet18"),
    (Arch::Resnet34, "resnet34"),
    (Arch::Resnet50, "resnet50"),
    NEW_MEMBERS[0],
    NEW_MEMBERS[1],
    NEW_MEMBERS[2],
    NEW_MEMBERS[3],
    NEW_MEMBERS[4],
    NEW_MEMBERS[5],
];

/// Relative tolerance of every comparison with PyTorch.
const TOLERANCE: f64 = 1e-4;

fn fixture_script() -> PathBuf {
    common::repo().join("tests/fixtures/make_resnet_family.py")
}

fn fixture_dir() -> PathBuf {
    common::repo().join("target/test-fixtures/resnet-family")
}

/// How the writer ended (`None` while it runs).
static WRITER_ENDED: Mutex<Option<String>> = Mutex::new(None);

/// Starts, once per test binary, the Python process that writes the
/// fixtures of [`NEW_MEMBERS`] into a fresh [`fixture_dir`], one member
/// after another in their tests' order, while the tests check the members
/// it has written.
fn start_writer() {
    static START: Once = Once::new();
    START.call_once(|| {
        // Tests run side by side, one per core, beside the writer: one libtorch thread each.
        tch::set_num_threads(1);
        let dir = fixture_dir();
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let names = NEW_MEMBERS.map(|(_, name)| name);
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
    assert!(statistics.len() > 100, "{} running statistics", statistics.len());
    let expected = io.keys().filter(|key| key.starts_with("after_train.")).count();
    assert_eq!(statistics.len(), expected, "every batch norm's statistics are compared");
    let difference =
        |(name, ours): &(String, Tensor)| max_relative_difference(ours, &io[&format!("after_train.{name}")]);
    statistics.iter().map(difference).fold(0.0, f64::max)
}

/// One member against torchvision: eval-mode logits; the first SGD step's
/// train-mode logits and the running statistics it leaves; the losses of
/// three SGD steps (momentum 0.9) through the trainer's own step
/// (`GradientStep` with the CPU's backprop), and the loss after them.
fn check_member(arch: Arch, name: &str) {
    let (checkpoint, io) = member_fixtures(name);
    let io: HashMap<String, Tensor> = read_state_dict(&io).unwrap().into_iter().collect();
    let mut model = Classifier::new(arch, 3, Device::Cpu);
    load_all(&mut model, &checkpoint).unwrap();
    std::fs::remove_file(&checkpoint).unwrap(); // up to 500 MB each, read once
    let (input, labels) = (&io["input"], &io["labels"]);

    let eval_logits = tch::no_grad(|| model.forward(input, false));
    let eval = max_relative_difference(&eval_logits, &io["eval_logits"]);

    let lr = io["lr"].double_value(&[0]);
    let mut step = GradientStep::new(model.trainable(), tchlab::accel::backprop(Device::Cpu));
    let mut sgd = Sgd::new(&step.params, 0.9, 0.0);
    let loss = |logits: &Tensor| logits.cross_entropy_for_logits(labels);
    let mut losses = Vec::new();
    let (mut train, mut statistics) = (f64::NAN, f64::NAN);
    for i in 0..3 {
        let outcome = step.step(&mut sgd, &mut || model.forward(input, true), &loss, lr).unwrap();
        if i == 0 {
            train = max_relative_difference(&outcome.logits, &io["train_logits"]);
            statistics = running_statistics_difference(&model, &io);
        }
        losses.push(outcome.loss);
    }
    losses.push(tch::no_grad(|| loss(&model.forward(input, true))).double_value(&[]));
    let losses = Tensor::from_slice(&losses);
    let loss_difference = max_relative_difference(&losses, &io["losses"]);
    println!(
        "{name}: max relative difference from torchvision: eval logits {eval:.1e}, train logits {train:.1e}, \
         running statistics {statistics:.1e}, losses of 3 SGD steps and after {loss_difference:.1e}"
    );
    assert!(eval <= TOLERANCE, "{name}: eval-mode logits differ by {eval:e}");
    assert!(train <= TOLERANCE, "{name}: train-mode logits differ by {train:e}");
    assert!(statistics <= TOLERANCE, "{name}: running statistics differ by {statistics:e}");
    assert!(loss_difference <= TOLERANCE, "{name}: losses {losses} against {}", io["losses"]);
    // The comparisons can fail: the modes give other logits, and the steps move the loss.
    assert!(max_relative_difference(&io["train_logits"], &io["eval_logits"]) > 100.0 * TOLERANCE);
    let (first, last) = (io["losses"].double_value(&[0]), io["losses"].double_value(&[3]));
    assert!((first - last).abs() > 100.0 * TOLERANCE * first, "{name}: the SGD steps left the loss at {first}");
}

#[test]
fn resnet101_matches_torchvision() {
    check_member(Arch::Resnet101, "resnet101");
}

#[test]
fn resnet152_matches_torchvision() {
    check_member(Arch::Resnet152, "resnet152");
}

#[test]
fn resnext50_32x4d_matches_torchvision() {
    check_member(Arch::Resnext50_32x4d, "resnext50_32x4d");
}

#[test]
fn wide_resnet50_2_matches_torchvision() {
    check_member(Arch::WideResnet50_2, "wide_resnet50_2");
}

#[test]
fn resnext101_32x8d_matches_torchvision() {
    check_member(Arch::Resnext101_32x8d, "resnext101_32x8d");
}

#[test]
fn wide_resnet101_2_matches_torchvision() {
    check_member(Arch::WideResnet101_2, "wide_resnet101_2");
}

/// One row of `--list-archs`: parameters, features, weights file, present.
struct Row {
    parameters: i64,
    features: i64,
    weights: PathBuf,
    present: bool,
}

fn list_archs(models_dir: &Path) -> HashMap<String, Row> {
    // One thread, as it runs beside the other tests.
    let output =
        common::run_ok(common::finetune().args(["--list-archs", "--threads", "1", "--models-dir"]).arg(models_dir));
    let text = common::stdout(&output);
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["arch", "parameters", "features", "weights", "present"], "{text}");
    let row = |line: &str| {
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cells.len(), 5, "{line}");
        let present = match cells[4] {
            "yes" => true,
            "no" => false,
            other => panic!("present: {other}"),
        };
        let parameters = cells[1].replace(',', "").parse().unwrap();
        let row = Row { parameters, features: cells[2].parse().unwrap(), weights: cells[3].into(), present };
        (cells[0].to_owned(), row)
    };
    lines.map(row).collect()
}

#[test]
fn list_archs_gives_torchvisions_parameter_counts_files_and_preprocessing() {
    let catalogue_dir = common::temp_dir();
    let names = ALL_RESNETS.map(|(_, name)| name);
    let script = fixture_script();
    common::run_ok(Command::new(common::python()).arg(script).arg(catalogue_dir.path()).arg("--describe").args(names));
    let published = common::read_json(&catalogue_dir.path().join("published.json"));
    let models_dir = common::temp_dir();
    let placed = Arch::Resnet152.weights_file();
    std::fs::write(models_dir.path().join(placed), b"").unwrap();

    let rows = list_archs(models_dir.path());
    assert_eq!(rows.len(), Arch::value_variants().len(), "one row per arch");
    for arch in Arch::value_variants() {
        let row = &rows[&arch.name()];
        assert_eq!(row.weights, models_dir.path().join(arch.weights_file()));
        assert_eq!(row.present, arch.weights_file() == placed, "{}", arch.name());
        assert_eq!(row.features, arch.feature_count());
    }
    let lite0 = &rows["efficientnet-lite0"];
    assert_eq!(lite0.parameters, published["efficientnet-lite0"]["parameters"].as_i64().unwrap());

    let (mean, std) = imagenet_mean_std();
    for (arch, name) in ALL_RESNETS {
        let reference = &published[name];
        let row = &rows[&arch.name()];
        assert_eq!(row.parameters, reference["parameters"].as_i64().unwrap(), "{name}");
        assert_eq!(row.weights.file_name().unwrap().to_str(), reference["file"].as_str(), "{name}");
        // The weights were trained on what our val transform and normalization give.
        assert_eq!(reference["resize"], Value::from(vec![RESIZE_SIZE]), "{name}");
        assert_eq!(reference["crop"], Value::from(vec![CROP_SIZE]), "{name}");
        assert_eq!(reference["interpolation"], "bilinear", "{name}");
        assert_eq!(arch.normalization(), Normalization::Imagenet, "{name}");
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
fn fetch_models_knows_every_archs_weights_file() {
    let script = common::repo().join("scripts/fetch-models.sh");
    let output = common::run_ok(Command::new("bash").arg(&script).arg("--list"));
    let text = common::stdout(&output);
    let listed: HashMap<&str, &str> = text.lines().map(|line| line.split_once(' ').unwrap()).collect();
    assert_eq!(listed.len(), Arch::value_variants().len(), "{text}");
    for arch in Arch::value_variants() {
        assert_eq!(listed.get(arch.name().as_str()), Some(&arch.weights_file()), "{text}");
    }
    let unknown = Command::new("bash").arg(&script).arg("resnet1000").output().unwrap();
    assert_eq!(unknown.status.code(), Some(2));
    assert!(common::text(&unknown.stderr).contains("unknown arch resnet1000"));
}
