"""The PyTorch reference for `finetune`: the transfer-learning tutorial's recipe
with torchvision (ImageFolder, RandomResizedCrop/flip and Resize/CenterCrop,
DataLoader batch 4 with num_workers=2, SGD lr 0.001 momentum 0.9, StepLR 7/0.1),
for ResNet-18 and the torchvision backbones `finetune --list-archs` names (each with
its torchvision `IMAGENET1K_V1` resize/crop/interpolation, as finetune's model card)
or EfficientNet-Lite0 (efficientnet-lite-pytorch), loading the same state_dict file as
finetune with strict=True.

    python transfer_learning.py --arch efficientnet-lite0 --mode full \
        --data data/hymenoptera_data --weights models/efficientnet-lite0-57934424.pth --epochs 25

`--write-random-init FILE` writes a randomly initialised torchvision checkpoint of
`--arch` (what the speed bench runs on where no ImageNet weights are at hand) and exits.

`--precision bf16` runs the forward passes and the loss under
`torch.autocast(device_type, dtype=torch.bfloat16)`, as a PyTorch user would.

Prints the tutorial's per-epoch lines, then one JSON line prefixed `RESULT `
with seconds per epoch, wall time and best val accuracy. Feature-extract mode
freezes the backbone (requires_grad False, eval mode so its batch-norm
statistics stay unchanged, as finetune does) and trains the new head.
"""
import argparse
import copy
import json
import time

import torch
import torch.nn as nn
import torchvision
from torchvision import datasets, transforms

parser = argparse.ArgumentParser()
# our name -> (torchvision constructor, head attribute path, resize, crop, interpolation)
TORCHVISION = {
    "resnet18": ("resnet18", "fc", 256, 224, "bilinear"),
    "resnet50": ("resnet50", "fc", 256, 224, "bilinear"),
    "mobilenet-v3-large": ("mobilenet_v3_large", "classifier.3", 256, 224, "bilinear"),
    "efficientnet-b0": ("efficientnet_b0", "classifier.1", 256, 224, "bicubic"),
    "convnext-tiny": ("convnext_tiny", "classifier.2", 236, 224, "bilinear"),
    "vit-b-16": ("vit_b_16", "heads.head", 256, 224, "bilinear"),
    "swin-t": ("swin_t", "head", 232, 224, "bicubic"),
}
parser.add_argument("--arch", default="resnet18", choices=[*TORCHVISION, "efficientnet-lite0"])
parser.add_argument("--write-random-init", metavar="FILE")
parser.add_argument("--mode", default="feature-extract", choices=["feature-extract", "full"])
parser.add_argument("--data", default="data/hymenoptera_data")
parser.add_argument("--weights")
parser.add_argument("--epochs", type=int, default=25)
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--workers", type=int, default=2)
parser.add_argument("--device", default="cuda:0" if torch.cuda.is_available() else "cpu")
parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
args = parser.parse_args()
if args.write_random_init:
    torch.manual_seed(args.seed)
    torch.save(getattr(torchvision.models, TORCHVISION[args.arch][0])(weights=None).state_dict(), args.write_random_init)
    raise SystemExit(0)
if not args.weights:
    parser.error("--weights is required")
device = torch.device(args.device)
torch.manual_seed(args.seed)
start = time.time()

if args.arch in TORCHVISION:
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    _, _, resize, crop, interpolation = TORCHVISION[args.arch]
else:  # TF-Lite input scaling, (255 x - 127) / 128, as a Normalize
    mean, std = [127 / 255] * 3, [128 / 255] * 3
    resize, crop, interpolation = 256, 224, "bilinear"
