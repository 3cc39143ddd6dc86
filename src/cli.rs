//! What every binary does around its real work: libtorch's CUDA library
//! loaded before anything else (`device::init`), a closed stdout ending the
//! printing but not the run (`… | head`), one-line errors
//! (a backtrace only when `RUST_BACKTRACE` is set), panics reported the same
//! way, exit codes (1 for errors, 2 for options out of range, 130 after
//! Ctrl-C) and Ctrl-C connected to an
//! [`Interrupt`] (or counted, for a process that passes it on to children).
//! The process ends without running C++ static destructors (`exit_now`).

use crate::interrupt::{Interrupt, Interrupted};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Exit status after an interruption by Ctrl-C (128 + SIGINT), as shells use.
pub const EXIT_INTERRUPTED: i32 = 130;
/// Exit status of a usage error: an option out of its range, as clap's own
/// checks exit in every tool.
pub const EXIT_USAGE: i32 = 2;

/// Runs `main_body`, printing any error as one line and exiting non-zero.
pub fn run_main(main_body: impl FnOnce() -> anyhow::Result<()>) {
    crate::device::init();
    // SIGPIPE stays ignored (Rust's runtime does so): output goes through
    // `report::Terminal`, which stops writing to a closed pipe and lets the
    // run finish and save (`finetune … | head`).
    let verbose = std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0");
    if !verbose {
        std::panic::set_hook(Box::new(|info| {
            let message = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied())
                .unwrap_or("internal error");
            let first_line = message.lines().next().unwrap_or(message);
            crate::say_err!("error: {first_line} (set RUST_BACKTRACE=1 for details)");
        }));
    }
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(main_body));
    match outcome {
        Ok(Ok(())) => exit_now(0),
        Ok(Err(err)) => {
            if verbose {
                crate::say_err!("error: {err:?}");
            } else {
                crate::say_err!("error: {err:#}");
            }
            let interrupted = err.downcast_ref::<Interrupted>().is_some();
            let bad_value = err.chain().any(|e| e.is::<options_file::BadValue>());
            exit_now(match (interrupted, bad_value) {
                (true, _) => EXIT_INTERRUPTED,
                (_, true) => EXIT_USAGE,
                _ => 1,
            });
        }
        Err(_) => exit_now(101),
    }
}

/// The command line as `T`; `--help`, `--version` and usage errors print as
/// `clap` prints them, then end like every other exit (`exit_now`).
pub fn parse_args<T: clap::Parser>() -> T {
    T::try_parse().unwrap_or_else(|err| exit_after(&err))
}

/// The command line's matches for `T`, ending like [`parse_args`] on help or a
/// usage error (for binaries that also ask where each value came from).
pub fn matches<T: clap::CommandFactory>() -> clap::ArgMatches {
    T::command().try_get_matches().unwrap_or_else(|err| exit_after(&err))
}

fn exit_after(err: &clap::Error) -> ! {
    let _ = err.print();
    exit_now(err.exit_code())
}

/// The options of a training tool about its run folder and threads,
/// flattened into its arguments (not saved with the run: they say how this
/// process carries it out).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct RunArgs {
    /// Replace the run in --out (once this one has saved its first epoch) [default: refuse a folder holding a run].
    #[arg(help_heading = HOW_IT_RUNS, long)]
    pub overwrite: bool,
    /// Continue the stopped run in DIR with its own options (only --threads and --device may be given with it) [default: a new run].
    #[arg(help_heading = HOW_IT_RUNS, long, value_name = "DIR")]
    pub resume: Option<std::path::PathBuf>,
    /// libtorch's compute threads [default: libtorch's choice, one per core].
    #[arg(help_heading = HOW_IT_RUNS, long, value_name = "N", value_parser = parse::at_least_one, allow_negative_numbers = true)]
    pub threads: Option<usize>,
    /// Options from a TOML file, keys as the flags are named (a run's run.toml runs it again); flags given here win [default: none: the flags and their defaults].
    #[arg(help_heading = HOW_IT_RUNS, long, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
}

