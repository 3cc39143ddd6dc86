//! torchvision's EfficientNet — `efficientnet_b0` … `efficientnet_b4` and
//! `efficientnet_v2_s` — with its variable names, so torchvision checkpoints
//! load by name: the stem `features.0`, stage `S` of blocks `features.S.I`
//! (`MBConv`: `block.J` expand, depthwise, squeeze-excitation, project;
//! V2's first three stages `FusedMBConv`), the last 1×1 convolution
//! `features.{stages + 1}`. A [`Member`] is torchvision's
//! `_efficientnet_conf` row set (B1–B4 scale B0's widths and depths) with its
//! dropout and batch norm. The backbone ends at global average pooling; the
//! dropout and `classifier.1` (the classifier) are [`super::Classifier`]'s.
//! In training, blocks with a skip connection use stochastic depth with
//! torchvision's rates (0.2 · block index / blocks).

use super::mbconv::{
    emit_block, emit_conv_norm_activation, make_divisible, Activation, Block, ConvNormActivation,
    InvertedResidualConfig, Norm, SqueezeConfig,
};
use super::onnx::Weights;
use crate::persist::onnx::Graph;
use tch::nn::{self, ModuleT};
use tch::Tensor;

/// torchvision's `stochastic_depth_prob`, reached by the last block.
const STOCHASTIC_DEPTH: f64 = 0.2;

/// One member of the family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Member {
    B0,
    B1,
    B2,
    B3,
    B4,
    V2S,
}

/// A stage of blocks, as torchvision's `MBConvConfig`/`FusedMBConvConfig`
/// (channels and depth already scaled).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stage {
    pub fused: bool,
    pub expand_ratio: f64,
    pub kernel: i64,
    pub stride: i64,
    pub c_in: i64,
    pub c_out: i64,
    pub blocks: i64,
}

/// EfficientNet-B0's stages: expand ratio, kernel, stride, input and output
/// channels, blocks.
const B0: [(f64, i64, i64, i64, i64, i64); 7] = [
    (1.0, 3, 1, 32, 16, 1),
    (6.0, 3, 2, 16, 24, 2),
    (6.0, 5, 2, 24, 40, 2),
    (6.0, 3, 2, 40, 80, 3),
    (6.0, 5, 1, 80, 112, 3),
    (6.0, 5, 2, 112, 192, 4),
    (6.0, 3, 1, 192, 320, 1),
];

/// EfficientNetV2-S's stages, the first three fused, as [`B0`].
const V2_S: [(f64, i64, i64, i64, i64, i64); 6] = [
    (1.0, 3, 1, 24, 24, 2),
    (4.0, 3, 2, 24, 48, 4),
    (4.0, 3, 2, 48, 64, 4),
    (4.0, 3, 2, 64, 128, 6),
    (6.0, 3, 1, 128, 160, 9),
    (6.0, 3, 2, 160, 256, 15),
];

impl Member {
    /// torchvision's `width_mult` and `depth_mult` (B-series).
    fn scaling(self) -> (f64, f64) {
        match self {
            Member::B0 | Member::V2S => (1.0, 1.0),
            Member::B1 => (1.0, 1.1),
            Member::B2 => (1.1, 1.2),
            Member::B3 => (1.2, 1.4),
            Member::B4 => (1.4, 1.8),
        }
    }

    /// The stages, scaled as `MBConvConfig` scales them.
    pub fn stages(self) -> Vec<Stage> {
        let (width, depth) = self.scaling();
        let scale = |c: i64| make_divisible(c as f64 * width);
        let stage = |fused, (expand_ratio, kernel, stride, c_in, c_out, blocks): (f64, i64, i64, i64, i64, i64)| {
            if fused {
                Stage { fused, expand_ratio, kernel, stride, c_in, c_out, blocks }
            } else {
                let blocks = (blocks as f64 * depth).ceil() as i64;
                Stage { fused, expand_ratio, kernel, stride, c_in: scale(c_in), c_out: scale(c_out), blocks }
            }
        };
        match self {
            Member::V2S => V2_S.iter().enumerate().map(|(i, &row)| stage(i < 3, row)).collect(),
            _ => B0.iter().map(|&row| stage(false, row)).collect(),
        }
    }

    /// Channels of the last convolution: the features the backbone emits.
    pub fn feature_count(self) -> i64 {
        match self {
            Member::V2S => 1280,
            _ => 4 * self.stages().last().expect("stages").c_out,
        }
    }

    /// The dropout before the classifier.
    pub fn dropout(self) -> f64 {
        match self {
            Member::B0 | Member::B1 | Member::V2S => 0.2,
            Member::B2 | Member::B3 => 0.3,
            Member::B4 => 0.4,
        }
    }

    /// Batch norm as `norm_layer` sets it (V2: eps 1e-3).
    fn norm(self) -> Norm {
        match self {
            Member::V2S => Norm { eps: 1e-3, momentum: 0.1 },
            _ => Norm::TORCH,
        }
    }

    /// Number of blocks over all stages.
    pub fn block_count(self) -> usize {
        self.stages().iter().map(|s| s.blocks as usize).sum()
    }
}

