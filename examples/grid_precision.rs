//! What storing caption grid features in f16 costs: the stored grid of the
//! first N val images against the backbone's f32 output, in units of each
//! channel's deviation over the training split, and the nearest-neighbour
//! baseline (which averages a grid over its locations) on the f16 grids
//! against the f32 pooled features. Lite0, `--feature-grid last`; reads or
//! computes both caches of DATA (`cargo run --release --example
//! grid_precision -- [DATA] [N]`; DATA default data/mnist-scenes, N 64).

use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};
use tchlab::caption::coco_json::{self, TextOptions};
use tchlab::caption::dataset::{CaptionData, ImageSource};
use tchlab::caption::evaluate::{score_table, SplitCaptions};
use tchlab::caption::features::{Extractor, FeatureShape};
use tchlab::data::decode::decode_rgb;
use tchlab::data::loader::image_tensor;
use tchlab::data::transforms::{val_transform_sized, Sizing};
use tchlab::models::{Arch, Classifier, GridLayer};
use tchlab::report::Terminal;
use tchlab::train::amp::Autocast;
use tchlab::train::frozen_backbone::{backbone_grid, FrozenPass};

const ARCH: Arch = Arch::EfficientnetLite0;

/// Lite0's weights, by the absolute path `caption train` keys its caches by.
fn weights() -> PathBuf {
    std::path::absolute(ARCH.default_weights(Path::new("models"))).expect("a current folder")
}

fn load(data: &Path, shape: FeatureShape) -> anyhow::Result<CaptionData> {
    let extractor = Extractor { arch: ARCH, weights: weights(), image_size: None, device: Device::Cpu, shape };
    coco_json::load(data, TextOptions { min_count: 1, max_words: 15 }, &extractor, &Terminal)
}

/// Per-channel mean and deviation of `[images, L, C]` over images and locations, in chunks.
fn channel_statistics(grid: &Tensor) -> (Tensor, Tensor) {
    let channels = grid.size()[2];
    let (mut sum, mut squares) =
        (Tensor::zeros([channels], tch::kind::DOUBLE_CPU), Tensor::zeros([channels], tch::kind::DOUBLE_CPU));
    let mut count = 0;
    for chunk in grid.split(256, 0) {
        let values = chunk.to_kind(Kind::Double).reshape([-1, channels]);
        sum += values.sum_dim_intlist([0i64].as_slice(), false, Kind::Double);
        squares += values.square().sum_dim_intlist([0i64].as_slice(), false, Kind::Double);
        count += values.size()[0];
    }
    let mean = &sum / count as f64;
    let deviation = (squares / count as f64 - mean.square()).clamp_min(1e-12).sqrt();
    (mean, deviation)
}

/// The f32 grid of `images`.
fn f32_grid(images: &[PathBuf]) -> anyhow::Result<Tensor> {
    let mut model = Classifier::new(ARCH, 1, Device::Cpu);
    tchlab::persist::weights::load_backbone(&mut model, &weights())?;
    let sizing = Sizing::of(&ARCH.preprocessing(), None);
    let pixels: Vec<Tensor> = images
        .iter()
        .map(|p| Ok(val_transform_sized(&image_tensor(&decode_rgb(p)?), &sizing)))
        .collect::<anyhow::Result<_>>()?;
    let pass = FrozenPass { normalization: ARCH.normalization(), device: Device::Cpu, autocast: Autocast::Off };
    backbone_grid(&model, &Tensor::stack(&pixels, 0), (pass, GridLayer::Last), "f32 grid", &Terminal)
}

/// The nearest-neighbour baseline's val captions and BLEU-4 on `data`.
fn nearest_neighbour(data: &CaptionData) -> (Vec<String>, f64) {
    let images = data.val.captioned_images();
    let rows = data.val.rows_by_image();
    let truths = images.iter().map(|i| data.val.decode(&rows[i], &data.vocab)).collect();
    let val = SplitCaptions { images: images.clone(), sampled: vec![String::new(); images.len()], truths };
    let captions = tchlab::caption::evaluate::nearest_neighbour_captions(&data.train, &data.val, &images, &data.vocab);
    (captions, score_table("", &val, data)[2].bleu[3])
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let data = PathBuf::from(args.next().unwrap_or("data/mnist-scenes".into()));
    let n: usize = args.next().map_or(Ok(64), |a| a.parse())?;
    let grid = load(&data, FeatureShape::Grid(GridLayer::Last))?;
    let pooled = load(&data, FeatureShape::Pooled)?;
    let mb = |t: &Tensor| (t.numel() * t.kind().elt_size_in_bytes()) as f64 / 1e6;
    println!(
        "grid features in memory: train {:?} {:.0} MB, val {:?} {:.0} MB (f16; f32 would be twice)",
        grid.train.features.size(),
        mb(&grid.train.features),
        grid.val.features.size(),
        mb(&grid.val.features)
    );

    let (mean, deviation) = channel_statistics(&grid.train.features);
    let files: Vec<PathBuf> = grid.val.sources[..n.min(grid.val.sources.len())]
        .iter()
        .filter_map(|s| if let ImageSource::File(p) = s { Some(p.clone()) } else { None })
        .collect();
    let exact = f32_grid(&files)?.to_kind(Kind::Double);
    let stored = grid.val.features.narrow(0, 0, files.len() as i64).to_kind(Kind::Double);
    let standardize = |t: &Tensor| (t - &mean) / &deviation;
    let error = (standardize(&stored) - standardize(&exact)).abs();
    let relative = (&stored - &exact).abs().sum(Kind::Double) / exact.abs().sum(Kind::Double);
    println!(
        "f16 against f32 on {} val grids: standardized error max {:.2e}, mean {:.2e}; relative L1 {:.2e}",
        files.len(),
        error.max().double_value(&[]),
        error.mean(Kind::Double).double_value(&[]),
        relative.double_value(&[])
    );

    let (from_grid, bleu_grid) = nearest_neighbour(&grid);
    let (from_pooled, bleu_pooled) = nearest_neighbour(&pooled);
    let differ = from_grid.iter().zip(&from_pooled).filter(|(a, b)| a != b).count();
    println!(
        "nearest-neighbour baseline, val BLEU-4: f16 grid mean {bleu_grid:.4}, f32 pooled {bleu_pooled:.4}; {differ} of {} captions differ",
        from_grid.len()
    );
    Ok(())
}
