//! Grid features for captioning (issue 31): the frozen backbone's last
//! convolutional maps as `[images, L, C]`, their cache keyed by the layer,
//! and 3-D features through the dataset's checks and the nearest-neighbour
//! baseline, a network that attends trained and used by the tool over them.
//! A few real images (ants and bees, digit scenes), Lite0's real weights;
//! the other families at random initialisation.
#![cfg(tchlab_data)]

mod common;

use common::{ants_bees, caption, lite0_weights, mnist_dir, one_line_error, run_ok};
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};
use tchlab::caption::coco_json::{self, TextOptions};
use tchlab::caption::dataset::{token_rows, CaptionSplit, ImageSource};
use tchlab::caption::evaluate::nearest_neighbour_captions;
use tchlab::caption::features::{Extractor, FeatureShape};
use tchlab::caption::scenes::{make_scenes, SceneCounts};
use tchlab::caption::vocab::{tokenize, Vocabulary};
use tchlab::data::decode::decode_rgb;
use tchlab::data::loader::image_tensor;
use tchlab::data::transforms::{val_transform_sized, Sizing};
use tchlab::models::{Arch, Classifier, GridLayer};
use tchlab::report::{Capture, Silent};

/// The first `n` training ants.
fn ant_images(n: usize) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(ants_bees().join("train/ants")).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files.truncate(n);
    files
}

/// `images` through `arch`'s val transform and normalization, `[N, 3, H, W]`.
fn model_input(arch: Arch, images: &[PathBuf]) -> Tensor {
    let sizing = Sizing::of(&arch.preprocessing(), None);
    let pixels: Vec<Tensor> =
        images.iter().map(|p| val_transform_sized(&image_tensor(&decode_rgb(p).unwrap()), &sizing)).collect();
    arch.normalization().apply(&Tensor::stack(&pixels, 0))
}

fn max_relative_difference(a: &Tensor, b: &Tensor) -> f64 {
    let scale = b.abs().max().double_value(&[]).max(1.0);
    (a - b).abs().max().double_value(&[]) / scale
}

fn lite0(shape: FeatureShape) -> Extractor {
    Extractor { arch: Arch::EfficientnetLite0, weights: lite0_weights(), image_size: None, device: Device::Cpu, shape }
}

#[test]
fn a_grid_averaged_over_its_locations_is_the_pooled_feature() {
    let images = ant_images(2);
    let mut model = Classifier::new(Arch::EfficientnetLite0, 1, Device::Cpu);
    tchlab::persist::weights::load_backbone(&mut model, &lite0_weights()).unwrap();
    let random = |arch| tch::no_grad(|| Classifier::new(arch, 1, Device::Cpu));
    // (model, last map's [L, C], penultimate map's [L, C] at 224 px, whether
    // the pooled feature is the last map's mean and nothing more).
    let cases = [
        (model, [49, 1280], [49, 320], true),
        (random(Arch::Resnet18), [49, 512], [196, 256], true),
        (random(Arch::EfficientnetB0), [49, 1280], [49, 320], true),
        (random(Arch::RegnetY400mf), [49, 440], [196, 208], true),
        (random(Arch::MobilenetV3Large), [49, 960], [49, 160], false),
        (random(Arch::ConvnextTiny), [49, 768], [196, 384], false),
    ];
    for (model, last, penultimate, pooled_is_mean) in cases {
        assert!(model.arch.has_grid() && model.arch.pools_grid_mean() == pooled_is_mean);
        let input = model_input(model.arch, &images);
        let view = model.frozen();
        let grid = view.grid(&input, GridLayer::Last).expect("a CNN has a grid");
        assert_eq!(grid.size(), [2, last[0], last[1]], "{:?}", model.arch);
        if pooled_is_mean {
            let mean = grid.mean_dim([1i64].as_slice(), false, Kind::Float);
            let difference = max_relative_difference(&mean, &view.features(&input));
            assert!(difference <= 1e-5, "{:?}: the grid's mean is {difference} from the pooled feature", model.arch);
        }
        let below = view.grid(&input, GridLayer::Penultimate).unwrap();
        assert_eq!(below.size(), [2, penultimate[0], penultimate[1]], "{:?}", model.arch);
    }
    let swin = random(Arch::SwinT);
    assert!(
        !Arch::SwinT.has_grid()
            && swin.frozen().grid(&Tensor::zeros([1, 3, 64, 64], tch::kind::FLOAT_CPU), GridLayer::Last).is_none()
    );

    // Stored in f16, the grid still averages to the pooled feature to f16's precision.
    let pooled = lite0(FeatureShape::Pooled).compute(&images, "ants", &Silent).unwrap();
    let grid = lite0(FeatureShape::Grid(GridLayer::Last)).compute(&images, "ants", &Silent).unwrap();
    assert_eq!((grid.kind(), grid.size()), (Kind::Half, vec![2, 49, 1280]));
    let mean = grid.to_kind(Kind::Float).mean_dim([1i64].as_slice(), false, Kind::Float);
    let difference = max_relative_difference(&mean, &pooled);
    assert!(difference <= 1e-3, "f16 grid mean {difference} from the pooled feature");
    let error = lite0(FeatureShape::Grid(GridLayer::Last));
    let error = Extractor { arch: Arch::SwinT, ..error }.compute(&images, "ants", &Silent).unwrap_err().to_string();
    assert!(error.starts_with("swin-t: no convolutional grid of features"), "{error}");
    let vit = Extractor { arch: Arch::VitB16, image_size: Some(100), ..lite0(FeatureShape::Pooled) };
    let error = vit.compute(&images, "ants", &Silent).unwrap_err().to_string();
    assert_eq!(error, "--image-size 100: vit-b-16 cuts images into 16-pixel patches; give a multiple of 16");
}

