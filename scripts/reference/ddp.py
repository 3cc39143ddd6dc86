"""The PyTorch reference for data-parallel full-mode training (issue #28):
real `torch.nn.parallel.DistributedDataParallel` (its defaults, so
broadcast_buffers=True) over `torch.distributed` with Gloo, two processes on
127.0.0.1, a torchvision ResNet-18 loaded from a checkpoint, train mode,
SGD (lr 0.01, momentum 0.9), cross-entropy mean, no augmentation, and the
data order of `DistributedSampler(shuffle=False)`: rank r takes samples
r, r+2, r+4, ... in order, its batch k being that list's [k*B:(k+1)*B].

    python ddp.py CHECKPOINT INPUTS OUT [--make-inputs] [--steps 10] [--batch 4] [--size 64] [--threads 1]

INPUTS  {"images": [N,3,S,S] float32, "labels": [N] int64 in 0..1000} with
        N = steps x 2 x batch; written first (seeded, torch.save) with
        --make-inputs, else read.
OUT     (torch.save) {"losses": [steps] float64, each step's loss averaged
        over the ranks (all-reduce of the detached local loss / world), and
        "final.<name>" for every tensor of the state_dict after the last step}.

`tests/ddp_parity.rs` runs it and compares our world-2 run step by step.
--threads 2 (per rank) sums in another order: against the default 1 thread,
the losses agree to 1e-6 for 3 steps, then move apart (3e-5 at step 3, 4e-3
at step 4, 6e-2 at step 6): this training amplifies float32 rounding.
Prints one line prefixed `RESULT ` with the seconds taken.
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
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

WORLD = 2


def make_inputs(path, n, size, seed=0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, size, size, generator=generator)
    labels = torch.randint(0, 1000, (n,), generator=generator)
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
    model.load_state_dict(torch.load(args.checkpoint, map_location="cpu"), strict=True)
    model.train()
    ddp = DistributedDataParallel(model)  # broadcast_buffers=True: rank 0's buffers before each forward
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.01, momentum=0.9)
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
    dist.destroy_process_group()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint")
    parser.add_argument("inputs")
    parser.add_argument("out")
    parser.add_argument("--make-inputs", action="store_true")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=4, help="per rank, as DDP's")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="per rank (another count sums in another order)")
    args = parser.parse_args()
    start = time.time()
    if args.make_inputs:
        make_inputs(args.inputs, args.steps * WORLD * args.batch, args.size)
    # Any rank's failure raises here (and the other is terminated).
    mp.spawn(rank_main, args=(args, free_port()), nprocs=WORLD, join=True)
    losses = torch.load(args.out)["losses"]
    print(f"RESULT seconds={time.time() - start:.1f} losses={losses.tolist()}")


if __name__ == "__main__":
    main()
