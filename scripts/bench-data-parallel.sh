#!/usr/bin/env bash
# Data-parallel against one process on this machine's CPU, alternating runs:
# world 2 x 1 thread (`--nproc 2 --threads 2`: the two cores split) against
# world 1 x 2 threads, same global batch (world 2 takes half the
# --batch-size per rank). Prints seconds per epoch (train + val) of each run,
# world-1/world-2 pair by pair with the median (above 1: two ranks are
# faster), and the share of rank 0's train phases spent averaging gradients.
#
#   bash scripts/bench-data-parallel.sh [PAIRS] [fe|full|full224 ...]
#
# fe: EfficientNet-Lite0 feature extraction (ImageNet weights), 3 epochs;
# full: ResNet-18 full mode from random weights at 96 px, 2 epochs;
# full224: the same at the tutorial's 224 px, 1 epoch.
set -euo pipefail
cd "$(dirname "$0")/.."
pairs=${1:-3}
shift $(( $# >= 1 ? 1 : 0 ))
kinds=("${@:-fe}")
[[ $# -ge 1 ]] || kinds=(fe full)
finetune=target/release/finetune
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
python=.venv/bin/python
[[ -x $python ]] || python=python3

recipe() {
  case $1 in
    fe) echo "--arch efficientnet-lite0 --mode feature-extract --epochs 3" ;;
    full) echo "--arch resnet18 --random-init --mode full --epochs 2 --image-size 96" ;;
    full224) echo "--arch resnet18 --random-init --mode full --epochs 1 --image-size 224" ;;
    *) echo "unknown run: $1 (fe, full, full224)" >&2; exit 2 ;;
  esac
}

# "seconds-per-epoch averaging-share" of the run in $1.
measure() {
  "$python" - "$1" <<'PY'
import csv, json, sys
rows = list(csv.DictReader(open(sys.argv[1] + "/metrics.csv")))
epochs = sum(1 for r in rows if r["phase"] == "train")
summary = json.load(open(sys.argv[1] + "/summary.json"))
print(sum(float(r["seconds"]) for r in rows) / epochs, summary.get("gradient_averaging_share", 0.0))
PY
}

for kind in "${kinds[@]}"; do
  read -r -a args <<<"$(recipe "$kind")"
  ratios=()
  for ((i = 1; i <= pairs; i++)); do
    "$finetune" "${args[@]}" --batch-size 4 --threads 2 --out "$scratch/one" --overwrite >/dev/null 2>&1 \
      || { echo "the world-1 $kind run failed" >&2; exit 1; }
    "$finetune" "${args[@]}" --batch-size 2 --nproc 2 --threads 2 --out "$scratch/two" --overwrite >/dev/null 2>&1 \
      || { echo "the world-2 $kind run failed" >&2; exit 1; }
    read -r one _ <<<"$(measure "$scratch/one")"
    read -r two share <<<"$(measure "$scratch/two")"
    ratio=$("$python" -c "print(f'{$one / $two:.3f}')")
    ratios+=("$ratio")
    printf '%-4s pair %d: world 1 x 2 threads %.2f s/epoch, world 2 x 1 thread %.2f s/epoch (%.1f %% averaging gradients), 1/2 %s\n' \
      "$kind" "$i" "$one" "$two" "$("$python" -c "print(100 * $share)")" "$ratio"
  done
  median=$("$python" -c "import statistics, sys; print(f'{statistics.median(map(float, sys.argv[1:])):.3f}')" "${ratios[@]}")
  echo "$kind: world-1/world-2 per pair ${ratios[*]}; median $median"
done