#[test]
fn the_grid_cache_is_keyed_by_layer_and_a_damaged_one_is_computed_again() {
    let images = ant_images(2);
    let tmp = tempfile::tempdir().unwrap();
    let last = lite0(FeatureShape::Grid(GridLayer::Last));
    let penultimate = lite0(FeatureShape::Grid(GridLayer::Penultimate));
    let last_cache = last.cache_file(tmp.path(), "train");
    let penultimate_cache = penultimate.cache_file(tmp.path(), "train");
    let pooled_cache = lite0(FeatureShape::Pooled).cache_file(tmp.path(), "train");
    assert_eq!(
        pooled_cache.file_name().unwrap(),
        "efficientnet-lite0-train.safetensors",
        "the pooled cache keeps its name"
    );
    assert_ne!(last_cache, penultimate_cache);
    let from_cache = "train: 2 image features from";
    let features = |extractor: &Extractor, cache: &PathBuf| {
        let capture = Capture::default();
        let (features, unreadable) = extractor.features(&images, cache, "train", &capture).unwrap();
        assert!(unreadable.is_empty());
        (features, capture.warnings().join("\n"))
    };

    let (computed, warnings) = features(&last, &last_cache);
    assert!(!warnings.contains(from_cache) && last_cache.is_file(), "{warnings}");
    let (cached, warnings) = features(&last, &last_cache);
    assert!(warnings.contains(from_cache), "{warnings}");
    assert_eq!((cached.kind(), &cached), (Kind::Half, &computed));

    // The other layer has its own file, and is never served the last map's.
    let (below, warnings) = features(&penultimate, &penultimate_cache);
    assert!(!warnings.contains(from_cache) && below.size() == [2, 49, 320], "{warnings}");
    let (below_again, warnings) = features(&penultimate, &last_cache);
    assert!(!warnings.contains(from_cache), "a cache of another layer is a miss: {warnings}");
    assert_eq!(below_again, below);

    // A larger input has its own file and a finer grid: 448 px doubles Lite0's side.
    let finer = Extractor { image_size: Some(448), ..lite0(FeatureShape::Grid(GridLayer::Penultimate)) };
    let finer_cache = finer.cache_file(tmp.path(), "train");
    assert_eq!(finer_cache.file_name().unwrap(), "efficientnet-lite0-448px-grid-penultimate-train.safetensors");
    let (fine, warnings) = features(&finer, &penultimate_cache);
    assert!(!warnings.contains(from_cache) && fine.size() == [2, 196, 320], "another size is a miss: {warnings}");
    let published = Extractor { image_size: Some(224), ..penultimate.clone() };
    assert_eq!(published.cache_file(tmp.path(), "train"), penultimate_cache, "the published size keeps the name");

    // A file cut short (its header whole) is computed again, and cached again.
    let (_, _) = features(&last, &last_cache);
    let bytes = std::fs::read(&last_cache).unwrap();
    std::fs::write(&last_cache, &bytes[..bytes.len() - 1000]).unwrap();
    let (recomputed, warnings) = features(&last, &last_cache);
    assert!(warnings.contains("train: computing the features again") && !warnings.contains(from_cache), "{warnings}");
    assert_eq!(recomputed, computed);
    let (_, warnings) = features(&last, &last_cache);
    assert!(warnings.contains(from_cache), "{warnings}");
}

/// A split of `grids` (`[images, L, C]`), each image captioned by the
/// caption of the same index.
fn split(name: &str, grids: Tensor, captions: &[&str], vocab: &Vocabulary) -> CaptionSplit {
    let rows: Vec<Vec<i64>> = captions.iter().map(|c| vocab.encode(&tokenize(c), 4)).collect();
    let images = grids.size()[0] as usize;
    CaptionSplit {
        name: name.into(),
        features: grids.to_kind(Kind::Half),
        captions: token_rows(&rows, 6),
        image_of_caption: Tensor::from_slice(&(0..captions.len() as i64).collect::<Vec<_>>()),
        sources: vec![ImageSource::Unknown; images],
    }
}

