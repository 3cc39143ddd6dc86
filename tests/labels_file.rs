//! `finetune --labels FILE.csv|.tsv`: labels from a file instead of class
//! folders, the same run as the folder layout gives; bad rows reported by
//! line; multi-label data (`--label-delim`) trained with sigmoid outputs and
//! scored as scikit-learn scores it (mAP, F1, exact match), on real images:
//! ants/bees, and MNIST digits paired side by side.
// Needs the data tier (data/ and models/ fetched; see build.rs).
#![cfg(tchlab_data)]

mod common;
use common::{one_line_error, read_json, run_ok, small_data, stdout, temp_dir};

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A quick run into `out` as `common::cached_head_epochs` makes it (a
/// frozen random ResNet-18's cached features, 64 pixels), with no `--data`.
fn cached_head(epochs: usize, out: &Path) -> Command {
    let mut cmd = common::finetune();
    cmd.args(["--arch", "resnet18", "--random-init", "--mode", "feature-extract", "--cache-features"])
        .args(["--epochs", &epochs.to_string(), "--image-size", "64", "--lr", "0.01", "--threads", "1"])
        .args(["--batch-size", "4", "--out"])
        .arg(out);
    cmd
}

/// metrics.csv's rows without their timings: epoch, phase, loss, acc, lr, as written.
fn metrics_without_timings(out: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    text.lines().map(|line| line.split(',').take(5).collect::<Vec<_>>().join(",")).collect()
}

/// The images of [`small_data`] as (path from its root, class, split), sorted.
fn small_data_images() -> Vec<(String, &'static str, &'static str)> {
    let mut images = Vec::new();
    for split in ["train", "val"] {
        for class in ["ants", "bees"] {
            for entry in std::fs::read_dir(small_data().join(split).join(class)).unwrap() {
                let name = entry.unwrap().file_name().to_string_lossy().into_owned();
                images.push((format!("{split}/{class}/{name}"), class, split));
            }
        }
    }
    images.sort();
    images
}

/// A folder holding `imgs`, a link to [`small_data`], for labels files
/// whose paths start at their own folder.
fn folder_with_images() -> tempfile::TempDir {
    let dir = temp_dir();
    std::os::unix::fs::symlink(small_data(), dir.path().join("imgs")).unwrap();
    dir
}

#[test]
fn a_labels_file_trains_as_the_folder_layout_and_resumes_on_its_own() {
    let folder_run = temp_dir();
    run_ok(&mut common::cached_head_epochs(2, 4, folder_run.path()));
    let expected = metrics_without_timings(folder_run.path());
    assert_eq!(expected.len(), 5, "{expected:?}");

    // Columns in another order, rows shuffled, some quoted; paths from the file's folder.
    let dir = folder_with_images();
    let mut rows: Vec<String> = small_data_images()
        .iter()
        .enumerate()
        .map(|(i, (path, class, split))| match i % 3 {
            0 => format!("\"{class}\",{split},\"imgs/{path}\""),
            _ => format!("{class},{split},imgs/{path}"),
        })
        .collect();
    rows.reverse();
    let labels = dir.path().join("labels.csv");
    std::fs::write(&labels, format!("label,split,path\n{}\n", rows.join("\n"))).unwrap();
    let labels_run = temp_dir();
    let output = run_ok(cached_head(2, labels_run.path()).arg("--labels").arg(&labels));
    let log = stdout(&output);
    assert!(log.contains("train 16 images, val 16 images (the val rows)"), "{log}");
    assert_eq!(metrics_without_timings(labels_run.path()), expected, "the labels file changed the run");
    // eval takes the file's val rows: the folder layout's val split.
    let eval = |source: &[&std::ffi::OsStr]| -> Value {
        let output = run_ok(
            common::finetune()
                .args(["eval", "--json", "--checkpoint"])
                .arg(labels_run.path())
                .args(source)
                .arg("--out")
                .arg(temp_dir().path()),
        );
        serde_json::from_str(&stdout(&output)).unwrap()
    };
    let by_rows = eval(&["--labels".as_ref(), labels.as_os_str()]);
    let by_folder = eval(&["--data".as_ref(), small_data().join("val").as_os_str()]);
    assert_eq!((&by_rows["images"], &by_rows["confusion"]), (&by_folder["images"], &by_folder["confusion"]));
    assert_eq!((&by_rows["accuracy"], &by_rows["loss"]), (&by_folder["accuracy"], &by_folder["loss"]));

    // A TSV with a byte-order mark, paths from --data; one epoch, then resumed with no option but the epochs.
    let tsv = dir.path().join("labels.tsv");
    let tsv_rows: Vec<String> = small_data_images().iter().map(|(p, c, s)| format!("{p}\t{c}\t{s}")).collect();
    std::fs::write(&tsv, format!("\u{feff}path\tlabel\tsplit\n{}\n", tsv_rows.join("\n"))).unwrap();
    let resumed = temp_dir();
    run_ok(cached_head(1, resumed.path()).arg("--labels").arg(&tsv).arg("--data").arg(small_data()));
    run_ok(common::finetune().arg("--resume").arg(resumed.path()).args(["--epochs", "2"]));
    assert_eq!(metrics_without_timings(resumed.path()), expected, "a resumed labels run differs");
    let config = std::fs::read_to_string(resumed.path().join("run.toml")).unwrap();
    assert!(config.contains(&format!("labels = {:?}", tsv.display().to_string())), "{config}");

    // The file changed: the run does not go on over it.
    std::fs::write(&tsv, format!("path\tlabel\tsplit\n{}\n", tsv_rows[1..].join("\n"))).unwrap();
    let output = common::finetune().arg("--resume").arg(resumed.path()).args(["--epochs", "3"]).output().unwrap();
    let error = one_line_error(&output);
    assert!(error.contains(&format!("--labels {}: the file changed since this run started", tsv.display())), "{error}");
}

#[test]
fn bad_rows_are_reported_by_line_skipped_and_summarised_or_refused_with_strict() {
    let dir = folder_with_images();
    let root = dir.path();
    std::fs::write(root.join("notes.jpg.txt"), "not an image").unwrap();
    let fifo = root.join("pipe.jpg");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid C string; mkfifo only creates the file.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0, "mkfifo");
    let images = small_data_images();
    let first = format!("imgs/{}", images[0].0);
    // (row, the reason its line must give), one row of each kind of fault.
    let bad = [
        ("imgs/train/ants/absent.jpg,ants,train".to_owned(), "no such file"),
        ("imgs/train/ants,ants,train".to_owned(), "a folder, not an image file"),
        ("notes.jpg.txt,ants,train".to_owned(), "not an image file by its extension"),
        ("/dev/null,ants,train".to_owned(), "not a regular file"),
        ("pipe.jpg,bees,val".to_owned(), "not a regular file"),
        (format!("{first},bees,train"), "is already on line 2"),
        (format!("{first}, ,train"), "empty label"),
        (format!("{first},ants,test"), "split \"test\" is neither train nor val"),
        (format!("{first},ants"), "2 field(s) where the header has 3"),
        (format!("\"{first}\"x,ants,train"), "text after a quoted field's closing quote"),
        (",ants,train".to_owned(), "empty path"),
    ];
    let mut lines = vec!["path,label,split".to_owned()];
    lines.extend(images.iter().take(1).map(|(p, c, s)| format!("imgs/{p},{c},{s}")));
    lines.extend(bad.iter().map(|(row, _)| row.clone()));
    lines.extend(images.iter().skip(1).map(|(p, c, s)| format!("imgs/{p},{c},{s}")));
    // Beyond the first 20 bad rows, the rest are counted.
    lines.extend((0..12).map(|i| format!("imgs/missing_{i}.jpg,bees,val")));
    let labels = root.join("labels.csv");
    std::fs::write(&labels, lines.join("\n") + "\n").unwrap();

    let out = temp_dir();
    let output = run_ok(cached_head(1, out.path()).arg("--labels").arg(&labels));
    let stderr = common::stderr_after_banner(&output);
    for (k, (_, reason)) in bad.iter().enumerate() {
        let line = k + 3;
        let said = format!("skipped {} line {line}: ", labels.display());
        let reported =
            stderr.lines().find(|l| l.starts_with(&said)).unwrap_or_else(|| panic!("no {said} in\n{stderr}"));
        assert!(reported.contains(reason), "line {line}: {reported}");
    }
    assert!(stderr.contains("… and 3 more bad row(s)\n"), "{stderr}");
    let summary_line = format!(
        "{}: 23 of 55 row(s) skipped (1 wrong field count, 1 bad quoting, 1 empty path, 13 missing file, 4 not an image file, 1 empty label, 1 unknown split, 1 duplicate image)",
        labels.display()
    );
    assert!(stderr.contains(&summary_line), "{stderr}");
    let summary = read_json(&out.path().join("summary.json"));
    assert_eq!(summary["bad_rows"].as_array().unwrap().len(), 23);
    assert_eq!((summary["train_images"].as_u64(), summary["val_images"].as_u64()), (Some(16), Some(16)));

    let strict = cached_head(1, &root.join("strict")).arg("--strict").arg("--labels").arg(&labels).output().unwrap();
    let error = one_line_error(&strict);
    let expected = format!("error: {} line 3: {}", labels.display(), root.join("imgs/train/ants/absent.jpg").display());
    assert!(error.starts_with(&expected) && error.trim_end().ends_with("(missing file; --strict)"), "{error}");
}

