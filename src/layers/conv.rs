//! 2-D convolution (cross-correlation, as every framework computes it) with
//! stride and zero padding, filters `[F, C, KH, KW]`.
//! Backward, from the derivation:
//! - `dX = Σ_f K_f ⋆full dY_f`: a full correlation of the upstream gradient
//!   with the flipped filters, i.e. a transposed convolution, cropped to X;
//! - `dK = X ⋆valid dY`: a valid correlation of the padded input with the
//!   upstream gradient (dilated by the stride), batch summed;
//! - `db = Σ_{n,h,w} dY`.

use super::Gradients;
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
        let weight = p.var(
            "weight",
            &shape,
            nn::Init::Randn {
                mean: 0.0,
                stdev: weight_scale,
            },
        );
        let bias = p.var("bias", &[filters], nn::Init::Const(0.0));
        Self {
            weight,
            bias,
            stride,
            padding,
        }
    }

    pub fn parameters(&self) -> Vec<Tensor> {
        vec![self.weight.shallow_clone(), self.bias.shallow_clone()]
    }

    pub fn backward(&self, input: &Tensor, upstream: &Tensor) -> Gradients {
        let (s, p) = (self.stride, self.padding);
        let (_, _, h, w) = input.size4().unwrap();
        let (_, _, kh, kw) = self.weight.size4().unwrap();
        // Rows/columns of the padded input that no window reached (when the
        // stride does not divide evenly) get zero gradient: output_padding.
        let spare_h = (h + 2 * p - kh) % s;
        let spare_w = (w + 2 * p - kw) % s;
        let d_input = upstream.conv_transpose2d(
            &self.weight,
            None::<Tensor>,
            [s, s],
            [p, p],
            [spare_h, spare_w],
            1,
            [1, 1],
        );

        let padded = input.constant_pad_nd([p, p, p, p]);
        // Channels become the batch, the batch becomes the summed channel axis.
        let d_weight = padded
            .transpose(0, 1)
            .conv2d(
                &upstream.transpose(0, 1),
                None::<Tensor>,
                [1, 1],
                [0, 0],
                [s, s],
                1,
            )
            .transpose(0, 1)
            .narrow(2, 0, kh)
            .narrow(3, 0, kw)
            .contiguous();
        let d_bias = upstream.sum_dim_intlist([0i64, 2, 3].as_slice(), false, upstream.kind());
        Gradients {
            input: d_input,
            params: vec![d_weight, d_bias],
        }
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Tensor {
        x.conv2d(
            &self.weight,
            Some(&self.bias),
            [self.stride, self.stride],
            [self.padding, self.padding],
            [1, 1],
            1,
        )
    }
}
