//! `finetune lr-find` (issue #29): the learning-rate range test on real
//! images, through the mode's own train phase, and its bad options.
// Needs the data tier (ants/bees and the Lite0 weights; see build.rs).
#![cfg(tchlab_data)]

mod common;

use common::{finetune, lite0_weights, one_line_error, png_size, read_json, run_ok, small_data, stdout, temp_dir};

fn numbers(value: &serde_json::Value) -> Vec<f64> {
    value.as_array().unwrap().iter().map(|v| v.as_f64().unwrap_or(f64::NAN)).collect()
}

/// Feature extraction on 16 training images in batches of 4 (4 updates a
/// pass), 30 updates from 1e-5 to 10: the rates are the exponential
/// sweep, the train split is passed over as often as the updates need,
/// and the curve is judged.
#[test]
fn the_range_test_sweeps_the_rates_over_passes_of_the_train_split_and_suggests_one() {
    let out = temp_dir();
    let output = run_ok(
        finetune()
            .args(["lr-find", "--mode", "feature-extract", "--arch", "efficientnet-lite0", "--weights"])
            .arg(lite0_weights())
            .arg("--data")
            .arg(small_data())
            .args(["--cache-features", "--batch-size", "4", "--steps", "30", "--start-lr", "1e-5", "--end-lr", "10"])
            .args(["--no-stop-div", "--threads", "2", "--out"])
            .arg(out.path()),
    );
    let said = stdout(&output);
    let found = read_json(&out.path().join("lr_find.json"));
    let lrs = numbers(&found["curve"]["lrs"]);
    let losses = numbers(&found["curve"]["smoothed_losses"]);
    assert_eq!(lrs.len(), 30, "{said}");
    assert_eq!(losses.len(), 30);
    for (i, lr) in lrs.iter().enumerate() {
        let expected = 1e-5 * 1e6f64.powf(i as f64 / 30.0);
        assert!((lr / expected - 1.0).abs() < 1e-9, "step {i}: {lr} against {expected}");
    }
    assert!(said.contains("lr-find: pass 7 over the train split"), "30 updates of 4 per pass take 8 passes:\n{said}");
    // The head learns at moderate rates: the smoothed loss falls below its start somewhere.
    let lowest = losses.iter().copied().filter(|l| l.is_finite()).fold(f64::INFINITY, f64::min);
    assert!(lowest < losses[0], "{losses:?}");
    let valley = found["suggestions"]["valley"]["lr"].as_f64().unwrap();
    let steep = found["suggestions"]["steep"]["lr"].as_f64().unwrap();
    // Judged: from the first tenth of the steps (3) to the 5th from last.
    for lr in [valley, steep] {
        assert!(lrs[3..25].contains(&lr), "{lr} is not a judged rate of {lrs:?}");
    }
    assert!(said.contains(&format!("valley {valley:.2e}")), "{said}");
    assert_eq!(png_size(&out.path().join("lr_find.png")), (900, 600));
}

#[test]
fn bad_sweeps_are_one_line_errors_naming_the_option() {
    for (args, expected) in [
        (&["--steps", "6"][..], "--steps 6: at least 7"),
        (&["--end-lr", "1e-8"], "--end-lr 0.00000001: a rate above --start-lr"),
        (&["--start-lr", "0"], "--start-lr 0: a rate above 0"),
        (
            &["--mode", "staged", "--random-init"],
            "lr-find tests one stage's rates: --mode feature-extract for the frozen",
        ),
    ] {
        let output = finetune().arg("lr-find").args(args).output().unwrap();
        assert_eq!(output.status.code(), Some(1));
        let error = one_line_error(&output);
        assert!(error.contains(expected), "{error}");
    }
}
