//! torchvision's Swin-T against real torchvision code: our model loads a
//! checkpoint torchvision writes at test time (random init, a 3-class head)
//! and gives its logits in eval mode (also on odd and on the smallest
//! inputs), in train mode with the real stochastic depth rates, and the
//! losses of three SGD steps through the trainer's own step; `finetune
//! --list-archs` gives torchvision's parameter count, file name and
//! preprocessing.
//!
//! Train mode is compared with its random drops on: both sides seed
//! libtorch's CPU generator (`torch.manual_seed` / `tch::manual_seed`) just
//! before the first train-mode pass and draw the same masks in the same
//! order. No other test here draws from that generator in this process.

mod common;

use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use tch::{Device, Kind, Tensor};
use tchlab::choice_names::Named;
use tchlab::data::transforms::Normalization;
use tchlab::models::{swin, Arch, Classifier};
use tchlab::persist::pth::read_state_dict;
use tchlab::persist::weights::load_all;
use tchlab::train::optim::Sgd;
use tchlab::train::step::GradientStep;

/// The members tested here, with torchvision's builder names.
const MEMBERS: [(Arch, &str); 1] = [(Arch::SwinT, "swin_t")];

/// Relative tolerance of every comparison with PyTorch.
const TOLERANCE: f64 = 1e-4;

/// The fixtures of every member and `published.json`, written once per test
/// binary by tests/fixtures/make_swin_family.py.
fn fixture_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = common::repo().join("target/test-fixtures/swin-family");
        let _ = std::fs::remove_dir_all(&dir);
        let script = common::repo().join("tests/fixtures/make_swin_family.py");
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

/// One member against torchvision: its relative position indices; eval-mode
/// logits on three input sizes; the first SGD step's train-mode logits
/// (stochastic depth on, the same masks drawn); the losses of three SGD
/// steps (momentum 0.9) through the trainer's own step (`GradientStep` with
/// the CPU's backprop), and the loss after them.
fn check_member(arch: Arch, name: &str) {
    // One libtorch thread, as the writer: the tests run side by side.
    tch::set_num_threads(1);
    let dir = fixture_dir();
    let (checkpoint, io) = (dir.join(format!("{name}.pth")), dir.join(format!("{name}_io.pth")));
    let io: HashMap<String, Tensor> = read_state_dict(&io).unwrap().into_iter().collect();
    let mut model = Classifier::new(arch, 3, Device::Cpu);
    let indices = |model: &Classifier| -> Vec<Tensor> {
        let tensors = model.named_tensors().into_iter();
        tensors.filter(|(n, _)| n.ends_with(".relative_position_index")).map(|(_, t)| t.copy()).collect()
    };
    let built = indices(&model);
    load_all(&mut model, &checkpoint).unwrap();
    // torchvision's buffers load, and equal what we compute.
    let loaded = indices(&model);
    assert_eq!(loaded.len(), 12);
    let computed = swin::relative_position_index(7);
    for (ours, theirs) in built.iter().zip(&loaded) {
        assert!(ours.equal(theirs) && theirs.equal(&computed), "relative_position_index differs");
    }
    let (input, labels) = (&io["input"], &io["labels"]);

    let before: Vec<Tensor> = model.named_tensors().into_iter().map(|(_, t)| t.copy()).collect();
    let eval_of = |x: &Tensor| tch::no_grad(|| model.forward(x, false));
    let eval = max_relative_difference(&eval_of(input), &io["eval_logits"]);
    let odd = max_relative_difference(&eval_of(&io["eval_odd_input"]), &io["eval_odd_logits"]);
    let small = max_relative_difference(&eval_of(&io["eval_small_input"]), &io["eval_small_logits"]);
    // Eval mode writes no tensor of the model (what `FrozenView`'s sharing rests on).
    for ((name, after), before) in model.named_tensors().iter().zip(&before) {
        assert!(after.equal(before), "{name} changed in eval mode");
    }

    let lr = io["lr"].double_value(&[0]);
    let mut step = GradientStep::new(model.trainable(), tchlab::accel::backprop(Device::Cpu));
    let mut sgd = Sgd::new(&step.params, 0.9, 0.0);
    let loss = |logits: &Tensor| logits.cross_entropy_for_logits(labels);
    let mut losses = Vec::new();
    let mut train = f64::NAN;
    tch::manual_seed(io["seed"].int64_value(&[0]));
    for i in 0..3 {
        let outcome = step.step(&mut sgd, &mut || model.forward(input, true), &loss, lr).unwrap();
        if i == 0 {
            train = max_relative_difference(&outcome.logits, &io["train_logits"]);
        }
        losses.push(outcome.loss);
    }
    losses.push(tch::no_grad(|| loss(&model.forward(input, false))).double_value(&[]));
    let losses = Tensor::from_slice(&losses);
    let loss_difference = max_relative_difference(&losses, &io["losses"]);
    println!(
        "{name}: max relative difference from torchvision: eval logits {eval:.1e} (100x44 input {odd:.1e}, \
         32x32 input {small:.1e}), train logits {train:.1e}, losses of 3 SGD steps and after {loss_difference:.1e}"
    );
    assert!(eval <= TOLERANCE, "{name}: eval-mode logits differ by {eval:e}");
    assert!(odd <= TOLERANCE, "{name}: eval-mode logits of the 100x44 input differ by {odd:e}");
    assert!(small <= TOLERANCE, "{name}: eval-mode logits of the 32x32 input differ by {small:e}");
    assert!(train <= TOLERANCE, "{name}: train-mode logits differ by {train:e}");
    assert!(loss_difference <= TOLERANCE, "{name}: losses {losses} against {}", io["losses"]);

    // The comparisons can fail: train mode drops branches; without the
    // shift (and so its mask) or the relative position bias, the logits are
    // others; the steps move the loss.
    let reference = &io["eval_logits"];
    for key in ["train_logits", "eval_logits_no_shift", "eval_logits_no_bias"] {
        let apart = max_relative_difference(&io[key], reference);
        assert!(apart > 100.0 * TOLERANCE, "{name}: {key} is within {apart:e} of eval_logits");
    }
    let (first, last) = (io["losses"].double_value(&[0]), io["losses"].double_value(&[3]));
    assert!((first - last).abs() > 100.0 * TOLERANCE * first, "{name}: the SGD steps left the loss at {first}");
}

#[test]
fn swin_t_matches_torchvision() {
    check_member(Arch::SwinT, "swin_t");
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
    }
    assert_eq!(Arch::SwinT.head_name(), "head");
    assert_eq!(Arch::SwinT.head_dropout(), 0.0);
    assert!(!Arch::SwinT.depthwise());
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
fn fetch_models_knows_swin_t() {
    let script = common::repo().join("scripts/fetch-models.sh");
    let output = common::run_ok(Command::new("bash").arg(&script).arg("--list"));
    let text = common::stdout(&output);
    for (arch, _) in MEMBERS {
        let line = format!("{} {}", arch.name(), arch.weights_file());
        assert!(text.lines().any(|l| l == line), "no {line} in\n{text}");
    }
}
