//! The decoded-image budget (`--cache-mb`) on the real ants/bees train split:
//! what it keeps decoded, and that images held encoded give the same pixels.
// Needs the data tier (data/ and models/ fetched; see build.rs).
#![cfg(tchlab_data)]

mod common;

use tchlab::data::image_folder::ImageFolder;
use tchlab::data::loader::{DecodedSplit, EpochPlan, PixelBudget};

fn train_split(budget_mb: u64) -> DecodedSplit {
    let (train, _) = ImageFolder::scan_train_val(&common::ants_bees()).unwrap();
    let hidden = indicatif::ProgressBar::hidden();
    DecodedSplit::decode(&train, false, &mut PixelBudget::megabytes(budget_mb), &hidden).unwrap()
}

#[test]
fn images_beyond_the_budget_are_held_encoded_and_augment_to_the_same_pixels() {
    let all = train_split(4096);
    let (all_bytes, all_encoded) = all.memory();
    assert_eq!(all_encoded, 0, "4 GB holds the whole split decoded");
    assert!(all_bytes > 50 << 20, "244 photos decode to more than 50 MB, got {all_bytes} bytes");

    let half_mb = (all_bytes / 2) >> 20;
    let part = train_split(half_mb);
    let (part_bytes, part_encoded) = part.memory();
    assert!(part_bytes <= half_mb << 20, "{part_bytes} bytes held over a {half_mb} MB budget");
    assert!(part_encoded > 0 && part_encoded < all.len(), "{part_encoded} of {} held encoded", all.len());

    let none = train_split(0);
    assert_eq!(none.memory(), (0, all.len()));

    let plan = EpochPlan::draw(&all, 3, 1);
    let expected = plan.pixels(&all, 0..all.len());
    assert!(plan.pixels(&part, 0..all.len()).equal(&expected));
    assert!(plan.pixels(&none, 0..all.len()).equal(&expected));
    assert!(none.val_tensor().equal(&all.val_tensor()));
}
