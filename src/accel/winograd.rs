//! Weight gradients of 3×3, stride-1, padding-1 convolutions by Winograd's
//! minimal filtering F(2×2, 3×3) (Lavin & Gray, 2016), for training on the CPU.
//!
//! On AVX2 CPUs oneDNN's backward-weights kernel is its slowest, and the
//! ResNets' 3×3 stride-1 convolutions are most of a training step. Each 2×2
//! block of outputs (a tile) sees a 4×4 window of the padded input; in the
//! transformed domain the weight gradient is 16 independent GEMMs over the
//! tiles, with 2.25× fewer multiplications than the direct sum:
//!
//! ```text
//! V  = Bᵀ d B           each input window d (4×4)              [C, 16, tiles]
//! dM = A dY Aᵀ          each output-gradient tile dY (2×2)     [K, 16, tiles]
//! dU = Σ_tiles dM Vᵀ    16 GEMMs (MKL)                         [16, K, C]
//! dW = Gᵀ dU G                                                 [K, C, 3, 3]
//! ```
//!
//! [`super::conv3x3`] decides when a convolution's weight gradient comes
//! from here. The transforms run on libtorch's own OpenMP threads
//! ([`super::omp`]): on a second thread pool they competed with libtorch's
//! spinning threads. Speed and accuracy against oneDNN:
//! `examples/bench_winograd.rs` and the README's *Speed* section.

use super::omp;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Mutex;
use tch::{Device, Kind, Tensor};

/// Output tile size M and input window size A = M + 2 of F(2×2, 3×3).
const M: usize = 2;
const A: usize = M + 2;

/// Bᵀ, the input-window transform (constants, so that the compiler unrolls
/// the transforms below and drops their zero terms).
const BT: [[f32; A]; A] = [[1., 0., -1., 0.], [0., 1., 1., 0.], [0., -1., 1., 0.], [0., 1., 0., -1.]];
/// A (A×M), whose transpose is the output transform.
const AT_T: [[f32; M]; A] = [[1., 0.], [1., 1.], [1., -1.], [0., -1.]];
/// G, the filter transform.
const G: [[f32; 3]; A] = [[1., 0., 0.], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0., 0., 1.]];

/// Gᵀ ⊗ Gᵀ as a `[9, A²]` matrix: `vec(Gᵀ dU G)` from `vec(dU)` (row-major).
fn filter_transform_transposed() -> Tensor {
    let g = Tensor::from_slice(G.as_flattened()).view([A as i64, 3]);
    g.kron(&g).tr()
}

/// The gradient of `conv2d(input, weight, stride 1, padding 1)` with respect
/// to `weight`, given the gradient of its output: `[K, C, 3, 3]`.
/// `input` is `[N, C, H, W]` and `grad_output` `[N, K, H, W]`, float, on the CPU.
pub fn weight_gradient(input: &Tensor, grad_output: &Tensor) -> Tensor {
    let (n, c, h, w) = input.size4().expect("weight_gradient: input must be [N, C, H, W]");
    let k = grad_output.size()[1];
    assert_eq!(grad_output.size(), [n, k, h, w], "weight_gradient: grad_output must be [N, K, H, W] like input");
    let (n, h, w) = (n as usize, h as usize, w as usize);
    let grid = TileGrid { n, h, w, th: h.div_ceil(M), tw: w.div_ceil(M) };
    let windows = transform_patches::<A, InputWindows>(&input.to_kind(Kind::Float).contiguous(), &grid); // [C, A², T]
    let tiles = transform_patches::<M, OutputGradientTiles>(&grad_output.to_kind(Kind::Float).contiguous(), &grid); // [K, A², T]
    let du = scratch(Scratch::Product, [(A * A) as i64, k, c]);
    let _ = tiles.permute([1, 0, 2]).bmm_out(&du, &windows.permute([1, 2, 0])); // [A², K, C]
    let dw = filter_transform_transposed().matmul(&du.view([(A * A) as i64, k * c]));
    dw.view([3, 3, k, c]).permute([2, 3, 0, 1]).contiguous()
}

/// What a scratch tensor holds: the transformed inputs, the transformed
/// output gradients, or their 16 products.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Scratch {
    Windows,
    Tiles,
    Product,
}

thread_local! {
    static SCRATCH: RefCell<HashMap<(Scratch, [i64; 3]), Tensor>> = RefCell::new(HashMap::new());
}

