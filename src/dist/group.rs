//! A process group: this rank's membership of a c10d backend, and the
//! collectives a data-parallel run issues through it (broadcast, bucketed
//! gradient mean, metric sums, all-gather, barrier).
//!
//! Every rank must issue the same collectives in the same order, on tensors
//! of the same sizes and dtypes: gloo ends the process (`std::terminate` in
//! its own thread, not an error) when they differ. Iterate tensors in
//! creation order or by sorted name, never a `HashMap`'s order.

use super::buckets::{buckets, Bucket};
use super::ffi;
use super::launch::Launch;
use anyhow::{bail, Result};
use std::ffi::{c_void, CString};
use std::ptr::NonNull;
use std::time::Duration;
use tch::{Device, Kind, Tensor};
use torch_sys::C_tensor;

/// The default bound on a collective or the rendezvous: torch's (30 minutes).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The default bucket size of [`ProcessGroup::all_reduce_mean_`]: DDP's `bucket_cap_mb=25`.
pub const DEFAULT_BUCKET_BYTES: usize = 25 * 1024 * 1024;

/// Which c10d backend carries the collectives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Gloo: CPU tensors, over TCP. Built on every machine.
    Gloo,
    /// NCCL: CUDA tensors. A shared object opened at run time, built where
    /// `scripts/setup.sh` installed the CUDA header wheels (see `build.rs`).
    Nccl,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Gloo => "gloo",
            Backend::Nccl => "nccl",
        }
    }
}

impl std::str::FromStr for Backend {
    type Err = anyhow::Error;
    fn from_str(text: &str) -> Result<Self> {
        match text {
            "gloo" => Ok(Backend::Gloo),
            "nccl" => Ok(Backend::Nccl),
            other => bail!("{other:?}: not a distributed backend (gloo or nccl)"),
        }
    }
}

/// How a group is joined and how it buckets gradients.
#[derive(Debug, Clone)]
pub struct GroupOptions {
    pub backend: Backend,
    /// The bound on the rendezvous and on each collective: a peer that died
    /// or never came makes the others fail after it, never hang.
    pub timeout: Duration,
    /// The most bytes of gradients flattened into one all-reduce.
    pub bucket_bytes: usize,
    /// Where the group's own tensors live (metric sums, gathers): the CPU
    /// for Gloo, this rank's GPU for NCCL, which it is bound to.
    pub device: Device,
}

impl Default for GroupOptions {
    fn default() -> Self {
        Self {
            backend: Backend::Gloo,
            timeout: DEFAULT_TIMEOUT,
            bucket_bytes: DEFAULT_BUCKET_BYTES,
            device: Device::Cpu,
        }
    }
}

/// This rank's membership of a process group; leaving it (drop) closes the
/// connections. After a collective fails inside c10d (a peer gone, a
/// timeout) the group is broken: drop it and end the run. Arguments it
/// refuses (an undefined tensor, an integer mean) fail before any collective.
pub struct ProcessGroup {
    handle: NonNull<c_void>,
    rank: usize,
    world_size: usize,
    timeout: Duration,
    bucket_bytes: usize,
    device: Device,
}

// SAFETY: the C++ group (a c10d backend and its store) is not tied to the
// thread that made it; `&self` methods are not `Sync`, so calls never overlap.
unsafe impl Send for ProcessGroup {}

