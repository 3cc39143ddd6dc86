//! A captioned image set made from MNIST, deterministically from a seed, in
//! the COCO captions layout ([`super::coco_json`] reads it): scenes of two
//! or three handwritten digits on a 96×96 canvas (a 3×3 grid of 28-pixel
//! cells inside a 6-pixel margin, each digit jittered by up to 2 pixels),
//! each captioned twice from what is where — "a seven to the left of a two"
//! and "a two to the right of a seven"; "a one above a four above a nine" and
//! "a nine below a four below a one"; "a three then an eight then a five from
//! left to right" and its reverse. Train scenes use MNIST's training digits,
//! val scenes its test digits.
//!
//! It also reads such a caption back ([`read_caption`]: how many digits, in a
//! row or a column, which, in what order) and counts how many sampled
//! captions have the true layout, the true digits, or are a true caption
//! ([`tally_scenes`]).

use crate::data::mnist::{read_pair, RawDigits};
use crate::report::Reporter;
use anyhow::{Context, Result};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use serde_json::json;
use std::path::Path;

const CANVAS: usize = 96;
const MARGIN: usize = 6;
const CELL: usize = 28;
const JITTER: i64 = 2;
const DIGIT_WORDS: [&str; 10] = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"];

/// How many scenes of each split, from which seed.
#[derive(Debug, Clone, Copy)]
pub struct SceneCounts {
    pub train: usize,
    pub val: usize,
    pub seed: u64,
}

/// Writes `out/train/`, `out/val/` and `out/annotations/captions_{train,val}.json`
/// (a bar from `reporter` per split).
pub fn make_scenes(
    mnist_dir: &Path,
    out: &Path,
    counts: SceneCounts,
    overwrite: bool,
    reporter: &dyn Reporter,
) -> Result<()> {
    clear_out(out, overwrite)?;
    let mut rng = ChaCha8Rng::seed_from_u64(counts.seed);
    for (split, prefix, count) in [("train", "train", counts.train), ("val", "t10k", counts.val)] {
        let digits = read_pair(mnist_dir, prefix)?;
        anyhow::ensure!(digits.rows == 28 && digits.cols == 28, "{}: MNIST digits are 28×28", mnist_dir.display());
        let images_dir = out.join(split);
        std::fs::create_dir_all(&images_dir).with_context(|| format!("creating {}", images_dir.display()))?;
        let bar = reporter.bar(count as u64, &format!("{split} scenes"));
        let (mut images, mut annotations) = (Vec::new(), Vec::new());
        for id in 0..count {
            let scene = Scene::draw(&mut rng, &digits);
            let file_name = format!("scene_{id:06}.png");
            let path = images_dir.join(&file_name);
            scene.picture.save(&path).with_context(|| format!("writing {}", path.display()))?;
            images.push(json!({"id": id, "file_name": file_name, "width": CANVAS, "height": CANVAS}));
            for caption in scene.captions {
                annotations.push(json!({"id": annotations.len(), "image_id": id, "caption": caption}));
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
        let file = json!({"info": {"description": "MNIST digit scenes (tchlab caption scenes)", "seed": counts.seed},
                          "images": images, "annotations": annotations});
        let path = out.join("annotations").join(format!("captions_{split}.json"));
        std::fs::create_dir_all(path.parent().expect("has a parent"))?;
        crate::persist::write_atomically(&path, serde_json::to_string(&file)?.as_bytes())?;
    }
    Ok(())
}

struct Scene {
    picture: image::GrayImage,
    captions: Vec<String>,
}

/// "a seven", "an eight".
fn with_article(digit: u8) -> String {
    let word = DIGIT_WORDS[digit as usize];
    if word.starts_with('e') {
        format!("an {word}")
    } else {
        format!("a {word}")
    }
}

impl Scene {
    fn draw(rng: &mut ChaCha8Rng, digits: &RawDigits) -> Self {
        let count = if rng.gen_bool(0.7) { 2 } else { 3 };
        let horizontal = rng.gen_bool(0.5);
        // Cells along one line of the grid, in order (left to right or top to bottom).
        let line = rng.gen_range(0..3);
        let mut along: Vec<usize> = (0..3).collect();
        along.shuffle(rng);
        let mut along = along[..count].to_vec();
        along.sort_unstable();
        let picks: Vec<usize> = (0..count).map(|_| rng.gen_range(0..digits.labels.len())).collect();
        let labels: Vec<u8> = picks.iter().map(|&i| digits.labels[i]).collect();
        let mut picture = image::GrayImage::new(CANVAS as u32, CANVAS as u32);
        for (&pick, &position) in picks.iter().zip(&along) {
            let (row, col) = if horizontal { (line, position) } else { (position, line) };
            let jitter = |rng: &mut ChaCha8Rng| rng.gen_range(-JITTER..=JITTER);
            let top = (MARGIN + row * CELL) as i64 + jitter(rng);
            let left = (MARGIN + col * CELL) as i64 + jitter(rng);
            paste_digit(&mut picture, &digits.pixels[pick * CELL * CELL..(pick + 1) * CELL * CELL], top, left);
        }
        Self { picture, captions: captions(&labels, horizontal) }
    }
}

/// Brightest pixel wins where digits overlap (they touch at most).
fn paste_digit(picture: &mut image::GrayImage, digit: &[u8], top: i64, left: i64) {
    for (k, &value) in digit.iter().enumerate() {
        let (y, x) = (top + (k / CELL) as i64, left + (k % CELL) as i64);
        if (0..CANVAS as i64).contains(&y) && (0..CANVAS as i64).contains(&x) {
            let pixel = picture.get_pixel_mut(x as u32, y as u32);
            pixel.0[0] = pixel.0[0].max(value);
        }
    }
}

/// Two captions for digits in reading order along a row or a column.
fn captions(labels: &[u8], horizontal: bool) -> Vec<String> {
    let forward: Vec<String> = labels.iter().map(|&d| with_article(d)).collect();
    let backward: Vec<String> = forward.iter().rev().cloned().collect();
    match (labels.len(), horizontal) {
        (2, true) => vec![
            format!("{} to the left of {}", forward[0], forward[1]),
            format!("{} to the right of {}", backward[0], backward[1]),
        ],
        (2, false) => {
            vec![format!("{} above {}", forward[0], forward[1]), format!("{} below {}", backward[0], backward[1])]
        }
        (_, true) => vec![
            format!("{} from left to right", forward.join(" then ")),
            format!("{} from right to left", backward.join(" then ")),
        ],
        (_, false) => vec![forward.join(" above "), backward.join(" below ")],
    }
}

/// What a scene caption says: the digits in reading order (left to right,
/// or top to bottom) and whether they stand in a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SceneReading {
    pub digits: Vec<u8>,
    pub horizontal: bool,
}

impl SceneReading {
    /// How many digits, and whether in a row.
    pub fn layout(&self) -> (usize, bool) {
        (self.digits.len(), self.horizontal)
    }
}

/// The scene a caption describes, if it is one of the sentences the scene
/// writer makes (articles included); None for anything else.
pub fn read_caption(caption: &str) -> Option<SceneReading> {
    let words: Vec<&str> = caption.split_whitespace().collect();
    let caption = words.join(" ");
    let mut digits: Vec<u8> =
        words.iter().filter_map(|w| DIGIT_WORDS.iter().position(|d| d == w)).map(|d| d as u8).collect();
    let (horizontal, backwards) = if caption.contains(" to the left of ") || caption.ends_with(" from left to right") {
        (true, false)
    } else if caption.contains(" to the right of ") || caption.ends_with(" from right to left") {
        (true, true)
    } else if caption.contains(" above ") {
        (false, false)
    } else if caption.contains(" below ") {
        (false, true)
    } else {
        return None;
    };
    if backwards {
        digits.reverse();
    }
    // Whatever else the words say, the writer's own sentence for the scene must be this one.
    let written = (2..=3).contains(&digits.len()) && captions(&digits, horizontal).contains(&caption);
    written.then_some(SceneReading { digits, horizontal })
}

/// A count out of a whole, and the fraction it is.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Share {
    pub count: usize,
    pub fraction: f64,
}