/// The block (counted from 0 over all stages) that a parameter named
/// `features.S.I.…` belongs to; `None` for the stem and the last convolution.
pub fn block_of(member: Member, name: &str) -> Option<usize> {
    let mut parts = name.strip_prefix("features.")?.split('.');
    let stage: usize = parts.next()?.parse().ok()?;
    let block: usize = parts.next()?.parse().ok()?;
    let stages = member.stages();
    let before = stages.get(..stage.checked_sub(1)?)?;
    (stage <= stages.len()).then(|| before.iter().map(|s| s.blocks as usize).sum::<usize>() + block)
}

/// The EfficientNet trunk of `member`: `[N, 3, H, W]` → `[N, features]`.
#[derive(Debug)]
pub struct Backbone {
    stem: ConvNormActivation,
    blocks: Vec<Block>,
    last_conv: ConvNormActivation,
}

/// A block of the trunk: its stage (from 1, as `features.S`), its index in
/// the stage, its configuration, and whether it is a `FusedMBConv`.
struct PlannedBlock {
    stage: usize,
    index: i64,
    config: InvertedResidualConfig,
    fused: bool,
}

/// Every block of `member`, in order.
fn block_plan(member: Member) -> Vec<PlannedBlock> {
    let norm = member.norm();
    let total = member.block_count();
    let mut plan = Vec::new();
    for (s, stage) in member.stages().iter().enumerate() {
        for index in 0..stage.blocks {
            let (c_in, stride) = if index == 0 { (stage.c_in, stage.stride) } else { (stage.c_out, 1) };
            let squeeze =
                SqueezeConfig { channels: (c_in / 4).max(1), activation: Activation::Silu, scale: Activation::Sigmoid };
            let config = InvertedResidualConfig {
                c_in,
                expanded: make_divisible(c_in as f64 * stage.expand_ratio),
                c_out: stage.c_out,
                kernel: stage.kernel,
                stride,
                activation: Activation::Silu,
                squeeze: (!stage.fused).then_some(squeeze),
                norm,
                stochastic_depth: STOCHASTIC_DEPTH * plan.len() as f64 / total as f64,
            };
            plan.push(PlannedBlock { stage: s + 1, index, config, fused: stage.fused });
        }
    }
    plan
}

pub fn backbone(p: &nn::Path, member: Member) -> Backbone {
    let features = p / "features";
    let (norm, silu) = (member.norm(), Activation::Silu);
    let stages = member.stages();
    let stem = ConvNormActivation::new(&features / 0, 3, stages[0].c_in, 3, 2, 1, norm, silu);
    let blocks = block_plan(member)
        .into_iter()
        .map(|planned| {
            let path = &features / planned.stage / planned.index;
            match planned.fused {
                true => Block::fused(&path, planned.config),
                false => Block::inverted_residual(&path, planned.config),
            }
        })
        .collect();
    let c_last = stages.last().expect("stages").c_out;
    let last_conv =
        ConvNormActivation::pointwise(&features / (stages.len() + 1), c_last, member.feature_count(), norm, silu);
    Backbone { stem, blocks, last_conv }
}

/// The trunk of `member` as ONNX nodes over `input` (eval mode): the pooled
/// features `[N, features]`.
pub fn emit_onnx(graph: &mut Graph, weights: &Weights, member: Member, input: &str) -> String {
    let (norm, silu) = (member.norm(), Activation::Silu);
    let mut x = emit_conv_norm_activation(graph, weights, ("features.0", input), (3, 2, 1), norm, silu);
    for planned in block_plan(member) {
        let prefix = format!("features.{}.{}", planned.stage, planned.index);
        x = emit_block(graph, weights, (&prefix, &x), planned.config, planned.fused);
    }
    let last = format!("features.{}", member.stages().len() + 1);
    x = emit_conv_norm_activation(graph, weights, (&last, &x), (1, 1, 1), norm, silu);
    super::onnx::pooled_features(graph, &x)
}

impl Backbone {
    /// The stem and every block: the last stage's map.
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
        self.last_conv.forward_t(&self.blocks_t(x, train), train).adaptive_avg_pool2d([1, 1]).flatten(1, -1)
    }
}

impl super::Trunk for Backbone {
    fn feature_map(&self, images: &Tensor, layer: super::GridLayer) -> Option<Tensor> {
        let blocks = self.blocks_t(images, false);
        Some(match layer {
            super::GridLayer::Last => self.last_conv.forward_t(&blocks, false),
            super::GridLayer::Penultimate => blocks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_scale_b0_as_torchvision() {
        let shape = |m: Member| m.stages().iter().map(|s| (s.c_out, s.blocks)).collect::<Vec<_>>();
        assert_eq!(shape(Member::B0), [(16, 1), (24, 2), (40, 2), (80, 3), (112, 3), (192, 4), (320, 1)]);
        assert_eq!(shape(Member::B4), [(24, 2), (32, 4), (56, 4), (112, 6), (160, 6), (272, 8), (448, 2)]);
        let features =
            [Member::B0, Member::B1, Member::B2, Member::B3, Member::B4, Member::V2S].map(Member::feature_count);
        assert_eq!(features, [1280, 1280, 1408, 1536, 1792, 1280]);
        assert_eq!(Member::V2S.block_count(), 40);
        assert_eq!(block_of(Member::V2S, "features.2.1.block.0.0.weight"), Some(3));
        assert_eq!(block_of(Member::V2S, "features.7.0.weight"), None);
        assert_eq!(block_of(Member::V2S, "features.0.0.weight"), None);
    }
}