/// This thread's scratch tensor for `role` and `shape` (one per shape, kept
/// for the thread's life), reused from call to call: the transformed tensors are several times the activations' size, and
/// fresh ones come from `mmap`, whose page faults cost more than the transforms.
fn scratch(role: Scratch, shape: [i64; 3]) -> Tensor {
    SCRATCH.with(|cache| {
        let mut cache = cache.borrow_mut();
        let tensor = cache.entry((role, shape)).or_insert_with(|| Tensor::empty(shape, (Kind::Float, Device::Cpu)));
        tensor.shallow_clone()
    })
}

/// How outputs are cut into M×M tiles: `th × tw` tiles per image.
struct TileGrid {
    n: usize,
    h: usize,
    w: usize,
    th: usize,
    tw: usize,
}

impl TileGrid {
    fn tiles(&self) -> usize {
        self.n * self.th * self.tw
    }
}

/// `mixed[i] = Σ_r matrix[i][r] · rows[r]`, over whole rows of `width`.
#[inline(always)]
fn mix_rows<const OUT: usize, const IN: usize>(
    matrix: &[[f32; IN]; OUT],
    rows: &[f32],
    mixed: &mut [f32],
    width: usize,
) {
    let rows: [&[f32]; IN] = std::array::from_fn(|r| &rows[r * width..][..width]);
    for i in 0..OUT {
        let out = &mut mixed[i * width..][..width];
        for (col, o) in out.iter_mut().enumerate() {
            let mut acc = 0.0;
            for r in 0..IN {
                if matrix[i][r] != 0.0 {
                    acc += matrix[i][r] * rows[r][col];
                }
            }
            *o = acc;
        }
    }
}

/// For one mixed row and one tile row: window `tj` is `mixed[M·tj .. M·tj + IN]`,
/// and `dst[first + j][t0 + tj] = Σ_s matrix[j][s] · window[s]`.
#[inline(always)]
fn mix_columns<const OUT: usize, const IN: usize>(
    matrix: &[[f32; IN]; OUT],
    mixed: &[f32],
    dst: &mut [f32],
    (first, tiles, t0, tw): (usize, usize, usize, usize),
) {
    let mixed = &mixed[..M * (tw - 1) + IN];
    for j in 0..OUT {
        let out = &mut dst[(first + j) * tiles + t0..][..tw];
        for (tj, o) in out.iter_mut().enumerate() {
            let mut acc = 0.0;
            for s in 0..IN {
                if matrix[j][s] != 0.0 {
                    acc += matrix[j][s] * mixed[M * tj + s];
                }
            }
            *o = acc;
        }
    }
}

/// One of the two per-tile transforms: `P x Pᵀ` for the IN×IN patch `x` of
/// each tile, where the patch of tile `(ti, tj)` has rows and columns from
/// `M·t − PAD` on (zero outside the image). Constants, so that the compiler
/// unrolls [`mix_rows`] and [`mix_columns`] and drops their zero terms.
trait PatchTransform<const IN: usize> {
    /// `P`, A×IN.
    const MATRIX: [[f32; IN]; A];
    const PAD: usize;
    const SCRATCH: Scratch;
}

/// `Bᵀ d B` for the A×A input window `d` of every tile.
struct InputWindows;

impl PatchTransform<A> for InputWindows {
    const MATRIX: [[f32; A]; A] = BT;
    const PAD: usize = 1;
    const SCRATCH: Scratch = Scratch::Windows;
}

/// `A g Aᵀ` for every M×M output-gradient tile `g`.
struct OutputGradientTiles;

impl PatchTransform<M> for OutputGradientTiles {
    const MATRIX: [[f32; M]; A] = AT_T;
    const PAD: usize = 0;
    const SCRATCH: Scratch = Scratch::Tiles;
}

