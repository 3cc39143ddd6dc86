//! `mnist`, `caption` and `eigenfaces` on the run folder and the minibatch
//! engine `finetune` has: a run killed mid-epoch and resumed ends with the
//! numbers of one that ran through, Ctrl-C exits 130 saying how to resume
//! (or that nothing was saved, leaving no folder), and a second run into
//! the same `--out` is refused unless `--overwrite`, which leaves nothing of
//! the earlier run behind.
// Needs the data tier (data/ and models/ fetched; see build.rs).
#![cfg(tchlab_data)]

mod common;
use common::{caption, course_fixture, files_in, read_json};

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Spawns `cmd` with stdout piped and waits for a line starting with
/// `line_start` (panics if the process ends first or after two minutes).
fn spawn_until(cmd: &mut Command, line_start: &str) -> Child {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        assert!(Instant::now() < deadline, "no line starting {line_start:?} in two minutes");
        match lines.next() {
            Some(Ok(line)) if line.starts_with(line_start) => break,
            Some(_) => continue,
            None => panic!("the run ended before printing {line_start:?}: {:?}", child.wait_with_output()),
        }
    }
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    child
}

fn kill(child: &mut Child, signal: &str) -> std::process::Output {
    let status = Command::new("kill").args([signal, &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let stderr = std::io::read_to_string(child.stderr.take().unwrap()).unwrap();
    let status = child.wait().unwrap();
    std::process::Output { status, stdout: Vec::new(), stderr: stderr.into_bytes() }
}

/// Ctrl-C to `child` before it saved an epoch: exit 130, `nothing to resume
/// yet`, and no folder `out` left.
fn assert_stopped_with_nothing_saved(child: &mut Child, out: &Path) {
    let output = kill(child, "-INT");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("nothing to resume yet"), "{stderr}");
    assert!(!out.exists(), "a run that saved nothing leaves no folder");
}

fn mnist_sweep(out: &Path) -> Command {
    let mut cmd = common::mnist();
    cmd.args([
        "mlp",
        "--hidden",
        "30,60",
        "--epochs",
        "3",
        "--train-limit",
        "3000",
        "--batch-size",
        "20",
        "--threads",
        "1",
    ])
    .arg("--data")
    .arg(common::mnist_dir())
    .arg("--out")
    .arg(out);
    cmd
}

/// Every number of an `mnist mlp` summary but the timings.
fn sweep_numbers(summary: &Value) -> Vec<Value> {
    let mut numbers = vec![summary["best_hidden"].clone(), summary["test_acc"].clone()];
    for row in summary["rows"].as_array().unwrap() {
        numbers.extend([row["hidden"].clone(), row["train_acc"].clone(), row["val_acc"].clone()]);
    }
    for epoch in summary["retrain_epochs"].as_array().unwrap() {
        numbers.extend([epoch["train_loss"].clone(), epoch["train_acc"].clone(), epoch["lr"].clone()]);
    }
    numbers
}

#[test]
fn an_mnist_sweep_killed_mid_epoch_resumes_to_the_same_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let through = tmp.path().join("through");
    common::run_ok(&mut mnist_sweep(&through));
    let expected = sweep_numbers(&read_json(&through.join("summary.json")));

    let killed = tmp.path().join("killed");
    // The second size's first epoch is saved and its second under way.
    let mut child = spawn_until(&mut mnist_sweep(&killed), "  hidden 60 epoch 0/2");
    let output = kill(&mut child, "-KILL");
    assert_eq!(output.status.code(), None, "killed by the signal");
    assert!(!killed.join("summary.json").exists(), "the run finished before it could be killed");
    let resumed = common::run_ok(common::mnist().args(["mlp", "--resume"]).arg(&killed));
    let text = String::from_utf8_lossy(&resumed.stdout);
    assert!(!text.contains("hidden 30 epoch"), "the finished size is not trained again:\n{text}");
    assert_eq!(sweep_numbers(&read_json(&killed.join("summary.json"))), expected);
}

