//! `--device auto|cpu|cuda|cuda:N`: parsing, CUDA detection, and the banner
//! every binary prints at start. Nothing else in the crate picks a device.

use anyhow::{bail, Result};
use tch::Device;

/// Turns a `--device` value into a libtorch device, failing with one clear
/// line when CUDA is asked for but not usable here.
pub fn select(spec: &str) -> Result<Device> {
    let spec = spec.trim().to_ascii_lowercase();
    let cuda_count = tch::Cuda::device_count();
    match spec.as_str() {
        "auto" => Ok(if tch::Cuda::is_available() { Device::Cuda(0) } else { Device::Cpu }),
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
            if !tch::Cuda::is_available() {
                bail!("--device {spec}: CUDA is not available on this machine (libtorch sees no GPU); use --device cpu or auto");
            }
            if index as i64 >= cuda_count {
                bail!("--device {spec}: this machine has {cuda_count} CUDA device(s)");
            }
            Ok(Device::Cuda(index))
        }
    }
}

/// One line naming the device and the libtorch build, printed at start.
pub fn banner(device: Device) -> String {
    let torch = libtorch_version();
    match device {
        Device::Cpu => format!(
            "device: cpu ({} threads) | libtorch {torch} | CUDA available: {}",
            tch::get_num_threads(),
            tch::Cuda::is_available()
        ),
        Device::Cuda(i) => format!("device: cuda:{i} | libtorch {torch} | CUDA devices: {}", tch::Cuda::device_count()),
        other => format!("device: {other:?} | libtorch {torch}"),
    }
}

/// The libtorch version this binary was built against (from torch-sys).
pub fn libtorch_version() -> &'static str {
    "2.11.0"
}
