//! torchvision's ConvNeXt-Tiny and ConvNeXt-Small (`convnext_tiny`,
//! `convnext_small`) with torchvision's variable names: the stem
//! `features.0.{0,1}` (4×4 stride-4 convolution, LayerNorm2d), the stages'
//! blocks `features.{1,3,5,7}.B` (`block.0` 7×7 depthwise convolution,
//! `block.2` LayerNorm, `block.3`/`block.5` the MLP's Linears, `layer_scale`),
//! the downsampling layers `features.{2,4,6}.{0,1}` (LayerNorm2d, 2×2
//! stride-2 convolution) and the final `classifier.0` LayerNorm2d, so
//! torchvision checkpoints load by name. LayerNorm eps 1e-6, exact GELU. In
//! training each block drops its branch per sample (`StochasticDepth(p,
//! "row")`), p growing linearly over the blocks to 0.1 (Tiny) or 0.4 (Small)
//! as torchvision computes it. The backbone ends at global average pooling
//! and `classifier.0`; the classifier's Linear (`classifier.2`) is built by
//! [`super::Classifier`].

use super::onnx::{gelu, pooled_features, transpose, ConvShape, Weights};
use crate::persist::onnx::Graph;
use tch::nn::{self, ModuleT};
use tch::{Kind, Tensor};

pub const FEATURES: i64 = 768;
const WIDTHS: [i64; 4] = [96, 192, 384, 768];
const EPS: f64 = 1e-6;

/// One member of the family.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    /// Blocks in each of the four stages.
    pub depths: [usize; 4],
    /// The last block's stochastic-depth rate (torchvision's `stochastic_depth_prob`).
    pub stochastic_depth: f64,
}

pub const TINY: Config = Config { depths: [3, 3, 9, 3], stochastic_depth: 0.1 };
pub const SMALL: Config = Config { depths: [3, 3, 27, 3], stochastic_depth: 0.4 };

impl Config {
    pub fn block_count(self) -> usize {
        self.depths.iter().sum()
    }
}

/// The block (counted from 0 over all stages) that a parameter belongs to;
/// `None` for the stem and what follows the blocks.
pub fn block_of(config: Config, name: &str) -> Option<usize> {
    super::staged_features_block(&config.depths, name)
}

fn layer_norm(p: nn::Path, dim: i64) -> nn::LayerNorm {
    nn::layer_norm(p, vec![dim], nn::LayerNormConfig { eps: EPS, ..Default::default() })
}

/// torchvision's `trunc_normal_(std=0.02)` weights (the truncation at ±2,
/// a hundred standard deviations, never bites) and zero biases.
fn conv(p: nn::Path, c_in: i64, c_out: i64, k: i64, stride: i64, padding: i64, groups: i64) -> nn::Conv2D {
    let ws_init = nn::Init::Randn { mean: 0.0, stdev: 0.02 };
    let config =
        nn::ConvConfig { stride, padding, groups, ws_init, bs_init: nn::Init::Const(0.0), ..Default::default() };
    nn::conv2d(p, c_in, c_out, k, config)
}

fn linear(p: nn::Path, c_in: i64, c_out: i64) -> nn::Linear {
    let ws_init = nn::Init::Randn { mean: 0.0, stdev: 0.02 };
    nn::linear(p, c_in, c_out, nn::LinearConfig { ws_init, bs_init: Some(nn::Init::Const(0.0)), bias: true })
}

/// torchvision's `LayerNorm2d`: LayerNorm over the channels of `[N, C, H, W]`.
fn layer_norm_2d(x: &Tensor, norm: &nn::LayerNorm) -> Tensor {
    x.permute([0, 2, 3, 1]).apply(norm).permute([0, 3, 1, 2])
}

/// torchvision's `stochastic_depth(x, p, "row", training)`: each sample's
/// `x` zeroed with probability `p`, the rest scaled by `1/(1-p)`; the mask
/// drawn as torchvision draws it (`bernoulli_(1-p)` on a `[N, 1, 1, 1]`
/// tensor, in fp32 whatever the activations' dtype).
pub fn stochastic_depth(x: &Tensor, p: f64, train: bool) -> Tensor {
    if !train || p == 0.0 {
        return x.shallow_clone();
    }
    let survival = 1.0 - p;
    let mut shape = vec![1; x.dim()];
    shape[0] = x.size()[0];
    let mut noise = Tensor::empty(shape.as_slice(), (Kind::Float, x.device()));
    let _ = noise.bernoulli_float_(survival);
    if survival > 0.0 {
        noise /= survival;
    }
    x * noise.to_kind(x.kind())
}

