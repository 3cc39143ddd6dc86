//! Soft attention of *Show, Attend and Tell* (Xu et al. 2015) over a grid of
//! image features `a` `[N, L, C]` (L locations of C channels), with backward
//! passes through time:
//! - [`AdditiveAttention`]: scores `e = tanh(a·W_a + h·W_h + b)·w` `[N, L]`
//!   for a query `h` `[N, H]`, weights `α = softmax(e)` over L, context
//!   `z = Σ_l α_l a_l` `[N, C]`; the grid's projection `a·W_a` is computed
//!   once per sequence;
//! - [`ContextGate`]: `β = σ(h·w_β + b_β)` (one scalar per row), `ẑ = β·z`;
//! - [`InitialState`]: `h0 = tanh(ā·W_h0 + b_h0)`, `c0 = tanh(ā·W_c0 + b_c0)`
//!   from the mean grid feature `ā`, as the authors' code does;
//! - [`AttentionLstm`]: at step t, attention with `h_{t-1}` gives `ẑ_t`, and
//!   the LSTM (gates i, f, o, g as [`Lstm`]) reads `[x_t, ẑ_t]` and `h_{t-1}`;
//! - [`DeepOutput`]: the paper's deep output with the authors' tanh,
//!   `scores = dropout(tanh(x_t + h_t·L_h + ẑ_t·L_z + b))·L_o + b_o`;
//! - [`attention_penalty`]: the doubly stochastic regulariser
//!   `λ/N · Σ_n Σ_l (1 − Σ_t α_{n,t,l})²`, the sum over t taking only the
//!   steps that predict a counted word (as the loss counts them).
//!
//! Queries may come T at a time (`h` `[N, T, H]`, weights `[N, T, L]`): the
//! sequence's backward pass runs only the recurrence step by step and the
//! parameter gradients of all steps at once, through the same helpers.

use super::recurrent::Lstm;
use super::{Affine, TemporalAffine};
use tch::nn::{self, Module};
use tch::Tensor;

fn randn(fan_in: i64) -> nn::Init {
    nn::Init::Randn { mean: 0.0, stdev: 1.0 / (fan_in as f64).sqrt() }
}

/// The lists one after the other.
fn joined<const K: usize>(lists: [Vec<Tensor>; K]) -> Vec<Tensor> {
    lists.into_iter().flatten().collect()
}

/// `x` `[…, D]` as rows `[·, D]`.
fn rows(x: &Tensor) -> Tensor {
    x.reshape([-1, *x.size().last().expect("a tensor with a last dimension")])
}

/// `Σ` over every dimension but the last.
fn sum_rows(x: &Tensor) -> Tensor {
    rows(x).sum_dim_intlist([0i64].as_slice(), false, x.kind())
}

/// `xᵀ·d` over rows: the weight gradient of `x·W` for upstream `d`.
fn weight_gradient(x: &Tensor, d: &Tensor) -> Tensor {
    rows(x).transpose(0, 1).matmul(&rows(d))
}

/// The grid's gradient, present when the caller asked for it (a network
/// whose grid is data skips its largest product).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GridGradient {
    Wanted,
    Skipped,
}

/// The attention weights and context of T queries per row.
pub struct Attended {
    /// α `[N, T, L]`.
    pub weights: Tensor,
    /// z `[N, T, C]`.
    pub context: Tensor,
}

/// What the recurrence needs of the attention's backward pass at a step;
/// stacked over the steps, what the parameter gradients need.
pub struct QueryGradients {
    /// dL/dz `[N, T, C]`.
    pub context: Tensor,
    /// dL/de `[N, T, L]` (the scores, before the softmax).
    pub scores: Tensor,
    /// dL/d(h·W_h + b) `[N, T, A]`.
    pub hidden_terms: Tensor,
}

/// Additive attention's parameters: `W_a` `[C, A]`, `W_h` `[H, A]`, `b`
/// `[A]`, `w` `[A]`.
#[derive(Debug)]
pub struct AdditiveAttention {
    pub grid_weight: Tensor,
    pub hidden_weight: Tensor,
    pub bias: Tensor,
    pub score: Tensor,
}

