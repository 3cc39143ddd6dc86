//! libtorch's CUDA library is loaded at run time, not linked (`device`): on
//! a machine without an NVIDIA driver it is never loaded, and once loaded
//! by hand its CUDA hooks are the ones libtorch answers with, so on a GPU
//! machine `--device cuda` would find them. One test: the process's
//! libraries are its state.

fn mapped_library(name: &str) -> Option<std::path::PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines().filter_map(|line| line.split_whitespace().nth(5)).find(|path| path.ends_with(name)).map(Into::into)
}

fn cuda_library_mapped() -> bool {
    mapped_library("/libtorch_cuda.so").is_some()
}

#[test]
fn the_cuda_library_is_loaded_only_with_a_driver_and_then_registers_its_hooks() {
    assert!(!cuda_library_mapped(), "libtorch_cuda.so is linked into the test binary");
    let device = tchlab::device::select("auto").unwrap();
    let driver = std::path::Path::new("/proc/driver/nvidia").exists();
    if !driver {
        assert_eq!(device, tch::Device::Cpu);
        assert!(!cuda_library_mapped(), "loaded without a driver");
    }
    let cpu_library = mapped_library("/libtorch_cpu.so").expect("libtorch_cpu.so is not loaded");
    if !cpu_library.with_file_name("libtorch_cuda.so").exists() {
        return; // A CPU-only libtorch: nothing to load.
    }
    let loaded = tchlab::device::load_cuda_library().unwrap();
    assert!(cuda_library_mapped());
    assert_eq!(loaded.file_name().unwrap(), "libtorch_cuda.so");
    // cuSOLVER support is answered by the CUDA hooks alone, GPU or not: the
    // placeholder hooks libtorch keeps when asked before the load say no.
    assert!(tch::utils::has_cusolver(), "CUDA hooks not registered after loading {}", loaded.display());
}
