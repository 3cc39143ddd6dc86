//! Issue #30's class imbalance: macro-F1 and balanced accuracy equal
//! scikit-learn's; `--class-weights` weighs the loss as torch's `weight=`
//! (auto: scikit-learn's "balanced"); `--sampler balanced` draws each class
//! about equally from an imbalanced folder, the same draws for a seed;
//! `--monitor val_loss` keeps the epoch of the lowest val loss. The
//! references come from `tests/fixtures/imbalance_references.py` (sklearn,
//! torch) at test time; the runs use a 4:1 imbalanced copy of ants/bees.

mod common;

use serde_json::Value;
use std::process::Command;
use tch::{Kind, Tensor};
use tchlab::data::augment::mix::BatchMix;
use tchlab::finetune::class_weights::ClassWeights;
use tchlab::metrics::confusion::ConfusionMatrix;
use tchlab::train::loss::{cross_entropy, soft_cross_entropy, SoftWeighting};

/// The references, written once per test binary.
fn references() -> &'static Value {
    static REFERENCES: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    REFERENCES.get_or_init(|| {
        let dir = common::repo().join("target/test-fixtures");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("imbalance-references-{}.json", std::process::id()));
        let script = common::repo().join("tests/fixtures/imbalance_references.py");
        common::run_ok(Command::new(common::python()).arg(script).arg(&path));
        let references = common::read_json(&path);
        std::fs::remove_file(&path).unwrap();
        references
    })
}

fn integers(value: &Value) -> Vec<i64> {
    value.as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect()
}

fn floats(value: &Value) -> Vec<f64> {
    value.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect()
}

#[test]
fn macro_f1_and_balanced_accuracy_equal_scikit_learns() {
    let cases = references()["predictions"].as_array().unwrap();
    assert_eq!(cases.len(), 7);
    for (i, case) in cases.iter().enumerate() {
        let classes = case["classes"].as_u64().unwrap() as usize;
        let matrix = ConfusionMatrix::of(&integers(&case["truth"]), &integers(&case["predicted"]), classes);
        for (ours, key) in [(matrix.macro_f1(), "macro_f1"), (matrix.balanced_accuracy(), "balanced_accuracy")] {
            let sklearn = case[key].as_f64().unwrap();
            assert!((ours - sklearn).abs() < 1e-12, "case {i} {key}: {ours} against scikit-learn's {sklearn}");
        }
    }
    // The case of a class never predicted scores that class 0 (its F1), not NaN.
    let never = &cases[4];
    assert!(!integers(&never["predicted"]).contains(&1) && never["macro_f1"].as_f64().unwrap() > 0.0);
}

#[test]
fn weighted_losses_equal_torchs_and_auto_weights_equal_scikit_learns() {
    let reference = &references()["class_weight"];
    let classes: Vec<String> = (0..reference["classes"].as_u64().unwrap()).map(|c| format!("class{c}")).collect();
    let auto = ClassWeights::balanced(&classes, &integers(&reference["labels"])).unwrap();
    for (ours, sklearn) in auto.weights.iter().zip(floats(&reference["weights"])) {
        assert!((ours - sklearn).abs() < 1e-12, "auto weight {ours} against compute_class_weight's {sklearn}");
    }

    let losses = &references()["losses"];
    let n_classes = losses["classes"].as_i64().unwrap();
    let logits_f32: Vec<f32> = floats(&losses["logits"]).iter().map(|&v| v as f32).collect();
    let logits = Tensor::from_slice(&logits_f32).reshape([-1, n_classes]);
    let labels = Tensor::from_slice(&integers(&losses["labels"]));
    let weights = Tensor::from_slice(&floats(&losses["weights"])).to_kind(Kind::Float);
    let close = |ours: &Tensor, key: &str, torch: &Value| {
        let (ours, torch) = (ours.double_value(&[]), torch.as_f64().unwrap());
        assert!((ours - torch).abs() <= 1e-6 * torch.abs(), "{key}: {ours} against torch's {torch}");
    };
    for smoothing in ["0.0", "0.1"] {
        let ours = cross_entropy(&logits, &labels, Some(&weights), smoothing.parse().unwrap());
        close(&ours, &format!("weighted, smoothing {smoothing}"), &losses["hard"][smoothing]);
    }
    close(&cross_entropy(&logits, &labels, None, 0.0), "unweighted", &losses["unweighted_hard"]);
    let weighted = cross_entropy(&logits, &labels, Some(&weights), 0.0).double_value(&[]);
    let plain = cross_entropy(&logits, &labels, None, 0.0).double_value(&[]);
    assert!((weighted - plain).abs() > 1e-3, "the weights change the loss: {weighted} against {plain}");

    // MixUp's soft targets (our mix code), weighted and not.
    let smoothing = losses["smoothing"].as_f64().unwrap();
    let soft = |lam: f64, weighted: bool| {
        let mix = BatchMix::MixUp { lam };
        let (targets, mixed_labels) =
            (mix.targets(&labels, n_classes, smoothing), mix.targets(&labels, n_classes, 0.0));
        let weighting = weighted.then_some(SoftWeighting { weights: &weights, mixed_labels: &mixed_labels });
        soft_cross_entropy(&logits, &targets, weighting)
    };
    let lam = losses["lam"].as_f64().unwrap();
    close(&soft(lam, true), "soft weighted", &losses["soft_weighted"]);
    close(&soft(lam, false), "soft unweighted", &losses["soft_unweighted"]);
    // Unmixed, the weighted soft loss is torch's weighted, smoothed hard-label loss.
    close(&soft(1.0, true), "soft unmixed weighted", &losses["hard"]["0.1"]);
    close(&soft(1.0, true), "soft unmixed weighted (formula)", &losses["soft_unmixed_weighted"]);
}

