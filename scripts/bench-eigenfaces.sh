#!/usr/bin/env bash
# Side-by-side speed of the eigenfaces PCA on a (2414, 2016) set (random uint8 pixels, the
# shape of 2414 faces of 48x42), all in one run, at the default thread count and at 1 thread:
#   ours           the whole `eigenfaces --no-figures` process, wall clock: start, reading the .npy,
#                  centring, covariance, eigh, eigenvalues.csv, summary.json, components.safetensors
#                  (its eigendecomposition by OpenBLAS where installed, src/accel/lapack.rs)
#   ours, MKL      the same with TCHLAB_OPENBLAS=none: libtorch's own MKL products and eigh
#   numpy process  a Python process doing what ours does: load, centre, covariance, eigh, write
#                  the eigenvalues and components (like for like with "ours"), and the time of
#                  its centre, covariance and eigh, the first such call in a fresh process
#   sklearn        PCA(svd_solver="full").fit(X) on the float64 array already in memory, in the
#                  bench's own process, warm (after the runs before it)
#   numpy          centring, Xc.T @ Xc / (N - 1) and numpy.linalg.eigh, the same way
# (and ours' own PCA time from its summary.json, a first call in a fresh process too)
# Repetitions alternate; medians are printed, with the top eigenvalues' agreement. Then why:
# single-threaded CPU seconds of libtorch's eigh (its bundled MKL) against numpy's (OpenBLAS).
# Usage: scripts/bench-eigenfaces.sh [--reps R] [--faces N] [--pixels D]   (default 3, 2414, 2016)
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=3; FACES=2414; PIXELS=2016
while [ $# -gt 0 ]; do
  case "$1" in
    --reps) REPS=$2; shift 2 ;;
    --faces) FACES=$2; shift 2 ;;
    --pixels) PIXELS=$2; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "bench-eigenfaces.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
PY=.venv/bin/python
cargo build --release --bin eigenfaces --quiet
DIR=runs/bench-eigenfaces
mkdir -p "$DIR"
"$PY" -c "import numpy as np; np.save('$DIR/random.npy', np.random.default_rng(0).integers(0, 256, ($FACES, $PIXELS), dtype=np.uint8))"
"$PY" - "$DIR" "$REPS" <<'PY'
import json, os, re, statistics, subprocess, sys, time
import numpy as np
import torch
from sklearn.decomposition import PCA
from threadpoolctl import threadpool_info, threadpool_limits

out, reps = sys.argv[1], int(sys.argv[2])
X = np.load(f"{out}/random.npy").astype(np.float64)
n, d = X.shape
default_threads = torch.get_num_threads()


NUMPY_PROCESS = """
import sys, time, numpy as np
X = np.load(sys.argv[1]).astype(np.float64)
start = time.perf_counter()
mean = X.mean(axis=0)
Xc = X - mean
values, vectors = np.linalg.eigh(Xc.T @ Xc / (len(X) - 1))
print(time.perf_counter() - start)
values, vectors = values[::-1], np.ascontiguousarray(vectors[:, ::-1].T)
np.savetxt(sys.argv[2] + "/eigenvalues.csv", values)
np.savez(sys.argv[2] + "/components.npz", mean=mean, components=vectors, eigenvalues=values)
"""


def timed(cmd, env=None):
    start = time.perf_counter()
    stdout = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, env=env).stdout
    return time.perf_counter() - start, stdout


def ours(threads, openblas=True):
    env = dict(os.environ, **({} if openblas else {"TCHLAB_OPENBLAS": "none"}))
    return timed(["target/release/eigenfaces", "--input", f"{out}/random.npy", "--no-figures", "--out", f"{out}/run", "--overwrite",
                  "--device", "cpu", "--threads", str(threads)], env)[0]


def numpy_process(threads):
    os.makedirs(f"{out}/numpy", exist_ok=True)
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    seconds, stdout = timed([sys.executable, "-c", NUMPY_PROCESS, f"{out}/random.npy", f"{out}/numpy"], env)
    return seconds, float(stdout)


def sklearn_fit():
    start = time.perf_counter()
    pca = PCA(svd_solver="full").fit(X)
    return time.perf_counter() - start, pca.explained_variance_[:10]


def numpy_eigh():
    start = time.perf_counter()
    Xc = X - X.mean(axis=0)
    values = np.linalg.eigh(Xc.T @ Xc / (n - 1))[0][::-1]
    return time.perf_counter() - start, values[:10]


