//! ResNet's stem max pool, by the fastest kernel for the pass (on the CPU,
//! the channels-last one, whatever layout the activations are in).

use tch::Tensor;

/// The stem's 3×3, stride-2 max pool, followed by the ReLU that torchvision
/// applies before it (the two commute: max and ReLU are both monotone, and
/// the gradient reaches the same input either way). In NCHW training on the CPU the
/// pool's window indices come from the channels-last kernel, four times
/// faster than the NCHW one, and the differentiable output is a gather by
/// them: the same values, and the same gradient as `max_pool2d`'s.
pub fn stem_pool_relu(x: &Tensor) -> Tensor {
    let pool = |x: &Tensor| x.max_pool2d_with_indices([3, 3], [2, 2], [1, 1], [1, 1], false);
    if !(x.requires_grad() && x.is_contiguous() && x.device() == tch::Device::Cpu) {
        return pool(x).0.relu_();
    }
    let indices = tch::no_grad(|| pool(&super::channels_last(&x.detach())).1.contiguous());
    let size = indices.size();
    x.flatten(2, -1).gather(2, &indices.flatten(2, -1), false).view(size.as_slice()).relu_()
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
