//! torchvision's Swin Transformer v1, as its `swin_t` builds it (patch 4,
//! embedding 96, depths 2-2-6-2, heads 3-6-12-24, window 7, MLP ratio 4,
//! stochastic depth 0.2; dropout and attention dropout 0), with its variable
//! names (`features.0.0` the patch embedding, `features.0.2` its LayerNorm,
//! `features.{1,3,5,7}.B.{norm1,attn.qkv,attn.proj,attn.relative_position_bias_table,norm2,mlp.0,mlp.3}`,
//! `features.{2,4,6}.{norm,reduction}` the PatchMerging layers, `norm`), so
//! torchvision checkpoints load by name. Each attention keeps
//! `relative_position_index` as torchvision's buffer does: a constant
//! (see [`relative_position_index`]) that loads with the checkpoint and is
//! not trained. As torchvision, feature maps are padded to a multiple of the
//! window and shifted only where larger than it, so any input of 32 pixels
//! or more works. In training, each block's two residual branches are
//! dropped per sample (`StochasticDepth(p, "row")`), p growing linearly from
//! 0 at the first block to 0.2 at the last. The backbone ends at the final
//! LayerNorm and global average pooling; the classifier (`head`) is built by
//! [`super::Classifier`].

use super::onnx::{attend, attention_projections, concat, gelu, reshape, slice, transpose, ConvShape, Weights};
use crate::persist::onnx::Graph;
use tch::nn::{self, Module, ModuleT};
use tch::{Kind, Tensor};

pub const FEATURES: i64 = 768;
const PATCH: i64 = 4;
const EMBED: i64 = 96;
const DEPTHS: [usize; 4] = [2, 2, 6, 2];
const HEADS: [i64; 4] = [3, 6, 12, 24];
const WINDOW: i64 = 7;
const STOCHASTIC_DEPTH: f64 = 0.2;

/// Number of Swin Transformer blocks.
pub fn block_count() -> usize {
    DEPTHS.iter().sum()
}

/// The block (counted from 0 over all stages) a parameter belongs to
/// (a PatchMerging layer goes with the block after it); `None` for the
/// patch embedding and the final norm.
pub fn block_of(name: &str) -> Option<usize> {
    super::staged_features_block(&DEPTHS, name)
}

/// For every pair of positions in a `window`² window (row-major), the row of
/// the relative position bias table that their offset reads: torchvision's
/// `relative_position_index`, `[window⁴]`, int64.
pub fn relative_position_index(window: i64) -> Tensor {
    let span = 2 * window - 1;
    let positions: Vec<(i64, i64)> = (0..window).flat_map(|h| (0..window).map(move |w| (h, w))).collect();
    let index: Vec<i64> = positions
        .iter()
        .flat_map(|&(h1, w1)| {
            positions.iter().map(move |&(h2, w2)| (h1 - h2 + window - 1) * span + (w1 - w2 + window - 1))
        })
        .collect();
    Tensor::from_slice(&index)
}

/// torchvision's `Linear` init in Swin: weights N(0, 0.02) (its truncation
/// at ±2 is 100 σ away), biases 0.
fn linear(p: nn::Path, c_in: i64, c_out: i64, bias: bool) -> nn::Linear {
    let config = nn::LinearConfig {
        ws_init: nn::Init::Randn { mean: 0.0, stdev: 0.02 },
        bs_init: Some(nn::Init::Const(0.0)),
        bias,
    };
    nn::linear(p, c_in, c_out, config)
}

fn layer_norm(p: nn::Path, c: i64) -> nn::LayerNorm {
    nn::layer_norm(p, vec![c], nn::LayerNormConfig { eps: 1e-5, ..Default::default() })
}

