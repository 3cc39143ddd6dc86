//! Issue #28's parity with PyTorch's own data parallelism: a full-mode
//! ResNet-18 trained by two ranks on c10d's Gloo backend against real
//! `torch.nn.parallel.DistributedDataParallel` (`scripts/reference/ddp.py`,
//! two processes over `torch.distributed` Gloo), from the same torchvision
//! checkpoint, on the same inputs in `DistributedSampler(shuffle=False)`
//! order, no augmentation, SGD with momentum, cross-entropy mean, 10 steps.
//! Each step's loss (the mean over the ranks) must be within 1e-4 absolute
//! of DDP's for the first steps ([`strict_steps`]: three, two with Winograd); the later ones and the
//! final weights are printed (float32 rounding grows chaotically in this
//! training, see [`strict_steps`]). The weights must be identical across
//! our ranks. Our run is made twice: with the CPU default backprop
//! (Winograd weight gradients) that `finetune` uses, and with libtorch's
//! autograd.
//!
//! The ranks are this test binary re-executed (as in `tests/dist.rs`) on
//! 127.0.0.1 at a free port, filtered to the `#[ignore]`d `child_rank`; they
//! die with the test and are killed after [`BOUND`].
// Needs the data tier (the parity fixtures are written from data/ and models/; see build.rs).
#![cfg(tchlab_data)]

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tch::{Device, Kind, Reduction, Tensor};
use tchlab::data::loader::rank_share;
use tchlab::dist::{Backend, GroupOptions, Launch, ProcessGroup};
use tchlab::grad::{Autograd, Backprop};
use tchlab::models::{Arch, Classifier};
use tchlab::persist::pth::read_state_dict;
use tchlab::persist::weights::load_all;
use tchlab::train::data_parallel::Ranks;
use tchlab::train::optim::{self, Optimizer, OptimizerKind};
use tchlab::train::step::GradientStep;

/// Steps compared, each rank's batch size, the images' side: `ddp.py`'s arguments.
const STEPS: usize = 10;
const BATCH: usize = 4;
const SIZE: usize = 64;
const WORLD: usize = 2;
const LR: f64 = 0.01;
const MOMENTUM: f64 = 0.9;
/// The largest |ours − DDP's| allowed for a step's loss (absolute; the losses are about 7).
const LOSS_TOLERANCE: f64 = 1e-4;
/// The steps held to [`LOSS_TOLERANCE`]: 0, 1 and 2, whose losses come after
/// up to two momentum updates of averaged gradients. Later steps are
/// printed, not asserted: this training (random-init ResNet-18, random
/// labels, batches of 4, lr 0.01) amplifies float32 rounding tens of times
/// per step, so that PyTorch DDP itself, run with 2 threads per rank instead
/// of 1, moves by 3e-5 at step 3, 4e-3 at step 4 and 6e-2 at step 6; no
/// implementation that is not bitwise PyTorch's can meet 1e-4 at step 9.
/// With the CPU's default backprop (Winograd weight gradients, 2e-6 from
/// autograd's) step 2 is already 6e-5 off here, too close to the tolerance
/// for CPUs of other kernels: that backprop is held to steps 0 and 1.
fn strict_steps(backprop: &str) -> usize {
    if backprop == "autograd" {
        3
    } else {
        2
    }
}
/// How long the two ranks may take before they are killed and the test fails.
const BOUND: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------- the ranks

/// A result line for the parent (libtest may print on the same line first).
fn report(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "@@{line}").unwrap();
    out.flush().unwrap();
}

fn tensors_in(path: &Path) -> HashMap<String, Tensor> {
    read_state_dict(path).unwrap().into_iter().collect()
}

/// The parity checkpoint in our ResNet-18, as torchvision saved it.
fn loaded_model() -> Classifier {
    let mut model = Classifier::new(Arch::Resnet18, 1000, Device::Cpu);
    load_all(&mut model, &common::repo().join("target/test-fixtures/parity/resnet18.pth")).unwrap();
    model
}

