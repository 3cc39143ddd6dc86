//! torchvision's ViT-B/16 (`vit_b_16`) with torchvision's variable names:
//! `conv_proj` (the 16×16 stride-16 patch embedding), `class_token`,
//! `encoder.pos_embedding`, the twelve `encoder.layers.encoder_layer_I`
//! (`ln_1`, `self_attention.{in_proj_weight, in_proj_bias, out_proj}` as
//! `nn.MultiheadAttention` names them, `ln_2`, the MLP's `mlp.0`/`mlp.3`) and
//! `encoder.ln`, so torchvision checkpoints load by name. LayerNorm eps 1e-6,
//! exact GELU, attention written with `scaled_dot_product_attention` (what
//! `nn.MultiheadAttention` runs when asked for no weights). Dropout is
//! torchvision's default, 0, so train and eval mode compute the same.
//!
//! The position embedding has one entry per patch plus the class token's,
//! so a model is built for one image size (a multiple of 16, as
//! torchvision's `vit_b_16(image_size=)`): 224 pixels (197 entries) for the
//! published weights; [`resize_pos_embedding`] fits a checkpoint's to
//! another size as torchvision's `interpolate_embeddings` does. The backbone
//! ends at the class token after `encoder.ln`; the classifier's Linear
//! (`heads.head`) is built by [`super::Classifier`].

use super::onnx::{attend, attention_projections, concat, gelu, slice, ConvShape, Weights};
use crate::persist::onnx::{Attribute, Graph};
use tch::nn::{self, ModuleT};
use tch::Tensor;

pub const FEATURES: i64 = 768;
/// The side of the square patches images are cut into.
pub const PATCH: i64 = 16;
pub const LAYERS: usize = 12;
const HEADS: i64 = 12;
const MLP: i64 = 3072;
const EPS: f64 = 1e-6;
/// torchvision's `dropout` and `attention_dropout` (both 0 by default).
const DROPOUT: f64 = 0.0;

/// The encoder layer that a parameter named `encoder.layers.encoder_layer_I.…`
/// belongs to; `None` outside them.
pub fn layer_of(name: &str) -> Option<usize> {
    name.strip_prefix("encoder.layers.encoder_layer_")?.split('.').next()?.parse().ok()
}

/// Whether a parameter belongs to the patch embedding (what precedes the
/// encoder layers).
pub fn is_stem(name: &str) -> bool {
    name.starts_with("conv_proj.") || name == "class_token" || name == "encoder.pos_embedding"
}

/// The number of position-embedding entries for `image_size`² images.
pub fn sequence_length(image_size: i64) -> i64 {
    (image_size / PATCH).pow(2) + 1
}

/// A `[1, L, D]` position embedding for `image_size`² images, as
/// torchvision's `interpolate_embeddings` makes it: the class token's entry
/// kept, the patches' grid resized bicubically (corners aligned).
pub fn resize_pos_embedding(pos: &Tensor, image_size: i64) -> Tensor {
    let (_, length, dim) = pos.size3().expect("a [1, L, D] position embedding");
    if length == sequence_length(image_size) {
        return pos.shallow_clone();
    }
    let old = ((length - 1) as f64).sqrt().round() as i64;
    let new = image_size / PATCH;
    let grid = pos.narrow(1, 1, length - 1).permute([0, 2, 1]).reshape([1, dim, old, old]);
    let grid = grid.upsample_bicubic2d([new, new], true, None, None).reshape([1, dim, new * new]).permute([0, 2, 1]);
    Tensor::cat(&[pos.narrow(1, 0, 1), grid], 1)
}

fn layer_norm(p: nn::Path) -> nn::LayerNorm {
    nn::layer_norm(p, vec![FEATURES], nn::LayerNormConfig { eps: EPS, ..Default::default() })
}

/// `xavier_uniform_` for a `[fan_out, fan_in]` weight.
fn xavier(fan_in: i64, fan_out: i64) -> nn::Init {
    let bound = (6.0 / (fan_in + fan_out) as f64).sqrt();
    nn::Init::Uniform { lo: -bound, up: bound }
}

fn dropout(x: Tensor, train: bool) -> Tensor {
    if train && DROPOUT > 0.0 {
        x.dropout(DROPOUT, train)
    } else {
        x
    }
}

/// `nn.MultiheadAttention(768, 12, batch_first=True)` on `(x, x, x)`.
struct SelfAttention {
    in_proj_weight: Tensor,
    in_proj_bias: Tensor,
    out_proj: nn::Linear,
}