impl AdditiveAttention {
    /// `W_a ~ N(0, 1/C)`, `W_h ~ N(0, 1/H)`, `w ~ N(0, 1/A)`, `b = 0`.
    pub fn new(p: nn::Path, channels: i64, hidden: i64, width: i64) -> Self {
        Self {
            grid_weight: p.var("grid_weight", &[channels, width], randn(channels)),
            hidden_weight: p.var("hidden_weight", &[hidden, width], randn(hidden)),
            bias: p.var("bias", &[width], nn::Init::Const(0.0)),
            score: p.var("score", &[width], randn(width)),
        }
    }

    pub fn parameters(&self) -> Vec<Tensor> {
        [&self.grid_weight, &self.hidden_weight, &self.bias, &self.score].map(|t| t.shallow_clone()).into()
    }

    pub fn width(&self) -> i64 {
        self.bias.size()[0]
    }

    /// `a·W_a` `[N, L, A]`, once per sequence.
    pub fn project(&self, grid: &Tensor) -> Tensor {
        grid.matmul(&self.grid_weight)
    }

    /// `tanh(a·W_a + h·W_h + b)` `[N, T, L, A]` from `h·W_h` `[N, T, A]`.
    fn activations(&self, projected: &Tensor, hidden_product: &Tensor) -> Tensor {
        (projected.unsqueeze(1) + (hidden_product + &self.bias).unsqueeze(2)).tanh()
    }

    /// Weights and context from the query's product `h·W_h` `[N, T, A]`
    /// (a caller may compute it inside a larger product).
    pub fn attend(&self, grid: &Tensor, projected: &Tensor, hidden_product: &Tensor) -> Attended {
        let scores = self.activations(projected, hidden_product).matmul(&self.score);
        let weights = scores.softmax(-1, scores.kind());
        let context = weights.matmul(grid);
        Attended { weights, context }
    }

    /// Attention of the queries `h` `[N, T, H]` over `grid` `[N, L, C]`.
    pub fn forward(&self, grid: &Tensor, projected: &Tensor, h: &Tensor) -> Attended {
        self.attend(grid, projected, &h.matmul(&self.hidden_weight))
    }

    /// `w ⊙ (1 − u²)` `[N, T, L, A]`: d e / d(h·W_h + b) per location.
    fn score_slopes(&self, activations: &Tensor) -> Tensor {
        (1f64 - activations.square()) * &self.score
    }

    /// Backward from the context's and the weights' upstream gradients to
    /// the scores and the query's terms, for the `slopes` of these queries.
    pub fn query_gradients(
        grid: &Tensor,
        weights: &Tensor,
        slopes: &Tensor,
        d_context: Tensor,
        d_weights: &Tensor,
    ) -> QueryGradients {
        let d_weights = d_weights + d_context.matmul(&grid.transpose(1, 2));
        let weighted = (&d_weights * weights).sum_dim_intlist([-1i64].as_slice(), true, weights.kind());
        let d_scores = weights * (d_weights - weighted);
        let hidden_terms = d_scores.unsqueeze(-2).matmul(slopes).squeeze_dim(-2);
        QueryGradients { context: d_context, scores: d_scores, hidden_terms }
    }

    /// `[dW_a, dW_h, db, dw]` and, when wanted, dL/dgrid, from the queries
    /// `h` `[N, T, H]`, the forward's attention weights, tanh activations and
    /// score slopes, and their stacked [`QueryGradients`].
    fn parameter_gradients(
        &self,
        grid: &Tensor,
        h: &Tensor,
        (weights, activations, slopes): (&Tensor, &Tensor, &Tensor),
        d: &QueryGradients,
        grid_gradient: GridGradient,
    ) -> (Option<Tensor>, Vec<Tensor>) {
        let d_projected = (d.scores.unsqueeze(-1) * slopes).sum_dim_intlist([1i64].as_slice(), false, slopes.kind());
        let d_score = d.scores.reshape([1, -1]).matmul(&rows(activations)).squeeze_dim(0);
        let params = vec![
            weight_gradient(grid, &d_projected),
            weight_gradient(h, &d.hidden_terms),
            sum_rows(&d.hidden_terms),
            d_score,
        ];
        let d_grid = (grid_gradient == GridGradient::Wanted).then(|| {
            weights.transpose(1, 2).matmul(&d.context) + d_projected.matmul(&self.grid_weight.transpose(0, 1))
        });
        (d_grid, params)
    }

