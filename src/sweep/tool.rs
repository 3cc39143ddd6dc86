//! The tools a sweep runs — `finetune` (the default), `mnist mlp`, `mnist
//! cnn` and `caption train` — and what a sweep needs to know of each: the
//! binary and words that start a point, the options a sweep file may set
//! (checked by the tool's own option type, so a bad key or value is the
//! tool's own one-line error before any run starts), which options are the
//! recipe, which the launcher sets, and how a finished run's `summary.json`
//! gives its headline numbers. This module names and reads; it starts
//! nothing.

use crate::cli::options_file;
pub use crate::cli::options_file::{flag, plain};
use crate::finetune::config::{FinetuneConfig, TrainOptions};
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;

/// A tool a sweep can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tool {
    Finetune,
    MnistMlp,
    MnistCnn,
    CaptionTrain,
}

pub const TOOLS: [Tool; 4] = [Tool::Finetune, Tool::MnistMlp, Tool::MnistCnn, Tool::CaptionTrain];

/// A finished run's numbers, as its tool's summary gives them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Headline {
    /// The score the tool picks by (finetune: best val accuracy).
    pub score: Option<f64>,
    /// The epoch that score is from (numbered from 0), where the tool keeps one.
    pub best_epoch: Option<usize>,
    /// Test accuracy, where the tool measures one.
    pub test_acc: Option<f64>,
    /// Mean seconds of a training epoch, where the summary says.
    pub seconds_per_epoch: Option<f64>,
    /// Seconds to the first training step (finetune).
    pub startup_seconds: Option<f64>,
    /// Frozen features the run loaded from its feature cache, and computed.
    pub features: Option<(usize, usize)>,
    /// Macro-F1 and balanced accuracy at the best epoch, where the tool
    /// measures them (finetune).
    pub macro_f1: Option<f64>,
    pub balanced_acc: Option<f64>,
}

