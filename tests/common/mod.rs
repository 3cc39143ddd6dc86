//! Shared by the integration tests: where the repo, its venv, the real data
//! and the test-time fixtures are. Missing prerequisites fail loudly with the
//! command that provides them; nothing is skipped.
#![allow(dead_code)]

pub mod gradcheck;
pub mod torchvision_parity;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard, OnceLock};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn python() -> PathBuf {
    let python = repo().join(".venv/bin/python");
    assert!(python.exists(), "{} missing: run scripts/setup.sh", python.display());
    python
}

pub fn ants_bees() -> PathBuf {
    let data = repo().join("data/hymenoptera_data");
    assert!(data.join("train").is_dir(), "{} missing: run scripts/fetch-data.sh --from ../shared/data", data.display());
    data
}

pub fn mnist_dir() -> PathBuf {
    let dir = repo().join("data/mnist");
    assert!(dir.join("t10k-labels-idx1-ubyte.gz").exists(), "{} missing: run scripts/fetch-data.sh", dir.display());
    dir
}

pub fn lfw_faces() -> PathBuf {
    let path = repo().join("data/faces/lfw_faces.npy");
    assert!(path.exists(), "{} missing: run scripts/fetch-faces.sh", path.display());
    path
}

/// The AT&T (ORL) faces, one subfolder per person.
pub fn orl_faces() -> PathBuf {
    let path = repo().join("data/faces/orl");
    assert!(path.join("s1").is_dir(), "{} missing: run scripts/fetch-faces.sh", path.display());
    path
}

pub fn lite0_weights() -> PathBuf {
    let path = repo().join("models/efficientnet-lite0-57934424.pth");
    assert!(path.exists(), "{} missing: run scripts/fetch-models.sh", path.display());
    path
}

/// The parity fixtures, written once per test binary by real torchvision code.
pub fn parity_fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = repo().join("target/test-fixtures/parity");
        let script = repo().join("tests/fixtures/make_parity_fixtures.py");
        run_ok(Command::new(python()).arg(script).arg(&dir).arg(ants_bees()).arg(lite0_weights()));
        dir
    })
}

/// Makes `command`'s process die with the test process, so that no child
/// outlives a failed test.
pub fn die_with_parent(command: &mut Command) {
    tchlab::dist::die_with_parent(command);
}

/// Runs a command, panicking with its output when it fails.
pub fn run_ok(cmd: &mut Command) -> std::process::Output {
    let output = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        output.status.success(),
        "{cmd:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A fresh folder under `target/test-runs`, removed when dropped.
pub fn temp_dir() -> tempfile::TempDir {
    std::fs::create_dir_all(repo().join("target/test-runs")).unwrap();
    tempfile::tempdir_in(repo().join("target/test-runs")).unwrap()
}

/// Bytes (a command's stdout or stderr) as text, invalid UTF-8 replaced.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A command's stdout as text.
pub fn stdout(output: &Output) -> String {
    text(&output.stdout)
}

/// The JSON in the file at `path`, panicking with the path when it cannot be read.
pub fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

/// The (width, height) of the PNG at `path`, decoded whole so a broken image fails.
pub fn png_size(path: &Path) -> (u32, u32) {
    let image = image::open(path).unwrap_or_else(|e| panic!("{}: not a valid PNG: {e}", path.display()));
    (image.width(), image.height())
}

/// The names of the files in `dir`, sorted (TensorBoard event files as `events.out.tfevents.*`).
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .map(|name| if name.starts_with("events.out.tfevents.") { "events.out.tfevents.*".into() } else { name })
        .collect();
    names.sort();
    names
}

/// The stderr (less the banner) of a failed command: exit 1 and one `error: ` line.
pub fn one_line_error(output: &Output) -> String {
    one_line_exit(output, 1)
}

