#!/usr/bin/env bash
# Gets the face set for `eigenfaces` into data/faces/, offline-safe:
#   data/faces/lfw_faces.npy   (100, 25, 25) float64 in [0, 1]: the 100 real faces of
#                              scikit-image's lfw_subset (its other 100 images are not faces)
# The array ships inside the scikit-image wheel on PyPI; this script takes it from that
# wheel (pip download from PyPI, or --wheel FILE already on disk) and nowhere else,
# and checks its SHA-256.
# Usage: scripts/fetch-faces.sh [--wheel scikit_image-0.26.0-*.whl]
set -euo pipefail
cd "$(dirname "$0")/.."

SKIMAGE=scikit-image==0.26.0
LFW_SHA256=9560ec2f5edfac01973f63a8a99d00053fecd11e21877e18038fbe500f8e872c
PY=.venv/bin/python
WHEEL=""
while [ $# -gt 0 ]; do
  case "$1" in
    --wheel) WHEEL=${2:?--wheel needs a file}; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "fetch-faces.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
[ -x "$PY" ] || { echo "fetch-faces.sh: $PY missing: run scripts/setup.sh first" >&2; exit 1; }

if [ -f data/faces/lfw_faces.npy ] && [ -z "$WHEEL" ]; then
  echo "  data/faces/lfw_faces.npy already there"
else
  TMP=$(mktemp -d)
  trap 'rm -rf "$TMP"' EXIT
  if [ -z "$WHEEL" ]; then
    echo "==> downloading the $SKIMAGE wheel from PyPI (about 14 MB) for its lfw_subset.npy"
    "$PY" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: "$SKIMAGE" -d "$TMP" \
      || { echo "fetch-faces.sh: pip download $SKIMAGE failed (is PyPI reachable? or pass --wheel FILE)" >&2; exit 1; }
    WHEEL=$(ls "$TMP"/scikit_image-*.whl)
  fi
  mkdir -p data/faces
  "$PY" - "$WHEEL" "$LFW_SHA256" <<'PY'
import hashlib, io, sys, zipfile
import numpy as np
wheel, expected = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    raw = z.read("skimage/data/lfw_subset.npy")
got = hashlib.sha256(raw).hexdigest()
if got != expected:
    sys.exit(f"fetch-faces.sh: lfw_subset.npy in {wheel} has SHA-256 {got}, expected {expected}")
faces = np.load(io.BytesIO(raw), allow_pickle=False)[:100]
np.save("data/faces/lfw_faces.npy.part.npy", np.ascontiguousarray(faces))
PY
  mv data/faces/lfw_faces.npy.part.npy data/faces/lfw_faces.npy
fi

"$PY" - <<'PY'
import sys
import numpy as np
a = np.load("data/faces/lfw_faces.npy", allow_pickle=False)
ok = a.shape == (100, 25, 25) and a.dtype == np.float64 and 0.0 <= a.min() and a.max() <= 1.0
print(f"  data/faces/lfw_faces.npy: {a.shape} {a.dtype}, values {a.min():.3f}..{a.max():.3f}")
if not ok:
    sys.exit("fetch-faces.sh: data/faces/lfw_faces.npy is not (100, 25, 25) float64 in [0, 1]; delete it and re-run")
print("faces verified")
PY
