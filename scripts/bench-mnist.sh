#!/usr/bin/env bash
# Side-by-side speed of `mnist` (explicit backward and autograd) and the PyTorch reference
# (scripts/reference/mnist.py) on the same split sizes, model, optimizer and epochs.
# Usage: scripts/bench-mnist.sh [--epochs N]   (default: 2 epochs each; hidden 800 MLP and the CNN)
# Compares training time (all epochs with their accuracy passes; the sweep's retraining is not counted).
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

# Training seconds (all epochs, with the per-epoch accuracy passes) and peak RSS of one run.
timed() { # label json-reader command...
  local label=$1 reader=$2; shift 2
  /usr/bin/time -f "%M" -o runs/bench-mnist/rss.txt "$@" > runs/bench-mnist/last.log 2>&1
  local seconds acc
  read -r seconds acc < <(python3 -c "$reader")
  echo "$label $seconds $(cat runs/bench-mnist/rss.txt) $acc" >> $RESULTS
  echo "  $label: ${seconds}s training, val acc $acc"
}
ours() { # the sweep row (MLP) or the run (CNN) from summary.json
  echo "import json; s = json.load(open('runs/bench-mnist/$1/summary.json')); r = s['rows'][0] if 'rows' in s else s; print(r['seconds'], r['val_acc'])"
}
REFERENCE='import json; r = json.loads([l for l in open("runs/bench-mnist/last.log") if l.startswith("RESULT ")][-1][7:]); print(sum(r["epoch_seconds"]), r["val_acc"])'

for net in mlp cnn; do
  extra=(); [ $net = mlp ] && extra=(--hidden 800)
  for grad in manual autograd; do
    timed "$net-$grad" "$(ours $net-$grad)" target/release/mnist $net "${extra[@]}" --epochs "$EPOCHS" --grad $grad --out runs/bench-mnist/$net-$grad
  done
  timed "$net-reference" "$REFERENCE" .venv/bin/python scripts/reference/mnist.py $net "${extra[@]}" --epochs "$EPOCHS"
done
python3 - $RESULTS <<'PY'
import sys
rows = {l.split()[0]: l.split()[1:] for l in open(sys.argv[1])}
print(f"\n{'run':<16}{'train s':>8}{'RSS MB':>8}{'val acc':>9}")
for k, (sec, rss, acc) in rows.items():
    print(f"{k:<16}{float(sec):>8.1f}{int(rss) / 1024:>8.0f}{float(acc):>9.4f}")
for net in ("mlp", "cnn"):
    t = {k.split('-')[1]: float(v[0]) for k, v in rows.items() if k.startswith(net)}
    print(f"{net}: reference/manual {t['reference'] / t['manual']:.2f}x, reference/autograd {t['reference'] / t['autograd']:.2f}x, manual/autograd time {t['manual'] / t['autograd']:.2f}x")
PY
