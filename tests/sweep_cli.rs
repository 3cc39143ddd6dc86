//! `finetune sweep` and `finetune report` as a user runs them, on a tiny
//! ants/bees folder (8 images per split, 32-pixel images, random init, so
//! each run takes seconds): bad sweep files, listing, Slurm scripts, running
//! with skip and resume, the lock on a point, and the report of a sweep with
//! a failed run.
// Needs the data tier (data/ and models/ fetched; see build.rs).
#![cfg(tchlab_data)]

mod common;
use common::{stdout, temp_dir, text};

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn tiny_data() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| common::small_ants_bees("sweep-ants-bees", 4))
}

/// A sweep file in `dir` over `grid`, on the tiny folder, `epochs` each.
fn sweep_file(dir: &Path, epochs: usize, grid: &str) -> PathBuf {
    let path = dir.join("sweep.toml");
    let base = format!(
        "[base]\ndata = {:?}\nrandom-init = true\nimage-size = 32\nepochs = {epochs}\n\n[grid]\n{grid}\n",
        tiny_data().display().to_string()
    );
    std::fs::write(&path, base).unwrap();
    path
}

fn sweep(file: &Path, out: &Path) -> Command {
    let mut command = common::finetune();
    command.arg("sweep").arg(file).arg("--out").arg(out).env_remove("SLURM_ARRAY_TASK_ID");
    command
}

fn failure(command: &mut Command) -> String {
    let output = command.output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stdout));
    let stderr = text(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "not one line: {stderr}");
    stderr
}

fn wait_for(what: &str, child: &mut Child, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done() {
        assert!(child.try_wait().unwrap().is_none(), "exited before {what}");
        assert!(Instant::now() < deadline, "no {what} in two minutes");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn epochs_in(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("metrics.csv")).unwrap().lines().filter(|l| l.contains(",val,")).count()
}

#[test]
fn bad_sweep_files_are_one_line_errors_before_anything_starts() {
    let dir = temp_dir();
    let out = dir.path().join("runs");
    let base = format!("[base]\ndata = {:?}\nrandom-init = true\n", tiny_data().display().to_string());
    let cases = [
        (
            "[base]\nbatch = 4\n[grid]\nseed = [0]".to_owned(),
            "[base]: unknown key \"batch\" (keys are finetune's option names",
        ),
        (
            format!("{base}[grid]\nlr = [0.01, \"fast\"]"),
            "point 1 (lr=fast): key lr: invalid type: string \"fast\", expected f64",
        ),
        (format!("{base}[grid]\nlr = [0.01, 0]"), "point 1 (lr=0): --lr 0: must be a positive number"),
        (format!("{base}[grid]\n"), "[grid] is empty; give at least one option with a list of values"),
    ];
    for (body, expected) in cases {
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, body).unwrap();
        let error = failure(&mut sweep(&file, &out));
        assert!(error.starts_with(&format!("error: sweep file {}", file.display())), "{error}");
        assert!(error.contains(expected), "expected {expected:?} in {error}");
        assert!(!out.exists(), "a bad sweep file created {}", out.display());
    }
}