/// torchvision's `CNBlock`.
struct Block {
    depthwise: nn::Conv2D,
    norm: nn::LayerNorm,
    expand: nn::Linear,
    project: nn::Linear,
    layer_scale: Tensor,
    drop: f64,
}

impl Block {
    fn new(p: nn::Path, dim: i64, drop: f64) -> Self {
        let b = &p / "block";
        Self {
            depthwise: conv(&b / "0", dim, dim, 7, 1, 3, dim),
            norm: layer_norm(&b / "2", dim),
            expand: linear(&b / "3", dim, 4 * dim),
            project: linear(&b / "5", 4 * dim, dim),
            layer_scale: p.var("layer_scale", &[dim, 1, 1], nn::Init::Const(1e-6)),
            drop,
        }
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let y = x
            .apply(&self.depthwise)
            .permute([0, 2, 3, 1])
            .apply(&self.norm)
            .apply(&self.expand)
            .gelu("none")
            .apply(&self.project)
            .permute([0, 3, 1, 2]);
        stochastic_depth(&(&self.layer_scale * y), self.drop, train) + x
    }
}

/// What `features` holds after the stem, in order.
enum Layer {
    Block(Block),
    Downsample(nn::LayerNorm, nn::Conv2D),
}

/// The ConvNeXt trunk: `[N, 3, H, W]` → `[N, 768]`.
pub struct Backbone {
    stem: (nn::Conv2D, nn::LayerNorm),
    layers: Vec<Layer>,
    norm: nn::LayerNorm,
    config: Config,
}

pub fn backbone(p: &nn::Path, config: Config) -> Backbone {
    let features = p / "features";
    let stem = (conv(&features / "0" / "0", 3, WIDTHS[0], 4, 4, 0, 1), layer_norm(&features / "0" / "1", WIDTHS[0]));
    let last = config.block_count() as f64 - 1.0;
    let mut layers = Vec::new();
    let mut index = 0;
    for (stage, &depth) in config.depths.iter().enumerate() {
        let dim = WIDTHS[stage];
        let stage_path = &features / (2 * stage + 1);
        for b in 0..depth {
            // torchvision: stochastic_depth_prob * stage_block_id / (total_stage_blocks - 1.0)
            let drop = config.stochastic_depth * index as f64 / last;
            layers.push(Layer::Block(Block::new(&stage_path / b, dim, drop)));
            index += 1;
        }
        if stage < 3 {
            let down = &features / (2 * stage + 2);
            let norm = layer_norm(&down / "0", dim);
            layers.push(Layer::Downsample(norm, conv(&down / "1", dim, WIDTHS[stage + 1], 2, 2, 0, 1)));
        }
    }
    Backbone { stem, layers, norm: layer_norm(p / "classifier" / "0", FEATURES), config }
}

impl std::fmt::Debug for Backbone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ConvNeXt backbone (stages {:?})", self.config.depths)
    }
}

impl Backbone {
    /// The stem and the first `layers` of `self.layers`.
    fn layers_t(&self, x: &Tensor, layers: usize, train: bool) -> Tensor {
        let mut y = layer_norm_2d(&x.apply(&self.stem.0), &self.stem.1);
        for layer in &self.layers[..layers] {
            y = match layer {
                Layer::Block(block) => block.forward_t(&y, train),
                Layer::Downsample(norm, conv) => layer_norm_2d(&y, norm).apply(conv),
            };
        }
        y
    }
}

impl ModuleT for Backbone {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let y = self.layers_t(x, self.layers.len(), train);
        layer_norm_2d(&y.adaptive_avg_pool2d([1, 1]), &self.norm).flatten(1, -1)
    }
}

impl super::Trunk for Backbone {
    /// The last stage's 768-channel map (`Last`; the pooled features are
    /// its mean, layer-normed), or the stage before's 384-channel one (at
    /// twice the side).
    fn feature_map(&self, images: &Tensor, layer: super::GridLayer) -> Option<Tensor> {
        let layers = match layer {
            super::GridLayer::Last => self.layers.len(),
            super::GridLayer::Penultimate => {
                self.layers.iter().rposition(|l| matches!(l, Layer::Downsample(..))).expect("downsampling layers")
            }
        };
        Some(self.layers_t(images, layers, false))
    }
}

