use std::time::Instant;
use tchlab::data::image_folder::ImageFolder;
use tchlab::data::loader::{DecodedSplit, EpochPlan, PixelBudget};

/// Decoding and augmentation time of the ants/bees train split, with the
/// decoded-image budget in MB as the optional argument (0: every image is
/// decoded at each use). `cargo run --release --example bench_augment -- 0`
fn main() {
    let budget_mb = std::env::args().nth(1).map_or(4096, |mb| mb.parse().expect("budget in MB"));
    let (train, _) = ImageFolder::scan_train_val(std::path::Path::new("data/hymenoptera_data")).unwrap();
    let bar = indicatif::ProgressBar::hidden();
    let start = Instant::now();
    let split = DecodedSplit::decode(&train, false, &mut PixelBudget::megabytes(budget_mb), &bar).unwrap();
    let (bytes, encoded) = split.memory();
    println!(
        "decode {} images: {:.2}s (rayon threads {}); {} MB held decoded, {encoded} images encoded",
        split.len(),
        start.elapsed().as_secs_f64(),
        rayon::current_num_threads(),
        bytes >> 20
    );
    for epoch in 0..3 {
        let plan = EpochPlan::draw(&split, 0, epoch);
        let start = Instant::now();
        for b in 0..plan.num_batches(4) {
            let _ = plan.batch(&split, 4, b);
        }
        println!("augment epoch {epoch}: {:.2}s", start.elapsed().as_secs_f64());
    }
}
