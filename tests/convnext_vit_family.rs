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

use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, Once};
use std::time::Duration;
use tch::{Device, Kind, Tensor};
use tchlab::choice_names::Named;
use tchlab::data::transforms::{Interpolation, Normalization};
use tchlab::models::{vit, Arch, Classifier};
use tchlab::persist::pth::read_state_dict;
use tchlab::persist::weights::load_all;
use tchlab::train::optim::Sgd;
use tchlab::train::step::GradientStep;

/// The members tested here with torchvision's builder names and the image
/// size of their fixtures, in the order the test harness starts their tests.
const MEMBERS: [(Arch, &str, i64); 3] = [
    (Arch::ConvnextSmall, "convnext_small", 48),
    (Arch::ConvnextTiny, "convnext_tiny", 48),
    (Arch::VitB16, "vit_b_16", 64),
];

/// Relative tolerance of every comparison with PyTorch.
const TOLERANCE: f64 = 1e-4;

fn fixture_script() -> PathBuf {
    common::repo().join("tests/fixtures/make_convnext_vit_family.py")
}

fn fixture_dir() -> PathBuf {
    common::repo().join("target/test-fixtures/convnext-vit-family")
}

/// How the writer ended (`None` while it runs).
static WRITER_ENDED: Mutex<Option<String>> = Mutex::new(None);

