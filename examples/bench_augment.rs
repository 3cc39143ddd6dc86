use std::time::Instant;
use tchlab::data::image_folder::ImageFolder;
use tchlab::data::loader::{DecodedSplit, EpochPlan};

fn main() {
    let (train, _) = ImageFolder::scan_train_val(std::path::Path::new("data/hymenoptera_data")).unwrap();
    let bar = indicatif::ProgressBar::hidden();
    let start = Instant::now();
    let split = DecodedSplit::decode(&train, false, &bar).unwrap();
    println!(
        "decode {} images: {:.2}s (rayon threads {})",
        split.len(),
        start.elapsed().as_secs_f64(),
        rayon::current_num_threads()
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