impl ProcessGroup {
    /// Joins the group `launch` describes: connects to (or hosts) the store,
    /// then waits for every rank, at most `options.timeout`.
    pub fn join(launch: &Launch, options: &GroupOptions) -> Result<Self> {
        let who = format!("rank {} of {}", launch.rank, launch.world_size);
        let handle = match (options.backend, options.device) {
            (Backend::Gloo, _) => join_gloo(launch, options.timeout),
            (Backend::Nccl, Device::Cuda(index)) => join_nccl(launch, options.timeout, index),
            (Backend::Nccl, other) => {
                bail!("{who}: the nccl backend carries CUDA tensors, not {} ones", crate::device::name(other))
            }
        };
        let handle = handle.map_err(|message| {
            let store = format!("{}:{}", launch.master_addr, launch.master_port);
            anyhow::anyhow!("{who}: cannot join the process group at {store}{}", cause(&message, options.timeout))
        })?;
        Ok(Self {
            handle,
            rank: launch.rank,
            world_size: launch.world_size,
            timeout: options.timeout,
            bucket_bytes: options.bucket_bytes.max(1),
            device: options.device,
        })
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn world_size(&self) -> usize {
        self.world_size
    }

    /// Makes every rank's `tensors` equal to rank `root`'s (in place), in
    /// buckets as [`ProcessGroup::all_reduce_mean_`] does: what DDP does to
    /// parameters and buffers at start.
    pub fn broadcast_(&self, tensors: &[Tensor], root: usize) -> Result<()> {
        if root >= self.world_size {
            bail!("{}: broadcast from rank {root}, which is not in the group", self.who());
        }
        let packed = self.pack(tensors, "broadcast")?;
        let buffers: Vec<&Tensor> = packed.iter().map(Bucket::buffer).collect();
        let root = root as i32;
        self.issue("broadcast", |error, capacity| {
            let pointers = pointers(&buffers);
            // SAFETY: a live group; the pointers are tch tensors that outlive the call.
            unsafe {
                ffi::tchlab_c10d_broadcast(
                    self.handle.as_ptr(),
                    pointers.as_ptr(),
                    pointers.len(),
                    root,
                    error,
                    capacity,
                )
            }
        })?;
        if self.rank != root as usize {
            packed.iter().for_each(Bucket::unpack);
        }
        Ok(())
    }

    /// Replaces each tensor by its mean over the ranks (in place): the
    /// tensors flattened into buckets of at most the group's bucket size in
    /// the given order (each of one dtype and device), each bucket summed by
    /// one all-reduce, divided by the world size and copied back. Callers pass
    /// defined floating-point tensors, the same list on every rank.
    pub fn all_reduce_mean_(&self, tensors: &[Tensor]) -> Result<()> {
        if let Some(index) = tensors.iter().position(|t| t.defined() && !t.is_floating_point()) {
            let kind = tensors[index].kind();
            bail!(
                "{}: all-reduce mean of tensor {index} ({kind:?}): only floating-point tensors are averaged",
                self.who()
            );
        }
        let packed = self.pack(tensors, "all-reduce")?;
        let buffers: Vec<&Tensor> = packed.iter().map(Bucket::buffer).collect();
        self.all_reduce_sum(&buffers)?;
        let world = self.world_size as f64;
        tch::no_grad(|| {
            for bucket in &packed {
                let _ = bucket.buffer().shallow_clone().g_div_scalar_(world);
                bucket.unpack();
            }
        });
        Ok(())
    }

    /// Sums `values` over the ranks (in place): metrics (loss sums, counts).
    pub fn all_reduce_sum_f64(&self, values: &mut [f64]) -> Result<()> {
        if values.is_empty() {
            return Ok(());
        }
        let tensor = Tensor::from_slice(values).to_device(self.device);
        self.all_reduce_sum(&[&tensor])?;
        tensor.to_device(Device::Cpu).copy_data(values, values.len());
        Ok(())
    }

    /// Every rank's `tensor`, in rank order, on `tensor`'s device (the
    /// tensors have the same shape and dtype on every rank): cached features
    /// gathered from shards.
    pub fn all_gather(&self, tensor: &Tensor) -> Result<Vec<Tensor>> {
        check_defined(tensor, &self.who(), "all-gather")?;
        let input = tensor.to_device(self.device).contiguous();
        let outputs: Vec<Tensor> = (0..self.world_size).map(|_| input.empty_like()).collect();
        let output_refs: Vec<&Tensor> = outputs.iter().collect();
        self.issue("all-gather", |error, capacity| {
            let pointers = pointers(&output_refs);
            // SAFETY: a live group; the pointers are tch tensors that outlive the call.
            unsafe {
                ffi::tchlab_c10d_all_gather(
                    self.handle.as_ptr(),
                    input.as_ptr(),
                    pointers.as_ptr(),
                    pointers.len(),
                    error,
                    capacity,
                )
            }
        })?;
        Ok(outputs.into_iter().map(|output| output.to_device(tensor.device())).collect())
    }

    /// Returns when every rank has reached it.
    pub fn barrier(&self) -> Result<()> {
        // SAFETY: a live group.
        self.issue("barrier", |error, capacity| unsafe {
            ffi::tchlab_c10d_barrier(self.handle.as_ptr(), error, capacity)
        })
    }

    /// Leaves the group after a barrier: how a run ends, so that rank 0 (the
    /// store's host) never leaves while a peer still talks to it.
    pub fn finish(self) -> Result<()> {
        self.barrier()
    }

    /// Sums each tensor over the ranks, in place (one collective each, all in flight at once).
    fn all_reduce_sum(&self, tensors: &[&Tensor]) -> Result<()> {
        self.issue("all-reduce", |error, capacity| {
            let pointers = pointers(tensors);
            // SAFETY: a live group; the pointers are tch tensors that outlive the call.
            unsafe {
                ffi::tchlab_c10d_all_reduce_sum(
                    self.handle.as_ptr(),
                    pointers.as_ptr(),
                    pointers.len(),
                    error,
                    capacity,
                )
            }
        })
    }

    /// `tensors` grouped into the buckets one collective each carries.
    fn pack(&self, tensors: &[Tensor], what: &str) -> Result<Vec<Bucket>> {
        let who = self.who();
        tensors.iter().try_for_each(|t| check_defined(t, &who, what))?;
        let sizes: Vec<_> =
            tensors.iter().map(|t| ((t.kind(), t.device()), t.numel() * t.kind().elt_size_in_bytes())).collect();
        Ok(buckets(&sizes, self.bucket_bytes).into_iter().map(|range| Bucket::pack(&tensors[range])).collect())
    }

    /// Runs one shim call, its error as one line naming this rank (and the timeout, when it was one).
    fn issue(&self, what: &str, f: impl FnOnce(*mut std::ffi::c_char, usize) -> std::ffi::c_int) -> Result<()> {
        ffi::call(f)
            .map_err(|message| anyhow::anyhow!("{}: {what} failed{}", self.who(), cause(&message, self.timeout)))
    }

    fn who(&self) -> String {
        format!("rank {} of {}", self.rank, self.world_size)
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: the handle came from a shim's factory and is destroyed once.
        unsafe { ffi::tchlab_c10d_destroy(self.handle.as_ptr()) }
    }
}

/// The Gloo group of `launch`, or the shim's message.
fn join_gloo(launch: &Launch, timeout: Duration) -> std::result::Result<NonNull<c_void>, String> {
    let (host, prefix) = store_address(launch)?;
    let device_host = loopback(&launch.master_addr).map(c_text).transpose()?;
    let mut handle: *mut c_void = std::ptr::null_mut();
    ffi::call(|error, capacity| {
        // SAFETY: the strings outlive the call; `handle` is written on success only.
        unsafe {
            ffi::tchlab_c10d_gloo_new(
                host.as_ptr(),
                launch.master_port,
                launch.rank as i32,
                launch.world_size as i32,
                launch.hosts_store,
                millis(timeout),
                prefix.as_ptr(),
                device_host.as_ref().map_or(std::ptr::null(), |h| h.as_ptr()),
                &mut handle,
                error,
                capacity,
            )
        }
    })?;
    NonNull::new(handle).ok_or_else(|| "the shim returned no group".to_owned())
}

/// The NCCL group of `launch` on CUDA device `device_index`, or why not
/// (this build has no NCCL shim, it does not open, or c10d's message).
fn join_nccl(launch: &Launch, timeout: Duration, device_index: usize) -> std::result::Result<NonNull<c_void>, String> {
    let nccl_new = ffi::nccl_factory()?;
    let (host, prefix) = store_address(launch)?;
    let mut handle: *mut c_void = std::ptr::null_mut();
    ffi::call(|error, capacity| {
        // SAFETY: the strings outlive the call; `handle` is written on success only.
        unsafe {
            nccl_new(
                host.as_ptr(),
                launch.master_port,
                launch.rank as i32,
                launch.world_size as i32,
                launch.hosts_store,
                millis(timeout),
                prefix.as_ptr(),
                device_index as i32,
                &mut handle,
                error,
                capacity,
            )
        }
    })?;
    NonNull::new(handle).ok_or_else(|| "the shim returned no group".to_owned())
}

/// The store's host and this run's key prefix, as C strings.
fn store_address(launch: &Launch) -> std::result::Result<(CString, CString), String> {
    Ok((c_text(&launch.master_addr)?, c_text(&launch.store_prefix())?))
}

fn c_text(text: &str) -> std::result::Result<CString, String> {
    CString::new(text).map_err(|_| format!("{text:?} holds a NUL byte"))
}

fn millis(timeout: Duration) -> i64 {
    timeout.as_millis().min(i64::MAX as u128) as i64
}

/// The address Gloo binds to when every rank is on this machine (the store
/// on a loopback address); `None`: Gloo's default device (this host's name,
/// or `GLOO_SOCKET_IFNAME`).
fn loopback(master_addr: &str) -> Option<&str> {
    if master_addr == "localhost" {
        return Some("127.0.0.1");
    }
    let ip: std::net::IpAddr = master_addr.parse().ok()?;
    ip.is_loopback().then_some(master_addr)
}

/// `: <message>`, saying first what it means when it was a timeout or a peer gone.
fn cause(message: &str, timeout: Duration) -> String {
    let lower = message.to_lowercase();
    if lower.contains("timeout") || lower.contains("timed out") {
        format!(" after the timeout of {} ms (a rank died or never arrived): {message}", timeout.as_millis())
    } else if lower.contains("closed by peer") || lower.contains("reset by peer") {
        format!(" (another rank left or died): {message}")
    } else {
        format!(": {message}")
    }
}

fn check_defined(tensor: &Tensor, who: &str, what: &str) -> Result<()> {
    if !tensor.defined() {
        bail!("{who}: {what} of an undefined tensor (pass only defined tensors, the same list on every rank)");
    }
    if tensor.kind() == Kind::Bool {
        bail!("{who}: {what} of a bool tensor is not supported");
    }
    Ok(())
}

fn pointers(tensors: &[&Tensor]) -> Vec<*const C_tensor> {
    tensors.iter().map(|t| t.as_ptr()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_named() {
        let said = cause("Timed out after 3 seconds waiting for clients. 1/2 clients joined.", Duration::from_secs(3));
        assert_eq!(
            said,
            " after the timeout of 3000 ms (a rank died or never arrived): Timed out after 3 seconds waiting for clients. 1/2 clients joined."
        );
        assert_eq!(
            cause("[pair.cc:547] Connection closed by peer [127.0.0.1]:4", Duration::from_secs(3)),
            " (another rank left or died): [pair.cc:547] Connection closed by peer [127.0.0.1]:4"
        );
        assert_eq!(cause("Invalid scalar type", Duration::from_secs(3)), ": Invalid scalar type");
    }

    #[test]
    fn loopback_stores_bind_gloo_to_loopback() {
        assert_eq!(loopback("127.0.0.1"), Some("127.0.0.1"));
        assert_eq!(loopback("localhost"), Some("127.0.0.1"));
        assert_eq!(loopback("::1"), Some("::1"));
        assert_eq!(loopback("node01"), None);
        assert_eq!(loopback("10.1.2.3"), None);
    }

    #[test]
    fn backend_names() {
        assert_eq!("gloo".parse::<Backend>().unwrap(), Backend::Gloo);
        assert_eq!("nccl".parse::<Backend>().unwrap().name(), "nccl");
        assert_eq!(
            "mpi".parse::<Backend>().unwrap_err().to_string(),
            "\"mpi\": not a distributed backend (gloo or nccl)"
        );
    }

    /// Rank 0 of 1, its store on 127.0.0.1:`port`.
    fn alone_at(port: &str) -> Launch {
        let vars = [("RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", port)];
        let value = |name: &str| vars.iter().find(|(key, _)| *key == name).map(|(_, value)| value.to_string());
        Launch::from_vars(value).unwrap().unwrap()
    }

    /// A world-1 NCCL group on this machine's first GPU, through a store at a free port.
    fn join_nccl_alone() -> Result<ProcessGroup> {
        let launch = alone_at(&crate::dist::free_port()?.to_string());
        let options = GroupOptions {
            backend: Backend::Nccl,
            timeout: Duration::from_secs(20),
            device: Device::Cuda(0),
            ..GroupOptions::default()
        };
        ProcessGroup::join(&launch, &options)
    }

    /// The NCCL shim opens and makes a group where there is a GPU, and gives
    /// c10d's own error where there is none (this build machine).
    #[cfg(tchlab_nccl)]
    #[test]
    fn the_nccl_factory_opens_and_needs_a_gpu() {
        if crate::device::cuda_available() {
            let group = join_nccl_alone().unwrap();
            let mut values = [1.5, 2.0];
            group.all_reduce_sum_f64(&mut values).unwrap();
            assert_eq!(values, [1.5, 2.0]);
            group.finish().unwrap();
        } else {
            let error = join_nccl_alone().err().unwrap().to_string();
            assert!(error.starts_with("rank 0 of 1: cannot join the process group at 127.0.0.1:"), "{error}");
            assert!(error.contains("ProcessGroupNCCL is only supported with GPUs, no GPUs found"), "{error}");
        }
    }

    #[cfg(not(tchlab_nccl))]
    #[test]
    fn a_build_without_the_nccl_shim_says_how_to_get_it() {
        let error = join_nccl_alone().err().unwrap().to_string();
        assert!(error.contains("this build has no nccl backend"), "{error}");
    }

    #[test]
    fn nccl_carries_cuda_tensors_only() {
        let options = GroupOptions { backend: Backend::Nccl, ..GroupOptions::default() };
        let error = ProcessGroup::join(&alone_at("29999"), &options).err().unwrap().to_string();
        assert_eq!(error, "rank 0 of 1: the nccl backend carries CUDA tensors, not cpu ones");
    }
}
