//! K-fold cross-validation and the paired tests of `finetune report`: the
//! folds of the real ants/bees folder (stratified, disjoint, covering,
//! deterministic), McNemar's p-value against scipy's `binomtest` and the
//! bootstrap interval against numpy (tests/fixtures/paired_stats.py), and a
//! k-fold sweep of two learning rates on a small real folder whose report
//! pairs them image by image.

mod common;

use common::{finetune, run_ok, stdout};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use tchlab::finetune::config::{FinetuneConfig, FoldsOver, TrainOptions};
use tchlab::finetune::outcomes::{self, ImageOutcome};
use tchlab::finetune::splits::Folders;
use tchlab::stats;

/// Images as (path, class index).
type Images = Vec<(PathBuf, usize)>;

/// The (train, val) images of fold `fold` of `folds` over ants/bees.
fn fold_of(folds: usize, fold: usize, change: impl Fn(&mut TrainOptions)) -> (Images, Images) {
    let mut options = TrainOptions::defaults();
    (options.data, options.random_init) = (Some(common::ants_bees()), true);
    (options.folds, options.fold) = (Some(folds), Some(fold));
    options.out = Some(common::repo().join("target/test-runs/kfold-unused"));
    change(&mut options);
    let folders = Folders::scan(&FinetuneConfig::new(&options).unwrap()).unwrap();
    let listed = |f: &tchlab::data::image_folder::ImageFolder| {
        f.samples.iter().map(|s| (s.path.clone(), s.class_index)).collect::<Vec<_>>()
    };
    (listed(&folders.train), listed(&folders.val))
}

/// Every image of ants/bees' `splits`, with its class.
fn images_of(splits: &[&str]) -> BTreeSet<(PathBuf, usize)> {
    let mut images = BTreeSet::new();
    for split in splits {
        let folder = tchlab::data::image_folder::ImageFolder::scan(&common::ants_bees().join(split)).unwrap();
        images.extend(folder.samples.into_iter().map(|s| (std::path::absolute(s.path).unwrap(), s.class_index)));
    }
    images
}

#[test]
fn five_folds_of_ants_and_bees_are_stratified_disjoint_covering_and_deterministic() {
    let everything = images_of(&["train", "val"]);
    let mut seen = BTreeSet::new();
    let mut class_counts = Vec::new();
    for fold in 0..5 {
        let (train, val) = fold_of(5, fold, |_| {});
        let (train_set, val_set): (BTreeSet<_>, BTreeSet<_>) =
            (train.iter().cloned().collect(), val.iter().cloned().collect());
        assert!(train_set.is_disjoint(&val_set), "fold {fold} trains on a val image");
        assert_eq!(&train_set | &val_set, everything, "fold {fold} leaves images out");
        assert!(val.windows(2).all(|w| w[0].0 < w[1].0), "fold {fold}'s val images are not in path order");
        for image in &val {
            assert!(seen.insert(image.clone()), "{image:?} validates in two folds");
        }
        class_counts.push([0, 1].map(|class| val.iter().filter(|(_, c)| *c == class).count()));
        assert_eq!(fold_of(5, fold, |o| o.seed.seed = 7).1, val, "--seed changed fold {fold}");
    }
    assert_eq!(seen, everything, "the folds do not cover the images");
    for class in 0..2 {
        let counts: Vec<usize> = class_counts.iter().map(|c| c[class]).collect();
        assert!(counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1, "class {class}: {counts:?}");
    }
    let ants = everything.iter().filter(|(_, class)| *class == 0).count();
    assert_eq!(class_counts.iter().map(|c| c[0]).sum::<usize>(), ants, "{class_counts:?}");
    assert_ne!(fold_of(5, 0, |o| o.fold_seed = 1).1, fold_of(5, 0, |_| {}).1, "--fold-seed deals other folds");
}

#[test]
fn folds_over_train_leave_the_val_folder_untouched() {
    let train_images = images_of(&["train"]);
    let mut seen = BTreeSet::new();
    for fold in 0..3 {
        let (train, val) = fold_of(3, fold, |o| o.folds_over = FoldsOver::Train);
        let all: BTreeSet<_> = train.iter().chain(&val).cloned().collect();
        assert_eq!(all, train_images, "fold {fold} is not train/ alone");
        seen.extend(val);
    }
    assert_eq!(seen, train_images);
}

