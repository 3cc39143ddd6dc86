//! torchvision's ConvNeXt-Tiny, ConvNeXt-Small and ViT-B/16 against real
//! torchvision code: each loads a checkpoint torchvision writes at test time
//! (random init, a 3-class head; ViT-B/16 built for 64-pixel images) and
//! gives its logits in eval and train mode and the losses of three SGD steps
//! through the trainer's own step. ConvNeXt's stochastic depth stays on at
//! torchvision's rates: both sides seed libtorch's CPU generator before each
//! train-mode pass and so drop the same rows. Neither family has batch norm,
//! so there are no running statistics to compare (and none are trained).
//! `finetune --list-archs` gives torchvision's parameter counts, file names
//! and preprocessing.

mod common;

use common::torchvision_parity::{
    assert_steps_move_the_loss, imagenet_mean_std, max_relative_difference, Family, Report, Seeding, SgdSteps,
    TOLERANCE,
};
use std::collections::HashMap;
use std::process::Command;
use std::sync::Mutex;
use tch::{Device, Tensor};
use tchlab::choice_names::Named;
use tchlab::models::{vit, Arch, Classifier};
use tchlab::persist::pth::read_state_dict;
use tchlab::persist::weights::load_all;

/// The members tested here with torchvision's builder names, in the order
/// the test harness starts their tests.
const MEMBERS: [(Arch, &str); 3] =
    [(Arch::ConvnextSmall, "convnext_small"), (Arch::ConvnextTiny, "convnext_tiny"), (Arch::VitB16, "vit_b_16")];

/// The image size of a member's fixtures (as make_convnext_vit_family.py's SIZES).
fn image_size(arch: Arch) -> i64 {
    if arch == Arch::VitB16 {
        64
    } else {
        48
    }
}

/// The fixture writer of [`MEMBERS`].
const FAMILY: Family =
    Family { script: "make_convnext_vit_family.py", folder: "convnext-vit-family", members: &MEMBERS };

/// Held by a test while it draws from libtorch's CPU generator, which all
/// the tests of this binary share: building a model (random init) or
/// running the seeded train-mode passes.
static GENERATOR: Mutex<()> = Mutex::new(());

/// Parameters only these families have: they must load by name and train.
const OWN_PARAMETERS: [&str; 3] = ["features.1.0.layer_scale", "class_token", "encoder.pos_embedding"];

/// One member against torchvision: eval-mode logits; the first SGD step's
/// train-mode logits; the losses of three SGD steps (momentum 0.9) through
/// the trainer's own step (`GradientStep` with the CPU's backprop), and the
/// loss after them; every train-mode pass after `manual_seed(k)` as the
/// fixture's.
fn check_member(arch: Arch, name: &str) {
    let fixtures = FAMILY.member_fixtures(name);
    let io = fixtures.read_io();
    let mut model = {
        let _generator = GENERATOR.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        Classifier::for_images(arch, 3, image_size(arch), Device::Cpu)
    };
    load_all(&mut model, &fixtures.checkpoint).unwrap();
    let saved: HashMap<String, Tensor> = read_state_dict(&fixtures.checkpoint).unwrap().into_iter().collect();
    fixtures.remove_checkpoint();
    let own = own_parameters_load_and_train(&model, &saved, name);
    let before: Vec<Tensor> = own.iter().map(|(_, t)| t.copy()).collect();
    assert!(model.named_buffers().is_empty(), "{name}: no batch norm, no buffers");

    let eval = max_relative_difference(&tch::no_grad(|| model.forward(&io["input"], false)), &io["eval_logits"]);
    let steps = SgdSteps { seeding: Seeding::EachPass, statistics_over: None, last_pass_train: true };
    let steps = {
        let _generator = GENERATOR.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        steps.run(&mut model, &io)
    };
    Report { name, eval, other_inputs: vec![], steps, note: String::new() }.print_and_assert(&io);
    // The comparisons can fail: the steps move the loss and the parameters
    // only these nets have, and train mode gives other logits where the net
    // has train-only behaviour (ConvNeXt's stochastic depth; ViT has none
    // at torchvision's dropout of 0).
    assert_steps_move_the_loss(name, &io);
    for ((own_name, after), before) in own.iter().zip(&before) {
        assert!(max_relative_difference(after, before) > 1e-6, "{name}: {own_name} did not move");
    }
    let modes = max_relative_difference(&io["train_logits"], &io["eval_logits"]);
    if arch == Arch::VitB16 {
        assert!(modes <= TOLERANCE, "{name}: torchvision's train and eval logits differ by {modes:e}");
    } else {
        assert!(modes > 100.0 * TOLERANCE, "{name}: stochastic depth left the train logits at the eval ones");
    }
}

