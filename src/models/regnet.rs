//! torchvision's RegNetY — `regnet_y_400mf` and `regnet_y_1_6gf` — with its
//! variable names (`stem.0`/`stem.1`, `trunk_output.blockS.blockS-B.proj.{0,1}`,
//! `.f.a`, `.f.b`, `.f.se.fc1`/`fc2`, `.f.c`, each `.0` a convolution and `.1`
//! its batch norm), so torchvision checkpoints load by name. A member is a
//! [`Config`]: the four stages' depths and widths and the group width, as
//! torchvision's `BlockParams.from_init_params` computes them (bottleneck
//! ratio 1, squeeze-excitation to a quarter of each block's input width,
//! ReLU, batch norm eps 1e-5). RegNet has no dropout or stochastic depth.
//! The backbone ends at global average pooling; the classifier (`fc`) is
//! built by [`super::Classifier`].

use super::onnx::{ConvShape, Weights};
use super::StagedTrunk;
use crate::accel::conv3x3::Conv3x3;
use crate::persist::onnx::Graph;
use tch::nn::{self, ModuleT};
use tch::Tensor;

/// One member of the family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Blocks in each of the four stages (`block1` … `block4`).
    pub depths: [usize; 4],
    /// Output channels of each stage.
    pub widths: [i64; 4],
    /// Channels per group of the 3×3 convolutions.
    pub group_width: i64,
}

/// RegNetY-400MF.
pub const Y_400MF: Config = Config { depths: [1, 3, 6, 6], widths: [48, 104, 208, 440], group_width: 8 };
/// RegNetY-1.6GF.
pub const Y_1_6GF: Config = Config { depths: [2, 6, 17, 2], widths: [48, 120, 336, 888], group_width: 24 };

const STEM_WIDTH: i64 = 32;

impl Config {
    /// Number of features the backbone emits.
    pub fn feature_count(self) -> i64 {
        self.widths[3]
    }

    /// Number of blocks.
    pub fn block_count(self) -> usize {
        self.depths.iter().sum()
    }
}

/// The block (counted from 0 over all stages) that a parameter named
/// `trunk_output.blockS.blockS-B.…` belongs to; `None` for the stem and the head.
pub fn block_of(config: Config, name: &str) -> Option<usize> {
    let mut parts = name.strip_prefix("trunk_output.")?.split('.');
    let stage: usize = parts.next()?.strip_prefix("block")?.parse().ok()?;
    let block: usize = parts.next()?.split_once('-')?.1.parse().ok()?;
    let before: usize = config.depths.get(..stage.checked_sub(1)?)?.iter().sum();
    Some(before + block)
}

fn conv1x1(p: nn::Path, c_in: i64, c_out: i64, stride: i64) -> nn::Conv2D {
    nn::conv2d(p, c_in, c_out, 1, nn::ConvConfig { stride, bias: false, ..Default::default() })
}

fn bn(p: nn::Path, c: i64) -> nn::BatchNorm {
    nn::batch_norm2d(p, c, Default::default())
}

/// torchvision's `SqueezeExcitation`: channels scaled by a sigmoid gate
/// computed from their means.
#[derive(Debug)]
struct SqueezeExcitation {
    fc1: nn::Conv2D,
    fc2: nn::Conv2D,
}

impl SqueezeExcitation {
    fn new(p: nn::Path, channels: i64, squeeze: i64) -> Self {
        let fc1 = nn::conv2d(&p / "fc1", channels, squeeze, 1, Default::default());
        let fc2 = nn::conv2d(&p / "fc2", squeeze, channels, 1, Default::default());
        Self { fc1, fc2 }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let scale = x.adaptive_avg_pool2d([1, 1]).apply(&self.fc1).relu().apply(&self.fc2).sigmoid();
        scale * x
    }
}

/// torchvision's `ResBottleneckBlock` with its `BottleneckTransform`:
/// 1×1, grouped 3×3 (the stride), squeeze-excitation, 1×1; the shortcut
/// projected (1×1 and batch norm) where the shape changes.
#[derive(Debug)]
struct Block {
    conv_a: nn::Conv2D,
    bn_a: nn::BatchNorm,
    conv_b: Conv3x3,
    bn_b: nn::BatchNorm,
    se: SqueezeExcitation,
    conv_c: nn::Conv2D,
    bn_c: nn::BatchNorm,
    proj: Option<(nn::Conv2D, nn::BatchNorm)>,
}

impl Block {
    fn new(p: nn::Path, c_in: i64, c_out: i64, stride: i64, group_width: i64) -> Self {
        let f = &p / "f";
        let groups = c_out / group_width;
        let squeeze = (0.25 * c_in as f64).round_ties_even() as i64; // Python's round()
        let proj = (c_in != c_out || stride != 1)
            .then(|| (conv1x1(&p / "proj" / 0, c_in, c_out, stride), bn(&p / "proj" / 1, c_out)));
        Self {
            conv_a: conv1x1(&f / "a" / 0, c_in, c_out, 1),
            bn_a: bn(&f / "a" / 1, c_out),
            conv_b: Conv3x3::grouped(&f / "b" / 0, c_out, c_out, stride, groups),
            bn_b: bn(&f / "b" / 1, c_out),
            se: SqueezeExcitation::new(&f / "se", c_out, squeeze),
            conv_c: conv1x1(&f / "c" / 0, c_out, c_out, 1),
            bn_c: bn(&f / "c" / 1, c_out),
            proj,
        }
    }
}

