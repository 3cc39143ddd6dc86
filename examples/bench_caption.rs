//! Seconds per training step of a captioning network, explicit backward
//! against autograd, alternating. The recurrent cells at the course's sizes
//! (N 25, T 17, D 1280, W 256, H 512, V 25 by default); the Transformer at
//! the scenes' (N 25, T 17, a grid of L 49 locations of C 1280 channels,
//! d_model 256, 4 heads, 2 layers, feed-forward 512, dropout 0.1, V 25).
//! `cargo run --release --example bench_caption -- [rnn|lstm|transformer]
//! [repeats] [vocabulary] [features]`.

use std::time::Instant;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};
use tchlab::caption::decoder::Captioner;
use tchlab::caption::model::{CaptioningNet, CellKind, Dims, SpecialTokens};
use tchlab::caption::transformer::TransformerNet;
use tchlab::grad::{backward, HandDerived, Params};

const TOKENS: SpecialTokens = SpecialTokens { null: 0, start: 1, end: 2 };
const BATCH: i64 = 25;
const CAPTION_TOKENS: i64 = 17;
const GRID_LOCATIONS: i64 = 49;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let cell = match args.get(1).map(String::as_str) {
        Some("lstm") => CellKind::Lstm,
        Some("transformer") => CellKind::Transformer,
        _ => CellKind::Rnn,
    };
    let repeats: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(50);
    let vocabulary: i64 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(25);
    let feature_width: i64 = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(1280);
    tch::manual_seed(0);
    let store = VarStore::new(Device::Cpu);
    let (net, features): (Box<dyn HandDerived>, Tensor) = match cell {
        CellKind::Transformer => {
            let dims = Dims { heads: 4, layers: 2, ..Dims::recurrent(feature_width, 256, 512, vocabulary) };
            let net = TransformerNet::new(&store.root(), dims, TOKENS).expect("the bench's sizes");
            net.set_dropout(0.1);
            (Box::new(net), Tensor::randn([BATCH, GRID_LOCATIONS, feature_width], (Kind::Float, Device::Cpu)))
        }
        _ => {
            let dims = Dims::recurrent(feature_width, 256, 512, vocabulary);
            let net = CaptioningNet::new(&store.root(), dims, cell, TOKENS);
            (Box::new(net), Tensor::randn([BATCH, feature_width], (Kind::Float, Device::Cpu)))
        }
    };
    let params = Params::new(net.named_parameters());
    let captions = Tensor::randint_low(1, vocabulary, [BATCH, CAPTION_TOKENS], (Kind::Int64, Device::Cpu));
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
