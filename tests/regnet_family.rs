//! torchvision's RegNetY-400MF and RegNetY-1.6GF against real torchvision
//! code: each loads a checkpoint torchvision writes at test time (random
//! init, a 3-class head) and gives its logits in eval mode (also on an odd
//! input) and train mode, the running statistics that train mode leaves, and
//! the losses of three SGD steps through the trainer's own step; `finetune
//! --list-archs` gives torchvision's parameter counts, file names and
//! preprocessing.

mod common;

use common::torchvision_parity::{
    assert_apart, assert_steps_move_the_loss, max_relative_difference, Family, Report, Seeding, SgdSteps,
};
use std::process::Command;
use tch::{Device, Tensor};
use tchlab::choice_names::Named;
use tchlab::models::{Arch, Classifier};

/// The members tested here, with torchvision's builder names, in the order
/// the test harness starts their tests (by name).
const MEMBERS: [(Arch, &str); 2] = [(Arch::RegnetY1_6gf, "regnet_y_1_6gf"), (Arch::RegnetY400mf, "regnet_y_400mf")];

/// The fixture writer of [`MEMBERS`].
const FAMILY: Family = Family { script: "make_regnet_family.py", folder: "regnet-family", members: &MEMBERS };

/// One member against torchvision: eval-mode logits (two input sizes); the
/// first SGD step's train-mode logits and the running statistics it leaves;
/// the losses of three SGD steps (momentum 0.9) through the trainer's own
/// step (`GradientStep` with the CPU's backprop), and the loss after them.
fn check_member(arch: Arch, name: &str) {
    let mut model = Classifier::new(arch, 3, Device::Cpu);
    let io = FAMILY.load_member(name, &mut model);

    let eval_of = |x: &Tensor| tch::no_grad(|| model.forward(x, false));
    let eval = max_relative_difference(&eval_of(&io["input"]), &io["eval_logits"]);
    let odd = max_relative_difference(&eval_of(&io["eval_odd_input"]), &io["eval_odd_logits"]);
    let steps = SgdSteps { seeding: Seeding::None, statistics_over: Some(100), last_pass_train: true };
    let steps = steps.run(&mut model, &io);
    Report { name, eval, other_inputs: vec![("45x71 input", odd)], steps, note: String::new() }.print_and_assert(&io);
    // The comparisons can fail: the modes give other logits, and the steps move the loss.
    assert_apart(name, &io, "train_logits", "eval_logits");
    assert_steps_move_the_loss(name, &io);
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
    FAMILY.assert_list_archs_matches(&MEMBERS);
    for (arch, _) in MEMBERS {
        assert_eq!(arch.head_name(), "fc");
        assert_eq!(arch.head_dropout(), 0.0);
        assert!(!arch.depthwise());
    }
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
