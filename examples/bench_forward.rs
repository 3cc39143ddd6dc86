//! Forward and training-step timings of a backbone at several batch sizes,
//! contiguous (NCHW) and channels-last inputs, to pick batch sizes for the
//! frozen-backbone passes. `cargo run --release --example bench_forward -- efficientnet-lite0`

use std::time::Instant;
use tch::{Device, Kind, Tensor};
use tchlab::accel::channels_last;
use tchlab::choice_names::Named;
use tchlab::models::{Arch, Classifier};

fn main() {
    let arch = Arch::parse_name(&std::env::args().nth(1).unwrap_or_else(|| "efficientnet-lite0".into())).unwrap();
    let model = Classifier::new(arch, 2, Device::Cpu);
    println!("{} | libtorch threads {}", arch.name(), tch::get_num_threads());
    for batch in [1i64, 4, 8, 16, 32] {
        for (layout, convert) in [("nchw", false), ("channels-last", true)] {
            let mut x = Tensor::randn([batch, 3, 224, 224], (Kind::Float, Device::Cpu));
            if convert {
                x = channels_last(&x);
            }
            let forward = || tch::no_grad(|| model.backbone_forward_as_is(&x));
            let _ = forward();
            let runs = (64 / batch).max(2);
            let start = Instant::now();
            for _ in 0..runs {
                let _ = forward();
            }
            let per_image = start.elapsed().as_secs_f64() * 1000.0 / (runs * batch) as f64;
            println!("eval  batch {batch:>2} {layout:<14} {per_image:6.1} ms/image");
        }
    }
}
