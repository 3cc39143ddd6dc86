#!/usr/bin/env bash
# How well EfficientNet-Lite0's grid says which digit is where, at 224 and 448 px: a
# linear probe (scripts/probe_digit_features.py) on the grid cells under one digit of
# 1,500 two-digit scenes drawn as `caption scenes` draws them. The README's choice of
# `caption train --image-size 448` rests on it.
# Usage: scripts/probe-digit-features.sh [--data-from DIR]
# Results: runs/probe-digits/ (the scenes, their cached grids); about 25 min on this 2-core CPU.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
  -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
  ""|--data-from) ;;
  *) echo "probe-digit-features.sh: unknown option $1" >&2; exit 2 ;;
esac
bash scripts/prepare.sh "$@"

OUT=runs/probe-digits
SET=$OUT/scenes
rm -rf "$SET"
.venv/bin/python scripts/probe_digit_features.py make "$SET"
# A one-epoch run computes and caches each grid (SET/features/); its training is not used.
for grid in "last 224" "penultimate 224" "penultimate 448"; do
  read -r layer size <<<"$grid"
  echo "=== Lite0 $layer grid at $size px"
  target/release/caption train --data "$SET" --cell attention --feature-grid "$layer" --image-size "$size" \
    --epochs 1 --out "$OUT/run-$layer-$size" --overwrite >/dev/null
done
.venv/bin/python scripts/probe_digit_features.py probe "$SET" \
  "$SET"/features/efficientnet-lite0-grid-last-train.safetensors \
  "$SET"/features/efficientnet-lite0-grid-penultimate-train.safetensors \
  "$SET"/features/efficientnet-lite0-448px-grid-penultimate-train.safetensors
