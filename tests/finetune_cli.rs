//! `finetune` as a user runs it: on the real ants/bees images, with real
//! EfficientNet-Lite0 weights and torchvision-written ResNet checkpoints.
// Needs the data tier (data/ and models/ fetched; see build.rs).
#![cfg(tchlab_data)]

mod common;
use common::{png_size, stdout, temp_dir};

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// (phase, loss, acc) per metrics.csv row, header checked.
fn metrics(out: &Path) -> Vec<(String, f64, f64)> {
    let text = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("epoch,phase,loss,acc,lr,seconds,data_wait_seconds,macro_f1,balanced_acc"));
    lines
        .map(|l| {
            let cells: Vec<&str> = l.split(',').collect();
            (cells[1].to_owned(), cells[2].parse().unwrap(), cells[3].parse().unwrap())
        })
        .collect()
}

fn summary(out: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap()
}

fn train(args: &[&str], data: &Path, out: &Path) -> Output {
    common::run_ok(common::finetune().args(args).arg("--data").arg(data).arg("--out").arg(out))
}

fn eval_accuracy(checkpoint: &Path, split: &Path, out: &Path) -> Value {
    let output = common::run_ok(
        common::finetune()
            .args(["eval", "--json", "--checkpoint"])
            .arg(checkpoint)
            .arg("--data")
            .arg(split)
            .arg("--out")
            .arg(out),
    );
    serde_json::from_str(&stdout(&output)).unwrap()
}

/// The files every finished run leaves, checked for content.
fn assert_run_outputs(out: &Path, epochs: usize) {
    let rows = metrics(out);
    assert_eq!(rows.len(), 2 * epochs, "one train and one val row per epoch");
    for (phase, loss, acc) in &rows {
        assert!(loss.is_finite() && *loss >= 0.0 && (0.0..=1.0).contains(acc), "{phase} {loss} {acc}");
    }
    let s = summary(out);
    assert_eq!(s["epochs"], epochs);
    let best_from_rows = rows.iter().filter(|r| r.0 == "val").map(|r| r.2).fold(0.0, f64::max);
    assert!((s["best_val_acc"].as_f64().unwrap() - best_from_rows).abs() < 1e-6);
    assert_eq!(png_size(&out.join("loss.png")), (900, 600));
    assert_eq!(png_size(&out.join("accuracy.png")), (900, 600));
    let (w, h) = png_size(&out.join("val_predictions.png"));
    assert!(w == 6 * 224 && h >= 224, "grid {w}x{h}");
    assert!(out.join("best_model.safetensors").exists());
}

#[test]
fn help_lists_the_options() {
    common::assert_help_lists(
        common::finetune().arg("--help"),
        &[
            "--mode",
            "--arch",
            "--data",
            "--weights",
            "--epochs",
            "--batch-size",
            "--lr",
            "--momentum",
            "--step-size",
            "--gamma",
            "--seed",
            "--device",
            "--out",
            "--workers",
            "--cache-features",
            "--cache-mb",
            "--amp",
            "--resume",
            "predict",
            "eval",
        ],
    );
    common::assert_help_lists(common::finetune().args(["predict", "--help"]), &["--checkpoint", "--json", "--top-k"]);
}

#[test]
fn amp_on_the_cpu_is_refused_in_one_line() {
    let output =
        common::finetune().args(["--device", "cpu", "--amp", "--epochs", "1", "--random-init"]).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let err = common::stderr_after_banner(&output);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.starts_with("error: --amp: mixed precision runs on CUDA only"), "{err}");
}