/// The transform `T` of every tile's patch, per channel of `src`
/// (`[N, channels, H, W]`): `[channels, A², tiles]`.
fn transform_patches<const IN: usize, T: PatchTransform<IN>>(src: &Tensor, grid: &TileGrid) -> Tensor {
    let channels = src.size()[1] as usize;
    let tiles = grid.tiles();
    let mut out = scratch(T::SCRATCH, [channels as i64, (A * A) as i64, tiles as i64]);
    let src = f32_slice(src);
    let width = M * grid.tw + 2 * T::PAD; // columns −PAD .. M·tw + PAD
    let planes: Vec<Mutex<&mut [f32]>> = f32_slice_mut(&mut out).chunks_mut(A * A * tiles).map(Mutex::new).collect();
    omp::for_each_index(channels, |channel| {
        let mut dst = planes[channel].lock().expect("one thread per channel");
        let dst: &mut [f32] = &mut dst;
        let mut rows = vec![0f32; IN * width];
        let mut mixed = vec![0f32; A * width];
        for ni in 0..grid.n {
            let plane = &src[(ni * channels + channel) * grid.h * grid.w..][..grid.h * grid.w];
            for ti in 0..grid.th {
                for (i, row) in rows.chunks_exact_mut(width).enumerate() {
                    let r = (M * ti + i).wrapping_sub(T::PAD);
                    row.fill(0.0);
                    if r < grid.h {
                        row[T::PAD..T::PAD + grid.w].copy_from_slice(&plane[r * grid.w..][..grid.w]);
                    }
                }
                mix_rows(&T::MATRIX, &rows, &mut mixed, width);
                let t0 = (ni * grid.th + ti) * grid.tw;
                for i in 0..A {
                    mix_columns(&T::MATRIX, &mixed[i * width..][..width], dst, (i * A, tiles, t0, grid.tw));
                }
            }
        }
    });
    drop(planes);
    out
}

fn f32_slice(t: &Tensor) -> &[f32] {
    assert!(t.kind() == Kind::Float && t.device() == Device::Cpu && t.is_contiguous());
    if t.numel() == 0 {
        // An empty tensor's data pointer may be null, which no slice may hold.
        return &[];
    }
    // SAFETY: a contiguous CPU float tensor holds numel() f32 values at
    // data_ptr(), alive and unaliased by writers for as long as `t` is borrowed.
    unsafe { std::slice::from_raw_parts(t.data_ptr() as *const f32, t.numel()) }
}

fn f32_slice_mut(t: &mut Tensor) -> &mut [f32] {
    assert!(t.kind() == Kind::Float && t.device() == Device::Cpu && t.is_contiguous());
    if t.numel() == 0 {
        return &mut [];
    }
    // SAFETY: as above; `t` is a scratch tensor of this thread, and no other
    // tensor on it is read while it is mutably borrowed.
    unsafe { std::slice::from_raw_parts_mut(t.data_ptr() as *mut f32, t.numel()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn autograd_weight_gradient(x: &Tensor, w: &Tensor, upstream: &Tensor) -> Tensor {
        let w = w.detach().set_requires_grad(true);
        let y = x.conv2d(&w, None::<Tensor>, [1, 1], [1, 1], [1, 1], 1);
        Tensor::run_backward(&[(&y * upstream).sum(Kind::Float)], &[&w], false, false)[0].shallow_clone()
    }

    fn max_relative_error(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).abs().max().double_value(&[]) / b.abs().max().double_value(&[])
    }

    #[test]
    fn weight_gradient_matches_autograd_on_even_and_odd_sizes() {
        tch::manual_seed(1);
        for (n, c, k, h, w) in [(2, 3, 5, 8, 8), (1, 4, 2, 7, 7), (3, 2, 3, 5, 6), (2, 6, 4, 1, 2)] {
            let options = (Kind::Float, Device::Cpu);
            let x = Tensor::randn([n, c, h, w], options);
            let weight = Tensor::randn([k, c, 3, 3], options);
            let upstream = Tensor::randn([n, k, h, w], options);
            let expected = autograd_weight_gradient(&x, &weight, &upstream);
            let ours = weight_gradient(&x, &upstream);
            assert_eq!(ours.size(), [k, c, 3, 3]);
            let error = max_relative_error(&ours, &expected);
            assert!(error < 1e-5, "shape {:?}: relative error {error}", (n, c, k, h, w));
        }
    }

    /// An empty tensor's data pointer may be null: its slices are empty, never made from it.
    #[test]
    fn empty_tensors_are_empty_slices() {
        let mut empty = Tensor::zeros([0, 3], (Kind::Float, Device::Cpu));
        assert!(f32_slice(&empty).is_empty());
        assert!(f32_slice_mut(&mut empty).is_empty());
        let values = Tensor::from_slice(&[1f32, 2.0]);
        assert_eq!(f32_slice(&values), [1.0, 2.0]);
    }
}