/// This rank's `DistributedSampler(shuffle=False)` share of the inputs, in order.
fn my_share(dir: &Path, ranks: &Ranks) -> (Tensor, Tensor) {
    let inputs = tensors_in(&dir.join("inputs.pth"));
    let len = inputs["images"].size()[0] as usize;
    let share: Vec<i64> = rank_share(len, ranks.rank(), ranks.world_size()).into_iter().map(|i| i as i64).collect();
    let share = Tensor::from_slice(&share);
    (inputs["images"].index_select(0, &share), inputs["labels"].index_select(0, &share))
}

/// The backprop `DDP_PARITY_BACKPROP` names: `autograd` (libtorch's), or
/// `default`, the crate's CPU choice (Winograd weight gradients for ResNet's
/// stride-1 3×3 convolutions), what `finetune` trains with.
fn backprop() -> Box<dyn Backprop> {
    match std::env::var("DDP_PARITY_BACKPROP").as_deref() {
        Ok("autograd") => Box::new(Autograd),
        _ => tchlab::accel::backprop(Device::Cpu),
    }
}

/// How far the default backprop's gradients are from autograd's on one batch
/// (a fresh model from the checkpoint, so the run's state is untouched): the
/// largest over the parameters of max |default − autograd| / max |autograd|.
fn gradient_error(images: &Tensor, labels: &Tensor) -> f64 {
    let model = loaded_model();
    let params = model.trainable();
    let loss = |logits: &Tensor| logits.cross_entropy_loss(labels, None::<Tensor>, Reduction::Mean, -100, 0.0);
    let grads =
        |backprop: Box<dyn Backprop>| backprop.run(&mut || model.forward(images, true), &loss, &params, 1.0).grads;
    let (ours, exact) = (grads(tchlab::accel::backprop(Device::Cpu)), grads(Box::new(Autograd)));
    let errors = ours
        .iter()
        .zip(exact.iter())
        .map(|(a, b)| (a - b).abs().max().double_value(&[]) / b.abs().max().double_value(&[]));
    errors.fold(0.0, f64::max)
}

/// The largest |ours − DDP's| over the model's tensors after the last step, and where.
fn weight_difference(model: &Classifier, dir: &Path) -> (f64, String) {
    let reference = tensors_in(&dir.join("ddp.pth"));
    let differences = model.named_tensors().into_iter().map(|(name, ours)| {
        let theirs = &reference[&format!("final.{name}")];
        let diff = (ours.to_kind(Kind::Double) - theirs.to_kind(Kind::Double)).abs().max().double_value(&[]);
        (diff, name)
    });
    differences.fold((0.0, String::new()), |max, d| if d.0 > max.0 { d } else { max })
}

/// The [`STEPS`] steps of `finetune --mode full` on this rank's share, in
/// batches of [`BATCH`]: rank 0 reports each step's loss (the mean over the ranks).
fn train(
    model: &Classifier,
    grad_step: &mut GradientStep,
    optimizer: &mut dyn Optimizer,
    ranks: &Ranks,
    (images, labels): (&Tensor, &Tensor),
) {
    let buffers = model.buffers();
    for k in 0..STEPS {
        let start = (k * BATCH) as i64;
        let (images, labels) = (images.narrow(0, start, BATCH as i64), labels.narrow(0, start, BATCH as i64));
        // DDP's broadcast_buffers: batch norm's running statistics are rank 0's.
        ranks.broadcast_from_leader(&buffers).unwrap();
        let loss = |logits: &Tensor| logits.cross_entropy_loss(&labels, None::<Tensor>, Reduction::Mean, -100, 0.0);
        let outcome = grad_step.step(optimizer, &mut || model.forward(&images, true), &loss, LR).unwrap();
        if ranks.leads() {
            report(&format!("loss {k} {:.9}", outcome.loss));
        }
    }
    // As at the end of an epoch: every rank keeps rank 0's statistics.
    ranks.broadcast_from_leader(&buffers).unwrap();
}

