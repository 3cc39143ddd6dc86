//! torchvision's ResNet family beyond ResNet-18/34/50 against real
//! torchvision code: each member loads a checkpoint torchvision writes at test
//! time (random init, a 3-class head) and gives its logits in eval and train
//! mode, the running statistics that train mode leaves, and the losses of
//! three SGD steps through the trainer's own step; `finetune --list-archs`
//! gives torchvision's parameter counts, file names and preprocessing.

mod common;

use clap::ValueEnum;
use common::torchvision_parity::{
    assert_apart, assert_list_archs_matches, assert_steps_move_the_loss, max_relative_difference, Family, Report,
    Seeding, SgdSteps,
};
use std::collections::HashMap;
use std::process::Command;
use tch::Device;
use tchlab::choice_names::Named;
use tchlab::data::transforms::{Interpolation, Normalization, CROP_SIZE, RESIZE_SIZE};
use tchlab::models::{Arch, Classifier};

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

/// The fixture writer of [`NEW_MEMBERS`].
const FAMILY: Family = Family { script: "make_resnet_family.py", folder: "resnet-family", members: &NEW_MEMBERS };

/// One member against torchvision: eval-mode logits; the first SGD step's
/// train-mode logits and the running statistics it leaves; the losses of
/// three SGD steps (momentum 0.9) through the trainer's own step
/// (`GradientStep` with the CPU's backprop), and the loss after them.
fn check_member(arch: Arch, name: &str) {
    let mut model = Classifier::new(arch, 3, Device::Cpu);
    let io = FAMILY.load_member(name, &mut model);

    let eval = max_relative_difference(&tch::no_grad(|| model.forward(&io["input"], false)), &io["eval_logits"]);
    let steps = SgdSteps { seeding: Seeding::None, statistics_over: Some(100), last_pass_train: true };
    let steps = steps.run(&mut model, &io);
    Report { name, eval, other_inputs: vec![], steps, note: String::new() }.print_and_assert(&io);
    // The comparisons can fail: the modes give other logits, and the steps move the loss.
    assert_apart(name, &io, "train_logits", "eval_logits");
    assert_steps_move_the_loss(name, &io);
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

#[test]
fn list_archs_gives_torchvisions_parameter_counts_files_and_preprocessing() {
    let published = FAMILY.published(&ALL_RESNETS);
    let models_dir = common::temp_dir();
    let placed = Arch::Resnet152.weights_file();
    std::fs::write(models_dir.path().join(placed), b"").unwrap();
    let rows = assert_list_archs_matches(&published, models_dir.path(), &ALL_RESNETS);

    for arch in Arch::value_variants() {
        let row = &rows[&arch.name()];
        assert_eq!(row.weights, models_dir.path().join(arch.weights_file()));
        assert_eq!(row.present, arch.weights_file() == placed, "{}", arch.name());
        assert_eq!(row.features, arch.feature_count());
    }
    let lite0 = &rows["efficientnet-lite0"];
    assert_eq!(lite0.parameters, published["efficientnet-lite0"]["parameters"].as_i64().unwrap());
    // The weights were trained on what our val transform gives.
    for (arch, name) in ALL_RESNETS {
        let preprocessing = arch.preprocessing();
        assert_eq!((preprocessing.resize, preprocessing.crop), (RESIZE_SIZE, CROP_SIZE), "{name}");
        assert_eq!(preprocessing.interpolation, Interpolation::Bilinear, "{name}");
        assert_eq!(arch.normalization(), Normalization::Imagenet, "{name}");
    }
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
