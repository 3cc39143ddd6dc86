//! What the backbone-family tests (`tests/*_family.rs`) share in checking
//! our models against real torchvision code: the fixture writer a family's
//! Python script runs (once per test binary, one member after another) and
//! the wait for a member's files; the relative comparisons; the three SGD
//! steps through the trainer's own step; the printed report and the
//! tolerance asserts of one member; and the check of `finetune --list-archs`
//! against the `published.json` the script describes. What a family alone
//! has (its seeds, drops, extra inputs and "can fail" asserts) stays in its
//! test file.

use super::{die_with_parent, finetune, python, read_json, repo, run_ok, stdout, temp_dir};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, Once};
use std::time::Duration;
use tch::{Device, Kind, Tensor};
use tchlab::choice_names::Named;
use tchlab::data::transforms::{Interpolation, Normalization};
use tchlab::models::{Arch, Classifier};
use tchlab::persist::pth::read_state_dict;
use tchlab::persist::weights::load_all;
use tchlab::train::optim::Sgd;
use tchlab::train::step::GradientStep;

/// Relative tolerance of every comparison with PyTorch.
pub const TOLERANCE: f64 = 1e-4;

/// A family's fixture writer: its script under tests/fixtures, its folder
/// under target/test-fixtures and its members with their torchvision
/// builder names, in the order the test harness starts their tests (by name).
pub struct Family {
    pub script: &'static str,
    pub folder: &'static str,
    pub members: &'static [(Arch, &'static str)],
}

/// A member's files: its checkpoint and its reference passes.
pub struct MemberFixtures {
    pub checkpoint: PathBuf,
    pub io: PathBuf,
}

/// The reference passes of a member, by key.
pub type Io = HashMap<String, Tensor>;

/// How the writer ended (`None` while it runs); one writer per test binary.
static WRITER_ENDED: Mutex<Option<String>> = Mutex::new(None);

impl Family {
    pub fn script(&self) -> PathBuf {
        repo().join("tests/fixtures").join(self.script)
    }

    pub fn dir(&self) -> PathBuf {
        repo().join("target/test-fixtures").join(self.folder)
    }

    /// Starts, once per test binary, the Python process that writes the
    /// fixtures of every member into a fresh [`Family::dir`], one member
    /// after another, while the tests check the members it has written.
    fn start_writer(&self) {
        static START: Once = Once::new();
        START.call_once(|| {
            // Tests run side by side, one per core, beside the writer: one libtorch thread each.
            tch::set_num_threads(1);
            let dir = self.dir();
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let mut command = Command::new(python());
            command.arg(self.script()).arg(&dir).arg("--build").args(self.members.iter().map(|(_, name)| name));
            command.stdout(Stdio::null()).stderr(std::fs::File::create(dir.join("stderr.txt")).unwrap());
            die_with_parent(&mut command);
            // Spawned and waited for on a thread of its own: the parent-death
            // signal follows the thread that spawns, which must outlive the tests.
            std::thread::spawn(move || {
                let ended = command.status().map_or_else(|e| format!("could not start: {e}"), |s| s.to_string());
                *WRITER_ENDED.lock().unwrap() = Some(ended);
            });
        });
    }

