//! libtorch's CUDA library is loaded at run time, not linked (`device`): on
//! a machine without an NVIDIA driver it is never loaded, and once loaded
//! by hand its CUDA hooks are the ones libtorch answers with, so on a GPU
//! machine `--device cuda` would find them. One test: the process's
//! libraries are its state.

fn cuda_library_mapped() -> bool {
    std::fs::read_to_string("/proc/self/maps").unwrap().contains("/libtorch_cuda.so")
}

#[test]
fn the_cuda_library_is_loaded_only_with_a_driver_and_then_registers_its_hooks() {
    assert!(!cuda_library_mapped(), "libtorch_cuda.so is linked into the test binary");
    let driver = tchlab::device::driver_installed();
    let loaded = tchlab::device::init().clone().unwrap();
    assert_eq!(loaded.is_some(), driver);
    assert_eq!(cuda_library_mapped(), driver, "mapped without a driver, or not with one");
    if !tchlab::device::libtorch_dir().unwrap().join("libtorch_cuda.so").exists() {
        return; // A CPU-only libtorch: nothing to load.
    }
    // Loaded by hand where there is no driver, before anything asks libtorch about CUDA.
    let loaded = loaded.unwrap_or_else(|| tchlab::device::load_cuda_library().unwrap());
    assert!(cuda_library_mapped());
    assert_eq!(loaded.file_name().unwrap(), "libtorch_cuda.so");
    // cuSOLVER support is answered by the CUDA hooks alone, GPU or not: the
    // placeholder hooks libtorch keeps when asked before the load say no.
    assert!(tch::utils::has_cusolver(), "CUDA hooks not registered after loading {}", loaded.display());
    let device = tchlab::device::select("auto").unwrap();
    assert_eq!(device == tch::Device::Cpu, !tch::Cuda::is_available());
}
