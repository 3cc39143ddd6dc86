//! `--device auto|cpu|cuda|cuda:N`: the one argument every binary shares,
//! CUDA detection, the CPU's bf16 instructions, the names devices are shown
//! with, and what the banner says of CUDA. Nothing else in the
//! crate picks a device or reads the CPU's flags.
//!
//! The binaries are not linked against libtorch's CUDA library, whose
//! loading slows every process's start (README, *Start-up and exit*). [`init`] loads
//! it where an NVIDIA driver is installed (a GPU machine still pays for it
//! at start); `cli::run_main` calls it first thing, and [`select`],
//! [`cuda_available`] and [`cuda_count`] call it too. libtorch decides once
//! per process whether CUDA exists, on the first question it is asked about
//! it, so nothing may ask libtorch about CUDA (`tch::Cuda`, or seeding,
//! which seeds CUDA too) before [`init`] has run: library users call it first.

use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::sync::OnceLock;
use tch::Device;

/// The `--device` option, flattened into each binary's arguments.
#[derive(Debug, Clone, clap::Args, serde::Serialize, serde::Deserialize)]
pub struct DeviceArg {
    /// Where tensors live: auto (CUDA when libtorch sees a GPU), cpu, cuda or cuda:N.
    #[arg(help_heading = crate::cli::HOW_IT_RUNS, long, default_value = "auto", value_name = "DEVICE")]
    pub device: String,
}

impl DeviceArg {
    pub fn select(&self) -> Result<Device> {
        select(&self.device)
    }
}

/// A device as users type it: `cpu`, `cuda:0`.
pub fn name(device: Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}").to_ascii_lowercase(),
    }
}

/// Turns a `--device` value into a libtorch device, failing with one clear
/// line when CUDA is asked for but not usable here.
pub fn select(spec: &str) -> Result<Device> {
    let spec = spec.trim().to_ascii_lowercase();
    let cuda_count = cuda_count();
    match spec.as_str() {
        "auto" => Ok(if cuda_available() { Device::Cuda(0) } else { Device::Cpu }),
        "cpu" => Ok(Device::Cpu),
        _ => {
            let index = match spec.strip_prefix("cuda") {
                Some("") => 0,
                Some(rest) => match rest.strip_prefix(':').and_then(|n| n.parse::<usize>().ok()) {
                    Some(n) => n,
                    None => bail!("--device {spec}: expected auto, cpu, cuda or cuda:N"),
                },
                None => bail!("--device {spec}: expected auto, cpu, cuda or cuda:N"),
            };
            if !cuda_available() {
                let why = cuda_missing_reason();
                bail!("--device {spec}: CUDA is not available on this machine ({why}); use --device cpu or auto");
            }
            if index as i64 >= cuda_count {
                bail!("--device {spec}: this machine has {cuda_count} CUDA device(s)");
            }
            Ok(Device::Cuda(index))
        }
    }
}

/// Whether libtorch sees a usable GPU.
pub fn cuda_available() -> bool {
    let _ = init();
    tch::Cuda::is_available()
}

/// How many GPUs libtorch sees.
pub fn cuda_count() -> i64 {
    let _ = init();
    tch::Cuda::device_count()
}

/// Loads libtorch's CUDA library, once, where an NVIDIA driver is
/// installed: the path loaded, `None` without a driver, or why it failed.
pub fn init() -> &'static Result<Option<PathBuf>, String> {
    static LOADED: OnceLock<Result<Option<PathBuf>, String>> = OnceLock::new();
    LOADED.get_or_init(|| match driver_installed() {
        true => load_cuda_library().map(Some).map_err(|err| format!("{err:#}")),
        false => Ok(None),
    })
}

/// Whether the NVIDIA driver's `libcuda.so.1` opens (without it no GPU can
/// be used); it is kept open.
pub fn driver_installed() -> bool {
    // SAFETY: the driver library's initialisers only register it.
    unsafe { libloading::os::unix::Library::open(Some("libcuda.so.1"), libc::RTLD_LAZY) }.map(std::mem::forget).is_ok()
}