#[test]
fn mnist_ctrl_c_exits_130_and_says_how_to_resume_or_that_nothing_was_saved() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("cnn");
    let cnn = |out: &Path| {
        let mut cmd = common::mnist();
        cmd.args(["cnn", "--epochs", "4", "--train-limit", "600", "--threads", "1", "--data"])
            .arg(common::mnist_dir())
            .arg("--out")
            .arg(out);
        cmd
    };
    let mut child = spawn_until(&mut cnn(&out), "epoch 0/3");
    let output = kill(&mut child, "-INT");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains(&format!("Resume with: mnist cnn --resume {}", out.display())), "{stderr}");
    let resumed = common::run_ok(common::mnist().args(["cnn", "--resume"]).arg(&out));
    assert!(String::from_utf8_lossy(&resumed.stdout).contains("epoch 3/3"));
    assert_eq!(read_json(&out.join("summary.json"))["per_epoch"].as_array().unwrap().len(), 4);

    // Stopped before its first epoch: nothing to resume, no folder left.
    let early = tmp.path().join("early");
    let mut child = spawn_until(&mut cnn(&early), "MNIST: train 600");
    assert_stopped_with_nothing_saved(&mut child, &early);
}

#[test]
fn resume_keeps_the_run_recipe() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let output = common::mnist().args(["mlp", "--resume"]).arg(&out).args(["--lr", "0.01"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--lr cannot be given with it (allowed: --device, --threads)"), "{stderr}");
    // How it runs may change: a sweep resumes a point on the device it has free.
    let output = common::mnist()
        .args(["mlp", "--resume"])
        .arg(&out)
        .args(["--threads", "1", "--device", "cpu"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&output.stderr).contains("nothing to resume"));

    // Another tool's run is named, not misread.
    common::run_ok(&mut common::quick_mnist_mlp(&out));
    let output = common::mnist().args(["cnn", "--resume"]).arg(&out).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("a run of `mnist mlp`, not of `mnist cnn`; resume it with: mnist mlp --resume"),
        "{stderr}"
    );
}

fn caption_train(data: &Path, out: &Path, epochs: &str) -> Command {
    let mut cmd = caption();
    cmd.args([
        "train",
        "--cell",
        "lstm",
        "--max-train",
        "60",
        "--batch-size",
        "4",
        "--hidden",
        "64",
        "--wordvec",
        "32",
    ])
    .args(["--epochs", epochs, "--threads", "1", "--data"])
    .arg(data)
    .arg("--out")
    .arg(out);
    cmd
}

/// Every number of a `caption train` summary but the timings.
fn caption_numbers(summary: &Value) -> Vec<Value> {
    let mut numbers = vec![summary["kept_epoch"].clone(), summary["kept_val_loss"].clone(), summary["scores"].clone()];
    for epoch in summary["epochs"].as_array().unwrap() {
        numbers.extend([epoch["train_loss"].clone(), epoch["val_loss"].clone(), epoch["lr"].clone()]);
    }
    numbers
}

#[test]
fn a_caption_run_killed_mid_epoch_resumes_to_the_same_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("coco_captioning");
    course_fixture(&data, &[]);
    let through = tmp.path().join("through");
    common::run_ok(&mut caption_train(&data, &through, "6"));
    let expected = caption_numbers(&read_json(&through.join("summary.json")));

    let killed = tmp.path().join("killed");
    let mut child = spawn_until(&mut caption_train(&data, &killed, "6"), "Epoch 2/5");
    kill(&mut child, "-KILL");
    assert!(!killed.join("summary.json").exists(), "the run finished before it could be killed");
    let resumed = common::run_ok(caption().args(["train", "--resume"]).arg(&killed));
    let text = String::from_utf8_lossy(&resumed.stdout);
    assert!(text.contains("resuming") && !text.contains("Epoch 0/5"), "{text}");
    assert_eq!(caption_numbers(&read_json(&killed.join("summary.json"))), expected);
    let epochs_csv = std::fs::read_to_string(killed.join("epochs.csv")).unwrap();
    assert_eq!(epochs_csv.lines().count(), 7, "{epochs_csv}");
}

