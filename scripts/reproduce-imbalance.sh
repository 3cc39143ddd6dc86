#!/usr/bin/env bash
# Reproduces the README's class-imbalance table: ants/bees cut to 4:1 (the first
# JPEG files by name of each class folder: train 120 ants and 30 bees, val 70 and 17, as
# symbolic links in data/hymenoptera-imbalanced), then examples/imbalance.toml:
# Lite0 feature extraction, 5 epochs, plain / --class-weights auto / --sampler
# balanced, seeds 0-2. `finetune report` prints each recipe's mean ± std of the best
# epoch's val accuracy, macro-F1 and balanced accuracy (the best epoch by val accuracy).
# Usage: scripts/reproduce-imbalance.sh [--data-from DIR]
# Results: runs/imbalance/ (made anew: one folder per point, results.md). About 8 min on this 2-core CPU.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
  -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
  ""|--data-from) ;;
  *) echo "reproduce-imbalance.sh: unknown option $1" >&2; exit 2 ;;
esac
bash scripts/prepare.sh "$@"

SOURCE=$(realpath data/hymenoptera_data)
TARGET=data/hymenoptera-imbalanced
rm -rf "$TARGET"
for cut in "train ants 120" "train bees 30" "val ants 70" "val bees 17"; do
  read -r split class count <<<"$cut"
  mkdir -p "$TARGET/$split/$class"
  find "$SOURCE/$split/$class" -maxdepth 1 -type f -name '*.jpg' -printf '%f\n' | LC_ALL=C sort | head -n "$count" |
    while read -r name; do ln -s "$SOURCE/$split/$class/$name" "$TARGET/$split/$class/$name"; done
done

F=target/release/finetune
rm -rf runs/imbalance   # this script's own results, made again from the new folder
$F sweep examples/imbalance.toml --jobs 1
$F report runs/imbalance

