//! The C entry points of `csrc/c10d.cpp` (compiled by `build.rs`), the NCCL
//! factory of `csrc/c10d_nccl.cpp` (a shared object opened at run time), and
//! the one way they are called: with an error buffer, turning -1 into its
//! message.

use std::ffi::{c_char, c_int, c_void, CStr};
use torch_sys::C_tensor;

extern "C" {
    #[allow(clippy::too_many_arguments)] // the C signature
    pub fn tchlab_c10d_gloo_new(
        store_host: *const c_char,
        port: u16,
        rank: c_int,
        world_size: c_int,
        is_store_server: bool,
        timeout_ms: i64,
        prefix: *const c_char,
        device_host: *const c_char,
        group: *mut *mut c_void,
        error: *mut c_char,
        capacity: usize,
    ) -> c_int;
    pub fn tchlab_c10d_all_reduce_sum(
        group: *mut c_void,
        tensors: *const *const C_tensor,
        count: usize,
        error: *mut c_char,
        capacity: usize,
    ) -> c_int;
    pub fn tchlab_c10d_broadcast(
        group: *mut c_void,
        tensors: *const *const C_tensor,
        count: usize,
        root: c_int,
        error: *mut c_char,
        capacity: usize,
    ) -> c_int;
    pub fn tchlab_c10d_all_gather(
        group: *mut c_void,
        input: *const C_tensor,
        outputs: *const *const C_tensor,
        count: usize,
        error: *mut c_char,
        capacity: usize,
    ) -> c_int;
    pub fn tchlab_c10d_barrier(group: *mut c_void, error: *mut c_char, capacity: usize) -> c_int;
    pub fn tchlab_c10d_destroy(group: *mut c_void);
}

/// `tchlab_c10d_nccl_new`: as `tchlab_c10d_gloo_new`, with the CUDA device
/// index the group is bound to in place of Gloo's address.
pub type NcclNew = unsafe extern "C" fn(
    store_host: *const c_char,
    port: u16,
    rank: c_int,
    world_size: c_int,
    is_store_server: bool,
    timeout_ms: i64,
    prefix: *const c_char,
    device_index: c_int,
    group: *mut *mut c_void,
    error: *mut c_char,
    capacity: usize,
) -> c_int;

/// The NCCL factory, from the shared object `build.rs` made, opened once
/// (after `device::init`, so that libtorch's CUDA library is the one this
/// process registered); why not, in one line, when it cannot be had.
pub fn nccl_factory() -> Result<NcclNew, String> {
    static FACTORY: std::sync::OnceLock<Result<NcclNew, String>> = std::sync::OnceLock::new();
    FACTORY
        .get_or_init(|| {
            let _ = crate::device::init();
            let path = nccl_shim_path()?;
            // SAFETY: the object's initialisers are libtorch_cuda's and NCCL's,
            // which register with the libtorch this process runs; it stays open.
            let library = unsafe { libloading::Library::new(&path) }
                .map_err(|e| format!("{}: cannot open the nccl shim: {e}", path.display()))?;
            // SAFETY: the symbol is csrc/c10d_nccl.cpp's, with NcclNew's signature.
            let factory = unsafe { library.get::<NcclNew>(b"tchlab_c10d_nccl_new\0") }
                .map(|symbol| *symbol)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            std::mem::forget(library);
            Ok(factory)
        })
        .clone()
}

/// Where the NCCL shim of this build is: `$TCHLAB_NCCL_SHIM` when set (binaries
/// copied elsewhere), else `TCHLAB_C10D_NCCL_SO` (a path from the profile
/// folder) beside the running binary, which sits in that folder or one below
/// it (`deps/` for tests).
#[cfg(tchlab_nccl)]
fn nccl_shim_path() -> Result<std::path::PathBuf, String> {
    if let Some(path) = std::env::var_os("TCHLAB_NCCL_SHIM") {
        return Ok(path.into());
    }
    let from_profile = std::path::Path::new(env!("TCHLAB_C10D_NCCL_SO"));
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the running binary: {e}"))?;
    exe.ancestors()
        .skip(1)
        .take(2)
        .map(|folder| folder.join(from_profile))
        .find(|path| path.is_file())
        .ok_or_else(|| format!("the nccl shim {} is missing beside {}", from_profile.display(), exe.display()))
}

#[cfg(not(tchlab_nccl))]
fn nccl_shim_path() -> Result<std::path::PathBuf, String> {
    Err("this build has no nccl backend (the CUDA header wheels were not installed when it was built: \
         run bash scripts/setup.sh, then cargo build --release)"
        .into())
}

/// Room for c10d's message (they can name a file, a peer and a timeout).
const ERROR_CAPACITY: usize = 2048;

/// Calls a shim function with an error buffer; its message, on one line, when it returns -1.
pub fn call(f: impl FnOnce(*mut c_char, usize) -> c_int) -> Result<(), String> {
    let mut buffer = vec![0 as c_char; ERROR_CAPACITY];
    if f(buffer.as_mut_ptr(), buffer.len()) == 0 {
        return Ok(());
    }
    // SAFETY: the shim always writes a NUL-terminated message within the
    // capacity it was given (and the buffer starts zeroed).
    let message = unsafe { CStr::from_ptr(buffer.as_ptr()) }.to_string_lossy();
    Err(one_line(&message))
}

/// A C++ message (which may span lines) as one line.
fn one_line(message: &str) -> String {
    let joined = message.split_whitespace().collect::<Vec<_>>().join(" ");
    if joined.is_empty() {
        "no message".into()
    } else {
        joined
    }
}
