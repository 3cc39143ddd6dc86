//! Real-world bad input: a corpus made at test time by Pillow, decoded
//! directly and mixed into a small image folder that `finetune` must train on.
// Needs the data tier (data/ and models/ fetched; see build.rs).
#![cfg(tchlab_data)]

mod common;

use std::path::{Path, PathBuf};
use tchlab::data::decode::decode_rgb;

/// Files that must be reported and skipped, with a word their reason must contain.
const UNUSABLE: &[(&str, &str)] = &[
    ("zero_bytes.jpg", "empty"),
    ("truncated.jpg", "decode"),
    ("text_named.jpg", "not an image"),
    ("not_an_image.gif", "extension"),
];

/// Odd but valid files: they must decode to RGB of this (width, height).
const DECODABLE: &[(&str, (u32, u32))] = &[
    ("cmyk.jpg", (64, 48)),
    ("sixteen_bit.png", (64, 48)),
    ("grayscale.png", (50, 40)),
    ("palette_alpha.png", (32, 32)),
    ("exif_rotated.jpg", (20, 40)),
    ("one_pixel.png", (1, 1)),
    ("huge_8000.jpg", (8000, 8000)),
    ("gif_named.jpg", (30, 30)),
];

fn corpus() -> PathBuf {
    let dir = common::repo().join("target/test-fixtures/bad-images");
    let good = common::ants_bees().join("val/ants/10308379_1b6c72e180.jpg");
    common::run_ok(
        std::process::Command::new(common::python())
            .arg(common::repo().join("tests/fixtures/make_bad_images.py"))
            .arg(&dir)
            .arg(good),
    );
    dir
}

fn pixel(image: &image::RgbImage, x: u32, y: u32) -> [u8; 3] {
    image.get_pixel(x, y).0
}

#[test]
fn odd_formats_decode_to_rgb_and_broken_files_are_errors_naming_them() {
    let dir = corpus();
    for (name, size) in DECODABLE {
        let image = decode_rgb(&dir.join(name)).unwrap_or_else(|e| panic!("{name} should decode: {e:#}"));
        assert_eq!(image.dimensions(), *size, "{name}");
    }
    let red = pixel(&decode_rgb(&dir.join("cmyk.jpg")).unwrap(), 10, 10);
    assert!(red[0] > 200 && red[1] < 60 && red[2] < 60, "CMYK red became {red:?}");
    let grey = pixel(&decode_rgb(&dir.join("grayscale.png")).unwrap(), 5, 5);
    assert_eq!(grey, [128, 128, 128]);
    let green = pixel(&decode_rgb(&dir.join("palette_alpha.png")).unwrap(), 3, 3);
    assert_eq!(green, [0, 200, 0]);
    let ramp = decode_rgb(&dir.join("sixteen_bit.png")).unwrap();
    assert!(pixel(&ramp, 63, 47)[0] > pixel(&ramp, 0, 0)[0], "16-bit values scaled to 8 bits");
    for (name, word) in UNUSABLE.iter().filter(|(n, _)| !n.ends_with(".gif")) {
        let err = match decode_rgb(&dir.join(name)) {
            Ok(image) => panic!("{name} decoded to a {:?} image instead of failing", image.dimensions()),
            Err(err) => format!("{err:#}"),
        };
        assert!(err.contains(name) && err.contains(word), "{name}: {err}");
    }
}

/// A small ants/bees folder with every corpus file added to train/ants.
fn folder_with_corpus(dest: &Path) {
    common::subset(&common::ants_bees(), dest, 6);
    let corpus = corpus();
    for entry in std::fs::read_dir(&corpus).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dest.join("train/ants").join(path.file_name().unwrap())).unwrap();
    }
}

#[test]
fn training_reports_bad_files_and_uses_the_good_ones() {
    let data = tempfile::tempdir().unwrap();
    folder_with_corpus(data.path());
    let out = tempfile::tempdir().unwrap();
    let output = common::run_ok(
        common::finetune()
            .args(["--arch", "efficientnet-lite0", "--epochs", "1", "--weights"])
            .arg(common::lite0_weights())
            .arg("--data")
            .arg(data.path())
            .arg("--out")
            .arg(out.path()),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    for (name, _) in UNUSABLE {
        assert!(stderr.contains(name), "{name} not reported:\n{stderr}");
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("summary.json")).unwrap()).unwrap();
    // 12 real photos + 8 decodable odd files in train; 12 in val.
    assert_eq!(summary["train_images"], 12 + DECODABLE.len());
    assert_eq!(summary["val_images"], 12);
    assert_eq!(summary["bad_files"].as_array().unwrap().len(), UNUSABLE.len());
    assert!(String::from_utf8_lossy(&output.stdout).contains(&format!("{} file(s) skipped", UNUSABLE.len())));
}

#[test]
fn strict_mode_fails_on_the_first_bad_file() {
    let data = tempfile::tempdir().unwrap();
    folder_with_corpus(data.path());
    let output = common::finetune()
        .args(["--arch", "efficientnet-lite0", "--epochs", "1", "--strict", "--weights"])
        .arg(common::lite0_weights())
        .arg("--data")
        .arg(data.path())
        .arg("--out")
        .arg(data.path().join("out"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = common::stderr_after_banner(&output);
    // Folder order is sorted: text_named.jpg < truncated.jpg < zero_bytes.jpg among the bad ones.
    assert!(stderr.starts_with("error: bad image (--strict)") && stderr.contains("text_named.jpg"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}