/// Starts, once per test binary, the Python process that writes the
/// fixtures of [`MEMBERS`] into a fresh [`fixture_dir`], one after another
/// in their tests' order, while the tests check the members it has written.
fn start_writer() {
    static START: Once = Once::new();
    START.call_once(|| {
        // Tests run side by side beside the writer: one libtorch thread each.
        tch::set_num_threads(1);
        let dir = fixture_dir();
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let names = MEMBERS.map(|(_, name, _)| name);
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
/// them; a writer that ends without them fails the test with its stderr.
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
fn check_member(arch: Arch, name: &str, image_size: i64) {
    let (checkpoint, io) = member_fixtures(name);
    let io: HashMap<String, Tensor> = read_state_dict(&io).unwrap().into_iter().collect();
    let mut model = {
        let _generator = GENERATOR.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        Classifier::for_images(arch, 3, image_size, Device::Cpu)
    };
    load_all(&mut model, &checkpoint).unwrap();
    let saved: HashMap<String, Tensor> = read_state_dict(&checkpoint).unwrap().into_iter().collect();
    std::fs::remove_file(&checkpoint).unwrap(); // up to 350 MB each, read once
    let own: Vec<(String, Tensor)> =
        model.named_tensors().into_iter().filter(|(n, _)| OWN_PARAMETERS.contains(&n.as_str())).collect();
    assert!(!own.is_empty(), "{name}");
    let trainable: Vec<String> = model.trainable().iter().map(|(n, _)| n.clone()).collect();
    for (own_name, tensor) in &own {
        assert!(tensor.equal(&saved[own_name]), "{name}: {own_name} loads by name");
        assert!(trainable.contains(own_name), "{name}: {own_name} is trained");
    }
    let before: Vec<Tensor> = own.iter().map(|(_, t)| t.copy()).collect();
    assert!(model.named_buffers().is_empty(), "{name}: no batch norm, no buffers");
    let (input, labels) = (&io["input"], &io["labels"]);

    let eval_logits = tch::no_grad(|| model.forward(input, false));
    let eval = max_relative_difference(&eval_logits, &io["eval_logits"]);

    let lr = io["lr"].double_value(&[0]);
    let mut step = GradientStep::new(model.trainable(), tchlab::accel::backprop(Device::Cpu));
    let mut sgd = Sgd::new(&step.params, 0.9, 0.0);
    let loss = |logits: &Tensor| logits.cross_entropy_for_logits(labels);
    let mut losses = Vec::new();
    let mut train = f64::NAN;
    let generator = GENERATOR.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    for i in 0..3 {
        let mut forward = || {
            tch::manual_seed(i);
            model.forward(input, true)
        };
        let outcome = step.step(&mut sgd, &mut forward, &loss, lr).unwrap();
        if i == 0 {
            train = max_relative_difference(&outcome.logits, &io["train_logits"]);
        }
        losses.push(outcome.loss);
    }
    tch::manual_seed(3);
    losses.push(tch::no_grad(|| loss(&model.forward(input, true))).double_value(&[]));
    drop(generator);
    let losses = Tensor::from_slice(&losses);
    let loss_difference = max_relative_difference(&losses, &io["losses"]);
    println!(
        "{name}: max relative difference from torchvision: eval logits {eval:.1e}, train logits {train:.1e}, \
         losses of 3 SGD steps and after {loss_difference:.1e}"
    );
    assert!(eval <= TOLERANCE, "{name}: eval-mode logits differ by {eval:e}");
    assert!(train <= TOLERANCE, "{name}: train-mode logits differ by {train:e}");
    assert!(loss_difference <= TOLERANCE, "{name}: losses {losses} against {}", io["losses"]);
    // The comparisons can fail: the steps move the loss and the parameters
    // only these nets have, and train mode gives other logits where the net
    // has train-only behaviour (ConvNeXt's stochastic depth; ViT has none
    // at torchvision's dropout of 0).
    let (first, last) = (io["losses"].double_value(&[0]), io["losses"].double_value(&[3]));
    assert!((first - last).abs() > 100.0 * TOLERANCE * first, "{name}: the SGD steps left the loss at {first}");
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

#[test]
fn convnext_small_matches_torchvision() {
    let (arch, name, size) = MEMBERS[0];
    check_member(arch, name, size);
}

#[test]
fn convnext_tiny_matches_torchvision() {
    let (arch, name, size) = MEMBERS[1];
    check_member(arch, name, size);
}

#[test]
fn vit_b_16_matches_torchvision() {
    let (arch, name, size) = MEMBERS[2];
    check_member(arch, name, size);
}

/// A published 224-pixel position embedding meeting a model built for 64
/// pixels is resized as torchvision's `interpolate_embeddings` resizes it.
#[test]
fn vit_b_16_resizes_a_224_pixel_position_embedding_as_torchvision() {
    let (_, io) = member_fixtures("vit_b_16");
    let io: HashMap<String, Tensor> = read_state_dict(&io).unwrap().into_iter().collect();
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

/// `finetune --list-archs`: each row's parameters and weights file.
fn list_archs(models_dir: &Path) -> HashMap<String, (i64, PathBuf)> {
    let output =
        common::run_ok(common::finetune().args(["--list-archs", "--threads", "1", "--models-dir"]).arg(models_dir));
    let text = common::stdout(&output);
    let row = |line: &str| {
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cells.len(), 5, "{line}");
        (cells[0].to_owned(), (cells[1].replace(',', "").parse().unwrap_or(-1), PathBuf::from(cells[3])))
    };
    text.lines().skip(1).map(row).collect()
}

#[test]
fn list_archs_gives_torchvisions_parameter_counts_files_and_preprocessing() {
    let catalogue_dir = common::temp_dir();
    let names = MEMBERS.map(|(_, name, _)| name);
    let script = fixture_script();
    common::run_ok(Command::new(common::python()).arg(script).arg(catalogue_dir.path()).arg("--describe").args(names));
    let published = common::read_json(&catalogue_dir.path().join("published.json"));
    let models_dir = common::temp_dir();
    let rows = list_archs(models_dir.path());
    for (arch, name, _) in MEMBERS {
        let reference = &published[name];
        let (parameters, weights) = &rows[&arch.name()];
        assert_eq!(*parameters, reference["parameters"].as_i64().unwrap(), "{name}");
        assert_eq!(weights.file_name().unwrap().to_str(), reference["file"].as_str(), "{name}");
        assert_eq!(weights, &models_dir.path().join(arch.weights_file()), "{name}");
        let ours = arch.preprocessing();
        assert_eq!(reference["resize"], Value::from(vec![ours.resize]), "{name}");
        assert_eq!(reference["crop"], Value::from(vec![ours.crop]), "{name}");
        let interpolation = match ours.interpolation {
            Interpolation::Bilinear => "bilinear",
            Interpolation::Bicubic => "bicubic",
        };
        assert_eq!(reference["interpolation"], interpolation, "{name}");
        assert_eq!(ours.normalization, Normalization::Imagenet, "{name}");
        let imagenet = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]);
        for c in 0..3 {
            assert!((imagenet.0[c] - reference["mean"][c].as_f64().unwrap()).abs() < 1e-6, "{name}: mean");
            assert!((imagenet.1[c] - reference["std"][c].as_f64().unwrap()).abs() < 1e-6, "{name}: std");
        }
    }
}

#[test]
fn fetch_models_knows_the_new_archs_files() {
    let script = common::repo().join("scripts/fetch-models.sh");
    let output = common::run_ok(Command::new("bash").arg(&script).arg("--list"));
    let text = common::stdout(&output);
    let listed: HashMap<&str, &str> = text.lines().map(|line| line.split_once(' ').unwrap()).collect();
    for (arch, _, _) in MEMBERS {
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
