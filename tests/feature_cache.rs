//! `--feature-cache DIR` as users run it: EfficientNet-Lite0 feature
//! extraction (pretrained, `--cache-features`, 64-pixel images) on a copy of
//! 16 + 16 train and 8 + 8 val ants/bees images, 1–2 epochs. A run with the
//! cache trains exactly as one without; the next run computes nothing; an
//! edited image is computed again alone; a damaged cache file is a warning
//! and a recompute; a resumed run may take the cache; two runs started
//! together compute each image once; a data-parallel run's rank 0 reads
//! and writes it; a sweep's points share one cache.
// Needs the data tier (data/ and models/ fetched; see build.rs).
#![cfg(tchlab_data)]

mod common;
use common::{read_json, run_ok, stdout, temp_dir, text};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

/// Train and val images, 16 + 16 and 8 + 8.
const TRAIN_PER_CLASS: usize = 16;
const VAL_PER_CLASS: usize = 8;
const IMAGES: u64 = 2 * (TRAIN_PER_CLASS + VAL_PER_CLASS) as u64;

/// A copy (real files, so they can be edited) of the first images of each
/// class and split of ants/bees under `dir`.
fn copy_of_ants_bees(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    for (split, per_class) in [("train", TRAIN_PER_CLASS), ("val", VAL_PER_CLASS)] {
        for class in ["ants", "bees"] {
            let from = common::ants_bees().join(split).join(class);
            let to = data.join(split).join(class);
            std::fs::create_dir_all(&to).unwrap();
            let mut files: Vec<PathBuf> = std::fs::read_dir(&from).unwrap().map(|e| e.unwrap().path()).collect();
            files.sort();
            for file in files.iter().filter(|f| f.extension().is_some_and(|e| e == "jpg")).take(per_class) {
                std::fs::copy(file, to.join(file.file_name().unwrap())).unwrap();
            }
        }
    }
    data
}

/// Lite0 feature extraction on `data` into `out`, `epochs` epochs, with
/// `cache` as its feature cache.
fn run(data: &Path, out: &Path, epochs: usize, cache: Option<&Path>) -> Command {
    let mut command = common::finetune();
    command
        .args(["--arch", "efficientnet-lite0", "--mode", "feature-extract", "--cache-features"])
        .args(["--epochs", &epochs.to_string(), "--image-size", "64", "--batch-size", "8", "--lr", "0.01"])
        .args(["--threads", "1", "--workers", "1"])
        .arg("--weights")
        .arg(common::lite0_weights())
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(out);
    if let Some(cache) = cache {
        command.arg("--feature-cache").arg(cache);
    }
    command
}

/// metrics.csv without its timing columns (seconds, data wait).
fn metrics(out: &Path) -> Vec<String> {
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    csv.lines().map(|line| line.split(',').take(5).collect::<Vec<_>>().join(",")).collect()
}

/// What the run in `out` says its feature cache served: (loaded, computed).
fn served(out: &Path) -> (u64, u64) {
    let summary = read_json(&out.join("summary.json"));
    let cache = &summary["feature_cache"];
    assert!(summary["startup_seconds"].as_f64().is_some_and(|s| s > 0.0), "{summary}");
    (cache["loaded"].as_u64().unwrap(), cache["computed"].as_u64().unwrap())
}

/// Whether the kept models of two runs hold the same tensors, bit for bit
/// (the files' metadata is a map in no fixed order).
fn same_best_model(a: &Path, b: &Path) -> bool {
    let tensors = |out: &Path| {
        let mut tensors = tch::Tensor::read_safetensors(out.join("best_model.safetensors")).unwrap();
        tensors.sort_by(|x, y| x.0.cmp(&y.0));
        tensors
    };
    let (a, b) = (tensors(a), tensors(b));
    a.len() == b.len() && a.iter().zip(&b).all(|((na, ta), (nb, tb))| na == nb && ta.equal(tb))
}

/// The store file(s) in a cache folder.
fn store_files(cache: &Path) -> Vec<PathBuf> {
    let files = std::fs::read_dir(cache).unwrap().map(|e| e.unwrap().path());
    files.filter(|p| p.extension().is_some_and(|e| e == "features")).collect()
}

/// The names in a cache folder other than its store files (locks, temporary files).
fn leftovers(cache: &Path) -> Vec<String> {
    let names = std::fs::read_dir(cache).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned());
    names.filter(|n| !n.ends_with(".features")).collect()
}

