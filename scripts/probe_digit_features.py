"""How well a backbone's grid says which digit is where: a linear probe.

    make OUT        writes OUT/{train,val}/*.png and OUT/annotations/ (a caption folder:
                    1,500 + 10 scenes of two MNIST test/train digits on one line of the
                    96-px canvas, as `caption scenes` draws them) and OUT/boxes.json
    probe OUT FILE… for each cached grid file of OUT's train images: the mean of the grid
                    cells whose centres lie in the first digit's 28-px box, standardized,
                    then logistic regression on 1,200 scenes and its accuracy on 300

Used by scripts/probe-digit-features.sh; needs numpy, Pillow and scikit-learn (the venv).
"""
import gzip, json, os, random, struct, sys

import numpy as np

CANVAS, MARGIN, CELL, JITTER = 96, 6, 28, 2
TRAIN, HELD_OUT = 1200, 300


def mnist(prefix):
    with gzip.open(f"data/mnist/{prefix}-images-idx3-ubyte.gz") as f:
        pixels = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, CELL, CELL)
    with gzip.open(f"data/mnist/{prefix}-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    return pixels, labels


def make(out):
    from PIL import Image

    rng = random.Random(0)
    boxes = {}
    for split, prefix, count in [("train", "train", TRAIN + HELD_OUT), ("val", "t10k", 10)]:
        pixels, labels = mnist(prefix)
        os.makedirs(f"{out}/{split}", exist_ok=True)
        images, captions, rows = [], [], []
        for i in range(count):
            canvas = np.zeros((CANVAS, CANVAS), np.uint8)
            horizontal, line = rng.random() < 0.5, rng.randrange(3)
            scene = []
            for position in rng.sample(range(3), 2):
                row, col = (line, position) if horizontal else (position, line)
                top = MARGIN + row * CELL + rng.randint(-JITTER, JITTER)
                left = MARGIN + col * CELL + rng.randint(-JITTER, JITTER)
                k = rng.randrange(len(labels))
                patch = canvas[max(top, 0) : top + CELL, max(left, 0) : left + CELL]
                digit = pixels[k][max(0, -top) :, max(0, -left) :][: patch.shape[0], : patch.shape[1]]
                np.maximum(patch, digit, out=patch)
                scene.append((top, left, int(labels[k])))
            name = f"probe_{i:05d}.png"
            Image.fromarray(canvas).save(f"{out}/{split}/{name}")
            images.append({"id": i, "file_name": name, "width": CANVAS, "height": CANVAS})
            captions.append({"id": i, "image_id": i, "caption": "two digits"})
            rows.append(scene)
        os.makedirs(f"{out}/annotations", exist_ok=True)
        with open(f"{out}/annotations/captions_{split}.json", "w") as f:
            json.dump({"images": images, "annotations": captions}, f)
        boxes[split] = rows
    with open(f"{out}/boxes.json", "w") as f:
        json.dump(boxes, f)


def read_grid(path):
    """The f16 `features` tensor of a .safetensors file, as f32."""
    with open(path, "rb") as f:
        length = struct.unpack("<Q", f.read(8))[0]
        info = json.loads(f.read(length))["features"]
        begin, end = info["data_offsets"]
        f.seek(8 + length + begin)
        data = np.frombuffer(f.read(end - begin), np.float16)
    return data.reshape(info["shape"]).astype(np.float32)


def probe(out, paths):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    boxes = json.load(open(f"{out}/boxes.json"))["train"]
    print(f"{'grid file':<64}{'grid':>14}  held-out accuracy (C = 0.01 / 0.1 / 1)")
    for path in paths:
        grid = read_grid(path)
        images, locations, channels = grid.shape
        side = round(locations**0.5)
        # The val transform crops the canvas's margin: the grid covers its inner 84 px.
        centres = (np.arange(side) + 0.5) * (CANVAS - 2 * MARGIN) / side
        features, labels = [], []
        for image in range(images):
            top, left, label = boxes[image][0]
            rows = (centres >= top - MARGIN) & (centres < top - MARGIN + CELL)
            cols = (centres >= left - MARGIN) & (centres < left - MARGIN + CELL)
            cells = grid[image].reshape(side, side, channels)[rows][:, cols]
            features.append(cells.reshape(-1, channels).mean(0))
            labels.append(label)
        x, y = np.array(features), np.array(labels)
        x = StandardScaler().fit(x[:TRAIN]).transform(x)
        scores = [
            LogisticRegression(C=c, max_iter=3000).fit(x[:TRAIN], y[:TRAIN]).score(x[TRAIN:], y[TRAIN:])
            for c in (0.01, 0.1, 1.0)
        ]
        shape = f"{side}×{side}×{channels}"
        print(f"{os.path.basename(path):<64}{shape:>14}  " + " / ".join(f"{s:.3f}" for s in scores))


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "make":
        make(sys.argv[2])
    elif len(sys.argv) >= 4 and sys.argv[1] == "probe":
        probe(sys.argv[2], sys.argv[3:])
    else:
        sys.exit(__doc__)
