"""A small language model's training step, end to end: torch's cross-entropy vs softmaxkit's (CPU).

A 2-layer pre-norm transformer LM (d_model 256, 4 heads, feed-forward 1024,
learned positions, an untied output head over 32000 tokens) trains on fixed
random tokens (batch 8, sequence 128) with AdamW under bfloat16 CPU
autocast.  Four runs start from the same weights and see the same batches:
the model and loss compiled together with ``torch.compile`` or run eagerly,
each with ``F.cross_entropy`` and with ``softmaxkit.torch.cross_entropy``.
Their steps are interleaved (the harness's rotating rounds); the first step
of each run is the warm-up (compilation, optimizer state) and is not timed.
The table gives the median step time, softmaxkit's ratio to torch's in the
same mode, and both loss curves (first, middle and last loss, and the
largest difference from torch's curve, step by step).

Usage::

    PYTHONPATH=src python benchmarks/bench_train.py [--steps 30] [--quick] [--out DIR]

writes benchmarks/results/train.md and train.csv.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from _harness import add_out_argument, describe, interleaved, medians, write_results
from torch import nn

import softmaxkit
import softmaxkit.torch as smt

VOCAB, D_MODEL, HEADS, FEED_FORWARD, LAYERS, BATCH, SEQ = 32000, 256, 4, 1024, 2, 8, 128
LEARNING_RATE = 1e-3
COLUMNS = [
    "mode",
    "loss",
    "ms / step",
    "softmaxkit / torch",
    "× faster",
    "first loss",
    "middle loss",
    "last loss",
    "max Δ loss",
]
CSV_FIELDS = [
    "mode",
    "loss",
    "ms_per_step",
    "ratio",
    "speedup",
    "first_loss",
    "middle_loss",
    "last_loss",
    "max_abs_diff",
    "losses",
]


class Block(nn.Module):
    """Pre-norm causal self-attention and a GELU feed-forward, each with a residual."""

    def __init__(self) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(D_MODEL), nn.LayerNorm(D_MODEL)
        self.qkv = nn.Linear(D_MODEL, 3 * D_MODEL)
        self.proj = nn.Linear(D_MODEL, D_MODEL)
        self.up, self.down = nn.Linear(D_MODEL, FEED_FORWARD), nn.Linear(FEED_FORWARD, D_MODEL)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, s, d = h.shape
        q, k, v = self.qkv(self.norm1(h)).view(b, s, 3, HEADS, d // HEADS).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        h = h + self.proj(attended.transpose(1, 2).reshape(b, s, d))
        return h + self.down(F.gelu(self.up(self.norm2(h))))


class LanguageModel(nn.Module):
    """Token and position embeddings, the blocks, a final norm and an untied head to the vocabulary."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, D_MODEL)
        self.position = nn.Parameter(torch.randn(SEQ, D_MODEL) * 0.02)
        self.blocks = nn.ModuleList(Block() for _ in range(LAYERS))
        self.norm = nn.LayerNorm(D_MODEL)
        self.head = nn.Linear(D_MODEL, VOCAB, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens) + self.position[: tokens.shape[1]]
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h))


def batch_loss(model: nn.Module, loss: Callable, tokens: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy of one batch (``SEQ + 1`` tokens per row), under bfloat16 autocast."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(tokens[:, :-1])
        return loss(logits.reshape(-1, VOCAB), tokens[:, 1:].reshape(-1))


@dataclass(frozen=True)
class Case:
    """One training run: ``mode`` is ``compile`` or ``eager``; ``library`` names the cross-entropy."""

    mode: str
    library: str
    loss: Callable


CASES = [
    Case(mode, library, loss)
    for mode in ("compile", "eager")
    for library, loss in (("torch", F.cross_entropy), ("softmaxkit", smt.cross_entropy))
]


class Run:
    """A model, its optimizer and its losses; each call trains on the next batch and returns its seconds."""

    def __init__(self, case: Case, weights: dict, data: torch.Tensor) -> None:
        self.case, self.data = case, data
        self.model = LanguageModel()
        self.model.load_state_dict(weights)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=LEARNING_RATE)
        self.step_loss = torch.compile(batch_loss) if case.mode == "compile" else batch_loss
        self.losses: list[float] = []

    def __call__(self) -> float:
        tokens = self.data[len(self.losses)]
        start = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        value = self.step_loss(self.model, self.case.loss, tokens)
        value.backward()
        self.optimizer.step()
        seconds = time.perf_counter() - start
        self.losses.append(value.item())
        return seconds


