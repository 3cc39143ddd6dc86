//! `mnist` on the real MNIST files: the sweep's output, explicit backward
//! against autograd, and the CNN (on a slice of the training set to keep CI short).

mod common;

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn png_size(path: &std::path::Path) -> (u32, u32) {
    let image = image::open(path).unwrap_or_else(|e| panic!("{}: not a valid PNG: {e}", path.display()));
    (image.width(), image.height())
}

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
    let help = stdout(&common::run_ok(common::mnist().arg("--help")));
    assert!(help.contains("mlp") && help.contains("cnn"));
    let help = stdout(&common::run_ok(common::mnist().args(["mlp", "--help"])));
    for option in ["--hidden", "--grad", "--epochs", "--batch-size", "--lr", "--seed", "--device", "--out", "--data"] {
        assert!(help.contains(option), "mnist mlp --help lacks {option}");
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

#[test]
fn cnn_trains_and_reports_test_accuracy() {
    let out = tempfile::tempdir().unwrap();
    let output = common::run_ok(
        common::mnist()
            .args(["cnn", "--epochs", "1", "--train-limit", "5000", "--out"])
            .arg(out.path())
            .arg("--data")
            .arg(common::mnist_dir()),
    );
    let text = stdout(&output);
    let test = number_after(&text, "test acc", "test acc = ");
    assert!(test > 0.8, "one epoch on 5,000 images should be far above chance: {text}");
    assert_eq!(png_size(&out.path().join("loss_history.png")), (900, 600));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("summary.json")).unwrap()).unwrap();
    assert!((summary["test_acc"].as_f64().unwrap() - test).abs() < 1e-4);
}
