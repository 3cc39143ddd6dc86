#!/usr/bin/env bash
# Every tool on CUDA in one call, next to the PyTorch reference where there is one, ending with
# one table: finetune (both modes, fp32 and --amp: s/epoch, data wait, best val), mnist cnn
# (s/epoch, test acc; reference scripts/reference/mnist.py), caption train on the digit scenes
# (RNN and LSTM: s/epoch, val BLEU-4), eigenfaces on LFW (PCA seconds, 95 % components), and a
# 4-run mnist cnn sweep with all four sharing the device against one at a time (runs per hour),
# and a full-mode finetune as one NCCL rank (world size 1) against the same run without a group.
# Usage: scripts/cuda-check.sh [--device D] [--bin-dir DIR] [--quick] [--only LIST] [--weights FILE] [--data DIR] [--epochs N]
#   defaults: --device cuda, target/release/, EfficientNet-Lite0's file in models/,
#   data/hymenoptera_data, 25 finetune epochs (reference: 10). --quick: a few epochs on a
#   subset each, to check the script itself (e.g. --device cpu --quick). --only: some of
#   finetune,mnist,caption,eigenfaces,sweep,dist [default: all]. On a machine with
#   torch but without this build, point LD_LIBRARY_PATH at torch/lib and --bin-dir at the
#   carried binaries (finetune, mnist, caption, eigenfaces).
set -uo pipefail
cd "$(dirname "$0")/.."
WEIGHTS=models/efficientnet-lite0-57934424.pth; DATA=data/hymenoptera_data; EPOCHS=25; DEVICE=cuda
BIN_DIR=target/release; QUICK=0; ONLY=finetune,mnist,caption,eigenfaces,sweep,dist; PY=python3; [ -x .venv/bin/python ] && PY=.venv/bin/python
while [ $# -gt 0 ]; do
  case "$1" in
    --weights) WEIGHTS=$2; shift 2 ;;
    --data) DATA=$2; shift 2 ;;
    --epochs) EPOCHS=$2; shift 2 ;;
    --device) DEVICE=$2; shift 2 ;;
    --bin-dir) BIN_DIR=$2; shift 2 ;;
    --bin) BIN_DIR=$(dirname "$2"); shift 2 ;;
    --quick) QUICK=1; shift ;;
    --only) ONLY=$2; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "cuda-check.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
OUT_DIR=runs/cuda-check; mkdir -p "$OUT_DIR"
TABLE=$OUT_DIR/table.md
printf '| tool | run | ours | PyTorch reference |\n|---|---|---|---|\n' > "$TABLE"
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

# The recipes, and the smaller ones of --quick.
MNIST_LIMIT=(); CNN_EPOCHS=5; CAPTION_EPOCHS=15; SCENES=data/mnist-scenes; SWEEP_LIMIT=10000
if [ "$QUICK" = 1 ]; then
  EPOCHS=2; MNIST_LIMIT=(--train-limit 2000); CNN_EPOCHS=1; CAPTION_EPOCHS=2
  SCENES=$OUT_DIR/scenes-quick; SWEEP_LIMIT=1000
fi
REF_EPOCHS=$(( EPOCHS < 10 ? EPOCHS : 10 ))

wanted() { [[ ",$ONLY," == *",$1,"* ]]; }
row() { printf '| %s | %s | %s | %s |\n' "$1" "$2" "$3" "$4" >> "$TABLE"; }
# Runs a tool into OUT_DIR/NAME with its output in NAME.log; says the first error line on failure.
run_tool() { # name, binary, args...
  local name=$1 binary=$2; shift 2
  echo "== ours $name"
  "$BIN_DIR/$binary" "$@" --device "$DEVICE" --out "$OUT_DIR/$name" --overwrite > "$OUT_DIR/$name.log" 2>&1 \
    || { grep -m1 '^error' "$OUT_DIR/$name.log" || tail -3 "$OUT_DIR/$name.log"; return 1; }
}
# One line of a run's numbers (see scripts/cuda-check-lines.py).
numbers() { "$PY" scripts/cuda-check-lines.py "$@"; }

# --- finetune
finetune() { # name, extra args...
  local name=$1; shift
  run_tool "$name" finetune --arch efficientnet-lite0 --weights "$WEIGHTS" --data "$DATA" --epochs "$EPOCHS" "$@" \
    || { row finetune "$name" failed ""; return; }
  local line
  line=$(numbers finetune "$OUT_DIR/$name")
  echo "   $line"; row finetune "$name, $EPOCHS epochs" "$line" ""
}
wanted finetune && for name in feature-extract feature-extract-amp full full-amp; do
  amp=(); [[ $name == *-amp ]] && amp=(--amp)
  finetune "$name" --mode "${name%-amp}" "${amp[@]}"
