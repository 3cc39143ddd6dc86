//! `finetune audit` on a small real subset of ants/bees with planted
//! problems (tests/fixtures/make_audit_fixtures.py): it must find each
//! planted exact and near duplicate (the cross-split ones as leakage), name
//! the files that do not decode, flag the imbalance, give scikit-learn's
//! balanced class weights, and find nothing among the untouched images.
// Needs the data tier (data/ and models/ fetched; see build.rs).
#![cfg(tchlab_data)]

mod common;
use common::{finetune, one_line_error, python, read_json, repo, run_ok, stdout, temp_dir};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// Writes the planted data set into `dir` and returns the manifest.
fn planted(dir: &Path) -> Value {
    let script = repo().join("tests/fixtures/make_audit_fixtures.py");
    let output = run_ok(Command::new(python()).arg(script).arg(dir).arg(common::ants_bees()));
    serde_json::from_str(&stdout(&output)).unwrap()
}

fn pair_of(manifest: &Value, key: &str) -> (String, String) {
    let pair = manifest[key].as_array().unwrap();
    (pair[0].as_str().unwrap().to_owned(), pair[1].as_str().unwrap().to_owned())
}

fn paths(pair: &Value) -> (String, String) {
    (pair["a"]["path"].as_str().unwrap().to_owned(), pair["b"]["path"].as_str().unwrap().to_owned())
}

/// Image files (by extension, as training finds them) in `dir`.
fn images_in(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "jpg"))
        .count()
}

#[test]
fn the_audit_finds_every_planted_problem_and_nothing_else() {
    let tmp = temp_dir();
    let (data, out) = (tmp.path().join("planted"), tmp.path().join("audit"));
    let manifest = planted(&data);
    let output = run_ok(finetune().args(["audit"]).arg(&data).arg("--out").arg(&out));
    let json = read_json(&out.join("audit.json"));

    // Counts match the folder: files by extension, images those that decode.
    for count in json["counts"].as_array().unwrap() {
        let class = count["class"].as_str().unwrap();
        for split in ["train", "val"] {
            let files = images_in(&data.join(split).join(class));
            let bad = [&manifest["truncated"], &manifest["text"]]
                .iter()
                .filter(|p| p.as_str().unwrap().starts_with(&format!("{split}/{class}/")))
                .count();
            assert_eq!(count[split]["files"], files, "{split}/{class}");
            assert_eq!(count[split]["images"], files - bad, "{split}/{class}");
        }
    }
    // 22 ants and 13 bees decode in train: flagged, with scikit-learn's weights.
    let train_balance = &json["balance"][0];
    assert_eq!((&train_balance["split"], &train_balance["imbalanced"]), (&"train".into(), &true.into()));
    for weight in json["class_weights"].as_array().unwrap() {
        let expected = manifest["class_weights"][weight["class"].as_str().unwrap()].as_f64().unwrap();
        common::assert_close(weight["weight"].as_f64().unwrap(), expected, "class weight");
    }

    // The two files that do not decode, by path, with the decoder's reason.
    let unreadable: Vec<(String, String)> = json["unreadable"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["path"].as_str().unwrap().to_owned(), u["reason"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(unreadable.len(), 2, "{unreadable:?}");
    assert!(unreadable.contains(&(
        manifest["truncated"].as_str().unwrap().into(),
        "cannot decode: truncated JPEG (no end-of-image marker)".into()
    )));
    assert!(unreadable
        .contains(&(manifest["text"].as_str().unwrap().into(), "not an image (unrecognised file header)".into())));

    // Exactly the planted exact copies, one of them across splits.
    let groups: BTreeSet<(String, Vec<String>)> = json["exact_duplicates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            let files = g["files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap().to_owned()).collect();
            (g["scope"].as_str().unwrap().to_owned(), files)
        })
        .collect();
    let (leak, within) = (pair_of(&manifest, "exact_leak"), pair_of(&manifest, "exact_within"));
    let expected: BTreeSet<(String, Vec<String>)> =
        [("across splits".into(), vec![leak.0, leak.1]), ("within train".into(), vec![within.0, within.1])].into();
    assert_eq!(groups, expected);

    // Exactly the planted near duplicates: no pair of untouched real images.
    let near: Vec<&Value> = json["near_duplicates"].as_array().unwrap().iter().collect();
    let found: BTreeSet<(String, String)> = near.iter().map(|p| paths(p)).collect();
    let expected: BTreeSet<(String, String)> =
        ["near_leak", "near_cropped", "near_mirrored"].map(|key| pair_of(&manifest, key)).into();
    assert_eq!(found, expected, "{near:#?}");
    // The resized and cropped copies are close by pHash; the mirrored one by features alone.
    let found_by = |key: &str| {
        let pair = near.iter().find(|p| paths(p) == pair_of(&manifest, key)).unwrap();
        let tests = pair["found_by"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_owned()).collect();
        (tests, pair["phash_distance"].as_u64().unwrap(), pair["cosine"].as_f64().unwrap())
    };
    let (tests, distance, _): (Vec<String>, _, _) = found_by("near_leak");
    assert!(tests.contains(&"phash".into()) && distance <= 8, "{tests:?} {distance}");
    let (tests, distance, _) = found_by("near_cropped");
    assert!(tests.contains(&"phash".into()) && distance <= 8, "{tests:?} {distance}");
    let (tests, distance, cosine) = found_by("near_mirrored");
    assert!(tests == ["features"] && distance > 8 && cosine >= 0.9, "{tests:?} {distance} {cosine}");

    // Leakage: the exact copy and the near duplicate, the train file first.
    let leakage: BTreeSet<(String, String, String)> = json["leakage"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["kind"].as_str().unwrap().to_owned(), paths(p).0, paths(p).1))
        .collect();
    let (exact, near) = (pair_of(&manifest, "exact_leak"), pair_of(&manifest, "near_leak"));
    let expected: BTreeSet<(String, String, String)> =
        [("exact".into(), exact.0, exact.1), ("near".into(), near.0, near.1)].into();
    assert_eq!(leakage, expected);

    // The terminal says it too, and the figure shows the 5 pairs (3 rows).
    let said = stdout(&output);
    assert!(said.contains("leakage (train ↔ val): 2 pair(s)"), "{said}");
    assert!(
        said.contains(&format!("{}: cannot decode: truncated JPEG", manifest["truncated"].as_str().unwrap())),
        "{said}"
    );
    assert!(said.contains("train is imbalanced"), "{said}");
    let figure = image::open(out.join("audit.png")).expect("audit.png decodes").to_rgb8();
    assert_eq!(figure.width(), 2 * 438);
    assert_eq!(figure.height(), 60 + 3 * 298, "three rows of pairs under the title");
}