/// A CUDA device this machine lacks is one clear line: without a GPU,
/// `--device cuda`; on a GPU machine, the ordinal after its last GPU (issue
/// 27: this test used to return early there, checking nothing).
#[test]
fn a_cuda_device_this_machine_lacks_is_one_clear_line() {
    let (device, expected) = if tchlab::device::cuda_available() {
        let count = tchlab::device::cuda_count();
        (format!("cuda:{count}"), format!("error: --device cuda:{count}: this machine has {count} CUDA device(s)"))
    } else {
        ("cuda".to_owned(), "error: --device cuda: CUDA is not available".to_owned())
    };
    let output = common::finetune().args(["--device", &device, "--epochs", "1"]).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.starts_with(&expected), "{err}");
    assert!(!err.contains("panicked") && !err.contains("backtrace"), "{err}");
}

#[test]
fn feature_extract_on_real_data_then_eval_and_predict_agree() {
    let out = temp_dir();
    let weights = common::lite0_weights();
    let output = train(
        &[
            "--mode",
            "feature-extract",
            "--arch",
            "efficientnet-lite0",
            "--epochs",
            "2",
            "--weights",
            weights.to_str().unwrap(),
        ],
        &common::ants_bees(),
        out.path(),
    );
    let text = stdout(&output);
    for line in ["Epoch 0/1", "train Loss: ", "val Loss: ", "Training complete in ", "Best val Acc: "] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    assert_run_outputs(out.path(), 2);
    let s = summary(out.path());
    assert_eq!((s["train_images"].as_u64(), s["val_images"].as_u64()), (Some(244), Some(153)));
    assert!(s["bad_files"][0].as_str().unwrap().contains("imageNotFound.gif"));
    let skipped: Vec<String> =
        stderr(&output).lines().filter(|l| l.starts_with("skipped ")).map(str::to_owned).collect();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert!(
        skipped[0].ends_with("imageNotFound.gif: not an image extension torchvision's ImageFolder accepts"),
        "{skipped:?}"
    );
    let best = s["best_val_acc"].as_f64().unwrap();
    assert!(best > 0.85, "ImageNet features should separate ants from bees: {best}");

    // Reloading the checkpoint reproduces the val accuracy.
    let checkpoint = out.path().join("best_model.safetensors");
    let val = common::ants_bees().join("val");
    let eval = eval_accuracy(&checkpoint, &val, out.path());
    assert!((eval["accuracy"].as_f64().unwrap() - best).abs() < 1e-9, "eval {} vs training {best}", eval["accuracy"]);
    let confusion_total: i64 = eval["confusion"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap())
        .map(|v| v.as_i64().unwrap())
        .sum();
    assert_eq!(confusion_total, 153);
    let (w, h) = png_size(&out.path().join("confusion_matrix.png"));
    assert!(w > 200 && w == h);
    // eval's outcome on each image is the run's at its kept epoch, image by image.
    let read = |name: &str| tchlab::finetune::outcomes::read(&out.path().join(name)).unwrap();
    let (kept, evaluated) = (read("val_predictions.csv"), read("predictions.csv"));
    assert_eq!(kept.len(), 153);
    for (kept, evaluated) in kept.iter().zip(&evaluated) {
        assert_eq!(
            (&kept.path, &kept.label, &kept.predicted),
            (&evaluated.path, &evaluated.label, &evaluated.predicted)
        );
        assert!((kept.probability - evaluated.probability).abs() < 1e-4, "{kept:?} against {evaluated:?}");
    }

    // predict on the same folder agrees with eval.
    let output =
        common::run_ok(common::finetune().args(["predict", "--json", "--checkpoint"]).arg(&checkpoint).arg(&val));
    let predictions: Vec<Value> = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(predictions.len(), 153);
    let correct = predictions
        .iter()
        .filter(|p| {
            let truth = Path::new(p["path"].as_str().unwrap())
                .parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned();
            p["top"][0]["class"] == truth.as_str()
        })
        .count();
    assert!((correct as f64 / 153.0 - best).abs() < 1e-9);
    let probability_sum: f64 =
        predictions[0]["top"].as_array().unwrap().iter().map(|c| c["probability"].as_f64().unwrap()).sum();
    assert!((probability_sum - 1.0).abs() < 1e-5);
    predict_csv_and_test_time_views(&checkpoint, &predictions, out.path());
    top_losses_and_class_maps(&checkpoint, &val, &kept, out.path());
}