#[test]
fn a_run_with_the_cache_trains_as_one_without_and_the_next_loads_every_feature() {
    let dir = temp_dir();
    let data = copy_of_ants_bees(dir.path());
    let cache = dir.path().join("cache");
    let [plain, first, second, after_damage] = ["plain", "first", "second", "damaged"].map(|n| dir.path().join(n));
    run_ok(&mut run(&data, &plain, 2, None));
    let output = run_ok(&mut run(&data, &first, 2, Some(&cache)));
    assert_eq!(served(&first), (0, IMAGES));
    assert!(stdout(&output).contains("feature cache: val features of 16 images: 0 loaded, 16 computed"));
    let output = run_ok(&mut run(&data, &second, 2, Some(&cache)));
    assert_eq!(served(&second), (IMAGES, 0), "the second run computes nothing");
    let said = stdout(&output);
    assert!(said.contains("start-up: ") && said.contains("(feature cache: 48 loaded, 0 computed)"), "{said}");
    for out in [&first, &second] {
        assert_eq!(metrics(out), metrics(&plain), "{}", out.display());
        assert!(same_best_model(out, &plain), "{}: other weights", out.display());
    }
    assert!(read_json(&plain.join("summary.json"))["feature_cache"].is_null());
    // The cache is how a run is carried out: a run resumed with it continues as it would have without.
    let resumed = dir.path().join("resumed");
    run_ok(&mut run(&data, &resumed, 1, None));
    let mut resume = common::finetune();
    resume.arg("--resume").arg(&resumed).args(["--epochs", "2"]).arg("--feature-cache").arg(&cache);
    let said = stdout(&run_ok(&mut resume));
    assert!(said.contains("(feature cache: 48 loaded, 0 computed)"), "{said}");
    assert_eq!(metrics(&resumed), metrics(&plain));
    assert!(same_best_model(&resumed, &plain));
    assert!(leftovers(&cache).is_empty(), "{:?}", leftovers(&cache));
    // A damaged store: one warning line, every feature computed again, the same results.
    let [store] = store_files(&cache).try_into().unwrap();
    let bytes = std::fs::read(&store).unwrap();
    std::fs::write(&store, &bytes[..bytes.len() / 2]).unwrap();
    let output = run_ok(&mut run(&data, &after_damage, 2, Some(&cache)));
    let warnings: Vec<String> =
        text(&output.stderr).lines().filter(|l| l.contains("feature cache")).map(str::to_owned).collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].starts_with(&format!("warning: feature cache {}: checksum mismatch", store.display())));
    // The val pass finds it damaged and rewrites it whole; the train pass then adds its rows.
    assert_eq!(served(&after_damage), (0, IMAGES));
    assert_eq!(metrics(&after_damage), metrics(&plain));
    assert!(same_best_model(&after_damage, &plain));
    assert_eq!(std::fs::read(&store).unwrap().len(), bytes.len(), "rewritten whole");
}

#[test]
fn an_edited_image_is_computed_again_alone() {
    let dir = temp_dir();
    let data = copy_of_ants_bees(dir.path());
    let cache = dir.path().join("cache");
    run_ok(&mut run(&data, &dir.path().join("0"), 1, Some(&cache)));
    // Touched: the same bytes, a later time.
    let touched = data.join("val/bees").read_dir().unwrap().next().unwrap().unwrap().path();
    let file = std::fs::File::options().write(true).open(&touched).unwrap();
    file.set_modified(SystemTime::now() + Duration::from_secs(60)).unwrap();
    let out = dir.path().join("1");
    let said = stdout(&run_ok(&mut run(&data, &out, 1, Some(&cache))));
    assert_eq!(served(&out), (IMAGES - 1, 1));
    assert!(said.contains("val features of 16 images: 15 loaded, 1 computed"), "{said}");
    // Rewritten: other bytes, its old time put back.
    let edited = data.join("train/ants").read_dir().unwrap().next().unwrap().unwrap().path();
    let time = std::fs::metadata(&edited).unwrap().modified().unwrap();
    std::fs::write(&edited, std::fs::read(&touched).unwrap()).unwrap();
    std::fs::File::options().write(true).open(&edited).unwrap().set_modified(time).unwrap();
    let out = dir.path().join("2");
    let said = stdout(&run_ok(&mut run(&data, &out, 1, Some(&cache))));
    assert_eq!(served(&out), (IMAGES - 1, 1));
    assert!(said.contains("train features of 32 images: 31 loaded, 1 computed"), "{said}");
    let out = dir.path().join("3");
    run_ok(&mut run(&data, &out, 1, Some(&cache)));
    assert_eq!(served(&out), (IMAGES, 0));
}

