//! torchvision's MobileNetV3-Large (`mobilenet_v3_large`, width 1.0) with its
//! variable names, so torchvision checkpoints load by name: the stem
//! `features.0`, fifteen inverted residual blocks `features.1` …
//! `features.15` (`block.J`, squeeze-excitation at `block.2` where used), the
//! last 1×1 convolution `features.16`, then `classifier.0` (the 960 → 1280
//! linear layer, followed by Hardswish). The backbone ends there; the
//! dropout and `classifier.3` (the classifier) are [`super::Classifier`]'s.
//! Batch norm has eps 1e-3 and momentum 0.01, as torchvision's `norm_layer`.

use super::mbconv::{
    emit_block, emit_conv_norm_activation, make_divisible, Activation, Block, ConvNormActivation,
    InvertedResidualConfig, Norm, SqueezeConfig,
};
use super::onnx::Weights;
use crate::persist::onnx::Graph;
use tch::nn::{self, ModuleT};
use tch::Tensor;

/// Features the backbone emits (`classifier.0`'s outputs).
pub const FEATURES: i64 = 1280;
/// Dropout before `classifier.3`.
pub const DROPOUT: f64 = 0.2;
const NORM: Norm = Norm { eps: 1e-3, momentum: 0.01 };
const LAST_CONV: i64 = 960;

/// torchvision's `bneck_conf` rows: input channels, kernel, expanded
/// channels, output channels, squeeze-excitation, Hardswish (else ReLU), stride.
const BLOCKS: [(i64, i64, i64, i64, bool, bool, i64); 15] = [
    (16, 3, 16, 16, false, false, 1),
    (16, 3, 64, 24, false, false, 2),
    (24, 3, 72, 24, false, false, 1),
    (24, 5, 72, 40, true, false, 2),
    (40, 5, 120, 40, true, false, 1),
    (40, 5, 120, 40, true, false, 1),
    (40, 3, 240, 80, false, true, 2),
    (80, 3, 200, 80, false, true, 1),
    (80, 3, 184, 80, false, true, 1),
    (80, 3, 184, 80, false, true, 1),
    (80, 3, 480, 112, true, true, 1),
    (112, 3, 672, 112, true, true, 1),
    (112, 5, 672, 160, true, true, 2),
    (160, 5, 960, 160, true, true, 1),
    (160, 5, 960, 160, true, true, 1),
];

/// Number of inverted residual blocks.
pub fn block_count() -> usize {
    BLOCKS.len()
}

/// The block (from 0) a parameter named `features.N.…` belongs to; `None`
/// for the stem, the last convolution and the classifier.
pub fn block_of(name: &str) -> Option<usize> {
    let index: usize = name.strip_prefix("features.")?.split('.').next()?.parse().ok()?;
    (1..=BLOCKS.len()).contains(&index).then(|| index - 1)
}

/// The MobileNetV3-Large trunk: `[N, 3, H, W]` → `[N, 1280]`.
#[derive(Debug)]
pub struct Backbone {
    stem: ConvNormActivation,
    blocks: Vec<Block>,
    last_conv: ConvNormActivation,
    linear: nn::Linear,
}

/// Each inverted residual block's configuration, from [`BLOCKS`].
fn block_configs() -> Vec<InvertedResidualConfig> {
    BLOCKS
        .iter()
        .map(|&(c_in, kernel, expanded, c_out, se, hardswish, stride)| {
            let squeeze = se.then(|| SqueezeConfig {
                channels: make_divisible((expanded / 4) as f64),
                activation: Activation::Relu,
                scale: Activation::Hardsigmoid,
            });
            let activation = if hardswish { Activation::Hardswish } else { Activation::Relu };
            InvertedResidualConfig {
                c_in,
                expanded,
                c_out,
                kernel,
                stride,
                activation,
                squeeze,
                norm: NORM,
                stochastic_depth: 0.0,
            }
        })
        .collect()
}

pub fn backbone(p: &nn::Path) -> Backbone {
    let features = p / "features";
    let stem = ConvNormActivation::new(&features / 0, 3, 16, 3, 2, 1, NORM, Activation::Hardswish);
    let blocks = block_configs()
        .into_iter()
        .enumerate()
        .map(|(i, config)| Block::inverted_residual(&(&features / (i + 1)), config))
        .collect();
    let last_conv =
        ConvNormActivation::pointwise(&features / (BLOCKS.len() + 1), 160, LAST_CONV, NORM, Activation::Hardswish);
    // torchvision: weights normal(0, 0.01), bias zero.
    let config = nn::LinearConfig {
        ws_init: nn::Init::Randn { mean: 0.0, stdev: 0.01 },
        bs_init: Some(nn::Init::Const(0.0)),
        bias: true,
    };
    let linear = nn::linear(p / "classifier" / 0, LAST_CONV, FEATURES, config);
    Backbone { stem, blocks, last_conv, linear }
}

impl Backbone {
    /// The stem and every block: the last block's 160-channel map.
    fn blocks_t(&self, x: &Tensor, train: bool) -> Tensor {
        let mut y = self.stem.forward_t(x, train);
        for block in &self.blocks {
            y = block.forward_t(&y, train);
        }
        y
    }
}

impl ModuleT for Backbone {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let pooled =
            self.last_conv.forward_t(&self.blocks_t(x, train), train).adaptive_avg_pool2d([1, 1]).flatten(1, -1);
        pooled.apply(&self.linear).hardswish()
    }
}

impl super::Trunk for Backbone {
    /// The last convolution's 960-channel map (`Last`; the pooled features
    /// are its mean through `classifier.0`), or the blocks' 160-channel one.
    fn feature_map(&self, images: &Tensor, layer: super::GridLayer) -> Option<Tensor> {
        let blocks = self.blocks_t(images, false);
        Some(match layer {
            super::GridLayer::Last => self.last_conv.forward_t(&blocks, false),
            super::GridLayer::Penultimate => blocks,
        })
    }
}

/// The trunk as ONNX nodes over `input` (eval mode): the features after
/// `classifier.0` and its Hardswish, `[N, 1280]`.
pub fn emit_onnx(graph: &mut Graph, weights: &Weights, input: &str) -> String {
    let mut x =
        emit_conv_norm_activation(graph, weights, ("features.0", input), (3, 2, 1), NORM, Activation::Hardswish);
    for (i, config) in block_configs().into_iter().enumerate() {
        x = emit_block(graph, weights, (&format!("features.{}", i + 1), &x), config, false);
    }
    let last = format!("features.{}", BLOCKS.len() + 1);
    x = emit_conv_norm_activation(graph, weights, (&last, &x), (1, 1, 1), NORM, Activation::Hardswish);
    let pooled = super::onnx::pooled_features(graph, &x);
    let projected = weights.linear(graph, &pooled, "classifier.0");
    Activation::Hardswish.emit_onnx(graph, &projected)
}
