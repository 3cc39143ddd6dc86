#!/usr/bin/env bash
# How long each binary takes to start and exit (`--help`), as built (libtorch's CUDA library
# loaded only where an NVIDIA driver is installed, src/device.rs) and with that library loaded at
# start as linking it did before (LD_PRELOAD), alternating, median wall seconds of R repetitions.
# (Where a driver is installed both columns load it: the difference is then about nothing.)
# Usage: scripts/bench-startup.sh [--reps R]   (default 7)
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
REPS=7
while [ $# -gt 0 ]; do
  case "$1" in
    --reps) REPS=${2:?--reps needs a count}; shift 2 ;;
    -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
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
echo "| binary | as built (s) | libtorch_cuda loaded at start (s) | saved |"
echo "|---|---:|---:|---:|"
for bin in $BINS; do
  built=(); preloaded=()
  for _ in $(seq "$REPS"); do
    built+=("$(seconds "target/release/$bin" --help)")
    preloaded+=("$(seconds LD_PRELOAD="$CUDA_LIB" "target/release/$bin" --help)")
  done
  b=$(printf '%s\n' "${built[@]}" | median); p=$(printf '%s\n' "${preloaded[@]}" | median)
  printf '| %s | %.3f | %.3f | %.3f |\n' "$bin" "$b" "$p" "$(awk -v p="$p" -v b="$b" 'BEGIN { print p - b }')"
done
