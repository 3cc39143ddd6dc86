//! The layers torchvision's MobileNetV3 and EfficientNet (v1 and v2) share,
//! with torchvision's names: `Conv2dNormActivation` (`N.0` the bias-free
//! convolution, `N.1` its batch norm), `SqueezeExcitation` (`fc1`, `fc2`: 1×1
//! convolutions with bias), `StochasticDepth(p, "row")`, and the residual
//! block built of them ([`Block`], `block.J`): MobileNetV3's
//! `InvertedResidual` and EfficientNet's `MBConv` (expand, depthwise,
//! squeeze-excitation, project) and `FusedMBConv` (fused expand, project).
//! Initialised as torchvision does (convolutions Kaiming-normal over fan-out,
//! biases zero, batch norm ones and zeros). Eval-mode passes write no
//! parameter or buffer (nothing in place on them), as [`super::FrozenView`]
//! requires. Each layer's eval-mode ONNX nodes (`emit_*`) sit beside it.

use super::onnx::{ConvShape, Weights};
use crate::persist::onnx::{Attribute, Graph};
use tch::nn::{self, ModuleT};
use tch::{Kind, Tensor};

/// The activation after a batch norm, or inside squeeze-excitation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    None,
    Relu,
    Hardswish,
    Silu,
    Sigmoid,
    Hardsigmoid,
}

impl Activation {
    pub fn apply(self, x: Tensor) -> Tensor {
        match self {
            Activation::None => x,
            Activation::Relu => x.relu(),
            Activation::Hardswish => x.hardswish(),
            Activation::Silu => x.silu(),
            Activation::Sigmoid => x.sigmoid(),
            Activation::Hardsigmoid => x.hardsigmoid(),
        }
    }
}

impl Activation {
    /// The activation as ONNX nodes over `x` (torch's Hardsigmoid is
    /// `relu6(x + 3) / 6`: ONNX's with α = 1/6; SiLU is `x·σ(x)`).
    pub fn emit_onnx(self, graph: &mut Graph, x: &str) -> String {
        match self {
            Activation::None => x.to_owned(),
            Activation::Relu => graph.node("Relu", &[x], vec![]),
            Activation::Hardswish => graph.node("HardSwish", &[x], vec![]),
            Activation::Silu => {
                let gate = graph.node("Sigmoid", &[x], vec![]);
                graph.node("Mul", &[x, &gate], vec![])
            }
            Activation::Sigmoid => graph.node("Sigmoid", &[x], vec![]),
            Activation::Hardsigmoid => {
                let attributes = vec![("alpha", Attribute::Float(1.0 / 6.0)), ("beta", Attribute::Float(0.5))];
                graph.node("HardSigmoid", &[x], attributes)
            }
        }
    }
}

/// Batch norm's `eps` and `momentum`, as a family's `norm_layer` sets them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Norm {
    pub eps: f64,
    pub momentum: f64,
}

impl Norm {
    /// `nn.BatchNorm2d`'s defaults.
    pub const TORCH: Norm = Norm { eps: 1e-5, momentum: 0.1 };

    fn batch_norm(self, p: nn::Path, c: i64) -> nn::BatchNorm {
        nn::batch_norm2d(p, c, nn::BatchNormConfig { eps: self.eps, momentum: self.momentum, ..Default::default() })
    }
}

/// torchvision's initialisation of every convolution weight.
const CONV_INIT: nn::Init = nn::Init::Kaiming {
    dist: nn::init::NormalOrUniform::Normal,
    fan: nn::init::FanInOut::FanOut,
    non_linearity: nn::init::NonLinearity::ReLU,
};

/// A 1×1 convolution with bias (squeeze-excitation's `fc1`/`fc2`).
fn pointwise_with_bias(p: nn::Path, c_in: i64, c_out: i64) -> nn::Conv2D {
    let config = nn::ConvConfig { ws_init: CONV_INIT, bs_init: nn::Init::Const(0.0), ..Default::default() };
    nn::conv2d(p, c_in, c_out, 1, config)
}

/// torchvision's `Conv2dNormActivation`: a bias-free convolution (`0`)
/// padded by `(kernel - 1) / 2`, batch norm (`1`), an activation.
#[derive(Debug)]
pub struct ConvNormActivation {
    conv: nn::Conv2D,
    norm: nn::BatchNorm,
    activation: Activation,
}