#[test]
fn phash_is_imagehash_s_on_the_same_grey_pixels() {
    let ants = common::ants_bees().join("train/ants");
    let mut files: Vec<_> = std::fs::read_dir(&ants).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let script = repo().join("tests/fixtures/phash_reference.py");
    let output = stdout(&run_ok(Command::new(python()).arg(script).args(&files[..5])));
    for line in output.lines() {
        let reference: Value = serde_json::from_str(line).unwrap();
        let pixels: Vec<f64> = reference["pixels"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let ours = format!("{:064b}", tchlab::data::phash::phash_of_grey(&pixels));
        assert_eq!(ours, reference["bits"].as_str().unwrap());
    }
}

#[test]
fn a_train_only_folder_is_audited_alone_or_with_the_split_training_holds_out() {
    let tmp = temp_dir();
    let data = tmp.path().join("train-only");
    common::subset(&common::ants_bees(), &data, 6);
    std::fs::remove_dir_all(data.join("val")).unwrap();
    let out = tmp.path().join("alone");
    let said = stdout(&run_ok(finetune().args(["audit", "--no-features"]).arg(&data).arg("--out").arg(&out)));
    assert!(said.contains("train/ alone (no val/ folder)"), "{said}");
    let json = read_json(&out.join("audit.json"));
    assert!(json["counts"].as_array().unwrap().iter().all(|c| c["train"]["images"] == 6 && c["val"].is_null()));
    assert_eq!(json["config"]["arch"], Value::Null);

    let out = tmp.path().join("held-out");
    run_ok(finetune().args(["audit", "--no-features", "--val-split", "0.5"]).arg(&data).arg("--out").arg(&out));
    let json = read_json(&out.join("audit.json"));
    assert!(json["counts"].as_array().unwrap().iter().all(|c| c["train"]["images"] == 3 && c["val"]["images"] == 3));
}

#[test]
fn bad_options_and_folders_are_one_line_errors() {
    let tmp = temp_dir();
    let data = common::small_data();
    let out = tmp.path().join("out");
    let cases: [(&[&str], &str); 3] = [
        (&["--feature-similarity", "1.5"], "--feature-similarity 1.5: expected a cosine above 0 and at most 1"),
        (&["--weights", "nowhere.pth"], "nowhere.pth: weights file not found"),
        (&["--val-split", "1"], "--val-split 1: expected a fraction between 0 and 1"),
    ];
    for (args, expected) in cases {
        let output = finetune().arg("audit").arg(data).args(args).arg("--out").arg(&out).output().unwrap();
        let error = one_line_error(&output);
        assert!(error.contains(expected), "{args:?}: {error}");
    }
    let output = finetune().args(["audit", "--no-features"]).arg(tmp.path()).arg("--out").arg(&out).output().unwrap();
    assert!(one_line_error(&output).contains("train: folder not found"));
}

#[test]
fn a_device_or_a_pipe_named_jpg_is_reported_not_read() {
    let tmp = temp_dir();
    let data = tmp.path().join("hostile");
    common::subset(&common::ants_bees(), &data, 2);
    std::os::unix::fs::symlink("/dev/zero", data.join("train/ants/zero.jpg")).unwrap();
    let pipe = std::ffi::CString::new(data.join("val/bees/pipe.jpg").to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(pipe.as_ptr(), 0o644) }, 0);
    let out = tmp.path().join("out");
    run_ok(finetune().args(["audit", "--no-features"]).arg(&data).arg("--out").arg(&out));
    let json = read_json(&out.join("audit.json"));
    let unreadable: BTreeSet<(&str, &str)> = json["unreadable"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["path"].as_str().unwrap(), u["reason"].as_str().unwrap()))
        .collect();
    let expected: BTreeSet<(&str, &str)> = [
        ("train/ants/zero.jpg", "not a regular file: not read"),
        ("val/bees/pipe.jpg", "not a regular file: not read"),
    ]
    .into();
    assert_eq!(unreadable, expected);
}