/// One rank of the run: what `finetune --mode full` does per batch, on fixed inputs.
#[test]
#[ignore = "a rank of `losses_equal_pytorch_ddp`"]
fn child_rank() {
    tch::set_num_threads(1);
    let dir = PathBuf::from(std::env::var("DDP_PARITY_DIR").expect("DDP_PARITY_DIR"));
    let launch = Launch::from_env().unwrap().expect("run with launch variables");
    let ranks = Ranks::of(ProcessGroup::join(&launch, &GroupOptions::default()).unwrap(), Backend::Gloo);
    let model = loaded_model();
    let all: Vec<Tensor> = model.named_tensors().into_iter().map(|(_, t)| t).collect();
    ranks.broadcast_from_leader(&all).unwrap();
    let params = model.trainable();
    let mut optimizer = optim::build(OptimizerKind::Sgd, &params, MOMENTUM, 0.0);
    let mut grad_step = GradientStep::new(params, backprop()).over(ranks.clone());
    let (images, labels) = my_share(&dir, &ranks);
    if ranks.leads() && std::env::var("DDP_PARITY_BACKPROP").as_deref() == Ok("default") {
        let error = gradient_error(&images.narrow(0, 0, BATCH as i64), &labels.narrow(0, 0, BATCH as i64));
        report(&format!("gradients {error:e}"));
    }
    train(&model, &mut grad_step, &mut *optimizer, &ranks, (&images, &labels));
    ranks.check_identical(&all).unwrap();
    if ranks.leads() {
        let (diff, name) = weight_difference(&model, &dir);
        report(&format!("weights {diff:e} {name}"));
    }
    drop(grad_step);
    ranks.finish().unwrap();
    report("ok");
}

// ---------------------------------------------------------------- the test

/// Writes the inputs and runs PyTorch DDP on them: its losses, step by step.
fn pytorch_ddp(dir: &Path) -> Vec<f64> {
    let checkpoint = common::parity_fixtures().join("resnet18.pth");
    let mut command = Command::new(common::python());
    command
        .arg(common::repo().join("scripts/reference/ddp.py"))
        .args([checkpoint, dir.join("inputs.pth"), dir.join("ddp.pth")])
        .args(["--make-inputs", "--steps", &STEPS.to_string(), "--batch", &BATCH.to_string()])
        .args(["--size", &SIZE.to_string()]);
    common::run_ok(&mut command);
    let losses = &tensors_in(&dir.join("ddp.pth"))["losses"];
    Vec::<f64>::try_from(losses.to_kind(Kind::Double)).unwrap()
}

/// Rank `rank` of our run with `backprop`, its output into `dir/<backprop>-rank<rank>.out` and `.err`.
fn start_rank(rank: usize, port: u16, dir: &Path, backprop: &str) -> Child {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["child_rank", "--exact", "--include-ignored", "--nocapture", "--test-threads=1"])
        .env("RANK", rank.to_string())
        .env("WORLD_SIZE", WORLD.to_string())
        .env("LOCAL_RANK", rank.to_string())
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .env("OMP_NUM_THREADS", "1")
        .env("DDP_PARITY_DIR", dir)
        .env("DDP_PARITY_BACKPROP", backprop)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.join(format!("{backprop}-rank{rank}.out"))).unwrap())
        .stderr(std::fs::File::create(dir.join(format!("{backprop}-rank{rank}.err"))).unwrap());
    common::die_with_parent(&mut command);
    command.spawn().unwrap()
}

fn output_of(dir: &Path, backprop: &str, rank: usize) -> String {
    let read =
        |ext: &str| std::fs::read_to_string(dir.join(format!("{backprop}-rank{rank}.{ext}"))).unwrap_or_default();
    format!("rank {rank} stdout:\n{}\nstderr:\n{}", read("out"), read("err"))
}

