//! The `caption` tool end to end: the course's overfit check on a
//! `coco_captioning` fixture written by h5py, an image folder made by
//! `caption scenes` with Lite0 features, `caption sample`, and bad inputs.
// Needs the data tier (data/ and models/ fetched; see build.rs).
#![cfg(tchlab_data)]

use serde_json::Value;
use std::path::PathBuf;
use tchlab::caption::scenes::read_caption;

mod common;
use common::{caption, course_fixture, read_json, repo, run_ok};

/// The course's overfit check: 50 training captions, Adam 5e-3, lr decay
/// 0.95, batch 25, 50 epochs, hidden 512, word vectors 256.
fn overfit(cell: &str, max_final_loss: f64) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("coco_captioning");
    course_fixture(&data, &[]);
    let out = tmp.path().join("run");
    let recipe = "--max-train 50 --epochs 50 --batch-size 25 --lr 5e-3 --lr-decay 0.95 --hidden 512 --wordvec 256 --keep last --threads 1";
    run_ok(
        caption().args(["train", "--cell", cell, "--data"]).arg(&data).args(recipe.split(' ')).arg("--out").arg(&out),
    );
    let summary = read_json(&out.join("summary.json"));
    assert_eq!(summary["train_captions"], 50);
    let final_loss = summary["final_train_loss"].as_f64().unwrap();
    assert!(final_loss < max_final_loss, "{cell}: final training loss {final_loss}, wanted < {max_final_loss}");
    let samples = read_json(&out.join("samples.json"));
    let train: Vec<&Value> = samples.as_array().unwrap().iter().filter(|s| s["split"] == "train").collect();
    assert_eq!(train.len(), 50, "every training image sampled");
    for s in &train {
        assert_eq!(s["sampled"], s["truths"][0], "{cell}: greedy sample of a training image ({})", s["image"]);
    }
    // Features only: the figure says so and still shows the captions.
    assert!(out.join("samples_train.png").is_file() && out.join("loss.png").is_file());
    let scores = summary["scores"].as_array().unwrap();
    assert_eq!(scores.len(), 3, "ours and two baselines");
}

#[test]
fn rnn_overfits_fifty_training_captions() {
    overfit("rnn", 0.1);
}

#[test]
fn lstm_overfits_fifty_training_captions() {
    overfit("lstm", 0.5);
}