#[test]
fn two_runs_started_together_on_an_empty_cache_compute_each_image_once() {
    let dir = temp_dir();
    let data = copy_of_ants_bees(dir.path());
    let cache = dir.path().join("cache");
    let outs = ["a", "b"].map(|n| dir.path().join(n));
    let children: Vec<_> = outs
        .iter()
        .map(|out| {
            let mut command = run(&data, out, 1, Some(&cache));
            common::die_with_parent(&mut command);
            command.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap()
        })
        .collect();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "{}{}", stdout(&output), text(&output.stderr));
    }
    let [a, b] = outs.each_ref().map(|out| served(out));
    assert_eq!((a.0 + b.0, a.1 + b.1), (IMAGES, IMAGES), "each image computed once: {a:?} {b:?}");
    assert_eq!(metrics(&outs[0]), metrics(&outs[1]));
    assert!(same_best_model(&outs[0], &outs[1]));
    assert_eq!(store_files(&cache).len(), 1);
    assert!(leftovers(&cache).is_empty(), "{:?}", leftovers(&cache));
}

#[test]
fn the_points_of_a_sweep_share_one_cache_under_its_folder() {
    let dir = temp_dir();
    let data = copy_of_ants_bees(dir.path());
    let file = dir.path().join("sweep.toml");
    let base = format!(
        "[base]\ndata = {:?}\narch = \"efficientnet-lite0\"\nweights = {:?}\nmode = \"feature-extract\"\n\
         cache-features = true\nimage-size = 64\nbatch-size = 8\nepochs = 1\n\n[grid]\nlr = [0.01, 0.001]\n",
        data.display().to_string(),
        common::lite0_weights().display().to_string()
    );
    std::fs::write(&file, base).unwrap();
    let out = dir.path().join("runs");
    let mut sweep = common::finetune();
    sweep.arg("sweep").arg(&file).arg("--out").arg(&out).args(["--jobs", "1", "--devices", "cpu"]);
    let said = stdout(&run_ok(sweep.env_remove("SLURM_ARRAY_TASK_ID")));
    assert_eq!(served(&out.join("lr=0.01")), (0, IMAGES));
    assert_eq!(served(&out.join("lr=0.001")), (IMAGES, 0));
    assert!(said.contains("(features: 48 loaded, 0 computed)"), "{said}");
    let results = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(results.contains("## Start-up"), "{results}");
    assert!(results.contains("1 of 2 run(s) with a feature cache loaded every frozen feature"), "{results}");
    assert_eq!(store_files(&out.join("feature-cache")).len(), 1);
    let config = read_json(&out.join("lr=0.001/summary.json"))["config"].clone();
    assert_eq!(config["feature_cache"].as_str(), Some(out.join("feature-cache").to_str().unwrap()));
}

/// A two-rank run of a frozen random ResNet-18 on the small copy of
/// ants/bees into `out`, with `cache` as its feature cache.
fn two_ranks(out: &Path, cache: Option<&Path>) -> Command {
    let mut command = common::cached_head_epochs(2, 4, out);
    command.args(["--nproc", "2"]);
    if let Some(cache) = cache {
        command.arg("--feature-cache").arg(cache);
    }
    command
}

#[test]
fn rank_0_of_a_data_parallel_run_reads_and_writes_the_cache() {
    let dir = temp_dir();
    let cache = dir.path().join("cache");
    let [plain, first, second] = ["plain", "first", "second"].map(|n| dir.path().join(n));
    run_ok(&mut two_ranks(&plain, None));
    run_ok(&mut two_ranks(&first, Some(&cache)));
    run_ok(&mut two_ranks(&second, Some(&cache)));
    // 8 images per class and split: 32 in all, computed in shares by both ranks, then loaded.
    assert_eq!((served(&first), served(&second)), ((0, 32), (32, 0)));
    assert_eq!(metrics(&first), metrics(&plain));
    assert_eq!(metrics(&second), metrics(&plain));
    assert_eq!(read_json(&second.join("summary.json"))["world_size"], 2);
}