/// torchvision's `stochastic_depth(x, p, "row", train)`: each sample's
/// branch zeroed with probability `p`, the others scaled by 1/(1-p). The
/// mask is drawn in fp32 whatever the activations' dtype (one
/// `bernoulli_(1 - p)` on `[N, 1, 1, 1]`, as torchvision draws it in fp32), so
/// a seed drops the same samples in any precision.
fn stochastic_depth(x: &Tensor, p: f64, train: bool) -> Tensor {
    if !train || p == 0.0 {
        return x.shallow_clone();
    }
    let survival = 1.0 - p;
    let mut noise = Tensor::empty([x.size()[0], 1, 1, 1], (Kind::Float, x.device()));
    let _ = noise.bernoulli_float_(survival);
    if survival > 0.0 {
        let _ = noise.g_div_scalar_(survival);
    }
    x * noise.to_kind(x.kind())
}

/// Labels of the regions that a cyclic shift by `shift` brings together
/// along an axis of `len` (torchvision's slices `[0:-window]`,
/// `[-window:-shift]`, `[-shift:]`, with Python's meaning of `-0`).
fn region_labels(len: i64, shift: i64) -> Vec<i64> {
    let at = |bound: i64| if bound < 0 { len + bound } else { bound };
    let slices = [(0, at(-WINDOW)), (at(-WINDOW), at(-shift)), (at(-shift), len)];
    (0..len).map(|i| slices.iter().rposition(|&(start, end)| start <= i && i < end).unwrap_or(0) as i64).collect()
}

/// torchvision's attention mask for a shifted `[height, width]` map:
/// `[windows, window², window²]`, −100 between positions of different
/// regions, 0 within one.
fn attention_mask(height: i64, width: i64, shift: (i64, i64), like: &Tensor) -> Tensor {
    let (rows, columns) = (region_labels(height, shift.0), region_labels(width, shift.1));
    let mut windows = Vec::new();
    for wh in 0..height / WINDOW {
        for ww in 0..width / WINDOW {
            let labels: Vec<i64> = (0..WINDOW * WINDOW)
                .map(|i| rows[(wh * WINDOW + i / WINDOW) as usize] * 3 + columns[(ww * WINDOW + i % WINDOW) as usize])
                .collect();
            windows
                .extend(labels.iter().flat_map(|a| labels.iter().map(move |b| if a == b { 0.0f32 } else { -100.0 })));
        }
    }
    let n = WINDOW * WINDOW;
    Tensor::from_slice(&windows).view([-1, n, n]).to_device(like.device()).to_kind(like.kind())
}

/// The bias `table` (`[(2·window − 1)², heads]`) gives each pair of
/// positions of a window through `index`: `[1, heads, window², window²]`.
fn relative_position_bias(table: &Tensor, index: &Tensor) -> Tensor {
    let n = WINDOW * WINDOW;
    let bias = table.index(&[Some(index)]);
    bias.view([n, n, -1]).permute([2, 0, 1]).contiguous().unsqueeze(0)
}

/// torchvision's `ShiftedWindowAttention`: multi-head self-attention within
/// windows, with a learned bias per relative position; shifted windows
/// (every second block) attend only within the regions the shift joins.
#[derive(Debug)]
struct WindowAttention {
    qkv: nn::Linear,
    proj: nn::Linear,
    relative_position_bias_table: Tensor,
    relative_position_index: Tensor,
    heads: i64,
    shift: i64,
}

impl WindowAttention {
    fn new(p: nn::Path, dim: i64, heads: i64, shift: i64) -> Self {
        let span = 2 * WINDOW - 1;
        let table_init = nn::Init::Randn { mean: 0.0, stdev: 0.02 };
        let relative_position_bias_table = p.var("relative_position_bias_table", &[span * span, heads], table_init);
        let index = relative_position_index(WINDOW).to_device(p.device());
        let relative_position_index = p.add("relative_position_index", index, false);
        Self {
            qkv: linear(&p / "qkv", dim, 3 * dim, true),
            proj: linear(&p / "proj", dim, dim, true),
            relative_position_bias_table,
            relative_position_index,
            heads,
            shift,
        }
    }

    /// `[1, heads, window², window²]`.
    fn relative_position_bias(&self) -> Tensor {
        relative_position_bias(&self.relative_position_bias_table, &self.relative_position_index)
    }

