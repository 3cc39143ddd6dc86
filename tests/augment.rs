//! Augmentation and per-backbone resizing against torchvision v2 on real
//! ants/bees images: the fixtures (tests/fixtures/make_augment_fixtures.py)
//! hold torchvision's outputs for the same decoded pixels; ours must be
//! within one grey level. Also: a seed's draws give the same images whatever
//! the worker count, erasing zeroes exactly its box of the normalized image,
//! and MixUp/CutMix give torchvision's images and targets for the same λ and box.
// Needs the data tier (data/ and models/ fetched; see build.rs).
#![cfg(tchlab_data)]

mod common;

use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use tch::{Kind, Tensor};
use tchlab::data::augment::draw::{op_interpolated, op_of, AugMixDraw, Transform};
use tchlab::data::augment::mix::BatchMix;
use tchlab::data::augment::ops::Op;
use tchlab::data::augment::{augmix_mixture, AugmentRecipe, Preset};
use tchlab::data::image_folder::ImageFolder;
use tchlab::data::loader::{DecodedSplit, EpochPlan, PixelBudget};
use tchlab::data::transforms::{val_transform_sized, Interpolation, Normalization, Sizing};
use tchlab::persist::pth::read_state_dict;

fn fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = common::repo().join("target/test-fixtures/augment");
        let script = common::repo().join("tests/fixtures/make_augment_fixtures.py");
        common::run_ok(Command::new(common::python()).arg(script).arg(&dir).arg(common::ants_bees()));
        dir
    })
}

fn tensors(name: &str) -> HashMap<String, Tensor> {
    read_state_dict(&fixtures().join(name)).unwrap().into_iter().collect()
}

/// The largest difference in grey levels between two uint8 images.
fn max_grey_diff(ours: &Tensor, theirs: &Tensor) -> i64 {
    assert_eq!(ours.size(), theirs.size());
    (ours.to_kind(Kind::Int16) - theirs.to_kind(Kind::Int16)).abs().max().int64_value(&[])
}

