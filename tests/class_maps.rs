//! Grad-CAM maps (`finetune::cam`) against autograd: for Lite0 with its
//! ImageNet weights and for a ResNet-18, on real ants/bees images, the
//! classifier's scores are the head over the mean of the last
//! convolutional map (the premise of the closed form), and the maps equal
//! Grad-CAM computed from autograd's gradients of each class's score.

use tch::{Device, Kind, Tensor};
use tchlab::data::decode::decode_rgb;
use tchlab::data::loader::image_tensor;
use tchlab::data::transforms::{val_transform_sized, Sizing};
use tchlab::finetune::cam::class_maps;
use tchlab::models::{Arch, Classifier, GridLayer};

mod common;

fn images(arch: Arch) -> Tensor {
    let val = common::ants_bees().join("val");
    let files = [val.join("ants/10308379_1b6c72e180.jpg"), val.join("bees/1032546534_06907fe3b3.jpg")];
    let sizing = Sizing::of(&arch.preprocessing(), None);
    let inputs: Vec<Tensor> =
        files.iter().map(|f| val_transform_sized(&image_tensor(&decode_rgb(f).unwrap()), &sizing)).collect();
    arch.normalization().apply(&Tensor::stack(&inputs, 0))
}

/// Grad-CAM from autograd: ReLU(Σ_k α_k A_k), α_k the spatial mean of
/// ∂score_c/∂A_k, the scores computed from the map as the model pools it.
fn autograd_grad_cam(model: &Classifier, images: &Tensor, class: i64) -> (Tensor, Tensor) {
    let map = model.feature_map(images, GridLayer::Last).unwrap().detach().set_requires_grad(true);
    let scores = model.head_forward(&map.mean_dim([2i64, 3].as_slice(), false, Kind::Float), false);
    let gradient = &Tensor::run_backward(&[scores.select(1, class).sum(Kind::Float)], &[&map], false, false)[0];
    let alpha = gradient.mean_dim([2i64, 3].as_slice(), true, Kind::Float);
    let cam = (alpha * &map).sum_dim_intlist([1i64].as_slice(), false, Kind::Float).relu();
    (scores.detach(), cam.detach())
}

fn check(model: &Classifier, arch: Arch) {
    let images = images(arch);
    let scores = tch::no_grad(|| model.forward(&images, false));
    for class in 0..2 {
        let (via_map, expected) = autograd_grad_cam(model, &images, class);
        let premise = (&scores - &via_map).abs().max().double_value(&[]);
        assert!(premise < 1e-4, "{arch:?}: the scores are not the head over the mean map ({premise:e})");
        let maps = class_maps(model, &images, &[class, class]).unwrap();
        assert_eq!(maps.size(), expected.size());
        let error = (&maps - &expected).abs().max().double_value(&[]) / expected.abs().max().double_value(&[]);
        assert!(error < 1e-5, "{arch:?} class {class}: relative error {error:e} against autograd");
        assert!(maps.gt(0.0).any().int64_value(&[]) == 1, "{arch:?} class {class}: an empty map shows nothing");
    }
}

#[test]
fn lite0_class_maps_are_grad_cam() {
    let _rng = common::seeded(0);
    let mut model = Classifier::new(Arch::EfficientnetLite0, 2, Device::Cpu);
    tchlab::persist::weights::load_backbone(&mut model, &common::lite0_weights()).unwrap();
    check(&model, Arch::EfficientnetLite0);
}

#[test]
fn resnet18_class_maps_are_grad_cam() {
    let _rng = common::seeded(0);
    check(&Classifier::new(Arch::Resnet18, 2, Device::Cpu), Arch::Resnet18);
}