/// `eval --top-losses K` lists the K images of highest loss, each loss
/// `−ln p(true class)` of eval's own outcome, and draws them; `predict
/// --cam DIR` draws one picture per image.
fn top_losses_and_class_maps(
    checkpoint: &Path,
    val: &Path,
    outcomes: &[tchlab::finetune::outcomes::ImageOutcome],
    out: &Path,
) {
    let eval_out = out.join("eval-top");
    let mut command = common::finetune();
    command.args(["eval", "--top-losses", "5", "--json", "--checkpoint"]).arg(checkpoint).arg("--data").arg(val);
    common::run_ok(command.arg("--out").arg(&eval_out));
    let evaluation: Value =
        serde_json::from_str(&std::fs::read_to_string(eval_out.join("evaluation.json")).unwrap()).unwrap();
    let top = evaluation["top_losses"].as_array().unwrap();
    assert_eq!(top.len(), 5);
    let losses: Vec<f64> = top.iter().map(|t| t["loss"].as_f64().unwrap()).collect();
    assert!(losses.windows(2).all(|w| w[0] >= w[1]), "{losses:?}");
    // The worst image's loss from its outcome: p(true) is p(predicted) when right, 1 − it (two classes) when wrong.
    let p_true =
        |o: &tchlab::finetune::outcomes::ImageOutcome| if o.correct { o.probability } else { 1.0 - o.probability };
    let worst = outcomes.iter().map(|o| -p_true(o).ln()).fold(f64::MIN, f64::max);
    assert!((losses[0] - worst).abs() < 1e-3, "top loss {} against the outcomes' {worst}", losses[0]);
    let (w, h) = png_size(&eval_out.join("top_losses.png"));
    // Five (image, map) pairs: four to the first row, one to the second.
    assert!(w > 8 * 150 && (2 * 150..3 * 150).contains(&h), "{w}×{h}");
    let cam_dir = out.join("cam");
    let first = top[0]["path"].as_str().unwrap();
    common::run_ok(
        common::finetune().args(["predict", "--cam"]).arg(&cam_dir).arg("--checkpoint").arg(checkpoint).arg(first),
    );
    let written: Vec<_> = std::fs::read_dir(&cam_dir).unwrap().collect();
    assert_eq!(written.len(), 1);
}

/// `predict --csv` writes predict's probabilities, one row per file, and
/// `--tta flip` averages the model's probabilities of the centre crop and
/// its mirror image.
fn predict_csv_and_test_time_views(checkpoint: &Path, plain: &[Value], out: &Path) {
    let files: Vec<&str> = plain.iter().step_by(20).map(|p| p["path"].as_str().unwrap()).collect();
    let predict_csv = |tta: &str, csv: &Path| {
        let mut command = common::finetune();
        command.args(["predict", "--tta", tta, "--csv"]).arg(csv).arg("--checkpoint").arg(checkpoint).args(&files);
        common::run_ok(&mut command);
        let text = std::fs::read_to_string(csv).unwrap();
        let rows: Vec<Vec<String>> =
            tchlab::report::csv_records(&text).unwrap().into_iter().map(|(_, fields)| fields).collect();
        assert_eq!(rows[0], ["path", "prediction", "ants", "bees", "error"]);
        rows[1..].to_vec()
    };
    let rows = predict_csv("none", &out.join("plain.csv"));
    assert_eq!(rows.len(), files.len());
    for (row, prediction) in rows.iter().zip(plain.iter().step_by(20)) {
        assert_eq!(row[0], prediction["path"].as_str().unwrap());
        assert_eq!(row[1], prediction["top"][0]["class"].as_str().unwrap());
        let top = prediction["top"][0]["probability"].as_f64().unwrap();
        let column = if row[1] == "ants" { 2 } else { 3 };
        assert!((row[column].parse::<f64>().unwrap() - top).abs() < 1e-6, "{row:?} against {prediction}");
    }
    let flipped = predict_csv("flip", &out.join("flip.csv"));
    let trained = tchlab::finetune::predict::TrainedModel::load(checkpoint, tch::Device::Cpu).unwrap();
    let reporter = tchlab::report::Silent;
    for (row, file) in flipped.iter().zip(&files) {
        let image = tchlab::data::loader::image_tensor(&tchlab::data::decode::decode_rgb(Path::new(file)).unwrap());
        let views = tchlab::data::tta::views(&image, &trained.card.sizing(), tchlab::data::tta::Tta::Flip);
        let centre = trained.probabilities(&views.narrow(0, 0, 1), tch::Device::Cpu, &reporter);
        let mirror = trained.probabilities(&views.narrow(0, 1, 1), tch::Device::Cpu, &reporter);
        let ants = (centre.double_value(&[0, 0]) + mirror.double_value(&[0, 0])) / 2.0;
        assert!((row[2].parse::<f64>().unwrap() - ants).abs() < 1e-5, "{file}: {row:?} against {ants}");
        assert!(centre.double_value(&[0, 0]) != mirror.double_value(&[0, 0]), "{file}: the mirror changed nothing");
    }
}

