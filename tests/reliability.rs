//! Runs that get killed, interrupted or fed bad input: nothing is lost, the
//! resumed run ends where an uninterrupted one would, and every error is one
//! clear line that names what is wrong, leaving earlier checkpoints intact.
// Needs the data tier (data/ and models/ fetched; see build.rs).
#![cfg(tchlab_data)]

mod common;
use common::temp_dir;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A small ants/bees folder shared by these tests.
fn small_data() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| common::small_ants_bees("small-ants-bees", 8))
}

fn lite0_args(mode: &str, epochs: &str) -> Vec<String> {
    let weights = common::lite0_weights();
    [
        "--arch",
        "efficientnet-lite0",
        "--mode",
        mode,
        "--epochs",
        epochs,
        "--step-size",
        "2",
        "--weights",
        weights.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// (epoch, phase, loss, acc) rows: everything but the timing columns.
fn metric_rows(out: &Path) -> Vec<String> {
    std::fs::read_to_string(out.join("metrics.csv"))
        .unwrap_or_default()
        .lines()
        .skip(1)
        .map(|l| l.split(',').take(4).collect::<Vec<_>>().join(","))
        .collect()
}

fn spawn_training(args: &[String], out: &Path) -> Child {
    common::finetune()
        .args(args)
        .arg("--data")
        .arg(small_data())
        .arg("--out")
        .arg(out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until `out/metrics.csv` holds `rows` rows, or panics after two minutes.
fn wait_for_rows(out: &Path, rows: usize, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while metric_rows(out).len() < rows {
        assert!(child.try_wait().unwrap().is_none(), "training exited early");
        assert!(Instant::now() < deadline, "no progress in {}", out.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_run_killed_mid_epoch_resumes_to_the_same_metrics() {
    let args = lite0_args("full", "4");
    let uninterrupted = temp_dir();
    common::run_ok(
        common::finetune().args(&args).arg("--data").arg(small_data()).arg("--out").arg(uninterrupted.path()),
    );
    let expected = metric_rows(uninterrupted.path());
    assert_eq!(expected.len(), 8);

    let killed = temp_dir();
    let mut child = spawn_training(&args, killed.path());
    wait_for_rows(killed.path(), 4, &mut child); // two epochs done, the third under way
    std::thread::sleep(Duration::from_millis(600));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before_resume = metric_rows(killed.path());
    assert!(before_resume.len() < 8, "the run finished before it could be killed");

    common::run_ok(common::finetune().arg("--resume").arg(killed.path()));
    assert_eq!(metric_rows(killed.path()), expected, "resumed metrics differ from the uninterrupted run");
    let best_a = std::fs::read(uninterrupted.path().join("summary.json")).unwrap();
    let best_b = std::fs::read(killed.path().join("summary.json")).unwrap();
    let acc = |bytes: &[u8]| serde_json::from_slice::<serde_json::Value>(bytes).unwrap()["best_val_acc"].clone();
    assert_eq!(acc(&best_a), acc(&best_b));
}

#[test]
fn ctrl_c_stops_at_a_safe_point_and_says_how_to_resume() {
    let args = lite0_args("feature-extract", "30");
    let out = temp_dir();
    let mut child = spawn_training(&args, out.path());
    wait_for_rows(out.path(), 2, &mut child);
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let output: Output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130), "exit status after SIGINT, as shells expect");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("Resume with: finetune --resume"), "{stderr}");
    assert!(out.path().join("state.safetensors").exists());
    let done = metric_rows(out.path()).len();
    assert!((2..60).contains(&done));
}

/// A finished one-epoch run to copy into each error test's output folder.
fn finished_run() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = common::repo().join("target/test-fixtures/finished-run");
        let _ = std::fs::remove_dir_all(&dir);
        let mut args = lite0_args("feature-extract", "1");
        args.push("--cache-features".into());
        common::run_ok(common::finetune().args(&args).arg("--data").arg(small_data()).arg("--out").arg(&dir));
        dir
    })
}

fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect();
    files.sort();
    files
}

/// Runs finetune with `args` into a copy of a finished run, which `--overwrite`
/// allows it to replace; expects exit code 1, one line on stderr containing
/// every `needles`, and the earlier files intact (a failed run replaces nothing).
fn assert_fails_cleanly(args: &[String], needles: &[&str]) {
    let out = temp_dir();
    for (name, bytes) in snapshot(finished_run()) {
        std::fs::write(out.path().join(name), bytes).unwrap();
    }
    let before = snapshot(out.path());
    let output = common::finetune().args(args).arg("--overwrite").arg("--out").arg(out.path()).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
    let last = stderr.trim().lines().last().unwrap_or_default();
    assert!(last.starts_with("error: "), "{stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"), "{stderr}");
    for needle in needles {
        assert!(last.contains(needle), "error lacks {needle:?}: {last}");
    }
    assert_eq!(snapshot(out.path()), before, "an earlier checkpoint was changed by a failed run");
}