#[test]
fn bad_course_files_are_one_line_errors_naming_the_dataset() {
    let tmp = tempfile::tempdir().unwrap();
    for (flag, expected) in [
        ("--bad-token", "train_captions: values from 0 to 41, outside 0..34 (the vocabulary's size)"),
        ("--no-val-idxs", "coco2014_captions.h5: no dataset val_image_idxs"),
    ] {
        let data = tmp.path().join(flag.trim_start_matches('-'));
        course_fixture(&data, &[flag]);
        let output = caption().args(["train", "--epochs", "1", "--data"]).arg(&data).output().unwrap();
        let stderr = common::stderr_after_banner(&output);
        assert_eq!(output.status.code(), Some(1), "{flag}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{flag}: one line, got {stderr}");
        assert!(stderr.contains(expected), "{flag}: {stderr}");
    }
    // A file that is not HDF5 at all.
    let data = tmp.path().join("not-h5");
    course_fixture(&data, &[]);
    std::fs::write(data.join("train2014_vgg16_fc7_pca.h5"), b"not an hdf5 file").unwrap();
    let output = caption().args(["train", "--epochs", "1", "--data"]).arg(&data).output().unwrap();
    let stderr = common::stderr_after_banner(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("train2014_vgg16_fc7_pca.h5: not a readable HDF5 file"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

/// A small digit-scene folder, made once per test binary.
fn scenes() -> PathBuf {
    let dir = repo().join("target/test-fixtures/caption-scenes");
    if !dir.join("annotations/captions_val.json").exists() {
        run_ok(caption().args(["scenes", "--train", "40", "--val", "10", "--seed", "3", "--out"]).arg(&dir));
    }
    dir
}

/// The scene counts of `summary.json` (ours and both baselines) are over
/// all 10 val scenes, and ours are what `samples.json` (which lists every
/// val scene of this small set) says.
fn scene_counts_cover_every_val_scene(out: &std::path::Path) {
    let summary = read_json(&out.join("summary.json"));
    let scores = summary["scores"].as_array().unwrap();
    for row in scores {
        assert!(row["rouge_l"].as_f64().is_some() && row["cider_d"].as_f64().is_some(), "{row}");
        assert_eq!(row["scenes"]["scenes"], 10, "{row}");
        assert_eq!(row["scenes"]["digits"], scores[0]["scenes"]["digits"]);
    }
    let samples = read_json(&out.join("samples.json"));
    let val: Vec<&Value> = samples.as_array().unwrap().iter().filter(|s| s["split"] == "val").collect();
    assert_eq!(val.len(), 10);
    let (mut layout, mut digits, mut exact) = (0, 0, 0);
    for sample in val {
        let sampled = sample["sampled"].as_str().unwrap();
        exact += sample["truths"].as_array().unwrap().iter().any(|t| t == sampled) as usize;
        let truth = read_caption(sample["truths"][0].as_str().unwrap()).expect("a scene caption");
        let Some(read) = read_caption(sampled) else { continue };
        layout += (read.layout() == truth.layout()) as usize;
        let sorted = |mut d: Vec<u8>| {
            d.sort();
            d
        };
        digits += (sorted(read.digits) == sorted(truth.digits)) as usize;
    }
    let ours = &scores[0]["scenes"];
    assert_eq!(ours["exact_caption"]["count"], exact, "{ours}");
    assert_eq!(ours["layout_right"]["count"], layout, "{ours}");
    assert_eq!(ours["digits_right"]["count"], digits, "{ours}");
    let results = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(results.contains("| ROUGE-L | CIDEr-D |") && results.contains("Of the 10 val scenes"), "{results}");
}

#[test]
fn image_folder_trains_on_backbone_features_and_captions_new_images() {
    let data = scenes();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let train = |extra: &[&str]| {
        let mut cmd = caption();
        cmd.args([
            "train",
            "--cell",
            "lstm",
            "--epochs",
            "3",
            "--hidden",
            "32",
            "--wordvec",
            "16",
            "--threads",
            "1",
            "--data",
        ])
        .arg(&data)
        .arg("--out")
        .arg(&out)
        .args(extra);
        run_ok(&mut cmd)
    };
    let first = String::from_utf8_lossy(&train(&[]).stdout).into_owned();
    // Issue 27, finding 14: the BLEU table's columns line up.
    let header = first.lines().find(|l| l.starts_with("Val BLEU")).expect("a BLEU table");
    let row = first.lines().find(|l| l.starts_with("LSTM (ours)")).expect("our row");
    assert_eq!(header.find("BLEU-1"), row.find("0."), "{header}\n{row}");
    for file in
        ["best_model.safetensors", "loss.png", "loss_history.csv", "epochs.csv", "results.md", "samples_val.png"]
    {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    let summary = read_json(&out.join("summary.json"));
    assert_eq!(summary["train_captions"], 80, "two captions per scene");
    assert_eq!(summary["val_images"], 10);
    scene_counts_cover_every_val_scene(&out);
    // The second run (replacing the first) reads the cached features.
    let second = train(&["--overwrite"]);
    assert!(String::from_utf8_lossy(&second.stderr).contains("40 image features from"), "cache not used");
    // `caption eval` scores the kept model again: greedy as the run scored
    // it, and beam search into a file of its own.
    let greedy = run_ok(caption().args(["eval", "--threads", "1", "--checkpoint"]).arg(&out));
    assert!(String::from_utf8_lossy(&greedy.stdout).contains("LSTM (ours)"));
    let evaluation = read_json(&out.join("evaluation-beam1.json"));
    assert_eq!(evaluation["scores"], summary["scores"], "eval's greedy scores are the run's");
    run_ok(caption().args(["eval", "--threads", "1", "--beam", "3", "--checkpoint"]).arg(&out));
    let beam = read_json(&out.join("evaluation-beam3.json"));
    assert_eq!(beam["scores"][0]["method"], "LSTM, beam 3 (ours)");
    assert_eq!(beam["scores"][1], summary["scores"][1], "the baselines do not depend on the beam");
    // The saved model captions image files: words of its own vocabulary only.
    let image = data.join("val/scene_000000.png");
    let output = run_ok(caption().args(["sample", "--json", "--checkpoint"]).arg(&out).arg(&image));
    let rows: Value = serde_json::from_slice(&output.stdout).unwrap();
    let sampled = rows[0]["caption"].as_str().unwrap();
    let vocabulary = ["a", "an", "to", "the", "left", "right", "of", "above", "below", "then", "from", "<UNK>"];
    let digits = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"];
    assert!(!sampled.is_empty(), "empty caption");
    for word in sampled.split_whitespace() {
        assert!(vocabulary.contains(&word) || digits.contains(&word), "{word:?} in {sampled:?}");
    }
}

#[test]
fn scenes_are_deterministic_and_captioned_from_their_layout() {
    let tmp = tempfile::tempdir().unwrap();
    for name in ["a", "b"] {
        run_ok(
            caption().args(["scenes", "--train", "5", "--val", "3", "--seed", "9", "--out"]).arg(tmp.path().join(name)),
        );
    }
    let read = |name: &str, file: &str| std::fs::read(tmp.path().join(name).join(file)).unwrap();
    assert_eq!(read("a", "annotations/captions_train.json"), read("b", "annotations/captions_train.json"));
    assert_eq!(read("a", "val/scene_000002.png"), read("b", "val/scene_000002.png"));
    let captions = read_json(&tmp.path().join("a/annotations/captions_val.json"));
    assert_eq!(captions["images"].as_array().unwrap().len(), 3);
    assert_eq!(captions["annotations"].as_array().unwrap().len(), 6);

    // Issue 27, finding 12: a second set into the same folder is refused;
    // --overwrite replaces it whole (no scene of the larger set stays).
    let again =
        caption().args(["scenes", "--train", "2", "--val", "1", "--out"]).arg(tmp.path().join("a")).output().unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("the folder is not empty; use --overwrite"));
    run_ok(caption().args(["scenes", "--train", "2", "--val", "1", "--overwrite", "--out"]).arg(tmp.path().join("a")));
    assert_eq!(std::fs::read_dir(tmp.path().join("a/val")).unwrap().count(), 1, "no stale val scenes");
}

/// Issue 27, defect: the feature cache was keyed by path and file size only,
/// so an image edited in place (same size) kept its stale features.
#[test]
fn an_image_edited_in_place_invalidates_the_feature_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("scenes");
    run_ok(caption().args(["scenes", "--train", "6", "--val", "3", "--seed", "5", "--out"]).arg(&data));
    let out = tmp.path().join("run");
    let train = || {
        let mut cmd = caption();
        cmd.args(["train", "--epochs", "1", "--hidden", "8", "--wordvec", "8", "--threads", "1", "--overwrite"])
            .arg("--data")
            .arg(&data)
            .arg("--out")
            .arg(&out);
        String::from_utf8_lossy(&run_ok(&mut cmd).stderr).into_owned()
    };
    let cached = "train: 6 image features from";
    assert!(!train().contains(cached), "the first run computes the features");
    assert!(train().contains(cached), "the second run reads them");
    let image = std::fs::read_dir(data.join("train")).unwrap().next().unwrap().unwrap().path();
    let bytes = std::fs::read(&image).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&image, &bytes).unwrap();
    assert!(!train().contains(cached), "an edited image's features are computed again");
}

/// Issue 27, finding 8: on an image folder `--max-train` and `--image-dir`
/// (the course folder's options) were silently ignored.
#[test]
fn course_folder_options_on_an_image_folder_are_refused_in_one_line() {
    let data = scenes();
    for (flag, value) in [("--max-train", "5"), ("--image-dir", "/nonexist")] {
        let output = caption().args(["train", "--epochs", "1", flag, value, "--data"]).arg(&data).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{flag}: {stderr}");
        assert_eq!(stderr.lines().filter(|l| l.starts_with("error")).count(), 1, "{stderr}");
        assert!(stderr.contains(&format!("{flag} is for the course's coco_captioning folder")), "{stderr}");
    }
}

/// Issue 27, finding 15: a folder that is no caption set got "reading
/// …/annotations: No such file or directory"; it is one line saying what a
/// caption set holds.
#[test]
fn a_folder_that_is_no_caption_set_says_what_one_holds() {
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    image::RgbImage::new(8, 8).save(photos.join("a.png")).unwrap();
    let output = caption()
        .args(["train", "--epochs", "1", "--data"])
        .arg(&photos)
        .arg("--out")
        .arg(tmp.path().join("run"))
        .output()
        .unwrap();
    let stderr = common::stderr_after_banner(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("photos: not a caption set: it has no annotations/ folder"), "{stderr}");
    assert!(!tmp.path().join("run").exists(), "a refused run leaves no folder");
}

/// Issue 27, finding 9: one image that does not decode aborted `caption
/// train` (finetune skips and reports one); it is skipped with its captions
/// and named, and the run trains on the rest.
#[test]
fn an_image_that_does_not_decode_is_skipped_with_its_captions() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("scenes");
    for sub in ["annotations", "train", "val"] {
        std::fs::create_dir_all(data.join(sub)).unwrap();
        for entry in std::fs::read_dir(scenes().join(sub)).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, data.join(sub).join(path.file_name().unwrap())).unwrap();
        }
    }
    let annotations = read_json(&data.join("annotations/captions_train.json"));
    let first = &annotations["images"][0];
    let of_first =
        annotations["annotations"].as_array().unwrap().iter().filter(|a| a["image_id"] == first["id"]).count();
    let total = annotations["annotations"].as_array().unwrap().len();
    let broken = data.join("train").join(first["file_name"].as_str().unwrap());
    std::fs::write(&broken, b"\x89PNG but not really").unwrap();
    let out = tmp.path().join("run");
    let output = run_ok(
        caption()
            .args(["train", "--epochs", "1", "--hidden", "16", "--wordvec", "8", "--threads", "1", "--data"])
            .arg(&data)
            .arg("--out")
            .arg(&out),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("skipped {}: ", broken.display())) && stderr.contains("(and its captions)"),
        "{stderr}"
    );
    assert_eq!(read_json(&out.join("summary.json"))["train_captions"], total - of_first);
}

