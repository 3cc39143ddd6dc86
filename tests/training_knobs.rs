//! Issue #29's training knobs in `finetune` runs. `--accumulate 2` over
//! batches of B trains what one batch of 2B trains: in one process, and in
//! two data-parallel ranks that average once per step. `--ema`: every epoch
//! evaluates the moving average beside the model, the kept epoch is the
//! better of the two, and the best model holds the kept weights. Every knob
//! at once in full mode (a shorter last group, clipping, an average of the
//! weights and batch-norm statistics): a run stopped by Ctrl-C and resumed
//! ends with the uninterrupted run's numbers, best model and average.
#![cfg(tchlab_data)]

mod common;

use common::{cached_head_epochs, cached_head_run, metrics, read_json, safetensors, small_data};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use tch::Tensor;

fn run(mut cmd: Command) -> Output {
    common::run_ok(&mut cmd)
}

fn with(mut cmd: Command, args: &[&str]) -> Command {
    cmd.args(args);
    cmd
}

#[test]
fn accumulating_two_batches_trains_what_the_doubled_batch_trains() {
    let (doubled, accumulated, two_ranks) = (common::temp_dir(), common::temp_dir(), common::temp_dir());
    run(cached_head_run(8, doubled.path()));
    run(with(cached_head_run(4, accumulated.path()), &["--accumulate", "2"]));
    let output = run(with(cached_head_run(2, two_ranks.path()), &["--accumulate", "2", "--nproc", "2"]));
    assert!(common::stdout(&output).contains("data-parallel: 2 ranks, 8 images per step"));
    for dir in [accumulated.path(), two_ranks.path()] {
        common::assert_same_metrics(dir, doubled.path());
        common::assert_same_weights(dir, doubled.path());
        let summary = read_json(&dir.join("summary.json"));
        assert_eq!((summary["config"]["accumulate"].as_u64(), summary["global_batch"].as_u64()), (Some(2), Some(8)));
    }
}

/// The state's tensors of group `prefix` (`model.`, `carried.ema.`) by name.
fn state_group(dir: &Path, prefix: &str) -> BTreeMap<String, Tensor> {
    let state = safetensors(&dir.join("state.safetensors"));
    state.into_iter().filter_map(|(name, t)| name.strip_prefix(prefix).map(|n| (n.to_owned(), t))).collect()
}

