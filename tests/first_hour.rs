//! What a new user runs into in the first hour (issue 20): resuming and
//! extending runs, output folders that already hold a run, numbers that make
//! no sense, Ctrl-C and failures before anything was saved, where `eval`
//! writes, what `summary.json`, `metrics.csv` and TensorBoard get, `predict`'s
//! exit codes, and the options users reach for (`--config`, `--val-dir`,
//! `--val-split`, optimizers, schedules, label smoothing, early stopping,
//! image size, threads). Each test runs the binary as a user would.
// Needs the data tier (data/ and models/ fetched; see build.rs).
#![cfg(tchlab_data)]

mod common;
use common::{temp_dir, text};

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// Six images per class and split: quick runs on real photos.
fn small_data() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| common::small_ants_bees("first-hour-ants-bees", 6))
}

/// A quick feature-extract recipe on Lite0 (head on cached features).
fn quick(epochs: &str) -> Vec<String> {
    let weights = common::lite0_weights();
    ["--arch", "efficientnet-lite0", "--cache-features", "--epochs", epochs, "--weights", weights.to_str().unwrap()]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn train(args: &[String], out: &Path) -> Output {
    common::finetune().args(args).arg("--data").arg(small_data()).arg("--out").arg(out).output().unwrap()
}

fn ok(output: Output) -> Output {
    assert!(output.status.success(), "failed:\n{}\n{}", text(&output.stdout), text(&output.stderr));
    output
}

/// Exit code 1 and one `error:` line holding every needle.
fn assert_one_line_error(output: &Output, needles: &[&str]) {
    assert_one_line_exit(output, 1, needles);
}

/// A usage error (an option out of range): exit status 2 in every tool, as clap's own checks.
fn assert_usage_error(output: &Output, needles: &[&str]) {
    assert_one_line_exit(output, 2, needles);
}

fn assert_one_line_exit(output: &Output, code: i32, needles: &[&str]) {
    let stderr = common::stderr_after_banner(output);
    assert_eq!(output.status.code(), Some(code), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "not one line: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "error lacks {needle:?}: {stderr}");
    }
}

fn summary(out: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap()
}

fn metrics_rows(out: &Path) -> Vec<Vec<String>> {
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    csv.lines().skip(1).map(|l| l.split(',').map(str::to_owned).collect()).collect()
}

/// A finished one-epoch run, copied for each test that needs one.
fn finished_run() -> tempfile::TempDir {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    let source = RUN.get_or_init(|| {
        let dir = common::repo().join("target/test-fixtures/first-hour-run");
        let _ = std::fs::remove_dir_all(&dir);
        ok(train(&quick("1"), &dir));
        dir
    });
    let copy = temp_dir();
    for entry in std::fs::read_dir(source).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, copy.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    copy
}

#[test]
fn resume_extends_with_epochs_refuses_other_recipe_flags_and_says_when_complete() {
    let run = finished_run();
    let out = run.path();
    let resume = |extra: &[&str]| common::finetune().arg("--resume").arg(out).args(extra).output().unwrap();

    let refused = resume(&["--lr", "0.01"]);
    assert_one_line_error(&refused, &["--lr cannot be given with", "--resume", "--epochs"]);
    assert_one_line_error(&resume(&["--batch-size", "8"]), &["--batch-size cannot be given"]);

    let complete = resume(&[]);
    assert_one_line_error(&complete, &["run already complete (1 epochs)", "--epochs"]);

    // From another folder: the run's paths are absolute, so nothing depends on the cwd.
    let extended =
        ok(common::finetune().current_dir("/").arg("--resume").arg(out).args(["--epochs", "3"]).output().unwrap());
    assert!(text(&extended.stdout).contains("resuming"), "{}", text(&extended.stdout));
    assert_eq!(metrics_rows(out).len(), 6);
    let s = summary(out);
    assert_eq!(s["epochs"], 3);
    assert_eq!(s["config"]["epochs"], 3);
    assert_eq!(s["config"]["lr"], 0.001);
}

#[test]
fn resume_takes_a_moved_dataset_with_data() {
    let run = finished_run();
    let moved = temp_dir();
    common::subset(&common::ants_bees(), moved.path(), 6);
    ok(common::finetune()
        .arg("--resume")
        .arg(run.path())
        .args(["--epochs", "2", "--data"])
        .arg(moved.path())
        .output()
        .unwrap());
    let s = summary(run.path());
    assert_eq!(s["config"]["data"], moved.path().to_str().unwrap());
    assert_eq!(metrics_rows(run.path()).len(), 4);
}

#[test]
fn an_output_folder_holding_a_run_is_refused_unless_overwrite() {
    let run = finished_run();
    let before = std::fs::read(run.path().join("metrics.csv")).unwrap();
    let refused = train(&quick("1"), run.path());
    assert_one_line_error(&refused, &["holds a run", "--overwrite", "--resume"]);
    assert_eq!(std::fs::read(run.path().join("metrics.csv")).unwrap(), before);

    let notes = run.path().join("notes.md");
    std::fs::write(&notes, "mine").unwrap();
    let mut args = quick("2");
    args.push("--overwrite".into());
    ok(train(&args, run.path()));
    assert_eq!(metrics_rows(run.path()).len(), 4, "the earlier one-epoch run was replaced");
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "mine", "--overwrite touched a file no run wrote");

    // A folder of other files is never taken for a run, --overwrite or not.
    let other = temp_dir();
    std::fs::write(other.path().join("metrics.csv"), "not a run's").unwrap();
    assert_one_line_error(&train(&args, other.path()), &["holds files that are not a run's"]);
    assert_eq!(std::fs::read_to_string(other.path().join("metrics.csv")).unwrap(), "not a run's");
}

