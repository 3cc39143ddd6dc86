//! Data-parallel `finetune` on c10d's Gloo backend, on 127.0.0.1: two ranks
//! train what one process trains with the doubled batch, however they are
//! launched (`--nproc`, torchrun, Slurm's variables); Ctrl-C, a killed rank
//! and a lone rank end every process with one line; a two-rank state resumes
//! in one process. Every child is killed after a bound.
#![cfg(tchlab_data)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{assert_same_metrics, cached_head_run as feature_extract, metrics, small_data};

/// How long any run here may take before it is killed and the test fails.
const BOUND: Duration = Duration::from_secs(120);

/// Full mode for `epochs` (6: long enough to be stopped in the second).
fn full_mode(out: &Path, epochs: usize) -> Command {
    let mut cmd = common::finetune();
    cmd.args(["--arch", "resnet18", "--random-init", "--mode", "full", "--image-size", "96"])
        .args(["--epochs", &epochs.to_string()])
        .args(["--batch-size", "2", "--threads", "1", "--dist-timeout", "20"])
        .arg("--data")
        .arg(small_data())
        .arg("--out")
        .arg(out);
    cmd
}

/// `cmd` as rank `rank` of `world` with the store at 127.0.0.1:`port`.
fn as_rank(mut cmd: Command, rank: usize, world: usize, port: u16) -> Command {
    cmd.env("RANK", rank.to_string())
        .env("WORLD_SIZE", world.to_string())
        .env("LOCAL_RANK", rank.to_string())
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string());
    cmd
}

fn spawn(mut cmd: Command) -> Child {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

/// The child's output, killing it (and failing) after [`BOUND`].
fn finish(mut child: Child) -> Output {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > BOUND {
            child.kill().ok();
            panic!("a rank still ran after {BOUND:?}: {:?}", child.wait_with_output().map(|o| common::text(&o.stderr)));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn run(cmd: Command) -> Output {
    let output = finish(spawn(cmd));
    assert!(output.status.success(), "failed ({}): {}", output.status, common::text(&output.stderr));
    output
}

fn free_port() -> u16 {
    tchlab::dist::free_port().unwrap()
}

fn one_process_with_the_doubled_batch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = common::temp_dir();
        run(feature_extract(8, dir.path()));
        dir
    })
    .path()
}

#[test]
fn two_ranks_train_what_one_process_trains_with_the_doubled_batch() {
    let two = common::temp_dir();
    let mut cmd = feature_extract(4, two.path());
    cmd.args(["--nproc", "2"]);
    let output = run(cmd);
    assert!(common::stdout(&output).contains("data-parallel: 2 ranks, 8 images per step"));
    assert_same_metrics(two.path(), one_process_with_the_doubled_batch());
    common::assert_same_weights(two.path(), one_process_with_the_doubled_batch());
    let summary = common::read_json(&two.path().join("summary.json"));
    assert_eq!((summary["world_size"].as_u64(), summary["global_batch"].as_u64()), (Some(2), Some(8)));
    assert_eq!(summary["dist_backend"], "gloo");
}

#[test]
fn torchrun_and_slurms_variables_launch_the_same_run() {
    let torchrun = common::temp_dir();
    let mut cmd = Command::new(common::repo().join(".venv/bin/torchrun"));
    cmd.args(["--no-python", "--nproc-per-node=2", "--master-port"])
        .arg(free_port().to_string())
        .arg(env!("CARGO_BIN_EXE_finetune"))
        .args(feature_extract(4, torchrun.path()).get_args());
    run(cmd);
    assert_same_metrics(torchrun.path(), one_process_with_the_doubled_batch());

    let slurm = common::temp_dir();
    let port = free_port();
    let ranks: Vec<Child> = (0..2)
        .map(|rank| {
            let mut cmd = feature_extract(4, slurm.path());
            common::as_slurm_task(&mut cmd, rank).env("MASTER_PORT", port.to_string());
            spawn(cmd)
        })
        .collect();
    for output in ranks.into_iter().map(finish) {
        assert!(output.status.success(), "{}", common::text(&output.stderr));
    }
    assert_same_metrics(slurm.path(), one_process_with_the_doubled_batch());
}