/// (epoch, from, val acc) of the kept epoch by the keep rule: the highest val
/// accuracy of the model's or the average's rows, the earlier epoch and the
/// model first on ties.
fn best_row(dir: &Path) -> (usize, &'static str, f64) {
    let mut best: Option<(usize, &'static str, f64)> = None;
    for (row, _, acc) in metrics(dir) {
        let (epoch, phase) = row.split_once(' ').unwrap();
        let from = match phase {
            "val" => "model",
            "val_ema" => "ema",
            _ => continue,
        };
        if best.is_none_or(|b| acc > b.2) {
            best = Some((epoch.parse().unwrap(), from, acc));
        }
    }
    best.unwrap()
}

#[test]
fn the_kept_epoch_may_be_the_averages_and_the_best_model_then_holds_its_weights() {
    let recipe = ["--accumulate", "2", "--ema", "0.5", "--clip-grad-norm", "1"];
    let dir = common::temp_dir();
    run(with(cached_head_epochs(2, 4, dir.path()), &recipe));
    let rows: Vec<String> = metrics(dir.path()).into_iter().map(|r| r.0).collect();
    assert_eq!(rows, ["0 train", "0 val", "0 val_ema", "1 train", "1 val", "1 val_ema"]);
    let summary = read_json(&dir.path().join("summary.json"));
    let (epoch, from, acc) = best_row(dir.path());
    assert_eq!((summary["best_epoch"].as_u64(), summary["best_from"].as_str()), (Some(epoch as u64), Some(from)));
    assert_eq!(summary["best_val_acc"].as_f64(), Some(acc));
    // The weights at the end of the kept epoch: this run's, or a run of the
    // same recipe that stops there.
    let at_kept = common::temp_dir();
    let at_kept = if epoch == 1 {
        dir.path()
    } else {
        run(with(cached_head_epochs(epoch + 1, 4, at_kept.path()), &recipe));
        at_kept.path()
    };
    let (model, ema) = (state_group(at_kept, "model."), state_group(at_kept, "carried.ema."));
    assert_eq!(ema.keys().collect::<Vec<_>>(), ["fc.bias", "fc.weight"], "the trained head's average");
    assert!(!ema["fc.weight"].equal(&model["fc.weight"]), "the average is not the model");
    let best = safetensors(&dir.path().join("best_model.safetensors"));
    assert_eq!(best.keys().collect::<Vec<_>>(), model.keys().collect::<Vec<_>>());
    for (name, tensor) in &best {
        let kept = match (from, ema.get(name)) {
            ("ema", Some(average)) => average,
            _ => &model[name],
        };
        assert!(tensor.equal(kept), "{name} is not the kept {from}'s");
    }
    // On this seed the average scores best (0.6875 against 0.5 at epoch 1):
    // the case above that tells the two apart.
    println!("kept: epoch {epoch}, {from}'s weights, val acc {acc}");
}

/// Every knob in full mode, 3 epochs: groups of 3 batches of 2 over 8
/// batches (a group of 2 last), clipping, the average of every weight and
/// batch-norm statistic.
fn full_mode_with_every_knob(out: &Path) -> Command {
    let mut cmd = common::finetune();
    cmd.args(["--arch", "resnet18", "--random-init", "--mode", "full", "--image-size", "32", "--epochs", "3"])
        .args(["--batch-size", "2", "--threads", "1", "--accumulate", "3", "--clip-grad-norm", "0.5"])
        .args(["--ema", "0.9", "--data"])
        .arg(small_data())
        .arg("--out")
        .arg(out);
    cmd
}

#[test]
fn an_interrupted_run_with_every_knob_resumes_to_the_uninterrupted_runs_numbers() {
    let dir = common::temp_dir();
    let (stopped, uninterrupted) = (dir.path().join("stopped"), dir.path().join("uninterrupted"));
    let output = common::interrupt_in_epoch_1(full_mode_with_every_knob(&stopped));
    let said = common::stderr_after_banner(&output);
    assert_eq!(output.status.code(), Some(130), "{said}");
    assert!(said.contains("interrupted during epoch 1") && said.contains("Resume with: finetune --resume"), "{said}");
    assert_eq!(metrics(&stopped).len(), 3, "epoch 0 saved: {:?}", metrics(&stopped));
    let mut resume = common::finetune();
    resume.arg("--resume").arg(&stopped);
    run(resume);
    run(full_mode_with_every_knob(&uninterrupted));

    assert_eq!(metrics(&stopped), metrics(&uninterrupted), "resumed against uninterrupted");
    assert_eq!(metrics(&stopped).len(), 9);
    let summary = |dir: &Path| {
        let s = read_json(&dir.join("summary.json"));
        (s["best_epoch"].clone(), s["best_from"].clone(), s["best_val_acc"].clone())
    };
    assert_eq!(summary(&stopped), summary(&uninterrupted));
    let exactly_equal = |a: BTreeMap<String, Tensor>, b: BTreeMap<String, Tensor>, what: &str| {
        assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>(), "{what}");
        for ((name, a), b) in a.iter().zip(b.values()) {
            assert!(a.equal(b), "{what}: {name} differs");
        }
    };
    let best = |dir: &Path| safetensors(&dir.join("best_model.safetensors"));
    exactly_equal(best(&stopped), best(&uninterrupted), "best model");
    let ema = state_group(&stopped, "carried.ema.");
    assert!(ema.contains_key("bn1.running_mean") && ema.contains_key("fc.weight"), "{:?}", ema.keys());
    exactly_equal(ema, state_group(&uninterrupted, "carried.ema."), "moving average");
}
