#!/usr/bin/env bash
# Times two builds of the tools against each other, alternating runs (old,
# new, old, new, ...) so that both see the same machine, and prints the
# seconds per epoch of each run and old/new pair by pair with its median
# (above 1: the new build is faster). Only ratios measured in one run of
# this script compare; the CPU changes between machines.
#
#   bash scripts/bench-before-after.sh OLD_BIN_DIR NEW_BIN_DIR [PAIRS] [WHAT...]
#
# OLD_BIN_DIR: the binaries of an earlier commit, e.g. built with
#   git worktree add /tmp/old-src <commit> && (cd /tmp/old-src && cargo build --release --bins)
# WHAT: any of fe (feature-extract Lite0, 8 epochs, train phase), full
#   (ResNet-18 from scratch at 96 px, 2 epochs, train + val), mnist (MLP,
#   800 hidden units, 2 epochs), cnn (the CNN, 1 epoch on 10 000 images) and
#   caption (RNN on the digit scenes, 2 epochs; `caption scenes` and their
#   Lite0 features are made once, before the first pair); all but caption by
#   default.
set -euo pipefail
cd "$(dirname "$0")/.."

[[ $# -ge 2 ]] || { sed -n '2,15p' "$0"; exit 2; }
old=$1 new=$2 pairs=${3:-3}
shift $(( $# >= 3 ? 3 : 2 ))
what=("${@:-fe full mnist cnn}")
read -r -a what <<<"${what[*]}"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
python=.venv/bin/python
[[ -x $python ]] || python=python3
# Binaries built elsewhere find libtorch here too.
export LD_LIBRARY_PATH=$PWD/libtorch/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

# Seconds per epoch of the run in $1 of kind $2.
seconds_per_epoch() {
  "$python" - "$1" "$2" <<'PY'
import csv, json, sys
folder, kind = sys.argv[1], sys.argv[2]
if kind == "mnist":
    rows = list(csv.DictReader(open(folder + "/results.csv")))
    print(sum(float(r["seconds"]) for r in rows) / 2)
elif kind == "cnn":
    epochs = json.load(open(folder + "/summary.json"))["per_epoch"]
    print(sum(e["seconds"] for e in epochs) / len(epochs))
elif kind == "caption":
    rows = list(csv.DictReader(open(folder + "/epochs.csv")))
    print(sum(float(r["seconds"]) for r in rows) / len(rows))
else:
    rows = list(csv.DictReader(open(folder + "/metrics.csv")))
    phases = ("train",) if kind == "fe" else ("train", "val")
    times = [float(r["seconds"]) for r in rows if r["phase"] in phases]
    epochs = sum(1 for r in rows if r["phase"] == "train")
    print(sum(times) / epochs)
PY
}

run() { # bin_dir kind out
  case $2 in
    fe) "$1/finetune" --arch efficientnet-lite0 --mode feature-extract --epochs 8 --threads 2 --out "$3" --overwrite ;;
    full) "$1/finetune" --arch resnet18 --random-init --mode full --epochs 2 --image-size 96 --threads 2 --out "$3" --overwrite ;;
    mnist) "$1/mnist" mlp --hidden 800 --epochs 2 --threads 2 --out "$3" --overwrite ;;
    cnn) "$1/mnist" cnn --epochs 1 --train-limit 10000 --threads 2 --out "$3" --overwrite ;;
    caption) "$1/caption" train --data "$scenes" --cell rnn --lr 1e-3 --epochs 2 --threads 2 --out "$3" --overwrite ;;
    *) echo "unknown run: $2 (fe, full, mnist, cnn, caption)" >&2; exit 2 ;;
  esac >/dev/null 2>&1
}

scenes=target/bench-scenes
if [[ " ${what[*]} " == *" caption "* && ! -f $scenes/.features-made ]]; then
  "$new/caption" scenes --out "$scenes" --overwrite >/dev/null 2>&1
  run "$new" caption "$scratch/warm-up" && touch "$scenes/.features-made"
fi

for kind in "${what[@]}"; do
  ratios=()
  for ((i = 1; i <= pairs; i++)); do
    run "$old" "$kind" "$scratch/old" || { echo "$old: the $kind run failed" >&2; exit 1; }
    old_s=$(seconds_per_epoch "$scratch/old" "$kind")
    run "$new" "$kind" "$scratch/new" || { echo "$new: the $kind run failed" >&2; exit 1; }
    new_s=$(seconds_per_epoch "$scratch/new" "$kind")
    ratio=$("$python" -c "print(f'{$old_s / $new_s:.3f}')")
    ratios+=("$ratio")
    printf '%-6s pair %d: old %.3f s/epoch, new %.3f s/epoch, old/new %s\n' "$kind" "$i" "$old_s" "$new_s" "$ratio"
  done
  median=$("$python" -c "import statistics, sys; print(f'{statistics.median(map(float, sys.argv[1:])):.3f}')" "${ratios[@]}")
  echo "$kind: old/new per pair ${ratios[*]}; median $median"
done
