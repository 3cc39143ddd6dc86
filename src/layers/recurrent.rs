//! Recurrent layers over `[N, T, D]` sequences from an initial hidden state
//! `h0` `[N, H]`, with backward passes through time:
//! - [`Rnn`]: `h_t = tanh(x_t·Wx + h_{t-1}·Wh + b)`;
//! - [`Lstm`]: `a = x_t·Wx + h_{t-1}·Wh + b`, split into four blocks of H in
//!   the order i, f, o, g; `i, f, o = σ(·)`, `g = tanh(·)`,
//!   `c_t = f⊙c_{t-1} + i⊙g`, `h_t = o⊙tanh(c_t)`, `c_0 = 0`.
//!
//! Backward takes the forward's outputs (the hidden states, and for the LSTM
//! the cell states) instead of caching them, so a layer carries no state;
//! the LSTM recomputes its gates from them with two matrix products. Only
//! the recurrence `dh_{t-1} = da_t·Whᵀ` runs step by step: the input and
//! weight gradients of all steps come from single matrix products.

use tch::nn;
use tch::Tensor;

/// The gradients of a recurrent layer's backward pass.
pub struct SequenceGradients {
    /// dLoss/dx, `[N, T, D]`.
    pub input: Tensor,
    /// dLoss/dh0, `[N, H]`.
    pub h0: Tensor,
    /// `[dWx, dWh, db]`.
    pub params: Vec<Tensor>,
}

/// `Wx` `[D, G·H]`, `Wh` `[H, G·H]`, `b` `[G·H]` for a cell with G gate blocks.
#[derive(Debug)]
pub struct RecurrentWeights {
    pub wx: Tensor,
    pub wh: Tensor,
    pub b: Tensor,
}

impl RecurrentWeights {
    /// `Wx ~ N(0, 1/D)`, `Wh ~ N(0, 1/H)`, `b = 0`, as the assignment initialises.
    fn new(p: &nn::Path, inputs: i64, hidden: i64, gates: i64) -> Self {
        let randn = |fan_in: i64| nn::Init::Randn { mean: 0.0, stdev: 1.0 / (fan_in as f64).sqrt() };
        Self {
            wx: p.var("wx", &[inputs, gates * hidden], randn(inputs)),
            wh: p.var("wh", &[hidden, gates * hidden], randn(hidden)),
            b: p.var("b", &[gates * hidden], nn::Init::Const(0.0)),
        }
    }

    fn parameters(&self) -> Vec<Tensor> {
        vec![self.wx.shallow_clone(), self.wh.shallow_clone(), self.b.shallow_clone()]
    }

    fn hidden(&self) -> i64 {
        self.wh.size()[0]
    }

    /// `x·Wx + b` for every step at once, `[N, T, G·H]`.
    fn input_terms(&self, x: &Tensor) -> Tensor {
        x.matmul(&self.wx) + &self.b
    }

    /// `dx` and `[dWx, dWh, db]` from the pre-activation gradients `da`
    /// `[N, T, G·H]` of every step, the inputs and the previous hidden states.
    fn gradients(&self, x: &Tensor, h_prev: &Tensor, da: &Tensor, d_h0: Tensor) -> SequenceGradients {
        let rows = |t: &Tensor| t.reshape([-1, *t.size().last().unwrap()]);
        let d_input = da.matmul(&self.wx.transpose(0, 1));
        let d_wx = rows(x).transpose(0, 1).matmul(&rows(da));
        let d_wh = rows(h_prev).transpose(0, 1).matmul(&rows(da));
        let d_b = da.sum_dim_intlist([0i64, 1].as_slice(), false, da.kind());
        SequenceGradients { input: d_input, h0: d_h0, params: vec![d_wx, d_wh, d_b] }
    }
}

/// The hidden states before each step: `h0`, then `h_1 … h_{T-1}`.
fn previous_states(h0: &Tensor, states: &Tensor) -> Tensor {
    let steps = states.size()[1];
    Tensor::cat(&[h0.unsqueeze(1), states.narrow(1, 0, steps - 1)], 1)
}

/// A vanilla (tanh) RNN.
#[derive(Debug)]
pub struct Rnn(pub RecurrentWeights);

impl Rnn {
    pub fn new(p: &nn::Path, inputs: i64, hidden: i64) -> Self {
        Self(RecurrentWeights::new(p, inputs, hidden, 1))
    }

    pub fn parameters(&self) -> Vec<Tensor> {
        self.0.parameters()
    }

    /// One step: the next hidden state from `x` `[N, D]` and `h` `[N, H]`.
    pub fn step(&self, x: &Tensor, h: &Tensor) -> Tensor {
        (self.0.input_terms(x) + h.matmul(&self.0.wh)).tanh()
    }

    /// The hidden states `[N, T, H]` of the whole sequence.
    pub fn forward(&self, x: &Tensor, h0: &Tensor) -> Tensor {
        let input_terms = self.0.input_terms(x);
        let mut h = h0.shallow_clone();
        let mut states = Vec::new();
        for t in 0..x.size()[1] {
            h = (input_terms.select(1, t) + h.matmul(&self.0.wh)).tanh();
            states.push(h.shallow_clone());
        }
        Tensor::stack(&states, 1)
    }

