//! Seconds per training step of a captioning network, explicit backward
//! against autograd, alternating. The recurrent cells at the course's sizes
//! (N 25, T 17, D 1280, W 256, H 512, V 25 by default); `attention` and
//! `transformer` over a grid of L 49 locations of C = `features` channels
//! (Lite0's 7×7×1280 head map): attention width A 256, penalty λ 1, dropout
//! 0.5 for the attention LSTM; d_model 256, 4 heads, 2 layers, feed-forward
//! 512, dropout 0.1 for the Transformer (environment `ATTENTION_WIDTH`,
//! `DROPOUT` change the width and the dropout).
//! `cargo run --release --example bench_caption -- [rnn|lstm|attention|transformer]
//! [repeats] [vocabulary] [features]`.

use std::time::Instant;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};
use tchlab::caption::model::{build, CellKind, Dims, SpecialTokens};
use tchlab::grad::{backward, Params};

/// Grid locations of the attending networks' features (7×7).
const LOCATIONS: i64 = 49;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let cell = match args.get(1).map(String::as_str) {
        Some("lstm") => CellKind::Lstm,
        Some("attention") => CellKind::Attention,
        Some("transformer") => CellKind::Transformer,
        _ => CellKind::Rnn,
    };
    let repeats: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(50);
    let vocabulary: i64 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(25);
    let feature_width: i64 = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(1280);
    let env = |name: &str, default: f64| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    tch::manual_seed(0);
    let store = VarStore::new(Device::Cpu);
    let recurrent = Dims::recurrent(feature_width, 256, 512, vocabulary);
    let (dims, dropout) = match cell {
        CellKind::Attention => {
            let attention = env("ATTENTION_WIDTH", 256.0) as i64;
            (Dims { attention, attention_penalty: 1.0, ..recurrent }, env("DROPOUT", 0.5))
        }
        CellKind::Transformer => (Dims { heads: 4, layers: 2, ..recurrent }, env("DROPOUT", 0.1)),
        _ => (recurrent, 0.0),
    };
    let mut feature_shape = vec![25, feature_width];
    if cell.takes_grid() {
        feature_shape.insert(1, LOCATIONS);
    }
    let net = build(&store.root(), dims, cell, SpecialTokens { null: 0, start: 1, end: 2 }).expect("a network");
    net.set_dropout(dropout);
    let params = Params::new(net.named_parameters());
    let features = Tensor::randn(feature_shape, (Kind::Float, Device::Cpu));
    let captions = Tensor::randint_low(1, vocabulary, [25, 17], (Kind::Int64, Device::Cpu));
    let manual = || {
        let _ = tch::no_grad(|| net.loss_and_gradients(&features, &captions));
    };
    let autograd = || {
        let loss = net.loss(&features, &captions);
        let _ = backward(&loss, &params, &[]);
    };
    let (mut manual_s, mut autograd_s) = (0.0, 0.0);
    for round in 0..repeats + 3 {
        let t = Instant::now();
        manual();
        let m = t.elapsed().as_secs_f64();
        let t = Instant::now();
        autograd();
        let a = t.elapsed().as_secs_f64();
        if round >= 3 {
            manual_s += m;
            autograd_s += a;
        }
    }
    let (m, a) = (manual_s / repeats as f64 * 1e3, autograd_s / repeats as f64 * 1e3);
    println!("{cell:?} step: explicit backward {m:.2} ms, autograd {a:.2} ms, ratio {:.2}", m / a);
}
