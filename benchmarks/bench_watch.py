"""Overhead of softmaxkit.torch.watch on a small transformer training step (CPU).

Compares, in one process and interleaved, a plain training step (forward,
cross-entropy, backward, SGD step) with the same step run under
``watch(model)`` (module and gradient checks, the default),
``watch(model, functions=True)`` (every torch function checked too) and
``torch.autograd.detect_anomaly()``, on two transformer sizes.  Each repeat
times a block of steps per variant, in rotating order; the table gives the
median over repeats of the per-step time, and its ratio to the plain step.

Run from the repository root::

    PYTHONPATH=src python benchmarks/bench_watch.py [--repeats 15] [--steps 5] [--threads 1]

Writes benchmarks/results/watch.md and watch.csv.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import statistics
import time
import warnings

import torch
import torch.nn as nn

from softmaxkit.torch import watch

from _machine import describe

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")

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
    with ctx_factory():
        t0 = time.perf_counter()
        for _ in range(n):
            step()
        return (time.perf_counter() - t0) / n


def measure(size, repeats, steps):
    vocab, d_model, heads, ff, layers, batch, seq = SIZES[size]
    torch.manual_seed(0)
    model = TinyTransformer(vocab, d_model, heads, ff, layers)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    tokens = torch.randint(0, vocab, (batch, seq))
    targets = torch.randint(0, vocab, (batch, seq))
    step = make_step(model, opt, tokens, targets)
    table = variants(model)
    names = list(table)
    for name in names:  # warm-up
        time_block(table[name], step, steps)
    times = {name: [] for name in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            times[name].append(time_block(table[name], step, steps))
    setup = (
        f"{size}: {layers} x TransformerEncoderLayer(d_model={d_model}, nhead={heads}, dim_feedforward={ff}), "
        f"{vocab} classes, batch {batch} x {seq} tokens"
    )
    medians = {name: statistics.median(times[name]) for name in names}
    plain = medians["plain"]
    return setup, [(size, name, medians[name] * 1e3, medians[name] / plain) for name in names]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--steps", type=int, default=5, help="steps per timed block")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (default 1: steadier on a shared machine)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="Anomaly Detection has been enabled")

    setups, rows = [], []
    for size in SIZES:
        setup, size_rows = measure(size, args.repeats, args.steps)
        setups.append(setup)
        rows += size_rows

    machine = (
        f"{describe()} (shared), "
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)"
    )
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "watch.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "variant", "ms_per_step", "ratio_to_plain"])
        for size, name, ms, ratio in rows:
            w.writerow([size, name, f"{ms:.3f}", f"{ratio:.3f}"])
    lines = [
        "# watch overhead",
        "",
        f"Machine: {machine}.",
        "",
        "Step: forward + cross-entropy + backward + SGD step, all inside the watch "
        "(each timed block enters it afresh, so start/stop is included); "
        f"median of {args.repeats} interleaved repeats of {args.steps} steps after a warm-up.",
        "",
    ]
    lines += [f"- {s}" for s in setups]
    lines += ["", "| model | variant | ms / step | ratio to plain |", "|---|---|---:|---:|"]
    lines += [f"| {size} | {name} | {ms:.2f} | {ratio:.2f}x |" for size, name, ms, ratio in rows]
    text = "\n".join(lines) + "\n"
    with open(os.path.join(RESULTS, "watch.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
