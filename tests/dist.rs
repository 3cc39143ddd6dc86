//! `tchlab::dist` across real processes: two ranks on 127.0.0.1 (a free
//! port), each this test binary re-executed with the launch variables and
//! filtered to one `#[ignore]`d `child_*` test; every child is killed after a
//! bound, and dies with the test. Data-free.
//!
//! - `collectives`: all-reduce mean of different tensors per rank (buckets
//!   of a few bytes, so they split), broadcast, all-gather, metric sums:
//!   exact values on both ranks.
//! - `lone_rank_*`: world 2 with one rank started fails within the timeout,
//!   exit 1, one error line naming the rank and the timeout.
//! - `killed_*`: a rank killed mid-run (rank 1, or rank 0, the store's host)
//!   makes the other fail within the timeout, leave the group and exit 1.
//! - `slurm_variables_only`, `torchrun_agent_store`: the two other launchers.
//! - `local_ranks_*`: `spawn_local_ranks` (`--nproc`): success, a failed rank
//!   named and the others killed after the bound, Ctrl-C passed on.
//! - `shim_references_no_gloo_symbol`: the compiled `csrc/c10d.cpp` needs
//!   nothing of gloo's (its declarations in `csrc/gloo_decls` are parse-only).

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};
use tch::{Device, Kind, Tensor};
use tchlab::dist::{spawn_local_ranks, GroupOptions, Launch, ProcessGroup};

/// The group timeout the children use unless a test sets `DIST_TEST_TIMEOUT_MS`.
const CHILD_TIMEOUT_MS: u64 = 20_000;

/// The variables of every launcher, cleared in each child before a test sets its own.
const LAUNCH_VARS: &[&str] = &[
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
    "TORCHELASTIC_USE_AGENT_STORE",
    "TORCHELASTIC_RESTART_COUNT",
    "SLURM_PROCID",
    "SLURM_STEP_ID",
    "SLURM_STEPID",
    "SLURM_NTASKS",
    "SLURM_LOCALID",
    "SLURM_JOB_NODELIST",
    "SLURM_NODELIST",
    "SLURM_JOB_ID",
    "SLURM_JOBID",
];

// ---------------------------------------------------------------- children

/// The group this child's launch variables describe, or the error on stderr and exit 1.
fn child_group() -> ProcessGroup {
    let launch = Launch::from_env().unwrap_or_else(|e| exit_with(&e)).expect("run with launch variables");
    let timeout = env_number("DIST_TEST_TIMEOUT_MS").unwrap_or(CHILD_TIMEOUT_MS);
    let mut options = GroupOptions { timeout: Duration::from_millis(timeout), ..GroupOptions::default() };
    if let Some(bytes) = env_number("DIST_TEST_BUCKET_BYTES") {
        options.bucket_bytes = bytes as usize;
    }
    tch::set_num_threads(1);
    ProcessGroup::join(&launch, &options).unwrap_or_else(|e| exit_with(&e))
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| v.parse().unwrap())
}

/// What a binary does with an error: one `error:` line, exit 1.
fn exit_with(error: &anyhow::Error) -> ! {
    eprintln!("error: {error:#}");
    std::process::exit(1)
}

/// A result line for the parent (libtest may print on the same line first).
fn report(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "@@{line}").unwrap();
    out.flush().unwrap();
}

fn floats(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_kind(Kind::Double).reshape([-1])).unwrap()
}

fn arange(n: i64, kind: Kind) -> Tensor {
    Tensor::arange(n, (kind, Device::Cpu))
}

