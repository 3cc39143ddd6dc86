//! EfficientNet-Lite0 with the variable names of the PyPI package
//! `efficientnet-lite-pytorch` (`_conv_stem`, `_bn0`, `_blocks.N._expand_conv`,
//! `_depthwise_conv`, `_project_conv`, `_bn1`/`_bn2`, `_conv_head`), so its
//! ImageNet state_dict loads by name. Lite means: ReLU6, no squeeze-excitation,
//! fixed 32-channel stem and 1280-channel head. Convolutions use TF "SAME"
//! padding (extra pixel on the bottom/right), batch norm eps 1e-3. In
//! training, blocks with a skip connection use drop-connect (stochastic
//! depth), as the package does. The classifier (`_fc`) is built by
//! [`super::Classifier`].

use super::onnx::{ConvShape, Weights};
use crate::persist::onnx::Graph;
use tch::nn::{self, ModuleT};
use tch::{Kind, Tensor};

pub const FEATURES: i64 = 1280;
const DROP_CONNECT_RATE: f64 = 0.2;

/// (repeats, kernel, stride, expand ratio, input filters, output filters).
const STAGES: [(i64, i64, i64, i64, i64, i64); 7] = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
];

/// Number of MBConv blocks.
pub fn block_count() -> usize {
    STAGES.iter().map(|s| s.0 as usize).sum()
}

/// The block a parameter named `_blocks.N.…` belongs to; `None` outside them.
pub fn block_of(name: &str) -> Option<usize> {
    name.strip_prefix("_blocks.")?.split('.').next()?.parse().ok()
}

fn bn(p: nn::Path, c: i64) -> nn::BatchNorm {
    let config = nn::BatchNormConfig { eps: 1e-3, momentum: 0.01, ..Default::default() };
    nn::batch_norm2d(p, c, config)
}

/// TF "SAME" padding for one spatial dimension: (before, after).
fn same_padding(size: i64, kernel: i64, stride: i64) -> (i64, i64) {
    let out = (size + stride - 1) / stride;
    let total = ((out - 1) * stride + kernel - size).max(0);
    (total / 2, total - total / 2)
}

/// A bias-free convolution with TF "SAME" padding.
struct SameConv {
    weight: Tensor,
    stride: i64,
    groups: i64,
}

impl SameConv {
    fn new(p: nn::Path, c_in: i64, c_out: i64, kernel: i64, stride: i64, groups: i64) -> Self {
        let weight = p.var("weight", &[c_out, c_in / groups, kernel, kernel], nn::init::DEFAULT_KAIMING_UNIFORM);
        Self { weight, stride, groups }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let kernel = self.weight.size()[2];
        let (_, _, h, w) = x.size4().unwrap();
        let (top, bottom) = same_padding(h, kernel, self.stride);
        let (left, right) = same_padding(w, kernel, self.stride);
        let padded = if top + bottom + left + right > 0 {
            x.constant_pad_nd([left, right, top, bottom])
        } else {
            x.shallow_clone()
        };
        padded.conv2d(&self.weight, None::<Tensor>, [self.stride], [0], [1], self.groups)
    }
}

struct MbConvBlock {
    expand: Option<(SameConv, nn::BatchNorm)>,
    depthwise: SameConv,
    bn1: nn::BatchNorm,
    project: SameConv,
    bn2: nn::BatchNorm,
    has_skip: bool,
    drop_connect: f64,
}

impl MbConvBlock {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let mut y = x.shallow_clone();
        if let Some((conv, norm)) = &self.expand {
            y = conv.forward(&y).apply_t(norm, train).relu6();
        }
        y = self.depthwise.forward(&y).apply_t(&self.bn1, train).relu6();
        y = self.project.forward(&y).apply_t(&self.bn2, train);
        if !self.has_skip {
            return y;
        }
        if train && self.drop_connect > 0.0 {
            let keep = 1.0 - self.drop_connect;
            let batch = y.size()[0];
            // Drawn in fp32 whatever the activations' dtype: the same seed drops
            // the same blocks under bf16 autocast as in fp32.
            let mask = (Tensor::rand([batch, 1, 1, 1], (Kind::Float, y.device())) + keep).floor().to_kind(y.kind());
            y = y / keep * mask;
        }
        y + x
    }
}

/// The EfficientNet-Lite0 trunk: `[N, 3, H, W]` → `[N, 1280]` (the mean of
/// the head's 1280-channel map, which [`super::Trunk::feature_map`] returns).
pub struct Backbone {
    stem: SameConv,
    bn0: nn::BatchNorm,
    blocks: Vec<MbConvBlock>,
    head: SameConv,
    bn1: nn::BatchNorm,
}