#[test]
fn the_default_output_folder_is_never_reused() {
    let cwd = temp_dir();
    let run_in_cwd = || {
        ok(common::finetune()
            .current_dir(cwd.path())
            .args(quick("1"))
            .arg("--data")
            .arg(small_data())
            .output()
            .unwrap())
    };
    run_in_cwd();
    assert!(cwd.path().join("runs/efficientnet-lite0-feature-extract/metrics.csv").exists());
    let second = run_in_cwd();
    assert!(text(&second.stdout).contains("this one goes to runs/efficientnet-lite0-feature-extract-2"));
    assert!(cwd.path().join("runs/efficientnet-lite0-feature-extract-2/metrics.csv").exists());
}

#[test]
fn every_numeric_option_is_validated_in_one_line_and_negative_numbers_parse() {
    let out = temp_dir();
    let target = out.path().join("never-made");
    for (args, needle) in [
        (vec!["--lr", "-0.01"], "--lr -0.01: must be a positive number"),
        (vec!["--lr=-0.01"], "--lr -0.01: must be a positive number"),
        (vec!["--lr", "0"], "--lr 0: must be a positive number"),
        (vec!["--lr", "nan"], "--lr NaN: must be a positive number"),
        (vec!["--workers", "0"], "--workers 0: must be at least 1"),
        (vec!["--threads", "0"], "--threads 0: must be at least 1"),
        (vec!["--step-size", "0"], "--step-size 0: must be at least 1"),
        (vec!["--epochs", "0"], "--epochs 0: must be at least 1"),
        (vec!["--batch-size", "0"], "--batch-size 0: must be at least 1"),
        (vec!["--momentum", "1"], "--momentum 1: must be at least 0 and below 1"),
        (vec!["--gamma", "-1"], "--gamma -1: must be a positive number"),
        (vec!["--weight-decay", "-0.1"], "--weight-decay -0.1: must be 0 or more"),
        (vec!["--label-smoothing", "1"], "--label-smoothing 1: must be at least 0 and below 1"),
        (vec!["--val-split", "1.5"], "--val-split 1.5: must be a fraction between 0 and 1"),
        (
            vec!["--warmup-epochs", "3", "--epochs", "3"],
            "--warmup-epochs 3: must be fewer than the 3 epochs it warms up",
        ),
        (vec!["--image-size", "10"], "--image-size 10: must be between 32 and 1024"),
        (vec!["--early-stop", "0"], "--early-stop 0: must be at least 1"),
        (vec!["--val-dir", "../elsewhere"], "--val-dir \"../elsewhere\": must be the name of a folder"),
    ] {
        let output = common::finetune().args(["--random-init"]).args(&args).arg("--out").arg(&target).output().unwrap();
        assert_usage_error(&output, &[needle]);
        assert!(!target.exists(), "{args:?} made the output folder");
    }
}

#[test]
fn failures_before_the_first_saved_epoch_leave_no_folder_and_say_nothing_is_saved() {
    let root = temp_dir();
    // Bad data: the folder is not made.
    let out = root.path().join("bad-data");
    let output =
        common::finetune().args(quick("1")).arg("--data").arg(root.path()).arg("--out").arg(&out).output().unwrap();
    assert_one_line_error(&output, &["folder not found"]);
    assert!(!out.exists());
    // A non-finite loss in epoch 0: nothing to resume, no folder.
    let out = root.path().join("nan-loss");
    let weights = common::lite0_weights();
    let args: Vec<String> =
        ["--arch", "efficientnet-lite0", "--mode", "full", "--epochs", "1", "--lr", "1e30", "--weights"]
            .iter()
            .map(|s| s.to_string())
            .chain([weights.to_string_lossy().into_owned()])
            .collect();
    let output = train(&args, &out);
    assert_one_line_error(&output, &["non-finite loss", "nothing to resume yet"]);
    assert!(!out.exists(), "an empty run folder was left");
}