#[test]
fn a_labels_file_that_cannot_be_used_is_one_line_naming_it() {
    let dir = folder_with_images();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let image = format!("imgs/{}", small_data_images()[0].0);
    let cases: Vec<(PathBuf, Vec<&str>, String)> = vec![
        (write("labels.txt", "path,label\n"), vec![], "name a .csv or .tsv file".into()),
        (write("no_label.csv", "path,split\na.jpg,train\n"), vec![], "line 1: columns [\"path\", \"split\"]".into()),
        (write("extra.csv", "path,label,notes\n"), vec![], "line 1: unknown column \"notes\"".into()),
        (write("no_val.csv", &format!("path,label\n{image},ants\n")), vec![], "no val rows".into()),
        (
            write("val_rows.csv", &format!("path,label,split\n{image},ants,val\n")),
            vec!["--val-split", "0.2"],
            "has val rows (its split column); drop --val-split".into(),
        ),
        (
            write("val_only.csv", &format!("path,label,split\n{image},ants,val\n")),
            vec![],
            "label \"ants\" has no train rows".into(),
        ),
    ];
    for (labels, extra, expected) in cases {
        let output =
            cached_head(1, &dir.path().join("out")).arg("--labels").arg(&labels).args(&extra).output().unwrap();
        let error = one_line_error(&output);
        assert!(error.contains(&labels.display().to_string()) && error.contains(&expected), "{error}");
    }
    // Options that do not fit are usage errors (exit 2), as every bad option value.
    let refused = [
        (vec!["--label-delim", ";"], "--label-delim ';': multi-label data comes from a labels file"),
        (vec!["--threshold", "0.3"], "--threshold 0.3: only multi-label runs (--label-delim)"),
        (vec!["--labels", "x.csv", "--val-dir", "valid"], "--val-dir \"valid\" names a folder of the folder layout"),
    ];
    for (args, expected) in refused {
        let output = cached_head(1, &dir.path().join("out")).args(&args).output().unwrap();
        let error = common::one_line_exit(&output, 2);
        assert!(error.starts_with(&format!("error: {expected}")), "{error}");
    }
}

