//! ResNet-18/34/50 with torchvision's variable names (`conv1`, `bn1`,
//! `layer1.0.conv1`, `layer2.0.downsample.0`, …), so torchvision checkpoints
//! load by name. The backbone ends at global average pooling; the classifier
//! (`fc`) is built by [`super::Classifier`].

use super::winograd::Conv3x3;
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

/// The stem's 3×3, stride-2 max pool, followed by the ReLU that torchvision
/// applies before it (the two commute: max and ReLU are both monotone, and
/// the gradient reaches the same input either way). In NCHW training on the CPU the
/// pool's window indices come from the channels-last kernel, four times
/// faster than the NCHW one, and the differentiable output is a gather by
/// them: the same values, and the same gradient as `max_pool2d`'s.
fn stem_pool_relu(x: &Tensor) -> Tensor {
    let pool = |x: &Tensor| x.max_pool2d_with_indices([3, 3], [2, 2], [1, 1], [1, 1], false);
    if !(x.requires_grad() && x.is_contiguous() && x.device() == tch::Device::Cpu) {
        return pool(x).0.relu_();
    }
    let indices = tch::no_grad(|| pool(&super::channels_last(&x.detach())).1.contiguous());
    let size = indices.size();
    x.flatten(2, -1).gather(2, &indices.flatten(2, -1), false).view(size.as_slice()).relu_()
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

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// Values and input gradient of torchvision's `maxpool(relu(x))`.
    fn reference(x: &Tensor, upstream: &Tensor) -> (Tensor, Tensor) {
        let y = x.relu().max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false);
        let grad = Tensor::run_backward(&[(&y * upstream).sum(Kind::Float)], &[x], false, false);
        (y.detach(), grad[0].shallow_clone())
    }

    #[test]
    fn stem_pool_matches_relu_then_max_pool_in_values_and_gradient() {
        tch::manual_seed(0);
        // Rounded to a coarse grid so that windows hold tied maxima, positive and zero.
        let x = (Tensor::randn([2, 8, 21, 20], (Kind::Float, Device::Cpu)) * 2.0).round().set_requires_grad(true);
        let upstream = Tensor::randn([2, 8, 11, 10], (Kind::Float, Device::Cpu));
        let y = stem_pool_relu(&x);
        let grad = Tensor::run_backward(&[(&y * &upstream).sum(Kind::Float)], &[&x], false, false);
        let (expected_y, expected_grad) = reference(&x, &upstream);
        assert!(y.detach().equal(&expected_y));
        assert!(grad[0].equal(&expected_grad));
    }
}
