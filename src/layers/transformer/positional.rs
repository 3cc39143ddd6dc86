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

/// Two-dimensional sinusoidal encoding of the locations of an h×w grid
/// (row-major, as the image grids are stored), added to the projected
/// memory `[N, L, D]` so that cross-attention knows where each location
/// is (DETR's): the first ⌊D/2⌋ channels encode the row as
/// [`PositionalEncoding`] encodes a step, the others the column. A grid of
/// L locations is square when L is a square number (7×7, 14×14), else one
/// row. No parameters; the backward pass is the identity.
#[derive(Debug, Default, Clone, Copy)]
pub struct GridPositionalEncoding;

impl GridPositionalEncoding {
    /// The rows and columns of a grid of `locations`.
    pub fn shape(locations: i64) -> (i64, i64) {
        let side = (locations as f64).sqrt().round() as i64;
        if side * side == locations {
            (side, side)
        } else {
            (1, locations)
        }
    }

    /// The table `[L, width]` in `like`'s kind and device.
    pub fn table(locations: i64, width: i64, like: &Tensor) -> Tensor {
        let (rows, columns) = Self::shape(locations);
        let row_width = width / 2;
        let by_row = PositionalEncoding::table(rows, row_width, like);
        let by_column = PositionalEncoding::table(columns, width - row_width, like);
        let by_row = by_row.unsqueeze(1).expand([rows, columns, row_width], false);
        let by_column = by_column.unsqueeze(0).expand([rows, columns, width - row_width], false);
        Tensor::cat(&[by_row, by_column], 2).reshape([locations, width])
    }

    /// `m + PE` for a memory `m` `[N, L, D]`.
    pub fn forward(&self, memory: &Tensor) -> Tensor {
        let size = memory.size();
        memory + Self::table(size[1], size[2], memory)
    }

    /// `dm = dy`.
    pub fn backward(&self, upstream: &Tensor) -> Tensor {
        upstream.shallow_clone()
    }
}