/// Writes the MNIST digit-pair set (`tests/fixtures/make_digit_pairs.py`)
/// into `dir`: its labels.csv.
fn digit_pairs(dir: &Path, train: usize, val: usize) -> PathBuf {
    let script = common::repo().join("tests/fixtures/make_digit_pairs.py");
    let (train, val) = (train.to_string(), val.to_string());
    run_ok(Command::new(common::python()).arg(script).arg(common::mnist_dir()).arg(dir).args([&train, &val, "3"]));
    dir.join("labels.csv")
}

/// scikit-learn's scores of a scores file (`tests/fixtures/check_multilabel_scores.py`).
fn sklearn_scores(scores_csv: &Path, threshold: f64) -> Value {
    let script = common::repo().join("tests/fixtures/check_multilabel_scores.py");
    let output = run_ok(Command::new(common::python()).arg(script).arg(scores_csv).arg(threshold.to_string()));
    serde_json::from_str(&stdout(&output)).unwrap()
}

fn assert_within(ours: &Value, theirs: &Value, what: &str) {
    let (ours, theirs) = (ours.as_f64().unwrap(), theirs.as_f64().unwrap());
    assert!((ours - theirs).abs() <= 1e-6, "{what}: ours {ours}, scikit-learn's {theirs}");
}