#[test]
#[ignore = "a rank of `collectives`"]
fn child_collectives() {
    let group = child_group();
    let r = group.rank() as f64;
    // Different values per rank, in buckets of 32 bytes (DIST_TEST_BUCKET_BYTES): [small, a] together,
    // [strided] flattened alone, [b] (another dtype), [large] (over the cap, as itself), [small2].
    let small = Tensor::from_slice(&[r as f32 * 4.0, 1.0]);
    let a = arange(6, Kind::Float).reshape([2, 3]) * (r + 1.0);
    let strided = (arange(6, Kind::Float).reshape([3, 2]) * (r + 1.0)).transpose(0, 1);
    let b = arange(5, Kind::Double) + r * 10.0;
    let large = Tensor::full([40], r, (Kind::Float, Device::Cpu));
    let small2 = Tensor::from_slice(&[-(r as f32)]);
    let tensors = [&small, &a, &strided, &b, &large, &small2].map(|t| t.shallow_clone());
    group.all_reduce_mean_(&tensors).unwrap();
    assert_eq!(floats(&small), [2.0, 1.0]);
    assert_eq!(floats(&a), [0.0, 1.5, 3.0, 4.5, 6.0, 7.5]);
    assert_eq!(floats(&strided), [0.0, 3.0, 6.0, 1.5, 4.5, 7.5]);
    assert_eq!(floats(&b), [5.0, 6.0, 7.0, 8.0, 9.0]);
    assert_eq!(floats(&large), [0.5; 40]);
    assert_eq!(floats(&small2), [-0.5]);

    // Broadcast from rank 1, into a leaf that requires grad (a parameter) too.
    let weight = (arange(4, Kind::Float) + r * 100.0).set_requires_grad(true);
    let buffer = Tensor::from_slice(&[r as i64, 7]);
    group.broadcast_(&[weight.shallow_clone(), buffer.shallow_clone()], 1).unwrap();
    assert_eq!(floats(&weight), [100.0, 101.0, 102.0, 103.0]);
    assert_eq!(floats(&buffer), [1.0, 7.0]);
    assert!(weight.requires_grad());

    let gathered = group.all_gather(&Tensor::from_slice(&[r, r + 0.5])).unwrap();
    assert_eq!(gathered.iter().map(floats).collect::<Vec<_>>(), [[0.0, 0.5], [1.0, 1.5]]);

    let mut metrics = [r + 1.0, 0.25];
    group.all_reduce_sum_f64(&mut metrics).unwrap();
    assert_eq!(metrics, [3.0, 0.5]);

    // Refused before any collective (the same on every rank), so the group stays usable.
    let ints = group.all_reduce_mean_(&[small.shallow_clone(), Tensor::from_slice(&[1i64])]).unwrap_err();
    let expected =
        format!("rank {r} of 2: all-reduce mean of tensor 1 (Int64): only floating-point tensors are averaged");
    assert_eq!(ints.to_string(), expected);
    let undefined = group.broadcast_(&[Tensor::new()], 0).unwrap_err().to_string();
    assert!(undefined.starts_with(&format!("rank {r} of 2: broadcast of an undefined tensor")), "{undefined}");

    group.finish().unwrap();
    report(&format!("ok rank {r}"));
}

#[test]
#[ignore = "a rank of the launcher tests"]
fn child_basic() {
    let launch = Launch::from_env().unwrap().expect("launch variables");
    let group = child_group();
    let rank = Tensor::full([3], group.rank() as f64, (Kind::Float, Device::Cpu));
    group.all_reduce_mean_(&[rank.shallow_clone()]).unwrap_or_else(|e| exit_with(&e));
    let expected = (group.world_size() - 1) as f64 / 2.0;
    assert_eq!(floats(&rank), [expected; 3]);
    let ranks = group.all_gather(&Tensor::from_slice(&[group.rank() as i64])).unwrap_or_else(|e| exit_with(&e));
    assert_eq!(
        ranks.iter().map(floats).collect::<Vec<_>>(),
        (0..group.world_size()).map(|r| vec![r as f64]).collect::<Vec<_>>()
    );
    group.finish().unwrap_or_else(|e| exit_with(&e));
    let (rank, world, launcher, hosts) = (launch.rank, launch.world_size, launch.launcher, launch.hosts_store);
    report(&format!("ok rank {rank} of {world} launcher {launcher:?} hosts_store {hosts}"));
}