/// Issue 27, finding 7: `caption sample` stopped at the first unreadable
/// file, refused folders, had no `--allow-errors`, and needed the backbone
/// weights at their training-time path with no `--weights`.
#[test]
fn sample_takes_folders_names_unreadable_files_and_takes_weights_from_elsewhere() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    run_ok(
        caption()
            .args(["train", "--epochs", "1", "--hidden", "16", "--wordvec", "8", "--threads", "1", "--data"])
            .arg(scenes())
            .arg("--out")
            .arg(&out),
    );
    let images = tmp.path().join("images");
    std::fs::create_dir_all(&images).unwrap();
    for name in ["scene_000000.png", "scene_000001.png"] {
        std::fs::copy(scenes().join("val").join(name), images.join(name)).unwrap();
    }
    let broken = images.join("broken.png");
    std::fs::write(&broken, b"not a png").unwrap();
    let moved = tmp.path().join("weights.pth");
    std::fs::copy(common::lite0_weights(), &moved).unwrap();
    let sample = |extra: &[&str]| {
        caption()
            .args(["sample", "--json", "--checkpoint"])
            .arg(&out)
            .arg(&images)
            .arg("--weights")
            .arg(&moved)
            .args(extra)
            .output()
            .unwrap()
    };
    let refused = sample(&[]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("1 of 3 file(s) could not be read as images (--allow-errors"), "{stderr}");
    let rows: Value = serde_json::from_slice(&refused.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 3, "{rows}");
    let broken_row = rows.as_array().unwrap().iter().find(|r| r["image"] == broken.to_str().unwrap()).unwrap();
    assert!(broken_row["error"].is_string() && broken_row.get("caption").is_none(), "{broken_row}");
    assert_eq!(rows.as_array().unwrap().iter().filter(|r| r["caption"].is_string()).count(), 2, "{rows}");
    let allowed = sample(&["--allow-errors"]);
    assert!(allowed.status.success(), "{}", String::from_utf8_lossy(&allowed.stderr));

    let missing = caption()
        .args(["sample", "--checkpoint"])
        .arg(&out)
        .arg(&images)
        .args(["--weights", "/nonexistent/w.pth"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(missing.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("/nonexistent/w.pth: the backbone's weights are not there (give --weights FILE)"),
        "{stderr}"
    );
}