impl ConvNormActivation {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        p: nn::Path,
        c_in: i64,
        c_out: i64,
        kernel: i64,
        stride: i64,
        groups: i64,
        norm: Norm,
        activation: Activation,
    ) -> Self {
        let padding = (kernel - 1) / 2;
        let config = nn::ConvConfig { stride, padding, groups, bias: false, ws_init: CONV_INIT, ..Default::default() };
        let conv = nn::conv2d(&p / "0", c_in, c_out, kernel, config);
        Self { conv, norm: norm.batch_norm(&p / "1", c_out), activation }
    }

    /// A 1×1 convolution.
    pub fn pointwise(p: nn::Path, c_in: i64, c_out: i64, norm: Norm, activation: Activation) -> Self {
        Self::new(p, c_in, c_out, 1, 1, 1, norm, activation)
    }
}

impl ModuleT for ConvNormActivation {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        self.activation.apply(x.apply(&self.conv).apply_t(&self.norm, train))
    }
}

/// [`ConvNormActivation`] `prefix` (`kernel`, `stride`, `groups`) as ONNX nodes over `x`.
pub fn emit_conv_norm_activation(
    graph: &mut Graph,
    weights: &Weights,
    (prefix, x): (&str, &str),
    (kernel, stride, groups): (i64, i64, i64),
    norm: Norm,
    activation: Activation,
) -> String {
    let shape = ConvShape { groups, ..ConvShape::square(stride, (kernel - 1) / 2) };
    let y = weights.conv(graph, x, &format!("{prefix}.0"), shape);
    let y = weights.batch_norm(graph, &y, &format!("{prefix}.1"), norm.eps as f32);
    activation.emit_onnx(graph, &y)
}

/// torchvision's `SqueezeExcitation`: the input scaled per channel by
/// `scale(fc2(activation(fc1(mean over the image))))`.
#[derive(Debug)]
pub struct SqueezeExcitation {
    fc1: nn::Conv2D,
    fc2: nn::Conv2D,
    activation: Activation,
    scale: Activation,
}

impl SqueezeExcitation {
    pub fn new(p: nn::Path, c: i64, squeeze: i64, activation: Activation, scale: Activation) -> Self {
        let fc1 = pointwise_with_bias(&p / "fc1", c, squeeze);
        let fc2 = pointwise_with_bias(&p / "fc2", squeeze, c);
        Self { fc1, fc2, activation, scale }
    }
}

impl ModuleT for SqueezeExcitation {
    fn forward_t(&self, x: &Tensor, _train: bool) -> Tensor {
        let squeezed = self.activation.apply(x.adaptive_avg_pool2d([1, 1]).apply(&self.fc1));
        self.scale.apply(squeezed.apply(&self.fc2)) * x
    }
}

/// [`SqueezeExcitation`] `prefix` as ONNX nodes over `x`.
pub fn emit_squeeze_excitation(
    graph: &mut Graph,
    weights: &Weights,
    prefix: &str,
    x: &str,
    se: SqueezeConfig,
) -> String {
    let pooled = graph.node("GlobalAveragePool", &[x], vec![]);
    let squeezed = weights.conv(graph, &pooled, &format!("{prefix}.fc1"), ConvShape::square(1, 0));
    let squeezed = se.activation.emit_onnx(graph, &squeezed);
    let scale = weights.conv(graph, &squeezed, &format!("{prefix}.fc2"), ConvShape::square(1, 0));
    let scale = se.scale.emit_onnx(graph, &scale);
    graph.node("Mul", &[&scale, x], vec![])
}

/// torchvision's `stochastic_depth(x, p, "row", train)`: in training, each
/// sample's `x` zeroed with probability `p`, the others scaled by
/// `1 / (1 - p)`. The mask is drawn as torchvision draws it (one
/// `bernoulli_(1 - p)` of `[N, 1, 1, 1]` on the default generator), in fp32
/// whatever `x`'s dtype, so a seed drops the same rows as torchvision's and
/// in any precision.
pub fn stochastic_depth(x: Tensor, p: f64, train: bool) -> Tensor {
    if !train || p == 0.0 {
        return x;
    }
    let survival = 1.0 - p;
    let mut noise = Tensor::empty([x.size()[0], 1, 1, 1], (Kind::Float, x.device()));
    let _ = noise.bernoulli_float_(survival);
    if survival > 0.0 {
        let _ = noise.g_div_scalar_(survival);
    }
    let noise = noise.to_kind(x.kind());
    x * noise
}