/// A 4:1 imbalanced copy of ants/bees (symlinks), made once under
/// `target/test-fixtures`: train 60 ants and 15 bees, val 40 ants and 10 bees.
#[cfg(tchlab_data)]
fn imbalanced_ants_bees() -> &'static std::path::Path {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = common::repo().join("target/test-fixtures/imbalanced-ants-bees");
        if !dir.join("val/bees").exists() {
            std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
            let staging = tempfile::tempdir_in(dir.parent().unwrap()).unwrap();
            for (split, ants, bees) in [("train", 60, 15), ("val", 40, 10)] {
                for (class, count) in [("ants", ants), ("bees", bees)] {
                    let from = common::ants_bees().join(split).join(class);
                    let to = staging.path().join(split).join(class);
                    std::fs::create_dir_all(&to).unwrap();
                    let mut files: Vec<_> = std::fs::read_dir(&from).unwrap().map(|e| e.unwrap().path()).collect();
                    files.sort();
                    for file in files.iter().filter(|f| f.extension().is_some_and(|e| e == "jpg")).take(count) {
                        std::os::unix::fs::symlink(file, to.join(file.file_name().unwrap())).unwrap();
                    }
                }
            }
            // Whoever renames first wins; the others' copies are dropped.
            let kept = staging.keep();
            if std::fs::rename(&kept, &dir).is_err() {
                let _ = std::fs::remove_dir_all(&kept);
            }
        }
        dir
    })
}

#[cfg(tchlab_data)]
#[test]
fn the_balanced_sampler_draws_each_class_about_equally_and_the_same_for_a_seed() {
    use tchlab::data::image_folder::ImageFolder;
    use tchlab::data::loader::{DecodedSplit, EpochPlan, PixelBudget};
    use tchlab::data::sampler::Sampler;

    let folder = ImageFolder::scan(&imbalanced_ants_bees().join("train")).unwrap();
    let hidden = indicatif::ProgressBar::hidden();
    let mut split = DecodedSplit::decode(&folder, false, &mut PixelBudget::default(), &hidden).unwrap();
    assert_eq!((split.len(), split.labels.iter().filter(|&&l| l == 1).count()), (75, 15));
    let bees_drawn = |split: &DecodedSplit, seed: u64| -> (usize, Vec<Vec<usize>>) {
        let orders: Vec<Vec<usize>> = (0..20).map(|epoch| EpochPlan::draw(split, seed, epoch).order).collect();
        let bees = orders.iter().flatten().filter(|&&i| split.labels[i] == 1).count();
        (bees, orders)
    };
    let (shuffled_bees, _) = bees_drawn(&split, 0);
    assert_eq!(shuffled_bees, 20 * 15, "the shuffle visits each image once an epoch");
    split.sampler = Sampler::Balanced;
    let (bees, orders) = bees_drawn(&split, 0);
    // 20 epochs of 75 draws, a bee with probability 1/2: 750 ± 19.4 (one
    // standard deviation); 5 of them either side fails by chance once in
    // 1.7 million, and the shuffle's 300 by 23 of them.
    assert!((bees as f64 - 750.0).abs() < 5.0 * 19.4, "{bees} bees of 1500 draws");
    assert!(orders.iter().all(|order| order.len() == 75), "as many draws as images");
    assert!(orders[0] != orders[1], "each epoch draws anew");
    assert_eq!(bees_drawn(&split, 0).1, orders, "the same seed draws the same");
    assert_ne!(bees_drawn(&split, 1).1, orders, "another seed draws otherwise");
    // Two data-parallel ranks take every other draw of the one sequence.
    let plan = EpochPlan::draw(&split, 0, 3);
    let (rank0, rank1) = (plan.shard(0, 2).order, plan.shard(1, 2).order);
    let interleaved: Vec<usize> = rank0.iter().zip(&rank1).flat_map(|(a, b)| [*a, *b]).collect();
    assert_eq!(interleaved[..75], plan.order[..]);
}

