#!/usr/bin/env bash
# How long each binary takes to start and exit (`--help`), alternating, median wall seconds of R
# repetitions, three ways:
#   as built        libtorch's CUDA library loaded only where an NVIDIA driver is installed
#                   (src/device.rs), and the exit skipping C++ teardown (src/cli.rs, exit_now)
#   full exit       the same with TCHLAB_FULL_EXIT=1: libtorch's static destructors run at exit
#   CUDA at start   full exit, and libtorch_cuda loaded at start (LD_PRELOAD) as linking it did
# (Where a driver is installed the first two load it too: the third column then measures nothing.)
# Usage: scripts/bench-startup.sh [--reps R]   (default 7)
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
REPS=7
while [ $# -gt 0 ]; do
  case "$1" in
    --reps) REPS=${2:?--reps needs a count}; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "bench-startup.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
cargo build --release --bins --quiet
BINS="finetune mnist caption eigenfaces"
CPU_LIB=$(ldd target/release/finetune | awk '/libtorch_cpu.so/ {print $3}')
CUDA_LIB=$(dirname "$CPU_LIB")/libtorch_cuda.so
[ -f "$CUDA_LIB" ] || { echo "bench-startup.sh: no $CUDA_LIB (a CPU-only libtorch: nothing to compare)" >&2; exit 1; }
seconds() { # env assignments..., command...
  local start end
  start=$(date +%s.%N); env "$@" > /dev/null; end=$(date +%s.%N)
  awk -v s="$start" -v e="$end" 'BEGIN { print e - s }'
}
median() { sort -n | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
echo "| binary | as built (s) | full exit (s) | full exit, libtorch_cuda loaded at start (s) |"
echo "|---|---:|---:|---:|"
for bin in $BINS; do
  built=(); full=(); preloaded=()
  for _ in $(seq "$REPS"); do
    built+=("$(seconds "target/release/$bin" --help)")
    full+=("$(seconds TCHLAB_FULL_EXIT=1 "target/release/$bin" --help)")
    preloaded+=("$(seconds TCHLAB_FULL_EXIT=1 LD_PRELOAD="$CUDA_LIB" "target/release/$bin" --help)")
  done
  printf '| %s | %.3f | %.3f | %.3f |\n' "$bin" "$(printf '%s\n' "${built[@]}" | median)" \
    "$(printf '%s\n' "${full[@]}" | median)" "$(printf '%s\n' "${preloaded[@]}" | median)"
done
