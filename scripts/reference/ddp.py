"""The PyTorch reference for data-parallel full-mode training (issue #28):
real `torch.nn.parallel.DistributedDataParallel` (its defaults, so
broadcast_buffers=True) over `torch.distributed` with Gloo, two processes on
127.0.0.1, a torchvision ResNet-18 (rank 0 loads the checkpoint, rank 1 keeps
a random init: DDP's constructor broadcasts rank 0's state), train mode, SGD
with momentum 0.9, cross-entropy mean, no augmentation, and the data order
of `DistributedSampler(shuffle=False)`: rank r takes samples r, r+2, r+4, ...
in order, its batch k being that list's [k*B:(k+1)*B].

    python ddp.py CHECKPOINT INPUTS OUT [--make IMAGE_FOLDER] [--steps 10] [--batch 4] [--size 64]
                  [--lr 1e-4] [--threads 1]

--make  writes CHECKPOINT and INPUTS first (else they are read):
        CHECKPOINT  a seeded torchvision resnet18() state_dict, its stem
                    convolution's weights scaled by STEM_SCALE (see below);
        INPUTS      {"images": [N,3,S,S] float32, "labels": [N] int64}:
                    N = steps x 2 x batch real images, the first N/2 of each
                    class folder of IMAGE_FOLDER (sorted; label = the class's
                    index), in a seeded shuffled order, Resize(S) +
                    CenterCrop(S) + ToTensor + ImageNet normalisation.
OUT     (torch.save) {"losses": [steps] float64, each step's loss averaged
        over the ranks (all-reduce of the detached local loss / world), and
        "final.<name>" for every tensor of the state_dict after the last step}.

`tests/ddp_parity.rs` runs it, with 1 and 2 threads per rank (another count
sums in another order: the noise floor), and compares our world-2 run step
by step. Prints one line prefixed `RESULT ` with the seconds taken.
"""
import argparse
import os
import socket
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
import torchvision
from PIL import Image
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler
from torchvision import transforms

WORLD = 2
MOMENTUM = 0.9
# Batch norm makes the loss blind to the scale of the convolution before it,
# so its curvature goes as 1/scale^2. torchvision's stem is small (std 0.02)
# and on natural images some of its channels have a batch variance near 0.01:
# the stem then holds a Hessian eigenvalue near -4e3, which momentum SGD
# amplifies float32 rounding through, step after step. Scaled by 10, the
# forward pass is the same and that curvature is 100 times smaller.
STEM_SCALE = 10.0


def make_checkpoint(path, seed=0):
    torch.manual_seed(seed)
    model = torchvision.models.resnet18()
    with torch.no_grad():
        model.conv1.weight.mul_(STEM_SCALE)
    torch.save(model.state_dict(), path)


def make_inputs(path, folder, n, size, seed=0):
    transform = transforms.Compose(
        [
            transforms.Resize(size),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
            transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )
    classes = sorted(os.listdir(folder))
    samples = []
    for label, name in enumerate(classes):
        files = sorted(os.listdir(os.path.join(folder, name)))[: n // len(classes)]
        samples += [(os.path.join(folder, name, f), label) for f in files]
    order = torch.randperm(len(samples), generator=torch.Generator().manual_seed(seed)).tolist()
    samples = [samples[i] for i in order]
    images = torch.stack([transform(Image.open(p).convert("RGB")) for p, _ in samples])
    labels = torch.tensor([label for _, label in samples])
    torch.save({"images": images, "labels": labels}, path)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_main(rank, args, port):
    torch.set_num_threads(args.threads)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    model = torchvision.models.resnet18()
    if rank == 0:
        model.load_state_dict(torch.load(args.checkpoint, map_location="cpu"), strict=True)
    model.train()
    ddp = DistributedDataParallel(model)  # broadcast_buffers=True: rank 0's buffers before each forward
    optimizer = torch.optim.SGD(ddp.parameters(), lr=args.lr, momentum=MOMENTUM)
    inputs = torch.load(args.inputs)
    dataset = TensorDataset(inputs["images"], inputs["labels"])
    sampler = DistributedSampler(dataset, num_replicas=WORLD, rank=rank, shuffle=False)
    loader = DataLoader(dataset, batch_size=args.batch, sampler=sampler)
    losses = []
    for _, (images, labels) in zip(range(args.steps), loader):
        optimizer.zero_grad()
        loss = F.cross_entropy(ddp(images), labels)
        loss.backward()
        optimizer.step()
        mean = loss.detach().clone()
        dist.all_reduce(mean)
        losses.append(mean.item() / WORLD)
    if rank == 0:
        final = {f"final.{name}": t.detach().clone() for name, t in model.state_dict().items()}
        torch.save({"losses": torch.tensor(losses, dtype=torch.float64), **final}, args.out)
    dist.barrier()
    # No teardown: in torch 2.11 it can deadlock (freeing DDP's Reducer joins
    # Gloo's worker thread with the GIL held, while that thread waits for the
    # GIL to free a finished collective's tensors). Nothing is left to do.
    os._exit(0)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint")
    parser.add_argument("inputs")
    parser.add_argument("out")
    parser.add_argument("--make", metavar="IMAGE_FOLDER", help="write CHECKPOINT and INPUTS first")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=4, help="per rank, as DDP's")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-5)
    parser.add_argument("--threads", type=int, default=1, help="per rank (another count sums in another order)")
    args = parser.parse_args()
    start = time.time()
    if args.make:
        make_checkpoint(args.checkpoint)
        make_inputs(args.inputs, args.make, args.steps * WORLD * args.batch, args.size)
    # Any rank's failure raises here (and the other is terminated).
    mp.spawn(rank_main, args=(args, free_port()), nprocs=WORLD, join=True)
    losses = torch.load(args.out)["losses"]
    print(f"RESULT seconds={time.time() - start:.1f} losses={losses.tolist()}")


if __name__ == "__main__":
    main()
