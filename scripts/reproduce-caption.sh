#!/usr/bin/env bash
# Reproduces the digit-scene captioning table: makes the scene set (4000 train / 500
# val scenes, seed 0), trains the four cells on Lite0 features with the recipes the
# README measured, scores each kept model greedy and with beam 3 (`caption eval`), and
# prints BLEU-4, CIDEr-D and the scene counts of ours and both baselines.
#   rnn, lstm:    pooled features, Adam 1e-3, 3 epochs (the best epoch is 2)
#   attention:    penultimate grid (7×7×320), Adam 1e-3, 20 epochs, no penalty
#   transformer:  penultimate grid, Adam 5e-4, 25 epochs, dropout 0.1
# Usage: scripts/reproduce-caption.sh [--data-from DIR] [--device D] [--cells "rnn lstm attention transformer"]
# Results: runs/reproduce-caption/<cell>/ (summary.json, evaluation-beam3.json, figures).
# On this 2-core CPU, one thread per run: about 2 h 30 min in all (the attention LSTM 50 min).
set -euo pipefail
cd "$(dirname "$0")/.."

DEVICE=auto; DATA_ARGS=(); CELLS="rnn lstm attention transformer"
while [ $# -gt 0 ]; do
  case "$1" in
    --data-from) DATA_ARGS=(--from "$2"); shift 2 ;;
    --device) DEVICE=$2; shift 2 ;;
    --cells) CELLS=$2; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "reproduce-caption.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
recipe() {
  case "$1" in
    rnn|lstm) echo "--lr 1e-3 --epochs 3" ;;
    attention) echo "--feature-grid penultimate --attention-penalty 0 --lr 1e-3 --epochs 20 --batch-size 50" ;;
    transformer) echo "--feature-grid penultimate --lr 5e-4 --epochs 25 --batch-size 50" ;;
    *) return 1 ;;
  esac
}
for cell in $CELLS; do
  recipe "$cell" >/dev/null || { echo "reproduce-caption.sh: unknown cell $cell (rnn, lstm, attention, transformer)" >&2; exit 2; }
done

bash scripts/setup.sh
bash scripts/fetch-data.sh ${DATA_ARGS[@]+"${DATA_ARGS[@]}"}
bash scripts/fetch-models.sh efficientnet-lite0

C=target/release/caption
SCENES=data/mnist-scenes
OUT=runs/reproduce-caption
[ -f $SCENES/annotations/captions_val.json ] || $C scenes --out $SCENES
if [ "$(ls $SCENES/train | wc -l) $(ls $SCENES/val | wc -l)" != "4000 500" ]; then
  echo "reproduce-caption.sh: $SCENES is not the default scene set (4000 train, 500 val); move it away and re-run" >&2
  exit 1
fi

for cell in $CELLS; do
  echo "=== $cell: caption train $(recipe "$cell")"
  # shellcheck disable=SC2046
  $C train --cell "$cell" $(recipe "$cell") --data $SCENES --device "$DEVICE" --out "$OUT/$cell" --overwrite
  $C eval --checkpoint "$OUT/$cell" --beam 3 --device "$DEVICE"
done

echo
.venv/bin/python - "$OUT" $CELLS <<'PY'
import json, sys
out, cells = sys.argv[1], sys.argv[2:]
def row(score):
    t = score["scenes"]
    counts = [t[k]["count"] for k in ("layout_right", "digits_right", "exact_caption", "digits_in_place")]
    return f"{score['method']:<68}{score['bleu'][3]:>8.4f}{score['cider_d']:>9.4f}" + "".join(f"{c:>9}" for c in counts)
print(f"{'method (500 val scenes)':<68}{'BLEU-4':>8}{'CIDEr-D':>9}{'layout':>9}{'digits':>9}{'exact':>9}{'in place':>9}")
baselines = {}
for cell in cells:
    for name in ("summary.json", "evaluation-beam3.json"):
        scores = json.load(open(f"{out}/{cell}/{name}"))["scores"]
        print(row(scores[0]))
        for score in scores[1:]:
            features = "pooled features" if cell in ("rnn", "lstm") else "grids averaged"
            method = score["method"] + (f" ({features})" if "nearest" in score["method"] else "")
            baselines.setdefault(method, {**score, "method": method})
for score in baselines.values():
    print(row(score))
PY
