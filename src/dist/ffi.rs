//! The C entry points of `csrc/c10d.cpp` (compiled by `build.rs`) and the
//! one way they are called: with an error buffer, turning -1 into its message.

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
