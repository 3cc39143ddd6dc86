//! Where a minibatch step of the MNIST CNN spends its time, layer by layer,
//! with the explicit backward passes, next to autograd's whole step.
//! `cargo run --release --example bench_cnn`

use std::time::Instant;
use tch::nn::Module;
use tch::{Device, Kind, Tensor};
use tchlab::grad::HandDerived;
use tchlab::layers::softmax_cross_entropy;
use tchlab::nets::cnn::ConvNetShape;
use tchlab::nets::{Net, ThreeLayerConvNet};

fn main() {
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let shape = ConvNetShape { side: 28, filters: 32, kernel: 7, hidden: 100, classes: 10 };
    let net = ThreeLayerConvNet::new(&vs.root(), &shape, 1e-2);
    let images = Tensor::randn([100, 784], (Kind::Float, Device::Cpu));
    let labels = Tensor::randint(10, [100], (Kind::Int64, Device::Cpu));
    let mut times: Vec<(&str, Vec<f64>)> = Vec::new();
    let mut record = |name: &'static str, start: Instant| {
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        match times.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => v.push(ms),
            None => times.push((name, vec![ms])),
        }
    };
    for _ in 0..30 {
        tch::no_grad(|| {
            let x = images.view([-1, 1, 28, 28]);
            let t = Instant::now();
            let c = net.conv.forward(&x);
            record("conv forward", t);
            let t = Instant::now();
            let (m, argmax) = net.pool.forward_with_argmax(&c);
            record("pool forward", t);
            let t = Instant::now();
            let p = net.relu.forward(&m);
            record("relu forward (pooled)", t);
            let t = Instant::now();
            let a1 = net.affine1.forward(&p);
            let h1 = net.relu.forward(&a1);
            let scores = net.affine2.forward(&h1);
            record("affine-relu-affine forward", t);
            let t = Instant::now();
            let (_, d_scores) = softmax_cross_entropy(&scores, &labels);
            record("loss", t);
            let t = Instant::now();
            let g_a2 = net.affine2.backward(&h1, &d_scores);
            let g_h1 = net.relu.backward(&a1, &g_a2.input);
            let g_a1 = net.affine1.backward(&p, &g_h1.input);
            record("affine-relu-affine backward", t);
            let t = Instant::now();
            let g_m = net.relu.backward(&m, &g_a1.input);
            record("relu backward (pooled)", t);
            let t = Instant::now();
            let g_c = net.pool.backward_with_argmax(&c.size(), &argmax, &g_m.input);
            record("pool backward", t);
            let t = Instant::now();
            let _ = net.conv.parameter_gradients(&x, &g_c.input);
            record("conv parameter gradients", t);
        });
        let t = Instant::now();
        let _ = tch::no_grad(|| net.loss_and_gradients(&images, &labels));
        record("explicit step (whole)", t);
        let params: Vec<Tensor> = net.named_parameters().into_iter().map(|(_, t)| t).collect();
        let t = Instant::now();
        let loss = net.scores(&images).cross_entropy_for_logits(&labels);
        let _ = Tensor::run_backward(&[&loss], &params, false, false);
        record("autograd step (whole)", t);
    }
    for (name, mut v) in times {
        v.sort_by(|a, b| a.total_cmp(b));
        println!("{name:<30} {:7.2} ms", v[v.len() / 2]);
    }
}