/// `--threads` for the commands that use a model rather than train one
/// (`finetune predict|eval`, `eigenfaces project`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ThreadsArg {
    /// libtorch's compute threads [default: libtorch's choice, one per core].
    #[arg(help_heading = HOW_IT_RUNS, long, value_name = "N", value_parser = parse::at_least_one, allow_negative_numbers = true)]
    pub threads: Option<usize>,
}

impl ThreadsArg {
    /// Sets the process's threads by the one policy, [`apply_threads`].
    pub fn apply(&self) {
        apply_threads(self.threads);
    }
}

/// The thread policy of every tool: `threads` compute threads (libtorch's
/// choice, one per core, when `None`) and the helper pools sized to the
/// cores (`accel::init_threads`, which warns when a pool cannot be set).
pub fn apply_threads(threads: Option<usize>) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    crate::accel::init_threads(threads, cores, &crate::report::Terminal);
}

/// `--seed`, flattened into the options of every tool that draws at random.
/// It is saved as its number (`transparent`), so that a field `seed:
/// SeedArg` keeps the key `seed = N` in run.toml, saved configs and sweep
/// files (and a bad value's error names that key).
#[derive(clap::Args, Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct SeedArg {
    /// Seeds everything the tool draws at random (initialisation, splits, order): the same seed gives the same results on the CPU.
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = parse::seed, allow_negative_numbers = true)]
    pub seed: u64,
}

/// The line every tool prints first, on stderr (out of the output that
/// scripts read): the tool and version, device, compute threads, libtorch
/// version, whether CUDA is usable, and the run's seed and folder where it
/// has them. Printed once the threads are set and the folder is chosen.
pub struct Banner<'a> {
    /// The tool as typed: `mnist mlp`, `finetune predict`.
    pub tool: &'a str,
    pub device: tch::Device,
    pub seed: Option<u64>,
    pub out: Option<&'a std::path::Path>,
}

impl Banner<'_> {
    /// `mnist mlp 0.1.0 | device: cpu | threads: 2 | libtorch 2.11.0 | CUDA available: false | seed: 0 | out: runs/mnist-mlp`
    pub fn line(&self) -> String {
        let mut fields = vec![
            format!("{} {}", self.tool, env!("CARGO_PKG_VERSION")),
            format!("device: {}", crate::device::name(self.device)),
            format!("threads: {}", tch::get_num_threads()),
            format!("libtorch {}", crate::device::libtorch_version()),
            format!("CUDA available: {}", crate::device::cuda_status()),
        ];
        fields.extend(self.seed.map(|seed| format!("seed: {seed}")));
        fields.extend(self.out.map(|out| format!("out: {}", out.display())));
        fields.join(" | ")
    }

    pub fn print(&self) {
        crate::say_err!("{}", self.line());
    }
}

/// The `--help` heading of the options that say how a run is carried out,
/// not what it is. It is the one definition of the recipe: an option under
/// it is never compared between a run and a sweep point nor shown as a
/// report column, and (but for the run folder's own options) may be given
/// beside `--resume`; every other option is the recipe.
pub const HOW_IT_RUNS: &str = "How the run is carried out";

/// Options about the run folder itself, which `--resume DIR` replaces.
const RUN_FOLDER: &[&str] = &["out", "overwrite", "resume", "config"];

/// The ids of the options of `A` listed under [`HOW_IT_RUNS`].
pub fn how_it_runs<A: clap::Args>() -> std::collections::BTreeSet<String> {
    A::augment_args(clap::Command::new("options"))
        .get_arguments()
        .filter(|arg| arg.get_help_heading() == Some(HOW_IT_RUNS))
        .map(|arg| arg.get_id().to_string())
        .collect()
}

/// The options of `A` that may be given beside `--resume`: how the run is
/// carried out, but not where it is.
pub fn resumable<A: clap::Args>() -> std::collections::BTreeSet<String> {
    how_it_runs::<A>().into_iter().filter(|id| !RUN_FOLDER.contains(&id.as_str())).collect()
}

