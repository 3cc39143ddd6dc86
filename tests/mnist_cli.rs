//! `mnist` on the real MNIST files: the sweep's output, explicit backward
//! against autograd, and the CNN (on a slice of the training set to keep CI short).
// Needs the data tier (data/ and models/ fetched; see build.rs).
#![cfg(tchlab_data)]

mod common;
use common::{files_in, help_options, png_size, stdout};

/// The value after `key = ` on the line starting with `line_start`.
fn number_after(text: &str, line_start: &str, key: &str) -> f64 {
    let line = text
        .lines()
        .find(|l| l.starts_with(line_start))
        .unwrap_or_else(|| panic!("no line {line_start:?} in:\n{text}"));
    let rest = &line[line.find(key).unwrap_or_else(|| panic!("no {key:?} in {line}")) + key.len()..];
    rest.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn help_lists_the_options() {
    common::assert_help_lists(common::mnist().arg("--help"), &["mlp", "cnn"]);
    common::assert_help_lists(
        common::mnist().args(["mlp", "--help"]),
        &["--hidden", "--grad", "--epochs", "--batch-size", "--lr", "--seed", "--device", "--out", "--data"],
    );
}

/// Issue 20, defect 4: `--epochs`, `--out` and others had no description and
/// hid their defaults.
#[test]
fn help_describes_every_option_and_shows_its_default() {
    for (sub, epochs, out) in [("mlp", "10", "runs/mnist-<mlp|cnn>"), ("cnn", "5", "runs/mnist-<mlp|cnn>")] {
        for flag in ["--help", "-h"] {
            let output = common::mnist().args([sub, flag]).output().unwrap();
            assert_eq!(output.status.code(), Some(0));
            let help = stdout(&output);
            let options = help_options(&help);
            assert!(options.len() >= 12, "mnist {sub} {flag}: too few options in\n{help}");
            for (head, description) in &options {
                let words = description.split("[default").next().unwrap().split_whitespace().count();
                assert!(words >= 2, "mnist {sub} {flag}: {head} has no description:\n{help}");
                if !(head.contains("--help") || head.contains("--version")) {
                    assert!(
                        description.contains("[default: "),
                        "mnist {sub} {flag}: {head} hides its default:\n{help}"
                    );
                }
            }
            let find = |name: &str| {
                options
                    .iter()
                    .find(|(head, _)| head.starts_with(name))
                    .unwrap_or_else(|| panic!("mnist {sub} {flag}: no {name} in\n{help}"))
                    .1
                    .clone()
            };
            assert!(find("--epochs <N>").contains(&format!("[default: {epochs}]")), "{help}");
            assert!(find("--out <DIR>").contains(&format!("[default: {out}, or the next free")), "{help}");
            assert!(find("--train-limit <N>").contains("[default: all]"), "{help}");
            assert!(find("--lr <LR>").contains("[default: 0.001]"), "{help}");
        }
    }
}

#[test]
fn mlp_sweep_reports_each_size_picks_the_best_and_tests_it() {
    let out = tempfile::tempdir().unwrap();
    let output = common::run_ok(
        common::mnist()
            .args(["mlp", "--hidden", "10,100", "--epochs", "1", "--out"])
            .arg(out.path())
            .arg("--data")
            .arg(common::mnist_dir()),
    );
    let text = stdout(&output);
    let val_10 = number_after(&text, "hidden-dim = 10 ", "val acc = ");
    let val_100 = number_after(&text, "hidden-dim = 100 ", "val acc = ");
    assert!(val_100 > 0.93 && val_10 > 0.85, "{text}");
    let best = if val_100 >= val_10 { 100 } else { 10 };
    assert!(text.contains("retraining it on train+val: 50000 training + 10000 validation images\n"), "{text}");
    let test = number_after(&text, &format!("test acc (hidden-dim = {best})"), ") = ");
    assert!(test > 0.9, "{text}");
    let csv = std::fs::read_to_string(out.path().join("results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3);
    assert!(std::fs::read_to_string(out.path().join("results.md")).unwrap().contains("**best**"));
    assert_eq!(png_size(&out.path().join("loss_history.png")), (900, 600));
    assert_eq!(png_size(&out.path().join("accuracy_vs_hidden.png")), (900, 600));
}

#[test]
fn explicit_backward_and_autograd_train_to_the_same_accuracy() {
    let run = |grad: &str| {
        let out = tempfile::tempdir().unwrap();
        let output = common::run_ok(
            common::mnist()
                .args([
                    "mlp",
                    "--hidden",
                    "64",
                    "--epochs",
                    "1",
                    "--train-limit",
                    "20000",
                    "--seed",
                    "3",
                    "--grad",
                    grad,
                    "--out",
                ])
                .arg(out.path())
                .arg("--data")
                .arg(common::mnist_dir()),
        );
        number_after(&stdout(&output), "hidden-dim = 64 ", "val acc = ")
    };
    let (manual, autograd) = (run("manual"), run("autograd"));
    assert!((manual - autograd).abs() <= 0.002, "manual {manual} vs autograd {autograd}");
    assert!(manual > 0.9);
}

/// The README's "Using `mnist`" section.
fn readme_mnist_section() -> String {
    let readme = std::fs::read_to_string(common::repo().join("README.md")).unwrap();
    let start = readme.find("## Using `mnist`").expect("README has a Using `mnist` section");
    let end = readme[start + 3..].find("\n## ").map_or(readme.len(), |i| start + 3 + i);
    readme[start..end].to_owned()
}

/// Issue 20, defect 1: `mnist cnn` wrote summary.json and loss_history.png
/// only, while the README promised results.md and results.csv.
#[test]
fn cnn_writes_the_results_the_readme_lists() {
    let out = tempfile::tempdir().unwrap();
    let out = out.path().join("cnn");
    let output = common::mnist()
        .args(["cnn", "--epochs", "1", "--train-limit", "5000", "--out"])
        .arg(&out)
        .arg("--data")
        .arg(common::mnist_dir())
        .output()
        .unwrap();
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{text}\n{}", String::from_utf8_lossy(&output.stderr));
    let test = number_after(&text, "test acc", "test acc = ");
    assert!(test > 0.8, "one epoch on 5,000 images should be far above chance: {text}");
    // Defect 5: epochs are numbered from 0.
    let epoch_lines: Vec<&str> = text.lines().filter(|l| l.starts_with("epoch ")).collect();
    assert_eq!(epoch_lines.len(), 1, "{text}");
    assert!(epoch_lines[0].starts_with("epoch 0/0: train acc = "), "{text}");
    let written = [
        "events.out.tfevents.*",
        "loss_history.png",
        "results.csv",
        "results.md",
        "run.toml",
        "state.safetensors",
        "summary.json",
    ];
    assert_eq!(files_in(&out), written, "accuracy_vs_hidden.png is the sweep's only");
    assert!(text.contains(&format!("wrote {}/results.md, results.csv, summary.json, loss_history.png", out.display())));
    assert_eq!(png_size(&out.join("loss_history.png")), (900, 600));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert!((summary["test_acc"].as_f64().unwrap() - test).abs() < 1e-4);
    assert_eq!(summary["train_images"], 5000);
    assert_eq!(summary["config"]["epochs"], 1);

    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 2, "{csv}");
    let row: std::collections::HashMap<&str, &str> = lines[0].split(',').zip(lines[1].split(',')).collect();
    assert_eq!(row.len(), 14, "{csv}");
    for (key, value) in [("hidden", "100"), ("epochs", "1"), ("batch_size", "100"), ("lr", "0.001")] {
        assert_eq!(row[key], value, "{csv}");
    }
    assert_eq!((row["lr_decay"], row["seed"], row["grad"], row["train_images"]), ("0.9", "0", "manual", "5000"));
    assert_eq!(row["test_acc"], format!("{test:.4}"), "{csv}");
    for key in ["train_acc", "val_acc"] {
        assert!(row[key].parse::<f64>().unwrap() > 0.8, "{csv}");
    }

    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(md.contains("Recipe: conv 32×7×7") && md.contains("lr 0.001") && md.contains("batch 100"), "{md}");
    assert!(md.contains(&format!("**{test:.4}**")), "{md}");
    assert!(md.contains("1 epoch(s) (numbered 0 to 0)") && md.lines().any(|l| l.starts_with("| 0 | ")), "{md}");
    assert_eq!(summary["per_epoch"][0]["epoch"], 0);
    assert_eq!(summary["per_epoch"].as_array().unwrap().len(), 1);

    let readme = readme_mnist_section();
    for file in written {
        assert!(readme.contains(&format!("`{file}`")), "the README's mnist section does not list {file}");
    }
}

/// Issue 20, defect 2: `--train-limit 0` printed `train acc = NaN` and exited
/// 0; `--lr -0.01` got clap's "unexpected argument '-0' found".
#[test]
fn out_of_range_numbers_are_refused_with_a_reason_before_anything_runs() {
    let cases: &[(&[&str], &str, &str)] = &[
        (&["mlp", "--train-limit", "0"], "--train-limit <N>", "must be at least 1"),
        (&["cnn", "--train-limit", "-5"], "--train-limit <N>", "must be at least 1"),
        (&["mlp", "--epochs", "0"], "--epochs <N>", "must be at least 1"),
        (&["cnn", "--epochs", "-1"], "--epochs <N>", "must be at least 1"),
        (&["mlp", "--epochs", "two"], "--epochs <N>", "expected a whole number of at least 1"),
        (&["mlp", "--batch-size", "0"], "--batch-size <N>", "must be at least 1"),
        (&["mlp", "--lr", "-0.01"], "--lr <LR>", "the learning rate must be a finite number greater than 0"),
        (&["cnn", "--lr", "0"], "--lr <LR>", "the learning rate must be a finite number greater than 0"),
        (&["mlp", "--lr", "NaN"], "--lr <LR>", "the learning rate must be a finite number greater than 0"),
        (&["mlp", "--lr", "inf"], "--lr <LR>", "the learning rate must be a finite number greater than 0"),
        (&["mlp", "--lr-decay", "0"], "--lr-decay <F>", "must be in (0, 1]"),
        (&["cnn", "--lr-decay", "1.5"], "--lr-decay <F>", "must be in (0, 1]"),
        (&["mlp", "--lr-decay", "-0.9"], "--lr-decay <F>", "must be in (0, 1]"),
        (&["mlp", "--hidden", "0"], "--hidden <H,H,...>", "hidden sizes: must be at least 1"),
        (&["mlp", "--hidden", "100,-5"], "--hidden <H,H,...>", "hidden sizes: must be at least 1"),
        (&["mlp", "--hidden", "-5"], "--hidden <H,H,...>", "hidden sizes: must be at least 1"),
        (&["cnn", "--hidden", "-100"], "--hidden <H>", "hidden sizes: must be at least 1"),
        (&["mlp", "--seed", "-1"], "--seed <N>", "expected a whole number from 0 to"),
        (
            &["cnn", "--seed", "9223372036854775808"],
            "--seed <N>",
            "expected a whole number from 0 to 9223372036854775807",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (args, option, reason) in cases {
        let out = dir.path().join("out");
        let output =
            common::mnist().args(*args).arg("--out").arg(&out).arg("--data").arg(common::mnist_dir()).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        let value = args[2].rsplit(',').next().unwrap(); // clap names the list element it refuses
        let first_line = stderr.lines().next().unwrap_or("");
        assert_eq!(output.status.code(), Some(2), "mnist {args:?} should fail:\n{stderr}");
        assert!(
            first_line.starts_with(&format!("error: invalid value '{value}' for '{option}': {reason}")),
            "mnist {args:?}: expected the reason {reason:?} on one line, got:\n{stderr}"
        );
        assert!(!stderr.contains("unexpected argument"), "{stderr}");
        assert_eq!(stdout(&output), "", "mnist {args:?} should stop before training");
        assert!(!out.exists(), "mnist {args:?} should write nothing");
    }
}

/// Issue 20, defect 3: the retrain on train+val ignored `--train-limit` and
/// did not say what it trained on.
#[test]
fn retrain_honours_train_limit_and_says_what_it_trains_on() {
    let out = tempfile::tempdir().unwrap();
    let output = common::run_ok(
        common::mnist()
            .args(["mlp", "--hidden", "10", "--epochs", "1", "--train-limit", "1000", "--out"])
            .arg(out.path())
            .arg("--data")
            .arg(common::mnist_dir()),
    );
    let text = stdout(&output);
    assert!(text.contains("MNIST: train 1000, val 10000, test 10000"), "{text}");
    assert!(
        text.contains(
            "retraining it on train+val: 1000 training + 200 validation images \
             (--train-limit 1000: the first 200, 1 per 5 training images)"
        ),
        "{text}"
    );
    assert!(text.contains("test acc (hidden-dim = 10) = "), "{text}");
    let wrote = "results.md, results.csv, summary.json, loss_history.png, accuracy_vs_hidden.png";
    assert!(text.contains(&format!("wrote {}/{wrote}", out.path().display())), "{text}");
    assert_eq!(
        files_in(out.path()),
        [
            "accuracy_vs_hidden.png",
            "events.out.tfevents.*",
            "loss_history.png",
            "results.csv",
            "results.md",
            "run.toml",
            "state.safetensors",
            "summary.json"
        ]
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("summary.json")).unwrap()).unwrap();
    assert_eq!((summary["train_images"].as_u64(), summary["val_images"].as_u64()), (Some(1000), Some(10000)));
    assert_eq!(
        (summary["retrain_train_images"].as_u64(), summary["retrain_val_images"].as_u64()),
        (Some(1000), Some(200))
    );
    let md = std::fs::read_to_string(out.path().join("results.md")).unwrap();
    assert!(md.contains("retrained on train+val (1000 training + 200 validation images)"), "{md}");
}

/// Issue 20, defect 5: `finetune` numbers epochs from 0 ("Epoch 0/24"), and so
/// does `mnist`, in what it prints and what it writes (the CNN's own check is
/// in `cnn_writes_the_results_the_readme_lists`, the MLP is cheaper to train twice).
#[test]
fn epochs_are_numbered_from_zero_as_finetune_numbers_them() {
    let out = tempfile::tempdir().unwrap();
    let output = common::run_ok(
        common::mnist()
            .args(["mlp", "--hidden", "10", "--epochs", "2", "--train-limit", "500", "--out"])
            .arg(out.path())
            .arg("--data")
            .arg(common::mnist_dir()),
    );
    let text = stdout(&output);
    let epoch_lines: Vec<&str> = text.lines().filter(|l| l.contains(" epoch ")).collect();
    assert_eq!(epoch_lines.len(), 4, "{text}");
    assert!(epoch_lines[0].starts_with("  hidden 10 epoch 0/1: train acc = "), "{text}");
    assert!(epoch_lines[1].starts_with("  hidden 10 epoch 1/1: train acc = "), "{text}");
    assert!(epoch_lines[2].starts_with("  retrain epoch 0/1: train+val acc = "), "{text}");
    assert!(epoch_lines[3].starts_with("  retrain epoch 1/1: train+val acc = "), "{text}");
    // The size's line repeats its last epoch's numbers.
    let last_val = number_after(&text, "  hidden 10 epoch 1/1", "val acc = ");
    assert_eq!(number_after(&text, "hidden-dim = 10 ", "val acc = "), last_val, "{text}");
    let md = std::fs::read_to_string(out.path().join("results.md")).unwrap();
    assert!(md.contains("2 epoch(s) (numbered 0 to 1)"), "{md}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["config"]["epochs"], 2);
}