impl Tool {
    /// The name a sweep file's `tool` key and `summary.json`'s `tool` give.
    pub fn name(self) -> &'static str {
        match self {
            Tool::Finetune => "finetune",
            Tool::MnistMlp => "mnist mlp",
            Tool::MnistCnn => "mnist cnn",
            Tool::CaptionTrain => "caption train",
        }
    }

    pub fn from_name(name: &str) -> Result<Self> {
        let names: Vec<String> = TOOLS.iter().map(|t| format!("{:?}", t.name())).collect();
        TOOLS
            .into_iter()
            .find(|t| t.name() == name.trim())
            .with_context(|| format!("tool {name:?}: a sweep runs one of {}", names.join(", ")))
    }

    /// The binary and the words before its options.
    fn program(self) -> (&'static str, &'static [&'static str]) {
        match self {
            Tool::Finetune => ("finetune", &[]),
            Tool::MnistMlp => ("mnist", &["mlp"]),
            Tool::MnistCnn => ("mnist", &["cnn"]),
            Tool::CaptionTrain => ("caption", &["train"]),
        }
    }

    /// The binary's name (`mnist`).
    pub fn program_name(self) -> &'static str {
        self.program().0
    }

    /// A command that starts this tool: its binary beside the running one.
    pub fn command(self) -> Result<std::process::Command> {
        let exe = std::env::current_exe().context("finding the running binary")?;
        let (binary, words) = self.program();
        let path = exe.with_file_name(binary);
        if !path.is_file() {
            bail!(
                "{}: not found (the sweep starts `{}` from the folder of {})",
                path.display(),
                self.name(),
                exe.display()
            );
        }
        let mut command = std::process::Command::new(path);
        command.args(words);
        Ok(command)
    }

    /// The option ids (`batch_size`) a sweep file may set, in the order the
    /// tool's `--help` lists them.
    pub fn option_ids(self) -> Vec<String> {
        match self {
            Tool::Finetune => TrainOptions::ids(),
            Tool::MnistMlp => ids::<crate::mnist::options::MlpArgs>(),
            Tool::MnistCnn => ids::<crate::mnist::options::CnnArgs>(),
            Tool::CaptionTrain => ids::<crate::caption::options::TrainArgs>(),
        }
    }

    /// Options the launcher gives every point the sweep file leaves them to.
    pub fn launcher_options(self) -> &'static [&'static str] {
        match self {
            Tool::Finetune => &["threads", "workers"],
            _ => &["threads"],
        }
    }

    /// Options a point may set that its run does not save, so that a
    /// resumed point is given them again: finetune's data-parallel launch
    /// (its threads are saved), the others' threads.
    pub fn not_saved_with_runs(self) -> &'static [&'static str] {
        match self {
            Tool::Finetune => &["nproc", "dist-backend", "dist-timeout"],
            _ => &["threads"],
        }
    }

    /// Whether `--resume DIR --epochs N` extends a finished run (otherwise
    /// the epochs are part of the recipe).
    pub fn extends_runs(self) -> bool {
        self == Tool::Finetune
    }

    /// The options that say how a run is carried out, not what it is, as
    /// the tool's own options type lists them (`crate::cli::HOW_IT_RUNS`).
    fn how_it_runs(self) -> BTreeSet<String> {
        match self {
            Tool::Finetune => crate::cli::how_it_runs::<TrainOptions>(),
            Tool::MnistMlp => crate::cli::how_it_runs::<crate::mnist::options::MlpArgs>(),
            Tool::MnistCnn => crate::cli::how_it_runs::<crate::mnist::options::CnnArgs>(),
            Tool::CaptionTrain => crate::cli::how_it_runs::<crate::caption::options::TrainArgs>(),
        }
    }

    /// Whether option `id` of a saved config is part of the run's recipe
    /// (what a sweep point must match), as opposed to how it is carried out,
    /// where its data lives (a labels file's content is: its checksum) or,
    /// for a tool that extends runs, how long.
    pub fn is_recipe(self, id: &str) -> bool {
        self.is_reported(id) && !["data", "labels"].contains(&id) && !(id == "epochs" && self.extends_runs())
    }

    /// Whether option `id` is a column a report may show.
    pub fn is_reported(self, id: &str) -> bool {
        !self.how_it_runs().contains(id)
    }

    /// The resolved config of a point (what the tool saves with its run),
    /// from the sweep file's `[base]` and the point's values; `out` is the
    /// point's run folder. Errors name `source`.
    pub fn resolve(self, base: &toml::Table, point: &toml::Table, out: &Path, source: &str) -> Result<Value> {
        let config = match self {
            Tool::Finetune => {
                let base = TrainOptions::defaults().with_table(base, &BTreeSet::new(), source)?;
                let mut options = base.with_table(point, &BTreeSet::new(), source)?;
                options.out = Some(out.to_owned());
                let config = FinetuneConfig::new(&options).map_err(|e| anyhow::anyhow!("{source}: {e:#}"))?;
                serde_json::to_value(config)?
            }
            Tool::MnistMlp => {
                let mut args: crate::mnist::options::MlpArgs = parse(self, base, point, source)?;
                args.common.resolve_paths();
                serde_json::to_value(args)?
            }
            Tool::MnistCnn => {
                let mut args: crate::mnist::options::CnnArgs = parse(self, base, point, source)?;
                args.common.resolve_paths();
                serde_json::to_value(args)?
            }
            Tool::CaptionTrain => {
                let args: crate::caption::options::TrainArgs = parse(self, base, point, source)?;
                serde_json::to_value(args.with_paths_resolved())?
            }
        };
        let mut config = config;
        config["out"] = serde_json::json!(out);
        let data = config["data"].as_str().map(Path::new).context("the resolved options name no data folder")?;
        if !data.is_dir() {
            bail!("{source}: data folder {} not found", data.display());
        }
        Ok(config)
    }

    /// A saved config read back through the tool's own options type, so
    /// that keys an older version did not save get their defaults and
    /// compare as the tool would resolve them (as it is when it does not
    /// parse: then every difference shows).
    pub fn normalized(self, config: &Value) -> Value {
        fn through<T: serde::Serialize + serde::de::DeserializeOwned>(config: &Value) -> Option<Value> {
            serde_json::to_value(serde_json::from_value::<T>(config.clone()).ok()?).ok()
        }
        let normalized = match self {
            Tool::Finetune => through::<FinetuneConfig>(config),
            Tool::MnistMlp => through::<crate::mnist::options::MlpArgs>(config),
            Tool::MnistCnn => through::<crate::mnist::options::CnnArgs>(config),
            Tool::CaptionTrain => through::<crate::caption::options::TrainArgs>(config),
        };
        normalized.unwrap_or_else(|| config.clone())
    }

    /// The epochs a run of `config` trains.
    pub fn epochs(config: &Value) -> Option<usize> {
        config.get("epochs")?.as_u64().map(|e| e as usize)
    }

    /// What the score is called in tables and figures.
    pub fn score_name(self) -> &'static str {
        match self {
            Tool::Finetune => "best val acc",
            Tool::MnistMlp => "val acc",
            Tool::MnistCnn => "val acc",
            Tool::CaptionTrain => "val BLEU-4",
        }
    }

    /// The score's name in CSV headers.
    pub fn score_key(self) -> &'static str {
        match self {
            Tool::Finetune => "best_val_acc",
            Tool::MnistMlp | Tool::MnistCnn => "val_acc",
            Tool::CaptionTrain => "val_bleu4",
        }
    }

    /// The headline numbers of a finished run's `summary.json`.
    pub fn headline(self, summary: &Value) -> Headline {
        let number = |key: &str| summary.get(key).and_then(Value::as_f64);
        let count = |key: &str| summary.get(key).and_then(Value::as_u64).map(|n| n as usize);
        let epochs = summary.get("config").and_then(Tool::epochs).filter(|&e| e > 0);
        match self {
            Tool::Finetune => {
                let cache = summary.get("feature_cache").filter(|c| !c.is_null());
                let cache_count = |key: &str| cache?.get(key)?.as_u64().map(|n| n as usize);
                Headline {
                    score: number("best_val_acc"),
                    best_epoch: count("best_epoch"),
                    macro_f1: number("best_val_macro_f1"),
                    balanced_acc: number("best_val_balanced_acc"),
                    startup_seconds: number("startup_seconds"),
                    features: cache_count("loaded").zip(cache_count("computed")),
                    ..Headline::default()
                }
            }
            Tool::MnistMlp => {
                let rows = summary.get("rows").and_then(Value::as_array).cloned().unwrap_or_default();
                let val = |row: &Value| row.get("val_acc").and_then(Value::as_f64);
                let seconds: f64 = rows.iter().filter_map(|r| r.get("seconds").and_then(Value::as_f64)).sum();
                Headline {
                    score: rows.iter().filter_map(val).max_by(f64::total_cmp),
                    best_epoch: None,
                    test_acc: number("test_acc"),
                    seconds_per_epoch: epochs.filter(|_| !rows.is_empty()).map(|e| seconds / (e * rows.len()) as f64),
                    ..Headline::default()
                }
            }
            Tool::MnistCnn => Headline {
                score: number("val_acc"),
                best_epoch: None,
                test_acc: number("test_acc"),
                seconds_per_epoch: number("training_seconds").zip(epochs).map(|(s, e)| s / e as f64),
                ..Headline::default()
            },
            Tool::CaptionTrain => Headline {
                // The first score row is the model's own (the others are baselines).
                score: summary.pointer("/scores/0/bleu/3").and_then(Value::as_f64),
                best_epoch: count("kept_epoch"),
                test_acc: None,
                seconds_per_epoch: number("seconds_per_epoch"),
                ..Headline::default()
            },
        }
    }
}

