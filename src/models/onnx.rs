//! A classifier as an ONNX graph (`finetune export --format onnx`): each
//! backbone family writes its eval-mode trunk beside its forward pass
//! (`emit_onnx`), from the checkpoint's tensors by name; this module holds
//! the layers they share and adds the head. The graph takes normalized
//! images `[batch, 3, S, S]` (the preprocessing is the model card's) and
//! gives logits `[batch, classes]`.

use super::{efficientnet_lite, resnet, Arch, Classifier};
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

    /// The initializer of tensor `name`.
    fn value(&self, graph: &mut Graph, name: &str) -> String {
        let tensor = self.tensors.get(name).unwrap_or_else(|| panic!("the model has no tensor {name}"));
        graph.weight(name, tensor)
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

    /// `y = x·Wᵀ + b` of the linear layer `prefix`.
    pub fn linear(&self, graph: &mut Graph, x: &str, prefix: &str) -> String {
        let weight = self.value(graph, &format!("{prefix}.weight"));
        let bias = self.value(graph, &format!("{prefix}.bias"));
        graph.node("Gemm", &[x, &weight, &bias], vec![("transB", Attribute::Int(1))])
    }
}

/// Global average pooling, flattened: `[N, C, H, W]` → `[N, C]`.
pub fn pooled_features(graph: &mut Graph, x: &str) -> String {
    let pooled = graph.node("GlobalAveragePool", &[x], vec![]);
    graph.node("Flatten", &[&pooled], vec![("axis", Attribute::Int(1))])
}

/// The families that can be written so far.
pub fn exportable(arch: Arch) -> bool {
    arch.resnet().is_some() || arch == Arch::EfficientnetLite0
}

/// `model` (eval mode) as a graph over `[batch, 3, image_size, image_size]`
/// normalized images.
pub fn graph(model: &Classifier, image_size: i64) -> Result<Graph> {
    let arch = model.arch;
    if !exportable(arch) {
        let names: Vec<String> = <Arch as clap::ValueEnum>::value_variants()
            .iter()
            .filter(|a| exportable(**a))
            .map(|a| crate::choice_names::Named::name(a))
            .collect();
        bail!(
            "--arch {}: ONNX export is written for {} so far",
            crate::choice_names::Named::name(&arch),
            names.join(", ")
        );
    }
    let weights = Weights::of(model);
    let mut graph = Graph::new(&crate::choice_names::Named::name(&arch), INPUT, &[3, image_size, image_size]);
    let input = graph.input();
    let features = match arch.resnet() {
        Some(config) => resnet::emit_onnx(&mut graph, &weights, config, &input),
        None => efficientnet_lite::emit_onnx(&mut graph, &weights, &input, image_size),
    };
    let logits = weights.linear(&mut graph, &features, arch.head_name());
    let classes = model.head_vs.variables().values().next().map_or(0, |t| t.size()[0]);
    graph.set_output(&logits, OUTPUT, &[classes]);
    Ok(graph)
}
