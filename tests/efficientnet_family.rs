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

use common::torchvision_parity::{assert_apart, max_relative_difference, Family, Report, Seeding, SgdSteps, TOLERANCE};
use std::collections::HashMap;
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;
use tch::Device;
use tchlab::choice_names::Named;
use tchlab::models::{Arch, Classifier};

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

/// Held while a test draws from libtorch's default CPU generator.
static RANDOM: Mutex<()> = Mutex::new(());

/// The fixture writer of [`MEMBERS`].
const FAMILY: Family =
    Family { script: "make_efficientnet_family.py", folder: "efficientnet-family", members: &MEMBERS };

/// One member against torchvision: eval-mode logits (twice: eval mode draws
/// nothing); the first SGD step's train-mode logits and the running
/// statistics it leaves; the losses of three SGD steps (momentum 0.9)
/// through the trainer's own step (`GradientStep` with the CPU's backprop),
/// and the loss after them, all in train mode from the fixture's seed.
fn check_member(arch: Arch, name: &str) {
    let started = Instant::now();
    let mut model = {
        let _random = RANDOM.lock().unwrap_or_else(|e| e.into_inner());
        Classifier::new(arch, 3, Device::Cpu)
    };
    let io = FAMILY.load_member(name, &mut model);
    let input = &io["input"];

    let eval_logits = tch::no_grad(|| model.forward(input, false));
    let eval = max_relative_difference(&eval_logits, &io["eval_logits"]);
    assert!(tch::no_grad(|| model.forward(input, false)).equal(&eval_logits), "{name}: eval mode is deterministic");

    let steps = SgdSteps { seeding: Seeding::FromFixture, statistics_over: Some(90), last_pass_train: true };
    let steps = {
        let _random = RANDOM.lock().unwrap_or_else(|e| e.into_inner());
        steps.run(&mut model, &io)
    };
    let dropped = io["dropped_rows"].int64_value(&[0]);
    let seconds = started.elapsed().as_secs_f64();
    let note = format!("{dropped} rows dropped by stochastic depth in the first step; {seconds:.1} s");
    Report { name, eval, other_inputs: vec![], steps, note }.print_and_assert(&io);
    // The comparisons can fail: the modes give other logits, the updates
    // move the losses, and stochastic depth drops residual branches.
    assert_apart(name, &io, "train_logits", "eval_logits");
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

#[test]
fn list_archs_gives_torchvisions_parameter_counts_files_and_preprocessing() {
    FAMILY.assert_list_archs_matches(&MEMBERS);
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