/// One layer of a [`Block`].
#[derive(Debug)]
enum Layer {
    Conv(ConvNormActivation),
    SqueezeExcitation(SqueezeExcitation),
}

/// A residual block, its layers `block.0`, `block.1`, …: the input added to
/// their output (after stochastic depth) when the block keeps the shape.
#[derive(Debug)]
pub struct Block {
    layers: Vec<Layer>,
    residual: bool,
    stochastic_depth: f64,
}

/// The squeeze-excitation of an inverted residual block: its squeeze
/// channels and activations.
#[derive(Debug, Clone, Copy)]
pub struct SqueezeConfig {
    pub channels: i64,
    pub activation: Activation,
    pub scale: Activation,
}

/// An inverted residual block (MobileNetV3's `InvertedResidual`,
/// EfficientNet's `MBConv`).
#[derive(Debug, Clone, Copy)]
pub struct InvertedResidualConfig {
    pub c_in: i64,
    pub expanded: i64,
    pub c_out: i64,
    pub kernel: i64,
    pub stride: i64,
    pub activation: Activation,
    pub squeeze: Option<SqueezeConfig>,
    pub norm: Norm,
    /// The probability that training drops the residual branch.
    pub stochastic_depth: f64,
}

impl Block {
    /// Expand (1×1, when `expanded` differs from `c_in`), depthwise, optional
    /// squeeze-excitation, project (1×1, no activation).
    pub fn inverted_residual(p: &nn::Path, c: InvertedResidualConfig) -> Self {
        let mut layers = Vec::new();
        let p = p / "block";
        let (norm, act) = (c.norm, c.activation);
        if c.expanded != c.c_in {
            let path = &p / layers.len();
            layers.push(Layer::Conv(ConvNormActivation::pointwise(path, c.c_in, c.expanded, norm, act)));
        }
        let path = &p / layers.len();
        let depthwise =
            ConvNormActivation::new(path, c.expanded, c.expanded, c.kernel, c.stride, c.expanded, norm, act);
        layers.push(Layer::Conv(depthwise));
        if let Some(se) = c.squeeze {
            let path = &p / layers.len();
            let layer = SqueezeExcitation::new(path, c.expanded, se.channels, se.activation, se.scale);
            layers.push(Layer::SqueezeExcitation(layer));
        }
        let path = &p / layers.len();
        layers.push(Layer::Conv(ConvNormActivation::pointwise(path, c.expanded, c.c_out, norm, Activation::None)));
        let residual = c.stride == 1 && c.c_in == c.c_out;
        Self { layers, residual, stochastic_depth: c.stochastic_depth }
    }

    /// EfficientNetV2's `FusedMBConv`: a full `kernel`×`kernel` convolution
    /// to `expanded` channels, then a 1×1 projection without activation;
    /// when nothing expands, the one convolution straight to `c_out`.
    pub fn fused(p: &nn::Path, c: InvertedResidualConfig) -> Self {
        assert!(c.squeeze.is_none(), "FusedMBConv has no squeeze-excitation");
        let p = p / "block";
        let (norm, act) = (c.norm, c.activation);
        let layers = if c.expanded != c.c_in {
            let expand = ConvNormActivation::new(&p / 0, c.c_in, c.expanded, c.kernel, c.stride, 1, norm, act);
            let project = ConvNormActivation::pointwise(&p / 1, c.expanded, c.c_out, norm, Activation::None);
            vec![Layer::Conv(expand), Layer::Conv(project)]
        } else {
            vec![Layer::Conv(ConvNormActivation::new(&p / 0, c.c_in, c.c_out, c.kernel, c.stride, 1, norm, act))]
        };
        let residual = c.stride == 1 && c.c_in == c.c_out;
        Self { layers, residual, stochastic_depth: c.stochastic_depth }
    }
}

