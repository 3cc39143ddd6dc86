//! torchvision's RegNetY-400MF and RegNetY-1.6GF against real torchvision
//! code: each loads a checkpoint torchvision writes at test time (random
//! init, a 3-class head) and gives its logits in eval mode (also on an odd
//! input) and train mode, the running statistics that train mode leaves, and
//! the losses of three SGD steps through the trainer's own step; `finetune
//! --list-archs` gives torchvision's parameter counts, file names and
//! preprocessing.

mod common;

use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use tch::{Device, Kind, Tensor};
use tchlab::choice_names::Named;
use tchlab::data::transforms::Normalization;
use tchlab::models::{Arch, Classifier};
use tchlab::persist::pth::read_state_dict;
use tchlab::persist::weights::load_all;
use tchlab::train::optim::Sgd;
use tchlab::train::step::GradientStep;

/// The members tested here, with torchvision's builder names.
const MEMBERS: [(Arch, &str); 2] = [(Arch::RegnetY400mf, "regnet_y_400mf"), (Arch::RegnetY1_6gf, "regnet_y_1_6gf")];

/// Relative tolerance of every comparison with PyTorch.
const TOLERANCE: f64 = 1e-4;

/// The fixtures of every member and `published.json`, written once per test
/// binary by tests/fixtures/make_regnet_family.py.
fn fixture_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = common::repo().join("target/test-fixtures/regnet-family");
        let _ = std::fs::remove_dir_all(&dir);
        let script = common::repo().join("tests/fixtures/make_regnet_family.py");
        let names = MEMBERS.map(|(_, name)| name);
        let mut command = Command::new(common::python());
        command.arg(script).arg(&dir).arg("--build").args(names).arg("--describe").args(names);
        common::die_with_parent(&mut command);
        common::run_ok(&mut command);
        dir
    })
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

/// One member against torchvision: eval-mode logits (two input sizes); the
/// first SGD step's train-mode logits and the running statistics it leaves;
/// the losses of three SGD steps (momentum 0.9) through the trainer's own
/// step (`GradientStep` with the CPU's backprop), and the loss after them.
fn check_member(arch: Arch, name: &str) {
    // One libtorch thread, as the writer: the tests run side by side.
    tch::set_num_threads(1);
    let dir = fixture_dir();
    let (checkpoint, io) = (dir.join(format!("{name}.pth")), dir.join(format!("{name}_io.pth")));
    let io: HashMap<String, Tensor> = read_state_dict(&io).unwrap().into_iter().collect();
    let mut model = Classifier::new(arch, 3, Device::Cpu);
    load_all(&mut model, &checkpoint).unwrap();
    let (input, labels) = (&io["input"], &io["labels"]);

    let eval_of = |x: &Tensor| tch::no_grad(|| model.forward(x, false));
    let eval = max_relative_difference(&eval_of(input), &io["eval_logits"]);
    let odd = max_relative_difference(&eval_of(&io["eval_odd_input"]), &io["eval_odd_logits"]);

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
        "{name}: max relative difference from torchvision: eval logits {eval:.1e} (45x71 input {odd:.1e}), \
         train logits {train:.1e}, running statistics {statistics:.1e}, losses of 3 SGD steps and after \
         {loss_difference:.1e}"
    );
    assert!(eval <= TOLERANCE, "{name}: eval-mode logits differ by {eval:e}");
    assert!(odd <= TOLERANCE, "{name}: eval-mode logits of the 45x71 input differ by {odd:e}");
    assert!(train <= TOLERANCE, "{name}: train-mode logits differ by {train:e}");
    assert!(statistics <= TOLERANCE, "{name}: running statistics differ by {statistics:e}");
    assert!(loss_difference <= TOLERANCE, "{name}: losses {losses} against {}", io["losses"]);
    // The comparisons can fail: the modes give other logits, and the steps move the loss.
    assert!(max_relative_difference(&io["train_logits"], &io["eval_logits"]) > 100.0 * TOLERANCE);
    let (first, last) = (io["losses"].double_value(&[0]), io["losses"].double_value(&[3]));
    assert!((first - last).abs() > 100.0 * TOLERANCE * first, "{name}: the SGD steps left the loss at {first}");
}

#[test]
fn regnet_y_400mf_matches_torchvision() {
    check_member(Arch::RegnetY400mf, "regnet_y_400mf");
}

#[test]
fn regnet_y_1_6gf_matches_torchvision() {
    check_member(Arch::RegnetY1_6gf, "regnet_y_1_6gf");
}

#[test]
fn list_archs_gives_torchvisions_parameter_counts_files_and_preprocessing() {
    let published = common::read_json(&fixture_dir().join("published.json"));
    let models_dir = common::temp_dir();
    // One thread, as it runs beside the other tests.
    let output = common::run_ok(
        common::finetune().args(["--list-archs", "--threads", "1", "--models-dir"]).arg(models_dir.path()),
    );
    let text = common::stdout(&output);
    let (mean, std) = imagenet_mean_std();
    for (arch, name) in MEMBERS {
        let reference = &published[name];
        let row: Vec<&str> = text
            .lines()
            .map(|line| line.split_whitespace().collect::<Vec<_>>())
            .find(|cells| cells.first() == Some(&arch.name().as_str()))
            .unwrap_or_else(|| panic!("no {} in\n{text}", arch.name()));
        assert_eq!(
            row[1].replace(',', "").parse::<i64>().unwrap(),
            reference["parameters"].as_i64().unwrap(),
            "{name}"
        );
        assert_eq!(row[2].parse::<i64>().unwrap(), arch.feature_count());
        assert_eq!(Path::new(row[3]), models_dir.path().join(arch.weights_file()));
        assert_eq!(Some(arch.weights_file()), reference["file"].as_str(), "{name}");
        // The weights were trained on what these transforms give.
        let preprocessing = arch.preprocessing();
        assert_eq!(reference["resize"], Value::from(vec![preprocessing.resize]), "{name}");
        assert_eq!(reference["crop"], Value::from(vec![preprocessing.crop]), "{name}");
        assert_eq!(reference["interpolation"], serde_json::to_value(preprocessing.interpolation).unwrap(), "{name}");
        assert_eq!(preprocessing.normalization, Normalization::Imagenet, "{name}");
        for c in 0..3 {
            assert!((mean[c] - reference["mean"][c].as_f64().unwrap()).abs() < 1e-6, "{name}: mean {mean:?}");
            assert!((std[c] - reference["std"][c].as_f64().unwrap()).abs() < 1e-6, "{name}: std {std:?}");
        }
        assert_eq!(arch.head_name(), "fc");
        assert_eq!(arch.head_dropout(), 0.0);
        assert!(!arch.depthwise());
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
fn fetch_models_knows_the_regnets() {
    let script = common::repo().join("scripts/fetch-models.sh");
    let output = common::run_ok(Command::new("bash").arg(&script).arg("--list"));
    let text = common::stdout(&output);
    for (arch, _) in MEMBERS {
        let line = format!("{} {}", arch.name(), arch.weights_file());
        assert!(text.lines().any(|l| l == line), "no {line} in\n{text}");
    }
}
