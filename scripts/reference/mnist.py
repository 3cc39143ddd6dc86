"""The PyTorch reference for `mnist`: the same MLP (affine-ReLU-affine) or CNN
(conv 32x7x7 pad 3 - ReLU - maxpool 2 - affine - ReLU - affine), the same
50,000/10,000 split sizes, normalization, init scale, Adam (lr 1e-3, decay 0.9
per epoch), batch 100 and epochs, with autograd; for side-by-side timing.

    python mnist.py mlp --hidden 800 --epochs 10 --data data/mnist
    python mnist.py cnn --epochs 5 --data data/mnist --device cuda

Prints one JSON line prefixed `RESULT ` with seconds and accuracies.
"""
import argparse
import gzip
import json
import time

import numpy as np
import torch
import torch.nn as nn

parser = argparse.ArgumentParser()
parser.add_argument("net", choices=["mlp", "cnn"])
parser.add_argument("--hidden", type=int, default=None)
parser.add_argument("--epochs", type=int, default=None)
parser.add_argument("--data", default="data/mnist")
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--device", default="cpu")
parser.add_argument("--train-limit", type=int, default=50000, help="train on the first N of the 50,000 (quick checks)")
args = parser.parse_args()
torch.manual_seed(args.seed)
device = torch.device(args.device)
start = time.time()


def idx(name, offset):
    with gzip.open(f"{args.data}/{name}.gz") as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)


def images(name):
    return torch.tensor(idx(name, 16).reshape(-1, 784), dtype=torch.float32).div(255).sub(0.1307).div(0.3081)


x_all, y_all = images("train-images-idx3-ubyte"), torch.tensor(idx("train-labels-idx1-ubyte", 8), dtype=torch.long)
x_test, y_test = images("t10k-images-idx3-ubyte"), torch.tensor(idx("t10k-labels-idx1-ubyte", 8), dtype=torch.long)
order = torch.randperm(60000)
n_train = min(args.train_limit, 50000)
x_train, y_train = x_all[order[:n_train]].to(device), y_all[order[:n_train]].to(device)
x_val, y_val = x_all[order[50000:]].to(device), y_all[order[50000:]].to(device)
x_test, y_test = x_test.to(device), y_test.to(device)


def init(module, scale=1e-2):
    for p in module.parameters():
        nn.init.normal_(p, std=scale) if p.dim() > 1 else nn.init.zeros_(p)
    return module


if args.net == "mlp":
    hidden, epochs = args.hidden or 800, args.epochs or 10
    model = init(nn.Sequential(nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, 10)))
else:
    hidden, epochs = args.hidden or 100, args.epochs or 5
    model = init(nn.Sequential(nn.Unflatten(1, (1, 28, 28)), nn.Conv2d(1, 32, 7, padding=3), nn.ReLU(), nn.MaxPool2d(2),
                               nn.Flatten(), nn.Linear(32 * 14 * 14, hidden), nn.ReLU(), nn.Linear(hidden, 10)))
model = model.to(device)
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.9)


def accuracy(x, y):
    with torch.no_grad():
        return sum((model(x[i:i + 10000]).argmax(1) == y[i:i + 10000]).sum().item() for i in range(0, len(y), 10000)) / len(y)


epoch_seconds = []
for epoch in range(epochs):
    t = time.time()
    perm = torch.randperm(n_train).to(device)
    for i in range(0, n_train, 100):
        batch = perm[i:i + 100]
        loss = nn.functional.cross_entropy(model(x_train[batch]), y_train[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    scheduler.step()
    train_acc, val_acc = accuracy(x_train, y_train), accuracy(x_val, y_val)
    if device.type == "cuda":
        torch.cuda.synchronize()
    epoch_seconds.append(time.time() - t)
    print(f"epoch {epoch + 1}: train acc = {train_acc:.4f}  val acc = {val_acc:.4f}  ({epoch_seconds[-1]:.1f} s)")
print("RESULT " + json.dumps({"net": args.net, "hidden": hidden, "epochs": epochs, "seconds": time.time() - start,
                              "epoch_seconds": epoch_seconds, "val_acc": val_acc, "test_acc": accuracy(x_test, y_test)}))
