"""What the captioning references share: the options of one training step at
the scenes' sizes (batch, caption tokens, a grid of locations × channels,
vocabulary, threads, repeats) and its timing — three warm-up steps, then the
mean over `--repeats`, printed as one line prefixed `RESULT ` (JSON)."""
import json
import time

import torch


def step_arguments(parser, dropout):
    """Adds the options every reference takes; `dropout` is the network's default rate."""
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=25)
    parser.add_argument("--tokens", type=int, default=17, help="caption tokens; T = tokens - 1 steps")
    parser.add_argument("--locations", type=int, default=49)
    parser.add_argument("--channels", type=int, default=1280)
    parser.add_argument("--vocabulary", type=int, default=25)
    parser.add_argument("--dropout", type=float, default=dropout)


def setup(args):
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)


def time_step(step, args, **labels):
    """Runs `step` 3 + `args.repeats` times and prints the milliseconds per step."""
    for _ in range(3):
        step()
    start = time.perf_counter()
    for _ in range(args.repeats):
        step()
    ms = (time.perf_counter() - start) / args.repeats * 1e3
    result = {**labels, "ms_per_step": round(ms, 2), "threads": args.threads, "repeats": args.repeats}
    print("RESULT " + json.dumps({**result, "torch": torch.__version__}))