    /// Backward through time from `states` (the forward's output) and its
    /// upstream gradient `d_states` `[N, T, H]`.
    pub fn backward(&self, x: &Tensor, h0: &Tensor, states: &Tensor, d_states: &Tensor) -> SequenceGradients {
        let wh_t = self.0.wh.transpose(0, 1);
        let tanh_slope = 1f64 - states.square();
        let mut d_next = h0.zeros_like();
        let mut da: Vec<Tensor> = Vec::new();
        for t in (0..x.size()[1]).rev() {
            let da_t = (d_states.select(1, t) + &d_next) * tanh_slope.select(1, t);
            d_next = da_t.matmul(&wh_t);
            da.push(da_t);
        }
        da.reverse();
        self.0.gradients(x, &previous_states(h0, states), &Tensor::stack(&da, 1), d_next)
    }
}

/// The hidden and cell states of an LSTM over a sequence, `[N, T, H]` each.
pub struct LstmStates {
    pub h: Tensor,
    pub c: Tensor,
}

/// An LSTM with gate blocks in the order i, f, o, g.
#[derive(Debug)]
pub struct Lstm(pub RecurrentWeights);

impl Lstm {
    pub fn new(p: &nn::Path, inputs: i64, hidden: i64) -> Self {
        Self(RecurrentWeights::new(p, inputs, hidden, 4))
    }

    pub fn parameters(&self) -> Vec<Tensor> {
        self.0.parameters()
    }

    /// `(i, f, o, g)` activated, from pre-activations `[…, 4H]`.
    fn gates(&self, a: &Tensor) -> [Tensor; 4] {
        let hidden = self.0.hidden();
        let last = a.dim() as i64 - 1;
        let block = |k: i64| a.narrow(last, k * hidden, hidden);
        [block(0).sigmoid(), block(1).sigmoid(), block(2).sigmoid(), block(3).tanh()]
    }

    /// One step: the next `(h, c)` from `x` `[N, D]`, `h` and `c` `[N, H]`.
    pub fn step(&self, x: &Tensor, h: &Tensor, c: &Tensor) -> (Tensor, Tensor) {
        self.step_from_terms(&self.0.input_terms(x), h, c)
    }

    fn step_from_terms(&self, input_terms: &Tensor, h: &Tensor, c: &Tensor) -> (Tensor, Tensor) {
        let [i, f, o, g] = self.gates(&(input_terms + h.matmul(&self.0.wh)));
        let c_next = f * c + i * g;
        let h_next = o * c_next.tanh();
        (h_next, c_next)
    }

    /// The hidden and cell states of the whole sequence.
    pub fn forward_states(&self, x: &Tensor, h0: &Tensor) -> LstmStates {
        let input_terms = self.0.input_terms(x);
        let (mut h, mut c) = (h0.shallow_clone(), h0.zeros_like());
        let (mut hs, mut cs) = (Vec::new(), Vec::new());
        for t in 0..x.size()[1] {
            (h, c) = self.step_from_terms(&input_terms.select(1, t), &h, &c);
            hs.push(h.shallow_clone());
            cs.push(c.shallow_clone());
        }
        LstmStates { h: Tensor::stack(&hs, 1), c: Tensor::stack(&cs, 1) }
    }

    /// The hidden states `[N, T, H]` of the whole sequence.
    pub fn forward(&self, x: &Tensor, h0: &Tensor) -> Tensor {
        self.forward_states(x, h0).h
    }

    /// Backward through time from the forward's `states` and the upstream
    /// gradient of the hidden states `d_h` `[N, T, H]`.
    pub fn backward(&self, x: &Tensor, h0: &Tensor, states: &LstmStates, d_h: &Tensor) -> SequenceGradients {
        let h_prev = previous_states(h0, &states.h);
        let c_prev = previous_states(&h0.zeros_like(), &states.c);
        let [i, f, o, g] = self.gates(&(self.0.input_terms(x) + h_prev.matmul(&self.0.wh)));
        let tanh_c = states.c.tanh();
        // Step-independent factors of the gate gradients.
        let dc_from_dh = &o * (1f64 - tanh_c.square());
        let slopes = Tensor::cat(
            &[&i * (1f64 - &i) * &g, &f * (1f64 - &f) * &c_prev, &o * (1f64 - &o) * &tanh_c, (1f64 - g.square()) * &i],
            -1,
        );
        let wh_t = self.0.wh.transpose(0, 1);
        let (mut dh_next, mut dc_next) = (h0.zeros_like(), h0.zeros_like());
        let mut da: Vec<Tensor> = Vec::new();
        for t in (0..x.size()[1]).rev() {
            let dh_t = d_h.select(1, t) + &dh_next;
            let dc_t = dc_next + &dh_t * dc_from_dh.select(1, t);
            // i, f and g gates scale dc; the o gate scales dh.
            let upstream = Tensor::cat(&[&dc_t, &dc_t, &dh_t, &dc_t], -1);
            let da_t = upstream * slopes.select(1, t);
            dh_next = da_t.matmul(&wh_t);
            dc_next = dc_t * f.select(1, t);
            da.push(da_t);
        }
        da.reverse();
        self.0.gradients(x, &h_prev, &Tensor::stack(&da, 1), dh_next)
    }
}