    /// dL/dgrid, dL/dh `[N, T, H]` and `[dW_a, dW_h, db, dw]` from the
    /// upstream gradients of the context `[N, T, C]` and weights `[N, T, L]`.
    pub fn backward(
        &self,
        grid: &Tensor,
        projected: &Tensor,
        h: &Tensor,
        attended: &Attended,
        d_context: &Tensor,
        d_weights: &Tensor,
    ) -> AttentionGradients {
        let activations = self.activations(projected, &h.matmul(&self.hidden_weight));
        let slopes = self.score_slopes(&activations);
        let d = Self::query_gradients(grid, &attended.weights, &slopes, d_context.shallow_clone(), d_weights);
        let d_h = d.hidden_terms.matmul(&self.hidden_weight.transpose(0, 1));
        let (d_grid, params) =
            self.parameter_gradients(grid, h, (&attended.weights, &activations, &slopes), &d, GridGradient::Wanted);
        AttentionGradients { grid: d_grid.expect("wanted"), hidden: d_h, params }
    }
}

/// The gradients of [`AdditiveAttention::backward`].
pub struct AttentionGradients {
    pub grid: Tensor,
    pub hidden: Tensor,
    pub params: Vec<Tensor>,
}

/// The gating scalar `β = σ(h·w_β + b_β)` `[…, 1]` and `ẑ = β·z`.
#[derive(Debug)]
pub struct ContextGate {
    /// `w_β` `[H, 1]`.
    pub weight: Tensor,
    /// `b_β` `[1]`.
    pub bias: Tensor,
}

/// The gradients of [`ContextGate::backward`].
pub struct GateGradients {
    pub hidden: Tensor,
    pub context: Tensor,
    /// `[dw_β, db_β]`.
    pub params: Vec<Tensor>,
}

impl ContextGate {
    /// `w_β ~ N(0, 1/H)`, `b_β = 0` (β starts near ½).
    pub fn new(p: nn::Path, hidden: i64) -> Self {
        Self { weight: p.var("weight", &[hidden, 1], randn(hidden)), bias: p.var("bias", &[1], nn::Init::Const(0.0)) }
    }

    pub fn parameters(&self) -> Vec<Tensor> {
        vec![self.weight.shallow_clone(), self.bias.shallow_clone()]
    }

    /// β from the product `h·w_β`.
    pub fn gate(&self, hidden_product: &Tensor) -> Tensor {
        (hidden_product + &self.bias).sigmoid()
    }

    /// `(β, β·z)` for `h` `[…, H]` and `z` `[…, C]`.
    pub fn forward(&self, h: &Tensor, context: &Tensor) -> (Tensor, Tensor) {
        let gate = self.gate(&h.matmul(&self.weight));
        let gated = &gate * context;
        (gate, gated)
    }

    /// dL/d(h·w_β + b_β) and dL/dz from dL/dẑ.
    fn local_gradients(context: &Tensor, gate: &Tensor, d_gated: &Tensor) -> (Tensor, Tensor) {
        let d_gate = (d_gated * context).sum_dim_intlist([-1i64].as_slice(), true, context.kind());
        (d_gate * gate * (1f64 - gate), gate * d_gated)
    }

    fn parameter_gradients(h: &Tensor, d_logit: &Tensor) -> Vec<Tensor> {
        vec![weight_gradient(h, d_logit), sum_rows(d_logit)]
    }