/// The ids of the options of `A` (clap's ids: the field names).
fn ids<A: clap::Args>() -> Vec<String> {
    A::augment_args(clap::Command::new("options")).get_arguments().map(|a| a.get_id().to_string()).collect()
}

/// The options of `base` then `point` (no key is in both) given to `A`'s
/// own parser as flags.
fn parse<A: clap::Args + clap::FromArgMatches>(
    tool: Tool,
    base: &toml::Table,
    point: &toml::Table,
    source: &str,
) -> Result<A> {
    let table: toml::Table = base.iter().chain(point).map(|(k, v)| (k.clone(), v.clone())).collect();
    options_file::from_table(tool.name(), &table, source)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_is_found_by_its_name_and_a_wrong_one_lists_them() {
        for tool in TOOLS {
            assert_eq!(Tool::from_name(tool.name()).unwrap(), tool);
        }
        let wrong = Tool::from_name("mnist").unwrap_err().to_string();
        assert!(wrong.contains("\"finetune\", \"mnist mlp\", \"mnist cnn\", \"caption train\""), "{wrong}");
    }

    #[test]
    fn epochs_are_recipe_only_where_a_resume_cannot_extend_them() {
        assert!(!Tool::Finetune.is_recipe("epochs"));
        assert!(Tool::MnistMlp.is_recipe("epochs"));
        assert!(Tool::MnistMlp.is_recipe("hidden"));
        assert!(!Tool::CaptionTrain.is_recipe("device"));
        assert!(!Tool::MnistCnn.is_recipe("data"));
    }

    #[test]
    fn the_recipe_is_every_option_but_how_the_run_is_carried_out() {
        let set = |ids: &[&str]| ids.iter().map(|id| id.to_string()).collect::<BTreeSet<_>>();
        let finetune = set(&[
            "out",
            "overwrite",
            "workers",
            "threads",
            "cache_mb",
            "feature_cache",
            "force",
            "nproc",
            "dist_backend",
            "dist_timeout",
        ]);
        assert_eq!(crate::cli::how_it_runs::<TrainOptions>(), finetune);
        let tool = set(&["out", "overwrite", "resume", "threads", "config", "device"]);
        assert_eq!(crate::cli::how_it_runs::<crate::mnist::options::MlpArgs>(), tool);
        assert_eq!(crate::cli::how_it_runs::<crate::caption::options::TrainArgs>(), tool);
        assert_eq!(crate::cli::resumable::<crate::mnist::options::CnnArgs>(), set(&["threads", "device"]));
        for tool in TOOLS {
            assert!(tool.is_recipe("seed") && !tool.is_recipe("threads") && !tool.is_reported("out"), "{tool:?}");
        }
        assert!(!Tool::Finetune.is_recipe("force") && Tool::Finetune.is_recipe("precision"));
    }

    #[test]
    fn a_bad_mnist_value_is_the_tools_own_error_in_one_line() {
        let point: toml::Table = toml::from_str("epochs = 0").unwrap();
        let error = parse::<crate::mnist::options::MlpArgs>(Tool::MnistMlp, &toml::Table::new(), &point, "point 0")
            .err()
            .unwrap()
            .to_string();
        assert!(error.starts_with("point 0: invalid value '0' for '--epochs <N>'"), "{error}");
        assert!(!error.contains('\n'), "{error}");
    }

    #[test]
    fn an_mlp_point_resolves_to_the_config_the_binary_saves() {
        let base: toml::Table = toml::from_str("epochs = 2\nhidden = [10, 50]").unwrap();
        let point: toml::Table = toml::from_str("seed = 3").unwrap();
        let config =
            serde_json::to_value(parse::<crate::mnist::options::MlpArgs>(Tool::MnistMlp, &base, &point, "p").unwrap())
                .unwrap();
        assert_eq!(config["hidden"], serde_json::json!([10, 50]));
        assert_eq!((config["epochs"].as_u64(), config["seed"].as_u64()), (Some(2), Some(3)));
        assert_eq!(config["grad"], "manual", "defaults filled in");
    }

    #[test]
    fn a_finetune_point_varies_the_training_knobs_and_older_configs_compare_without_them() {
        let data = env!("CARGO_MANIFEST_DIR");
        let base: toml::Table = toml::from_str(&format!("random-init = true\ndata = {data:?}")).unwrap();
        let point: toml::Table = toml::from_str("accumulate = 4\nclip-grad-norm = 2.0\nema = 0.99").unwrap();
        let config = Tool::Finetune.resolve(&base, &point, Path::new("target/test-runs/point"), "point 0").unwrap();
        assert_eq!((config["accumulate"].as_u64(), config["clip_grad_norm"].as_f64()), (Some(4), Some(2.0)));
        assert_eq!(config["ema"].as_f64(), Some(0.99));
        let plain = Tool::Finetune.resolve(&base, &toml::Table::new(), Path::new("p"), "point 1").unwrap();
        let mut older = plain.clone();
        for key in ["accumulate", "clip_grad_norm", "ema"] {
            older.as_object_mut().unwrap().remove(key);
        }
        assert_eq!(Tool::Finetune.normalized(&older), Tool::Finetune.normalized(&plain));
        assert_ne!(Tool::Finetune.normalized(&config)["accumulate"], Tool::Finetune.normalized(&plain)["accumulate"]);
    }

    #[test]
    fn a_finetune_point_may_set_the_monitor_sampler_and_class_weights() {
        let data = env!("CARGO_MANIFEST_DIR");
        let base: toml::Table = toml::from_str(&format!("random-init = true\ndata = {data:?}")).unwrap();
        let point: toml::Table =
            toml::from_str("monitor = \"val_loss\"\nsampler = \"balanced\"\nclass-weights = \"auto\"").unwrap();
        let config = Tool::Finetune.resolve(&base, &point, Path::new("target/test-runs/point"), "point 0").unwrap();
        assert_eq!((config["monitor"].as_str(), config["sampler"].as_str()), (Some("val_loss"), Some("balanced")));
        assert_eq!(config["class_weights"].as_str(), Some("auto"));
        assert_eq!(flag("monitor", &point["monitor"]), ["--monitor", "val_loss"]);
    }

    #[test]
    fn headlines_come_from_each_tools_summary() {
        let mlp = serde_json::json!({"config": {"epochs": 2}, "test_acc": 0.97,
            "rows": [{"hidden": 10, "val_acc": 0.9, "seconds": 4.0}, {"hidden": 50, "val_acc": 0.95, "seconds": 8.0}]});
        let headline = Tool::MnistMlp.headline(&mlp);
        assert_eq!(
            (headline.score, headline.test_acc, headline.seconds_per_epoch),
            (Some(0.95), Some(0.97), Some(3.0))
        );
        let caption = serde_json::json!({"kept_epoch": 4, "scores": [{"bleu": [0.9, 0.8, 0.7, 0.6]}, {"bleu": [0.1, 0.1, 0.1, 0.1]}]});
        assert_eq!(Tool::CaptionTrain.headline(&caption).score, Some(0.6));
        assert_eq!(Tool::CaptionTrain.headline(&caption).best_epoch, Some(4));
    }
}
