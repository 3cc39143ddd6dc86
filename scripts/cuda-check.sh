#!/usr/bin/env bash
# Seconds per epoch on CUDA for both modes, in fp32 and with --amp, the share of time spent
# waiting for data, best val accuracy, and the PyTorch reference on the same GPU.
# Usage: scripts/cuda-check.sh [--weights FILE] [--data DIR] [--epochs N] [--device D] [--bin FILE]
#   defaults: EfficientNet-Lite0's file in models/, data/hymenoptera_data, 25 epochs (reference: 10),
#   --device cuda, target/release/finetune. On a machine with torch but without this build, point
#   LD_LIBRARY_PATH at torch/lib and --bin at a carried binary.
set -uo pipefail
cd "$(dirname "$0")/.."
WEIGHTS=models/efficientnet-lite0-57934424.pth; DATA=data/hymenoptera_data; EPOCHS=25; DEVICE=cuda
BIN=target/release/finetune; PY=python3; [ -x .venv/bin/python ] && PY=.venv/bin/python
while [ $# -gt 0 ]; do
  case "$1" in
    --weights) WEIGHTS=$2; shift 2 ;;
    --data) DATA=$2; shift 2 ;;
    --epochs) EPOCHS=$2; shift 2 ;;
    --device) DEVICE=$2; shift 2 ;;
    --bin) BIN=$2; shift 2 ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "cuda-check.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
OUT_DIR=runs/cuda-check; mkdir -p "$OUT_DIR"
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

ours() { # name, extra args...
  local name=$1; shift
  echo "== ours $name"
  "$BIN" --device "$DEVICE" --arch efficientnet-lite0 --weights "$WEIGHTS" --data "$DATA" --epochs "$EPOCHS" \
    --out "$OUT_DIR/$name" --overwrite "$@" > "$OUT_DIR/$name.log" 2>&1 \
    || { grep -m1 '^error' "$OUT_DIR/$name.log" || tail -3 "$OUT_DIR/$name.log"; return 1; }
  "$PY" - "$OUT_DIR/$name" <<'PY'
import csv, json, statistics as st, sys
rows = list(csv.DictReader(open(f"{sys.argv[1]}/metrics.csv")))
summary = json.load(open(f"{sys.argv[1]}/summary.json"))
train = [r for r in rows if r["phase"] == "train"]; val = [r for r in rows if r["phase"] == "val"]
epochs = [float(a["seconds"]) + float(b["seconds"]) for a, b in zip(train, val)]
print(f"   {st.median(epochs):.2f} s/epoch (first {epochs[0]:.2f}), wall {summary['seconds']:.1f} s, "
      f"best val {summary['best_val_acc']:.4f}, data {100 * summary['data_wait_share']:.1f} % of the train phases")
PY
}
ours feature-extract --mode feature-extract
ours feature-extract-amp --mode feature-extract --amp
ours full --mode full
ours full-amp --mode full --amp
for mode in feature-extract full; do
  echo "== reference $mode ($(( EPOCHS < 10 ? EPOCHS : 10 )) epochs)"
  "$PY" scripts/reference/transfer_learning.py --arch efficientnet-lite0 --mode $mode --device "$DEVICE" \
    --epochs $(( EPOCHS < 10 ? EPOCHS : 10 )) --weights "$WEIGHTS" --data "$DATA" > "$OUT_DIR/reference-$mode.log" 2>&1
  "$PY" - "$OUT_DIR/reference-$mode.log" <<'PY' || tail -3 "$OUT_DIR/reference-$mode.log"
import json, statistics, sys
r = json.loads([l for l in open(sys.argv[1]) if l.startswith("RESULT ")][-1][7:])
print(f"   {statistics.median(r['epoch_seconds']):.2f} s/epoch, best val {r['best_val_acc']:.4f}")
PY
done
