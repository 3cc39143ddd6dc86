//! The f64 symmetric products and eigendecompositions of the PCA, on the
//! CPU, by OpenBLAS (`dsyrk`, `dsyevd`) when it is there: its `dsyevd` beats
//! the one in libtorch's bundled MKL on the CPUs we measured, and `dsyrk`
//! computes half of the `Xᵀ·X` product a GEMM computes whole (README,
//! *Eigenfaces*). Where OpenBLAS is missing, or for anything but contiguous
//! f64 CPU tensors, the callers' libtorch path runs.
//!
//! The library is opened at run time, never linked, and with `RTLD_DEEPBIND`,
//! so that its LAPACK calls its own BLAS, never the symbols libtorch's MKL
//! exports: `TCHLAB_OPENBLAS` names it (`none` turns the seam off), else the
//! `scipy-openblas32` wheel beside libtorch's torch package (what
//! `scripts/setup.sh` installs). Builds with 64-bit integers are refused.

use libloading::os::unix::{Library, Symbol};
use std::ffi::{c_char, c_int, CStr};
use std::sync::OnceLock;
use tch::{Device, Kind, Tensor};

type Syrk = unsafe extern "C" fn(
    uplo: *const u8,
    trans: *const u8,
    n: *const c_int,
    k: *const c_int,
    alpha: *const f64,
    a: *const f64,
    lda: *const c_int,
    beta: *const f64,
    c: *mut f64,
    ldc: *const c_int,
);
type Syevd = unsafe extern "C" fn(
    jobz: *const u8,
    uplo: *const u8,
    n: *const c_int,
    a: *mut f64,
    lda: *const c_int,
    w: *mut f64,
    work: *mut f64,
    lwork: *const c_int,
    iwork: *mut c_int,
    liwork: *const c_int,
    info: *mut c_int,
);
type SetThreads = unsafe extern "C" fn(c_int);
type GetConfig = unsafe extern "C" fn() -> *const c_char;

/// What [`OpenBlas::product_eigh`] returns.
pub struct ProductEigen {
    /// `[n]`, decreasing.
    pub values: Tensor,
    /// `[n, n]`: row i is the unit eigenvector of `values[i]`.
    pub rows: Tensor,
    /// The product's trace, the sum of all its eigenvalues.
    pub trace: f64,
}

/// An opened OpenBLAS and the three entry points used.
pub struct OpenBlas {
    /// Where it was opened from, for the run's log.
    pub path: String,
    syrk: Syrk,
    syevd: Syevd,
    set_threads: SetThreads,
    _library: Library,
}

/// The OpenBLAS of this process, opened once; `None` when there is none.
pub fn openblas() -> Option<&'static OpenBlas> {
    static OPENED: OnceLock<Option<OpenBlas>> = OnceLock::new();
    OPENED.get_or_init(open_first).as_ref()
}

/// The OpenBLAS that takes `x`: contiguous f64 CPU tensors only, and only
/// where OpenBLAS is installed (the library is not opened otherwise).
pub fn for_tensor(x: &Tensor) -> Option<&'static OpenBlas> {
    suitable(x).then(openblas).flatten()
}

fn open_first() -> Option<OpenBlas> {
    match std::env::var("TCHLAB_OPENBLAS") {
        Ok(named) if named == "none" => None,
        Ok(named) => OpenBlas::open(&named),
        Err(_) => option_env!("TCHLAB_OPENBLAS_WHEEL").and_then(OpenBlas::open),
    }
}

impl OpenBlas {
    fn open(path: &str) -> Option<Self> {
        let flags = libc::RTLD_NOW | libc::RTLD_LOCAL | libc::RTLD_DEEPBIND;
        // SAFETY: opening a shared library runs its initialisers; OpenBLAS's
        // only set up its thread pool.
        let library = unsafe { Library::open(Some(path), flags) }.ok()?;
        // The scipy-openblas wheels prefix their symbols; other builds do not.
        ["scipy_", ""].into_iter().find_map(|prefix| Self::entry_points(&library, prefix)).map(
            |(syrk, syevd, set_threads)| Self { path: path.to_string(), syrk, syevd, set_threads, _library: library },
        )
    }