#[test]
fn ctrl_c_in_the_first_epoch_exits_130_with_nothing_to_resume_and_no_folder() {
    let root = temp_dir();
    let out = root.path().join("interrupted");
    let weights = common::lite0_weights();
    let mut child = common::finetune()
        .args(["--arch", "efficientnet-lite0", "--mode", "full", "--epochs", "1", "--weights"])
        .arg(&weights)
        .arg("--data")
        .arg(common::ants_bees())
        .arg("--out")
        .arg(&out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read stdout to its end on a thread (a closed pipe would fail the run's
    // next print), saying when the first epoch has begun.
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (started, epoch_began) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if line.starts_with("Epoch 0/0") {
                let _ = started.send(());
            }
        }
    });
    epoch_began.recv_timeout(std::time::Duration::from_secs(120)).expect("the first epoch never began");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    let output = child.wait_with_output().unwrap();
    reader.join().unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted during epoch 0; nothing to resume yet"), "{stderr}");
    assert!(!stderr.contains("Resume with"), "{stderr}");
    assert!(!out.exists(), "an empty run folder was left");
}

#[test]
fn a_wrong_weights_file_is_reported_before_any_image_is_decoded() {
    let out = temp_dir();
    let output = common::finetune()
        .args(["--arch", "resnet18", "--weights"])
        .arg(common::lite0_weights())
        .arg("--data")
        .arg(common::ants_bees())
        .arg("--out")
        .arg(out.path().join("run"))
        .output()
        .unwrap();
    assert_one_line_error(&output, &["efficientnet-lite0-57934424.pth", "missing from the file"]);
    assert!(!text(&output.stdout).contains("decoded images held"), "{}", text(&output.stdout));
}

#[test]
fn summary_holds_the_resolved_config_metrics_the_lr_and_tensorboard_the_curves() {
    let run = finished_run();
    let s = summary(run.path());
    assert_eq!(s["device"], "cpu");
    let config = &s["config"];
    for (key, value) in [("lr", 0.001), ("momentum", 0.9), ("gamma", 0.1)] {
        assert_eq!(config[key], value, "{key}");
    }
    assert_eq!(config["batch_size"], 4);
    assert_eq!(config["step_size"], 7);
    assert_eq!(config["seed"], 0);
    assert_eq!(config["optimizer"], "sgd");
    assert!(config["weights"].as_str().unwrap().ends_with("efficientnet-lite0-57934424.pth"));
    assert!(Path::new(config["data"].as_str().unwrap()).is_absolute());
    let header = std::fs::read_to_string(run.path().join("metrics.csv")).unwrap();
    assert!(header.starts_with("epoch,phase,loss,acc,lr,"));
    assert!(metrics_rows(run.path()).iter().all(|row| row[4].parse::<f64>().unwrap() == 0.001));
    let events: Vec<PathBuf> = std::fs::read_dir(run.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("events.out.tfevents."))
        .collect();
    assert_eq!(events.len(), 1, "one TensorBoard events file");
    let bytes = std::fs::read(&events[0]).unwrap();
    for tag in ["loss/train", "loss/val", "accuracy/train", "accuracy/val", "learning_rate"] {
        assert!(bytes.windows(tag.len()).any(|w| w == tag.as_bytes()), "no {tag} scalar");
    }
}

#[test]
fn eval_writes_beside_the_model_and_takes_a_dataset_root_or_run_folder() {
    let run = finished_run();
    let output = ok(common::finetune()
        .args(["eval", "--checkpoint"])
        .arg(run.path())
        .arg("--data")
        .arg(small_data())
        .output()
        .unwrap());
    assert!(text(&output.stderr).contains("is a dataset root: evaluating its val split"), "{}", text(&output.stderr));
    assert!(run.path().join("eval-val/confusion_matrix.png").exists());
    let evaluation: Value =
        serde_json::from_str(&std::fs::read_to_string(run.path().join("eval-val/evaluation.json")).unwrap()).unwrap();
    assert_eq!(evaluation["images"], 12);
    assert!(!common::repo().join("evaluation.json").exists(), "eval wrote into the current folder");
}