normalize = transforms.Normalize(mean, std)
mode = transforms.InterpolationMode(interpolation)
data_transforms = {
    "train": transforms.Compose([transforms.RandomResizedCrop(crop, interpolation=mode), transforms.RandomHorizontalFlip(), transforms.ToTensor(), normalize]),
    "val": transforms.Compose([transforms.Resize(resize, interpolation=mode), transforms.CenterCrop(crop), transforms.ToTensor(), normalize]),
}
image_datasets = {x: datasets.ImageFolder(f"{args.data}/{x}", data_transforms[x]) for x in ["train", "val"]}
loaders = {
    x: torch.utils.data.DataLoader(image_datasets[x], batch_size=4, shuffle=(x == "train"), num_workers=args.workers)
    for x in ["train", "val"]
}
sizes = {x: len(image_datasets[x]) for x in ["train", "val"]}
num_classes = len(image_datasets["train"].classes)

if args.weights.endswith(".safetensors"):
    from safetensors.torch import load_file

    state_dict = {k: v.float() if v.is_floating_point() else v for k, v in load_file(args.weights).items()}
else:
    state_dict = torch.load(args.weights, map_location="cpu")
if args.arch in TORCHVISION:
    constructor, head_path, *_ = TORCHVISION[args.arch]
    model = getattr(torchvision.models, constructor)(weights=None)
    model.load_state_dict(state_dict, strict=True)
    backbone_params = [p for n, p in model.named_parameters() if not n.startswith(head_path + ".")]
    *parents, leaf = head_path.split(".")
    parent = model
    for name in parents:
        parent = getattr(parent, name)
    head = nn.Linear(getattr(parent, leaf).in_features, num_classes)
    if leaf.isdigit():
        parent[int(leaf)] = head
    else:
        setattr(parent, leaf, head)
else:
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name("efficientnet-lite0")
    model.load_state_dict(state_dict, strict=True)
    backbone_params = [p for n, p in model.named_parameters() if not n.startswith("_fc.")]
    model._fc = nn.Linear(model._fc.in_features, num_classes)
    head = model._fc

model = model.to(device)
frozen = args.mode == "feature-extract"
if frozen:
    for p in backbone_params:
        p.requires_grad = False
params = head.parameters() if frozen else model.parameters()
optimizer = torch.optim.SGD(params, lr=0.001, momentum=0.9)
scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.1)
criterion = nn.CrossEntropyLoss()


def set_train(training):
    model.train(training)
    if frozen and training:  # keep the frozen backbone's batch norm in eval mode
        model.eval()
        head.train()
        for module in model.modules():  # the head's dropout trains, as finetune's does
            if isinstance(module, nn.Dropout):
                module.train()


best_acc, best_wts, epoch_seconds = 0.0, None, []
for epoch in range(args.epochs):
    print(f"Epoch {epoch}/{args.epochs - 1}\n----------")
    epoch_start = time.time()
    for phase in ["train", "val"]:
        set_train(phase == "train")
        running_loss, running_corrects = 0.0, 0
        for inputs, labels in loaders[phase]:
            inputs, labels = inputs.to(device), labels.to(device)
            optimizer.zero_grad()
            with torch.set_grad_enabled(phase == "train"), torch.autocast(
                device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16"
            ):
                outputs = model(inputs)
                loss = criterion(outputs, labels)
                if phase == "train":
                    loss.backward()
                    optimizer.step()
            running_loss += loss.item() * inputs.size(0)
            running_corrects += (outputs.argmax(1) == labels).sum().item()
        if phase == "train":
            scheduler.step()
        epoch_loss, epoch_acc = running_loss / sizes[phase], running_corrects / sizes[phase]
        print(f"{phase} Loss: {epoch_loss:.4f} Acc: {epoch_acc:.4f}")
        if phase == "val" and epoch_acc > best_acc:
            best_acc, best_wts = epoch_acc, copy.deepcopy(model.state_dict())
    epoch_seconds.append(time.time() - epoch_start)
    print()

elapsed = time.time() - start
print(f"Training complete in {elapsed // 60:.0f}m {elapsed % 60:.0f}s")
print(f"Best val Acc: {best_acc:4f}")
print("RESULT " + json.dumps({"arch": args.arch, "mode": args.mode, "precision": args.precision, "epochs": args.epochs, "seconds": elapsed,
                              "epoch_seconds": epoch_seconds, "best_val_acc": best_acc}))