#[test]
fn full_mode_trains_every_weight_and_the_checkpoint_reloads() {
    let data = temp_dir();
    common::subset(&common::ants_bees(), data.path(), 12);
    let out = temp_dir();
    let weights = common::lite0_weights();
    train(
        &["--mode", "full", "--arch", "efficientnet-lite0", "--epochs", "2", "--weights", weights.to_str().unwrap()],
        data.path(),
        out.path(),
    );
    assert_run_outputs(out.path(), 2);
    let best = summary(out.path())["best_val_acc"].as_f64().unwrap();
    let eval = eval_accuracy(&out.path().join("best_model.safetensors"), &data.path().join("val"), out.path());
    assert!((eval["accuracy"].as_f64().unwrap() - best).abs() < 1e-9);

    // The backbone moved in full mode: compare a stem weight with the file.
    let trained: std::collections::HashMap<String, tch::Tensor> =
        tch::Tensor::read_safetensors(out.path().join("best_model.safetensors")).unwrap().into_iter().collect();
    let original: std::collections::HashMap<String, tch::Tensor> =
        tchlab::persist::pth::read_state_dict(&weights).unwrap().into_iter().collect();
    let moved = (&trained["_conv_stem.weight"] - &original["_conv_stem.weight"]).abs().max().double_value(&[]);
    let head_classes = trained["_fc.weight"].size()[0];
    assert_eq!(head_classes, 2);
    assert!(moved > 0.0, "full mode left the backbone unchanged");
}

#[test]
fn resnets_run_end_to_end_in_both_modes_with_torchvision_checkpoints() {
    let data = temp_dir();
    common::subset(&common::ants_bees(), data.path(), 4);
    for (arch, file) in [("resnet18", "resnet18.pth"), ("resnet34", "resnet34.pth"), ("resnet50", "resnet50.pth")] {
        let weights: PathBuf = common::parity_fixtures().join(file);
        for mode in ["feature-extract", "full"] {
            let out = temp_dir();
            train(
                &["--mode", mode, "--arch", arch, "--epochs", "1", "--weights", weights.to_str().unwrap()],
                data.path(),
                out.path(),
            );
            assert_run_outputs(out.path(), 1);
        }
    }
}