/// The ids of the options given on the command line to the subcommand of
/// `T` that `matches` holds (arguments only: clap's groups are left out).
pub fn given_to_subcommand<T: clap::CommandFactory>(matches: &clap::ArgMatches) -> std::collections::BTreeSet<String> {
    let Some((name, sub_matches)) = matches.subcommand() else { return Default::default() };
    let command = T::command();
    let Some(sub) = command.find_subcommand(name) else { return Default::default() };
    sub.get_arguments()
        .map(|arg| arg.get_id().to_string())
        .filter(|id| sub_matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine))
        .collect()
}

/// The options saved with the run of `tool` in `dir`, for `--resume DIR`:
/// the run keeps its own recipe, so an option given beside it that is not
/// in `allowed` is refused in one line, and so is another tool's run.
pub fn resumed_options<T: serde::de::DeserializeOwned>(
    dir: &std::path::Path,
    tool: &str,
    given: &std::collections::BTreeSet<String>,
    allowed: &std::collections::BTreeSet<String>,
) -> anyhow::Result<T> {
    let refused = given.iter().find(|id| id.as_str() != "resume" && !allowed.contains(id.as_str()));
    if let Some(refused) = refused {
        let allowed: Vec<String> = allowed.iter().map(|id| format!("--{}", id.replace('_', "-"))).collect();
        anyhow::bail!(
            "--resume continues the run's own recipe: --{} cannot be given with it (allowed: {}); start a new run with --out to change it",
            refused.replace('_', "-"),
            if allowed.is_empty() { "none".to_owned() } else { allowed.join(", ") }
        );
    }
    let json = crate::run_dir::saved_config(dir)?;
    let saved_by = crate::run_dir::saved_tool(dir)?;
    if saved_by.as_deref() != Some(tool) {
        let other = saved_by.unwrap_or_else(|| "finetune".into());
        anyhow::bail!(
            "{}: a run of `{other}`, not of `{tool}`; resume it with: {other} --resume {}",
            dir.display(),
            dir.display()
        );
    }
    serde_json::from_str(&json).map_err(|e| anyhow::anyhow!("{}: the saved options do not parse: {e}", dir.display()))
}

/// Flushes Rust's and C's standard streams, then ends the process with `code`
/// at once. Everything the run owns was dropped when `main_body` returned, so
/// what is skipped is C++ teardown at exit: libtorch unregistering each of its
/// operators, memory and threads the kernel reclaims anyway (see README,
/// "Start-up and exit"). Tools that write at exit, such as coverage
/// counters, need the full exit: `TCHLAB_FULL_EXIT=1` restores it.
fn exit_now(code: i32) -> ! {
    use std::io::Write;
    if std::env::var_os("TCHLAB_FULL_EXIT").is_some_and(|v| !v.is_empty() && v != "0") {
        std::process::exit(code);
    }
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: plain libc calls on no Rust-owned state: `fflush(NULL)`
    // flushes every C stream, `_exit` ends the process.
    unsafe {
        libc::fflush(std::ptr::null_mut());
        libc::_exit(code)
    }
}

/// Connects Ctrl-C to `interrupt`: the first press requests a stop (the work
/// stops at its next safe point), a second press exits at once.
pub fn stop_on_ctrl_c(interrupt: &Interrupt) {
    let interrupt = interrupt.clone();
    let installed = ctrlc::set_handler(move || {
        if interrupt.request() {
            crate::say_err!("\nsecond Ctrl-C: exiting now");
            // At once: no flush, which could wait forever on a stdout lock
            // the main thread holds, and no libtorch teardown under the
            // feet of a thread still inside a libtorch call.
            // SAFETY: `_exit` ends the process; nothing is left to uphold.
            unsafe { libc::_exit(EXIT_INTERRUPTED) }
        }
        crate::say_err!("\nCtrl-C: stopping at the next safe point (press again to exit now)");
    });
    warn_without_handler(installed);
}