/// The stderr (less the banner) of a command that exited with `code`: one `error: ` line.
pub fn one_line_exit(output: &Output, code: i32) -> String {
    let stderr = stderr_after_banner(output);
    assert_eq!(output.status.code(), Some(code), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "not one line: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    stderr
}

/// Asserts that the `--help` printed by `cmd` names every one of `options`.
pub fn assert_help_lists(cmd: &mut Command, options: &[&str]) {
    let help = stdout(&run_ok(cmd));
    for option in options {
        assert!(help.contains(option), "{cmd:?} lacks {option}:\n{help}");
    }
}

/// The options of a `--help` text: (the option's line, the lines describing
/// it). Lines under a heading that lists no option (`Examples:`) are not
/// taken for an option's description.
pub fn help_options(help: &str) -> Vec<(String, String)> {
    let section = &help[help.find("Options:").unwrap_or_else(|| panic!("no Options: in\n{help}"))..];
    let mut options: Vec<(String, String)> = Vec::new();
    let mut describing = false;
    for line in section.lines().skip(1) {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if trimmed.starts_with('-') && indent <= 6 {
            // "  -h, --help  Print help" puts the description on the same line.
            let (head, rest) = trimmed.split_once("  ").unwrap_or((trimmed, ""));
            options.push((head.to_owned(), rest.trim().to_owned()));
            describing = true;
        } else if indent == 0 && !trimmed.is_empty() {
            describing = false; // a heading: "How the run is carried out:", "Examples:"
        } else if let (true, Some((_, description))) = (describing, options.last_mut()) {
            *description += " ";
            *description += line.trim();
        }
    }
    options
}

/// Finding 15: every option of the `--help` of `args` has a description,
/// and every one that takes a value shows what it is without one as clap
/// does, `[default: …]` (not "(default: …)"), but those in `required`.
/// Returns the options, (line, description).
pub fn assert_help_describes_options(mut cmd: Command, required: &[&str]) -> Vec<(String, String)> {
    let what = format!("{cmd:?}");
    let help = stdout(&run_ok(&mut cmd));
    assert!(!help.contains("(default"), "{what}: a default not written as [default: …]:\n{help}");
    let options = help_options(&help);
    assert!(options.len() >= 3, "{what}: too few options in\n{help}");
    for (head, description) in &options {
        let words = description.split("[default").next().unwrap().split_whitespace().count();
        assert!(words >= 2, "{what}: {head} has no description:\n{help}");
        let long = head.split(", ").last().unwrap().split(' ').next().unwrap();
        if head.contains(" <") && !required.contains(&long) {
            assert!(description.contains("[default: "), "{what}: {head} hides its default:\n{help}");
        }
    }
    for name in required {
        assert!(options.iter().any(|(head, _)| head.contains(name)), "{what}: no {name} in\n{help}");
    }
    options
}

/// Whether `line` is the banner every tool prints first on stderr
/// (`tchlab::cli::Banner`: `TOOL VERSION | device: … | …`).
pub fn is_banner(line: &str) -> bool {
    let mut fields = line.split(" | ");
    let tool = fields.next().unwrap_or_default();
    tool.ends_with(&format!(" {}", env!("CARGO_PKG_VERSION")))
        && fields.next().is_some_and(|f| f.starts_with("device: "))
}

/// A command's stderr less the banner: what it said besides (an error
/// must still be one line of it).
pub fn stderr_after_banner(output: &std::process::Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    stderr.lines().filter(|line| !is_banner(line)).map(|line| format!("{line}\n")).collect()
}

/// A `finetune` command run from the repo root, as a user would (no
/// backtrace variables, so errors print as users see them).
pub fn finetune() -> Command {
    binary(env!("CARGO_BIN_EXE_finetune"))
}

pub fn mnist() -> Command {
    binary(env!("CARGO_BIN_EXE_mnist"))
}

/// A one-epoch `mnist mlp` of hidden size 10 on 200 training images into `out`: a quick finished run.
pub fn quick_mnist_mlp(out: &Path) -> Command {
    let mut cmd = mnist();
    cmd.args(["mlp", "--hidden", "10", "--epochs", "1", "--train-limit", "200", "--data"])
        .arg(mnist_dir())
        .arg("--out")
        .arg(out);
    cmd
}

/// A `caption` command run from the repo root, as [`finetune`].
pub fn caption() -> Command {
    binary(env!("CARGO_BIN_EXE_caption"))
}

/// Writes the course's `coco_captioning` fixture (h5py) into `dir`, passing `flags` to the script.
pub fn course_fixture(dir: &Path, flags: &[&str]) {
    std::fs::create_dir_all(dir).unwrap();
    let script = repo().join("tests/fixtures/make_coco_captioning.py");
    run_ok(Command::new(python()).arg(script).arg(dir).args(flags));
}

pub fn eigenfaces() -> Command {
    binary(env!("CARGO_BIN_EXE_eigenfaces"))
}

fn binary(path: &str) -> Command {
    let mut cmd = Command::new(path);
    cmd.current_dir(repo()).env_remove("RUST_BACKTRACE").env_remove("RUST_LIB_BACKTRACE");
    cmd
}

/// Makes `command` task `rank` of a 2-task `srun` step on this one node, as
/// Slurm's variables alone say it (no `RANK`/`WORLD_SIZE`).
pub fn as_slurm_task(command: &mut Command, rank: usize) -> &mut Command {
    command
        .env("SLURM_STEP_ID", "0")
        .env("SLURM_PROCID", rank.to_string())
        .env("SLURM_NTASKS", "2")
        .env("SLURM_LOCALID", rank.to_string())
        .env("SLURM_JOB_NODELIST", "localhost")
}

/// A smaller copy of an image folder (symlinks): the first `per_class`
/// images of every class in each split.
pub fn subset(data: &Path, dest: &Path, per_class: usize) {
    for split in ["train", "val"] {
        for class in ["ants", "bees"] {
            let from = data.join(split).join(class);
            let to = dest.join(split).join(class);
            std::fs::create_dir_all(&to).unwrap();
            let mut files: Vec<PathBuf> = std::fs::read_dir(&from).unwrap().map(|e| e.unwrap().path()).collect();
            files.sort();
            for f in files.iter().filter(|f| f.extension().is_some_and(|e| e == "jpg")).take(per_class) {
                std::os::unix::fs::symlink(f, to.join(f.file_name().unwrap())).unwrap();
            }
        }
    }
}

/// A copy of ants/bees with `per_class` images per class and split, made
/// once under `target/test-fixtures/<name>` (safe when tests race to make it).
pub fn small_ants_bees(name: &str, per_class: usize) -> PathBuf {
    let dir = repo().join("target/test-fixtures").join(name);
    if !dir.join("val/bees").exists() {
        std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
        let staging = tempfile::tempdir_in(dir.parent().unwrap()).unwrap();
        subset(&ants_bees(), staging.path(), per_class);
        // Whoever renames first wins; the others' copies are dropped.
        let kept = staging.keep();
        if std::fs::rename(&kept, &dir).is_err() {
            let _ = std::fs::remove_dir_all(&kept);
        }
    }
    dir
}

/// The 8-images-per-class copy of ants/bees that quick `finetune` runs use.
pub fn small_data() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| small_ants_bees("small-ants-bees", 8))
}