    /// Backward from `d_gated` (dL/dẑ) with the forward's `gate` (β).
    pub fn backward(&self, h: &Tensor, context: &Tensor, gate: &Tensor, d_gated: &Tensor) -> GateGradients {
        let (d_logit, d_context) = Self::local_gradients(context, gate, d_gated);
        let d_hidden = d_logit.matmul(&self.weight.transpose(0, 1));
        GateGradients { hidden: d_hidden, context: d_context, params: Self::parameter_gradients(h, &d_logit) }
    }
}

/// `h0 = tanh(ā·W_h0 + b_h0)`, `c0 = tanh(ā·W_c0 + b_c0)` from the mean
/// `ā` `[N, C]` of the grid over its locations.
#[derive(Debug)]
pub struct InitialState {
    pub hidden: Affine,
    pub cell: Affine,
}

impl InitialState {
    pub fn new(p: &nn::Path, channels: i64, hidden: i64) -> Self {
        let scale = 1.0 / (channels as f64).sqrt();
        Self {
            hidden: Affine::new(p / "init_h", channels, hidden, scale),
            cell: Affine::new(p / "init_c", channels, hidden, scale),
        }
    }

    /// `[W_h0, b_h0, W_c0, b_c0]`.
    pub fn parameters(&self) -> Vec<Tensor> {
        joined([self.hidden.parameters(), self.cell.parameters()])
    }

    fn mean(grid: &Tensor) -> Tensor {
        grid.mean_dim([1i64].as_slice(), false, grid.kind())
    }

    /// `(h0, c0)` `[N, H]` each.
    pub fn forward(&self, grid: &Tensor) -> (Tensor, Tensor) {
        let mean = Self::mean(grid);
        (self.hidden.forward(&mean).tanh(), self.cell.forward(&mean).tanh())
    }

    /// dL/dgrid (when wanted) and `[dW_h0, db_h0, dW_c0, db_c0]`.
    pub fn backward(
        &self,
        grid: &Tensor,
        (h0, c0): (&Tensor, &Tensor),
        (d_h0, d_c0): (&Tensor, &Tensor),
        grid_gradient: GridGradient,
    ) -> (Option<Tensor>, Vec<Tensor>) {
        let mean = Self::mean(grid);
        let d_hidden = d_h0 * (1f64 - h0.square());
        let d_cell = d_c0 * (1f64 - c0.square());
        let params = [self.hidden.parameter_gradients(&mean, &d_hidden), self.cell.parameter_gradients(&mean, &d_cell)];
        let d_grid = (grid_gradient == GridGradient::Wanted).then(|| {
            let d_mean =
                d_hidden.matmul(&self.hidden.weight.transpose(0, 1)) + d_cell.matmul(&self.cell.weight.transpose(0, 1));
            (d_mean / grid.size()[1] as f64).unsqueeze(1).expand_as(grid).contiguous()
        });
        (d_grid, joined(params))
    }
}

/// What [`AttentionLstm`]'s forward pass gives, and its backward pass takes.
pub struct AttentionLstmStates {
    /// `[N, H]` each.
    pub h0: Tensor,
    pub c0: Tensor,
    /// Hidden and cell states after each step, `[N, T, H]` each.
    pub h: Tensor,
    pub c: Tensor,
    /// α `[N, T, L]`.
    pub weights: Tensor,
    /// z `[N, T, C]`, before the gate.
    pub context: Tensor,
    /// β `[N, T, 1]`.
    pub gate: Tensor,
    /// ẑ = β·z `[N, T, C]`, what the LSTM read.
    pub gated: Tensor,
}

/// One decoding step's outputs (`[N, …]`, no time dimension).
pub struct AttentionStep {
    pub h: Tensor,
    pub c: Tensor,
    /// α `[N, L]`.
    pub weights: Tensor,
    /// ẑ `[N, C]`.
    pub gated: Tensor,
}

/// The gradients of [`AttentionLstm::backward`].
pub struct AttentionLstmGradients {
    /// dL/dgrid `[N, L, C]`, when wanted.
    pub grid: Option<Tensor>,
    /// dL/dx `[N, T, W]`.
    pub words: Tensor,
    /// In [`AttentionLstm::parameters`]' order.
    pub params: Vec<Tensor>,
}

