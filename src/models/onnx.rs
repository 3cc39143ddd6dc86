//! A classifier as an ONNX graph (`finetune export --format onnx`): each
//! backbone family writes its eval-mode trunk beside its forward pass
//! (`emit_onnx`), from the checkpoint's tensors by name; this module holds
//! the layers they share and adds the head. The graph takes normalized
//! images `[batch, 3, S, S]` (the preprocessing is the model card's) and
//! gives logits `[batch, classes]`.

use super::{
    convnext, efficientnet, efficientnet_lite, mobilenet_v3, regnet, resnet, swin, vit, Arch, Classifier, Family,
};
use crate::persist::onnx::{Attribute, Graph};
use anyhow::{bail, Result};
use std::collections::HashMap;
use tch::Tensor;

/// The graph's input and output names.
pub const INPUT: &str = "images";
pub const OUTPUT: &str = "logits";

/// A model's tensors by checkpoint name, each written into a graph the
/// first time a node reads it.
pub struct Weights {
    tensors: HashMap<String, Tensor>,
}

/// A convolution's stride, paddings (`[top, left, bottom, right]`) and groups.
#[derive(Debug, Clone, Copy)]
pub struct ConvShape {
    pub stride: i64,
    pub pads: [i64; 4],
    pub groups: i64,
}

impl ConvShape {
    /// Stride `stride` and `padding` on every side, one group.
    pub fn square(stride: i64, padding: i64) -> Self {
        Self { stride, pads: [padding; 4], groups: 1 }
    }
}

impl Weights {
    pub fn of(model: &Classifier) -> Self {
        Self { tensors: model.named_tensors().into_iter().collect() }
    }