/// Says so when Ctrl-C could not be connected: it then ends the run at
/// once, without the safe stop.
fn warn_without_handler(installed: Result<(), ctrlc::Error>) {
    if let Err(error) = installed {
        crate::say_err!("warning: Ctrl-C ends this run at once (no safe stop): cannot install its handler: {error}");
    }
}

/// Connects Ctrl-C to a count of presses, for a process that passes each one
/// on to child processes of its own (`finetune sweep`): it never exits by
/// itself, so that no child is left behind.
pub fn count_ctrl_c() -> Arc<AtomicUsize> {
    let presses = Arc::new(AtomicUsize::new(0));
    let counter = presses.clone();
    let installed = ctrlc::set_handler(move || {
        if counter.fetch_add(1, Ordering::SeqCst) == 0 {
            crate::say_err!("\nCtrl-C: the runs stop at their next safe point (press again to stop them at once)");
        } else {
            crate::say_err!("\nCtrl-C again: the runs stop at once");
        }
    });
    warn_without_handler(installed);
    presses
}

pub mod data_parallel;
pub mod options_file;

pub mod parse {
    //! clap `value_parser`s for the binaries' numeric options: each checks
    //! its value while parsing and says in one line what is wrong. Options
    //! using them take negative numbers as values (`allow_negative_numbers`)
    //! so that `--lr -0.01` gets that line rather than clap's "unexpected
    //! argument".

    /// A count: a whole number of at least 1.
    pub fn at_least_one(s: &str) -> Result<usize, String> {
        match s.trim().parse::<i128>() {
            Ok(n) if n < 1 => Err("must be at least 1".into()),
            Ok(n) => usize::try_from(n).map_err(|_| "too large".into()),
            Err(_) => Err("expected a whole number of at least 1".into()),
        }
    }

    /// A whole number from 1 to `max`.
    fn up_to(s: &str, max: usize) -> Result<usize, String> {
        match at_least_one(s)? {
            n if n > max => Err(format!("at most {max}")),
            n => Ok(n),
        }
    }

    /// Beam search's hypotheses per image: 1 to 100.
    pub fn beam_width(s: &str) -> Result<usize, String> {
        up_to(s, 100)
    }

    /// Attention heads or decoder layers: 1 to 64.
    pub fn layer_count(s: &str) -> Result<i64, String> {
        up_to(s, 64).map(|n| n as i64)
    }

    /// A hidden-layer width: a whole number of at least 1.
    pub fn hidden_size(s: &str) -> Result<i64, String> {
        let n = at_least_one(s).map_err(|e| format!("hidden sizes: {e}"))?;
        i64::try_from(n).map_err(|_| "too large".into())
    }

    /// The side of the square image a backbone sees: 32 to 1024 pixels.
    pub fn image_side(s: &str) -> Result<i64, String> {
        match at_least_one(s) {
            Ok(n) if (32..=1024).contains(&n) => Ok(n as i64),
            _ => Err("expected a side in pixels from 32 to 1024".into()),
        }
    }

    pub fn learning_rate(s: &str) -> Result<f64, String> {
        match s.trim().parse::<f64>() {
            Ok(x) if x > 0.0 && x.is_finite() => Ok(x),
            Ok(_) => Err("the learning rate must be a finite number greater than 0".into()),
            Err(_) => Err("expected a number such as 1e-3".into()),
        }
    }

    /// A dropout rate: at least 0, below 1.
    pub fn dropout_rate(s: &str) -> Result<f64, String> {
        match s.trim().parse::<f64>() {
            Ok(x) if (0.0..1.0).contains(&x) => Ok(x),
            Ok(_) => Err("must be in [0, 1): the fraction of activations dropped while training".into()),
            Err(_) => Err("expected a number in [0, 1), such as 0.1".into()),
        }
    }

    pub fn decay_factor(s: &str) -> Result<f64, String> {
        match s.trim().parse::<f64>() {
            Ok(x) if x > 0.0 && x <= 1.0 => Ok(x),
            Ok(_) => Err("must be in (0, 1]: the learning rate is multiplied by it after every epoch".into()),
            Err(_) => Err("expected a number in (0, 1], such as 0.9".into()),
        }
    }

