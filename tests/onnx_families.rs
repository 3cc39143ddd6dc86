//! Every backbone family beyond the ResNets and Lite0 as an ONNX graph
//! (`models::onnx::graph`) against onnxruntime (PyPI): a model built in
//! process, its norms' statistics and scales drawn at random so that its
//! logits depend on the image, exported and run on batches of 1 and 3 (the
//! batch dimension is free) gives our eval-mode logits to 1e-4 relative.
//! Needs only `.venv` (onnxruntime), no data.

mod common;

use std::path::Path;
use std::process::Command;
use tch::{Device, Kind, Tensor};
use tchlab::models::{onnx, Arch, Classifier};

const CLASSES: i64 = 5;

/// Held while a test draws its model and inputs.
static DRAWING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Gives the model values under which its logits depend on the image (a
/// fresh model's batch norms are identities, its LayerNorms too, ConvNeXt's
/// layer scale 1e-6, ViT's class token zero; torchvision's fan-out init
/// makes depthwise kernels so small that the image is lost within a few
/// blocks): norms' statistics, scales and shifts around their usual sizes,
/// convolution kernels normal over their fan-in with variance `gain / fan_in`
/// (`2 / fan_in` for depthwise ones). He's 2 keeps most trunks' signal; the
/// deepest blow up with it (logits 1e2 to 1e6 from larger, cancelling
/// features, where float rounding alone set the two sides 1e-4 to 0.5
/// apart: EfficientNetV2-S, B4, RegNetY-1.6GF), and below it the image fades
/// (B4 at 1.5: logits of two images 1 % apart), so each test picks its gain.
fn randomize(model: &Classifier, gain: f64) {
    tch::no_grad(|| {
        for (name, mut tensor) in model.named_tensors() {
            if tensor.kind() != Kind::Float {
                continue;
            }
            let like = (Kind::Float, Device::Cpu);
            let values = if name.ends_with("running_var") || name.ends_with("layer_scale") {
                Tensor::rand(tensor.size(), like) + 0.5
            } else if name.ends_with("running_mean") || name.ends_with("class_token") {
                Tensor::randn(tensor.size(), like) * 0.1
            } else if tensor.dim() == 1 && name.ends_with(".weight") {
                Tensor::rand(tensor.size(), like) + 0.5
            } else if tensor.dim() == 1 && name.ends_with(".bias") {
                Tensor::randn(tensor.size(), like) * 0.1
            } else if tensor.dim() == 4 && name.ends_with(".weight") {
                let fan_in = tensor.size()[1..].iter().product::<i64>() as f64;
                let gain = if tensor.size()[1] == 1 { 2.0 } else { gain };
                Tensor::randn(tensor.size(), like) * (gain / fan_in).sqrt()
            } else {
                continue;
            };
            tensor.copy_(&values);
        }
    });
}

/// onnxruntime's outputs of `model` on each of `inputs`, and the shapes it reads.
fn onnxruntime(model: &Path, inputs: &[Tensor], dir: &Path) -> (Vec<Tensor>, String) {
    let mut cmd = Command::new(common::python());
    cmd.arg(common::repo().join("tests/fixtures/onnx_run.py")).arg(model);
    let targets: Vec<_> = (0..inputs.len()).map(|i| dir.join(format!("output{i}.npy"))).collect();
    for (i, (input, target)) in inputs.iter().zip(&targets).enumerate() {
        let source = dir.join(format!("input{i}.npy"));
        input.write_npy(&source).unwrap();
        cmd.arg(source).arg(target);
    }
    let output = common::run_ok(&mut cmd);
    (targets.iter().map(|t| Tensor::read_npy(t).unwrap()).collect(), common::stdout(&output))
}

/// `arch` at `size` px (kernels drawn with `gain`, see [`randomize`]),
/// exported and run by onnxruntime on batches of 1 and 3, against our
/// eval-mode logits.
fn check(arch: Arch, size: i64, gain: f64) {
    let name = tchlab::choice_names::Named::name(&arch);
    // One test at a time draws from the global generator: each draws the same values in any order.
    let guard = DRAWING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    tch::manual_seed(0);
    let model = tch::no_grad(|| Classifier::for_images(arch, CLASSES, size, Device::Cpu));
    randomize(&model, gain);
    let inputs: Vec<Tensor> =
        [1, 3].iter().map(|&n| Tensor::randn([n, 3, size, size], (Kind::Float, Device::Cpu))).collect();
    drop(guard);

    let dir = common::temp_dir();
    let path = dir.path().join("model.onnx");
    onnx::graph(&model, size).unwrap().write(&path).unwrap();
    let (outputs, shapes) = onnxruntime(&path, &inputs, dir.path());
    assert!(
        shapes.contains("input images ['batch', 3,") && shapes.contains(&format!("output logits ['batch', {CLASSES}]")),
        "{shapes}"
    );
    for (input, theirs) in inputs.iter().zip(&outputs) {
        let batch = input.size()[0];
        let ours = tch::no_grad(|| model.forward(input, false));
        assert_eq!(theirs.size(), [batch, CLASSES]);
        let scale = ours.abs().max().double_value(&[]);
        let difference = (theirs - &ours).abs().max().double_value(&[]) / scale;
        println!(
            "{name} at {size} px, batch {batch}: onnxruntime against ours, max relative difference {difference:.1e}"
        );
        assert!(difference <= 1e-4, "{name}: {theirs} against {ours}");
        if batch > 1 {
            // The comparison can fail: the images get logits that differ far more than the tolerance.
            let spread = (ours.get(0) - ours.get(1)).abs().max().double_value(&[]);
            println!("{name}: logits of two images differ by {:.1e} relative", spread / scale);
            assert!(spread > 1e-2 * scale, "{name}: {ours}");
        }
    }
}

#[test]
fn mobilenet_v3_large_runs_in_onnxruntime_with_our_logits() {
    check(Arch::MobilenetV3Large, 64, 2.0);
}

#[test]
fn efficientnet_b0_runs_in_onnxruntime_with_our_logits() {
    check(Arch::EfficientnetB0, 64, 2.0);
}

#[test]
fn efficientnet_b1_to_b3_run_in_onnxruntime_with_our_logits() {
    check(Arch::EfficientnetB1, 64, 2.0);
    check(Arch::EfficientnetB2, 64, 2.0);
    check(Arch::EfficientnetB3, 64, 1.5);
}

#[test]
fn efficientnet_b4_runs_in_onnxruntime_with_our_logits() {
    // 32 blocks.
    check(Arch::EfficientnetB4, 64, 1.75);
}

#[test]
fn efficientnet_v2_s_runs_in_onnxruntime_with_our_logits() {
    // Fused blocks in its first three stages.
    check(Arch::EfficientnetV2S, 64, 1.0);
}

#[test]
fn regnet_y_400mf_runs_in_onnxruntime_with_our_logits() {
    check(Arch::RegnetY400mf, 64, 2.0);
}

#[test]
fn regnet_y_1_6gf_runs_in_onnxruntime_with_our_logits() {
    // 27 blocks: gain 1, as V2-S.
    check(Arch::RegnetY1_6gf, 64, 1.0);
}

#[test]
fn convnext_tiny_runs_in_onnxruntime_with_our_logits() {
    check(Arch::ConvnextTiny, 64, 2.0);
}

#[test]
fn convnext_small_runs_in_onnxruntime_with_our_logits() {
    check(Arch::ConvnextSmall, 64, 2.0);
}

#[test]
fn vit_b_16_runs_in_onnxruntime_with_our_logits() {
    // Built for 64 px: a 4×4 grid of patches and the class token.
    check(Arch::VitB16, 64, 2.0);
}

#[test]
fn swin_t_runs_in_onnxruntime_with_our_logits() {
    // 72 px: maps of 18, 9, 5 and 3 positions, padded to whole windows,
    // shifted in the first two stages, merged from odd sizes.
    check(Arch::SwinT, 72, 2.0);
}
