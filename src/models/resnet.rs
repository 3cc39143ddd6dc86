//! torchvision's ResNet family — ResNet-18/34/50/101/152, ResNeXt-50 32×4d,
//! ResNeXt-101 32×8d, Wide ResNet-50-2 and Wide ResNet-101-2 — with its
//! variable names (`conv1`, `bn1`, `layer1.0.conv1`, `layer2.0.downsample.0`,
//! …), so torchvision checkpoints load by name. A member is a [`Config`]: its
//! block and four stage depths, as torchvision's `ResNet(block, layers,
//! groups=, width_per_group=)`. The backbone ends at global average pooling;
//! the classifier (`fc`) is built by [`super::Classifier`].

use super::onnx::{ConvShape, Weights};
use super::StagedTrunk;
use crate::accel::conv3x3::Conv3x3;
use crate::accel::pool::stem_pool_relu;
use crate::persist::onnx::{Attribute, Graph};
use tch::nn::{self, ModuleT};
use tch::Tensor;

/// A residual block: two 3×3 convolutions (ResNet-18/34), or the bottleneck
/// (1×1, 3×3, 1×1 to 4× the stage's planes) of the deeper members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    Basic,
    /// torchvision's `groups` and `width_per_group`: the 3×3 convolution has
    /// `planes · width_per_group / 64 · groups` channels in `groups` groups
    /// (ResNet: 1, 64; ResNeXt-50 32×4d: 32, 4; Wide ResNet-50-2: 1, 128).
    Bottleneck {
        groups: i64,
        width_per_group: i64,
    },
}

/// One member of the family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    pub block: Block,
    /// Blocks in each of the four stages (`layer1` … `layer4`).
    pub depths: [i64; 4],
}

impl Config {
    pub const fn basic(depths: [i64; 4]) -> Self {
        Self { block: Block::Basic, depths }
    }

    pub const fn bottleneck(depths: [i64; 4], groups: i64, width_per_group: i64) -> Self {
        Self { block: Block::Bottleneck { groups, width_per_group }, depths }
    }

    /// Output channels of a block over its stage's planes.
    fn expansion(self) -> i64 {
        match self.block {
            Block::Basic => 1,
            Block::Bottleneck { .. } => 4,
        }
    }

    /// Number of features the backbone emits.
    pub fn feature_count(self) -> i64 {
        512 * self.expansion()
    }
}

/// The block (counted from 0 over all stages) that a parameter named
/// `layerS.B.…` belongs to; `None` for the stem and the head.
pub fn block_of(config: Config, name: &str) -> Option<usize> {
    let mut parts = name.split('.');
    let stage: usize = parts.next()?.strip_prefix("layer")?.parse().ok()?;
    let block: usize = parts.next()?.parse().ok()?;
    let before: i64 = config.depths.get(..stage.checked_sub(1)?)?.iter().sum();
    Some(before as usize + block)
}

fn conv(p: nn::Path, c_in: i64, c_out: i64, k: i64, stride: i64, padding: i64) -> nn::Conv2D {
    let config = nn::ConvConfig { stride, padding, bias: false, ..Default::default() };
    nn::conv2d(p, c_in, c_out, k, config)
}

fn bn(p: nn::Path, c: i64) -> nn::BatchNorm {
    nn::batch_norm2d(p, c, Default::default())
}

fn downsample(p: nn::Path, c_in: i64, c_out: i64, stride: i64) -> nn::SequentialT {
    if stride != 1 || c_in != c_out {
        nn::seq_t().add(conv(&p / "0", c_in, c_out, 1, stride, 0)).add(bn(&p / "1", c_out))
    } else {
        nn::seq_t()
    }
}

/// `relu(y + shortcut)`, in place in `y` as torchvision's `out += identity;
/// relu(out)` (batch norm's backward does not need its output).
fn add_shortcut_relu(mut y: Tensor, shortcut: &Tensor) -> Tensor {
    let _ = y.g_add_(shortcut);
    y.relu_()
}

fn basic_block(p: nn::Path, c_in: i64, planes: i64, stride: i64) -> impl ModuleT {
    let conv1 = Conv3x3::new(&p / "conv1", c_in, planes, stride);
    let bn1 = bn(&p / "bn1", planes);
    let conv2 = Conv3x3::new(&p / "conv2", planes, planes, 1);
    let bn2 = bn(&p / "bn2", planes);
    let shortcut = downsample(&p / "downsample", c_in, planes, stride);
    nn::func_t(move |x, train| {
        let y = x.apply(&conv1).apply_t(&bn1, train).relu_().apply(&conv2).apply_t(&bn2, train);
        add_shortcut_relu(y, &x.apply_t(&shortcut, train))
    })
}