#[test]
fn folds_over_a_labels_file_that_lists_the_folder_are_the_folders_folds() {
    let root = std::path::absolute(common::ants_bees()).unwrap();
    let dir = common::temp_dir();
    let labels = dir.path().join("labels.csv");
    let mut rows = String::from("path,label,split\n");
    for split in ["train", "val"] {
        for (path, class) in images_of(&[split]) {
            let relative = path.strip_prefix(&root).unwrap().display().to_string();
            rows += &format!("{relative},{},{split}\n", ["ants", "bees"][class]);
        }
    }
    std::fs::write(&labels, rows).unwrap();
    let with_labels = |o: &mut TrainOptions| o.labels = Some(labels.clone());
    for fold in 0..3 {
        assert_eq!(fold_of(3, fold, with_labels), fold_of(3, fold, |_| {}), "fold {fold} of 3 over every row");
    }
    let over_train_rows = |o: &mut TrainOptions| (o.labels, o.folds_over) = (Some(labels.clone()), FoldsOver::Train);
    let over_train = |o: &mut TrainOptions| o.folds_over = FoldsOver::Train;
    assert_eq!(fold_of(3, 1, over_train_rows), fold_of(3, 1, over_train), "fold 1 of 3 over the train rows");
    // The rows decide: a file of the train rows alone deals only those.
    let text = std::fs::read_to_string(&labels).unwrap();
    std::fs::write(&labels, text.lines().filter(|l| !l.ends_with(",val")).collect::<Vec<_>>().join("\n")).unwrap();
    let (train, val) = fold_of(3, 0, with_labels);
    let dealt: BTreeSet<_> = train.into_iter().chain(val).collect();
    assert_eq!(dealt, images_of(&["train"]));
}

/// A request for tests/fixtures/paired_stats.py, answered.
fn reference(request: &Value) -> Value {
    let dir = common::temp_dir();
    let file = dir.path().join("request.json");
    std::fs::write(&file, request.to_string()).unwrap();
    let script = common::repo().join("tests/fixtures/paired_stats.py");
    serde_json::from_str(&stdout(&run_ok(Command::new(common::python()).arg(script).arg(&file)))).unwrap()
}

/// Correctness of `n` images at about `rate`, from a fixed LCG stream.
fn outcomes_at(n: usize, rate: f64, seed: u64) -> Vec<bool> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 11) as f64 / (1u64 << 53) as f64) < rate
        })
        .collect()
}

#[test]
fn mcnemar_and_the_bootstrap_equal_scipy_and_numpy() {
    let counts =
        [(0u64, 1u64), (0, 7), (7, 0), (3, 12), (1, 2), (10, 10), (25, 40), (2000, 2100), (2400, 2600), (900, 1300)];
    let (first, second) = (outcomes_at(300, 0.82, 1), outcomes_at(300, 0.74, 2));
    let (resamples, seed) = (10_000, 7);
    let answer = reference(&json!({
        "mcnemar": counts.iter().map(|&(b, c)| [b, c]).collect::<Vec<_>>(),
        "bootstrap": {"first": first.iter().map(|&c| c as u8).collect::<Vec<_>>(),
                      "second": second.iter().map(|&c| c as u8).collect::<Vec<_>>(),
                      "resamples": resamples, "seed": seed},
    }));
    for (&(b, c), scipy) in counts.iter().zip(answer["mcnemar"].as_array().unwrap()) {
        let (ours, scipy) = (stats::mcnemar_exact(b, c), scipy.as_f64().unwrap());
        assert!((ours - scipy).abs() <= 1e-10 * scipy, "b {b} c {c}: {ours:e} against scipy's {scipy:e}");
    }
    assert_eq!(stats::mcnemar_exact(0, 0), 1.0, "no discordant pair: nothing to tell apart");
    let interval = stats::paired_bootstrap(&first, &second, resamples, seed, 0.95).unwrap();
    let numpy = answer["bootstrap"].as_array().unwrap();
    let (low, high) = (numpy[0].as_f64().unwrap(), numpy[1].as_f64().unwrap());
    assert!(
        (interval.low - low).abs() < 1e-12 && (interval.high - high).abs() < 1e-12,
        "{interval:?} against numpy's [{low}, {high}]"
    );
    assert!(interval.low < interval.high, "{interval:?}");
}

/// A sweep over two learning rates and the 2 folds of a small real folder:
/// feature-extract on cached features of the pretrained Lite0.
fn kfold_sweep(dir: &Path, data: &Path) -> PathBuf {
    let file = dir.join("kfold.toml");
    let text = format!(
        "[base]\ndata = {:?}\nweights = {:?}\narch = \"efficientnet-lite0\"\nmode = \"feature-extract\"\n\
         cache-features = true\nepochs = 2\nbatch-size = 8\nfolds = 2\n\n[grid]\nfold = [0, 1]\nlr = [0.01, 0.0001]\n",
        data.display().to_string(),
        common::lite0_weights().display().to_string()
    );
    std::fs::write(&file, text).unwrap();
    file
}