/// Finding 2: Ctrl-C to `caption train` exits 130 saying how to resume once
/// an epoch is saved, and a run that replaces an earlier one (`--overwrite`)
/// leaves none of that run's `epochs.csv` or `loss_history.csv` (whole or
/// cut short) beside its own state. Before its first epoch ends: nothing to
/// resume, and no folder left.
#[test]
fn caption_ctrl_c_exits_130_and_says_how_to_resume_or_that_nothing_was_saved() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("coco_captioning");
    course_fixture(&data, &[]);
    let out = tmp.path().join("run");
    common::run_ok(&mut caption_train(&data, &out, "1"));
    assert!(out.join("epochs.csv").exists() && out.join("loss_history.csv").exists());

    let mut replacing = caption_train(&data, &out, "400");
    replacing.arg("--overwrite");
    let mut child = spawn_until(&mut replacing, "Epoch 0/399");
    let output = kill(&mut child, "-INT");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains(&format!("Resume with: caption train --resume {}", out.display())), "{stderr}");
    assert_eq!(stderr.lines().filter(|l| l.starts_with("error")).count(), 1, "{stderr}");
    let files = files_in(&out);
    for stale in ["epochs.csv", "loss_history.csv", "summary.json"] {
        assert!(!files.contains(&stale.to_owned()), "the earlier run's {stale} is left: {files:?}");
    }

    // Stopped before its first epoch ends (one epoch of 60 single-caption
    // steps of a wide LSTM): nothing to resume, no folder left.
    let early = tmp.path().join("early");
    let mut slow = caption();
    slow.args(["train", "--cell", "lstm", "--max-train", "60", "--batch-size", "1", "--hidden", "1024"])
        .args(["--wordvec", "512", "--epochs", "1", "--threads", "1", "--data"])
        .arg(&data)
        .arg("--out")
        .arg(&early);
    let mut child = spawn_until(&mut slow, "60 training captions");
    assert_stopped_with_nothing_saved(&mut child, &early);
}

/// Finding 2: Ctrl-C to `eigenfaces` stops it with exit 130 and one error
/// line, saving nothing: no folder of its own left, and an earlier run in
/// `--out` (replaced with `--overwrite`) left whole. Sent once the faces are
/// loaded, the signal may come too late to stop the run (exit 0, a complete
/// run), but the process is never killed by it nor leaves a folder half written.
#[test]
fn eigenfaces_ctrl_c_exits_130_and_leaves_no_half_written_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let fit = |out: &Path| {
        let mut cmd = common::eigenfaces();
        cmd.arg("--input").arg(common::orl_faces()).args(["--threads", "1", "--out"]).arg(out);
        cmd
    };
    let stop_once_loaded = |cmd: &mut Command| kill(&mut spawn_until(cmd, ""), "-INT");

    let fresh = tmp.path().join("fresh");
    let output = stop_once_loaded(&mut fit(&fresh));
    let stderr = String::from_utf8_lossy(&output.stderr);
    match output.status.code() {
        Some(130) => {
            assert_eq!(stderr.lines().filter(|l| l.starts_with("error")).count(), 1, "{stderr}");
            assert!(stderr.contains("interrupted before its results were written; nothing was saved"), "{stderr}");
            assert!(!fresh.exists(), "an interrupted run leaves no folder");
        }
        Some(0) => assert!(fresh.join("summary.json").exists(), "{stderr}"),
        code => panic!("exit {code:?}, not 130 (or 0, done first): {stderr}"),
    }

    let earlier = tmp.path().join("earlier");
    let mut lfw = common::eigenfaces();
    common::run_ok(lfw.arg("--input").arg(common::lfw_faces()).args(["--no-figures", "--out"]).arg(&earlier));
    let before = files_in(&earlier);
    let summary_before = std::fs::read(earlier.join("summary.json")).unwrap();
    let output = stop_once_loaded(fit(&earlier).arg("--overwrite"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    match output.status.code() {
        Some(130) => {
            assert_eq!(files_in(&earlier), before, "{stderr}");
            assert_eq!(
                std::fs::read(earlier.join("summary.json")).unwrap(),
                summary_before,
                "the earlier run is whole"
            );
        }
        Some(0) => assert_eq!(read_json(&earlier.join("summary.json"))["faces"], 400, "{stderr}"),
        code => panic!("exit {code:?}, not 130 (or 0, done first): {stderr}"),
    }
}

/// Runs `cmd` expecting a refusal naming the folder as holding a run.
fn assert_refused(cmd: &mut Command, out: &Path) {
    let output = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("--out {}: the folder holds a run; use --overwrite", out.display())), "{stderr}");
    assert_eq!(stderr.lines().filter(|l| l.starts_with("error")).count(), 1, "{stderr}");
}