impl Share {
    fn of(count: usize, whole: usize) -> Self {
        Self { count, fraction: if whole == 0 { 0.0 } else { count as f64 / whole as f64 } }
    }
}

/// What sampled captions of digit scenes got right, over every scene.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SceneTally {
    pub scenes: usize,
    /// All the scenes' digits.
    pub digits: usize,
    /// How many digits and row or column, as the scene.
    pub layout_right: Share,
    /// The scene's digits, as a multiset (in any order).
    pub digits_right: Share,
    /// Word for word one of the scene's captions.
    pub exact_caption: Share,
    /// Digits (out of all the scenes' digits) named in their own place of
    /// a caption with the right layout.
    pub digits_in_place: Share,
}

/// Counts over every scene, given each scene's sampled caption and its true
/// captions; None unless every true caption is a scene caption and each
/// scene's captions describe one scene.
pub fn tally_scenes(sampled: &[String], truths: &[Vec<String>]) -> Option<SceneTally> {
    assert_eq!(sampled.len(), truths.len(), "one set of true captions per sampled caption");
    let scenes: Vec<SceneReading> = truths.iter().map(|t| scene_of(t)).collect::<Option<_>>()?;
    let (mut layout, mut digits, mut exact, mut in_place) = (0, 0, 0, 0);
    for ((caption, truth), scene) in sampled.iter().zip(truths).zip(&scenes) {
        let words: Vec<&str> = caption.split_whitespace().collect();
        exact += truth.iter().any(|t| t.split_whitespace().eq(words.iter().copied())) as usize;
        let Some(read) = read_caption(caption) else { continue };
        digits += (sorted(&read.digits) == sorted(&scene.digits)) as usize;
        if read.layout() == scene.layout() {
            layout += 1;
            in_place += read.digits.iter().zip(&scene.digits).filter(|(a, b)| a == b).count();
        }
    }
    let all_digits: usize = scenes.iter().map(|s| s.digits.len()).sum();
    let count = scenes.len();
    Some(SceneTally {
        scenes: count,
        digits: all_digits,
        layout_right: Share::of(layout, count),
        digits_right: Share::of(digits, count),
        exact_caption: Share::of(exact, count),
        digits_in_place: Share::of(in_place, all_digits),
    })
}