#[test]
fn a_kfold_sweep_writes_each_images_outcome_and_the_report_pairs_the_learning_rates() {
    let dir = common::temp_dir();
    let data = common::small_ants_bees("kfold-ants-bees", 8);
    let out = dir.path().join("runs");
    let file = kfold_sweep(dir.path(), &data);
    run_ok(finetune().arg("sweep").arg(&file).arg("--out").arg(&out).env_remove("SLURM_ARRAY_TASK_ID"));
    let read = |fold: usize, lr: &str| {
        outcomes::read(&out.join(format!("fold={fold},lr={lr}")).join("val_predictions.csv")).unwrap()
    };
    let mut b_and_c = (0, 0);
    let mut validated = BTreeSet::new();
    for fold in 0..2 {
        let (high, low) = (read(fold, "0.01"), read(fold, "0.0001"));
        assert_eq!(paths(&high), paths(&low), "fold {fold}: the two rates validated on other images");
        assert!(paths(&high).windows(2).all(|w| w[0] < w[1]), "not in path order");
        let summary = common::read_json(&out.join(format!("fold={fold},lr=0.01/summary.json")));
        let accuracy = high.iter().filter(|o| o.correct).count() as f64 / high.len() as f64;
        assert_eq!(summary["val_images"].as_u64(), Some(high.len() as u64));
        assert!(
            (summary["best_val_acc"].as_f64().unwrap() - accuracy).abs() < 1e-9,
            "val_predictions.csv is not the kept epoch's"
        );
        assert!(high.iter().all(|o| o.label == o.path.split('/').nth(1).unwrap()), "labels are not the class folders");
        b_and_c.0 += high.iter().zip(&low).filter(|(h, l)| h.correct && !l.correct).count() as u64;
        b_and_c.1 += high.iter().zip(&low).filter(|(h, l)| !h.correct && l.correct).count() as u64;
        validated.extend(paths(&high));
    }
    assert_eq!(validated.len(), 32, "the 2 folds cover the 32 images of train/ and val/");

    let report = stdout(&run_ok(finetune().arg("report").arg(&out).arg("--out").arg(dir.path())));
    assert!(report.contains("| lr | runs done | best val acc |"), "{report}");
    assert!(report.contains("| 0.01 | 2 of 2 | "), "the folds are one configuration:\n{report}");
    assert!(report.contains("## Paired comparisons"), "{report}");
    let (b, c) = b_and_c;
    let p = tchlab::sweep::paired::p_text(stats::mcnemar_exact(b, c));
    let row = format!("| {b} | {c} | {p} |");
    assert!(report.contains(&row), "no row ending {row}:\n{report}");
    let verdict =
        report.lines().find(|l| l.starts_with("- `lr=0.01` vs `lr=0.0001`: ")).unwrap_or_else(|| panic!("{report}"));
    let significant = stats::mcnemar_exact(b, c) < 0.05;
    assert_eq!(
        verdict.contains("significant at 0.05"),
        significant && !verdict.contains("no significant"),
        "{verdict}"
    );
    assert!(verdict.contains(&format!("b = {b}, c = {c} over 32 images")), "{verdict}");

    // Resumed to more epochs, a point keeps its fold.
    let point = out.join("fold=1,lr=0.01");
    let before = read(1, "0.01");
    run_ok(finetune().arg("--resume").arg(&point).args(["--epochs", "3"]));
    assert_eq!(paths(&read(1, "0.01")), paths(&before), "the resumed run validated on other images");
    let config = &common::read_json(&point.join("summary.json"))["config"];
    assert_eq!(
        (config["folds"].as_u64(), config["fold"].as_u64(), config["epochs"].as_u64()),
        (Some(2), Some(1), Some(3))
    );
}

fn paths(outcomes: &[ImageOutcome]) -> Vec<String> {
    outcomes.iter().map(|o| o.path.clone()).collect()
}

#[test]
fn fold_options_are_checked_in_one_line() {
    let data = common::small_ants_bees("kfold-ants-bees", 8);
    // Bad values are usage errors (exit 2); a folder too small for the folds is found at its scan (exit 1).
    let cases: BTreeMap<&[&str], (i32, &str)> = BTreeMap::from([
        (
            &["--folds", "3", "--fold", "3"][..],
            (2, "error: --fold 3: must be below --folds 3 (the folds are numbered 0 to 2)"),
        ),
        (&["--folds", "3"][..], (2, "error: --folds 3: give --fold I, the fold that validates (0 to 2)")),
        (&["--fold", "1"][..], (2, "error: --fold 1: needs --folds K, the number of folds")),
        (&["--folds", "1", "--fold", "0"][..], (2, "error: --folds 1: must be at least 2")),
        (
            &["--folds", "2", "--fold", "0", "--val-split", "0.2"][..],
            (2, "error: --folds and --val-split both choose the val images"),
        ),
        (
            &["--folds", "17", "--fold", "0"][..],
            (1, "class ants has 16 image(s); --folds 17 needs at least one per fold"),
        ),
    ]);
    for (args, (code, expected)) in cases {
        let dir = common::temp_dir();
        let output = finetune()
            .args(args)
            .args(["--random-init", "--image-size", "32", "--epochs", "1", "--data"])
            .arg(&data)
            .arg("--out")
            .arg(dir.path().join("run"))
            .output()
            .unwrap();
        let error = common::one_line_exit(&output, code);
        assert!(error.starts_with(expected) || error.contains(expected), "{args:?}: {error}");
    }
}
