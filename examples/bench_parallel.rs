use std::time::Instant;
use tch::{Device, Kind, Tensor};
use tchlab::accel::channels_last;
use tchlab::choice_names::Named;
use tchlab::models::{Arch, Classifier};

fn main() {
    let arch = Arch::parse_name(&std::env::args().nth(1).unwrap_or_else(|| "efficientnet-lite0".into())).unwrap();
    let batch: i64 = std::env::args().nth(2).map_or(4, |s| s.parse().unwrap());
    let model = Classifier::new(arch, 2, Device::Cpu);
    let x = channels_last(&Tensor::randn([batch, 3, 224, 224], (Kind::Float, Device::Cpu)));
    let n = 64 / batch;
    // intra-op 2
    let _ = tch::no_grad(|| model.backbone_forward_as_is(&x));
    let start = Instant::now();
    for _ in 0..n {
        let _ = tch::no_grad(|| model.backbone_forward_as_is(&x));
    }
    println!("1 thread x 2 intra: {:.1} ms/img", start.elapsed().as_secs_f64() * 1000.0 / (n * batch) as f64);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                tch::set_num_threads(1);
                let model = Classifier::new(arch, 2, Device::Cpu);
                let x = channels_last(&Tensor::randn([batch, 3, 224, 224], (Kind::Float, Device::Cpu)));
                let _ = tch::no_grad(|| model.backbone_forward_as_is(&x));
                for _ in 0..n / 2 {
                    let _ = tch::no_grad(|| model.backbone_forward_as_is(&x));
                }
            });
        }
    });
    println!(
        "2 threads x 1 intra (incl. warmup): {:.1} ms/img",
        start.elapsed().as_secs_f64() * 1000.0 / ((n / 2 + 1) * 2 * batch) as f64
    );
    let _ = tch::no_grad(|| model.backbone_forward_as_is(&x));
    let start = Instant::now();
    for _ in 0..n {
        let _ = tch::no_grad(|| model.backbone_forward_as_is(&x));
    }
    println!(
        "after: 1 thread x {} intra: {:.1} ms/img",
        tch::get_num_threads(),
        start.elapsed().as_secs_f64() * 1000.0 / (n * batch) as f64
    );
}