    /// `[B, H, W, C]` → `[B, H, W, C]`, as torchvision's `shifted_window_attention`.
    fn forward(&self, input: &Tensor) -> Tensor {
        let (b, h, w, c) = input.size4().unwrap();
        let x = input.constant_pad_nd([0, 0, 0, (WINDOW - w % WINDOW) % WINDOW, 0, (WINDOW - h % WINDOW) % WINDOW]);
        let (_, ph, pw, _) = x.size4().unwrap();
        // No shift along an axis the window covers.
        let shift = (if WINDOW >= ph { 0 } else { self.shift }, if WINDOW >= pw { 0 } else { self.shift });
        let shifted = shift.0 + shift.1 > 0;
        let x = if shifted { x.roll([-shift.0, -shift.1], [1, 2]) } else { x };
        let (nh, nw, n) = (ph / WINDOW, pw / WINDOW, WINDOW * WINDOW);
        let windows = nh * nw;
        let x = x.view([b, nh, WINDOW, nw, WINDOW, c]).permute([0, 1, 3, 2, 4, 5]).reshape([b * windows, n, c]);

        let head_dim = c / self.heads;
        let qkv = x.apply(&self.qkv).reshape([b * windows, n, 3, self.heads, head_dim]).permute([2, 0, 3, 1, 4]);
        let (q, k, v) = (qkv.get(0), qkv.get(1), qkv.get(2));
        let q = q * (head_dim as f64).powf(-0.5);
        let mut attn = q.matmul(&k.transpose(-2, -1)) + self.relative_position_bias();
        if shifted {
            let mask = attention_mask(ph, pw, shift, &x);
            attn = (attn.view([b, windows, self.heads, n, n]) + mask.unsqueeze(1).unsqueeze(0))
                .view([-1, self.heads, n, n]);
        }
        let attn = attn.softmax(-1, None::<Kind>);
        let x = attn.matmul(&v).transpose(1, 2).reshape([b * windows, n, c]).apply(&self.proj);

        let x = x.view([b, nh, nw, WINDOW, WINDOW, c]).permute([0, 1, 3, 2, 4, 5]).reshape([b, ph, pw, c]);
        let x = if shifted { x.roll([shift.0, shift.1], [1, 2]) } else { x };
        x.slice(1, 0, h, 1).slice(2, 0, w, 1).contiguous()
    }
}

/// torchvision's `SwinTransformerBlock` (v1: norm before attention and MLP).
#[derive(Debug)]
struct Block {
    norm1: nn::LayerNorm,
    attn: WindowAttention,
    norm2: nn::LayerNorm,
    fc1: nn::Linear,
    fc2: nn::Linear,
    drop_probability: f64,
}

impl Block {
    fn new(p: nn::Path, dim: i64, heads: i64, shift: i64, drop_probability: f64) -> Self {
        Self {
            norm1: layer_norm(&p / "norm1", dim),
            attn: WindowAttention::new(&p / "attn", dim, heads, shift),
            norm2: layer_norm(&p / "norm2", dim),
            fc1: linear(&p / "mlp" / 0, dim, 4 * dim, true),
            fc2: linear(&p / "mlp" / 3, 4 * dim, dim, true),
            drop_probability,
        }
    }
}

impl ModuleT for Block {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let attended = self.attn.forward(&x.apply(&self.norm1));
        let x = x + stochastic_depth(&attended, self.drop_probability, train);
        let mlp = x.apply(&self.norm2).apply(&self.fc1).gelu("none").apply(&self.fc2);
        &x + stochastic_depth(&mlp, self.drop_probability, train)
    }
}

/// torchvision's `PatchMerging`: each 2×2 neighbourhood (odd sizes padded)
/// concatenated, normalised, and projected to twice the channels.
#[derive(Debug)]
struct PatchMerging {
    norm: nn::LayerNorm,
    reduction: nn::Linear,
}