def train(steps: int) -> list[dict]:
    """Every case's run, ``steps`` steps interleaved; one row per case."""
    torch.manual_seed(0)
    weights = LanguageModel().state_dict()
    data = torch.randint(0, VOCAB, (steps, BATCH, SEQ + 1), generator=torch.Generator().manual_seed(1))
    runs = {f"{c.mode}/{c.library}": Run(c, weights, data) for c in CASES}
    seconds = medians(interleaved(runs, steps - 1))
    rows = []
    for name, run in runs.items():
        peer = runs[f"{run.case.mode}/torch"]
        rows.append(
            {
                "mode": run.case.mode,
                "loss": run.case.library,
                "ms_per_step": seconds[name] * 1e3,
                "ratio": seconds[name] / seconds[f"{run.case.mode}/torch"],
                "speedup": seconds[f"{run.case.mode}/torch"] / seconds[name],
                "first_loss": run.losses[0],
                "middle_loss": run.losses[len(run.losses) // 2],
                "last_loss": run.losses[-1],
                "max_abs_diff": max(abs(a - b) for a, b in zip(run.losses, peer.losses)),
                "losses": " ".join(f"{v:.6f}" for v in run.losses),
            }
        )
        print(name, f"{seconds[name] * 1e3:.1f} ms/step", run.losses, file=sys.stderr)
    return rows


def _cells(r: dict) -> list[str]:
    return [
        r["mode"],
        r["loss"],
        f"{r['ms_per_step']:.1f}",
        f"{r['ratio']:.2f}",
        f"{r['speedup']:.2f}×",
        f"{r['first_loss']:.4f}",
        f"{r['middle_loss']:.4f}",
        f"{r['last_loss']:.4f}",
        f"{r['max_abs_diff']:.2e}",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30, help="training steps per run; the first is the warm-up")
    parser.add_argument("--quick", action="store_true", help="3 steps: checks that the script runs")
    add_out_argument(parser)
    args = parser.parse_args(argv)
    steps = 3 if args.quick else args.steps
    if steps < 2:
        parser.error(f"--steps must be at least 2 (one warm-up, one timed); got {steps}")
    rows = train(steps)
    parameters = sum(p.numel() for p in LanguageModel().parameters())
    write_results(
        "train",
        title="Training a small language model: torch's cross-entropy vs softmaxkit's (CPU, bfloat16 autocast)",
        machine=(
            f"{describe()}; torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()}), "
            f"{torch.get_num_threads()} torch threads, {softmaxkit.get_num_threads()} softmaxkit threads"
        ),
        notes=[
            (
                f"Model: {LAYERS}-layer pre-norm transformer, d_model {D_MODEL}, {HEADS} heads, feed-forward "
                f"{FEED_FORWARD}, untied head to {VOCAB} tokens ({parameters / 1e6:.1f} M parameters); batch {BATCH}, "
                f"sequence {SEQ}; AdamW (lr {LEARNING_RATE}); fixed random tokens; the same initial weights and "
                "batches for every run."
            ),
            (
                "`compile`: torch.compile (default inductor) of the forward and the loss together; backward and "
                "AdamW step as usual. `eager`: the same without compile. Both under "
                "torch.autocast('cpu', dtype=torch.bfloat16)."
            ),
            (
                f"Median of {steps - 1} interleaved steps per run after one warm-up step (compilation, optimizer "
                "state); a step is zero_grad, forward, loss, backward and the optimizer step. "
                f"`max Δ loss`: the largest absolute difference from torch's loss in the same mode over the {steps} steps."
            ),
        ],
        columns=COLUMNS,
        align="llrrrrrrr",
        rows=map(_cells, rows),
        csv_fields=CSV_FIELDS,
        csv_rows=rows,
        out=args.out,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