    /// The three functions under `prefix`, if they are there and the build
    /// uses 32-bit integers, as the types above do.
    fn entry_points(library: &Library, prefix: &str) -> Option<(Syrk, Syevd, SetThreads)> {
        // SAFETY: the types above are the reference BLAS/LAPACK interfaces
        // with 32-bit integers; `openblas_get_config` returns a static C
        // string naming the build's options, checked before anything is called.
        unsafe {
            let config: Symbol<GetConfig> = library.get(format!("{prefix}openblas_get_config\0").as_bytes()).ok()?;
            if CStr::from_ptr(config()).to_string_lossy().contains("USE64BITINT") {
                return None;
            }
            let syrk: Symbol<Syrk> = library.get(format!("{prefix}dsyrk_\0").as_bytes()).ok()?;
            let syevd: Symbol<Syevd> = library.get(format!("{prefix}dsyevd_\0").as_bytes()).ok()?;
            let threads: Symbol<SetThreads> =
                library.get(format!("{prefix}openblas_set_num_threads\0").as_bytes()).ok()?;
            Some((*syrk, *syevd, *threads))
        }
    }

    fn use_threads(&self) {
        // SAFETY: plain setter of the library's thread count.
        unsafe { (self.set_threads)(tch::get_num_threads().max(1)) }
    }

    /// The eigendecomposition of `scale·XᵀX` (`[d, d]`) of a contiguous
    /// `[N, d]` f64 CPU tensor, or of `scale·XXᵀ` (`[N, N]`) with
    /// `rows_with_rows`: `dsyrk` fills one triangle of a fresh matrix,
    /// `dsyevd` overwrites it with the eigenvectors, and those are put in
    /// decreasing order in place, so the matrix is never copied (`dsyevd`'s
    /// own workspace holds 2n² more values). `None` for an empty matrix or
    /// one whose workspace size LAPACK's 32-bit integers cannot hold.
    pub fn product_eigh(&self, x: &Tensor, scale: f64, rows_with_rows: bool) -> Option<ProductEigen> {
        let [rows, cols] = x.size()[..] else { return None };
        if !suitable(x) {
            return None;
        }
        let (n, k) = if rows_with_rows { (rows, cols) } else { (cols, rows) };
        // dsyevd's workspace, 1 + 6n + 2n², is computed in LAPACK's integers.
        if n < 1 || k < 1 || to_int(1 + 6 * n + 2 * n * n).is_none() {
            return None;
        }
        let (n32, k32, lda) = (to_int(n)?, to_int(k)?, to_int(cols)?);
        let side = usize::try_from(n).ok()?;
        let (work_size, iwork_size) = self.workspace(n32)?;
        let matrix = Tensor::zeros([n, n], (Kind::Double, Device::Cpu));
        // SAFETY: `matrix` was just allocated here, contiguous, n × n f64
        // values, and nothing else refers to it.
        let a = unsafe { std::slice::from_raw_parts_mut(matrix.data_ptr() as *mut f64, side.checked_mul(side)?) };
        // Row-major [N, d] is column-major Y = Xᵀ ([d, N], lda d): XᵀX = Y·Yᵀ, XXᵀ = Yᵀ·Y.
        let trans = if rows_with_rows { b"T" } else { b"N" };
        self.use_threads();
        // SAFETY: `x` is a contiguous f64 CPU tensor of rows × cols values
        // that outlives the call; `a` holds n × n values.
        unsafe {
            (self.syrk)(
                b"U".as_ptr(),
                trans.as_ptr(),
                &n32,
                &k32,
                &scale,
                x.data_ptr() as *const f64,
                &lda,
                &0.0,
                a.as_mut_ptr(),
                &n32,
            );
        }
        let trace = (0..side).map(|i| a[i * side + i]).sum();
        let mut values = vec![0f64; side];
        let mut work = vec![0f64; work_size];
        let mut iwork = vec![0 as c_int; iwork_size];
        let (lwork, liwork) = (to_int(work_size as i64)?, to_int(iwork_size as i64)?);
        let mut info: c_int = 0;
        // SAFETY: `a` holds the upper triangle `dsyrk` wrote; every buffer
        // has the length LAPACK's workspace query asked for.
        unsafe {
            (self.syevd)(
                b"V".as_ptr(),
                b"U".as_ptr(),
                &n32,
                a.as_mut_ptr(),
                &n32,
                values.as_mut_ptr(),
                work.as_mut_ptr(),
                &lwork,
                iwork.as_mut_ptr(),
                &liwork,
                &mut info,
            );
        }
        if info != 0 {
            return None;
        }
        // Column j of the column-major result, eigenvalue j ascending, is row
        // j read row-major: reversing the rows orders both by decreasing eigenvalue.
        values.reverse();
        for i in 0..side / 2 {
            let (head, tail) = a.split_at_mut((side - 1 - i) * side);
            head[i * side..(i + 1) * side].swap_with_slice(&mut tail[..side]);
        }
        Some(ProductEigen { values: Tensor::from_slice(&values), rows: matrix, trace })
    }