/// `LayerNorm2d` `prefix` (over channels of `[N, C, H, W]`) as ONNX nodes over `x`.
fn emit_layer_norm_2d(graph: &mut Graph, weights: &Weights, x: &str, prefix: &str) -> String {
    let channels_last = transpose(graph, x, &[0, 2, 3, 1]);
    let normed = weights.layer_norm(graph, &channels_last, prefix, EPS as f32);
    transpose(graph, &normed, &[0, 3, 1, 2])
}

/// [`Block`] `prefix` of `dim` channels as ONNX nodes over `x` (eval mode:
/// no stochastic depth).
fn emit_block(graph: &mut Graph, weights: &Weights, (prefix, x): (&str, &str), dim: i64) -> String {
    let depthwise = ConvShape { groups: dim, ..ConvShape::square(1, 3) };
    let y = weights.conv(graph, x, &format!("{prefix}.block.0"), depthwise);
    let y = transpose(graph, &y, &[0, 2, 3, 1]);
    let y = weights.layer_norm(graph, &y, &format!("{prefix}.block.2"), EPS as f32);
    let y = weights.dense(graph, &y, &format!("{prefix}.block.3"));
    let y = gelu(graph, &y);
    let y = weights.dense(graph, &y, &format!("{prefix}.block.5"));
    let y = transpose(graph, &y, &[0, 3, 1, 2]);
    let scale = weights.value(graph, &format!("{prefix}.layer_scale"));
    let y = graph.node("Mul", &[&scale, &y], vec![]);
    graph.node("Add", &[&y, x], vec![])
}

/// The trunk of `config` as ONNX nodes over `input` (eval mode), reading
/// the weights by their torchvision names: the pooled, normalised features
/// `[N, 768]`.
pub fn emit_onnx(graph: &mut Graph, weights: &Weights, config: Config, input: &str) -> String {
    let mut x = weights.conv(graph, input, "features.0.0", ConvShape::square(4, 0));
    x = emit_layer_norm_2d(graph, weights, &x, "features.0.1");
    for (stage, &depth) in config.depths.iter().enumerate() {
        for b in 0..depth {
            x = emit_block(graph, weights, (&format!("features.{}.{b}", 2 * stage + 1), &x), WIDTHS[stage]);
        }
        if stage < 3 {
            let down = format!("features.{}", 2 * stage + 2);
            x = emit_layer_norm_2d(graph, weights, &x, &format!("{down}.0"));
            x = weights.conv(graph, &x, &format!("{down}.1"), ConvShape::square(2, 0));
        }
    }
    let pooled = pooled_features(graph, &x);
    weights.layer_norm(graph, &pooled, "classifier.0", EPS as f32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn downsampling_goes_with_the_next_stages_first_block() {
        assert_eq!(block_of(TINY, "features.0.0.weight"), None);
        assert_eq!(block_of(TINY, "features.1.0.layer_scale"), Some(0));
        assert_eq!(block_of(TINY, "features.1.2.block.5.bias"), Some(2));
        assert_eq!(block_of(TINY, "features.2.1.weight"), Some(3));
        assert_eq!(block_of(TINY, "features.3.0.block.0.weight"), Some(3));
        assert_eq!(block_of(TINY, "features.5.8.block.0.weight"), Some(14));
        assert_eq!(block_of(TINY, "features.6.0.weight"), Some(15));
        assert_eq!(block_of(TINY, "features.7.2.layer_scale"), Some(17));
        assert_eq!(block_of(SMALL, "features.7.2.layer_scale"), Some(35));
        assert_eq!(block_of(TINY, "classifier.0.weight"), None);
    }

    #[test]
    fn train_mode_drops_blocks_at_random_and_eval_mode_does_not() {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = backbone(&vs.root(), TINY);
        tch::no_grad(|| {
            for (name, mut var) in vs.variables() {
                if name.ends_with("layer_scale") {
                    let _ = var.fill_(0.5);
                }
            }
        });
        // 16 rows: all 17 blocks with a rate keep all of them with probability 1e-6.
        let x = Tensor::randn([16, 3, 32, 32], (Kind::Float, Device::Cpu));
        let pass = |train| tch::no_grad(|| net.forward_t(&x, train));
        let eval = pass(false);
        assert!(eval.equal(&pass(false)), "eval mode is deterministic");
        let first = pass(true);
        assert!(!first.allclose(&eval, 1e-4, 1e-4, false), "train mode drops some rows");
        assert!((0..5).any(|_| !pass(true).equal(&first)), "train mode drops other rows on another draw");
    }
}
