//! `finetune export --format onnx` against onnxruntime (PyPI): a trained
//! ResNet-18 (random init) and EfficientNet-Lite0 (ImageNet weights) exported, run by onnxruntime on batches
//! of two sizes (the batch dimension is free), give our eval-mode logits to
//! 1e-4 relative; the preprocessing JSON beside the graph is the model's.
#![cfg(tchlab_data)]

mod common;

use std::path::Path;
use std::process::Command;
use tch::{Device, Kind, Tensor};
use tchlab::finetune::predict::TrainedModel;

/// A quick trained model of `arch` at `size` px in `out` (1 epoch of full
/// mode from `weights`: a random ResNet-18 gives images distinct logits, a
/// random Lite0 nearly the same ones, so Lite0 starts from ImageNet's).
fn trained(arch: &str, size: &str, weights: &[&str], out: &Path) {
    let mut cmd = common::finetune();
    cmd.args(["--arch", arch, "--mode", "full", "--image-size", size, "--epochs", "1"])
        .args(weights)
        .args(["--threads", "1", "--data"])
        .arg(common::small_data())
        .arg("--out")
        .arg(out);
    common::run_ok(&mut cmd);
}

/// onnxruntime's output of `model` on `input`.
fn onnxruntime(model: &Path, input: &Tensor, dir: &Path) -> (Tensor, String) {
    let (source, target) = (dir.join("input.npy"), dir.join("output.npy"));
    input.write_npy(&source).unwrap();
    let script = common::repo().join("tests/fixtures/onnx_run.py");
    let output = common::run_ok(Command::new(common::python()).arg(script).arg(model).arg(&source).arg(&target));
    (Tensor::read_npy(&target).unwrap(), common::stdout(&output))
}

fn check_export(arch: &str, size: i64, weights: &[&str]) {
    let dir = common::temp_dir();
    trained(arch, &size.to_string(), weights, dir.path());
    let output = common::run_ok(common::finetune().args(["export", "--checkpoint"]).arg(dir.path()));
    let model = dir.path().join("model.onnx");
    assert!(common::stdout(&output).contains(&format!("wrote {}", model.display())), "{}", common::stdout(&output));
    let card = common::read_json(&dir.path().join("model.onnx.json"));
    assert_eq!(
        (card["arch"].as_str(), card["crop"].as_i64(), card["opset"].as_i64()),
        (Some(arch), Some(size), Some(17))
    );
    assert_eq!(card["classes"], serde_json::json!(["ants", "bees"]));

    let ours = TrainedModel::load(dir.path(), Device::Cpu).unwrap();
    tch::manual_seed(0);
    for batch in [1, 3] {
        let input = Tensor::randn([batch, 3, size, size], (Kind::Float, Device::Cpu));
        let expected = tch::no_grad(|| ours.model.forward(&input, false));
        let (theirs, shapes) = onnxruntime(&model, &input, dir.path());
        assert!(
            shapes.contains("input images ['batch', 3,") && shapes.contains("output logits ['batch', 2]"),
            "{shapes}"
        );
        assert_eq!(theirs.size(), [batch, 2]);
        let difference = (&theirs - &expected).abs().max().double_value(&[]) / expected.abs().max().double_value(&[]);
        println!(
            "{arch} at {size} px, batch {batch}: onnxruntime against ours, max relative difference {difference:.1e}"
        );
        assert!(difference <= 1e-4, "{arch}: {theirs} against {expected}");
        if batch > 1 {
            // The comparison can fail: the images get logits that differ far more than the tolerance.
            let spread = (expected.get(0) - expected.get(1)).abs().max().double_value(&[]);
            assert!(spread > 1e-2 * expected.abs().max().double_value(&[]), "{arch}: {expected}");
        }
    }
}

#[test]
fn a_resnet18_runs_in_onnxruntime_with_our_logits() {
    check_export("resnet18", 64, &["--random-init"]);
}

#[test]
fn an_efficientnet_lite0_runs_in_onnxruntime_with_our_logits() {
    // 72 px: "SAME" paddings differ from block to block (odd and even sizes).
    let weights = common::lite0_weights().display().to_string();
    check_export("efficientnet-lite0", 72, &["--weights", &weights]);
}