    /// `name`'s checkpoint and reference passes, once the writer has
    /// written them (the passes last); a writer that ends without them
    /// fails the test with its stderr.
    pub fn member_fixtures(&self, name: &str) -> MemberFixtures {
        self.start_writer();
        let dir = self.dir();
        let fixtures =
            MemberFixtures { checkpoint: dir.join(format!("{name}.pth")), io: dir.join(format!("{name}_io.pth")) };
        loop {
            let ended = WRITER_ENDED.lock().unwrap().clone();
            if fixtures.io.exists() {
                return fixtures;
            }
            if let Some(ended) = ended {
                let stderr = std::fs::read_to_string(dir.join("stderr.txt")).unwrap_or_default();
                let (script, io) = (self.script(), &fixtures.io);
                panic!("{} ended ({ended}) without writing {}:\n{stderr}", script.display(), io.display());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for `name`'s fixtures, loads its checkpoint into `model` by name
    /// (then deletes it) and gives its reference passes.
    pub fn load_member(&self, name: &str, model: &mut Classifier) -> Io {
        let fixtures = self.member_fixtures(name);
        load_all(model, &fixtures.checkpoint).unwrap();
        fixtures.remove_checkpoint();
        fixtures.read_io()
    }

    /// [`assert_list_archs_matches`] on what torchvision publishes of
    /// `members`, with no weights in the models folder.
    pub fn assert_list_archs_matches(&self, members: &[(Arch, &str)]) {
        let models_dir = temp_dir();
        assert_list_archs_matches(&self.published(members), models_dir.path(), members);
    }

    /// What the script's `--describe` writes of `members`: torchvision's
    /// published file name, parameter count and transforms of each.
    pub fn published(&self, members: &[(Arch, &str)]) -> Value {
        let catalogue_dir = temp_dir();
        let names = members.iter().map(|(_, name)| name);
        run_ok(Command::new(python()).arg(self.script()).arg(catalogue_dir.path()).arg("--describe").args(names));
        read_json(&catalogue_dir.path().join("published.json"))
    }
}

impl MemberFixtures {
    pub fn read_io(&self) -> Io {
        read_state_dict(&self.io).unwrap().into_iter().collect()
    }

    /// Deletes the checkpoint (up to 500 MB each), once loaded: each is read once.
    pub fn remove_checkpoint(&self) {
        std::fs::remove_file(&self.checkpoint).unwrap();
    }
}

/// The largest difference over the largest magnitude of the reference.
pub fn max_relative_difference(ours: &Tensor, theirs: &Tensor) -> f64 {
    assert_eq!(ours.size(), theirs.size());
    let ours = ours.to_kind(Kind::Double);
    let theirs = theirs.to_kind(Kind::Double);
    (&ours - &theirs).abs().max().double_value(&[]) / theirs.abs().max().double_value(&[])
}

/// The running statistics of `model` against `after_train.<name>` in `io`,
/// every one of them (more than `at_least`): the largest relative difference.
pub fn running_statistics_difference(model: &Classifier, io: &Io, at_least: usize) -> f64 {
    let statistics: Vec<(String, Tensor)> =
        model.named_tensors().into_iter().filter(|(name, _)| name.contains(".running_")).collect();
    assert!(statistics.len() > at_least, "{} running statistics", statistics.len());
    let expected = io.keys().filter(|key| key.starts_with("after_train.")).count();
    assert_eq!(statistics.len(), expected, "every batch norm's statistics are compared");
    let difference =
        |(name, ours): &(String, Tensor)| max_relative_difference(ours, &io[&format!("after_train.{name}")]);
    statistics.iter().map(difference).fold(0.0, f64::max)
}

/// When the train-mode passes seed libtorch's CPU generator, as the
/// fixture's passes did.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Seeding {
    /// Not at all: the passes draw nothing.
    None,
    /// Once, with the fixture's `seed`, before the first pass.
    FromFixture,
    /// Before each pass, with its index (0, 1, 2 for the steps, 3 after).
    EachPass,
}

/// How a family runs its three SGD steps and the pass after them.
pub struct SgdSteps {
    pub seeding: Seeding,
    /// `Some(n)`: the model has batch norm, more than `n` running statistics,
    /// compared after the first step.
    pub statistics_over: Option<usize>,
    /// Whether the loss after the steps comes from a train-mode pass (else eval).
    pub last_pass_train: bool,
}

/// What the SGD steps measured against the fixture.
pub struct StepsMeasured {
    /// The first step's train-mode logits.
    pub train: f64,
    /// The running statistics the first step leaves (`None` without batch norm).
    pub statistics: Option<f64>,
    /// Our losses of the three steps and after them.
    pub losses: Tensor,
    /// Those losses against the fixture's `losses`.
    pub loss_difference: f64,
}

impl SgdSteps {
    /// The losses of three SGD steps (momentum 0.9, the fixture's `lr`) on
    /// the fixture's input through the trainer's own step (`GradientStep`
    /// with the CPU's backprop), and the loss after them; the first step's
    /// train-mode logits and running statistics against the fixture's.
    pub fn run(&self, model: &mut Classifier, io: &Io) -> StepsMeasured {
        let (input, labels) = (&io["input"], &io["labels"]);
        let lr = io["lr"].double_value(&[0]);
        let mut step = GradientStep::new(model.trainable(), tchlab::accel::backprop(Device::Cpu));
        let mut sgd = Sgd::new(&step.params, 0.9, 0.0);
        let loss = |logits: &Tensor| logits.cross_entropy_for_logits(labels);
        let (mut losses, mut train, mut statistics) = (Vec::new(), f64::NAN, None);
        if self.seeding == Seeding::FromFixture {
            tch::manual_seed(io["seed"].int64_value(&[0]));
        }
        for i in 0..3 {
            let mut forward = || {
                self.seed_pass(i);
                model.forward(input, true)
            };
            let outcome = step.step(&mut sgd, &mut forward, &loss, lr).unwrap();
            if i == 0 {
                train = max_relative_difference(&outcome.logits, &io["train_logits"]);
                statistics = self.statistics_over.map(|at_least| running_statistics_difference(model, io, at_least));
            }
            losses.push(outcome.loss);
        }
        self.seed_pass(3);
        losses.push(tch::no_grad(|| loss(&model.forward(input, self.last_pass_train))).double_value(&[]));
        let losses = Tensor::from_slice(&losses);
        let loss_difference = max_relative_difference(&losses, &io["losses"]);
        StepsMeasured { train, statistics, losses, loss_difference }
    }

    fn seed_pass(&self, index: i64) {
        if self.seeding == Seeding::EachPass {
            tch::manual_seed(index);
        }
    }
}

/// One member's measured differences from torchvision, printed and held to
/// [`TOLERANCE`].
pub struct Report<'a> {
    pub name: &'a str,
    /// Eval-mode logits on the fixture's `input`.
    pub eval: f64,
    /// Eval-mode logits on other inputs: (what input, difference).
    pub other_inputs: Vec<(&'static str, f64)>,
    pub steps: StepsMeasured,
    /// Printed after the differences, in parentheses (empty: nothing).
    pub note: String,
}

impl Report<'_> {
    /// Prints the differences, then asserts each within [`TOLERANCE`].
    pub fn print_and_assert(&self, io: &Io) {
        println!("{}", self.line());
        let name = self.name;
        let (eval, steps) = (self.eval, &self.steps);
        assert!(eval <= TOLERANCE, "{name}: eval-mode logits differ by {eval:e}");
        for (input, odd) in &self.other_inputs {
            assert!(*odd <= TOLERANCE, "{name}: eval-mode logits of the {input} differ by {odd:e}");
        }
        let train = steps.train;
        assert!(train <= TOLERANCE, "{name}: train-mode logits differ by {train:e}");
        if let Some(statistics) = steps.statistics {
            assert!(statistics <= TOLERANCE, "{name}: running statistics differ by {statistics:e}");
        }
        let losses = &steps.losses;
        assert!(steps.loss_difference <= TOLERANCE, "{name}: losses {losses} against {}", io["losses"]);
    }

    fn line(&self) -> String {
        let others: Vec<String> = self.other_inputs.iter().map(|(input, d)| format!("{input} {d:.1e}")).collect();
        let others = if others.is_empty() { String::new() } else { format!(" ({})", others.join(", ")) };
        let statistics = self.steps.statistics.map(|s| format!(", running statistics {s:.1e}")).unwrap_or_default();
        let note = if self.note.is_empty() { String::new() } else { format!(" ({})", self.note) };
        format!(
            "{}: max relative difference from torchvision: eval logits {:.1e}{others}, train logits {:.1e}\
             {statistics}, losses of 3 SGD steps and after {:.1e}{note}",
            self.name, self.eval, self.steps.train, self.steps.loss_difference
        )
    }
}

/// The comparisons can fail: `io[key]` is far (100 tolerances) from `io[reference]`.
pub fn assert_apart(name: &str, io: &Io, key: &str, reference: &str) {
    let apart = max_relative_difference(&io[key], &io[reference]);
    assert!(apart > 100.0 * TOLERANCE, "{name}: {key} is within {apart:e} of {reference}");
}

/// The comparisons can fail: the fixture's SGD steps moved its loss.
pub fn assert_steps_move_the_loss(name: &str, io: &Io) {
    let (first, last) = (io["losses"].double_value(&[0]), io["losses"].double_value(&[3]));
    assert!((first - last).abs() > 100.0 * TOLERANCE * first, "{name}: the SGD steps left the loss at {first}");
}

/// One row of `--list-archs`: parameters, features, weights file, present.
pub struct Row {
    pub parameters: i64,
    pub features: i64,
    pub weights: PathBuf,
    pub present: bool,
}

/// `finetune --list-archs` with `models_dir`'s weights: its rows by arch.
pub fn list_archs(models_dir: &Path) -> HashMap<String, Row> {
    // One thread, as it runs beside the other tests.
    let output = run_ok(finetune().args(["--list-archs", "--threads", "1", "--models-dir"]).arg(models_dir));
    let text = stdout(&output);
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["arch", "parameters", "features", "weights", "present"], "{text}");
    lines.map(parse_row).collect()
}