#[test]
#[ignore = "a rank of `killed_*`"]
fn child_steps() {
    let group = child_group();
    let gradient = Tensor::ones([1 << 16], (Kind::Float, Device::Cpu));
    let started = Instant::now();
    for step in 0.. {
        if let Err(error) = group.all_reduce_mean_(&[gradient.shallow_clone()]) {
            drop(group); // as a `?` would: leaving a broken group must not hang or abort
            exit_with(&error);
        }
        report(&format!("step {step}"));
        std::thread::sleep(Duration::from_millis(20));
        if started.elapsed() > Duration::from_secs(60) {
            break;
        }
    }
    eprintln!("error: no collective failed in 60 s");
    std::process::exit(2);
}

#[test]
#[ignore = "a rank of `local_ranks_failure`"]
fn child_fail() {
    if std::env::var("RANK").unwrap() == "1" {
        std::process::exit(3);
    }
    std::thread::sleep(Duration::from_secs(120));
}

#[test]
#[ignore = "a rank of `local_ranks_pass_on_ctrl_c`"]
fn child_sleep() {
    std::thread::sleep(Duration::from_secs(120));
}

// ---------------------------------------------------------------- parents

/// A child rank: its process and where its output goes.
struct Rank {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

/// How a child rank ended.
struct Ended {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    seconds: f64,
}

impl Ended {
    /// The `@@` lines it reported.
    fn reports(&self) -> Vec<String> {
        self.stdout.lines().filter_map(|l| l.split_once("@@")).map(|(_, r)| r.to_owned()).collect()
    }

    /// Its stderr: one `error:` line, nothing else (c10d's own log is quiet).
    fn error_line(&self) -> String {
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert!(lines.len() == 1 && lines[0].starts_with("error: "), "not one error line:\n{}", self.stderr);
        lines[0].to_owned()
    }
}

impl std::fmt::Debug for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} after {:.1} s\nstdout:\n{}\nstderr:\n{}", self.status, self.seconds, self.stdout, self.stderr)
    }
}

/// This test binary filtered to the child test `name`.
fn child_command(name: &str) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.args([name, "--exact", "--include-ignored", "--nocapture", "--test-threads=1"]);
    for var in LAUNCH_VARS {
        command.env_remove(var);
    }
    command.env("OMP_NUM_THREADS", "1").env_remove("RUST_BACKTRACE");
    command
}

fn start(mut command: Command, dir: &Path, label: &str) -> Rank {
    let stdout = dir.join(format!("{label}.out"));
    let stderr = dir.join(format!("{label}.err"));
    command
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(&stderr).unwrap());
    common::die_with_parent(&mut command);
    Rank { child: command.spawn().unwrap(), stdout, stderr }
}

/// Rank `rank` of `world` by the torch variables, `env` added.
fn start_rank(test: &str, rank: usize, world: usize, port: u16, env: &[(&str, &str)], dir: &Path) -> Rank {
    let mut command = child_command(test);
    command
        .env("RANK", rank.to_string())
        .env("WORLD_SIZE", world.to_string())
        .env("LOCAL_RANK", rank.to_string())
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string());
    command.envs(env.iter().copied());
    start(command, dir, &format!("rank{rank}"))
}