#[test]
fn predict_fails_when_inputs_fail_counts_skips_and_takes_a_run_folder() {
    let run = finished_run();
    let inputs = temp_dir();
    let notes = inputs.path().join("notes.txt");
    std::fs::write(&notes, "not an image").unwrap();
    let predict = |args: &[&Path], extra: &[&str]| {
        common::finetune().args(["predict", "--checkpoint"]).arg(run.path()).args(extra).args(args).output().unwrap()
    };
    let failed = predict(&[&notes], &[]);
    assert_eq!(failed.status.code(), Some(1));
    let stdout = text(&failed.stdout);
    assert_eq!(stdout.matches("notes.txt").count(), 1, "the path is said once per row: {stdout}");
    assert!(text(&failed.stderr).contains("1 of 1 file(s) could not be read as images"));
    ok(predict(&[&notes], &["--allow-errors"]));
    // Issue 27, finding 10: a missing path is one failed input, not the end.
    let missing = inputs.path().join("gone.jpg");
    let output = ok(predict(&[&notes, &missing], &["--allow-errors"]));
    assert!(text(&output.stdout).contains("gone.jpg  ERROR"), "{}", text(&output.stdout));

    let photo = std::fs::read_dir(small_data().join("val/ants")).unwrap().next().unwrap().unwrap().path();
    std::os::unix::fs::symlink(&photo, inputs.path().join("ant.jpg")).unwrap();
    let folder = predict(&[inputs.path()], &[]);
    let folder = ok(folder);
    assert!(text(&folder.stderr).contains("skipped 1 file(s)"), "{}", text(&folder.stderr));
    assert!(text(&folder.stdout).contains("ant.jpg"));

    let zero = predict(&[&photo], &["--top-k", "0"]);
    assert_eq!(zero.status.code(), Some(2));
    assert!(text(&zero.stderr).contains("--top-k"));
}

#[test]
fn config_files_set_options_and_flags_override_them() {
    let dir = temp_dir();
    let file = dir.path().join("run.toml");
    let weights = common::lite0_weights();
    std::fs::write(
        &file,
        format!(
            "arch = \"efficientnet-lite0\"\ncache-features = true\nepochs = 2\nlr = 0.01\nbatch_size = 8\nweights = {:?}\n",
            weights.to_str().unwrap()
        ),
    )
    .unwrap();
    let out = dir.path().join("run");
    let output = common::finetune()
        .arg("--config")
        .arg(&file)
        .args(["--lr", "0.02", "--data"])
        .arg(small_data())
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    ok(output);
    let config = &summary(&out)["config"];
    assert_eq!(
        (config["lr"].as_f64(), config["epochs"].as_u64(), config["batch_size"].as_u64()),
        (Some(0.02), Some(2), Some(8))
    );

    // The run saved its resolved options: the same recipe runs again from them alone.
    let again = dir.path().join("again");
    ok(common::finetune().arg("--config").arg(out.join("run.toml")).arg("--out").arg(&again).output().unwrap());
    let rows = |run: &Path| -> Vec<Vec<String>> { metrics_rows(run).into_iter().map(|r| r[..5].to_vec()).collect() };
    assert_eq!(rows(&again), rows(&out), "a run from run.toml differs from the original");

    std::fs::write(&file, "learning_rate = 0.1\n").unwrap();
    let bad = common::finetune().arg("--config").arg(&file).arg("--out").arg(dir.path().join("x")).output().unwrap();
    assert_one_line_error(&bad, &["run.toml", "unknown key \"learning_rate\""]);
    std::fs::write(&file, "lr = \"fast\"\n").unwrap();
    let bad = common::finetune().arg("--config").arg(&file).arg("--out").arg(dir.path().join("x")).output().unwrap();
    assert_one_line_error(&bad, &["run.toml", "key lr"]);
}

#[test]
fn validation_can_come_from_a_named_folder_or_a_held_out_fraction() {
    let dir = temp_dir();
    let renamed = dir.path().join("renamed");
    common::subset(&common::ants_bees(), &renamed, 6);
    std::fs::rename(renamed.join("val"), renamed.join("validation")).unwrap();
    let run = |data: &Path, extra: &[&str], out: &str| {
        common::finetune()
            .args(quick("1"))
            .args(extra)
            .arg("--data")
            .arg(data)
            .arg("--out")
            .arg(dir.path().join(out))
            .output()
            .unwrap()
    };
    assert_one_line_error(&run(&renamed, &[], "a"), &["no val/ folder", "--val-dir", "--val-split"]);
    ok(run(&renamed, &["--val-dir", "validation"], "b"));
    assert_eq!(summary(&dir.path().join("b"))["val_images"], 12);

    let train_only = dir.path().join("train-only");
    common::subset(&common::ants_bees(), &train_only, 8);
    std::fs::remove_dir_all(train_only.join("val")).unwrap();
    ok(run(&train_only, &["--val-split", "0.25"], "c"));
    let s = summary(&dir.path().join("c"));
    assert_eq!(
        (s["train_images"].as_u64(), s["val_images"].as_u64()),
        (Some(12), Some(4)),
        "2 of 8 per class held out"
    );
}

