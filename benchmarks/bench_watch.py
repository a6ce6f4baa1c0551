"""Overhead of softmaxkit.torch.watch on a small transformer training step (CPU).

Compares, in one process and interleaved, a plain training step (forward,
cross-entropy, backward, SGD step) with the same step run under
``watch(model)`` (module and gradient checks, the default),
``watch(model, functions=True)`` (every torch function checked too) and
``torch.autograd.detect_anomaly()``, on two transformer sizes.  Each repeat
times a block of steps per variant, in rotating order; the table gives the
median over repeats of the per-step time, and its ratio to the plain step.

Run from the repository root::

    PYTHONPATH=src python benchmarks/bench_watch.py [--repeats 15] [--steps 5] [--threads 1] [--out DIR]

Writes benchmarks/results/watch.md and watch.csv.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import warnings

import torch
from _harness import (
    add_out_argument,
    describe,
    interleaved,
    medians,
    timed,
    write_results,
)
from torch import nn

from softmaxkit.torch import watch

# name: (vocab, d_model, heads, dim_feedforward, layers, batch, seq)
SIZES = {
    "small": (512, 128, 4, 256, 2, 8, 32),
    "tiny": (256, 64, 4, 128, 2, 4, 32),
}


class TinyTransformer(nn.Module):
    def __init__(self, vocab, d_model, heads, ff, layers):
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(d_model, heads, ff, dropout=0.1, batch_first=True) for _ in range(layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab)

    def forward(self, tokens):
        h = self.embed(tokens)
        for layer in self.layers:
            h = layer(h)
        return self.head(self.norm(h))


def make_step(model, opt, tokens, targets):
    def step():
        opt.zero_grad(set_to_none=True)
        logits = model(tokens)
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        loss.backward()
        opt.step()

    return step


def variants(model):
    return {
        "plain": contextlib.nullcontext,
        "watch()": lambda: watch(model),
        "watch(functions=True)": lambda: watch(model, functions=True),
        "detect_anomaly()": torch.autograd.detect_anomaly,
    }


def time_block(ctx_factory, step, n):
    """Seconds per step of ``n`` steps, timed inside a freshly entered context."""
    with ctx_factory():
        return timed(step, n)


def measure(size, repeats, steps):
    vocab, d_model, heads, ff, layers, batch, seq = SIZES[size]
    torch.manual_seed(0)
    model = TinyTransformer(vocab, d_model, heads, ff, layers)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    tokens = torch.randint(0, vocab, (batch, seq))
    targets = torch.randint(0, vocab, (batch, seq))
    step = make_step(model, opt, tokens, targets)
    blocks = {name: functools.partial(time_block, ctx, step, steps) for name, ctx in variants(model).items()}
    seconds = medians(interleaved(blocks, repeats))
    setup = (
        f"{size}: {layers} x TransformerEncoderLayer(d_model={d_model}, nhead={heads}, dim_feedforward={ff}), "
        f"{vocab} classes, batch {batch} x {seq} tokens"
    )
    plain = seconds["plain"]
    return setup, [(size, name, s * 1e3, s / plain) for name, s in seconds.items()]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--steps", type=int, default=5, help="steps per timed block")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (default 1: steadier on a shared machine)"
    )
    add_out_argument(parser)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="Anomaly Detection has been enabled")

    setups, rows = [], []
    for size in SIZES:
        setup, size_rows = measure(size, args.repeats, args.steps)
        setups.append(setup)
        rows += size_rows

    write_results(
        "watch",
        title="watch overhead",
        machine=f"{describe()} (shared), torch {torch.__version__}, {torch.get_num_threads()} thread(s)",
        notes=[
            "",
            (
                "Step: forward + cross-entropy + backward + SGD step, all inside the watch "
                "(each timed block enters it afresh); "
                f"median of {args.repeats} interleaved repeats of {args.steps} steps after a warm-up."
            ),
            "",
            *(f"- {s}" for s in setups),
        ],
        columns=["model", "variant", "ms / step", "ratio to plain"],
        align="llrr",
        rows=([size, name, f"{ms:.2f}", f"{ratio:.2f}x"] for size, name, ms, ratio in rows),
        csv_fields=["model", "variant", "ms_per_step", "ratio_to_plain"],
        csv_rows=(
            {"model": size, "variant": name, "ms_per_step": f"{ms:.3f}", "ratio_to_plain": f"{ratio:.3f}"}
            for size, name, ms, ratio in rows
        ),
        out=args.out,
    )


if __name__ == "__main__":
    main()