impl SelfAttention {
    fn new(p: nn::Path) -> Self {
        let e = FEATURES;
        let bound = 1.0 / (e as f64).sqrt();
        let out_init = nn::LinearConfig {
            ws_init: nn::Init::Uniform { lo: -bound, up: bound },
            bs_init: Some(nn::Init::Const(0.0)),
            bias: true,
        };
        Self {
            in_proj_weight: p.var("in_proj_weight", &[3 * e, e], xavier(e, 3 * e)),
            in_proj_bias: p.var("in_proj_bias", &[3 * e], nn::Init::Const(0.0)),
            out_proj: nn::linear(&p / "out_proj", e, e, out_init),
        }
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let (n, length, e) = x.size3().unwrap();
        let qkv = x.linear(&self.in_proj_weight, Some(&self.in_proj_bias));
        let qkv = qkv.view([n, length, 3, HEADS, e / HEADS]).permute([2, 0, 3, 1, 4]);
        let (q, k, v) = (qkv.get(0), qkv.get(1), qkv.get(2));
        let p = if train { DROPOUT } else { 0.0 };
        let attended = Tensor::scaled_dot_product_attention(&q, &k, &v, None::<Tensor>, p, false, None, false);
        attended.permute([0, 2, 1, 3]).reshape([n, length, e]).apply(&self.out_proj)
    }
}

/// torchvision's `EncoderBlock`.
struct EncoderLayer {
    ln_1: nn::LayerNorm,
    attention: SelfAttention,
    ln_2: nn::LayerNorm,
    mlp_0: nn::Linear,
    mlp_3: nn::Linear,
}

impl EncoderLayer {
    fn new(p: nn::Path) -> Self {
        let mlp = |name: &str, c_in, c_out| {
            let config = nn::LinearConfig {
                ws_init: xavier(c_in, c_out),
                bs_init: Some(nn::Init::Randn { mean: 0.0, stdev: 1e-6 }),
                bias: true,
            };
            nn::linear(&p / "mlp" / name, c_in, c_out, config)
        };
        Self {
            ln_1: layer_norm(&p / "ln_1"),
            attention: SelfAttention::new(&p / "self_attention"),
            ln_2: layer_norm(&p / "ln_2"),
            mlp_0: mlp("0", FEATURES, MLP),
            mlp_3: mlp("3", MLP, FEATURES),
        }
    }

    fn forward_t(&self, input: &Tensor, train: bool) -> Tensor {
        let x = dropout(self.attention.forward_t(&input.apply(&self.ln_1), train), train) + input;
        let y = dropout(x.apply(&self.ln_2).apply(&self.mlp_0).gelu("none"), train).apply(&self.mlp_3);
        dropout(y, train) + x
    }
}

/// The ViT-B/16 trunk for `image_size`² images: `[N, 3, S, S]` → `[N, 768]`.
pub struct Backbone {
    conv_proj: nn::Conv2D,
    class_token: Tensor,
    pos_embedding: Tensor,
    layers: Vec<EncoderLayer>,
    ln: nn::LayerNorm,
    image_size: i64,
}

/// Panics unless `image_size` is a multiple of [`PATCH`] (callers check
/// `--image-size` first).
pub fn backbone(p: &nn::Path, image_size: i64) -> Backbone {
    assert!(image_size > 0 && image_size % PATCH == 0, "ViT-B/16 takes images a multiple of 16 pixels wide");
    let fan_in = 3 * PATCH * PATCH;
    let conv_config = nn::ConvConfig {
        stride: PATCH,
        ws_init: nn::Init::Randn { mean: 0.0, stdev: (1.0 / fan_in as f64).sqrt() },
        bs_init: nn::Init::Const(0.0),
        ..Default::default()
    };
    let encoder = p / "encoder";
    let layers = &encoder / "layers";
    Backbone {
        conv_proj: nn::conv2d(p / "conv_proj", 3, FEATURES, PATCH, conv_config),
        class_token: p.var("class_token", &[1, 1, FEATURES], nn::Init::Const(0.0)),
        pos_embedding: encoder.var(
            "pos_embedding",
            &[1, sequence_length(image_size), FEATURES],
            nn::Init::Randn { mean: 0.0, stdev: 0.02 },
        ),
        layers: (0..LAYERS).map(|i| EncoderLayer::new(&layers / format!("encoder_layer_{i}"))).collect(),
        ln: layer_norm(&encoder / "ln"),
        image_size,
    }
}

impl std::fmt::Debug for Backbone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ViT-B/16 backbone ({} px)", self.image_size)
    }
}