pub fn backbone(p: &nn::Path) -> Backbone {
    let total_blocks: i64 = STAGES.iter().map(|s| s.0).sum();
    let mut blocks = Vec::new();
    for &(repeats, kernel, stride, expand_ratio, c_in, c_out) in STAGES.iter() {
        for r in 0..repeats {
            let index = blocks.len() as i64;
            let bp = p / "_blocks" / index;
            let (c_in, stride) = if r == 0 { (c_in, stride) } else { (c_out, 1) };
            let c_mid = c_in * expand_ratio;
            let expand = (expand_ratio != 1)
                .then(|| (SameConv::new(&bp / "_expand_conv", c_in, c_mid, 1, 1, 1), bn(&bp / "_bn0", c_mid)));
            blocks.push(MbConvBlock {
                expand,
                depthwise: SameConv::new(&bp / "_depthwise_conv", c_mid, c_mid, kernel, stride, c_mid),
                bn1: bn(&bp / "_bn1", c_mid),
                project: SameConv::new(&bp / "_project_conv", c_mid, c_out, 1, 1, 1),
                bn2: bn(&bp / "_bn2", c_out),
                // The package only skips in repeated blocks (stride 1, same width).
                has_skip: r > 0,
                drop_connect: DROP_CONNECT_RATE * index as f64 / total_blocks as f64,
            });
        }
    }
    Backbone {
        stem: SameConv::new(p / "_conv_stem", 3, 32, 3, 2, 1),
        bn0: bn(p / "_bn0", 32),
        blocks,
        head: SameConv::new(p / "_conv_head", 320, FEATURES, 1, 1, 1),
        bn1: bn(p / "_bn1", FEATURES),
    }
}

impl std::fmt::Debug for Backbone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EfficientNet-Lite0 backbone ({} blocks)", self.blocks.len())
    }
}

impl Backbone {
    /// The stem and every block: the last stage's 320-channel map.
    fn blocks_t(&self, x: &Tensor, train: bool) -> Tensor {
        let mut y = self.stem.forward(x).apply_t(&self.bn0, train).relu6();
        for block in &self.blocks {
            y = block.forward_t(&y, train);
        }
        y
    }

    /// The head convolution's 1280-channel map.
    fn head_t(&self, blocks: &Tensor, train: bool) -> Tensor {
        self.head.forward(blocks).apply_t(&self.bn1, train).relu6()
    }
}

impl ModuleT for Backbone {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        self.head_t(&self.blocks_t(x, train), train).adaptive_avg_pool2d([1, 1]).flatten(1, -1)
    }
}

impl super::Trunk for Backbone {
    fn feature_map(&self, images: &Tensor, layer: super::GridLayer) -> Option<Tensor> {
        let blocks = self.blocks_t(images, false);
        Some(match layer {
            super::GridLayer::Last => self.head_t(&blocks, false),
            super::GridLayer::Penultimate => blocks,
        })
    }
}

/// The trunk as ONNX nodes over `input`, `[N, 3, size, size]` (eval mode;
/// the "SAME" paddings are those of that size): the pooled features.
pub fn emit_onnx(graph: &mut Graph, weights: &Weights, input: &str, size: i64) -> String {
    let mut spatial = size;
    let mut conv_bn_relu6 =
        |graph: &mut Graph, x: &str, conv: &str, norm: &str, (kernel, stride, groups): (i64, i64, i64)| {
            let (top, bottom) = same_padding(spatial, kernel, stride);
            spatial = (spatial + stride - 1) / stride;
            let shape = ConvShape { stride, pads: [top, top, bottom, bottom], groups };
            let y = weights.conv(graph, x, conv, shape);
            let y = weights.batch_norm(graph, &y, norm, 1e-3);
            let (low, high) = (graph.constant(&[0.0], &[]), graph.constant(&[6.0], &[]));
            graph.node("Clip", &[&y, &low, &high], vec![])
        };
    let mut x = conv_bn_relu6(graph, input, "_conv_stem", "_bn0", (3, 2, 1));
    let mut index = 0;
    for &(repeats, kernel, stride, expand_ratio, c_in, c_out) in STAGES.iter() {
        for r in 0..repeats {
            let p = format!("_blocks.{index}");
            let (c_in, stride) = if r == 0 { (c_in, stride) } else { (c_out, 1) };
            let mut y = x.clone();
            if expand_ratio != 1 {
                y = conv_bn_relu6(graph, &y, &format!("{p}._expand_conv"), &format!("{p}._bn0"), (1, 1, 1));
            }
            let depthwise = (kernel, stride, c_in * expand_ratio);
            y = conv_bn_relu6(graph, &y, &format!("{p}._depthwise_conv"), &format!("{p}._bn1"), depthwise);
            let projected = weights.conv(graph, &y, &format!("{p}._project_conv"), ConvShape::square(1, 0));
            y = weights.batch_norm(graph, &projected, &format!("{p}._bn2"), 1e-3);
            x = if r > 0 { graph.node("Add", &[&y, &x], vec![]) } else { y };
            index += 1;
        }
    }
    x = conv_bn_relu6(graph, &x, "_conv_head", "_bn1", (1, 1, 1));
    super::onnx::pooled_features(graph, &x)
}

#[cfg(test)]
mod tests {
    use super::same_padding;

    #[test]
    fn same_padding_puts_the_odd_pixel_after() {
        assert_eq!(same_padding(224, 3, 2), (0, 1));
        assert_eq!(same_padding(112, 3, 1), (1, 1));
        assert_eq!(same_padding(28, 5, 2), (1, 2));
        assert_eq!(same_padding(7, 1, 1), (0, 0));
    }
}