#[test]
fn points_are_listed_with_stable_indices_and_folders_and_slurm_gets_an_array_of_those_not_done() {
    let dir = temp_dir();
    let file = sweep_file(dir.path(), 1, "seed = [0, 1]\nlr = [0.01, 0.001]");
    let out = dir.path().join("runs");
    let list = || stdout(&common::run_ok(sweep(&file, &out).arg("--list")));
    let listing = list();
    let rows: Vec<&str> = listing.lines().skip(2).take(4).collect();
    assert_eq!(
        rows,
        [
            "    0  new       lr=0.01,seed=0",
            "    1  new       lr=0.01,seed=1",
            "    2  new       lr=0.001,seed=0",
            "    3  new       lr=0.001,seed=1"
        ],
        "{listing}"
    );
    assert_eq!(list(), listing, "the listing changed between two calls");

    let output = common::run_ok(sweep(&file, &out).args([
        "--slurm",
        "--partition",
        "debug",
        "--time",
        "0:10:00",
        "--jobs",
        "2",
    ]));
    let script = std::fs::read_to_string(out.join("sweep.sbatch")).unwrap();
    assert!(stdout(&output).contains(&format!("sbatch {}", out.join("sweep.sbatch").display())), "{}", stdout(&output));
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_finetune"));
    for line in [
        "#SBATCH --array=0-3%2".to_owned(),
        "#SBATCH --partition=debug".to_owned(),
        "#SBATCH --time=0:10:00".to_owned(),
        format!("#SBATCH --output={}/slurm/%A_%a.out", out.display()),
        format!(
            "exec '{}' sweep '{}' --out '{}'",
            exe.canonicalize().unwrap().display(),
            file.display(),
            out.display()
        ),
    ] {
        assert!(script.lines().any(|l| l == line), "missing {line:?} in\n{script}");
    }
    assert!(out.join("slurm").is_dir(), "the task log folder is made with the script");

    // SLURM_ARRAY_TASK_ID picks the point a task runs; the array then leaves it out.
    common::run_ok(sweep(&file, &out).env("SLURM_ARRAY_TASK_ID", "2"));
    let listing = list();
    assert!(listing.contains("    2  done      lr=0.001,seed=0\n"), "{listing}");
    assert!(listing.ends_with("1 done, 3 new\n"), "{listing}");
    common::run_ok(sweep(&file, &out).arg("--slurm"));
    let script = std::fs::read_to_string(out.join("sweep.sbatch")).unwrap();
    assert!(script.contains("\n#SBATCH --array=0-1,3%3\n"), "{script}");
    let error = failure(sweep(&file, &out).args(["--index", "4"]));
    assert!(error.contains("point 4: the sweep has 4 point(s), 0 to 3"), "{error}");
}

#[test]
fn a_sweep_skips_done_points_and_resumes_a_killed_one() {
    let dir = temp_dir();
    let file = sweep_file(dir.path(), 4, "seed = [0, 1, 2]");
    let out = dir.path().join("runs");
    let folder = |seed: usize| out.join(format!("seed={seed}"));
    let output = common::run_ok(sweep(&file, &out).args(["--index", "0"]));
    assert!(stdout(&output).contains("point 0 (seed=0) done in"), "{}", stdout(&output));
    assert!(!folder(1).exists() && !folder(2).exists(), "--index 0 ran other points");
    let done_at = std::fs::metadata(folder(0).join("summary.json")).unwrap().modified().unwrap();

    // Point 1 killed (with its sweep) after its first epoch is saved.
    let mut killed = sweep(&file, &out).args(["--index", "1"]).stdout(Stdio::null()).spawn().unwrap();
    wait_for("saved epoch", &mut killed, || folder(1).join("state.safetensors").exists());
    killed.kill().unwrap();
    killed.wait().unwrap();
    assert!(!folder(1).join("summary.json").exists(), "point 1 finished before it was killed");
    let listing = stdout(&common::run_ok(sweep(&file, &out).arg("--list")));
    assert!(listing.contains("    1  partial   seed=1  [partial ("), "{listing}");
    assert!(listing.ends_with("1 done, 1 new, 1 partial\n"), "{listing}");

    let output = common::run_ok(sweep(&file, &out).args(["--jobs", "2"]));
    let said = stdout(&output);
    assert!(said.contains("3 point(s) under") && said.contains(": 1 done, 0 running elsewhere, 2 to run"), "{said}");
    let log = std::fs::read_to_string(folder(1).join("log.txt")).unwrap();
    assert!(log.contains("attempt 2 on") && log.contains("$ finetune --resume "), "{log}");
    assert!(log.contains("resuming "), "{log}");
    for seed in 0..3 {
        assert!(folder(seed).join("summary.json").exists(), "point {seed} not done");
        assert_eq!(epochs_in(&folder(seed)), 4, "point {seed}");
    }
    let untouched = std::fs::metadata(folder(0).join("summary.json")).unwrap().modified().unwrap();
    assert_eq!(done_at, untouched, "the done point was run again");
    assert!(out.join("results.md").exists(), "a whole sweep ends with its report");

    let again = stdout(&common::run_ok(&mut sweep(&file, &out)));
    assert!(again.contains(": 3 done, 0 running elsewhere, 0 to run"), "{again}");
}