impl Module for PatchMerging {
    fn forward(&self, x: &Tensor) -> Tensor {
        let (_, h, w, _) = x.size4().unwrap();
        let x = x.constant_pad_nd([0, 0, 0, w % 2, 0, h % 2]);
        let quarter = |row: i64, column: i64| x.slice(1, row, None::<i64>, 2).slice(2, column, None::<i64>, 2);
        Tensor::cat(&[quarter(0, 0), quarter(1, 0), quarter(0, 1), quarter(1, 1)], -1)
            .apply(&self.norm)
            .apply(&self.reduction)
    }
}

/// Swin-T's trunk: `[N, 3, H, W]` → `[N, 768]`.
pub fn backbone(p: &nn::Path) -> nn::SequentialT {
    let features = p / "features";
    let embed_config = nn::ConvConfig { stride: PATCH, ..Default::default() };
    let embed = nn::conv2d(&features / 0 / 0, 3, EMBED, PATCH, embed_config);
    let embed_norm = layer_norm(&features / 0 / 2, EMBED);
    let mut net = nn::seq_t().add(embed).add_fn(|x| x.permute([0, 2, 3, 1])).add(embed_norm);
    let last = (block_count() - 1) as f64;
    let mut index = 0;
    for (stage, (&depth, &heads)) in DEPTHS.iter().zip(&HEADS).enumerate() {
        let dim = EMBED << stage;
        let layer = 2 * stage as i64 + 1;
        if stage > 0 {
            let merging = &features / (layer - 1);
            let (norm, reduction) =
                (layer_norm(&merging / "norm", 2 * dim), linear(&merging / "reduction", 2 * dim, dim, false));
            net = net.add(PatchMerging { norm, reduction });
        }
        for i in 0..depth {
            let shift = if i.is_multiple_of(2) { 0 } else { WINDOW / 2 };
            let drop_probability = STOCHASTIC_DEPTH * index as f64 / last;
            net = net.add(Block::new(&features / layer / i, dim, heads, shift, drop_probability));
            index += 1;
        }
    }
    let norm = layer_norm(p / "norm", FEATURES);
    net.add(norm).add_fn(|x| x.permute([0, 3, 1, 2]).adaptive_avg_pool2d([1, 1]).flatten(1, -1))
}

/// The side a `side`² map is padded to for whole windows.
fn padded(side: i64) -> i64 {
    side + (WINDOW - side % WINDOW) % WINDOW
}

/// `Pad` of a `[B, H, W, C]` value by `extra` rows and columns after its
/// last (zeros; nothing when `extra` is 0).
fn emit_pad(graph: &mut Graph, x: &str, extra: i64) -> String {
    if extra == 0 {
        return x.to_owned();
    }
    let pads = graph.int_constant(&[0, 0, 0, 0, 0, extra, extra, 0]);
    graph.node("Pad", &[x, &pads], vec![])
}

/// `torch.roll` of a `[B, side, side, C]` value by `shift` along the
/// rows and the columns, as a Slice and Concat per axis.
fn emit_roll(graph: &mut Graph, x: &str, shift: i64, side: i64) -> String {
    let split = side - shift.rem_euclid(side);
    let mut y = x.to_owned();
    for axis in [1, 2] {
        let tail = slice(graph, &y, &[axis], (&[split], &[side], &[1]));
        let head = slice(graph, &y, &[axis], (&[0], &[split], &[1]));
        y = concat(graph, &[&tail, &head], axis);
    }
    y
}

/// The bias added to each window's attention scores, `[windows, heads,
/// window², window²]`: the relative position bias of attention `prefix`,
/// plus the shifted windows' mask where `shift` is not 0.
fn window_bias(weights: &Weights, prefix: &str, padded_side: i64, shift: i64) -> Tensor {
    let table = weights.tensor(&format!("{prefix}.relative_position_bias_table"));
    let bias = relative_position_bias(table, &relative_position_index(WINDOW));
    match shift {
        0 => bias,
        _ => bias + attention_mask(padded_side, padded_side, (shift, shift), table).unsqueeze(1),
    }
}