done
wanted finetune && for mode in feature-extract full; do
  echo "== reference $mode ($REF_EPOCHS epochs)"
  "$PY" scripts/reference/transfer_learning.py --arch efficientnet-lite0 --mode $mode --device "$DEVICE" \
    --epochs $REF_EPOCHS --weights "$WEIGHTS" --data "$DATA" > "$OUT_DIR/reference-$mode.log" 2>&1
  line=$(numbers reference-finetune "$OUT_DIR/reference-$mode.log") \
    || { tail -3 "$OUT_DIR/reference-$mode.log"; line=failed; }
  echo "   $line"; row finetune "reference $mode, $REF_EPOCHS epochs" "" "$line"
done

# --- mnist cnn
if wanted mnist; then
  ours=failed; theirs=failed
  if run_tool mnist-cnn mnist cnn --epochs $CNN_EPOCHS "${MNIST_LIMIT[@]}"; then
    ours=$(numbers mnist-cnn "$OUT_DIR/mnist-cnn")
  fi
  echo "   $ours"
  echo "== reference mnist cnn"
  if "$PY" scripts/reference/mnist.py cnn --epochs $CNN_EPOCHS --device "$DEVICE" "${MNIST_LIMIT[@]}" \
      > "$OUT_DIR/reference-mnist-cnn.log" 2>&1; then
    theirs=$(numbers reference-mnist "$OUT_DIR/reference-mnist-cnn.log")
  fi
  echo "   $theirs"
  row "mnist cnn" "$CNN_EPOCHS epoch(s)${MNIST_LIMIT[*]:+, ${MNIST_LIMIT[*]}}" "$ours" "$theirs"
fi

# --- caption train on the digit scenes
if wanted caption && [ ! -d "$SCENES/annotations" ]; then
  echo "== caption scenes into $SCENES"
  scenes_size=(); [ "$QUICK" = 1 ] && scenes_size=(--train 300 --val 60)
  "$BIN_DIR/caption" scenes --out "$SCENES" --overwrite "${scenes_size[@]}" > "$OUT_DIR/scenes.log" 2>&1 \
    || { grep -m1 '^error' "$OUT_DIR/scenes.log"; }
fi
wanted caption && for cell in rnn lstm; do
  ours=failed
  if run_tool "caption-$cell" caption train --data "$SCENES" --cell $cell --lr 1e-3 --epochs $CAPTION_EPOCHS; then
    ours=$(numbers caption "$OUT_DIR/caption-$cell")
  fi
  echo "   $ours"; row "caption train" "$cell, $CAPTION_EPOCHS epochs" "$ours" ""
done

# --- eigenfaces
if wanted eigenfaces; then
  ours=failed
  if run_tool eigenfaces eigenfaces --input data/faces/lfw_faces.npy; then
    ours=$(numbers eigenfaces "$OUT_DIR/eigenfaces")
  fi
  echo "   $ours"; row eigenfaces "LFW faces" "$ours" ""
fi

# --- a 4-run sweep: all four sharing the device, then one at a time
printf 'tool = "mnist cnn"\n[base]\ndata = "../../data/mnist"\nepochs = 1\ntrain-limit = %s\n[grid]\nseed = [0, 1, 2, 3]\n' \
  "$SWEEP_LIMIT" > "$OUT_DIR/sweep.toml"
wanted sweep && for jobs in 4 1; do
  echo "== sweep of 4 mnist cnn runs, $jobs at once on $DEVICE"
  rm -rf "$OUT_DIR/sweep-$jobs"
  start=$("$PY" -c 'import time; print(time.time())')
  if "$BIN_DIR/finetune" sweep "$OUT_DIR/sweep.toml" --out "$OUT_DIR/sweep-$jobs" --devices "$DEVICE" \
      --jobs $jobs --jobs-per-device $jobs > "$OUT_DIR/sweep-$jobs.log" 2>&1; then
    line=$("$PY" -c 'import sys, time; s = time.time() - float(sys.argv[1]); print(f"{s:.1f} s = {4 * 3600 / s:.0f} runs/h")' \
      "$start")
  else
    line="failed: $(grep -m1 '^error' "$OUT_DIR/sweep-$jobs.log")"
  fi
  echo "   $line"; row sweep "4 mnist cnn runs ($SWEEP_LIMIT images, 1 epoch), $jobs at once" "$line" ""
done

# --- data-parallel on NCCL at world size 1 (one GPU cannot hold two NCCL ranks) against a plain run
if wanted dist && [[ $DEVICE == cpu ]]; then
  echo "== dist: skipped (NCCL needs CUDA; --device cpu)"
elif wanted dist; then
  port=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  finetune dist-plain --mode full
  RANK=0 WORLD_SIZE=1 LOCAL_RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port \
    finetune dist-nccl-world1 --mode full --dist-backend nccl
  grep -o '"dist_backend": *"[a-z]*"' "$OUT_DIR/dist-nccl-world1/summary.json" || echo "   no nccl in the summary"
fi

echo; echo "device: $DEVICE"; cat "$TABLE"