/// Waits for every rank; kills them all and fails when one is still running after `bound`.
fn wait_all(mut ranks: Vec<Rank>, bound: Duration) -> Vec<Ended> {
    let started = Instant::now();
    let mut ended: Vec<Option<Ended>> = ranks.iter().map(|_| None).collect();
    while ended.iter().any(Option::is_none) {
        for (rank, slot) in ranks.iter_mut().zip(ended.iter_mut()).filter(|(_, slot)| slot.is_none()) {
            if let Some(status) = rank.child.try_wait().unwrap() {
                *slot = Some(finished(rank, status, started));
            }
        }
        if started.elapsed() > bound {
            let outputs: Vec<String> = ranks.iter_mut().map(|rank| kill(rank, started)).collect();
            panic!("ranks still running after {bound:?}, killed:\n{}", outputs.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    ended.into_iter().map(Option::unwrap).collect()
}

fn finished(rank: &Rank, status: ExitStatus, started: Instant) -> Ended {
    let read = |path: &Path| String::from_utf8_lossy(&std::fs::read(path).unwrap()).into_owned();
    Ended { status, stdout: read(&rank.stdout), stderr: read(&rank.stderr), seconds: started.elapsed().as_secs_f64() }
}

fn kill(rank: &mut Rank, started: Instant) -> String {
    let _ = rank.child.kill();
    let status = rank.child.wait().unwrap();
    format!("{:?}", finished(rank, status, started))
}

fn free_port() -> u16 {
    tchlab::dist::free_port().unwrap()
}

fn assert_ok(ended: &[Ended]) {
    for (rank, e) in ended.iter().enumerate() {
        assert!(e.status.success(), "rank {rank}: {e:?}");
        assert!(e.reports().iter().any(|r| r.starts_with("ok")), "rank {rank}: {e:?}");
    }
}

#[test]
fn collectives() {
    let dir = common::temp_dir();
    let port = free_port();
    let tiny_buckets = [("DIST_TEST_BUCKET_BYTES", "32")];
    let ranks = (0..2).map(|r| start_rank("child_collectives", r, 2, port, &tiny_buckets, dir.path())).collect();
    assert_ok(&wait_all(ranks, Duration::from_secs(60)));
}

/// World 2 with only `rank` started: exit 1 within the timeout, one line naming the rank and the timeout.
fn lone_rank(rank: usize) {
    let dir = common::temp_dir();
    let timeout = [("DIST_TEST_TIMEOUT_MS", "2000")];
    let ended =
        wait_all(vec![start_rank("child_basic", rank, 2, free_port(), &timeout, dir.path())], Duration::from_secs(30));
    let lone = &ended[0];
    assert_eq!(lone.status.code(), Some(1), "{lone:?}");
    let line = lone.error_line();
    assert!(
        line.starts_with(&format!("error: rank {rank} of 2: cannot join the process group at 127.0.0.1:")),
        "{line}"
    );
    assert!(line.contains("after the timeout of 2000 ms"), "{line}");
    assert!(lone.seconds < 15.0, "{lone:?}");
}

#[test]
fn lone_rank_hosting_the_store_times_out() {
    lone_rank(0);
}

#[test]
fn lone_client_rank_times_out() {
    lone_rank(1);
}

/// Kills rank `victim` after a few steps; the other must fail within the timeout with one error line.
fn killed_rank(victim: usize) -> Ended {
    let dir = common::temp_dir();
    let port = free_port();
    let timeout = [("DIST_TEST_TIMEOUT_MS", "5000")];
    let mut ranks: Vec<Rank> = (0..2).map(|r| start_rank("child_steps", r, 2, port, &timeout, dir.path())).collect();
    let started = Instant::now();
    while std::fs::read_to_string(&ranks[victim].stdout).unwrap().matches("@@step").count() < 3 {
        assert!(started.elapsed() < Duration::from_secs(30), "no steps: {}", kill(&mut ranks[victim], started));
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut victim_rank = ranks.remove(victim);
    victim_rank.child.kill().unwrap();
    victim_rank.child.wait().unwrap();
    let killed_at = Instant::now();
    let survivor = wait_all(ranks, Duration::from_secs(30)).remove(0);
    assert!(killed_at.elapsed() < Duration::from_secs(15), "{survivor:?}");
    survivor
}

#[test]
fn killed_rank_fails_the_survivor() {
    let survivor = killed_rank(1);
    assert_eq!(survivor.status.code(), Some(1), "{survivor:?}");
    assert!(
        survivor.error_line().starts_with("error: rank 0 of 2: all-reduce failed (another rank left or died): "),
        "{survivor:?}"
    );
}

#[test]
fn killed_store_host_fails_the_survivor() {
    let survivor = killed_rank(0);
    assert_eq!(survivor.status.code(), Some(1), "{survivor:?}");
    assert!(
        survivor.error_line().starts_with("error: rank 1 of 2: all-reduce failed (another rank left or died): "),
        "{survivor:?}"
    );
}

#[test]
fn slurm_variables_only() {
    let dir = common::temp_dir();
    // A job id whose derived port (15000 + id mod 17000) is free now.
    let job_id = (0..20_000u64)
        .map(|k| 7_000_000 + (std::process::id() as u64 * 7 + k * 13) % 20_000)
        .find(|id| std::net::TcpListener::bind(("127.0.0.1", tchlab::dist::launch::port_for_job(*id))).is_ok())
        .unwrap();
    let ranks = (0..2)
        .map(|rank| {
            let mut command = child_command("child_basic");
            common::as_slurm_task(&mut command, rank).env("SLURM_JOB_ID", job_id.to_string());
            start(command, dir.path(), &format!("rank{rank}"))
        })
        .collect();
    let ended = wait_all(ranks, Duration::from_secs(60));
    assert_ok(&ended);
    assert!(
        ended[0].reports().contains(&"ok rank 0 of 2 launcher Slurm hosts_store true".to_owned()),
        "{:?}",
        ended[0]
    );
    assert!(
        ended[1].reports().contains(&"ok rank 1 of 2 launcher Slurm hosts_store false".to_owned()),
        "{:?}",
        ended[1]
    );
}

#[test]
fn torchrun_agent_store() {
    let dir = common::temp_dir();
    let mut command = Command::new(common::repo().join(".venv/bin/torchrun"));
    command
        .args(["--no-python", "--nproc-per-node=2", "--master-addr=127.0.0.1"])
        .arg(format!("--master-port={}", free_port()))
        .arg(std::env::current_exe().unwrap())
        .args(["child_basic", "--exact", "--include-ignored", "--nocapture", "--test-threads=1"]);
    for var in LAUNCH_VARS {
        command.env_remove(var);
    }
    let ended = wait_all(vec![start(command, dir.path(), "torchrun")], Duration::from_secs(120)).remove(0);
    assert!(ended.status.success(), "{ended:?}");
    let mut reports = ended.reports();
    reports.sort();
    assert_eq!(
        reports,
        ["ok rank 0 of 2 launcher Torchrun hosts_store false", "ok rank 1 of 2 launcher Torchrun hosts_store false"],
        "{ended:?}"
    );
}

#[test]
fn shim_references_no_gloo_symbol() {
    let library = Path::new(env!("OUT_DIR")).join("libtchlab_c10d.a");
    let output = common::run_ok(Command::new("nm").args(["--undefined-only", "--demangle"]).arg(&library));
    let undefined = common::stdout(&output);
    assert!(undefined.contains("c10d::ProcessGroupGloo::ProcessGroupGloo"), "{undefined}");
    let gloo: Vec<&str> =
        undefined.lines().filter(|l| l.replace("c10d::ProcessGroupGloo", "").contains("gloo::")).collect();
    assert!(gloo.is_empty(), "{}: references gloo: {gloo:#?}", library.display());
}

fn child_args(name: &str) -> Vec<std::ffi::OsString> {
    [name, "--exact", "--include-ignored", "--nocapture", "--test-threads=1"].iter().map(Into::into).collect()
}

#[test]
fn local_ranks_succeed() {
    let exe = std::env::current_exe().unwrap();
    let status =
        spawn_local_ranks(2, &exe, &child_args("child_basic"), 1, Duration::from_secs(5), &AtomicUsize::new(0));
    assert!(status.unwrap().success());
}

#[test]
fn local_ranks_failure_names_the_rank_and_kills_the_others() {
    let exe = std::env::current_exe().unwrap();
    let started = Instant::now();
    let error = spawn_local_ranks(2, &exe, &child_args("child_fail"), 1, Duration::from_secs(2), &AtomicUsize::new(0))
        .unwrap_err()
        .to_string();
    assert_eq!(error, "rank 1 of 2 failed (exit status 3); rank 0 still running 2 s later, killed");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
}

#[test]
fn local_ranks_pass_on_ctrl_c() {
    let exe = std::env::current_exe().unwrap();
    let started = Instant::now();
    let pressed = AtomicUsize::new(1);
    let error = spawn_local_ranks(2, &exe, &child_args("child_sleep"), 1, Duration::from_secs(30), &pressed)
        .unwrap_err()
        .to_string();
    // The children have no handler: SIGINT ends them at once.
    assert!(error.contains("failed (killed by signal 2)"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
}
