#!/usr/bin/env bash
# Gets the datasets into data/:
#   data/hymenoptera_data/{train,val}/{ants,bees}/   (PyTorch transfer-learning tutorial set)
#   data/mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz
# Usage: scripts/fetch-data.sh [--from DIR]
#   --from DIR  link from a local mirror laid out the same way (DIR/hymenoptera_data, DIR/mnist)
#   without it, downloads from the official URLs.
# Verifies what it got: image counts per split and the MNIST IDX headers.
set -euo pipefail
cd "$(dirname "$0")/.."

FROM=""
while [ $# -gt 0 ]; do
  case "$1" in
    --from) FROM=${2:?--from needs a folder}; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "fetch-data.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

HYMENOPTERA_URL=https://download.pytorch.org/tutorial/hymenoptera_data.zip
MNIST_URL=https://ossci-datasets.s3.amazonaws.com/mnist
MNIST_FILES=(train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz)
mkdir -p data

download() { # url dest
  curl -fsSL --retry 2 --connect-timeout 15 -o "$2.part" "$1" && mv "$2.part" "$2" || {
    rm -f "$2.part"
    echo "fetch-data.sh: cannot download $1 (offline?). Use --from DIR with a local mirror, e.g. --from ../shared/data" >&2
    exit 1
  }
}

if [ -n "$FROM" ]; then
  FROM=$(cd "$FROM" && pwd) || { echo "fetch-data.sh: --from $FROM: no such folder" >&2; exit 1; }
  [ -d "$FROM/hymenoptera_data" ] || { echo "fetch-data.sh: $FROM/hymenoptera_data missing" >&2; exit 1; }
  ln -sfn "$FROM/hymenoptera_data" data/hymenoptera_data
  mkdir -p data/mnist
  for f in "${MNIST_FILES[@]}"; do
    [ -f "$FROM/mnist/$f" ] || { echo "fetch-data.sh: $FROM/mnist/$f missing" >&2; exit 1; }
    ln -sfn "$FROM/mnist/$f" "data/mnist/$f"
  done
  echo "linked data/ from $FROM"
else
  if [ ! -d data/hymenoptera_data/train ]; then
    download "$HYMENOPTERA_URL" data/hymenoptera_data.zip
    (cd data && python3 -m zipfile -e hymenoptera_data.zip . && rm hymenoptera_data.zip)
  fi
  mkdir -p data/mnist
  for f in "${MNIST_FILES[@]}"; do
    [ -f "data/mnist/$f" ] || download "$MNIST_URL/$f" "data/mnist/$f"
  done
fi

python3 - <<'PY'
import gzip, os, struct, sys
bad = []
for split in ("train", "val"):
    for cls in ("ants", "bees"):
        d = f"data/hymenoptera_data/{split}/{cls}"
        n = len([f for f in os.listdir(d) if f.lower().endswith((".jpg", ".jpeg", ".png"))]) if os.path.isdir(d) else 0
        print(f"  {d}: {n} images")
        if n == 0:
            bad.append(d)
expect = {"train-images-idx3-ubyte.gz": (2051, 60000), "train-labels-idx1-ubyte.gz": (2049, 60000),
          "t10k-images-idx3-ubyte.gz": (2051, 10000), "t10k-labels-idx1-ubyte.gz": (2049, 10000)}
for name, (magic, count) in expect.items():
    path = f"data/mnist/{name}"
    try:
        with gzip.open(path) as f:
            head = struct.unpack(">II", f.read(8))
    except Exception as e:
        bad.append(f"{path} ({e})"); continue
    ok = head == (magic, count)
    print(f"  {path}: magic {head[0]}, {head[1]} items{'' if ok else '  <-- expected %d, %d' % (magic, count)}")
    if not ok:
        bad.append(path)
if bad:
    sys.exit("fetch-data.sh: verification failed: " + ", ".join(bad))
print("data verified")
PY