#[test]
fn multi_label_digit_pairs_train_and_score_as_scikit_learn_does() {
    let data = temp_dir();
    let labels = digit_pairs(data.path(), 240, 80);
    let out = temp_dir();
    let weights = common::lite0_weights();
    let output = run_ok(
        common::finetune()
            .args(["--labels", labels.to_str().unwrap(), "--label-delim", ";", "--arch", "efficientnet-lite0"])
            .args(["--weights", weights.to_str().unwrap(), "--mode", "feature-extract", "--cache-features"])
            .args(["--image-size", "96", "--epochs", "8", "--batch-size", "16", "--lr", "0.02", "--threshold", "0.4"])
            .arg("--out")
            .arg(out.path()),
    );
    let log = stdout(&output);
    assert!(log.contains("classes [\"0\", \"1\", \"2\", \"3\", \"4\"] | train 240 images, val 80 images"), "{log}");
    let summary = read_json(&out.path().join("summary.json"));
    let ours = &summary["multi_label"];

    // The training loss falls, and val mAP is far above chance (each class's share of the images).
    let train_losses: Vec<f64> = common::metrics(out.path())
        .iter()
        .filter(|(row, _, _)| row.ends_with(" train"))
        .map(|(_, loss, _)| *loss)
        .collect();
    assert!(train_losses[7] < 0.7 * train_losses[0], "train loss {train_losses:?}");
    let supports: Vec<f64> =
        ours["per_class"].as_array().unwrap().iter().map(|c| c["support"].as_f64().unwrap()).collect();
    let chance = supports.iter().sum::<f64>() / supports.len() as f64 / 80.0;
    let map = summary["best_val_map"].as_f64().unwrap();
    assert!(map > 0.8 && map > chance + 0.35, "mAP {map}, chance {chance}");
    assert_eq!(ours["map"], summary["best_val_map"]);

    // scikit-learn's scores of the kept epoch's saved probabilities are ours.
    let theirs = sklearn_scores(&out.path().join("val_scores.csv"), 0.4);
    assert_eq!(theirs["images"], 80);
    for key in ["map", "macro_f1", "micro_f1", "exact_match"] {
        assert_within(&ours[key], &theirs[key], key);
    }
    for (class, ap) in ours["per_class"].as_array().unwrap().iter().zip(theirs["per_class_ap"].as_array().unwrap()) {
        assert_within(&class["average_precision"], ap, &format!("class {} AP", class["class"]));
    }
    assert_eq!(summary["best_val_acc"], ours["exact_match"]);
    let kept = summary["best_epoch"].as_u64().unwrap() as usize;
    let rows = std::fs::read_to_string(out.path().join("multilabel_metrics.csv")).unwrap();
    let best_map =
        rows.lines().skip(1).map(|r| r.split(',').nth(3).unwrap().parse::<f64>().unwrap()).fold(0.0, f64::max);
    let kept_row: Vec<&str> = rows.lines().nth(1 + kept).unwrap().split(',').collect();
    assert_eq!(kept_row[3].parse::<f64>().unwrap(), best_map, "the kept epoch is the best mAP's: {rows}");

    // eval scores the val rows alike; predict shows the labels above the threshold.
    let eval_out = temp_dir();
    let eval = run_ok(
        common::finetune()
            .args(["eval", "--json", "--checkpoint"])
            .arg(out.path())
            .arg("--labels")
            .arg(&labels)
            .arg("--out")
            .arg(eval_out.path()),
    );
    let evaluation: Value = serde_json::from_str(&stdout(&eval)).unwrap();
    assert_eq!(evaluation["images"], 80);
    assert!((evaluation["map"].as_f64().unwrap() - map).abs() < 1e-5, "eval mAP {} vs {map}", evaluation["map"]);
    assert_eq!(evaluation["threshold"], 0.4);
    let image = data.path().join("images/pair_0300.png");
    let predicted = stdout(&run_ok(common::finetune().args(["predict", "--checkpoint"]).arg(out.path()).arg(&image)));
    let line = predicted.lines().find(|l| l.starts_with(&image.display().to_string())).unwrap();
    let cells: Vec<&str> = line.split("  ").skip(1).collect();
    assert!(!cells.is_empty() && !line.contains("no label above"), "{line}");
    for cell in cells {
        let (class, probability) = cell.split_once(' ').unwrap();
        assert!(class.parse::<u8>().unwrap() < 5 && probability.parse::<f64>().unwrap() > 0.4, "{line}");
    }
}

#[test]
fn multi_label_full_mode_mixes_multi_hot_targets_and_refuses_what_does_not_apply() {
    let data = temp_dir();
    let labels = digit_pairs(data.path(), 24, 8);
    let run = |extra: &[&str], out: &Path| {
        let mut cmd = common::finetune();
        cmd.args(["--labels", labels.to_str().unwrap(), "--label-delim", ";", "--arch", "resnet18", "--random-init"])
            .args(["--mode", "full", "--image-size", "32", "--epochs", "2", "--batch-size", "8", "--threads", "1"])
            .args(extra)
            .arg("--out")
            .arg(out);
        cmd.output().unwrap()
    };
    let out = temp_dir();
    let output = run(&["--mixup", "0.4", "--cutmix", "1.0"], out.path());
    assert!(output.status.success(), "{}", common::text(&output.stderr));
    let summary = read_json(&out.path().join("summary.json"));
    assert_eq!(summary["epochs_run"], 2);
    let map = summary["best_val_map"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&map) && summary["multi_label"]["per_class"].as_array().unwrap().len() == 5);
    for (row, loss, acc) in common::metrics(out.path()) {
        assert!(loss.is_finite() && loss > 0.0 && (0.0..=1.0).contains(&acc), "{row}: {loss} {acc}");
    }
    let error = common::one_line_exit(&run(&["--label-smoothing", "0.1"], temp_dir().path()), 2);
    assert!(error.starts_with("error: --label-smoothing 0.1: smooths cross-entropy's one-hot targets"), "{error}");
}