#[test]
fn ctrl_c_stops_the_runs_at_a_safe_point_and_the_same_command_continues() {
    let dir = temp_dir();
    let file = sweep_file(dir.path(), 20, "seed = [3]");
    let out = dir.path().join("runs");
    let run = out.join("seed=3");
    let mut first = sweep(&file, &out).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    wait_for("saved epoch", &mut first, || run.join("state.safetensors").exists());
    assert!(Command::new("kill").args(["-INT", &first.id().to_string()]).status().unwrap().success());
    let output = first.wait_with_output().unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("error: stopped: 1 point(s) interrupted or not started; run the same command again"),
        "{stderr}"
    );
    let exit: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("exit.json")).unwrap()).unwrap();
    assert_eq!(exit["outcome"], "interrupted");
    assert!(!run.join("summary.json").exists() && !run.join("sweep.lock").exists());
    let log = std::fs::read_to_string(run.join("log.txt")).unwrap();
    assert!(log.contains("interrupted "), "the run did not stop at a safe point:\n{log}");

    common::run_ok(&mut sweep(&file, &out));
    assert_eq!(epochs_in(&run), 20);
    assert!(std::fs::read_to_string(run.join("log.txt")).unwrap().contains("resuming "));
}

#[test]
fn two_claims_of_one_point_one_runs_and_the_other_names_the_holder() {
    let dir = temp_dir();
    let file = sweep_file(dir.path(), 3, "seed = [5]");
    let out = dir.path().join("runs");
    let lock = out.join("seed=5/sweep.lock");
    let mut first = sweep(&file, &out).args(["--index", "0"]).stdout(Stdio::null()).spawn().unwrap();
    wait_for("lock", &mut first, || lock.exists());
    let error = failure(sweep(&file, &out).args(["--index", "0"]));
    let holder = format!("is being run by pid {} on ", first.id());
    assert!(error.contains(&holder), "{error}");
    let whole = stdout(&common::run_ok(&mut sweep(&file, &out)));
    assert!(whole.contains(&format!("point 0 (seed=5) {holder}")) && whole.contains("left to it"), "{whole}");
    assert!(first.wait().unwrap().success());
    assert!(!lock.exists(), "the lock outlived its run");
    assert_eq!(epochs_in(&out.join("seed=5")), 3);
}

