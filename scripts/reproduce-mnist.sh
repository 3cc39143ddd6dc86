#!/usr/bin/env bash
# Reproduces the MNIST experiments and prints the table:
#   1. the MLP hidden-size sweep (10 … 1600) with the hand-derived backward passes,
#      best size by val accuracy retrained on train+val and tested;
#   2. the same best size trained with autograd (same seed): accuracies compared;
#   3. the CNN, with explicit backward and with autograd.
# Usage: scripts/reproduce-mnist.sh [--data-from DIR] [--device D]
# Results: runs/reproduce-mnist/ (results.md/csv, summary.json, PNG figures).
set -euo pipefail
cd "$(dirname "$0")/.."

DEVICE=auto; DATA_ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --data-from) DATA_ARGS=(--from "$2"); shift 2 ;;
    --device) DEVICE=$2; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "reproduce-mnist.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
bash scripts/setup.sh
bash scripts/fetch-data.sh "${DATA_ARGS[@]}"

OUT=runs/reproduce-mnist
M=target/release/mnist
$M mlp --grad manual --device "$DEVICE" --out $OUT/mlp-sweep --overwrite
BEST=$(python3 -c "import json; print(json.load(open('$OUT/mlp-sweep/summary.json'))['best_hidden'])")
$M mlp --hidden "$BEST" --grad autograd --device "$DEVICE" --out $OUT/mlp-autograd --overwrite
$M cnn --grad manual --device "$DEVICE" --out $OUT/cnn-manual --overwrite
$M cnn --grad autograd --device "$DEVICE" --out $OUT/cnn-autograd --overwrite

python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
sweep = json.load(open(f"{out}/mlp-sweep/summary.json"))
auto = json.load(open(f"{out}/mlp-autograd/summary.json"))
print()
print(open(f"{out}/mlp-sweep/results.md").read())
print(f"{'experiment':<34}{'test acc':>9}{'reference':>11}{'wall time':>11}")
print(f"{'MLP sweep, best %d (manual)' % sweep['best_hidden']:<34}{sweep['test_acc']:>9.4f}{0.9793:>11.4f}{sweep['seconds']:>10.0f}s")
print(f"{'MLP %d (autograd)' % sweep['best_hidden']:<34}{auto['test_acc']:>9.4f}{'':>11}{auto['seconds']:>10.0f}s")
for grad in ("manual", "autograd"):
    c = json.load(open(f"{out}/cnn-{grad}/summary.json"))
    print(f"{'CNN (%s)' % grad:<34}{c['test_acc']:>9.4f}{0.9771:>11.4f}{c['seconds']:>10.0f}s")
print(f"manual - autograd test acc: MLP {sweep['test_acc'] - auto['test_acc']:+.4f}")
PY
