//! Issue #29's staged fine-tuning and rates by depth in `finetune` runs.
//! `--mode staged`: its frozen epoch trains what feature extraction trains
//! and leaves the backbone (weights and batch-norm statistics) as loaded;
//! after it every weight trains; a run stopped at the unfreezing resumes to
//! the uninterrupted run's numbers. `--lr-mult`: the stem's rate is the
//! head's divided by the factor.
#![cfg(tchlab_data)]

mod common;

use common::{metrics, safetensors, small_data};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use tch::Tensor;

/// A random-init ResNet-18 on [`small_data`] at 32 px, `epochs` epochs, in `mode`.
fn quick_run(mode: &str, epochs: usize, out: &Path, extra: &[&str]) -> Command {
    let mut cmd = common::finetune();
    cmd.args(["--arch", "resnet18", "--random-init", "--mode", mode, "--image-size", "32"])
        .args(["--epochs", &epochs.to_string(), "--batch-size", "4", "--lr", "0.01", "--threads", "1"])
        .args(extra)
        .arg("--data")
        .arg(small_data())
        .arg("--out")
        .arg(out);
    cmd
}

/// The run's saved model tensors (`model.` in its state), by name.
fn saved_model(dir: &Path) -> BTreeMap<String, Tensor> {
    let state = safetensors(&dir.join("state.safetensors"));
    state.into_iter().filter_map(|(name, t)| name.strip_prefix("model.").map(|n| (n.to_owned(), t))).collect()
}

fn largest_change(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn a_staged_run_trains_the_head_alone_then_every_weight_and_resumes_across_the_unfreezing() {
    let dir = common::temp_dir();
    let (head, stopped, staged) = (dir.path().join("head"), dir.path().join("stopped"), dir.path().join("staged"));
    let staged_run = |out: &Path| quick_run("staged", 3, out, &["--freeze-epochs", "1"]);
    common::run_ok(&mut quick_run("feature-extract", 1, &head, &[]));
    let output = common::interrupt_in_epoch_1(staged_run(&stopped));
    assert_eq!(output.status.code(), Some(130), "{}", common::stderr_after_banner(&output));
    common::run_ok(&mut staged_run(&staged));

    // The frozen epoch is feature extraction's epoch, and leaves the backbone as it was.
    assert_eq!(metrics(&stopped), metrics(&head), "the frozen epoch against feature extraction's");
    assert_eq!(metrics(&staged)[..2], metrics(&head)[..]);
    let (initial, after_frozen, trained) = (saved_model(&head), saved_model(&stopped), saved_model(&staged));
    for name in
        ["conv1.weight", "layer2.0.bn1.running_mean", "layer4.1.bn2.running_var", "layer3.0.downsample.0.weight"]
    {
        assert!(after_frozen[name].equal(&initial[name]), "{name} changed in the frozen epoch");
        assert!(largest_change(&trained[name], &initial[name]) > 1e-4, "{name} did not train after it");
    }
    assert!(after_frozen["fc.weight"].equal(&initial["fc.weight"]), "the head trained as feature extraction's");

    // Resumed at the unfreezing, it ends where the uninterrupted run ends.
    let mut resume = common::finetune();
    common::run_ok(resume.arg("--resume").arg(&stopped));
    assert_eq!(metrics(&stopped), metrics(&staged));
    for (name, tensor) in saved_model(&staged) {
        assert!(saved_model(&stopped)[&name].equal(&tensor), "{name}: resumed against uninterrupted");
    }
}

#[test]
fn lr_mult_divides_the_stems_rate_by_its_factor() {
    let dir = common::temp_dir();
    let (initial, plain, scaled) = (dir.path().join("initial"), dir.path().join("plain"), dir.path().join("scaled"));
    common::run_ok(&mut quick_run("feature-extract", 1, &initial, &[]));
    common::run_ok(&mut quick_run("full", 1, &plain, &[]));
    common::run_ok(&mut quick_run("full", 1, &scaled, &["--lr-mult", "1e6"]));
    let (initial, plain, scaled) = (saved_model(&initial), saved_model(&plain), saved_model(&scaled));
    let moved = |model: &BTreeMap<String, Tensor>, name: &str| largest_change(&model[name], &initial[name]);
    let (stem_plain, stem_scaled) = (moved(&plain, "conv1.weight"), moved(&scaled, "conv1.weight"));
    println!("conv1 moved {stem_plain:e} at --lr, {stem_scaled:e} at --lr/1e6");
    assert!(stem_plain > 1e-3, "{stem_plain}");
    assert!(stem_scaled < 1e-4 * stem_plain, "{stem_scaled} against {stem_plain}");
    // The head trains at --lr in both (it moves as far, within the other weights' influence).
    let (head_plain, head_scaled) = (moved(&plain, "fc.weight"), moved(&scaled, "fc.weight"));
    assert!(head_scaled > 0.2 * head_plain, "{head_scaled} against {head_plain}");
}