#[test]
fn the_report_sums_up_seeds_and_lists_a_failed_run() {
    let dir = temp_dir();
    // A folder with no val/ fails when its run starts, after the sweep has checked the file.
    let no_val = dir.path().join("no-val");
    std::fs::create_dir_all(no_val.join("train")).unwrap();
    let good = tiny_data().display().to_string();
    let grid = format!("data = [{good:?}, {:?}]\nseed = [0, 1]", no_val.display().to_string());
    let file = sweep_file(dir.path(), 1, &grid);
    std::fs::write(&file, std::fs::read_to_string(&file).unwrap().replacen(&format!("data = {good:?}\n"), "", 1))
        .unwrap();
    let out = dir.path().join("runs");
    let error = failure(sweep(&file, &out).args(["--jobs", "2"]));
    assert!(error.starts_with("error: 2 of 4 point(s) failed; point "), "{error}");

    let report = common::run_ok(common::finetune().arg("report").arg(&out).arg("--out").arg(dir.path()));
    let md = std::fs::read_to_string(dir.path().join("results.md")).unwrap();
    assert_eq!(stdout(&report).split("\nwrote ").next().unwrap(), md);
    let shown = out.strip_prefix(common::repo()).unwrap();
    assert!(md.starts_with(&format!("# Results: 4 run(s) under `{}`, 2 done\n", shown.display())), "{md}");
    let failed_line = md.lines().find(|l| l.contains("seed=0`: failed (")).unwrap_or_else(|| panic!("{md}"));
    assert!(failed_line.contains("no-val"), "{failed_line}");
    let csv = std::fs::read_to_string(dir.path().join("results.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert!(rows[0].starts_with("runs,done,best_val_acc_mean,best_val_acc_std,"), "{csv}");
    assert!(rows[1].starts_with("2,2,"), "{csv}");
    let image = image::open(dir.path().join("results.png")).unwrap();
    assert!(image.width() >= 800 && image.height() >= 150);
}

/// Issue 27, defect: a `[grid]` over `threads` made the runner append a
/// second `--threads`, which clap refuses, so every point failed.
#[test]
fn a_grid_over_threads_runs_each_point_with_its_own_thread_count() {
    let dir = temp_dir();
    let file = sweep_file(dir.path(), 1, "threads = [1, 2]");
    let out = dir.path().join("runs");
    let output = sweep(&file, &out).output().unwrap();
    assert!(output.status.success(), "{}\n{}", stdout(&output), text(&output.stderr));
    for threads in [1, 2] {
        let summary = std::fs::read_to_string(out.join(format!("threads={threads}")).join("summary.json")).unwrap();
        let summary: serde_json::Value = serde_json::from_str(&summary).unwrap();
        assert_eq!(summary["config"]["threads"], threads, "threads={threads}");
    }
}

/// Issue 27, new-user finding 3: `finetune report runs/` failed on the other
/// tools' folders ("missing field `config`"); it tabulates the finetune runs
/// and names what it left out.
#[test]
fn report_tabulates_finetune_runs_and_names_the_other_tools_folders() {
    let dir = temp_dir();
    let out = dir.path().join("runs");
    let file = sweep_file(dir.path(), 1, "seed = [0]");
    common::run_ok(&mut sweep(&file, &out));
    let mnist = out.join("mnist-quick");
    common::run_ok(&mut common::quick_mnist_mlp(&mnist));
    let output = common::run_ok(common::finetune().arg("report").arg(&out));
    let report = stdout(&output);
    assert!(report.contains("1 run(s)"), "{report}");
    assert!(report.contains("## Left out (run folders of other tools)"), "{report}");
    assert!(report.contains(&format!("- `{}`: mnist mlp", mnist.display())), "{report}");
}

/// Issue 27, finding 6: relative paths in a sweep file resolved against the
/// working folder, and `--list` did not check the data folder (every point
/// failed later with "folder not found").
#[test]
fn relative_paths_start_from_the_sweep_file_and_list_checks_the_data_folder() {
    let dir = temp_dir();
    std::os::unix::fs::symlink(tiny_data(), dir.path().join("tiny")).unwrap();
    let file = dir.path().join("sweep.toml");
    std::fs::write(&file, "[base]\ndata = \"tiny\"\nrandom-init = true\nepochs = 1\n[grid]\nseed = [0]\n").unwrap();
    let out = dir.path().join("runs");
    // Run from the repo root, not the file's folder.
    let listing = stdout(&common::run_ok(sweep(&file, &out).arg("--list")));
    assert!(listing.contains("seed=0"), "{listing}");

    std::fs::write(&file, "[base]\ndata = \"missing\"\nrandom-init = true\n[grid]\nseed = [0]\n").unwrap();
    let error = failure(sweep(&file, &out).arg("--list"));
    assert!(error.contains("point 0 (seed=0): data folder") && error.contains("missing not found"), "{error}");
}

/// A `tool = "mnist mlp"` sweep file over hidden sizes of `epochs` epochs
/// each on `train_limit` images.
fn mnist_sweep_file(dir: &Path, epochs: usize, train_limit: usize, hidden: &str) -> PathBuf {
    let path = dir.join("mnist.toml");
    let text = format!(
        "tool = \"mnist mlp\"\n[base]\ndata = {:?}\nepochs = {epochs}\ntrain-limit = {train_limit}\n\n[grid]\nhidden = [{hidden}]\n",
        common::mnist_dir().display().to_string()
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Issue 27: the course's hidden-size sweep as a sweep file. Each point is
/// `mnist mlp --hidden H`; a point killed mid-run resumes with `mnist mlp
/// --resume`, and every size's val accuracy, the best size and its test
/// accuracy are those of one `mnist mlp` run over the same sizes.
#[test]
fn an_mnist_sweep_resumes_a_killed_point_and_reports_the_best_size_as_mnist_mlp_does() {
    let dir = temp_dir();
    let file = mnist_sweep_file(dir.path(), 3, 3000, "10, 40");
    let out = dir.path().join("runs");
    let folder = |hidden: usize| out.join(format!("hidden={hidden}"));

    let mut killed = sweep(&file, &out).args(["--index", "1"]).stdout(Stdio::null()).spawn().unwrap();
    wait_for("saved epoch", &mut killed, || folder(40).join("state.safetensors").exists());
    killed.kill().unwrap();
    killed.wait().unwrap();
    assert!(!folder(40).join("summary.json").exists(), "point 1 finished before it was killed");
    let listing = stdout(&common::run_ok(sweep(&file, &out).arg("--list")));
    assert!(listing.contains("    1  partial   hidden=40"), "{listing}");

    let said = stdout(&common::run_ok(sweep(&file, &out).args(["--jobs", "2"])));
    assert!(said.contains("point 0 (hidden=10) done in") && said.contains(": val acc 0."), "{said}");
    let log = std::fs::read_to_string(folder(40).join("log.txt")).unwrap();
    assert!(log.contains("attempt 2 on") && log.contains("$ mnist mlp --resume "), "{log}");

    let single = dir.path().join("single");
    common::run_ok(
        common::mnist()
            .args(["mlp", "--hidden", "10,40", "--epochs", "3", "--train-limit", "3000", "--threads", "1", "--data"])
            .arg(common::mnist_dir())
            .arg("--out")
            .arg(&single),
    );
    let single = json(&single.join("summary.json"));
    for (row, hidden) in single["rows"].as_array().unwrap().iter().zip([10, 40]) {
        let point = json(&folder(hidden).join("summary.json"));
        assert_eq!(point["tool"], "mnist mlp");
        assert_eq!(
            point["rows"][0]["val_acc"], row["val_acc"],
            "hidden {hidden}: the sweep's point and mnist mlp differ"
        );
    }
    let best = single["best_hidden"].as_u64().unwrap();
    let best_point = json(&folder(best as usize).join("summary.json"));
    assert_eq!(best_point["test_acc"], single["test_acc"], "the best size's retrain and test differ");

    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(md.starts_with("# Results: 2 run(s) of `mnist mlp` under "), "{md}");
    assert!(md.contains("| hidden | runs done | val acc | test acc | best epoch |"), "{md}");
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    let rows: Vec<Vec<&str>> = csv.lines().map(|l| l.split(',').collect()).collect();
    assert_eq!(rows[0][..4], ["hidden", "runs", "done", "val_acc_mean"], "{csv}");
    let best_row =
        rows[1..].iter().max_by(|a, b| a[3].parse::<f64>().unwrap().total_cmp(&b[3].parse().unwrap())).unwrap();
    assert_eq!(best_row[0], best.to_string(), "the report's best size is not mnist mlp's:\n{csv}");
}

/// A sweep file names its tool, and a key the tool does not have is one
/// line naming the tool; a point folder holding another tool's run is
/// refused by name.
#[test]
fn a_sweep_checks_keys_against_its_tool_and_refuses_another_tools_folder() {
    let dir = temp_dir();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "tool = \"mnist mlp\"\n[grid]\narch = [\"resnet18\"]\n").unwrap();
    let error = failure(sweep(&file, &dir.path().join("runs")).arg("--list"));
    assert!(error.contains("unknown key \"arch\" (keys are mnist mlp's option names"), "{error}");
    std::fs::write(&file, "tool = \"mnist\"\n[grid]\nseed = [0]\n").unwrap();
    let error = failure(sweep(&file, &dir.path().join("runs")).arg("--list"));
    assert!(
        error.contains("a sweep runs one of \"finetune\", \"mnist mlp\", \"mnist cnn\", \"caption train\""),
        "{error}"
    );

    let file = mnist_sweep_file(dir.path(), 1, 200, "10");
    let out = dir.path().join("runs");
    common::run_ok(
        common::finetune()
            .args(["--data"])
            .arg(tiny_data())
            .args(["--random-init", "--image-size", "32", "--epochs", "1", "--out"])
            .arg(out.join("hidden=10")),
    );
    let error = failure(sweep(&file, &out).arg("--list"));
    assert!(error.contains("holds a run of `finetune`, not of `mnist mlp`"), "{error}");
}

/// Issue 27, finding 4: a sweep's report counted the folders under its
/// `--out`, not its points (a stopped 4-point sweep read "3 run(s)", and
/// folders of an edited grid stayed in). Every point is a row, those not
/// started `new`; folders that are no point of the sweep are named apart.
#[test]
fn a_sweeps_report_counts_its_points_and_names_folders_of_an_edited_grid() {
    let dir = temp_dir();
    let out = dir.path().join("runs");
    let file = mnist_sweep_file(dir.path(), 1, 200, "10, 20");
    common::run_ok(sweep(&file, &out).args(["--index", "0"]));
    let file = mnist_sweep_file(dir.path(), 1, 200, "10, 30");
    let report = stdout(&common::run_ok(sweep(&file, &out).arg("--report")));
    assert!(report.starts_with("# Results: 2 run(s) of `mnist mlp` under "), "{report}");
    assert!(report.contains(", 1 done\n"), "{report}");
    assert!(report.contains("- `hidden=30`: new\n"), "{report}");
    assert!(!report.contains("Left out"), "{report}");

    let file = mnist_sweep_file(dir.path(), 1, 200, "30");
    let report = stdout(&common::run_ok(sweep(&file, &out).arg("--report")));
    assert!(report.starts_with("# Results: 1 run(s) of `mnist mlp` under "), "{report}");
    assert!(report.contains(", 0 done\n"), "{report}");
    let left_out = format!(
        "## Left out (run folders that are not runs of the sweep's points)\n\n- `{}`\n",
        out.join("hidden=10").display()
    );
    assert!(report.contains(&left_out), "{report}");
}

/// Review of issue 27's sweeps: a `caption train` point on an image folder
/// saves its backbone's weights file as an absolute path; the point must
/// resolve it the same way, or the sweep refuses its own finished run.
#[test]
fn a_caption_sweep_on_an_image_folder_recognises_its_own_runs() {
    let dir = temp_dir();
    let scenes = dir.path().join("scenes");
    common::run_ok(
        Command::new(env!("CARGO_BIN_EXE_caption"))
            .current_dir(common::repo())
            .args(["scenes", "--train", "20", "--val", "6", "--seed", "1", "--out"])
            .arg(&scenes),
    );
    let file = dir.path().join("caption.toml");
    let text = format!(
        "tool = \"caption train\"\n[base]\ndata = {:?}\nepochs = 1\nhidden = 16\nwordvec = 8\n[grid]\ncell = [\"rnn\"]\n",
        scenes.display().to_string()
    );
    std::fs::write(&file, text).unwrap();
    let out = dir.path().join("runs");
    let said = stdout(&common::run_ok(&mut sweep(&file, &out)));
    assert!(said.contains("point 0 (cell=rnn) done in") && said.contains(": val BLEU-4 "), "{said}");
    let listing = stdout(&common::run_ok(sweep(&file, &out).arg("--list")));
    assert!(listing.ends_with("1 done\n"), "{listing}");
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(md.starts_with("# Results: 1 run(s) of `caption train` under "), "{md}");
}

/// Review of issue 27's report: a folder of only eigenfaces runs was
/// tabulated as finetune runs; nothing here is a run a report tabulates.
#[test]
fn a_report_of_eigenfaces_runs_alone_names_them_and_tabulates_nothing() {
    let dir = temp_dir();
    let run = dir.path().join("faces");
    common::run_ok(
        common::eigenfaces().arg("--input").arg(common::lfw_faces()).args(["--no-figures", "--out"]).arg(&run),
    );
    let error = failure(common::finetune().arg("report").arg(dir.path()));
    assert!(
        error.contains("no runs of finetune, mnist or caption train to tabulate; run folders of other tools:"),
        "{error}"
    );
    assert!(error.contains(&format!("{} (eigenfaces)", run.display())), "{error}");
}
