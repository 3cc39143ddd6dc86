//! Pretrained backbones and the classifier built on them. Variable names
//! follow the published checkpoints (torchvision for ResNet, the
//! `efficientnet-lite-pytorch` package for EfficientNet-Lite0), so weights load
//! by name; the new head keeps the original head's name (`fc` / `_fc`).
//! [`winograd`] holds ResNet's 3×3 convolution layer and the Winograd weight
//! gradients it uses in CPU training; [`omp`] runs their transforms on
//! libtorch's own OpenMP threads.

pub mod checkpoint_io;
pub mod efficientnet_lite;
pub mod omp;
pub mod pth;
pub mod resnet;
pub mod winograd;

use crate::data::transforms::Normalization;
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};
use tch::nn::{self, ModuleT};
use tch::{Device, Tensor};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Arch {
    Resnet18,
    Resnet34,
    Resnet50,
    #[value(name = "efficientnet-lite0")]
    #[serde(rename = "efficientnet-lite0")]
    EfficientnetLite0,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::Resnet18 => "resnet18",
            Arch::Resnet34 => "resnet34",
            Arch::Resnet50 => "resnet50",
            Arch::EfficientnetLite0 => "efficientnet-lite0",
        }
    }

    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "resnet18" => Ok(Arch::Resnet18),
            "resnet34" => Ok(Arch::Resnet34),
            "resnet50" => Ok(Arch::Resnet50),
            "efficientnet-lite0" => Ok(Arch::EfficientnetLite0),
            other => bail!("unknown architecture {other:?}"),
        }
    }

    /// The input normalization the published weights were trained with.
    pub fn normalization(self) -> Normalization {
        match self {
            Arch::EfficientnetLite0 => Normalization::TfLite,
            _ => Normalization::Imagenet,
        }
    }

    /// The name of the classifier layer in the published checkpoint.
    pub fn head_name(self) -> &'static str {
        match self {
            Arch::EfficientnetLite0 => "_fc",
            _ => "fc",
        }
    }

    pub fn feature_count(self) -> i64 {
        match self {
            Arch::Resnet18 | Arch::Resnet34 => resnet::feature_count(false),
            Arch::Resnet50 => resnet::feature_count(true),
            Arch::EfficientnetLite0 => efficientnet_lite::FEATURES,
        }
    }

    /// Dropout before the classifier in training, as the original model has.
    pub fn head_dropout(self) -> f64 {
        match self {
            Arch::EfficientnetLite0 => 0.2,
            _ => 0.0,
        }
    }

    /// Where `scripts/fetch-models.sh` puts this architecture's weights.
    pub fn default_weights(self, models_dir: &Path) -> PathBuf {
        let file = match self {
            Arch::Resnet18 => "resnet18-f37072fd.pth",
            Arch::Resnet34 => "resnet34-b627a593.pth",
            Arch::Resnet50 => "resnet50-0676ba61.pth",
            Arch::EfficientnetLite0 => "efficientnet-lite0-57934424.pth",
        };
        models_dir.join(file)
    }

    fn build_backbone(self, p: &nn::Path) -> Box<dyn ModuleT> {
        match self {
            Arch::Resnet18 => Box::new(resnet::backbone(p, [2, 2, 2, 2], false)),
            Arch::Resnet34 => Box::new(resnet::backbone(p, [3, 4, 6, 3], false)),
            Arch::Resnet50 => Box::new(resnet::backbone(p, [3, 4, 6, 3], true)),
            Arch::EfficientnetLite0 => Box::new(efficientnet_lite::backbone(p)),
        }
    }
}

/// The same `[N, C, H, W]` tensor, stored as NHWC in memory.
pub fn channels_last(x: &Tensor) -> Tensor {
    x.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
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
        let head = nn::linear(head_vs.root() / arch.head_name(), arch.feature_count(), num_classes, config);
        Self { arch, backbone_vs, head_vs, backbone, head }
    }

    /// Pooled backbone features, `[N, features]`. Inputs are laid out
    /// channels-last where oneDNN's convolutions run faster on a CPU: every
    /// eval pass, and training steps of EfficientNet (whose depthwise
    /// convolutions gain most); ResNet training steps are faster in NCHW
    /// (`cargo run --release --example bench_step -- resnet18 [nchw]`).
    pub fn features(&self, images: &Tensor, train: bool) -> Tensor {
        let channels_last_pays = !train || self.arch == Arch::EfficientnetLite0;
        let images = if channels_last_pays { channels_last(images) } else { images.shallow_clone() };
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

    /// Logits from features (dropout applies only when `train`).
    pub fn head_forward(&self, features: &Tensor, train: bool) -> Tensor {
        features.dropout(self.arch.head_dropout(), train).apply(&self.head)
    }

    pub fn forward(&self, images: &Tensor, train: bool) -> Tensor {
        self.head_forward(&self.features(images, train), train)
    }

    /// Loads published backbone weights by name, ignoring the file's head.
    pub fn load_backbone(&mut self, weights: &Path) -> Result<()> {
        let tensors = checkpoint_io::read_named_tensors(weights)?;
        checkpoint_io::load_into(&mut self.backbone_vs, &tensors, weights)?;
        let known: Vec<String> = self.backbone_vs.variables().into_keys().collect();
        let head_prefix = format!("{}.", self.arch.head_name());
        checkpoint_io::reject_unknown(&tensors, &known, Some(&head_prefix), weights)
    }

    /// Loads a whole model (backbone and head), e.g. our own saved best model.
    pub fn load_all(&mut self, weights: &Path) -> Result<()> {
        let tensors = checkpoint_io::read_named_tensors(weights)?;
        checkpoint_io::load_into(&mut self.backbone_vs, &tensors, weights)?;
        checkpoint_io::load_into(&mut self.head_vs, &tensors, weights)?;
        let known: Vec<String> = self.named_tensors().into_iter().map(|(n, _)| n).collect();
        checkpoint_io::reject_unknown(&tensors, &known, None, weights)
    }

    /// Every tensor of the model, named as in the published checkpoint.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let mut all: Vec<(String, Tensor)> =
            self.backbone_vs.variables().into_iter().chain(self.head_vs.variables()).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }
}