/// A quick run on the imbalanced copy: a random-init ResNet-18's cached
/// features at 64 px, the head trained for `epochs` epochs.
#[cfg(tchlab_data)]
fn quick_run(out: &std::path::Path, epochs: usize, extra: &[&str]) -> Command {
    let mut cmd = common::finetune();
    cmd.args(["--arch", "resnet18", "--random-init", "--mode", "feature-extract", "--cache-features"])
        .args([
            "--epochs",
            &epochs.to_string(),
            "--image-size",
            "64",
            "--lr",
            "0.01",
            "--threads",
            "1",
            "--batch-size",
            "8",
        ])
        .args(extra)
        .arg("--data")
        .arg(imbalanced_ants_bees())
        .arg("--out")
        .arg(out);
    cmd
}

/// (epoch, loss, acc, macro-F1, balanced accuracy) of each val row of a run's metrics.csv.
#[cfg(tchlab_data)]
fn val_rows(out: &std::path::Path) -> Vec<(usize, f64, f64, f64, f64)> {
    let text = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("epoch,phase,loss,acc,lr,seconds,data_wait_seconds,macro_f1,balanced_acc"));
    lines
        .map(|line| line.split(',').collect::<Vec<_>>())
        .filter(|cells| cells[1] == "val")
        .map(|c| {
            (
                c[0].parse().unwrap(),
                c[2].parse().unwrap(),
                c[3].parse().unwrap(),
                c[7].parse().unwrap(),
                c[8].parse().unwrap(),
            )
        })
        .collect()
}