impl ModuleT for Block {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let mut y = x.shallow_clone();
        for layer in &self.layers {
            y = match layer {
                Layer::Conv(conv) => conv.forward_t(&y, train),
                Layer::SqueezeExcitation(se) => se.forward_t(&y, train),
            };
        }
        if !self.residual {
            return y;
        }
        stochastic_depth(y, self.stochastic_depth, train) + x
    }
}

/// A layer of a block as [`emit_block`] writes it: a convolution
/// (`kernel`, `stride`, `groups`) with its norm and activation, or a
/// squeeze-excitation.
enum Step {
    Conv((i64, i64, i64), Activation),
    Squeeze(SqueezeConfig),
}

/// The eval-mode [`Block`] at `prefix` (its layers `{prefix}.block.J`) as
/// ONNX nodes over `x`: [`Block::inverted_residual`]'s layers, or
/// [`Block::fused`]'s when `fused`, and the residual.
pub fn emit_block(
    graph: &mut Graph,
    weights: &Weights,
    (prefix, x): (&str, &str),
    c: InvertedResidualConfig,
    fused: bool,
) -> String {
    let act = c.activation;
    let steps = if fused {
        let full = Step::Conv((c.kernel, c.stride, 1), act);
        match c.expanded != c.c_in {
            true => vec![full, Step::Conv((1, 1, 1), Activation::None)],
            false => vec![full],
        }
    } else {
        let expand = (c.expanded != c.c_in).then_some(Step::Conv((1, 1, 1), act));
        let depthwise = Step::Conv((c.kernel, c.stride, c.expanded), act);
        let squeeze = c.squeeze.map(Step::Squeeze);
        let project = Step::Conv((1, 1, 1), Activation::None);
        [expand, Some(depthwise), squeeze, Some(project)].into_iter().flatten().collect()
    };
    let mut y = x.to_owned();
    for (index, step) in steps.into_iter().enumerate() {
        let path = format!("{prefix}.block.{index}");
        y = match step {
            Step::Squeeze(se) => emit_squeeze_excitation(graph, weights, &path, &y, se),
            Step::Conv(shape, activation) => {
                emit_conv_norm_activation(graph, weights, (&path, &y), shape, c.norm, activation)
            }
        };
    }
    match c.stride == 1 && c.c_in == c.c_out {
        true => graph.node("Add", &[&y, x], vec![]),
        false => y,
    }
}

/// torchvision's `_make_divisible(v, 8)`: `v` to the nearest multiple of 8
/// (at least 8), not more than 10 % below `v`.
pub fn make_divisible(v: f64) -> i64 {
    let rounded = (8.max((v + 4.0) as i64 / 8 * 8)) as f64;
    if rounded < 0.9 * v {
        rounded as i64 + 8
    } else {
        rounded as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn make_divisible_rounds_as_torchvision() {
        assert_eq!(make_divisible(32.0 * 1.1), 32);
        assert_eq!(make_divisible(16.0 * 1.4), 24);
        assert_eq!(make_divisible(320.0 * 1.1), 352);
        assert_eq!(make_divisible(24.0 * 1.2), 32);
        assert_eq!(make_divisible(960.0 / 4.0), 240);
        assert_eq!(make_divisible(72.0 / 4.0), 24);
        assert_eq!(make_divisible(3.0), 8);
    }

    #[test]
    fn stochastic_depth_drops_rows_in_training_only() {
        let x = Tensor::ones([64, 2, 3, 3], (Kind::Float, Device::Cpu));
        assert!(stochastic_depth(x.shallow_clone(), 0.5, false).equal(&x));
        let y = stochastic_depth(x.shallow_clone(), 0.5, true);
        let per_row = y.sum_dim_intlist([1, 2, 3].as_slice(), false, Kind::Float);
        let dropped = per_row.eq(0.0).sum(Kind::Int64).int64_value(&[]);
        assert!((8..=56).contains(&dropped), "{dropped} of 64 rows dropped");
        let kept = per_row.ne(0.0);
        assert!(per_row.masked_select(&kept).eq(36.0).all().int64_value(&[]) == 1, "kept rows scaled by 2");
    }
}