impl ModuleT for Block {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let y = x.apply(&self.conv_a).apply_t(&self.bn_a, train).relu_();
        let y = y.apply(&self.conv_b).apply_t(&self.bn_b, train).relu_();
        let y = self.se.forward(&y).apply(&self.conv_c).apply_t(&self.bn_c, train);
        let mut sum = match &self.proj {
            Some((conv, bn)) => x.apply(conv).apply_t(bn, train) + y,
            None => x + y,
        };
        sum.relu_()
    }
}

/// The trunk of a member: the stem, then `trunk_output.block1` …
/// `block4`; `[N, 3, H, W]` → `[N, features]`.
pub fn backbone(p: &nn::Path, config: Config) -> StagedTrunk {
    let stem_path = p / "stem";
    let stem = nn::seq_t()
        .add(Conv3x3::grouped(&stem_path / 0, 3, STEM_WIDTH, 2, 1))
        .add(bn(&stem_path / 1, STEM_WIDTH))
        .add_fn(|x| x.relu());
    let mut stages = Vec::with_capacity(config.depths.len());
    let mut c_in = STEM_WIDTH;
    for (stage, (&depth, &width)) in config.depths.iter().zip(&config.widths).enumerate() {
        let stage_path = p / "trunk_output" / format!("block{}", stage + 1);
        let mut blocks = nn::seq_t();
        for i in 0..depth {
            let stride = if i == 0 { 2 } else { 1 };
            let block_path = &stage_path / format!("block{}-{i}", stage + 1);
            blocks = blocks.add(Block::new(block_path, c_in, width, stride, config.group_width));
            c_in = width;
        }
        stages.push(blocks);
    }
    StagedTrunk { stem, stages }
}

/// The trunk of `config` as ONNX nodes over `input` (eval mode), reading
/// the weights by their torchvision names: the pooled features `[N, features]`.
pub fn emit_onnx(graph: &mut Graph, weights: &Weights, config: Config, input: &str) -> String {
    let mut x = weights.conv_bn_relu(graph, input, "stem", ("0", "1"), ConvShape::square(2, 1));
    for (stage, (&depth, &width)) in config.depths.iter().zip(&config.widths).enumerate() {
        for i in 0..depth {
            let stride = if i == 0 { 2 } else { 1 };
            let prefix = format!("trunk_output.block{0}.block{0}-{i}", stage + 1);
            let groups = width / config.group_width;
            x = emit_block(graph, weights, (&prefix, &x), stride, groups);
        }
    }
    super::onnx::pooled_features(graph, &x)
}

/// [`Block`] `prefix` (`stride`, `groups` in its 3×3) as ONNX nodes over `x`.
fn emit_block(graph: &mut Graph, weights: &Weights, (prefix, x): (&str, &str), stride: i64, groups: i64) -> String {
    let f = format!("{prefix}.f");
    let y = weights.conv_bn_relu(graph, x, &f, ("a.0", "a.1"), ConvShape::square(1, 0));
    let grouped = ConvShape { groups, ..ConvShape::square(stride, 1) };
    let y = weights.conv_bn_relu(graph, &y, &f, ("b.0", "b.1"), grouped);
    let y = emit_squeeze_excitation(graph, weights, &format!("{f}.se"), &y);
    let y = weights.conv(graph, &y, &format!("{f}.c.0"), ConvShape::square(1, 0));
    let y = weights.batch_norm(graph, &y, &format!("{f}.c.1"), 1e-5);
    let shortcut = match weights.has(&format!("{prefix}.proj.0.weight")) {
        true => {
            let s = weights.conv(graph, x, &format!("{prefix}.proj.0"), ConvShape::square(stride, 0));
            weights.batch_norm(graph, &s, &format!("{prefix}.proj.1"), 1e-5)
        }
        false => x.to_owned(),
    };
    let sum = graph.node("Add", &[&shortcut, &y], vec![]);
    graph.node("Relu", &[&sum], vec![])
}

/// [`SqueezeExcitation`] `prefix` as ONNX nodes over `x`.
fn emit_squeeze_excitation(graph: &mut Graph, weights: &Weights, prefix: &str, x: &str) -> String {
    let pooled = graph.node("GlobalAveragePool", &[x], vec![]);
    let squeezed = weights.conv(graph, &pooled, &format!("{prefix}.fc1"), ConvShape::square(1, 0));
    let squeezed = graph.node("Relu", &[&squeezed], vec![]);
    let scale = weights.conv(graph, &squeezed, &format!("{prefix}.fc2"), ConvShape::square(1, 0));
    let scale = graph.node("Sigmoid", &[&scale], vec![]);
    graph.node("Mul", &[&scale, x], vec![])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_counted_across_stages() {
        assert_eq!(Y_400MF.block_count(), 16);
        assert_eq!(Y_1_6GF.block_count(), 27);
        assert_eq!(block_of(Y_400MF, "stem.0.weight"), None);
        assert_eq!(block_of(Y_400MF, "trunk_output.block1.block1-0.f.a.0.weight"), Some(0));
        assert_eq!(block_of(Y_400MF, "trunk_output.block2.block2-2.f.se.fc1.bias"), Some(3));
        assert_eq!(block_of(Y_400MF, "trunk_output.block4.block4-5.proj.1.running_var"), Some(15));
        assert_eq!(block_of(Y_1_6GF, "trunk_output.block3.block3-0.f.c.1.weight"), Some(8));
        assert_eq!(block_of(Y_1_6GF, "fc.weight"), None);
    }
}
