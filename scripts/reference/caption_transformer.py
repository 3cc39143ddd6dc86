"""The PyTorch reference for `caption train --cell transformer`: the same
network (grid features standardized and projected to d_model; word embedding
plus sinusoidal positions; post-norm decoder layers of masked self-attention,
cross-attention to the grid and feed-forward, dropout on the embedded words
and every sublayer's output; output affine; the masked temporal softmax loss
summed over words and divided by N), timed for one training step (forward
and autograd's backward) at the scenes' sizes, on the CPU, as
`examples/bench_caption.rs transformer` times ours.

    python scripts/reference/caption_transformer.py [--impl hand|nn] [--repeats 50] [--threads 1]

`--impl hand` (default) is written out layer by layer as ours is;
`--impl nn` uses `nn.TransformerDecoder` (the same post-norm layers, plus
dropout on the attention weights and inside the feed-forward block).
Prints one JSON line prefixed `RESULT `.
"""
import argparse
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from caption_step import setup, step_arguments, time_step

parser = argparse.ArgumentParser()
step_arguments(parser, dropout=0.1)
parser.add_argument("--impl", choices=["hand", "nn"], default="hand")
parser.add_argument("--width", type=int, default=256)
parser.add_argument("--heads", type=int, default=4)
parser.add_argument("--layers", type=int, default=2)
parser.add_argument("--feed-forward", type=int, default=512)
args = parser.parse_args()
setup(args)


def positional_encoding(steps, width):
    position = torch.arange(steps, dtype=torch.float32).unsqueeze(1)
    frequencies = torch.exp(torch.arange(0, width, 2, dtype=torch.float32) * (-math.log(10000.0) / width))
    table = torch.zeros(steps, width)
    table[:, 0::2] = torch.sin(position * frequencies)
    table[:, 1::2] = torch.cos(position * frequencies[: width // 2])
    return table


class Attention(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.query, self.key, self.value, self.output = (nn.Linear(width, width) for _ in range(4))
        self.heads = heads

    def forward(self, x, memory, mask=None):
        n, s, e = x.shape
        split = lambda t: t.view(n, -1, self.heads, e // self.heads).transpose(1, 2)
        q, k, v = split(self.query(x)), split(self.key(memory)), split(self.value(memory))
        scores = q @ k.transpose(-2, -1) / math.sqrt(e // self.heads)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        context = (scores.softmax(-1) @ v).transpose(1, 2).reshape(n, s, e)
        return self.output(context)


class DecoderLayer(nn.Module):
    def __init__(self, width, heads, feed_forward, dropout):
        super().__init__()
        self.self_attention, self.cross_attention = Attention(width, heads), Attention(width, heads)
        self.feed_forward = nn.Sequential(nn.Linear(width, feed_forward), nn.ReLU(), nn.Linear(feed_forward, width))
        self.norms = nn.ModuleList(nn.LayerNorm(width) for _ in range(3))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, memory, mask):
        x = self.norms[0](x + self.dropout(self.self_attention(x, x, mask)))
        x = self.norms[1](x + self.dropout(self.cross_attention(x, memory)))
        return self.norms[2](x + self.dropout(self.feed_forward(x)))


class CaptioningTransformer(nn.Module):
    def __init__(self):
        super().__init__()
        w = args.width
        self.register_buffer("feature_mean", torch.zeros(args.channels))
        self.register_buffer("feature_std", torch.ones(args.channels))
        self.proj = nn.Linear(args.channels, w)
        self.embed = nn.Embedding(args.vocabulary, w)
        self.dropout = nn.Dropout(args.dropout)
        if args.impl == "hand":
            self.layers = nn.ModuleList(
                DecoderLayer(w, args.heads, args.feed_forward, args.dropout) for _ in range(args.layers)
            )
        else:
            layer = nn.TransformerDecoderLayer(w, args.heads, args.feed_forward, args.dropout, batch_first=True)
            self.decoder = nn.TransformerDecoder(layer, args.layers)
        self.vocab = nn.Linear(w, args.vocabulary)
        for name, p in self.named_parameters():
            if "norm" not in name:
                nn.init.normal_(p, std=0.02) if p.dim() > 1 else nn.init.zeros_(p)

    def loss(self, features, captions):
        inputs, targets = captions[:, :-1], captions[:, 1:]
        steps = inputs.shape[1]
        memory = self.proj((features - self.feature_mean) / self.feature_std)
        x = self.dropout(self.embed(inputs) + positional_encoding(steps, args.width))
        causal = torch.ones(steps, steps, dtype=torch.bool).tril()
        if args.impl == "hand":
            for layer in self.layers:
                x = layer(x, memory, causal)
        else:
            x = self.decoder(x, memory, tgt_mask=~causal)
        scores = self.vocab(x)
        log_probs = scores.log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        return -(log_probs * (targets != 0)).sum() / captions.shape[0]


model = CaptioningTransformer().train()
features = torch.randn(args.batch, args.locations, args.channels)
captions = torch.randint(1, args.vocabulary, (args.batch, args.tokens))


def step():
    for p in model.parameters():
        p.grad = None
    model.loss(features, captions).backward()


time_step(step, args, network="transformer", impl=args.impl)