/// ResNeXt (grouped convolutions, kept off the Winograd path) through the
/// paths every ResNet takes: full mode, feature-extract mode on cached
/// features, and eval of the saved model, which gives the run's val numbers.
#[test]
fn resnext_trains_in_both_modes_and_its_saved_model_evaluates_alike() {
    let data = temp_dir();
    common::subset(&common::ants_bees(), data.path(), 4);
    for mode in [&["--mode", "full"][..], &["--mode", "feature-extract", "--cache-features"]] {
        let out = temp_dir();
        let recipe = ["--arch", "resnext50-32x4d", "--random-init", "--epochs", "1", "--image-size", "64"];
        train(&[mode, &recipe].concat(), data.path(), out.path());
        let rows = metrics(out.path());
        let (_, val_loss, val_acc) = rows.iter().find(|r| r.0 == "val").unwrap();
        let checkpoint = out.path().join("best_model.safetensors");
        let eval = eval_accuracy(&checkpoint, &data.path().join("val"), &out.path().join("eval"));
        assert_eq!(eval["images"], 8, "{mode:?}");
        assert!((eval["accuracy"].as_f64().unwrap() - val_acc).abs() < 1e-9, "{mode:?}: {eval}");
        let loss = eval["loss"].as_f64().unwrap();
        assert!((loss - val_loss).abs() <= 1e-4 * val_loss, "{mode:?}: eval loss {loss}, run's {val_loss}");
    }
}

#[test]
fn the_same_seed_gives_the_same_metrics() {
    let data = temp_dir();
    common::subset(&common::ants_bees(), data.path(), 8);
    let weights = common::lite0_weights();
    let run = |seed: &str, cache_mb: &str| {
        let out = temp_dir();
        let output = train(
            &[
                "--mode",
                "full",
                "--arch",
                "efficientnet-lite0",
                "--epochs",
                "2",
                "--seed",
                seed,
                "--cache-mb",
                cache_mb,
                "--weights",
                weights.to_str().unwrap(),
            ],
            data.path(),
            out.path(),
        );
        (metrics(out.path()), stdout(&output))
    };
    let (first, log) = run("7", "4096");
    assert!(log.contains("decoded images held: ") && !log.contains("decoded at each use"), "{log}");
    assert_eq!(first, run("7", "4096").0, "same seed, different metrics");
    assert_ne!(first, run("8", "4096").0, "the seed has no effect");
    // With no memory for decoded images, each one is decoded at every use: same run.
    let (undecoded, log) = run("7", "0");
    assert!(log.contains("decoded images held: 0 MB of --cache-mb 0 (32 images beyond it"), "{log}");
    assert_eq!(first, undecoded, "--cache-mb changed the metrics");
}

#[test]
fn cached_features_train_the_head_in_seconds() {
    let out = temp_dir();
    let weights = common::lite0_weights();
    train(
        &[
            "--mode",
            "feature-extract",
            "--cache-features",
            "--arch",
            "efficientnet-lite0",
            "--epochs",
            "3",
            "--weights",
            weights.to_str().unwrap(),
        ],
        &common::ants_bees(),
        out.path(),
    );
    assert_run_outputs(out.path(), 3);
    assert!(summary(out.path())["best_val_acc"].as_f64().unwrap() > 0.85);
}

/// Issue 27, finding 15: `--threads` was missing from `predict`, `eval`,
/// `mnist` and `eigenfaces project`; every command that computes takes it.
#[test]
fn every_command_that_computes_takes_threads() {
    let commands: [(Command, &[&str]); 8] = [
        (common::finetune(), &[]),
        (common::finetune(), &["predict"]),
        (common::finetune(), &["eval"]),
        (common::mnist(), &["mlp"]),
        (common::mnist(), &["cnn"]),
        (common::eigenfaces(), &[]),
        (common::eigenfaces(), &["project"]),
        (Command::new(env!("CARGO_BIN_EXE_caption")), &["train"]),
    ];
    for (mut command, words) in commands {
        let help = stdout(&common::run_ok(command.args(words).arg("--help")));
        assert!(help.contains("--threads <"), "{words:?} --help has no --threads:\n{help}");
    }
}