    /// `dsyevd`'s workspace sizes for order `n`, from its own query.
    fn workspace(&self, n: c_int) -> Option<(usize, usize)> {
        let (mut work, mut iwork, mut info) = (0f64, 0 as c_int, 0 as c_int);
        let (mut a, mut w) = (0f64, 0f64);
        // SAFETY: a workspace query (lwork = liwork = -1) writes only `work`,
        // `iwork` and `info`.
        unsafe {
            (self.syevd)(
                b"V".as_ptr(),
                b"U".as_ptr(),
                &n,
                &mut a,
                &n,
                &mut w,
                &mut work,
                &-1,
                &mut iwork,
                &-1,
                &mut info,
            );
        }
        (info == 0 && work >= 1.0 && iwork >= 1).then_some((work as usize, iwork as usize))
    }
}

fn suitable(x: &Tensor) -> bool {
    x.device() == Device::Cpu && x.kind() == Kind::Double && x.is_contiguous() && !x.requires_grad()
}

/// `value` as LAPACK's 32-bit integer, when it fits.
fn to_int(value: i64) -> Option<c_int> {
    c_int::try_from(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random(rows: i64, cols: i64) -> Tensor {
        tch::manual_seed(11);
        Tensor::randn([rows, cols], (Kind::Double, Device::Cpu))
    }

    /// OpenBLAS, which scripts/setup.sh installs: a missing one fails the
    /// test, unless `TCHLAB_OPENBLAS=none` says to test without it, and then
    /// the test checks that it is not used.
    fn openblas_or_none_asked() -> Option<&'static OpenBlas> {
        let asked_none = std::env::var("TCHLAB_OPENBLAS").is_ok_and(|v| v == "none");
        match openblas() {
            Some(_) if asked_none => panic!("TCHLAB_OPENBLAS=none, yet OpenBLAS was loaded"),
            None if !asked_none => panic!("no OpenBLAS found: run scripts/setup.sh, or set TCHLAB_OPENBLAS=none"),
            found => found,
        }
    }

    #[test]
    fn openblas_eigenpairs_of_products_equal_libtorchs() {
        let Some(blas) = openblas_or_none_asked() else { return };
        let x = random(40, 25);
        for (rows_with_rows, product) in [(false, x.tr().mm(&x) * 0.5), (true, x.mm(&x.tr()) * 0.5)] {
            let n = product.size()[0];
            let eigen = blas.product_eigh(&x, 0.5, rows_with_rows).unwrap();
            let (expected, _) = product.linalg_eigh("L");
            assert!(eigen.values.allclose(&expected.flip([0]), 1e-10, 1e-9, false), "rows with rows: {rows_with_rows}");
            let trace = product.trace().double_value(&[]);
            assert!((eigen.trace - trace).abs() < 1e-12 * trace);
            let rebuilt = eigen.rows.tr().mm(&eigen.values.diag(0)).mm(&eigen.rows);
            assert!(rebuilt.allclose(&product, 1e-10, 1e-9, false));
            let identity = Tensor::eye(n, (Kind::Double, Device::Cpu));
            assert!(eigen.rows.mm(&eigen.rows.tr()).allclose(&identity, 1e-12, 1e-12, false));
        }
    }

    #[test]
    fn other_kinds_and_layouts_are_left_to_libtorch() {
        let Some(blas) = openblas_or_none_asked() else { return };
        let x = random(6, 4);
        assert!(blas.product_eigh(&x.to_kind(Kind::Float), 1.0, false).is_none());
        assert!(blas.product_eigh(&x.tr(), 1.0, false).is_none());
    }
}
