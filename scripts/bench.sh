#!/usr/bin/env bash
# Side-by-side speed of finetune and the PyTorch reference (scripts/reference/transfer_learning.py)
# on the same data, arch, mode and epochs, run alternately; prints seconds per epoch (median),
# wall time, peak RSS, best val accuracy and the ratio reference/ours.
# Usage: scripts/bench.sh [--arch A] [--mode M|all] [--epochs N] [--reps R] [--weights FILE] [--precision P]
#                        [--references "fp32 bf16"] [--data DIR] [--subset N]
#   defaults: efficientnet-lite0, both modes, 3 epochs, 1 repetition, the arch's file in models/, fp32.
#   --arch: efficientnet-lite0, or a torchvision backbone the reference knows (resnet18, resnet50,
#   mobilenet-v3-large, efficientnet-b0, convnext-tiny, vit-b-16, swin-t); speed needs no ImageNet
#   weights, so without models/<its file> torchvision writes a random-init one to runs/bench/.
#   --precision bf16: ours in bf16, then the reference in fp32 and under bf16 autocast, each mode
#   (--references fp32 runs only the first, for long runs).
#   --data DIR: another image folder (default data/hymenoptera_data); --subset N: the first N images
#   (by name) of each class in each split of it, linked into runs/bench/subset-N (for the big backbones).
set -euo pipefail
cd "$(dirname "$0")/.."

ARCH=efficientnet-lite0; MODES="feature-extract full"; EPOCHS=3; REPS=1; WEIGHTS=""; PRECISION=fp32; REFERENCES=
DATA=data/hymenoptera_data; SUBSET=
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) ARCH=$2; shift 2 ;;
    --mode) [ "$2" = all ] || MODES=$2; shift 2 ;;
    --epochs) EPOCHS=$2; shift 2 ;;
    --reps) REPS=$2; shift 2 ;;
    --weights) WEIGHTS=$2; shift 2 ;;
    --precision) PRECISION=$2; shift 2 ;;
    --references) REFERENCES=$2; shift 2 ;;
    --data) DATA=$2; shift 2 ;;
    --subset) SUBSET=$2; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "bench.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
[ -x target/release/finetune ] || bash scripts/setup.sh
mkdir -p runs/bench
if [ -z "$WEIGHTS" ]; then
  WEIGHTS=$(target/release/finetune --list-archs --models-dir models | awk -v arch="$ARCH" '$1 == arch { print $4 }')
  [ -n "$WEIGHTS" ] || { echo "bench.sh: unknown --arch $ARCH (finetune --list-archs)" >&2; exit 2; }
  if [ ! -f "$WEIGHTS" ] && [ "$ARCH" != efficientnet-lite0 ]; then
    WEIGHTS=runs/bench/$ARCH-random-init.pth
    [ -f "$WEIGHTS" ] || .venv/bin/python scripts/reference/transfer_learning.py --arch "$ARCH" --write-random-init "$WEIGHTS"
  fi
fi
[ -f "$WEIGHTS" ] || { echo "bench.sh: $WEIGHTS missing (scripts/fetch-models.sh, or --weights FILE)" >&2; exit 1; }
case "$PRECISION" in
  fp32) REFERENCE_PRECISIONS=fp32 ;;
  bf16) REFERENCE_PRECISIONS="fp32 bf16" ;;
  *) echo "bench.sh: --precision fp32 or bf16" >&2; exit 2 ;;
esac
if [ -n "$REFERENCES" ]; then
  for precision in $REFERENCES; do
    case "$precision" in fp32|bf16) ;; *) echo "bench.sh: --references takes fp32 and/or bf16" >&2; exit 2 ;; esac
  done
  REFERENCE_PRECISIONS=$REFERENCES
