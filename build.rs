//! Links libtorch so that its CUDA library is loaded whenever it exists.
//!
//! `torch-sys` tells us where libtorch lives (`DEP_TCH_LIBTORCH_LIB`). We embed
//! that directory as an rpath, so the binaries run without LD_LIBRARY_PATH, and
//! force-link `libtorch` with `--no-as-needed`: otherwise the linker drops it
//! (no symbol is used directly) and CUDA is never seen at run time.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if let Ok(lib_dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath={lib_dir}");
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-Wl,-ltorch");
    }
}