/// [`WindowAttention`] `prefix` (`heads`, `shift`) as ONNX nodes over
/// `x`, `[B, side, side, dim]`.
fn emit_window_attention(
    graph: &mut Graph,
    weights: &Weights,
    (prefix, x): (&str, &str),
    (side, dim): (i64, i64),
    (heads, shift): (i64, i64),
) -> String {
    let padded_side = padded(side);
    let shift = if WINDOW >= padded_side { 0 } else { shift };
    let (per_side, n) = (padded_side / WINDOW, WINDOW * WINDOW);
    let mut y = emit_pad(graph, x, padded_side - side);
    if shift > 0 {
        y = emit_roll(graph, &y, -shift, padded_side);
    }
    y = reshape(graph, &y, &[-1, per_side, WINDOW, per_side, WINDOW, dim]);
    y = transpose(graph, &y, &[0, 1, 3, 2, 4, 5]);
    y = reshape(graph, &y, &[-1, n, dim]);

    let packed = (weights.tensor(&format!("{prefix}.qkv.weight")), weights.tensor(&format!("{prefix}.qkv.bias")));
    let [q, k, v] = attention_projections(graph, &y, &format!("{prefix}.qkv"), packed, heads);
    let scores = graph.node("MatMul", &[&q, &k], vec![]);
    let scores = reshape(graph, &scores, &[-1, per_side * per_side, heads, n, n]);
    let bias = window_bias(weights, prefix, padded_side, shift);
    let bias = graph.weight(&format!("{prefix}.window_bias"), &bias);
    let scores = graph.node("Add", &[&scores, &bias], vec![]);
    let scores = reshape(graph, &scores, &[-1, heads, n, n]);
    y = attend(graph, &scores, &v, dim);
    y = weights.dense(graph, &y, &format!("{prefix}.proj"));

    y = reshape(graph, &y, &[-1, per_side, per_side, WINDOW, WINDOW, dim]);
    y = transpose(graph, &y, &[0, 1, 3, 2, 4, 5]);
    y = reshape(graph, &y, &[-1, padded_side, padded_side, dim]);
    if shift > 0 {
        y = emit_roll(graph, &y, shift, padded_side);
    }
    match padded_side > side {
        true => slice(graph, &y, &[1, 2], (&[0, 0], &[side, side], &[1, 1])),
        false => y,
    }
}

/// [`Block`] `prefix` as ONNX nodes over `x`, `[B, side, side, dim]` (eval
/// mode: no stochastic depth).
fn emit_block(
    graph: &mut Graph,
    weights: &Weights,
    (prefix, x): (&str, &str),
    (side, dim): (i64, i64),
    (heads, shift): (i64, i64),
) -> String {
    let y = weights.layer_norm(graph, x, &format!("{prefix}.norm1"), 1e-5);
    let y = emit_window_attention(graph, weights, (&format!("{prefix}.attn"), &y), (side, dim), (heads, shift));
    let x = graph.node("Add", &[x, &y], vec![]);
    let y = weights.layer_norm(graph, &x, &format!("{prefix}.norm2"), 1e-5);
    let y = weights.dense(graph, &y, &format!("{prefix}.mlp.0"));
    let y = gelu(graph, &y);
    let y = weights.dense(graph, &y, &format!("{prefix}.mlp.3"));
    graph.node("Add", &[&x, &y], vec![])
}

/// [`PatchMerging`] `prefix` as ONNX nodes over `x`, `[B, side, side, C]`
/// → `[B, ⌈side/2⌉, ⌈side/2⌉, 2C]`.
fn emit_patch_merging(graph: &mut Graph, weights: &Weights, prefix: &str, x: &str, side: i64) -> String {
    let x = emit_pad(graph, x, side % 2);
    let end = side + side % 2;
    let quarters: Vec<String> = [(0, 0), (1, 0), (0, 1), (1, 1)]
        .iter()
        .map(|&(row, column)| slice(graph, &x, &[1, 2], (&[row, column], &[end, end], &[2, 2])))
        .collect();
    let quarters: Vec<&str> = quarters.iter().map(String::as_str).collect();
    let joined = concat(graph, &quarters, -1);
    let normed = weights.layer_norm(graph, &joined, &format!("{prefix}.norm"), 1e-5);
    weights.dense(graph, &normed, &format!("{prefix}.reduction"))
}