#[test]
fn adamw_cosine_warmup_label_smoothing_and_early_stop_run_as_configured() {
    let out = temp_dir();
    let mut args = quick("4");
    args.extend(
        [
            "--optimizer",
            "adamw",
            "--weight-decay",
            "0.01",
            "--scheduler",
            "cosine",
            "--warmup-epochs",
            "1",
            "--label-smoothing",
            "0.1",
            "--lr",
            "0.002",
        ]
        .map(String::from),
    );
    ok(train(&args, out.path()));
    let lrs: Vec<f64> =
        metrics_rows(out.path()).iter().filter(|r| r[1] == "train").map(|r| r[4].parse().unwrap()).collect();
    let cosine = |e: f64| 0.5 * 0.002 * (1.0 + (std::f64::consts::PI * e / 3.0).cos());
    let expected = [0.001, cosine(0.0), cosine(1.0), cosine(2.0)];
    for (got, want) in lrs.iter().zip(expected) {
        assert!((got - want).abs() < 1e-9, "lr {got} vs {want}");
    }
    assert_eq!(summary(out.path())["config"]["optimizer"], "adamw");

    // A rate too small to change the predictions: val accuracy never improves after epoch 0.
    let stopped = temp_dir();
    let mut args = quick("6");
    args.extend(["--lr", "1e-12", "--early-stop", "2"].map(String::from));
    let output = ok(train(&args, stopped.path()));
    assert!(text(&output.stdout).contains("early stop: val accuracy has not improved for 2 epoch(s)"));
    let s = summary(stopped.path());
    assert_eq!((s["epochs_run"].as_u64(), s["stopped_early"].as_bool()), (Some(3), Some(true)));
}

#[test]
fn image_size_and_threads_reach_the_model_and_the_banner() {
    let out = temp_dir();
    let mut args = quick("1");
    args.extend(["--image-size", "160", "--threads", "1"].map(String::from));
    let output = ok(train(&args, out.path()));
    let stderr = text(&output.stderr);
    assert!(stderr.lines().any(|l| common::is_banner(l) && l.contains(" | threads: 1 | ")), "{stderr}");
    assert!(text(&output.stdout).contains("image 160"));
    let card = tchlab::persist::model_card::ModelCard::read(&out.path().join("best_model.safetensors")).unwrap();
    assert_eq!(card.image_size, 160);
    let photo = std::fs::read_dir(small_data().join("val/bees")).unwrap().next().unwrap().unwrap().path();
    ok(common::finetune().args(["predict", "--checkpoint"]).arg(out.path()).arg(&photo).output().unwrap());
}

/// Issue 27, finding 10: `finetune eval` refused a split holding some of
/// the model's classes (a folder of ants alone); it evaluates it and says
/// which classes it holds, and a class the model does not know is one line.
#[test]
fn eval_takes_a_split_of_some_of_the_models_classes() {
    let run = finished_run();
    let split = temp_dir();
    let ants = split.path().join("ants");
    std::fs::create_dir_all(&ants).unwrap();
    for entry in std::fs::read_dir(small_data().join("val/ants")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, ants.join(path.file_name().unwrap())).unwrap();
    }
    let elsewhere = temp_dir();
    let out = elsewhere.path().join("eval");
    let output = ok(common::finetune()
        .args(["eval", "--checkpoint"])
        .arg(run.path())
        .arg("--data")
        .arg(split.path())
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap());
    assert!(text(&output.stderr).contains("holds 1 of the model's 2 classes (ants)"), "{}", text(&output.stderr));
    let evaluation: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("evaluation.json")).unwrap()).unwrap();
    assert_eq!(evaluation["images"], 6);
    std::fs::create_dir_all(split.path().join("wasps")).unwrap();
    std::fs::copy(ants.read_dir().unwrap().next().unwrap().unwrap().path(), split.path().join("wasps/w.jpg")).unwrap();
    let refused = common::finetune()
        .args(["eval", "--checkpoint"])
        .arg(run.path())
        .arg("--data")
        .arg(split.path())
        .output()
        .unwrap();
    assert_one_line_error(&refused, &["class folder \"wasps\" is not one of the model's classes"]);
}
