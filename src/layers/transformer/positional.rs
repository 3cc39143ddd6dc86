//! Sinusoidal positional encoding, added to `[N, T, D]` word vectors:
//! `PE[t, 2i] = sin(t / 10000^(2i/D))`, `PE[t, 2i+1] = cos(t / 10000^(2i/D))`.
//! No parameters; the backward pass is the identity.

use tch::{Kind, Tensor};

#[derive(Debug, Default, Clone, Copy)]
pub struct PositionalEncoding;

impl PositionalEncoding {
    /// The table `[steps, width]` in `like`'s kind and device.
    pub fn table(steps: i64, width: i64, like: &Tensor) -> Tensor {
        let options = (Kind::Double, like.device());
        let positions = Tensor::arange(steps, options).unsqueeze(1);
        let columns = Tensor::arange(width, options);
        // Columns 2i and 2i+1 share the frequency 10000^(−2i/D).
        let pair_start = columns.floor_divide_scalar(2) * 2.0;
        let frequencies = (pair_start * (-(10000f64.ln()) / width as f64)).exp();
        let angles = positions * frequencies.unsqueeze(0);
        let even = columns.remainder(2).eq(0).unsqueeze(0);
        angles.sin().where_self(&even, &angles.cos()).to_kind(like.kind())
    }

    /// `x + PE[:T]` for `x` `[N, T, D]`.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let size = x.size();
        x + Self::table(size[1], size[2], x)
    }

    /// `dx = dy`.
    pub fn backward(&self, upstream: &Tensor) -> Tensor {
        upstream.shallow_clone()
    }
}