rows, agree = [], 0.0
for threads in sorted({default_threads, 1}, reverse=True):
    times = {"ours": [], "ours: PCA alone": [], "ours, MKL": [], "numpy process": [], "numpy process: PCA alone": [],
             "sklearn": [], "numpy": []}
    for rep in range(reps):
        times["ours"].append(ours(threads))
        summary = json.load(open(f"{out}/run/summary.json"))
        times["ours: PCA alone"].append(summary["fit_seconds"])
        ours_top = np.array(summary["top_10_eigenvalues"])
        times["ours, MKL"].append(ours(threads, openblas=False))
        for name, seconds in zip(["numpy process", "numpy process: PCA alone"], numpy_process(threads)):
            times[name].append(seconds)
        with threadpool_limits(threads):
            seconds, sklearn_top = sklearn_fit()
            times["sklearn"].append(seconds)
            seconds, numpy_top = numpy_eigh()
            times["numpy"].append(seconds)
        agree = max(agree, *(np.max(np.abs(ours_top - ref) / ref) for ref in (sklearn_top, numpy_top)))
        print(f"{threads} thread(s), rep {rep + 1}/{reps}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()),
              flush=True)
    median = {k: statistics.median(v) for k, v in times.items()}
    rows.append((threads, median))

# Why: the eigendecomposition alone, one thread, CPU seconds (robust to other load on the machine).
torch.set_num_threads(1)
Xc = X - X.mean(axis=0)
C = Xc.T @ Xc / (n - 1)
T = torch.from_numpy(C.copy())
why = {"numpy eigh": [], "libtorch eigh": [], "numpy eigvalsh": [], "libtorch eigvalsh": []}
with threadpool_limits(1):
    for _ in range(reps):
        for name, f in [("numpy eigh", lambda: np.linalg.eigh(C)), ("libtorch eigh", lambda: torch.linalg.eigh(T)),
                        ("numpy eigvalsh", lambda: np.linalg.eigvalsh(C)),
                        ("libtorch eigvalsh", lambda: torch.linalg.eigvalsh(T))]:
            start = time.process_time()
            f()
            why[name].append(time.process_time() - start)

load = os.getloadavg()[0]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
blas = ", ".join(sorted({f"{i['internal_api']}" for i in threadpool_info()}))
lines = [
    f"PCA of a ({n}, {d}) float64 set (random uint8 pixels): wall seconds, median of {reps}; "
    f"{os.cpu_count()} CPUs ({cpu}), load average {load:.1f} at the end",
    "",
    "| threads | ours: whole `eigenfaces --no-figures` run | numpy: the same as a whole process | "
    "ours with libtorch's MKL (`TCHLAB_OPENBLAS=none`), whole run | ours: its PCA (centre, covariance, eigh) | "
    "numpy process: its PCA, first call in the process | numpy: centre, covariance, `eigh`, in memory, warm | "
    "scikit-learn `PCA(svd_solver=\"full\").fit`, in memory, warm | ours / numpy process | "
    "ours' PCA / numpy process's | ours' PCA / faster warm |",
    "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
]
for threads, m in rows:
    faster = min(m["sklearn"], m["numpy"])
    lines.append(f"| {threads} | {m['ours']:.2f} | {m['numpy process']:.2f} | {m['ours, MKL']:.2f} | "
                 f"{m['ours: PCA alone']:.2f} | {m['numpy process: PCA alone']:.2f} | {m['numpy']:.2f} | "
                 f"{m['sklearn']:.2f} | {m['ours'] / m['numpy process']:.2f} | "
                 f"{m['ours: PCA alone'] / m['numpy process: PCA alone']:.2f} | {m['ours: PCA alone'] / faster:.2f} |")
lines += [
    "",
    f"Top 10 eigenvalues agree to {agree:.1e} relative. Python side: {blas}.",
    "",
    f"The {d}×{d} eigendecomposition alone, 1 thread, CPU seconds (median of {reps}):",
    "",
    "| " + " | ".join(why) + " |",
    "|" + "---:|" * len(why),
    "| " + " | ".join(f"{statistics.median(v):.2f}" for v in why.values()) + " |",
]
print("\n".join(lines))
open(f"{out}/results.md", "w").write("\n".join(lines) + "\n")
PY
echo "wrote $DIR/results.md"