    /// A regulariser's weight: a finite number of at least 0.
    pub fn non_negative(s: &str) -> Result<f64, String> {
        match s.trim().parse::<f64>() {
            Ok(x) if x >= 0.0 && x.is_finite() => Ok(x),
            Ok(_) => Err("must be a finite number of at least 0".into()),
            Err(_) => Err("expected a number such as 1.0".into()),
        }
    }

    /// A seed: 0 to `i64::MAX` (libtorch's seed is an i64, and run.toml's
    /// TOML integers are).
    pub fn seed(s: &str) -> Result<u64, String> {
        let range = || format!("expected a whole number from 0 to {}", i64::MAX);
        let n = s.trim().parse::<u64>().map_err(|_| range())?;
        if n > i64::MAX as u64 {
            return Err(range());
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// The options of each training tool with `seed = 3` from a file, as
    /// they are saved with a run.
    fn saved_with_seed_3() -> Vec<(&'static str, Value)> {
        let table: toml::Table = toml::from_str("seed = 3").unwrap();
        let finetune = crate::finetune::options::TrainOptions::defaults().with_table(&table, &Default::default(), "f");
        let mlp: crate::mnist::options::MlpArgs = options_file::from_table("mnist mlp", &table, "m").unwrap();
        let cnn: crate::mnist::options::CnnArgs = options_file::from_table("mnist cnn", &table, "c").unwrap();
        let caption: crate::caption::options::TrainArgs =
            options_file::from_table("caption train", &table, "t").unwrap();
        vec![
            ("finetune", serde_json::to_value(finetune.unwrap()).unwrap()),
            ("mnist mlp", serde_json::to_value(mlp).unwrap()),
            ("mnist cnn", serde_json::to_value(cnn).unwrap()),
            ("caption train", serde_json::to_value(caption).unwrap()),
        ]
    }

    #[test]
    fn the_shared_seed_is_saved_as_seed_n_and_read_back() {
        for (tool, saved) in saved_with_seed_3() {
            assert_eq!(saved["seed"], json!(3), "{tool}: {saved}");
            let run_toml = crate::run_dir::options_toml(tool, &saved).unwrap();
            assert!(run_toml.lines().any(|line| line == "seed = 3"), "{tool}: {run_toml}");
        }
        let back: crate::mnist::options::MlpArgs = serde_json::from_value(saved_with_seed_3()[1].1.clone()).unwrap();
        assert_eq!(back.common.seed, SeedArg { seed: 3 });
    }

    #[test]
    fn every_banner_has_the_same_fields_in_the_same_order() {
        let out = std::path::Path::new("/runs/x");
        let run = Banner { tool: "mnist mlp", device: tch::Device::Cpu, seed: Some(7), out: Some(out) }.line();
        let fields: Vec<&str> = run.split(" | ").collect();
        assert_eq!(fields[0], format!("mnist mlp {}", env!("CARGO_PKG_VERSION")), "{run}");
        let names: Vec<&str> = fields[1..].iter().map(|f| f.split([':', ' ']).next().unwrap()).collect();
        assert_eq!(names, ["device", "threads", "libtorch", "CUDA", "seed", "out"], "{run}");
        assert!(run.ends_with(" | seed: 7 | out: /runs/x"), "{run}");
        let predict = Banner { tool: "finetune predict", device: tch::Device::Cpu, seed: None, out: None }.line();
        assert_eq!(predict.split(" | ").skip(1).collect::<Vec<_>>(), fields[1..5], "{predict}");
    }

    #[test]
    fn a_seed_is_a_whole_number_from_0_to_the_largest_i64() {
        assert_eq!(parse::seed(" 9223372036854775807"), Ok(i64::MAX as u64));
        for bad in ["-1", "9223372036854775808", "1.5", ""] {
            assert!(parse::seed(bad).unwrap_err().starts_with("expected a whole number from 0 to"), "{bad}");
        }
    }
}
