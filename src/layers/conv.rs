//! 2-D convolution (cross-correlation, as every framework computes it) with
//! stride and zero padding, filters `[F, C, KH, KW]`.
//! Backward, from the derivation:
//! - `dX = Σ_f K_f ⋆full dY_f`: a full correlation of the upstream gradient
//!   with the flipped filters, i.e. a transposed convolution, cropped to X;
//! - `dK = X ⋆valid dY`: a valid correlation of the padded input with the
//!   upstream gradient (its taps spaced by the stride), batch summed;
//! - `db = Σ_{n,h,w} dY`.

use super::LayerGradients;
use tch::nn::{self, Module};
use tch::Tensor;

#[derive(Debug)]
pub struct Conv2d {
    pub weight: Tensor,
    pub bias: Tensor,
    pub stride: i64,
    pub padding: i64,
}

impl Conv2d {
    pub fn new(
        p: nn::Path,
        channels: i64,
        filters: i64,
        kernel: [i64; 2],
        stride: i64,
        padding: i64,
        weight_scale: f64,
    ) -> Self {
        let shape = [filters, channels, kernel[0], kernel[1]];
        let weight = p.var("weight", &shape, nn::Init::Randn { mean: 0.0, stdev: weight_scale });
        let bias = p.var("bias", &[filters], nn::Init::Const(0.0));
        Self { weight, bias, stride, padding }
    }

    pub fn parameters(&self) -> Vec<Tensor> {
        vec![self.weight.shallow_clone(), self.bias.shallow_clone()]
    }

    pub fn backward(&self, input: &Tensor, upstream: &Tensor) -> LayerGradients {
        let (s, p) = (self.stride, self.padding);
        let (_, _, h, w) = input.size4().unwrap();
        let (_, _, kh, kw) = self.weight.size4().unwrap();
        // Rows/columns of the padded input that no window reached (when the
        // stride does not divide evenly) get zero gradient: output_padding.
        let spare_h = (h + 2 * p - kh) % s;
        let spare_w = (w + 2 * p - kw) % s;
        let d_input =
            upstream.conv_transpose2d(&self.weight, None::<Tensor>, [s, s], [p, p], [spare_h, spare_w], 1, [1, 1]);
        LayerGradients { input: d_input, params: self.parameter_gradients(input, upstream) }
    }

    /// `[dK, db]` alone, for a first layer whose input needs no gradient.
    /// `X ⋆valid dY` is computed as a matrix product: every window of the
    /// padded input (im2col) against the upstream gradient at that window.
    pub fn parameter_gradients(&self, input: &Tensor, upstream: &Tensor) -> Vec<Tensor> {
        let (s, p) = (self.stride, self.padding);
        let (f, c, kh, kw) = self.weight.size4().unwrap();
        let n = input.size()[0];
        let windows = input.im2col([kh, kw], [1, 1], [p, p], [s, s]); // [N, C·KH·KW, L]
        let d_out = upstream.reshape([n, f, -1]); // [N, F, L]
        let d_weight = d_out
            .matmul(&windows.transpose(1, 2))
            .sum_dim_intlist([0i64].as_slice(), false, upstream.kind())
            .view([f, c, kh, kw]);
        let d_bias = upstream.sum_dim_intlist([0i64, 2, 3].as_slice(), false, upstream.kind());
        vec![d_weight, d_bias]
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Tensor {
        x.conv2d(&self.weight, Some(&self.bias), [self.stride, self.stride], [self.padding, self.padding], [1, 1], 1)
    }
}