/// The trunk as ONNX nodes over `input`, `[N, 3, size, size]` (eval mode;
/// paddings, shifts and masks are those of that size): the pooled features
/// `[N, 768]`.
pub fn emit_onnx(graph: &mut Graph, weights: &Weights, input: &str, size: i64) -> String {
    let x = weights.conv(graph, input, "features.0.0", ConvShape::square(PATCH, 0));
    let x = transpose(graph, &x, &[0, 2, 3, 1]);
    let mut x = weights.layer_norm(graph, &x, "features.0.2", 1e-5);
    let mut side = size / PATCH;
    for (stage, (&depth, &heads)) in DEPTHS.iter().zip(&HEADS).enumerate() {
        let dim = EMBED << stage;
        let layer = 2 * stage + 1;
        if stage > 0 {
            x = emit_patch_merging(graph, weights, &format!("features.{}", layer - 1), &x, side);
            side = (side + 1) / 2;
        }
        for i in 0..depth {
            let shift = if i.is_multiple_of(2) { 0 } else { WINDOW / 2 };
            x = emit_block(graph, weights, (&format!("features.{layer}.{i}"), &x), (side, dim), (heads, shift));
        }
    }
    x = weights.layer_norm(graph, &x, "norm", 1e-5);
    x = transpose(graph, &x, &[0, 3, 1, 2]);
    super::onnx::pooled_features(graph, &x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_counted_across_stages_and_merging_goes_with_the_next_block() {
        assert_eq!(block_count(), 12);
        assert_eq!(block_of("features.0.0.weight"), None);
        assert_eq!(block_of("features.1.0.norm1.weight"), Some(0));
        assert_eq!(block_of("features.1.1.attn.qkv.bias"), Some(1));
        assert_eq!(block_of("features.2.reduction.weight"), Some(2));
        assert_eq!(block_of("features.3.0.mlp.0.weight"), Some(2));
        assert_eq!(block_of("features.5.5.norm2.bias"), Some(9));
        assert_eq!(block_of("features.6.norm.weight"), Some(10));
        assert_eq!(block_of("features.7.1.mlp.3.weight"), Some(11));
        assert_eq!(block_of("norm.weight"), None);
        assert_eq!(block_of("head.weight"), None);
    }

    #[test]
    fn shifted_regions_follow_torchvisions_slices() {
        // 14 = two windows, shift 3: [0:7] → 0, [7:11] → 1, [11:14] → 2.
        assert_eq!(region_labels(14, 3), [0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2]);
        // Unshifted axis: `[-0:]` is the whole axis.
        assert_eq!(region_labels(7, 0), [2; 7]);
        let mask = attention_mask(14, 14, (3, 3), &Tensor::zeros([1], (Kind::Float, tch::Device::Cpu)));
        assert_eq!(mask.size(), [4, 49, 49]);
        // The first window is one region; the last joins four.
        assert_eq!(mask.get(0).abs().sum(Kind::Float).double_value(&[]), 0.0);
        assert!(mask.get(3).min().double_value(&[]) == -100.0);
    }

    #[test]
    fn relative_position_index_matches_torchvisions_formula() {
        let index = relative_position_index(7);
        assert_eq!(index.size(), [2401]);
        // Position 0 against itself: offset (0, 0) → row 6·13 + 6.
        assert_eq!(index.int64_value(&[0]), 84);
        // (0,0) against (6,6): offset (-6, -6) → row 0; (6,6) against (0,0): 12·13 + 12.
        assert_eq!(index.int64_value(&[48]), 0);
        assert_eq!(index.int64_value(&[48 * 49]), 168);
    }
}
