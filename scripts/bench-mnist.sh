#!/usr/bin/env bash
# Side-by-side speed of `mnist` (explicit backward and autograd) and the PyTorch reference
# (scripts/reference/mnist.py) on the same split sizes, model, optimizer and epochs.
# Usage: scripts/bench-mnist.sh [--epochs N]   (default: 2 epochs each; hidden 800 MLP and the CNN)
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS=2
while [ $# -gt 0 ]; do
  case "$1" in
    --epochs) EPOCHS=$2; shift 2 ;;
    -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
    *) echo "bench-mnist.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
[ -x target/release/mnist ] || bash scripts/setup.sh
mkdir -p runs/bench-mnist
RESULTS=runs/bench-mnist/results.txt; : > $RESULTS

timed() { # label command...
  local label=$1; shift
  /usr/bin/time -f "%e %M" -o runs/bench-mnist/time.txt "$@" > runs/bench-mnist/last.log 2>&1
  read -r wall rss < runs/bench-mnist/time.txt
  local acc
  acc=$(grep -oE "(val acc = |\"val_acc\": )[0-9.]+" runs/bench-mnist/last.log | tail -1 | grep -oE "[0-9.]+$")
  echo "$label $wall $rss $acc" >> $RESULTS
  echo "  $label: ${wall}s, peak RSS $((rss / 1024)) MB, val acc $acc"
}

for net in mlp cnn; do
  extra=(); [ $net = mlp ] && extra=(--hidden 800)
  timed "$net-manual" target/release/mnist $net "${extra[@]}" --epochs "$EPOCHS" --grad manual --out runs/bench-mnist/$net-manual
  timed "$net-autograd" target/release/mnist $net "${extra[@]}" --epochs "$EPOCHS" --grad autograd --out runs/bench-mnist/$net-autograd
  timed "$net-reference" .venv/bin/python scripts/reference/mnist.py $net "${extra[@]}" --epochs "$EPOCHS"
done
python3 - $RESULTS <<'PY'
import sys
rows = {l.split()[0]: l.split()[1:] for l in open(sys.argv[1])}
print(f"\n{'run':<16}{'wall s':>8}{'RSS MB':>8}{'val acc':>9}")
for k, (wall, rss, acc) in rows.items():
    print(f"{k:<16}{float(wall):>8.1f}{int(rss) / 1024:>8.0f}{float(acc):>9.4f}")
for net in ("mlp", "cnn"):
    w = {k.split('-')[1]: float(v[0]) for k, v in rows.items() if k.startswith(net)}
    print(f"{net}: reference/manual {w['reference'] / w['manual']:.2f}x, reference/autograd {w['reference'] / w['autograd']:.2f}x, manual/autograd time {w['manual'] / w['autograd']:.2f}x")
PY
