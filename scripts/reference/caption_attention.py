"""The PyTorch reference for `caption train --cell attention`: the same Show,
Attend and Tell network as src/caption/attend.rs (embedding; h0, c0 =
tanh(affine(mean grid feature)); at every step additive attention
e = tanh(a·W_a + h·W_h + b)·w over the L locations, softmax, context z, gate
β = σ(h·w_β + b_β), LSTM over [x_t, β·z] with gates i, f, o, g; deep output
dropout(tanh(x_t + h_t·L_h + ẑ_t·L_z + b))·L_o + b_o; masked cross-entropy
summed over the counted words / N plus λ/N·Σ_n Σ_l (1 − Σ_t α)²), with
autograd, for side-by-side timing of one training step (loss and
gradients, no optimizer update) at the scenes' sizes, CPU, one thread:

    .venv/bin/python scripts/reference/caption_attention.py [--repeats 50]

Prints one line prefixed `RESULT ` with the milliseconds per step.
"""
import argparse

import torch

from caption_step import setup, step_arguments, time_step

parser = argparse.ArgumentParser()
step_arguments(parser, dropout=0.5)
parser.add_argument("--wordvec", type=int, default=256)
parser.add_argument("--hidden", type=int, default=512)
parser.add_argument("--attention-width", type=int, default=256)
parser.add_argument("--penalty", type=float, default=1.0)
args = parser.parse_args()
setup(args)

C, W, H, A, V = args.channels, args.wordvec, args.hidden, args.attention_width, args.vocabulary


def param(*shape, fan_in=None):
    t = torch.randn(*shape) / fan_in**0.5 if fan_in else torch.zeros(*shape)
    return t.requires_grad_()


p = {
    "embed": (torch.randn(V, W) * 0.01).requires_grad_(),
    "init_h_w": param(C, H, fan_in=C), "init_h_b": param(H),
    "init_c_w": param(C, H, fan_in=C), "init_c_b": param(H),
    "att_grid": param(C, A, fan_in=C), "att_hidden": param(H, A, fan_in=H), "att_b": param(A),
    "att_score": param(A, fan_in=A),
    "gate_w": param(H, 1, fan_in=H), "gate_b": param(1),
    "wx": param(W + C, 4 * H, fan_in=W + C), "wh": param(H, 4 * H, fan_in=H), "b": param(4 * H),
    "out_h": param(H, W, fan_in=H), "out_z": param(C, W, fan_in=C), "out_b": param(W),
    "vocab_w": param(W, V, fan_in=W), "vocab_b": param(V),
}


def loss_of(grid, captions):
    inputs, targets = captions[:, :-1], captions[:, 1:]
    mask = (targets != 0).to(grid.dtype)
    n, steps = inputs.shape
    x = p["embed"][inputs]
    mean = grid.mean(1)
    h = torch.tanh(mean @ p["init_h_w"] + p["init_h_b"])
    c = torch.tanh(mean @ p["init_c_w"] + p["init_c_b"])
    projected = grid @ p["att_grid"]
    word_terms = x @ p["wx"][:W] + p["b"]
    hs, gateds, alphas = [], [], []
    for t in range(steps):
        u = torch.tanh(projected + (h @ p["att_hidden"] + p["att_b"]).unsqueeze(1))
        alpha = torch.softmax(u @ p["att_score"], -1)
        z = torch.bmm(alpha.unsqueeze(1), grid).squeeze(1)
        gated = torch.sigmoid(h @ p["gate_w"] + p["gate_b"]) * z
        gates = word_terms[:, t] + gated @ p["wx"][W:] + h @ p["wh"]
        i, f, o, g = gates.chunk(4, -1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        hs.append(h), gateds.append(gated), alphas.append(alpha)
    hs, gateds, alphas = torch.stack(hs, 1), torch.stack(gateds, 1), torch.stack(alphas, 1)
    deep = torch.tanh(x + hs @ p["out_h"] + gateds @ p["out_z"] + p["out_b"])
    deep = torch.nn.functional.dropout(deep, args.dropout, training=True)
    scores = deep @ p["vocab_w"] + p["vocab_b"]
    picked = scores.log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    word_loss = -(picked * mask).sum() / n
    attended = (alphas * mask.unsqueeze(-1)).sum(1)
    return word_loss + args.penalty * ((1 - attended) ** 2).sum() / n


grid = torch.randn(args.batch, args.locations, C)
captions = torch.randint(1, V, (args.batch, args.tokens))
params = list(p.values())


def step():
    loss = loss_of(grid, captions)
    torch.autograd.grad(loss, params)


time_step(step, args, network="attention")