fi
if [ -n "$SUBSET" ]; then
  subset=runs/bench/subset-$SUBSET
  rm -rf "$subset"
  for class_dir in "$DATA"/*/*/; do
    target=$subset/${class_dir#"$DATA"/}
    mkdir -p "$target"
    find "$class_dir" -maxdepth 1 -type f | sort | head -n "$SUBSET" | while read -r image; do
      ln -s "$(realpath "$image")" "$target/"
    done
  done
  DATA=$subset
fi

RESULTS=runs/bench/results.jsonl
: > "$RESULTS"
for rep in $(seq 1 "$REPS"); do
  for mode in $MODES; do
    out=runs/bench/ours-$ARCH-$mode
    echo "== rep $rep: ours $ARCH $mode $PRECISION ($EPOCHS epochs) $(uptime | sed 's/.*load/load/')"
    /usr/bin/time -f "%e %M" -o runs/bench/time.txt target/release/finetune --arch "$ARCH" --mode "$mode" \
      --epochs "$EPOCHS" --weights "$WEIGHTS" --precision "$PRECISION" --data "$DATA" --out "$out" --overwrite > runs/bench/ours.log 2>&1
    read -r wall rss < runs/bench/time.txt
    python3 - "$out" "$wall" "$rss" "$mode" "$PRECISION" >> "$RESULTS" <<'PY'
import csv, json, sys
out, wall, rss, mode = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
who = "ours" if sys.argv[5] == "fp32" else f"ours {sys.argv[5]}"
rows = list(csv.DictReader(open(f"{out}/metrics.csv")))
epochs = {}
for r in rows:
    epochs[r["epoch"]] = epochs.get(r["epoch"], 0) + float(r["seconds"])
best = json.load(open(f"{out}/summary.json"))["best_val_acc"]
print(json.dumps({"who": who, "mode": mode, "epoch_seconds": list(epochs.values()), "wall": wall, "rss_mb": rss / 1024, "best": best}))
PY
    for precision in $REFERENCE_PRECISIONS; do
      echo "== rep $rep: reference $ARCH $mode $precision ($EPOCHS epochs) $(uptime | sed 's/.*load/load/')"
      /usr/bin/time -f "%e %M" -o runs/bench/time.txt .venv/bin/python scripts/reference/transfer_learning.py --arch "$ARCH" \
        --mode "$mode" --epochs "$EPOCHS" --weights "$WEIGHTS" --precision "$precision" --data "$DATA" > runs/bench/reference.log 2>&1
      read -r wall rss < runs/bench/time.txt
      python3 - "$wall" "$rss" "$mode" "$precision" >> "$RESULTS" <<'PY'
import json, sys
wall, rss, mode = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
who = "reference" if sys.argv[4] == "fp32" else f"reference {sys.argv[4]}"
line = [l for l in open("runs/bench/reference.log") if l.startswith("RESULT ")][-1]
r = json.loads(line[len("RESULT "):])
print(json.dumps({"who": who, "mode": mode, "epoch_seconds": r["epoch_seconds"], "wall": wall, "rss_mb": rss / 1024, "best": r["best_val_acc"]}))
PY
    done
  done
done

python3 - "$RESULTS" "$ARCH" "$EPOCHS" "$DATA" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
arch, epochs = sys.argv[2], sys.argv[3]
print(f"\n{arch}, {epochs} epochs on {sys.argv[4]}, CPU (reference: PyTorch + torchvision, DataLoader num_workers=2)")
print(f"{'mode':<17}{'who':<16}{'s/epoch':>9}{'wall s':>9}{'peak RSS MB':>13}{'best val':>10}")
for mode in dict.fromkeys(r["mode"] for r in rows):
    med = {}
    for who in dict.fromkeys(r["who"] for r in rows):
        rs = [r for r in rows if r["mode"] == mode and r["who"] == who]
        per_epoch = statistics.median(s for r in rs for s in r["epoch_seconds"])
        wall = statistics.median(r["wall"] for r in rs)
        med[who] = (per_epoch, wall)
        print(f"{mode:<17}{who:<16}{per_epoch:>9.1f}{wall:>9.1f}{max(r['rss_mb'] for r in rs):>13.0f}{rs[-1]['best']:>10.4f}")
    ours = next(who for who in med if who.startswith("ours"))
    for ref in (who for who in med if who.startswith("reference")):
        ratio = f"{ref} / {ours}"
        print(f"{mode:<17}{ratio:<25}{med[ref][0] / med[ours][0]:>9.2f}x/epoch{med[ref][1] / med[ours][1]:>7.2f}x wall")
PY