/// The attention LSTM over a sequence of word vectors `x` `[N, T, W]`,
/// attending over `grid` `[N, L, C]`.
#[derive(Debug)]
pub struct AttentionLstm {
    pub init: InitialState,
    pub attention: AdditiveAttention,
    pub gate: ContextGate,
    /// Reads `[x_t, ẑ_t]` (`Wx` `[W + C, 4H]`).
    pub lstm: Lstm,
    wordvec: i64,
}

impl AttentionLstm {
    /// Variables under `p`: `init_h.*`, `init_c.*`, `attention.*`, `gate.*`, `lstm.*`.
    pub fn new(p: &nn::Path, wordvec: i64, channels: i64, hidden: i64, attention_width: i64) -> Self {
        Self {
            init: InitialState::new(p, channels, hidden),
            attention: AdditiveAttention::new(p / "attention", channels, hidden, attention_width),
            gate: ContextGate::new(p / "gate", hidden),
            lstm: Lstm::new(&(p / "lstm"), wordvec + channels, hidden),
            wordvec,
        }
    }

    /// Initial state, attention, gate, LSTM (`Wx, Wh, b`).
    pub fn parameters(&self) -> Vec<Tensor> {
        joined([self.init.parameters(), self.attention.parameters(), self.gate.parameters(), self.lstm.parameters()])
    }

    pub fn hidden(&self) -> i64 {
        self.lstm.0.wh.size()[0]
    }

    /// `[W_h | w_β | Wh]` `[H, A + 1 + 4H]`: what multiplies `h_{t-1}` at a
    /// step, as one product.
    fn recurrent_weights(&self) -> Tensor {
        Tensor::cat(&[&self.attention.hidden_weight, &self.gate.weight, &self.lstm.0.wh], 1)
    }

    fn word_weight(&self) -> Tensor {
        self.lstm.0.wx.narrow(0, 0, self.wordvec)
    }

    fn context_weight(&self) -> Tensor {
        let wx = &self.lstm.0.wx;
        wx.narrow(0, self.wordvec, wx.size()[0] - self.wordvec)
    }

    /// `x·Wx_word + b` `[…, 4H]`.
    fn word_terms(&self, words: &Tensor) -> Tensor {
        words.matmul(&self.word_weight()) + &self.lstm.0.b
    }

    /// `(i, f, o, g)` activated, from pre-activations `[…, 4H]`.
    fn gates(&self, pre: &Tensor) -> [Tensor; 4] {
        let chunks = pre.chunk(4, -1);
        [chunks[0].sigmoid(), chunks[1].sigmoid(), chunks[2].sigmoid(), chunks[3].tanh()]
    }

    /// The grid's projection and the initial `(h0, c0)`: what decoding starts from.
    pub fn begin(&self, grid: &Tensor) -> (Tensor, Tensor, Tensor) {
        let (h0, c0) = self.init.forward(grid);
        (self.attention.project(grid), h0, c0)
    }

    /// One step from the word terms `x_t·Wx_word + b` `[N, 4H]`.
    fn step_from_terms(
        &self,
        grid: &Tensor,
        projected: &Tensor,
        recurrent_weights: &Tensor,
        word_terms: &Tensor,
        h: &Tensor,
        c: &Tensor,
    ) -> (AttentionStep, Tensor, Tensor) {
        let width = self.attention.width();
        let products = h.matmul(recurrent_weights);
        let attended = self.attention.attend(grid, projected, &products.narrow(1, 0, width).unsqueeze(1));
        let (weights, context) = (attended.weights.squeeze_dim(1), attended.context.squeeze_dim(1));
        let gate = self.gate.gate(&products.narrow(1, width, 1));
        let gated = &gate * &context;
        let recurrent = products.narrow(1, width + 1, 4 * self.hidden());
        let [i, f, o, g] = self.gates(&(word_terms + gated.matmul(&self.context_weight()) + recurrent));
        let c_next = f * c + i * g;
        let h_next = o * c_next.tanh();
        (AttentionStep { h: h_next, c: c_next, weights, gated }, context, gate)
    }