/// Loads `libtorch_cuda.so` from [`libtorch_dir`], so that its CUDA kernels
/// and hooks register with the libtorch this process runs; the path loaded.
/// It stays loaded. Public for the test that checks the registration on
/// any machine.
pub fn load_cuda_library() -> Result<PathBuf> {
    let path = libtorch_dir()?.join("libtorch_cuda.so");
    // SAFETY: libtorch_cuda's initialisers register its kernels and hooks
    // with the libtorch already loaded, as when it is linked.
    let library = unsafe { libloading::os::unix::Library::open(Some(&path), libc::RTLD_NOW | libc::RTLD_GLOBAL) }
        .with_context(|| format!("{}: cannot load", path.display()))?;
    std::mem::forget(library);
    Ok(path)
}

/// The folder of the `libtorch_cpu.so` this process has loaded (from
/// `/proc/self/maps`, whose last field is the path, spaces and all).
pub fn libtorch_dir() -> Result<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").context("/proc/self/maps: cannot read")?;
    let library = maps
        .lines()
        .filter_map(|line| line.splitn(6, ' ').nth(5))
        .map(|path| path.trim_start().trim_end_matches(" (deleted)"))
        .find(|path| path.ends_with("/libtorch_cpu.so"))
        .context("libtorch_cpu.so is not loaded")?;
    Ok(std::path::Path::new(library).parent().context("libtorch_cpu.so has no folder")?.to_path_buf())
}

/// Why CUDA cannot be used here, for error messages.
fn cuda_missing_reason() -> String {
    match init() {
        Ok(None) => "no NVIDIA driver: libcuda.so.1 not found".into(),
        Ok(Some(_)) => "libtorch sees no GPU".into(),
        Err(why) => format!("libtorch's CUDA library did not load: {why}"),
    }
}

/// Whether libtorch can use CUDA here, as the banner says it: `true (N
/// device(s))`, `false`, or `false (why)` when its CUDA library did not load.
pub fn cuda_status() -> String {
    match (cuda_available(), init()) {
        (true, _) => format!("true ({} device(s))", cuda_count()),
        (false, Err(why)) => format!("false ({why})"),
        (false, Ok(_)) => "false".into(),
    }
}

/// The version of the libtorch this binary was built against, as its
/// `version.py` says (read by `build.rs`; "unknown" where it found none).
pub fn libtorch_version() -> &'static str {
    env!("TCHLAB_LIBTORCH_VERSION")
}

/// Environment variable that replaces the CPU flags read from
/// `/proc/cpuinfo` (space-separated, as its `flags` line): how tests see
/// what a CPU without bf16 instructions does.
pub const CPU_FLAGS_VAR: &str = "TCHLAB_CPU_FLAGS";

/// The bf16 matrix instructions this machine's CPU has (`amx_bf16`,
/// `avx512_bf16`), in that order; empty where it has none (or the flags
/// cannot be read: then bf16 is not assumed).
pub fn cpu_bf16_instructions() -> Vec<&'static str> {
    let flags = std::env::var(CPU_FLAGS_VAR).unwrap_or_else(|_| cpuinfo_flags().unwrap_or_default());
    bf16_instructions(&flags)
}

/// The bf16 instructions named in a CPU `flags` string.
pub fn bf16_instructions(flags: &str) -> Vec<&'static str> {
    let present: std::collections::BTreeSet<&str> = flags.split_whitespace().collect();
    ["amx_bf16", "avx512_bf16"].into_iter().filter(|flag| present.contains(flag)).collect()
}

/// The `flags` line of the first processor in `/proc/cpuinfo` (Linux).
fn cpuinfo_flags() -> Option<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = cpuinfo.lines().find(|line| line.starts_with("flags"))?;
    Some(line.split_once(':')?.1.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_instructions_are_found_by_whole_flag() {
        assert_eq!(bf16_instructions("fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile"), ["amx_bf16", "avx512_bf16"]);
        assert_eq!(bf16_instructions("fpu avx2 avx512f avx512_bf16x"), Vec::<&str>::new());
        assert!(bf16_instructions("").is_empty());
    }
}