#[test]
fn val_resizes_match_torchvision_bicubic_and_bilinear() {
    let fixtures = tensors("resize.pth");
    let sizings = [
        (232, 224, Interpolation::Bicubic, "bicubic"),
        (384, 380, Interpolation::Bicubic, "bicubic"),
        (166, 160, Interpolation::Bicubic, "bicubic"),
        (256, 224, Interpolation::Bilinear, "bilinear"),
    ];
    for (resize, size, interpolation, name) in sizings {
        let sizing = Sizing { size, resize, interpolation };
        let mut worst = 0;
        for i in 0..4 {
            let ours = (val_transform_sized(&fixtures[&format!("original_{i}")], &sizing) * 255.0).round();
            let theirs = &fixtures[&format!("{resize}_{size}_{name}_{i}")];
            worst = worst.max(max_grey_diff(&ours.to_kind(Kind::Uint8), theirs));
        }
        println!("resize {resize} crop {size} {name}: max |ours - torchvision| = {worst} grey level(s)");
        assert!(worst <= 1, "resize {resize} crop {size} {name} differs by {worst} grey levels");
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Case {
    Preset { transform: Transform, magnitude: f64 },
    Functional { functional: Op },
}

impl Case {
    fn op(&self) -> Op {
        match *self {
            Case::Preset { transform, magnitude } => op_of(transform, magnitude),
            Case::Functional { functional } => functional,
        }
    }

    fn name(&self) -> String {
        match self {
            Case::Preset { transform, .. } => format!("{transform:?}"),
            Case::Functional { functional } => format!("{functional:?}").split(' ').next().unwrap().to_owned(),
        }
    }
}

#[test]
fn every_operation_matches_torchvision_v2_on_real_images() {
    let fixtures = tensors("ops.pth");
    let cases: Vec<Case> =
        serde_json::from_str(&std::fs::read_to_string(fixtures_path("cases.json")).unwrap()).unwrap();
    assert!(cases.len() > 40, "{} cases", cases.len());
    let mut worst_by_op: BTreeMap<String, i64> = BTreeMap::new();
    for (k, case) in cases.iter().enumerate() {
        for j in 0..4 {
            let ours = case.op().apply(&fixtures[&format!("input_{j}")]);
            let diff = max_grey_diff(&ours, &fixtures[&format!("case_{k}_{j}")]);
            assert!(diff <= 1, "case {k} ({:?}) on image {j}: {diff} grey levels from torchvision", case.op());
            let worst = worst_by_op.entry(case.name()).or_default();
            *worst = (*worst).max(diff);
        }
    }
    println!("max |ours - torchvision v2| in grey levels, per operation: {worst_by_op:?}");
}

#[derive(Deserialize)]
struct AugMixCase {
    original: f32,
    chains: Vec<(f32, Vec<(Transform, f64)>)>,
}

#[test]
fn augmix_mixes_its_bilinear_chains_as_torchvision_v2() {
    let fixtures = tensors("ops.pth");
    let text = std::fs::read_to_string(fixtures_path("augmix.json")).unwrap();
    let cases: Vec<AugMixCase> = serde_json::from_str(&text).unwrap();
    let mut worst = 0;
    for (k, case) in cases.iter().enumerate() {
        let chains = case
            .chains
            .iter()
            .map(|(w, ops)| (*w, ops.iter().map(|&(t, m)| op_interpolated(t, m, true)).collect()))
            .collect();
        let draw = AugMixDraw { original: case.original, chains };
        for j in 0..4 {
            let ours = augmix_mixture(&fixtures[&format!("input_{j}")], &draw);
            let diff = max_grey_diff(&ours, &fixtures[&format!("augmix_{k}_{j}")]);
            assert!(diff <= 1, "AugMix case {k} on image {j}: {diff} grey levels from torchvision");
            worst = worst.max(diff);
        }
    }
    println!("AugMix mixtures: max |ours - torchvision v2| = {worst} grey level(s)");
}

fn fixtures_path(name: &str) -> PathBuf {
    fixtures().join(name)
}

/// A small real train split, decoded, at `size`² with `recipe`.
fn split(recipe: AugmentRecipe, size: i64) -> DecodedSplit {
    let data = common::small_ants_bees("augment-data", 6);
    let (train, _) = ImageFolder::scan_train_val(&data).unwrap();
    let hidden = indicatif::ProgressBar::hidden();
    let mut split = DecodedSplit::decode(&train, false, &mut PixelBudget::default(), &hidden).unwrap();
    split.sizing = Sizing::tutorial(size);
    split.augment = recipe;
    split.erase_fill = Normalization::Imagenet.zero_point();
    split
}

#[test]
fn a_seed_gives_the_same_augmented_images_on_any_number_of_workers() {
    for preset in [Preset::Trivialaugment, Preset::Randaugment, Preset::Autoaugment, Preset::Augmix] {
        let recipe = AugmentRecipe {
            preset,
            color_jitter: Some([0.4, 0.4, 0.4, 0.1]),
            random_erase: 0.5,
            ..AugmentRecipe::TUTORIAL
        };
        let split = split(recipe, 64);
        let plan = EpochPlan::draw(&split, 7, 2);
        assert_eq!(plan.extras.len(), split.len());
        let (parallel, _) = plan.batch(&split, split.len(), 0);
        let (alone, _) = plan.batch_here(&split, split.len(), 0);
        assert!(parallel.equal(&alone), "{preset:?}: the rayon pool and one thread differ");
        let again = EpochPlan::draw(&split, 7, 2);
        assert_eq!(again.extras, plan.extras, "{preset:?}: the same seed drew differently");
        let tutorial = EpochPlan::draw(&self::split(AugmentRecipe::TUTORIAL, 64), 7, 2);
        assert_eq!(tutorial.order, plan.order);
        assert_eq!(tutorial.augmentations[0].crop, plan.augmentations[0].crop, "the first crop is drawn first");
        assert!(!parallel.equal(&tutorial.batch(&self::split(AugmentRecipe::TUTORIAL, 64), 12, 0).0));
    }
}

#[test]
fn erasing_sets_its_box_of_the_normalized_image_to_zero_and_nothing_else() {
    let erased = split(AugmentRecipe { random_erase: 1.0, ..AugmentRecipe::TUTORIAL }, 96);
    let plan = EpochPlan::draw(&erased, 3, 0);
    let (images, _) = plan.batch(&erased, erased.len(), 0);
    let normalized = Normalization::Imagenet.apply(&images);
    let boxes: Vec<_> = plan.extras.iter().filter_map(|e| e.erase).collect();
    assert!(boxes.len() > erased.len() / 2, "p = 1 erases unless ten tries fail: {} boxes", boxes.len());
    let mut plain = plan;
    plain.extras.iter_mut().for_each(|e| e.erase = None);
    let (unerased, _) = plain.batch(&erased, erased.len(), 0);
    assert!(plain.extras.iter().all(|e| e.ops.is_empty()), "erasing alone draws no operations");
    let changed = images.ne_tensor(&unerased).any_dim(1, false);
    for (n, b) in boxes_by_sample(&erased, 3).into_iter().enumerate() {
        let sample = normalized.get(n as i64);
        let changed = changed.get(n as i64);
        match b {
            Some(b) => {
                let inside = sample.narrow(1, b.top, b.height).narrow(2, b.left, b.width);
                assert_eq!(inside.abs().max().double_value(&[]), 0.0, "sample {n}: {b:?} not zero");
                let (area, slack) = ((b.height * b.width) as f64, (b.height + b.width) as f64);
                let image_area = 96.0 * 96.0;
                assert!(area + slack >= 0.02 * image_area && area - slack <= 0.33 * image_area, "{b:?}");
                let changed_pixels = changed.to_kind(Kind::Int64).sum(Kind::Int64).int64_value(&[]);
                assert!(changed_pixels <= b.height * b.width, "sample {n}: pixels outside {b:?} changed");
            }
            None => assert_eq!(changed.to_kind(Kind::Int64).sum(Kind::Int64).int64_value(&[]), 0),
        }
    }
}

fn boxes_by_sample(split: &DecodedSplit, seed: u64) -> Vec<Option<tchlab::data::transforms::CropBox>> {
    EpochPlan::draw(split, seed, 0).extras.iter().map(|e| e.erase).collect()
}

#[test]
fn mixup_and_cutmix_match_torchvision_v2_for_the_same_lambda_and_box() {
    let fixtures = tensors("mix.pth");
    let (images, labels) = (&fixtures["images"], &fixtures["labels"]);
    let close = |ours: &Tensor, theirs: &Tensor, what: &str| {
        assert_eq!(ours.size(), theirs.size(), "{what}");
        let diff = (ours - theirs).abs().max().double_value(&[]);
        println!("{what}: max |ours - torchvision| = {diff:e}");
        assert!(diff <= 1e-6, "{what} differs by {diff}");
    };
    let mixup = BatchMix::MixUp { lam: 0.3 };
    close(&mixup.images(images), &fixtures["mixup_images"], "mixup images");
    close(&mixup.targets(labels, 2, 0.0), &fixtures["mixup_targets"], "mixup targets");
    let centre: Vec<i64> = Vec::try_from(&fixtures["cutmix_centre"]).unwrap();
    let cutmix = BatchMix::cutmix(0.6, centre[0], centre[1], 128, 128);
    close(&cutmix.images(images), &fixtures["cutmix_images"], "cutmix images");
    close(&cutmix.targets(labels, 2, 0.0), &fixtures["cutmix_targets"], "cutmix targets");
    assert!(cutmix.lam() != 0.6, "λ corrected to the box's area: {cutmix:?}");
    // Smoothing as timm composes it: each one-hot smoothed, then mixed.
    let smoothed = mixup.targets(labels, 2, 0.1);
    let expected = Tensor::from_slice(&[0.95, 0.05, 0.3 * 0.05 + 0.7 * 0.95, 0.3 * 0.95 + 0.7 * 0.05]).view([2, 2]);
    close(&smoothed.narrow(0, 1, 2), &expected.to_kind(Kind::Float), "smoothed mixup targets");
    assert!(mixup.dominant_labels(labels).equal(&labels.roll([1], [0])), "λ 0.3: the partner's label dominates");
}