#[cfg(tchlab_data)]
#[test]
fn monitor_val_loss_keeps_the_epoch_of_lowest_val_loss_and_eval_and_report_show_the_balanced_scores() {
    let dir = common::temp_dir();
    let (by_loss, by_acc) = (dir.path().join("by-loss"), dir.path().join("by-acc"));
    let output = common::run_ok(&mut quick_run(&by_loss, 3, &["--monitor", "val_loss"]));
    common::run_ok(&mut quick_run(&by_acc, 3, &[]));
    let said = common::stdout(&output);
    assert!(said.contains("Macro-F1: ") && said.contains("best epoch by val_loss"), "{said}");
    let rows = val_rows(&by_loss);
    assert_eq!(rows.len(), 3);
    let lowest = rows.iter().min_by(|a, b| a.1.total_cmp(&b.1)).unwrap();
    let summary = common::read_json(&by_loss.join("summary.json"));
    assert_eq!(summary["best_epoch"].as_u64(), Some(lowest.0 as u64), "{rows:?}");
    let recorded = |key: &str| summary[key].as_f64().unwrap();
    assert_eq!(
        [
            recorded("best_val_loss"),
            recorded("best_val_acc"),
            recorded("best_val_macro_f1"),
            recorded("best_val_balanced_acc")
        ]
        .map(|v| format!("{v:.6}")),
        [lowest.1, lowest.2, lowest.3, lowest.4].map(|v| format!("{v:.6}"))
    );
    assert_eq!(summary["config"]["monitor"], "val_loss");
    // The same run keeping by val accuracy: its first best accuracy.
    let by_acc_rows = val_rows(&by_acc);
    assert_eq!(by_acc_rows.iter().map(|r| r.1).collect::<Vec<_>>(), rows.iter().map(|r| r.1).collect::<Vec<_>>());
    let first_best_acc = by_acc_rows.iter().fold(by_acc_rows[0], |best, r| if r.2 > best.2 { *r } else { best });
    let by_acc_summary = common::read_json(&by_acc.join("summary.json"));
    assert_eq!(by_acc_summary["best_epoch"].as_u64(), Some(first_best_acc.0 as u64));
    // On this seed the head calls every val image an ant (accuracy 0.8, macro-F1 0.44, balanced
    // accuracy 0.5 each epoch) while the loss falls: the case that tells the monitors apart.
    assert_ne!(first_best_acc.0, lowest.0, "{rows:?}");
    println!("val rows (epoch, loss, acc, macro-F1, balanced acc): {rows:?}");

    // `finetune eval` of the kept model scores the val split as training did.
    let eval_dir = dir.path().join("eval");
    let output = common::run_ok(
        common::finetune()
            .args(["eval", "--json", "--checkpoint"])
            .arg(&by_loss)
            .arg("--data")
            .arg(imbalanced_ants_bees())
            .arg("--out")
            .arg(&eval_dir),
    );
    let evaluation: Value = serde_json::from_str(&common::stdout(&output)).unwrap();
    for (eval_key, summary_key) in [
        ("accuracy", "best_val_acc"),
        ("macro_f1", "best_val_macro_f1"),
        ("balanced_accuracy", "best_val_balanced_acc"),
    ] {
        let (eval, trained) = (evaluation[eval_key].as_f64().unwrap(), recorded(summary_key));
        assert!((eval - trained).abs() < 1e-9, "eval {eval_key} {eval} against training's {trained}");
    }
    // `finetune report` tabulates them.
    let output =
        common::run_ok(common::finetune().arg("report").arg(dir.path()).arg("--out").arg(dir.path().join("report")));
    assert!(common::stdout(&output).contains("| val macro-F1 | val balanced acc |"), "{}", common::stdout(&output));
    let csv = std::fs::read_to_string(dir.path().join("report/results.csv")).unwrap();
    assert!(csv.lines().next().unwrap().contains("macro_f1_mean,balanced_acc_mean"), "{csv}");
}

#[cfg(tchlab_data)]
#[test]
fn class_weights_are_said_recorded_and_change_training_and_a_bad_file_is_one_line() {
    let dir = common::temp_dir();
    let (auto, file, sampled) = (dir.path().join("auto"), dir.path().join("file"), dir.path().join("sampled"));
    let output = common::run_ok(&mut quick_run(&auto, 1, &["--class-weights", "auto"]));
    // n / (classes · count): 75 / (2 · 60) and 75 / (2 · 15).
    assert!(
        common::stdout(&output).contains("class weights (auto): ants 0.6250, bees 2.5000"),
        "{}",
        common::stdout(&output)
    );
    let summary = common::read_json(&auto.join("summary.json"));
    assert_eq!(summary["class_weights"], serde_json::json!({"ants": 0.625, "bees": 2.5}));
    // The same weights from a file train the same numbers; none train others.
    let weights_file = dir.path().join("weights.csv");
    std::fs::write(&weights_file, "class,weight\nbees,2.5\nants,0.625\n").unwrap();
    common::run_ok(&mut quick_run(&file, 1, &["--class-weights", weights_file.to_str().unwrap()]));
    common::assert_same_metrics(&file, &auto);
    let unweighted = dir.path().join("unweighted");
    common::run_ok(&mut quick_run(&unweighted, 1, &[]));
    assert_ne!(common::metrics(&unweighted)[0].1, common::metrics(&auto)[0].1, "the weights change the train loss");
    // The balanced sampler trains on other draws, and says so.
    let output = common::run_ok(&mut quick_run(&sampled, 1, &["--sampler", "balanced"]));
    assert!(common::stdout(&output).contains("class-balanced sampler"), "{}", common::stdout(&output));
    assert_ne!(common::metrics(&sampled)[0], common::metrics(&unweighted)[0]);

    std::fs::write(&weights_file, "ants,0.5\nwasps,2\n").unwrap();
    let output =
        quick_run(&dir.path().join("bad"), 1, &["--class-weights", weights_file.to_str().unwrap()]).output().unwrap();
    let error = common::one_line_error(&output);
    let expected = format!("error: {}:2: class \"wasps\" is not one of the training classes", weights_file.display());
    assert!(error.starts_with(&expected), "{error}");
}