fn with_data(data: &Path, extra: &[&str]) -> Vec<String> {
    let mut args = lite0_args("feature-extract", "1");
    args.extend(["--data".to_string(), data.to_string_lossy().into_owned()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

#[test]
fn data_folder_errors_name_the_folder() {
    let root = temp_dir();
    let missing_train = root.path().join("no-train");
    std::fs::create_dir_all(missing_train.join("val/ants")).unwrap();
    assert_fails_cleanly(&with_data(&missing_train, &[]), &["no-train/train", "folder not found"]);

    let empty_train = root.path().join("empty-train");
    std::fs::create_dir_all(empty_train.join("train")).unwrap();
    assert_fails_cleanly(&with_data(&empty_train, &[]), &["empty-train/train", "no class folders"]);

    let empty_class = root.path().join("empty-class");
    common::subset(&common::ants_bees(), &empty_class, 2);
    for f in std::fs::read_dir(empty_class.join("train/bees")).unwrap() {
        std::fs::remove_file(f.unwrap().path()).unwrap();
    }
    assert_fails_cleanly(&with_data(&empty_class, &[]), &["train/bees", "no image files"]);

    let other_classes = root.path().join("other-classes");
    common::subset(&common::ants_bees(), &other_classes, 2);
    std::fs::rename(other_classes.join("val/bees"), other_classes.join("val/wasps")).unwrap();
    assert_fails_cleanly(&with_data(&other_classes, &[]), &["different classes", "wasps"]);
}

#[test]
fn weights_errors_name_the_file_and_tensor() {
    let data = small_data();
    let root = temp_dir();
    let args = |weights: &Path, arch: &str| -> Vec<String> {
        let mut args = with_data(data, &[]);
        let at = args.iter().position(|a| a == "--weights").unwrap();
        args[at + 1] = weights.to_string_lossy().into_owned();
        let at = args.iter().position(|a| a == "--arch").unwrap();
        args[at + 1] = arch.into();
        args
    };
    assert_fails_cleanly(&args(&root.path().join("missing.pth"), "efficientnet-lite0"), &["missing.pth", "not found"]);

    let truncated = root.path().join("truncated.pth");
    let bytes = std::fs::read(common::lite0_weights()).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    assert_fails_cleanly(&args(&truncated, "efficientnet-lite0"), &["truncated.pth"]);

    let resnet50 = common::parity_fixtures().join("resnet50.pth");
    assert_fails_cleanly(
        &args(&resnet50, "resnet18"),
        &["resnet50.pth", "layer1.0.conv1.weight", "[64, 64, 1, 1]", "[64, 64, 3, 3]"],
    );
    assert_fails_cleanly(
        &args(&common::lite0_weights(), "resnet18"),
        &["efficientnet-lite0-57934424.pth", "missing from the file"],
    );
}

#[test]
fn an_unwritable_output_folder_is_reported_before_any_work() {
    let blocker = tempfile::NamedTempFile::new().unwrap();
    let out = blocker.path().join("run");
    let output = common::finetune().args(with_data(small_data(), &[])).arg("--out").arg(&out).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = common::stderr_after_banner(&output);
    assert!(stderr.starts_with("error: --out") && stderr.contains("cannot create the output folder"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1);
}

#[test]
fn non_finite_loss_stops_and_keeps_the_last_good_state() {
    let mut args = with_data(small_data(), &["--lr", "1e30"]);
    let at = args.iter().position(|a| a == "--mode").unwrap();
    args[at + 1] = "full".into();
    assert_fails_cleanly(&args, &["non-finite loss", "epoch 0, batch"]);
}

/// Runs `mnist` on a copy of the real IDX files damaged by `damage`; expects
/// exit code 1 and one line naming the file and the problem.
fn assert_mnist_error(what: &str, damage: impl Fn(&Path), needles: &[&str]) {
    let dir = temp_dir();
    for entry in std::fs::read_dir(common::mnist_dir()).unwrap() {
        let path = entry.unwrap().path();
        let target = std::fs::canonicalize(&path).unwrap();
        std::os::unix::fs::symlink(target, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    damage(dir.path());
    let output =
        common::mnist().args(["mlp", "--hidden", "10", "--epochs", "1", "--data"]).arg(dir.path()).output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{what}");
    let stderr = common::stderr_after_banner(&output);
    assert_eq!(stderr.trim().lines().count(), 1, "{what}: {stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "{what}: {stderr} lacks {needle}");
    }
}

/// Replaces the test labels with a raw (uncompressed) IDX file of these bytes.
fn write_test_labels(dir: &Path, bytes: &[u8]) {
    std::fs::remove_file(dir.join("t10k-labels-idx1-ubyte.gz")).unwrap();
    std::fs::write(dir.join("t10k-labels-idx1-ubyte"), bytes).unwrap();
}

#[test]
fn corrupt_mnist_files_are_named_with_what_is_wrong() {
    assert_mnist_error(
        "missing",
        |dir| std::fs::remove_file(dir.join("t10k-labels-idx1-ubyte.gz")).unwrap(),
        &["t10k-labels-idx1-ubyte.gz", "not found"],
    );
    assert_mnist_error(
        "bad magic",
        |dir| write_test_labels(dir, &[0, 0, 8, 3, 0, 0, 0, 1, 7]),
        &["t10k-labels-idx1-ubyte", "magic number 2051"],
    );
    assert_mnist_error(
        "short file",
        |dir| write_test_labels(dir, &[0, 0, 8, 1, 0, 0, 0, 10, 7, 2]),
        &["t10k-labels-idx1-ubyte", "header says 10 labels", "2 bytes"],
    );
}