/// No grid: pooled features only ([`super::Arch::has_grid`]).
impl super::Trunk for Backbone {}

impl ModuleT for Backbone {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let (n, _, h, w) = x.size4().unwrap();
        let s = self.image_size;
        assert!(h == s && w == s, "ViT-B/16 built for {s}×{s} images got {h}×{w} ones");
        let patches = x.apply(&self.conv_proj).reshape([n, FEATURES, -1]).permute([0, 2, 1]);
        let tokens = Tensor::cat(&[self.class_token.expand([n, -1, -1], false), patches], 1);
        let mut z = dropout(tokens + &self.pos_embedding, train);
        for layer in &self.layers {
            z = layer.forward_t(&z, train);
        }
        z.apply(&self.ln).select(1, 0)
    }
}

/// [`SelfAttention`] `prefix` as ONNX nodes over `x`, `[N, L, 768]`.
fn emit_self_attention(graph: &mut Graph, weights: &Weights, prefix: &str, x: &str) -> String {
    let packed =
        (weights.tensor(&format!("{prefix}.in_proj_weight")), weights.tensor(&format!("{prefix}.in_proj_bias")));
    let [q, k, v] = attention_projections(graph, x, &format!("{prefix}.in_proj"), packed, HEADS);
    let scores = graph.node("MatMul", &[&q, &k], vec![]);
    let attended = attend(graph, &scores, &v, FEATURES);
    weights.dense(graph, &attended, &format!("{prefix}.out_proj"))
}

/// [`EncoderLayer`] `prefix` as ONNX nodes over `input`, `[N, L, 768]`.
fn emit_encoder_layer(graph: &mut Graph, weights: &Weights, prefix: &str, input: &str) -> String {
    let y = weights.layer_norm(graph, input, &format!("{prefix}.ln_1"), EPS as f32);
    let y = emit_self_attention(graph, weights, &format!("{prefix}.self_attention"), &y);
    let x = graph.node("Add", &[&y, input], vec![]);
    let y = weights.layer_norm(graph, &x, &format!("{prefix}.ln_2"), EPS as f32);
    let y = weights.dense(graph, &y, &format!("{prefix}.mlp.0"));
    let y = gelu(graph, &y);
    let y = weights.dense(graph, &y, &format!("{prefix}.mlp.3"));
    graph.node("Add", &[&y, &x], vec![])
}

/// The trunk as ONNX nodes over `input`, `[N, 3, S, S]` for the image
/// size the model's position embedding was built for: the class token
/// after `encoder.ln`, `[N, 768]`.
pub fn emit_onnx(graph: &mut Graph, weights: &Weights, input: &str) -> String {
    let patches = weights.conv(graph, input, "conv_proj", ConvShape::square(PATCH, 0));
    let patches = super::onnx::reshape(graph, &patches, &[0, FEATURES, -1]);
    let patches = super::onnx::transpose(graph, &patches, &[0, 2, 1]);
    let batch = graph.node("Shape", &[input], vec![("start", Attribute::Int(0)), ("end", Attribute::Int(1))]);
    let token_shape = graph.int_constant(&[1, FEATURES]);
    let token_shape = concat(graph, &[&batch, &token_shape], 0);
    let class_token = weights.value(graph, "class_token");
    let class_tokens = graph.node("Expand", &[&class_token, &token_shape], vec![]);
    let tokens = concat(graph, &[&class_tokens, &patches], 1);
    let position = weights.value(graph, "encoder.pos_embedding");
    let mut z = graph.node("Add", &[&tokens, &position], vec![]);
    for i in 0..LAYERS {
        z = emit_encoder_layer(graph, weights, &format!("encoder.layers.encoder_layer_{i}"), &z);
    }
    z = weights.layer_norm(graph, &z, "encoder.ln", EPS as f32);
    let class = slice(graph, &z, &[1], (&[0], &[1], &[1]));
    graph.node("Flatten", &[&class], vec![("axis", Attribute::Int(1))])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_give_the_layer() {
        assert_eq!(layer_of("encoder.layers.encoder_layer_0.ln_1.weight"), Some(0));
        assert_eq!(layer_of("encoder.layers.encoder_layer_11.self_attention.in_proj_bias"), Some(11));
        assert_eq!(layer_of("encoder.pos_embedding"), None);
        assert!(is_stem("encoder.pos_embedding") && is_stem("class_token") && is_stem("conv_proj.bias"));
        assert!(!is_stem("encoder.ln.weight"));
        assert_eq!(sequence_length(224), 197);
        assert_eq!(sequence_length(64), 17);
    }
}
