//! Points the binaries at libtorch, records which libtorch that is (and
//! where the OpenBLAS wheel beside it would be), and compiles the autocast shim
//! (`csrc/autocast.cpp`, see `src/autocast.rs`) and the c10d shims
//! (`csrc/c10d.cpp`, and where the CUDA header wheels are installed the
//! NCCL shared object `csrc/c10d_nccl.cpp`; see `src/dist`) against its headers.
//!
//! `torch-sys` tells us where libtorch lives (`DEP_TCH_LIBTORCH_LIB`). We embed
//! that directory as an rpath, so the binaries run without LD_LIBRARY_PATH.
//! The linker drops `libtorch_cuda` (no symbol of it is used): `device`
//! loads it at run time where a GPU driver is installed. The version comes
//! from the torch package's `version.py` beside `lib/`.
//!
//! It also decides the test tier: with the datasets and weights that
//! `scripts/prepare.sh` fetches, `cfg(tchlab_data)` is set and every test
//! suite is built; without them the suites that need them are left out of
//! `cargo test`, which says so in one line (the data-free tier).
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    data_tier();
    let lib_dir = std::env::var("DEP_TCH_LIBTORCH_LIB").ok();
    if let Some(lib_dir) = &lib_dir {
        println!("cargo:rustc-link-arg=-Wl,-rpath={lib_dir}");
        compile_autocast_shim(std::path::Path::new(lib_dir));
        compile_c10d_shim(std::path::Path::new(lib_dir));
        build_nccl_shim(std::path::Path::new(lib_dir));
        // The scipy-openblas32 wheel setup.sh installs beside torch (see src/accel/lapack.rs).
        let site_packages = std::path::Path::new(lib_dir).join("../..");
        let site_packages = std::fs::canonicalize(&site_packages).unwrap_or(site_packages);
        let wheel = site_packages.join("scipy_openblas32/lib/libscipy_openblas.so");
        println!("cargo:rustc-env=TCHLAB_OPENBLAS_WHEEL={}", wheel.display());
    }
    let version = lib_dir
        .map(|dir| std::path::Path::new(&dir).join("../version.py"))
        .and_then(|path| {
            println!("cargo:rerun-if-changed={}", path.display());
            std::fs::read_to_string(path).ok()
        })
        .and_then(|text| parse_version(&text))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=TCHLAB_LIBTORCH_VERSION={version}");
}

/// What the data tier needs: the files `scripts/fetch-data.sh`,
/// `fetch-faces.sh` and `fetch-models.sh` put in place.
const DATA_FILES: &[&str] = &[
    "data/hymenoptera_data/train",
    "data/hymenoptera_data/val",
    "data/mnist/train-images-idx3-ubyte.gz",
    "data/mnist/t10k-labels-idx1-ubyte.gz",
    "data/faces/lfw_faces.npy",
    "data/faces/orl/s1",
    "models/efficientnet-lite0-57934424.pth",
];

/// The test suites (`tests/NAME.rs`) that need them.
const DATA_SUITES: &[&str] = &[
    "audit",
    "bad_input",
    "bf16",
    "caption_cli",
    "caption_grid",
    "data_parallel",
    "ddp_parity",
    "eigenfaces",
    "finetune_cli",
    "first_hour",
    "loader",
    "lr_find",
    "mnist_cli",
    "parity",
    "pth_mutation",
    "reliability",
    "sweep_cli",
    "tool_runs",
    "training_knobs",
];

/// Sets `cfg(tchlab_data)` when every file of [`DATA_FILES`] is there, else
/// names the suites left out and what is missing.
fn data_tier() {
    println!("cargo:rustc-check-cfg=cfg(tchlab_data)");
    // Only folders that exist: cargo reruns a build script on every build
    // while a path it watches is missing. `data/` and `models/` are in git.
    let watched = ["data", "data/mnist", "data/faces", "models"];
    for folder in watched.iter().filter(|f| std::path::Path::new(f).is_dir()) {
        println!("cargo:rerun-if-changed={folder}");
    }
    let missing: Vec<&str> = DATA_FILES.iter().copied().filter(|f| !std::path::Path::new(f).exists()).collect();
    if missing.is_empty() {
        println!("cargo:rustc-cfg=tchlab_data");
    } else {
        println!(
            "cargo:warning=data-free test tier: suites {} left out (missing {}); bash scripts/test.sh --data-from ../shared/data fetches what they need and runs every suite",
            DATA_SUITES.join(", "),
            missing.join(", ")
        );
    }
}

