"""How far apart `finetune audit`'s two near-duplicate measures put copies
of a photo and different photos (the README's table, "Auditing a dataset"):

    .venv/bin/python scripts/audit-thresholds.py [DATA] [PER_CLASS]

Takes the first PER_CLASS (6) photos of each class of DATA/val
(data/hymenoptera_data), saves each losslessly into train/ and eight altered
copies of it (JPEG quality 70 each) into val/ of a scratch folder, audits it
with every pair listed (--phash-distance 64 --feature-similarity 0.0001),
and prints, per alteration, the pHash distances and feature cosines between
a photo and its copies, then the closest pair of different photos.
"""
import collections
import json
import os
import subprocess
import sys
import tempfile

from PIL import Image, ImageEnhance, ImageOps

data = sys.argv[1] if len(sys.argv) > 1 else "data/hymenoptera_data"
per_class = int(sys.argv[2]) if len(sys.argv) > 2 else 6


def alterations(image):
    w, h = image.size
    crop = lambda f: image.crop((int(w * f), int(h * f), w - int(w * f), h - int(h * f)))
    return {
        "JPEG quality 70": image,
        "brightness x1.25": ImageEnhance.Brightness(image).enhance(1.25),
        "greyscale": ImageOps.grayscale(image).convert("RGB"),
        "resized to 50%": image.resize((w // 2, h // 2), Image.BILINEAR),
        "3% cropped per side": crop(0.03),
        "mirrored": ImageOps.mirror(image),
        "rotated 5 degrees": image.rotate(5, resample=Image.BILINEAR),
        "10% cropped per side": crop(0.10),
    }


with tempfile.TemporaryDirectory() as scratch:
    os.makedirs(os.path.join(scratch, "set", "train", "photo"))
    os.makedirs(os.path.join(scratch, "set", "val", "photo"))
    names, k = {}, 0
    for cls in sorted(os.listdir(os.path.join(data, "val"))):
        for name in sorted(os.listdir(os.path.join(data, "val", cls)))[:per_class]:
            k += 1
            image = Image.open(os.path.join(data, "val", cls, name)).convert("RGB")
            image.save(os.path.join(scratch, "set", "train", "photo", f"p{k:03d}.png"))
            for a, (label, altered) in enumerate(alterations(image).items()):
                altered.save(os.path.join(scratch, "set", "val", "photo", f"p{k:03d}_{a}.jpg"), quality=70)
                names[a] = label
    out = os.path.join(scratch, "audit")
    run = subprocess.run(
        ["target/release/finetune", "audit", os.path.join(scratch, "set"), "--out", out]
        + ["--phash-distance", "64", "--feature-similarity", "0.0001"],
        capture_output=True,
        text=True,
    )
    if run.returncode != 0:
        sys.exit(run.stderr)
    pairs = json.load(open(os.path.join(out, "audit.json")))["near_duplicates"]

photo = lambda path: os.path.basename(path)[:4]
copies, different = collections.defaultdict(list), []
for pair in pairs:
    a, b = pair["a"]["path"], pair["b"]["path"]
    measures = (pair["phash_distance"], pair["cosine"])
    if photo(a) != photo(b):
        different.append(measures)
    elif a.endswith(".png") != b.endswith(".png"):
        altered = b if b.endswith(".jpg") else a
        copies[names[int(altered[:-4].split("_")[-1])]].append(measures)

median = lambda values: sorted(values)[len(values) // 2]
print(f"{k} photos, {len(names)} alterations of each: pHash bits apart (most, median), cosine (least, median),")
print("and the copies found at the defaults (pHash distance <= 8 or cosine >= 0.9)")
for label in names.values():
    d, c = [m[0] for m in copies[label]], [m[1] for m in copies[label]]
    found = sum(1 for m in copies[label] if m[0] <= 8 or m[1] >= 0.9)
    print(f"{label:22s} pHash {max(d):2d} {median(d):2d}   cosine {min(c):.3f} {median(c):.3f}   found {found}/{len(d)}")
print(f"{'different photos':22s} pHash >= {min(m[0] for m in different)}   cosine <= {max(m[1] for m in different):.3f}")