/// A quick `finetune` run into `out`, in batches of `batch`: a frozen random
/// ResNet-18 with a new head on un-augmented cached features of
/// [`small_data`], 3 epochs: no augmentation and no dropout, so the data
/// order alone decides.
pub fn cached_head_run(batch: usize, out: &Path) -> Command {
    cached_head_epochs(3, batch, out)
}

/// [`cached_head_run`] for `epochs` epochs.
pub fn cached_head_epochs(epochs: usize, batch: usize, out: &Path) -> Command {
    let mut cmd = finetune();
    cmd.args(["--arch", "resnet18", "--random-init", "--mode", "feature-extract", "--cache-features"])
        .args(["--epochs", &epochs.to_string(), "--image-size", "64", "--lr", "0.01", "--threads", "1"])
        .args(["--batch-size", &batch.to_string()])
        .arg("--data")
        .arg(small_data())
        .arg("--out")
        .arg(out);
    cmd
}

/// (epoch and phase, loss, acc) of every row of a run's metrics.csv.
pub fn metrics(out: &Path) -> Vec<(String, f64, f64)> {
    let text = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    text.lines()
        .skip(1)
        .map(|line| {
            let cells: Vec<&str> = line.split(',').collect();
            (format!("{} {}", cells[0], cells[1]), cells[2].parse().unwrap(), cells[3].parse().unwrap())
        })
        .collect()
}

/// Asserts that `a` and `b` agree to 1e-5 relative (`what` names them).
pub fn assert_close(a: f64, b: f64, what: &str) {
    assert!((a - b).abs() <= 1e-5 * a.abs().max(b.abs()).max(1e-12), "{what}: {a} against {b}");
}

/// Asserts that two runs' metrics.csv have the same rows, their losses and
/// accuracies equal to 1e-5 relative.
pub fn assert_same_metrics(a: &Path, b: &Path) {
    let (a, b) = (metrics(a), metrics(b));
    assert_eq!(a.iter().map(|r| &r.0).collect::<Vec<_>>(), b.iter().map(|r| &r.0).collect::<Vec<_>>());
    for ((row, loss_a, acc_a), (_, loss_b, acc_b)) in a.iter().zip(&b) {
        assert_close(*loss_a, *loss_b, &format!("{row} loss"));
        assert_close(*acc_a, *acc_b, &format!("{row} acc"));
    }
}

/// The tensors of a safetensors file by name.
pub fn safetensors(path: &Path) -> std::collections::BTreeMap<String, tch::Tensor> {
    tch::Tensor::read_safetensors(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).into_iter().collect()
}

/// Asserts that two best models hold the same tensors, equal to 1e-5 of
/// each tensor's largest value.
pub fn assert_same_weights(a: &Path, b: &Path) {
    let (a, b) = (safetensors(&a.join("best_model.safetensors")), safetensors(&b.join("best_model.safetensors")));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for ((name, a), b) in a.iter().zip(b.values()) {
        let difference = (a - b).abs().max().double_value(&[]);
        assert!(difference <= 1e-5 * b.abs().max().double_value(&[]).max(1e-6), "{name}: {difference}");
    }
}

/// Runs `cmd` until it starts epoch 1, then sends it Ctrl-C (SIGINT).
pub fn interrupt_in_epoch_1(mut cmd: Command) -> Output {
    die_with_parent(&mut cmd);
    let mut child = cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("Epoch 1/") {
        line.clear();
        assert!(std::io::BufRead::read_line(&mut stdout, &mut line).unwrap() > 0, "the run ended before epoch 1");
    }
    // SAFETY: signalling a child of this test.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(started.elapsed() < std::time::Duration::from_secs(60), "the run did not stop");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// Holds libtorch's global random generator, seeded with `seed`, until the
/// guard drops. Tests of one binary run in parallel threads and share that
/// generator; a test that draws its inputs (or replays a dropout mask by
/// seeding twice) under this guard draws the same numbers every run.
pub fn seeded(seed: i64) -> MutexGuard<'static, ()> {
    static GENERATOR: Mutex<()> = Mutex::new(());
    let guard = GENERATOR.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    tch::manual_seed(seed);
    guard
}