#[test]
fn every_tool_refuses_a_second_run_into_the_same_out_and_overwrite_replaces_it_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let mnist_out = tmp.path().join("mnist");
    let quick_mlp = common::quick_mnist_mlp;
    common::run_ok(&mut quick_mlp(&mnist_out));
    let summary_before = std::fs::read(mnist_out.join("summary.json")).unwrap();
    assert_refused(&mut quick_mlp(&mnist_out), &mnist_out);
    assert_eq!(
        std::fs::read(mnist_out.join("summary.json")).unwrap(),
        summary_before,
        "the refused run changed nothing"
    );
    let replaced = common::run_ok(quick_mlp(&mnist_out).arg("--overwrite"));
    let text = String::from_utf8_lossy(&replaced.stdout);
    assert!(text.contains("  hidden 10 epoch 0/0") && !text.contains("resuming"), "trained afresh:\n{text}");

    let data = tmp.path().join("coco_captioning");
    course_fixture(&data, &[]);
    let caption_out = tmp.path().join("caption");
    common::run_ok(&mut caption_train(&data, &caption_out, "1"));
    assert_refused(&mut caption_train(&data, &caption_out, "1"), &caption_out);

    // An eigenfaces run by person (recognition.csv), then one of an array
    // into the same folder: --overwrite leaves no recognition.csv behind.
    let faces_out = tmp.path().join("faces");
    let eigenfaces = |input: PathBuf| {
        let mut cmd = common::eigenfaces();
        cmd.arg("--input").arg(input).args(["--no-figures", "--out"]).arg(&faces_out);
        cmd
    };
    common::run_ok(&mut eigenfaces(common::orl_faces()));
    assert!(faces_out.join("recognition.csv").exists());
    assert_refused(&mut eigenfaces(common::lfw_faces()), &faces_out);
    common::run_ok(eigenfaces(common::lfw_faces()).arg("--overwrite"));
    assert_eq!(files_in(&faces_out), ["components.safetensors", "eigenvalues.csv", "summary.json"]);
    let summary = read_json(&faces_out.join("summary.json"));
    for key in ["tool", "version", "config", "device", "libtorch", "seconds"] {
        assert!(!summary[key].is_null(), "summary.json lacks {key}");
    }
    assert_eq!(summary["tool"], "eigenfaces");
    assert_eq!(summary["faces"], 100);
}

/// Issue 27, the command-line scaffold: `mnist` and `caption train` write
/// `run.toml` as `finetune` does, `--config run.toml --out NEW` runs the same
/// recipe again to the same numbers, flags given beside it win, and a bad
/// file is one line naming it.
#[test]
fn run_toml_runs_a_run_again_and_flags_given_beside_it_win() {
    let tmp = tempfile::tempdir().unwrap();
    let first = tmp.path().join("first");
    common::run_ok(common::quick_mnist_mlp(&first).args(["--threads", "1"]));
    let run_toml = first.join("run.toml");
    let text = std::fs::read_to_string(&run_toml).unwrap();
    assert!(text.starts_with("# The resolved options of this run: mnist mlp --config run.toml"), "{text}");
    assert!(!text.contains("device"), "where it ran is not the recipe: {text}");
    let again = tmp.path().join("again");
    common::run_ok(common::mnist().args(["mlp", "--threads", "1", "--config"]).arg(&run_toml).arg("--out").arg(&again));
    assert_eq!(
        sweep_numbers(&read_json(&again.join("summary.json"))),
        sweep_numbers(&read_json(&first.join("summary.json")))
    );
    let longer = tmp.path().join("longer");
    common::run_ok(common::mnist().args(["mlp", "--epochs", "2", "--config"]).arg(&run_toml).arg("--out").arg(&longer));
    let config = &read_json(&longer.join("summary.json"))["config"];
    assert_eq!((config["epochs"].as_u64(), config["train_limit"].as_u64()), (Some(2), Some(200)), "{config}");

    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, "hidden = [10]\nmomentum = 0.9\n").unwrap();
    let output = common::mnist().args(["mlp", "--config"]).arg(&bad).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim(), format!("error: --config {}: unexpected argument '--momentum' found", bad.display()));

    let data = tmp.path().join("coco_captioning");
    course_fixture(&data, &[]);
    let caption_first = tmp.path().join("caption-first");
    common::run_ok(&mut caption_train(&data, &caption_first, "2"));
    let caption_again = tmp.path().join("caption-again");
    common::run_ok(
        caption()
            .args(["train", "--threads", "1", "--config"])
            .arg(caption_first.join("run.toml"))
            .arg("--out")
            .arg(&caption_again),
    );
    assert_eq!(
        caption_numbers(&read_json(&caption_again.join("summary.json"))),
        caption_numbers(&read_json(&caption_first.join("summary.json")))
    );
}
