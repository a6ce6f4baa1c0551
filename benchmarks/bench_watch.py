"""Overhead of softmaxkit.torch.watch and monitor on a small transformer training step (CPU).

Compares, in one process and interleaved, a plain training step (forward,
cross-entropy, backward, SGD step) with the same step run under
``watch(model)`` (module and gradient checks, the default),
``watch(model, functions=True)`` (every torch function checked too),
``torch.autograd.detect_anomaly()``, and ``monitor(model.head, every=k)``
(softmax health of the output head's logits every k steps, written as JSON
lines and, when tensorboard is installed, TensorBoard scalars), on two
transformer sizes.  Each repeat times a block of steps per variant, in
rotating order; the table gives the median over repeats of the per-step
time, and its ratio to the plain step.

Run from the repository root::

    PYTHONPATH=src python benchmarks/bench_watch.py [--repeats 15] [--steps 10] [--threads 1] [--out DIR]

Writes benchmarks/results/watch.md and watch.csv.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import statistics
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass

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

from softmaxkit.torch import monitor, watch

# name: (vocab, d_model, heads, dim_feedforward, layers, batch, seq)
SIZES = {
    "small": (512, 128, 4, 256, 2, 8, 32),
    "tiny": (256, 64, 4, 128, 2, 4, 32),
}
COLUMNS = ["model", "variant", "ms / step", "ratio to plain"]
CSV_FIELDS = ["model", "variant", "ms_per_step", "ratio_to_plain"]


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


@dataclass(frozen=True)
class Case:
    """One variant of the step.

    ``setup`` takes the model, its optimizer, a scratch folder and an exit
    stack (closed after the measurement), and returns the factory of the
    context each timed block of steps runs in.  A case with ``own_model``
    trains a copy of the model, with an optimizer of its own.
    """

    variant: str
    setup: Callable[
        [nn.Module, torch.optim.Optimizer, str, contextlib.ExitStack], Callable[[], contextlib.AbstractContextManager]
    ]
    own_model: bool = False


def monitored(every):
    """The setup of ``monitor(model.head, every=every)``, attached once for the whole measurement.

    A monitor lives as long as the run it watches (it is attached at once,
    and a fresh one would start its step count, its files and its
    TensorBoard writer again), so the case trains its own copy of the model,
    whose steps no other variant takes, and its monitor stays attached
    between its blocks.  The optimizer ends each step, so every record is
    written inside the timed steps.
    """

    def setup(model, opt, folder, stack):
        stack.enter_context(monitor(model.head, log_dir=folder, every=every, optimizer=opt))
        return contextlib.nullcontext

    return setup


# The first case is the reference of the ratios.
CASES = [
    Case("plain", lambda model, opt, folder, stack: contextlib.nullcontext),
    Case("watch()", lambda model, opt, folder, stack: lambda: watch(model)),
    Case("watch(functions=True)", lambda model, opt, folder, stack: lambda: watch(model, functions=True)),
    Case("detect_anomaly()", lambda model, opt, folder, stack: torch.autograd.detect_anomaly),
    Case("monitor(head, every=1)", monitored(1), own_model=True),
    Case("monitor(head, every=10)", monitored(10), own_model=True),
]


def time_block(ctx_factory, step, n):
    """Seconds per step of ``n`` steps, timed inside a freshly entered context."""
    with ctx_factory():
        return timed(step, n)


def measure(size, repeats, steps):
    vocab, d_model, heads, ff, layers, batch, seq = SIZES[size]
    torch.manual_seed(0)
    model = TinyTransformer(vocab, d_model, heads, ff, layers)
    tokens = torch.randint(0, vocab, (batch, seq))
    targets = torch.randint(0, vocab, (batch, seq))
    shared = model, torch.optim.SGD(model.parameters(), lr=1e-3)
    blocks = {}
    with tempfile.TemporaryDirectory() as folder, contextlib.ExitStack() as stack:
        for i, case in enumerate(CASES):
            if case.own_model:
                m = copy.deepcopy(model)
                opt = torch.optim.SGD(m.parameters(), lr=1e-3)
            else:
                m, opt = shared
            factory = case.setup(m, opt, f"{folder}/{i}", stack)
            blocks[case.variant] = functools.partial(time_block, factory, make_step(m, opt, tokens, targets), steps)
        rounds = interleaved(blocks, repeats)
    setup = (
        f"{size}: {layers} x TransformerEncoderLayer(d_model={d_model}, nhead={heads}, dim_feedforward={ff}), "
        f"{vocab} classes, batch {batch} x {seq} tokens"
    )
    seconds = medians(rounds)
    plain = rounds[CASES[0].variant]
    # Each round's ratio, then their median: the machine's speed drifts
    # between rounds more than within one.
    ratios = {name: statistics.median(t / p for t, p in zip(times, plain)) for name, times in rounds.items()}
    return setup, [(size, name, s * 1e3, ratios[name]) for name, s in seconds.items()]


def tensorboard_version() -> str:
    try:
        import tensorboard
    except ImportError:
        return "tensorboard not installed: JSON lines only"
    return f"tensorboard {tensorboard.__version__}"


def write(setups: list[str], rows: list[tuple], args: argparse.Namespace) -> None:
    write_results(
        "watch",
        title="watch and monitor overhead",
        machine=f"{describe()} (shared), torch {torch.__version__}, {torch.get_num_threads()} thread(s)",
        notes=[
            "",
            (
                "Step: forward + cross-entropy + backward + SGD step, all inside the watch "
                "(each timed block enters it afresh); "
                f"median of {args.repeats} interleaved repeats of {args.steps} steps after a warm-up; "
                "the ratio is the median over the repeats of each repeat's ratio to the plain step."
            ),
            "",
            (
                "monitor(head, every=k): softmaxkit.torch.monitor on the output head, stepped by the optimizer, "
                f"records every k-th step as JSON lines and TensorBoard scalars ({tensorboard_version()}); "
                "it is attached once for the whole measurement, to a copy of the model that only its rows train."
            ),
            "",
            *(f"- {s}" for s in setups),
        ],
        columns=COLUMNS,
        align="llrr",
        rows=([size, name, f"{ms:.2f}", f"{ratio:.2f}x"] for size, name, ms, ratio in rows),
        csv_fields=CSV_FIELDS,
        csv_rows=(
            {"model": size, "variant": name, "ms_per_step": f"{ms:.3f}", "ratio_to_plain": f"{ratio:.3f}"}
            for size, name, ms, ratio in rows
        ),
        out=args.out,
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument(
        "--steps", type=int, default=10, help="steps per timed block (a multiple of 10: monitor(every=10) records one in ten)"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (default 1: steadier on a shared machine)"
    )
    add_out_argument(parser)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="Anomaly Detection has been enabled")
    measured = [measure(size, args.repeats, args.steps) for size in SIZES]
    write([setup for setup, _ in measured], [row for _, size_rows in measured for row in size_rows], args)


if __name__ == "__main__":
    main()