/// Starts ranks 0 and 1 of `full_mode`, waits until rank 0 starts its
/// second epoch, and signals rank 1 with `signal`.
fn signal_rank_1_in_epoch_1(out: &Path, signal: libc::c_int) -> (Output, Output) {
    let port = free_port();
    let mut rank_0 = spawn(as_rank(full_mode(out, 6), 0, 2, port));
    let rank_1 = spawn(as_rank(full_mode(&out.join("rank-1"), 6), 1, 2, port));
    let mut stdout = std::io::BufReader::new(rank_0.stdout.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("Epoch 1/") {
        line.clear();
        assert!(std::io::BufRead::read_line(&mut stdout, &mut line).unwrap() > 0, "rank 0 ended before epoch 1");
    }
    // SAFETY: signalling a child of this test.
    unsafe { libc::kill(rank_1.id() as libc::pid_t, signal) };
    let started = Instant::now();
    let outputs = (finish(rank_0), finish(rank_1));
    assert!(started.elapsed() < Duration::from_secs(30), "the ranks took {:?} to stop", started.elapsed());
    outputs
}

#[test]
fn ctrl_c_on_one_rank_stops_both_and_the_state_resumes_at_any_world_size() {
    let dir = common::temp_dir();
    let out = dir.path().join("run");
    let (rank_0, rank_1) = signal_rank_1_in_epoch_1(&out, libc::SIGINT);
    let said = common::one_line_exit(&rank_0, 130);
    assert!(said.contains(&format!("Resume with: finetune --resume {}", out.display())), "{said}");
    assert_eq!(rank_1.status.code(), Some(130), "{}", common::text(&rank_1.stderr));
    assert!(!out.join("rank-1").exists(), "rank 1 wrote files");
    assert_eq!(metrics(&out).len(), 2, "epoch 0 saved: {:?}", metrics(&out));

    // Resumed by two ranks: the numbers of an uninterrupted two-rank run.
    let mut resume = common::finetune();
    resume.arg("--resume").arg(&out).args(["--epochs", "2", "--nproc", "2"]);
    run(resume);
    let uninterrupted = dir.path().join("uninterrupted");
    let mut cmd = full_mode(&uninterrupted, 2);
    cmd.args(["--nproc", "2"]);
    run(cmd);
    assert_eq!(metrics(&out), metrics(&uninterrupted), "resumed against uninterrupted");

    // Resumed by one process: the state loads whole and training goes on.
    let before = metrics(&out);
    let mut resume = common::finetune();
    resume.arg("--resume").arg(&out).args(["--epochs", "3"]);
    run(resume);
    let after = metrics(&out);
    assert_eq!(after.len(), 6);
    assert_eq!(after[..4], before[..], "the resumed run changed the epochs it loaded");
    assert_eq!(common::read_json(&out.join("summary.json"))["world_size"], 1);
}

#[test]
fn a_killed_rank_ends_the_other_with_one_line() {
    let dir = common::temp_dir();
    let (rank_0, rank_1) = signal_rank_1_in_epoch_1(&dir.path().join("run"), libc::SIGKILL);
    assert_eq!(rank_1.status.code(), None, "rank 1 was killed");
    let said = common::one_line_error(&rank_0);
    assert!(said.contains("rank 0 of 2"), "{said}");
}

#[test]
fn a_lone_rank_stops_after_its_timeout_with_one_line() {
    let dir = common::temp_dir();
    let mut cmd = as_rank(feature_extract(4, dir.path()), 1, 2, free_port());
    cmd.args(["--dist-timeout", "2"]);
    let started = Instant::now();
    let output = finish(spawn(cmd));
    assert!(started.elapsed() < Duration::from_secs(30), "took {:?}", started.elapsed());
    let said = common::one_line_error(&output);
    assert!(said.contains("rank 1 of 2: cannot join") && said.contains("2000 ms"), "{said}");
}

/// A sweep file of one point, a two-rank run of [`feature_extract`]'s recipe.
fn two_rank_sweep(dir: &Path) -> PathBuf {
    let file = dir.join("sweep.toml");
    let data = small_data().display().to_string();
    let base = format!(
        "[base]\ndata = {data:?}\narch = \"resnet18\"\nrandom-init = true\nmode = \"feature-extract\"\ncache-features = true\nepochs = 3\nimage-size = 64\nlr = 0.01\nbatch-size = 4\n\n[grid]\nnproc = [2]\n"
    );
    std::fs::write(&file, base).unwrap();
    file
}

#[test]
fn a_sweep_point_may_be_a_data_parallel_run() {
    let dir = common::temp_dir();
    let file = two_rank_sweep(dir.path());
    let out = dir.path().join("runs");
    let mut sweep = common::finetune();
    sweep.arg("sweep").arg(&file).arg("--out").arg(&out).args(["--jobs", "1"]);
    run(sweep);
    let point = out.join("nproc=2");
    assert_eq!(common::read_json(&point.join("summary.json"))["world_size"], 2);
    assert_same_metrics(&point, one_process_with_the_doubled_batch());
}

/// What `srun` of `sweep-nproc2.sbatch` starts: two sweeps of one point,
/// ranks 0 and 1 by Slurm's variables.
#[test]
fn srun_tasks_of_a_sweep_run_its_point_as_ranks_and_rank_0_alone_records_it() {
    let dir = common::temp_dir();
    let file = two_rank_sweep(dir.path());
    let out = dir.path().join("runs");
    let port = free_port();
    let tasks: Vec<Child> = (0..2)
        .map(|rank| {
            let mut sweep = common::finetune();
            sweep.arg("sweep").arg(&file).arg("--out").arg(&out).args(["--index", "0"]);
            common::as_slurm_task(&mut sweep, rank)
                .env("SLURM_CPUS_PER_TASK", "1")
                .env("MASTER_PORT", port.to_string());
            spawn(sweep)
        })
        .collect();
    let outputs: Vec<Output> = tasks.into_iter().map(finish).collect();
    for output in &outputs {
        assert!(output.status.success(), "{}", common::text(&output.stderr));
    }
    assert!(common::stdout(&outputs[1]).contains("point 0 (nproc=2): rank 1 joins rank 0's run"));
    let point = out.join("nproc=2");
    assert_eq!(common::read_json(&point.join("summary.json"))["world_size"], 2);
    assert_same_metrics(&point, one_process_with_the_doubled_batch());
    let record = common::read_json(&point.join("exit.json"));
    assert_eq!((record["outcome"].as_str(), record["attempts"].as_u64()), (Some("done"), Some(1)));
    let log = std::fs::read_to_string(point.join("log.txt")).unwrap();
    assert_eq!(log.matches("== finetune sweep: point 0").count(), 1, "one log header, rank 0's:\n{log}");
    assert!(log.contains("data-parallel: 2 ranks"), "{log}");
    assert!(!point.join("sweep.lock").exists());
}