/// The one scene all of an image's captions describe.
fn scene_of(captions: &[String]) -> Option<SceneReading> {
    let first = read_caption(captions.first()?)?;
    captions[1..].iter().all(|c| read_caption(c).as_ref() == Some(&first)).then_some(first)
}

fn sorted(digits: &[u8]) -> Vec<u8> {
    let mut digits = digits.to_vec();
    digits.sort_unstable();
    digits
}

/// What a scene set consists of inside its folder (and the feature cache
/// `caption train` keeps beside it).
const SCENE_SET: &[&str] = &["train", "val", "annotations", "features"];

/// Refuses a folder that holds anything, unless `overwrite`, which removes
/// an earlier scene set there (and only that) so that no stale scene stays.
fn clear_out(out: &Path, overwrite: bool) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(out) else { return Ok(()) };
    let names: Vec<String> =
        entries.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    if names.is_empty() {
        return Ok(());
    }
    if !overwrite {
        anyhow::bail!("--out {}: the folder is not empty; use --overwrite to replace a scene set there", out.display());
    }
    if let Some(other) = names.iter().find(|n| !SCENE_SET.contains(&n.as_str())) {
        anyhow::bail!(
            "--out {}: holds {other}, which is not part of a scene set; choose another folder",
            out.display()
        );
    }
    for name in names {
        let path = out.join(name);
        std::fs::remove_dir_all(&path).with_context(|| format!("removing the earlier {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{captions, read_caption, tally_scenes, SceneReading};

    #[test]
    fn captions_say_what_is_where_both_ways() {
        assert_eq!(captions(&[7, 2], true), ["a seven to the left of a two", "a two to the right of a seven"]);
        assert_eq!(captions(&[1, 8], false), ["a one above an eight", "an eight below a one"]);
        assert_eq!(
            captions(&[3, 8, 5], true),
            [
                "a three then an eight then a five from left to right",
                "a five then an eight then a three from right to left"
            ]
        );
        assert_eq!(captions(&[1, 4, 9], false), ["a one above a four above a nine", "a nine below a four below a one"]);
    }

    #[test]
    fn every_sentence_the_writer_makes_reads_back_as_its_scene() {
        let mut scenes: Vec<Vec<u8>> = (0..100).map(|k| vec![k / 10, k % 10]).collect();
        scenes.extend((0..1000).map(|k| vec![(k / 100) as u8, (k / 10 % 10) as u8, (k % 10) as u8]));
        for digits in scenes {
            for horizontal in [true, false] {
                let expected = SceneReading { digits: digits.clone(), horizontal };
                for caption in captions(&digits, horizontal) {
                    assert_eq!(read_caption(&caption), Some(expected.clone()), "{caption}");
                }
            }
        }
    }

    #[test]
    fn sentences_the_writer_does_not_make_read_as_none() {
        for caption in [
            "",
            "a seven",
            "a seven to the left of an two",
            "a seven to the left of a two to the left of a one",
            "a seven then a two from left to right",
            "a one above a four below a nine",
            "a one above a four above a nine above a two",
            "a seven to the left of a cat",
            "a photo of a cat",
        ] {
            assert_eq!(read_caption(caption), None, "{caption:?}");
        }
        let reading = read_caption("a five then an eight then a three from right to left").unwrap();
        assert_eq!(reading, SceneReading { digits: vec![3, 8, 5], horizontal: true });
    }

    #[test]
    fn tally_counts_layout_digits_and_exact_captions_over_every_scene() {
        let truths: Vec<Vec<String>> = [(vec![7, 2], true), (vec![1, 4, 9], false), (vec![3, 8], false)]
            .iter()
            .map(|(digits, horizontal)| captions(digits, *horizontal))
            .collect();
        let sampled: Vec<String> = [
            "a two to the right of a seven",   // exact (the second caption)
            "a nine above a four above a one", // layout, digits, one digit in place (the four)
            "a three to the left of a one",    // neither layout nor digits
        ]
        .map(String::from)
        .to_vec();
        let tally = tally_scenes(&sampled, &truths).unwrap();
        assert_eq!(tally.scenes, 3);
        assert_eq!((tally.layout_right.count, tally.digits_right.count, tally.exact_caption.count), (2, 2, 1));
        assert_eq!((tally.digits_in_place.count, tally.digits_in_place.fraction), (3, 3.0 / 7.0));
        assert!((tally.layout_right.fraction - 2.0 / 3.0).abs() < 1e-15);
        // True captions that are not scene captions: no tally.
        assert_eq!(tally_scenes(&sampled[..1], &[vec!["a cat on a mat".to_string()]]), None);
    }
}