/// Runs our two ranks; rank 0's `@@` lines once both succeeded within [`BOUND`].
fn our_run(dir: &Path, backprop: &str) -> Vec<String> {
    let port = tchlab::dist::free_port().unwrap();
    let mut children: Vec<Child> = (0..WORLD).map(|rank| start_rank(rank, port, dir, backprop)).collect();
    let started = Instant::now();
    while children.iter_mut().any(|c| c.try_wait().unwrap().is_none()) {
        if started.elapsed() > BOUND {
            children.iter_mut().for_each(|c| drop(c.kill()));
            let outputs: Vec<String> = (0..WORLD).map(|rank| output_of(dir, backprop, rank)).collect();
            panic!("ranks still running after {BOUND:?}, killed:\n{}", outputs.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for (rank, child) in children.iter_mut().enumerate() {
        let status = child.wait().unwrap();
        assert!(status.success(), "rank {rank} failed ({status}):\n{}", output_of(dir, backprop, rank));
    }
    let stdout = std::fs::read_to_string(dir.join(format!("{backprop}-rank0.out"))).unwrap();
    stdout.lines().filter_map(|l| l.split_once("@@")).map(|(_, r)| r.to_owned()).collect()
}

/// Rank 0's per-step losses (the means over the ranks) and its final-weights line.
fn our_losses(reports: &[String]) -> (Vec<f64>, String) {
    assert!(reports.iter().any(|r| r == "ok"), "rank 0 did not finish: {reports:?}");
    let losses: Vec<f64> = reports
        .iter()
        .filter_map(|r| r.strip_prefix("loss "))
        .map(|r| r.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(losses.len(), STEPS, "{reports:?}");
    let weights = reports.iter().find_map(|r| r.strip_prefix("weights ")).unwrap().to_owned();
    (losses, weights)
}

/// Our run with `backprop` against DDP's losses `theirs`: the largest
/// difference over the first [`strict_steps`] steps, every step printed.
fn compare(dir: &Path, backprop: &str, theirs: &[f64]) -> f64 {
    let started = Instant::now();
    let reports = our_run(dir, backprop);
    let reports_gradients = reports.iter().find_map(|r| r.strip_prefix("gradients ")).map(str::to_owned);
    let (ours, weights) = our_losses(&reports);
    println!("backprop {backprop}: our two ranks took {:.1} s", started.elapsed().as_secs_f64());
    let differences: Vec<f64> = ours.iter().zip(theirs).map(|(a, b)| (a - b).abs()).collect();
    for (k, d) in differences.iter().enumerate() {
        let kept = if k < strict_steps(backprop) { "" } else { " (reported only)" };
        println!("  step {k}: ours {:.7}, DDP {:.7}, |diff| {d:.2e}{kept}", ours[k], theirs[k]);
    }
    println!("  final weights (not asserted): max |ours - DDP| {weights}");
    if let Some(error) = reports_gradients {
        println!("  step 0's gradients on rank 0's batch, max relative |{backprop} - autograd|: {error}");
    }
    differences[..strict_steps(backprop)].iter().copied().fold(0.0, f64::max)
}

#[test]
fn losses_equal_pytorch_ddp() {
    let dir = common::temp_dir();
    let started = Instant::now();
    let theirs = pytorch_ddp(dir.path());
    println!("PyTorch DDP took {:.1} s", started.elapsed().as_secs_f64());
    for backprop in ["default", "autograd"] {
        let worst = compare(dir.path(), backprop, &theirs);
        let strict = strict_steps(backprop);
        assert!(
            worst <= LOSS_TOLERANCE,
            "backprop {backprop}: the first {strict} steps' losses differ from PyTorch DDP's by up to \
             {worst:e} (> {LOSS_TOLERANCE:e} absolute); DDP's: {theirs:?}"
        );
    }
}