/// torchvision's `Bottleneck` (ResNet V1.5: the stride is on the 3×3).
fn bottleneck_block(
    p: nn::Path,
    c_in: i64,
    planes: i64,
    stride: i64,
    groups: i64,
    width_per_group: i64,
) -> impl ModuleT {
    let width = planes * width_per_group / 64 * groups;
    let c_out = planes * 4;
    let conv1 = conv(&p / "conv1", c_in, width, 1, 1, 0);
    let bn1 = bn(&p / "bn1", width);
    let conv2 = Conv3x3::grouped(&p / "conv2", width, width, stride, groups);
    let bn2 = bn(&p / "bn2", width);
    let conv3 = conv(&p / "conv3", width, c_out, 1, 1, 0);
    let bn3 = bn(&p / "bn3", c_out);
    let shortcut = downsample(&p / "downsample", c_in, c_out, stride);
    nn::func_t(move |x, train| {
        let y = x
            .apply(&conv1)
            .apply_t(&bn1, train)
            .relu_()
            .apply(&conv2)
            .apply_t(&bn2, train)
            .relu_()
            .apply(&conv3)
            .apply_t(&bn3, train);
        add_shortcut_relu(y, &x.apply_t(&shortcut, train))
    })
}

/// The convolutional trunk of a member: the stem (`conv1`, `bn1`, max pool
/// and ReLU), then `layer1` … `layer4`; `[N, 3, H, W]` → `[N, features]`.
pub fn backbone(p: &nn::Path, config: Config) -> StagedTrunk {
    let conv1 = conv(p / "conv1", 3, 64, 7, 2, 3);
    let bn1 = bn(p / "bn1", 64);
    let stem = nn::seq_t().add(conv1).add(bn1).add_fn(stem_pool_relu);
    let mut stages = Vec::with_capacity(config.depths.len());
    let mut c_in = 64;
    for (stage, &depth) in config.depths.iter().enumerate() {
        let planes = 64 << stage;
        let stage_path = p / format!("layer{}", stage + 1);
        let mut blocks = nn::seq_t();
        for i in 0..depth {
            let stride = if stage > 0 && i == 0 { 2 } else { 1 };
            let block_path = &stage_path / i;
            blocks = match config.block {
                Block::Basic => blocks.add(basic_block(block_path, c_in, planes, stride)),
                Block::Bottleneck { groups, width_per_group } => {
                    blocks.add(bottleneck_block(block_path, c_in, planes, stride, groups, width_per_group))
                }
            };
            c_in = planes * config.expansion();
        }
        stages.push(blocks);
    }
    StagedTrunk { stem, stages }
}

/// The trunk of `config` as ONNX nodes over `input` (eval mode), reading
/// the weights by their torchvision names: the pooled features `[N, features]`.
pub fn emit_onnx(graph: &mut Graph, weights: &Weights, config: Config, input: &str) -> String {
    let mut x = weights.conv(graph, input, "conv1", ConvShape::square(2, 3));
    x = weights.batch_norm(graph, &x, "bn1", 1e-5);
    x = graph.node("Relu", &[&x], vec![]);
    let pool = vec![
        ("kernel_shape", Attribute::Ints(vec![3, 3])),
        ("strides", Attribute::Ints(vec![2, 2])),
        ("pads", Attribute::Ints(vec![1; 4])),
    ];
    x = graph.node("MaxPool", &[&x], pool);
    for (stage, &depth) in config.depths.iter().enumerate() {
        for i in 0..depth {
            let stride = if stage > 0 && i == 0 { 2 } else { 1 };
            let p = format!("layer{}.{i}", stage + 1);
            let shortcut = match weights.has(&format!("{p}.downsample.0.weight")) {
                true => {
                    let s = weights.conv(graph, &x, &format!("{p}.downsample.0"), ConvShape::square(stride, 0));
                    weights.batch_norm(graph, &s, &format!("{p}.downsample.1"), 1e-5)
                }
                false => x.clone(),
            };
            let y = match config.block {
                Block::Basic => {
                    let y = weights.conv_bn_relu(graph, &x, &p, ("conv1", "bn1"), ConvShape::square(stride, 1));
                    let y = weights.conv(graph, &y, &format!("{p}.conv2"), ConvShape::square(1, 1));
                    weights.batch_norm(graph, &y, &format!("{p}.bn2"), 1e-5)
                }
                Block::Bottleneck { groups, .. } => {
                    let y = weights.conv_bn_relu(graph, &x, &p, ("conv1", "bn1"), ConvShape::square(1, 0));
                    let grouped = ConvShape { groups, ..ConvShape::square(stride, 1) };
                    let y = weights.conv_bn_relu(graph, &y, &p, ("conv2", "bn2"), grouped);
                    let y = weights.conv(graph, &y, &format!("{p}.conv3"), ConvShape::square(1, 0));
                    weights.batch_norm(graph, &y, &format!("{p}.bn3"), 1e-5)
                }
            };
            let sum = graph.node("Add", &[&y, &shortcut], vec![]);
            x = graph.node("Relu", &[&sum], vec![]);
        }
    }
    super::onnx::pooled_features(graph, &x)
}
