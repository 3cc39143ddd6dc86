//! ResNet-18/34/50 with torchvision's variable names (`conv1`, `bn1`,
//! `layer1.0.conv1`, `layer2.0.downsample.0`, …), so torchvision checkpoints
//! load by name. The backbone ends at global average pooling; the classifier
//! (`fc`) is built by [`super::Classifier`].

use crate::accel::conv3x3::Conv3x3;
use crate::accel::pool::stem_pool_relu;
use tch::nn::{self, ModuleT};
use tch::Tensor;

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

fn basic_block(p: nn::Path, c_in: i64, c_out: i64, stride: i64) -> impl ModuleT {
    let conv1 = Conv3x3::new(&p / "conv1", c_in, c_out, stride);
    let bn1 = bn(&p / "bn1", c_out);
    let conv2 = Conv3x3::new(&p / "conv2", c_out, c_out, 1);
    let bn2 = bn(&p / "bn2", c_out);
    let shortcut = downsample(&p / "downsample", c_in, c_out, stride);
    nn::func_t(move |x, train| {
        let y = x.apply(&conv1).apply_t(&bn1, train).relu_().apply(&conv2).apply_t(&bn2, train);
        add_shortcut_relu(y, &x.apply_t(&shortcut, train))
    })
}

fn bottleneck_block(p: nn::Path, c_in: i64, c_mid: i64, stride: i64) -> impl ModuleT {
    let c_out = c_mid * 4;
    let conv1 = conv(&p / "conv1", c_in, c_mid, 1, 1, 0);
    let bn1 = bn(&p / "bn1", c_mid);
    let conv2 = Conv3x3::new(&p / "conv2", c_mid, c_mid, stride);
    let bn2 = bn(&p / "bn2", c_mid);
    let conv3 = conv(&p / "conv3", c_mid, c_out, 1, 1, 0);
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

/// The convolutional trunk of a ResNet: `[N, 3, H, W]` → `[N, features]`.
/// `blocks` are the four stage depths; `bottleneck` picks ResNet-50's block.
pub fn backbone(p: &nn::Path, blocks: [i64; 4], bottleneck: bool) -> nn::SequentialT {
    let expansion = if bottleneck { 4 } else { 1 };
    let conv1 = conv(p / "conv1", 3, 64, 7, 2, 3);
    let bn1 = bn(p / "bn1", 64);
    let mut net = nn::seq_t().add(conv1).add(bn1).add_fn(stem_pool_relu);
    let mut c_in = 64;
    for (stage, &depth) in blocks.iter().enumerate() {
        let c_mid = 64 << stage;
        let stage_path = p / format!("layer{}", stage + 1);
        for i in 0..depth {
            let stride = if stage > 0 && i == 0 { 2 } else { 1 };
            let block_path = &stage_path / i;
            net = if bottleneck {
                net.add(bottleneck_block(block_path, c_in, c_mid, stride))
            } else {
                net.add(basic_block(block_path, c_in, c_mid, stride))
            };
            c_in = c_mid * expansion;
        }
    }
    net.add_fn(|x| x.adaptive_avg_pool2d([1, 1]).flatten(1, -1))
}

/// Number of features the backbone emits.
pub fn feature_count(bottleneck: bool) -> i64 {
    if bottleneck {
        2048
    } else {
        512
    }
}
