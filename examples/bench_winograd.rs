//! Weight gradient of ResNet's 3×3 stride-1 convolutions at batch 4 (or the
//! batch given): oneDNN's (autograd with and without the weight requiring
//! grad, the difference) against Winograd's
//! ([`tchlab::accel::winograd::weight_gradient`]), medians of 15, and the
//! largest difference between the two relative to the largest gradient.
//! `cargo run --release --example bench_winograd [-- BATCH]`

use std::time::Instant;
use tch::{Device, Kind, Tensor};
use tchlab::accel::winograd::weight_gradient;

fn median_ms(mut f: impl FnMut()) -> f64 {
    let mut times: Vec<f64> = (0..18)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1e3
        })
        .skip(3)
        .collect();
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    times[times.len() / 2]
}

/// Autograd through one convolution; returns the weight gradient when asked for.
fn autograd(x: &Tensor, w: &Tensor, upstream: &Tensor, weight_too: bool) -> Option<Tensor> {
    let x = x.detach().set_requires_grad(true);
    let w = w.detach().set_requires_grad(weight_too);
    let y = x.conv2d(&w, None::<Tensor>, [1, 1], [1, 1], [1, 1], 1);
    let inputs: Vec<&Tensor> = if weight_too { vec![&x, &w] } else { vec![&x] };
    let grads = Tensor::run_backward(&[(&y * upstream).sum(Kind::Float)], &inputs, false, false);
    weight_too.then(|| grads[1].shallow_clone())
}

fn main() {
    let batch: i64 = std::env::args().nth(1).map_or(4, |b| b.parse().expect("batch size"));
    let options = (Kind::Float, Device::Cpu);
    println!("batch {batch}: weight gradient of a 3×3 stride-1 convolution, C = K");
    for (c, hw) in [(64, 56), (128, 28), (256, 14), (512, 7)] {
        let x = Tensor::randn([batch, c, hw, hw], options);
        let w = Tensor::randn([c, c, 3, 3], options);
        let upstream = Tensor::randn([batch, c, hw, hw], options);
        let both = median_ms(|| {
            autograd(&x, &w, &upstream, true);
        });
        let input_only = median_ms(|| {
            autograd(&x, &w, &upstream, false);
        });
        let winograd = median_ms(|| {
            let _ = weight_gradient(&x, &upstream);
        });
        let exact = autograd(&x, &w, &upstream, true).unwrap();
        let ours = weight_gradient(&x, &upstream);
        let error = (&ours - &exact).abs().max().double_value(&[]) / exact.abs().max().double_value(&[]);
        println!(
            "{c:>4}×{hw}×{hw}: oneDNN {:6.2} ms ({both:.2} − {input_only:.2}) | Winograd F(2×2,3×3) {winograd:6.2} ms | relative difference {error:.1e}",
            both - input_only
        );
    }
}