/// The C entry points to libtorch's autocast switches; only c10's headers
/// are needed (`include/` beside `lib/`).
fn compile_autocast_shim(lib_dir: &std::path::Path) {
    println!("cargo:rerun-if-changed=csrc/autocast.cpp");
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .std("c++17")
        .include(lib_dir.join("../include"))
        .file("csrc/autocast.cpp")
        .compile("tchlab_autocast");
}

/// The C entry points to c10d's Gloo process group (`src/dist`): the wheel's
/// c10d headers, with the project's parse-only gloo declarations in place of
/// gloo's headers (the wheel has none; gloo's code is in `libtorch_cpu`).
/// Links to `torch_cpu` and `c10` only, so every machine builds it.
fn compile_c10d_shim(lib_dir: &std::path::Path) {
    println!("cargo:rerun-if-changed=csrc/c10d.cpp");
    println!("cargo:rerun-if-changed=csrc/gloo_decls");
    let include = lib_dir.join("../include");
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .std("c++17")
        .define("USE_C10D_GLOO", None)
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .include("csrc/gloo_decls")
        .flag_if_supported("-Wno-unused-parameter")
        .file("csrc/c10d.cpp")
        .compile("tchlab_c10d");
}

/// The NCCL process-group factory (`csrc/c10d_nccl.cpp`) as a shared object
/// in `OUT_DIR`, built where the wheels it needs are installed beside torch
/// (`scripts/setup.sh`: CUDA's runtime and NCCL headers come with torch, its
/// `crt/` and `nv/target` headers with nvidia-cuda-crt and -cccl). Sets
/// `cfg(tchlab_nccl)` and `TCHLAB_C10D_NCCL_SO`, the object's path from the
/// profile folder (`target/release`), where `src/dist` looks for it beside
/// the running binary. Linked to `torch_cuda`, so it is opened at run time
/// only, never linked into the binaries.
fn build_nccl_shim(lib_dir: &std::path::Path) {
    println!("cargo:rustc-check-cfg=cfg(tchlab_nccl)");
    println!("cargo:rerun-if-changed=csrc/c10d_nccl.cpp");
    println!("cargo:rerun-if-changed=csrc/c10d_common.hpp");
    let nvidia = lib_dir.join("../../nvidia");
    let cuda_include = nvidia.join("cu13/include");
    let nccl_include = nvidia.join("nccl/include");
    if cuda_include.is_dir() {
        println!("cargo:rerun-if-changed={}", cuda_include.display());
    }
    let needed = [
        cuda_include.join("crt/host_config.h"),
        cuda_include.join("nv/target"),
        nccl_include.join("nccl.h"),
        lib_dir.join("libtorch_cuda.so"),
    ];
    if needed.iter().any(|path| !path.exists()) {
        return;
    }
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let object = out_dir.join("libtchlab_c10d_nccl.so");
    let include = lib_dir.join("../include");
    let compiler = cc::Build::new().cpp(true).get_compiler();
    let status = compiler
        .to_command()
        .args(["-std=c++17", "-shared", "-fPIC", "-O2", "-w"])
        .args(["-D_GLIBCXX_USE_CXX11_ABI=1", "-DUSE_C10D_NCCL", "-DUSE_CUDA"])
        .arg(format!("-I{}", include.display()))
        .arg(format!("-I{}", include.join("torch/csrc/api/include").display()))
        .arg(format!("-I{}", cuda_include.display()))
        .arg(format!("-I{}", nccl_include.display()))
        .arg("csrc/c10d_nccl.cpp")
        .arg("-o")
        .arg(&object)
        .arg(format!("-L{}", lib_dir.display()))
        .arg(format!("-Wl,-rpath,{}", lib_dir.display()))
        .args(["-ltorch_cuda", "-lc10_cuda", "-ltorch_cpu", "-lc10"])
        .status();
    match status {
        Ok(status) if status.success() => {}
        other => panic!("compiling csrc/c10d_nccl.cpp into {} failed: {other:?}", object.display()),
    }
    // OUT_DIR is <profile>/build/<package>-<hash>/out.
    let from_profile: std::path::PathBuf = object.iter().skip(object.iter().count() - 4).collect();
    println!("cargo:rustc-env=TCHLAB_C10D_NCCL_SO={}", from_profile.display());
    println!("cargo:rustc-cfg=tchlab_nccl");
}

/// `__version__ = '2.11.0+cpu'` → `2.11.0+cpu`.
fn parse_version(version_py: &str) -> Option<String> {
    let line = version_py.lines().find(|l| l.trim_start().starts_with("__version__"))?;
    let value = line.split('=').nth(1)?.trim().trim_matches(|c| c == '\'' || c == '"');
    (!value.is_empty()).then(|| value.to_owned())
}