    /// One decoding step for the word vectors `x` `[N, W]` from `(h, c)`.
    pub fn step(&self, grid: &Tensor, projected: &Tensor, x: &Tensor, h: &Tensor, c: &Tensor) -> AttentionStep {
        self.step_from_terms(grid, projected, &self.recurrent_weights(), &self.word_terms(x), h, c).0
    }

    /// Every step's states, from `h0, c0` of the mean grid feature.
    pub fn forward(&self, grid: &Tensor, words: &Tensor) -> AttentionLstmStates {
        let (projected, h0, c0) = self.begin(grid);
        let word_terms = self.word_terms(words);
        let recurrent_weights = self.recurrent_weights();
        let (mut h, mut c) = (h0.shallow_clone(), c0.shallow_clone());
        let mut steps: [Vec<Tensor>; 6] = Default::default();
        for t in 0..words.size()[1] {
            let (step, context, gate) =
                self.step_from_terms(grid, &projected, &recurrent_weights, &word_terms.select(1, t), &h, &c);
            (h, c) = (step.h.shallow_clone(), step.c.shallow_clone());
            for (list, value) in steps.iter_mut().zip([step.h, step.c, step.weights, context, gate, step.gated]) {
                list.push(value);
            }
        }
        let [h, c, weights, context, gate, gated] = steps.map(|list| Tensor::stack(&list, 1));
        AttentionLstmStates { h0, c0, h, c, weights, context, gate, gated }
    }

    /// Backward through time from the upstream gradients of the hidden
    /// states `d_h` `[N, T, H]`, of what the LSTM read `d_gated` `[N, T, C]`
    /// and of the attention weights `d_weights` `[N, T, L]`.
    pub fn backward(
        &self,
        grid: &Tensor,
        words: &Tensor,
        states: &AttentionLstmStates,
        (d_h, d_gated, d_weights): (&Tensor, &Tensor, &Tensor),
        grid_gradient: GridGradient,
    ) -> AttentionLstmGradients {
        let steps = words.size()[1];
        let previous =
            |first: &Tensor, all: &Tensor| Tensor::cat(&[first.unsqueeze(1), all.narrow(1, 0, steps - 1)], 1);
        let h_prev = previous(&states.h0, &states.h);
        let c_prev = previous(&states.c0, &states.c);
        let inputs = Tensor::cat(&[words, &states.gated], -1);
        let recurrent_weights = self.recurrent_weights();
        let lstm = &self.lstm.0;
        let [i, f, o, g] = self.gates(&(inputs.matmul(&lstm.wx) + &lstm.b + h_prev.matmul(&lstm.wh)));
        let tanh_c = states.c.tanh();
        let dc_from_dh = &o * (1f64 - tanh_c.square());
        let lstm_slopes = Tensor::cat(
            &[&i * (1f64 - &i) * &g, &f * (1f64 - &f) * &c_prev, &o * (1f64 - &o) * &tanh_c, (1f64 - g.square()) * &i],
            -1,
        );
        let projected = self.attention.project(grid);
        let activations = self.attention.activations(&projected, &h_prev.matmul(&self.attention.hidden_weight));
        let attention_slopes = self.attention.score_slopes(&activations);
        let context_weight_t = self.context_weight().transpose(0, 1);
        let recurrent_weights_t = recurrent_weights.transpose(0, 1);

        let (mut dh_next, mut dc_next) = (states.h0.zeros_like(), states.c0.zeros_like());
        let mut per_step: [Vec<Tensor>; 5] = Default::default();
        for t in (0..steps).rev() {
            let at = |x: &Tensor| x.narrow(1, t, 1);
            let dh_t = at(d_h) + dh_next.unsqueeze(1);
            let dc_t = dc_next.unsqueeze(1) + &dh_t * at(&dc_from_dh);
            // i, f and g gates scale dc; the o gate scales dh.
            let d_pre = Tensor::cat(&[&dc_t, &dc_t, &dh_t, &dc_t], -1) * at(&lstm_slopes);
            let d_gated_t = at(d_gated) + d_pre.matmul(&context_weight_t);
            let (d_gate_logit, d_context) =
                ContextGate::local_gradients(&at(&states.context), &at(&states.gate), &d_gated_t);
            let d_attention = AdditiveAttention::query_gradients(
                grid,
                &at(&states.weights),
                &at(&attention_slopes),
                d_context,
                &at(d_weights),
            );
            let d_products = Tensor::cat(&[&d_attention.hidden_terms, &d_gate_logit, &d_pre], -1);
            dh_next = d_products.matmul(&recurrent_weights_t).squeeze_dim(1);
            dc_next = (dc_t * at(&f)).squeeze_dim(1);
            let step = [d_pre, d_gate_logit, d_attention.context, d_attention.scores, d_attention.hidden_terms];
            for (list, value) in per_step.iter_mut().zip(step) {
                list.push(value);
            }
        }
        let [d_pre, d_gate_logit, d_context, d_scores, d_hidden_terms] = per_step.map(|mut list| {
            list.reverse();
            Tensor::cat(&list, 1)
        });

        let d_words = d_pre.matmul(&self.word_weight().transpose(0, 1));
        let lstm_params = vec![weight_gradient(&inputs, &d_pre), weight_gradient(&h_prev, &d_pre), sum_rows(&d_pre)];
        let gate_params = ContextGate::parameter_gradients(&h_prev, &d_gate_logit);
        let d_attention = QueryGradients { context: d_context, scores: d_scores, hidden_terms: d_hidden_terms };
        let (d_grid_attention, attention_params) = self.attention.parameter_gradients(
            grid,
            &h_prev,
            (&states.weights, &activations, &attention_slopes),
            &d_attention,
            grid_gradient,
        );
        let (d_grid_init, init_params) =
            self.init.backward(grid, (&states.h0, &states.c0), (&dh_next, &dc_next), grid_gradient);
        let d_grid = d_grid_attention.zip(d_grid_init).map(|(a, b)| a + b);
        AttentionLstmGradients {
            grid: d_grid,
            words: d_words,
            params: joined([init_params, attention_params, gate_params, lstm_params]),
        }
    }
}