    pub fn has(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The model's tensor `name` (the model was built by the crate: a
    /// missing name is a bug of its emitter).
    pub fn tensor(&self, name: &str) -> &Tensor {
        self.tensors.get(name).unwrap_or_else(|| panic!("the model has no tensor {name}"))
    }

    /// The initializer of tensor `name`.
    pub fn value(&self, graph: &mut Graph, name: &str) -> String {
        graph.weight(name, self.tensor(name))
    }

    /// `Conv` with `{prefix}.weight` (and `{prefix}.bias` when the model has one).
    pub fn conv(&self, graph: &mut Graph, x: &str, prefix: &str, shape: ConvShape) -> String {
        let weight = self.value(graph, &format!("{prefix}.weight"));
        let kernel = self.tensors[&format!("{prefix}.weight")].size()[2..].to_vec();
        let bias_name = format!("{prefix}.bias");
        let bias = if self.has(&bias_name) { self.value(graph, &bias_name) } else { String::new() };
        let attributes = vec![
            ("kernel_shape", Attribute::Ints(kernel)),
            ("strides", Attribute::Ints(vec![shape.stride; 2])),
            ("pads", Attribute::Ints(shape.pads.to_vec())),
            ("group", Attribute::Int(shape.groups)),
        ];
        match bias.is_empty() {
            true => graph.node("Conv", &[x, &weight], attributes),
            false => graph.node("Conv", &[x, &weight, &bias], attributes),
        }
    }

    /// Eval-mode `BatchNormalization` with `{prefix}`'s affine parameters and running statistics.
    pub fn batch_norm(&self, graph: &mut Graph, x: &str, prefix: &str, eps: f32) -> String {
        let inputs: Vec<String> = ["weight", "bias", "running_mean", "running_var"]
            .iter()
            .map(|part| self.value(graph, &format!("{prefix}.{part}")))
            .collect();
        let [scale, bias, mean, var] = [&inputs[0], &inputs[1], &inputs[2], &inputs[3]];
        graph.node("BatchNormalization", &[x, scale, bias, mean, var], vec![("epsilon", Attribute::Float(eps))])
    }

    /// `{block}.{conv}`, `{block}.{norm}`, ReLU.
    pub fn conv_bn_relu(
        &self,
        graph: &mut Graph,
        x: &str,
        block: &str,
        (conv, norm): (&str, &str),
        shape: ConvShape,
    ) -> String {
        let y = self.conv(graph, x, &format!("{block}.{conv}"), shape);
        let y = self.batch_norm(graph, &y, &format!("{block}.{norm}"), 1e-5);
        graph.node("Relu", &[&y], vec![])
    }

    /// `LayerNormalization` over the last axis with `{prefix}`'s weight and bias.
    pub fn layer_norm(&self, graph: &mut Graph, x: &str, prefix: &str, eps: f32) -> String {
        let scale = self.value(graph, &format!("{prefix}.weight"));
        let bias = self.value(graph, &format!("{prefix}.bias"));
        let attributes = vec![("axis", Attribute::Int(-1)), ("epsilon", Attribute::Float(eps))];
        graph.node("LayerNormalization", &[x, &scale, &bias], attributes)
    }

    /// The linear layer `prefix` on the last axis of `x` (any rank):
    /// `MatMul` by `Wᵀ`, then its bias when it has one.
    pub fn dense(&self, graph: &mut Graph, x: &str, prefix: &str) -> String {
        let weight = self.tensor(&format!("{prefix}.weight"));
        let bias = self.tensors.get(&format!("{prefix}.bias"));
        dense_of(graph, x, prefix, (weight, bias))
    }

    /// `y = x·Wᵀ + b` of the linear layer `prefix`.
    pub fn linear(&self, graph: &mut Graph, x: &str, prefix: &str) -> String {
        let weight = self.value(graph, &format!("{prefix}.weight"));
        let bias = self.value(graph, &format!("{prefix}.bias"));
        graph.node("Gemm", &[x, &weight, &bias], vec![("transB", Attribute::Int(1))])
    }
}

/// `x·Wᵀ + b` on the last axis of `x`, `W` and `b` written as initializers
/// named after `name`.
pub fn dense_of(graph: &mut Graph, x: &str, name: &str, (weight, bias): (&Tensor, Option<&Tensor>)) -> String {
    let transposed = graph.weight(&format!("{name}.weight_transposed"), &weight.tr());
    let product = graph.node("MatMul", &[x, &transposed], vec![]);
    match bias {
        Some(bias) => {
            let bias = graph.weight(&format!("{name}.bias"), bias);
            graph.node("Add", &[&product, &bias], vec![])
        }
        None => product,
    }
}

/// `Transpose` by `perm`.
pub fn transpose(graph: &mut Graph, x: &str, perm: &[i64]) -> String {
    graph.node("Transpose", &[x], vec![("perm", Attribute::Ints(perm.to_vec()))])
}

/// `Reshape` to `shape` (`0` keeps a dimension, `-1` infers one: the batch stays free).
pub fn reshape(graph: &mut Graph, x: &str, shape: &[i64]) -> String {
    let shape = graph.int_constant(shape);
    graph.node("Reshape", &[x, &shape], vec![])
}

/// `Slice` of `x` along `axes` from `starts` to `ends` by `steps`.
pub fn slice(graph: &mut Graph, x: &str, axes: &[i64], (starts, ends, steps): (&[i64], &[i64], &[i64])) -> String {
    let inputs = [starts, ends, axes, steps].map(|values| graph.int_constant(values));
    graph.node("Slice", &[x, &inputs[0], &inputs[1], &inputs[2], &inputs[3]], vec![])
}

/// `Concat` along `axis`.
pub fn concat(graph: &mut Graph, inputs: &[&str], axis: i64) -> String {
    graph.node("Concat", inputs, vec![("axis", Attribute::Int(axis))])
}

/// Exact GELU, `x·½·(1 + erf(x/√2))`.
pub fn gelu(graph: &mut Graph, x: &str) -> String {
    let inverse_sqrt2 = graph.constant(&[std::f32::consts::FRAC_1_SQRT_2], &[]);
    let scaled = graph.node("Mul", &[x, &inverse_sqrt2], vec![]);
    let erf = graph.node("Erf", &[&scaled], vec![]);
    let one = graph.constant(&[1.0], &[]);
    let shifted = graph.node("Add", &[&erf, &one], vec![]);
    let half = graph.constant(&[0.5], &[]);
    let halved = graph.node("Mul", &[x, &half], vec![]);
    graph.node("Mul", &[&halved, &shifted], vec![])
}

/// Multi-head attention's projections of `x` (`[B, L, D]`) by a packed
/// `[3D, D]` weight and `[3D]` bias (q, k, v stacked, as
/// `nn.MultiheadAttention`'s `in_proj` and Swin's `qkv`), written as
/// initializers named after `name`: q scaled by `1/√head_dim` as
/// `[B, heads, L, head_dim]`, kᵀ as `[B, heads, head_dim, L]`, v as q.
pub fn attention_projections(
    graph: &mut Graph,
    x: &str,
    name: &str,
    (weight, bias): (&Tensor, &Tensor),
    heads: i64,
) -> [String; 3] {
    let dim = weight.size()[1];
    let head_dim = dim / heads;
    let scale = (head_dim as f64).powf(-0.5);
    let project = |graph: &mut Graph, index: i64, part: &str, perm: &[i64]| {
        let (mut w, mut b) = (weight.narrow(0, index * dim, dim), bias.narrow(0, index * dim, dim));
        if index == 0 {
            (w, b) = (w * scale, b * scale);
        }
        let y = dense_of(graph, x, &format!("{name}.{part}"), (&w, Some(&b)));
        let y = reshape(graph, &y, &[0, 0, heads, head_dim]);
        transpose(graph, &y, perm)
    };
    let q = project(graph, 0, "q", &[0, 2, 1, 3]);
    let k = project(graph, 1, "k", &[0, 2, 3, 1]);
    let v = project(graph, 2, "v", &[0, 2, 1, 3]);
    [q, k, v]
}

/// Attention weights applied to `v` and the heads joined: `softmax(scores)·v`
/// as `[B, L, dim]`.
pub fn attend(graph: &mut Graph, scores: &str, v: &str, dim: i64) -> String {
    let weights = graph.node("Softmax", &[scores], vec![("axis", Attribute::Int(-1))]);
    let attended = graph.node("MatMul", &[&weights, v], vec![]);
    let attended = transpose(graph, &attended, &[0, 2, 1, 3]);
    reshape(graph, &attended, &[0, 0, dim])
}

/// Global average pooling, flattened: `[N, C, H, W]` → `[N, C]`.
pub fn pooled_features(graph: &mut Graph, x: &str) -> String {
    let pooled = graph.node("GlobalAveragePool", &[x], vec![]);
    graph.node("Flatten", &[&pooled], vec![("axis", Attribute::Int(1))])
}

/// The families that can be written so far.
pub fn exportable(arch: Arch) -> bool {
    match arch.family() {
        Family::Resnet(_)
        | Family::EfficientnetLite0
        | Family::MobilenetV3
        | Family::Efficientnet(_)
        | Family::Regnet(_)
        | Family::Convnext(_)
        | Family::Vit
        | Family::Swin => true,
    }
}

/// `model` (eval mode) as a graph over `[batch, 3, image_size, image_size]`
/// normalized images.
pub fn graph(model: &Classifier, image_size: i64) -> Result<Graph> {
    let arch = model.arch;
    if !exportable(arch) {
        let names: Vec<String> = <Arch as clap::ValueEnum>::value_variants()
            .iter()
            .filter(|a| exportable(**a))
            .map(crate::choice_names::Named::name)
            .collect();
        bail!(
            "--arch {}: ONNX export is written for {} so far",
            crate::choice_names::Named::name(&arch),
            names.join(", ")
        );
    }
    if let Some(built) = model.vit_image_size().filter(|&built| built != image_size) {
        bail!("this ViT was built for {built} px images (its position embedding), not {image_size}");
    }
    let weights = Weights::of(model);
    let mut graph = Graph::new(&crate::choice_names::Named::name(&arch), INPUT, &[3, image_size, image_size]);
    let input = graph.input();
    let features = match arch.family() {
        Family::Resnet(config) => resnet::emit_onnx(&mut graph, &weights, config, &input),
        Family::EfficientnetLite0 => efficientnet_lite::emit_onnx(&mut graph, &weights, &input, image_size),
        Family::MobilenetV3 => mobilenet_v3::emit_onnx(&mut graph, &weights, &input),
        Family::Efficientnet(member) => efficientnet::emit_onnx(&mut graph, &weights, member, &input),
        Family::Regnet(config) => regnet::emit_onnx(&mut graph, &weights, config, &input),
        Family::Convnext(config) => convnext::emit_onnx(&mut graph, &weights, config, &input),
        Family::Vit => vit::emit_onnx(&mut graph, &weights, &input),
        Family::Swin => swin::emit_onnx(&mut graph, &weights, &input, image_size),
    };
    let logits = weights.linear(&mut graph, &features, arch.head_name());
    let classes = model.head_vs.variables().values().next().map_or(0, |t| t.size()[0]);
    graph.set_output(&logits, OUTPUT, &[classes]);
    Ok(graph)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn a_vit_is_written_only_for_the_size_it_was_built_for() {
        let model = tch::no_grad(|| Classifier::for_images(Arch::VitB16, 2, 32, Device::Cpu));
        let error = graph(&model, 64).err().expect("a 32 px ViT at 64 px");
        assert!(error.to_string().contains("built for 32 px"), "{error}");
        assert!(graph(&model, 32).is_ok());
    }
}