fn parse_row(line: &str) -> (String, Row) {
    let cells: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cells.len(), 5, "{line}");
    let present = match cells[4] {
        "yes" => true,
        "no" => false,
        other => panic!("present: {other}"),
    };
    let parameters = cells[1].replace(',', "").parse().unwrap();
    let row = Row { parameters, features: cells[2].parse().unwrap(), weights: cells[3].into(), present };
    (cells[0].to_owned(), row)
}

/// `--list-archs` with `models_dir`'s weights (one row per arch) against
/// what torchvision `published` of each member (`(arch, builder name)`):
/// parameter count, features, weights file, and the transforms the weights
/// were trained on. Gives the rows, for the family's own checks.
pub fn assert_list_archs_matches(
    published: &Value,
    models_dir: &Path,
    members: &[(Arch, &str)],
) -> HashMap<String, Row> {
    let rows = list_archs(models_dir);
    assert_eq!(rows.len(), <Arch as clap::ValueEnum>::value_variants().len(), "one row per arch");
    for (arch, name) in members {
        let row = &rows[&arch.name()];
        assert_row_matches(*arch, name, row, &published[name]);
        assert_eq!(row.weights, models_dir.join(arch.weights_file()), "{name}");
    }
    rows
}

fn assert_row_matches(arch: Arch, name: &str, row: &Row, reference: &Value) {
    assert_eq!(row.parameters, reference["parameters"].as_i64().unwrap(), "{name}");
    assert_eq!(row.features, arch.feature_count(), "{name}");
    assert_eq!(row.weights.file_name().unwrap().to_str(), reference["file"].as_str(), "{name}");
    // The weights were trained on what these transforms give.
    let preprocessing = arch.preprocessing();
    assert_eq!(reference["resize"], Value::from(vec![preprocessing.resize]), "{name}");
    assert_eq!(reference["crop"], Value::from(vec![preprocessing.crop]), "{name}");
    let interpolation = match preprocessing.interpolation {
        Interpolation::Bilinear => "bilinear",
        Interpolation::Bicubic => "bicubic",
    };
    assert_eq!(reference["interpolation"], interpolation, "{name}");
    assert_eq!(reference["interpolation"], serde_json::to_value(preprocessing.interpolation).unwrap(), "{name}");
    assert_eq!(preprocessing.normalization, Normalization::Imagenet, "{name}");
    let (mean, std) = imagenet_mean_std();
    for c in 0..3 {
        assert!((mean[c] - reference["mean"][c].as_f64().unwrap()).abs() < 1e-6, "{name}: mean {mean:?}");
        assert!((std[c] - reference["std"][c].as_f64().unwrap()).abs() < 1e-6, "{name}: std {std:?}");
    }
}

/// The per-channel mean and std that [`Normalization::Imagenet`] applies,
/// read back from what it makes of black and white.
pub fn imagenet_mean_std() -> ([f64; 3], [f64; 3]) {
    let white = Tensor::ones([1, 3, 1, 1], (Kind::Float, Device::Cpu));
    let (zero, one) = (Normalization::Imagenet.apply(&white.zeros_like()), Normalization::Imagenet.apply(&white));
    let channel = |t: &Tensor, c: usize| t.double_value(&[0, c as i64, 0, 0]);
    let mean = std::array::from_fn(|c| -channel(&zero, c) / (channel(&one, c) - channel(&zero, c)));
    let std = std::array::from_fn(|c| 1.0 / (channel(&one, c) - channel(&zero, c)));
    (mean, std)
}
