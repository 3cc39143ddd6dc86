#!/usr/bin/env bash
# Side-by-side speed of the eigenfaces PCA on a (2414, 2016) set (random uint8 pixels, the
# shape of 2414 faces of 48x42), in one run:
#   ours      the whole `eigenfaces --no-figures` process, wall clock: start, reading the .npy,
#             centring, covariance, eigh, eigenvalues.csv, summary.json, components.safetensors
#   sklearn   PCA(svd_solver="full").fit(X) on the float64 array already in memory
#   numpy     centring, Xc.T @ Xc / (N - 1) and numpy.linalg.eigh, on the array in memory
# Each is repeated (alternately) and the median printed, with the thread counts and a check that
# the top eigenvalues agree. Usage: scripts/bench-eigenfaces.sh [--reps R] [--faces N] [--pixels D]
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=5; FACES=2414; PIXELS=2016
while [ $# -gt 0 ]; do
  case "$1" in
    --reps) REPS=$2; shift 2 ;;
    --faces) FACES=$2; shift 2 ;;
    --pixels) PIXELS=$2; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
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
from sklearn.decomposition import PCA
from threadpoolctl import threadpool_info

out, reps = sys.argv[1], int(sys.argv[2])
X = np.load(f"{out}/random.npy").astype(np.float64)
n, d = X.shape
times = {"ours": [], "ours_fit": [], "sklearn": [], "numpy": []}
for rep in range(reps):
    start = time.perf_counter()
    run = subprocess.run(["target/release/eigenfaces", "--input", f"{out}/random.npy", "--no-figures",
                          "--out", f"{out}/run", "--device", "cpu"], check=True, stdout=subprocess.PIPE, text=True)
    times["ours"].append(time.perf_counter() - start)
    summary = json.load(open(f"{out}/run/summary.json"))
    times["ours_fit"].append(summary["fit_seconds"])

    start = time.perf_counter()
    pca = PCA(svd_solver="full").fit(X)
    times["sklearn"].append(time.perf_counter() - start)

    start = time.perf_counter()
    Xc = X - X.mean(axis=0)
    values = np.linalg.eigh(Xc.T @ Xc / (n - 1))[0][::-1]
    times["numpy"].append(time.perf_counter() - start)
    print(f"rep {rep + 1}/{reps}: " + ", ".join(f"{k} {v[-1]:.3f} s" for k, v in times.items()), flush=True)

ours_top = np.array(summary["top_10_eigenvalues"])
agree = max(np.max(np.abs(ours_top - pca.explained_variance_[:10]) / pca.explained_variance_[:10]),
            np.max(np.abs(ours_top - values[:10]) / values[:10]))
blas = ", ".join(sorted({f"{i['internal_api']} {i['num_threads']} threads" for i in threadpool_info()}))
median = {k: statistics.median(v) for k, v in times.items()}
our_threads = re.search(r"cpu \((\d+ threads?)\)", run.stdout).group(1)
table = [
    f"PCA of a ({n}, {d}) float64 set (random uint8 pixels), median of {reps}, {os.cpu_count()} CPUs",
    "",
    "| what | seconds |",
    "|---|---:|",
    f"| ours: whole `eigenfaces --no-figures` run ({summary['method']} path, "
    f"{our_threads}) | {median['ours']:.3f} |",
    f"| ours: the PCA alone (centre, covariance, eigh) | {median['ours_fit']:.3f} |",
    f"| scikit-learn PCA(svd_solver=\"full\").fit | {median['sklearn']:.3f} |",
    f"| numpy: centre, covariance, linalg.eigh | {median['numpy']:.3f} |",
    "",
    f"numpy/scipy BLAS: {blas}. Top 10 eigenvalues agree to {agree:.1e} relative.",
    f"ours / faster of sklearn and numpy: {median['ours'] / min(median['sklearn'], median['numpy']):.2f}",
]
print("\n".join(table))
open(f"{out}/results.md", "w").write("\n".join(table) + "\n")
PY
echo "wrote $DIR/results.md"