#[test]
fn three_dimensional_features_pass_the_checks_and_the_baseline_pools_them() {
    let captions = ["a one", "a two"];
    let words: Vec<Vec<String>> = captions.iter().map(|c| tokenize(c)).collect();
    let vocab = Vocabulary::build(words.iter().map(Vec::as_slice), 1);
    // Image 0 averages to (0.5, 0.5); image 1 to (0.5, 0.7) but, location by
    // location, is nearly the val image: the baseline compares averages.
    let train_grids = Tensor::from_slice(&[1.0f32, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.4]).reshape([2, 2, 2]);
    let train = split("train", train_grids, &captions, &vocab);
    let val = split("val", Tensor::from_slice(&[0.0f32, 1.0, 1.0, 0.0]).reshape([1, 2, 2]), &["a one"], &vocab);
    train.validate(&vocab).unwrap();
    val.validate(&vocab).unwrap();
    assert_eq!(train.feature_width(), 2);
    let pooled = train.pooled_features(&[1]);
    assert_eq!((pooled.kind(), pooled.size()), (Kind::Float, vec![1, 2]));
    assert!(max_relative_difference(&pooled, &Tensor::from_slice(&[0.5f32, 0.7]).reshape([1, 2])) < 1e-3);
    assert_eq!(nearest_neighbour_captions(&train, &val, &[0], &vocab), ["a one"]);
    let subsampled = train.subsample(1, 0);
    assert_eq!((subsampled.num_captions(), subsampled.features.size()), (1, vec![2, 2, 2]));
    subsampled.validate(&vocab).unwrap();

    let four_dims = split("val", Tensor::zeros([1, 2, 2, 1], tch::kind::FLOAT_CPU), &["a one"], &vocab);
    let error = four_dims.validate(&vocab).unwrap_err().to_string();
    assert_eq!(error, "val features: expected [images, D] or [images, locations, C], found [1, 2, 2, 1]");
    let no_locations = split("val", Tensor::zeros([1, 0, 2], tch::kind::FLOAT_CPU), &["a one"], &vocab);
    assert!(no_locations.validate(&vocab).is_err());
}

#[test]
fn a_caption_folder_loads_with_grid_features() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("scenes");
    make_scenes(&mnist_dir(), &data, SceneCounts { train: 4, val: 2, seed: 7 }, false, &Silent).unwrap();
    let text = TextOptions { min_count: 1, max_words: 15 };
    let loaded = coco_json::load(&data, text, &lite0(FeatureShape::Grid(GridLayer::Last)), &Silent).unwrap();
    for (split, images) in [(&loaded.train, 4), (&loaded.val, 2)] {
        split.validate(&loaded.vocab).unwrap();
        assert_eq!((split.features.kind(), split.features.size()), (Kind::Half, vec![images, 49, 1280]));
    }
    assert!(data.join("features/efficientnet-lite0-grid-last-train.safetensors").is_file());
    let nearest = nearest_neighbour_captions(&loaded.train, &loaded.val, &[0, 1], &loaded.vocab);
    assert_eq!(nearest.len(), 2);
    assert!(nearest.iter().all(|caption| caption.starts_with("a ")), "{nearest:?}");
}

/// `caption train --cell attention` reads the grid of the layer asked for,
/// draws where each word looked, and `caption sample` computes the grid of
/// a new image for the saved model; a grid for a pooled cell or from a
/// backbone without one is one line.
#[test]
fn the_tool_trains_on_grids_draws_attention_and_captions_new_images() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("scenes");
    make_scenes(&mnist_dir(), &data, SceneCounts { train: 6, val: 3, seed: 2 }, false, &Silent).unwrap();
    let out = tmp.path().join("run");
    let train = || {
        let mut command = caption();
        command.args(["train", "--epochs", "1", "--hidden", "16", "--wordvec", "16", "--threads", "1", "--data"]);
        command.arg(&data).arg("--out").arg(&out);
        command
    };
    run_ok(train().args(["--cell", "attention", "--feature-grid", "penultimate"]));
    assert!(data.join("features/efficientnet-lite0-grid-penultimate-train.safetensors").is_file());
    assert_eq!(common::png_size(&out.join("attention_val.png")).0, 1254, "eight panels across");
    let image = data.join("val/scene_000001.png");
    let sampled = run_ok(caption().args(["sample", "--json", "--checkpoint"]).arg(&out).arg(&image));
    let rows: serde_json::Value = serde_json::from_slice(&sampled.stdout).unwrap();
    assert!(rows[0]["caption"].is_string(), "{rows}");

    let error =
        one_line_error(&train().args(["--cell", "lstm", "--feature-grid", "last", "--overwrite"]).output().unwrap());
    assert!(error.contains("--feature-grid is for --cell attention|transformer"), "{error}");
    let error =
        one_line_error(&train().args(["--cell", "attention", "--arch", "vit-b-16", "--overwrite"]).output().unwrap());
    assert!(error.contains("vit-b-16: no convolutional grid of features"), "{error}");
}
