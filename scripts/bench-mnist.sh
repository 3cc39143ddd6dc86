#!/usr/bin/env bash
# Side-by-side speed of `mnist` (explicit backward and autograd) and the PyTorch reference
# (scripts/reference/mnist.py) on the same split sizes, model, optimizer and epochs.
# Usage: scripts/bench-mnist.sh [--epochs N] [--reps R]   (default: 2 epochs, 1 repetition; hidden 800 MLP and the CNN)
# Compares training time (all epochs with their accuracy passes; the sweep's retraining is not counted),
# the median over repetitions, which run alternately.
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS=2; REPS=1
while [ $# -gt 0 ]; do
  case "$1" in
    --epochs) EPOCHS=$2; shift 2 ;;
    --reps) REPS=$2; shift 2 ;;
    -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
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

for rep in $(seq 1 "$REPS"); do
  for net in mlp cnn; do
    echo "== rep $rep: $net"
    extra=(); [ $net = mlp ] && extra=(--hidden 800)
    for grad in manual autograd; do
      timed "$net-$grad" "$(ours $net-$grad)" target/release/mnist $net "${extra[@]}" --epochs "$EPOCHS" --grad $grad --out runs/bench-mnist/$net-$grad --overwrite
    done
    timed "$net-reference" "$REFERENCE" .venv/bin/python scripts/reference/mnist.py $net "${extra[@]}" --epochs "$EPOCHS"
  done
done
python3 - $RESULTS <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    label, sec, rss, acc = line.split()
    runs.setdefault(label, []).append((float(sec), int(rss), float(acc)))
rows = {k: (statistics.median(r[0] for r in v), max(r[1] for r in v), v[-1][2], [r[0] for r in v]) for k, v in runs.items()}
print(f"\n{'run':<16}{'train s':>8}{'RSS MB':>8}{'val acc':>9}  all runs (s)")
for k, (sec, rss, acc, each) in rows.items():
    print(f"{k:<16}{sec:>8.1f}{rss / 1024:>8.0f}{acc:>9.4f}  {' '.join(f'{s:.1f}' for s in each)}")
for net in ("mlp", "cnn"):
    t = {k.split('-')[1]: v[0] for k, v in rows.items() if k.startswith(net)}
    print(f"{net}: reference/manual {t['reference'] / t['manual']:.2f}x, reference/autograd {t['reference'] / t['autograd']:.2f}x, manual/autograd time {t['manual'] / t['autograd']:.2f}x")
PY