/// The deep output layer's activations and scores.
pub struct DeepOutputStates {
    /// `tanh(x + h·L_h + ẑ·L_z + b)` `[N, T, W]`.
    pub tanh: Tensor,
    /// The same after dropout: what `L_o` reads.
    pub activation: Tensor,
    /// `[N, T, V]`.
    pub scores: Tensor,
}

/// The gradients of [`DeepOutput::backward`].
pub struct DeepOutputGradients {
    pub words: Tensor,
    pub hidden: Tensor,
    pub gated: Tensor,
    /// `[dL_h, dL_z, db, dL_o, db_o]`.
    pub params: Vec<Tensor>,
}

/// `scores = dropout(tanh(x_t + h_t·L_h + ẑ_t·L_z + b))·L_o + b_o`: the word
/// `x_t` read at the step, its hidden state and its context all reach the
/// word distribution directly (the paper's deep output, eq. 7, with the
/// tanh of the authors' code).
#[derive(Debug)]
pub struct DeepOutput {
    /// `L_h` `[H, W]`.
    pub hidden_weight: Tensor,
    /// `L_z` `[C, W]`.
    pub context_weight: Tensor,
    /// `b` `[W]`.
    pub bias: Tensor,
    /// `L_o, b_o`: `[W, V]`, `[V]`.
    pub vocab: TemporalAffine,
}

impl DeepOutput {
    /// Variables `output.{hidden_weight, context_weight, bias}` and `vocab.*` under `p`.
    pub fn new(p: &nn::Path, wordvec: i64, channels: i64, hidden: i64, vocabulary: i64) -> Self {
        let out = p / "output";
        Self {
            hidden_weight: out.var("hidden_weight", &[hidden, wordvec], randn(hidden)),
            context_weight: out.var("context_weight", &[channels, wordvec], randn(channels)),
            bias: out.var("bias", &[wordvec], nn::Init::Const(0.0)),
            vocab: TemporalAffine::new(p / "vocab", wordvec, vocabulary, 1.0 / (wordvec as f64).sqrt()),
        }
    }

