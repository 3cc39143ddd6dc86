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

use common::torchvision_parity::{
    assert_apart, assert_steps_move_the_loss, max_relative_difference, Family, Report, Seeding, SgdSteps,
};
use std::process::Command;
use tch::{Device, Tensor};
use tchlab::choice_names::Named;
use tchlab::models::{swin, Arch, Classifier};

/// The members tested here, with torchvision's builder names.
const MEMBERS: [(Arch, &str); 1] = [(Arch::SwinT, "swin_t")];

/// The fixture writer of [`MEMBERS`].
const FAMILY: Family = Family { script: "make_swin_family.py", folder: "swin-family", members: &MEMBERS };

/// One member against torchvision: its relative position indices; eval-mode
/// logits on three input sizes; the first SGD step's train-mode logits
/// (stochastic depth on, the same masks drawn); the losses of three SGD
/// steps (momentum 0.9) through the trainer's own step (`GradientStep` with
/// the CPU's backprop), and the loss after them (in eval mode).
fn check_member(arch: Arch, name: &str) {
    let mut model = Classifier::new(arch, 3, Device::Cpu);
    let built = relative_position_indices(&model);
    let io = FAMILY.load_member(name, &mut model);
    // torchvision's buffers load, and equal what we compute.
    let loaded = relative_position_indices(&model);
    assert_eq!(loaded.len(), 12);
    let computed = swin::relative_position_index(7);
    for (ours, theirs) in built.iter().zip(&loaded) {
        assert!(ours.equal(theirs) && theirs.equal(&computed), "relative_position_index differs");
    }

    let before: Vec<Tensor> = model.named_tensors().into_iter().map(|(_, t)| t.copy()).collect();
    let eval_of = |key: &str| tch::no_grad(|| model.forward(&io[key], false));
    let eval = max_relative_difference(&eval_of("input"), &io["eval_logits"]);
    let odd = max_relative_difference(&eval_of("eval_odd_input"), &io["eval_odd_logits"]);
    let small = max_relative_difference(&eval_of("eval_small_input"), &io["eval_small_logits"]);
    // Eval mode writes no tensor of the model (what `FrozenView`'s sharing rests on).
    for ((name, after), before) in model.named_tensors().iter().zip(&before) {
        assert!(after.equal(before), "{name} changed in eval mode");
    }
    // No other test here draws from libtorch's CPU generator in this process.
    let steps = SgdSteps { seeding: Seeding::FromFixture, statistics_over: None, last_pass_train: false };
    let steps = steps.run(&mut model, &io);
    let other_inputs = vec![("100x44 input", odd), ("32x32 input", small)];
    Report { name, eval, other_inputs, steps, note: String::new() }.print_and_assert(&io);
    // The comparisons can fail: train mode drops branches; without the
    // shift (and so its mask) or the relative position bias, the logits are
    // others; the steps move the loss.
    for key in ["train_logits", "eval_logits_no_shift", "eval_logits_no_bias"] {
        assert_apart(name, &io, key, "eval_logits");
    }
    assert_steps_move_the_loss(name, &io);
}

/// Copies of `model`'s `relative_position_index` buffers.
fn relative_position_indices(model: &Classifier) -> Vec<Tensor> {
    let tensors = model.named_tensors().into_iter();
    tensors.filter(|(n, _)| n.ends_with(".relative_position_index")).map(|(_, t)| t.copy()).collect()
}

#[test]
fn swin_t_matches_torchvision() {
    check_member(Arch::SwinT, "swin_t");
}

#[test]
fn list_archs_gives_torchvisions_parameter_counts_files_and_preprocessing() {
    FAMILY.assert_list_archs_matches(&MEMBERS);
    assert_eq!(Arch::SwinT.head_name(), "head");
    assert_eq!(Arch::SwinT.head_dropout(), 0.0);
    assert!(!Arch::SwinT.depthwise());
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