/// The parameters of [`OWN_PARAMETERS`] that `model` has (some): each loads
/// by name from the `saved` checkpoint and is trained.
fn own_parameters_load_and_train(
    model: &Classifier,
    saved: &HashMap<String, Tensor>,
    name: &str,
) -> Vec<(String, Tensor)> {
    let own: Vec<(String, Tensor)> =
        model.named_tensors().into_iter().filter(|(n, _)| OWN_PARAMETERS.contains(&n.as_str())).collect();
    assert!(!own.is_empty(), "{name}");
    let trainable: Vec<String> = model.trainable().iter().map(|(n, _)| n.clone()).collect();
    for (own_name, tensor) in &own {
        assert!(tensor.equal(&saved[own_name]), "{name}: {own_name} loads by name");
        assert!(trainable.contains(own_name), "{name}: {own_name} is trained");
    }
    own
}

#[test]
fn convnext_small_matches_torchvision() {
    let (arch, name) = MEMBERS[0];
    check_member(arch, name);
}

#[test]
fn convnext_tiny_matches_torchvision() {
    let (arch, name) = MEMBERS[1];
    check_member(arch, name);
}

#[test]
fn vit_b_16_matches_torchvision() {
    let (arch, name) = MEMBERS[2];
    check_member(arch, name);
}

/// A published 224-pixel position embedding meeting a model built for 64
/// pixels is resized as torchvision's `interpolate_embeddings` resizes it.
#[test]
fn vit_b_16_resizes_a_224_pixel_position_embedding_as_torchvision() {
    let io = FAMILY.member_fixtures("vit_b_16").read_io();
    let generator = GENERATOR.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let model = Classifier::for_images(Arch::VitB16, 3, 64, Device::Cpu);
    let published = Classifier::new(Arch::VitB16, 3, Device::Cpu);
    drop(generator);
    let mut tensors = vec![("encoder.pos_embedding".to_owned(), io["pos_embedding_224"].shallow_clone())];
    assert_eq!(model.fit_pretrained(&mut tensors), ["encoder.pos_embedding"]);
    let difference = max_relative_difference(&tensors[0].1, &io["pos_embedding_64"]);
    println!("vit_b_16: position embedding 197 → 17 entries: max relative difference {difference:.1e}");
    assert!(difference <= TOLERANCE, "{difference:e}");
    assert!(vit::resize_pos_embedding(&io["pos_embedding_64"], 64).equal(&io["pos_embedding_64"]));
    // A model built for 224 pixels takes the published one as it is.
    let mut tensors = vec![("encoder.pos_embedding".to_owned(), io["pos_embedding_224"].shallow_clone())];
    assert!(published.fit_pretrained(&mut tensors).is_empty());
}

#[test]
fn list_archs_gives_torchvisions_parameter_counts_files_and_preprocessing() {
    FAMILY.assert_list_archs_matches(&MEMBERS);
    // What torchvision publishes is ImageNet's mean and std.
    let (mean, std) = imagenet_mean_std();
    let imagenet = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]);
    for c in 0..3 {
        assert!((imagenet.0[c] - mean[c]).abs() < 1e-6 && (imagenet.1[c] - std[c]).abs() < 1e-6, "{mean:?} {std:?}");
    }
}

#[test]
fn fetch_models_knows_the_new_archs_files() {
    let script = common::repo().join("scripts/fetch-models.sh");
    let output = common::run_ok(Command::new("bash").arg(&script).arg("--list"));
    let text = common::stdout(&output);
    let listed: HashMap<&str, &str> = text.lines().map(|line| line.split_once(' ').unwrap()).collect();
    for (arch, _) in MEMBERS {
        assert_eq!(listed.get(arch.name().as_str()), Some(&arch.weights_file()), "{text}");
    }
}

#[test]
fn finetune_refuses_a_vit_image_size_off_its_patches() {
    let output =
        common::finetune().args(["--arch", "vit-b-16", "--random-init", "--image-size", "200"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", common::text(&output.stderr));
    let stderr = common::text(&output.stderr);
    assert!(stderr.contains("--image-size 200") && stderr.contains("multiple of 16"), "{stderr}");
}