    pub fn parameters(&self) -> Vec<Tensor> {
        let own = [&self.hidden_weight, &self.context_weight, &self.bias].map(|t| t.shallow_clone());
        joined([own.into(), self.vocab.parameters()])
    }

    fn activate(&self, words: &Tensor, h: &Tensor, gated: &Tensor) -> Tensor {
        (words + h.matmul(&self.hidden_weight) + gated.matmul(&self.context_weight) + &self.bias).tanh()
    }

    /// The scores for the words `x` `[N, T, W]`, states `h` `[N, T, H]` and
    /// contexts `ẑ` `[N, T, C]` (or one step, `[N, ·]` each); `keep` is the
    /// dropout mask scaled by 1/(1 − p), or `None` for none.
    pub fn forward(&self, words: &Tensor, h: &Tensor, gated: &Tensor, keep: Option<&Tensor>) -> DeepOutputStates {
        let tanh = self.activate(words, h, gated);
        let activation = match keep {
            Some(keep) => &tanh * keep,
            None => tanh.shallow_clone(),
        };
        let scores = self.vocab.forward(&activation);
        DeepOutputStates { tanh, activation, scores }
    }

    /// Backward from `d_scores` with the forward's `states` and the same `keep`.
    pub fn backward(
        &self,
        (h, gated): (&Tensor, &Tensor),
        states: &DeepOutputStates,
        keep: Option<&Tensor>,
        d_scores: &Tensor,
    ) -> DeepOutputGradients {
        let vocab = self.vocab.backward(&states.activation, d_scores);
        let d_tanh = match keep {
            Some(keep) => vocab.input * keep,
            None => vocab.input,
        };
        let d_pre = d_tanh * (1f64 - states.tanh.square());
        let own = [weight_gradient(h, &d_pre), weight_gradient(gated, &d_pre), sum_rows(&d_pre)];
        let params = joined([own.into(), vocab.params]);
        DeepOutputGradients {
            hidden: d_pre.matmul(&self.hidden_weight.transpose(0, 1)),
            gated: d_pre.matmul(&self.context_weight.transpose(0, 1)),
            words: d_pre,
            params,
        }
    }
}

/// `λ/N · Σ_n Σ_l (1 − Σ_t m_{n,t} α_{n,t,l})²` for weights `[N, T, L]` and
/// the mask of counted steps `[N, T]`, and its gradient in the weights.
pub fn attention_penalty(weights: &Tensor, mask: &Tensor, lambda: f64) -> (Tensor, Tensor) {
    let n = weights.size()[0] as f64;
    let mask = mask.to_kind(weights.kind()).unsqueeze(-1);
    let shortfall = 1f64 - (weights * &mask).sum_dim_intlist([1i64].as_slice(), true, weights.kind());
    let penalty = shortfall.square().sum(weights.kind()) * (lambda / n);
    let d_weights = shortfall * mask * (-2.0 * lambda / n);
    (penalty, d_weights)
}

/// [`attention_penalty`]'s value alone, by tensor operations autograd can follow.
pub fn attention_penalty_autograd(weights: &Tensor, mask: &Tensor, lambda: f64) -> Tensor {
    let n = weights.size()[0] as f64;
    let attended = (weights * mask.to_kind(weights.kind()).unsqueeze(-1)).sum_dim_intlist(
        [1i64].as_slice(),
        false,
        weights.kind(),
    );
    (1f64 - attended).square().sum(weights.kind()) * (lambda / n)
}

/// A dropout mask shaped like `like`: 0 with probability `rate`, else
/// `1/(1 − rate)`; `None` when `rate` is 0.
pub fn dropout_mask(like: &Tensor, rate: f64) -> Option<Tensor> {
    (rate > 0.0).then(|| like.empty_like().bernoulli_float_(1.0 - rate) / (1.0 - rate))
}
