"""softmaxkit.torch against torch on every training path (CPU).

Each case times torch's function and softmaxkit's on the same tensors, in
one process, interleaved (the harness's warm-up and rotating rounds); the
table gives medians, softmaxkit's time over torch's and how many times
faster softmaxkit is.  The paths:

- eager float32, bfloat16 and float16: softmax and log_softmax (forward,
  no grad) and cross-entropy forward + backward (``x.grad = None`` before
  each call), against torch's own kernels for the dtype;
- ``torch.compile`` (``fullgraph=True``, ``dynamic=False``, inductor): a
  compiled cross-entropy on both sides, forward + backward; compilation is
  the warm-up, so it is not timed;
- CPU autocast to bfloat16: cross-entropy forward + backward of bfloat16 logits;
- per-call cost on 8x10: softmax and cross-entropy forward, no grad;
- other layouts: cross-entropy of (N, C, d) logits (classes at dim 1) and
  softmax along dim 0;
- memory: peak growth of one cross-entropy forward + backward in a fresh
  interpreter per variant.

GB/s (eager float32 rows) counts the bytes the minimal algorithm moves: the
logits read and the result (or the gradient) written; ``of copy`` compares
with the machine's copy bandwidth, timed in the same rounds.

Usage::

    PYTHONPATH=src python benchmarks/bench_torch.py [--rounds 7] [-k SUBSTRING] [--quick] [--out DIR]

writes benchmarks/results/torch.md and torch.csv.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import json
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from _harness import (
    CopyBandwidth,
    add_out_argument,
    describe,
    interleaved,
    markdown_table,
    medians,
    peak_rss,
    reset_peak_rss,
    run_fresh,
    timed,
    write_results,
)

import softmaxkit
import softmaxkit.torch as smt

LIBRARIES = {"torch": F, "softmaxkit": smt}
LARGE = [(2048, 32768), (16384, 1024), (32, 262144)]
COMPILED = [(1024, 32768), (2048, 32768)]
MEMORY_SHAPE = (4096, 32768)
PER_CALL = 2000
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

COLUMNS = ["case", "torch", "softmaxkit", "softmaxkit / torch", "× faster", "GB/s", "of copy"]
CSV_FIELDS = [
    "case",
    "torch_s",
    "softmaxkit_s",
    "ratio",
    "speedup",
    "torch_gbs",
    "softmaxkit_gbs",
    "copy_gbs",
    "softmaxkit_of_copy",
    "torch_mib",
    "softmaxkit_mib",
    "torch_first_mib",
    "softmaxkit_first_mib",
    "torch_held_mib",
    "softmaxkit_held_mib",
]


@dataclass(frozen=True)
class Case:
    """One row: ``op`` in ``mode`` on logits of ``shape`` and ``dtype``.

    ``op`` is ``softmax``, ``log_softmax``, ``cross_entropy+grad`` or
    ``cross_entropy`` (forward only); ``dim`` is the class dimension;
    ``number`` calls make one measurement.
    """

    mode: str
    dtype: str
    op: str
    shape: tuple[int, ...]
    dim: int = -1
    number: int = 1

    @property
    def name(self) -> str:
        dims = "x".join(map(str, self.shape))
        where = "" if self.dim in (-1, len(self.shape) - 1) else f" (dim {self.dim})"
        return f"{self.mode}/{self.dtype}/{self.op}/{dims}{where}"

    def shrunk(self) -> Case:
        """The same case on a small tensor (each dimension over 64 divided by 16)."""
        shape = tuple(n // 16 if n > 64 else n for n in self.shape)
        return Case(self.mode, self.dtype, self.op, shape, self.dim, max(self.number // 10, 1))


CASES = [
    *(
        Case("eager", dtype, op, shape)
        for dtype in DTYPES
        for shape in LARGE
        for op in ("softmax", "log_softmax", "cross_entropy+grad")
    ),
    *(Case("compile", dtype, "cross_entropy+grad", shape) for dtype in ("float32", "bfloat16") for shape in COMPILED),
    Case("autocast", "bfloat16", "cross_entropy+grad", (2048, 32768)),
    Case("per-call", "float32", "softmax", (8, 10), number=PER_CALL),
    Case("per-call", "float32", "cross_entropy", (8, 10), number=PER_CALL),
    Case("layout", "float32", "cross_entropy+grad", (64, 1000, 256), dim=1),
    Case("layout", "float32", "softmax", (4096, 8192), dim=0),
]

# The memory variants: (mode, dtype) of cross-entropy forward + backward.
MEMORY = [("eager", "float32"), ("eager", "bfloat16"), ("compile", "float32")]


# --- the calls ----------------------------------------------------------------------------


def make_inputs(case: Case) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (std 3, a leaf needing grad for the backward ops) and class targets for ``case``."""
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(case.shape, generator=gen) * 3).to(DTYPES[case.dtype])
    target_shape = case.shape[: case.dim] + case.shape[case.dim + 1 :] if case.dim >= 0 else case.shape[:-1]
    t = torch.randint(0, case.shape[case.dim], target_shape, generator=gen)
    return x.requires_grad_(case.op == "cross_entropy+grad"), t


def loss_function(case: Case, library: str) -> Callable:
    """The cross-entropy of ``library``, compiled for the ``compile`` mode."""
    loss = LIBRARIES[library].cross_entropy
    return torch.compile(loss, fullgraph=True, dynamic=False) if case.mode == "compile" else loss


def make_call(case: Case, library: str, x: torch.Tensor, t: torch.Tensor) -> Callable[[], object]:
    """The call to time: ``case.op`` of ``library`` on ``x`` (and ``t``)."""
    lib = LIBRARIES[library]
    if case.op in ("softmax", "log_softmax"):
        fn = getattr(lib, case.op)

        def forward():
            with torch.no_grad():
                return fn(x, case.dim)

        return forward
    loss = loss_function(case, library)
    if case.op == "cross_entropy":

        def loss_only():
            with torch.no_grad():
                return loss(x, t)

        return loss_only
    autocast = case.mode == "autocast"

    def forward_backward():
        x.grad = None
        with torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext():
            value = loss(x, t)
        value.backward()

    return forward_backward


# --- timing -------------------------------------------------------------------------------


def measure(case: Case, rounds: int) -> dict:
    """Median seconds of both libraries on ``case``, with GB/s for eager float32."""
    if case.mode == "compile":
        torch._dynamo.reset()
    x, t = make_inputs(case)
    calls = {lib: functools.partial(timed, make_call(case, lib, x, t), case.number) for lib in LIBRARIES}
    copy = CopyBandwidth(x.detach().numpy(), case.number) if _counts_bytes(case) else None
    seconds = medians(interleaved(calls, rounds, before_round=copy))
    row = {
        "case": case.name,
        "torch_s": seconds["torch"],
        "softmaxkit_s": seconds["softmaxkit"],
        "ratio": seconds["softmaxkit"] / seconds["torch"],
        "speedup": seconds["torch"] / seconds["softmaxkit"],
    }
    if copy is not None:
        moved = 2 * x.numel() * x.element_size()
        row["copy_gbs"] = copy.gbs()[0]
        for lib in LIBRARIES:
            row[f"{lib}_gbs"] = moved / seconds[lib] / 1e9
        row["softmaxkit_of_copy"] = row["softmaxkit_gbs"] / row["copy_gbs"]
    print(case.name, {k: _time_text(v) for k, v in seconds.items()}, file=sys.stderr)
    return row


def _counts_bytes(case: Case) -> bool:
    # The minimal traffic is read logits + write result only where one call is one pass over a large tensor.
    return case.mode == "eager" and case.dtype == "float32"


# --- memory, in a fresh interpreter -------------------------------------------------------

CHILD = r"""
import sys
from bench_torch import memory_here
memory_here(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
"""


def memory_here(mode: str, dtype: str, library: str, rows: int, classes: int) -> None:
    """In a fresh interpreter: print, as JSON, the peak growth of two forward + backward calls in a row.

    ``first_mib`` is the first call's (with the compilation, for
    ``compile``); ``growth_mib`` the second's, a training step's; ``held_mib``
    what the first left resident for the second (cached outputs, compiled code).
    """
    case = Case(mode, dtype, "cross_entropy+grad", (rows, classes))
    x, t = make_inputs(case)
    step = make_call(case, library, x, t)
    gc.collect()
    before_first = reset_peak_rss()
    step()
    first = peak_rss() - before_first
    x.grad = None
    gc.collect()
    base = reset_peak_rss()
    step()
    growth = peak_rss() - base
    print(
        json.dumps(
            {
                key: value / 2**20
                for key, value in [("first_mib", first), ("growth_mib", growth), ("held_mib", base - before_first)]
            }
        )
    )


def measure_memory(mode: str, dtype: str, shape: tuple[int, int], rounds: int) -> dict:
    """Worst growth of each library over ``rounds`` fresh interpreters, alternating libraries."""
    found = {lib: {"first_mib": [], "growth_mib": [], "held_mib": []} for lib in LIBRARIES}
    for _ in range(rounds):
        for lib in LIBRARIES:
            result = run_fresh(CHILD, mode, dtype, lib, *shape, warnings=False)
            for key, value in result.items():
                found[lib][key].append(value)
    row = {"case": f"memory/{mode}/{dtype}/cross_entropy+grad/{shape[0]}x{shape[1]}"}
    for lib in LIBRARIES:
        row[f"{lib}_mib"] = max(found[lib]["growth_mib"])
        row[f"{lib}_first_mib"] = max(found[lib]["first_mib"])
        row[f"{lib}_held_mib"] = statistics.median(found[lib]["held_mib"])
    row["ratio"] = row["softmaxkit_mib"] / row["torch_mib"] if row["torch_mib"] else float("nan")
    print(row["case"], {k: f"{v:.0f} MiB" for k, v in row.items() if k.endswith("mib")}, file=sys.stderr)
    return row


# --- results ------------------------------------------------------------------------------


def _time_text(seconds: float) -> str:
    return f"{seconds * 1e6:.2f} µs" if seconds < 1e-3 else f"{seconds * 1e3:.1f} ms"


def _cells(r: dict) -> list[str]:
    gbs = f"{r['softmaxkit_gbs']:.1f} vs {r['torch_gbs']:.1f}" if "copy_gbs" in r else "—"
    of_copy = f"{r['softmaxkit_of_copy']:.0%}" if "copy_gbs" in r else "—"
    return [
        r["case"],
        _time_text(r["torch_s"]),
        _time_text(r["softmaxkit_s"]),
        f"{r['ratio']:.2f}",
        f"{r['speedup']:.2f}×",
        gbs,
        of_copy,
    ]


def _memory_cells(r: dict) -> list[str]:
    return [
        r["case"],
        f"{r['torch_mib']:.0f}",
        f"{r['softmaxkit_mib']:.0f}",
        f"{r['ratio']:.2f}",
        f"{r['torch_first_mib']:.0f}",
        f"{r['softmaxkit_first_mib']:.0f}",
        f"{r['torch_held_mib']:.0f}",
        f"{r['softmaxkit_held_mib']:.0f}",
    ]


def write(rows: list[dict], memory: list[dict], rounds: int, memory_rounds: int, quick: bool, out: Path) -> None:
    footer = []
    if memory:
        footer = [
            (
                "Memory (MiB): peak resident-set growth of cross-entropy forward + backward, two calls in a row in a "
                f"fresh interpreter, worst of {memory_rounds} interpreters per library. The first three columns are "
                "the second call's (a training step's); `first` is the first call's (compiled: with the compilation); "
                "`held` is what the first call left resident for the second (cached outputs, compiled code), median."
            ),
            "",
            *markdown_table(
                [
                    "case",
                    "torch (MiB)",
                    "softmaxkit (MiB)",
                    "softmaxkit / torch",
                    "torch first",
                    "softmaxkit first",
                    "torch held",
                    "softmaxkit held",
                ],
                map(_memory_cells, memory),
                "lrrrrrrr",
            ),
        ]
    write_results(
        "torch",
        title="softmaxkit.torch vs torch (CPU)" + (" — quick run, small shapes" if quick else ""),
        machine=(
            f"{describe()}; torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()}), "
            f"{torch.get_num_threads()} torch threads, {softmaxkit.get_num_threads()} softmaxkit threads"
        ),
        notes=[
            (
                f"Median of {rounds} interleaved rounds after a warm-up (the order rotates every round); "
                f"per-call rows average {PER_CALL if not quick else PER_CALL // 10} calls per round. "
                "Cross-entropy is reduction='mean' with class-index targets; `+grad` is forward + backward with "
                "`x.grad = None` before each call."
            ),
            (
                "`compile`: torch.compile(fullgraph=True, dynamic=False) of each library's cross-entropy, the "
                "compilation in the warm-up. `autocast`: torch.autocast('cpu', dtype=torch.bfloat16) around the "
                "loss, bfloat16 logits."
            ),
            (
                "GB/s (eager float32): logits read + result or gradient written, softmaxkit vs torch; `of copy` is "
                "softmaxkit's fraction of np.copyto's bandwidth on the same array, timed in the same rounds."
            ),
        ],
        columns=COLUMNS,
        align="lrrrrrr",
        rows=map(_cells, rows),
        footer=footer,
        csv_fields=CSV_FIELDS,
        csv_rows=rows + memory,
        out=out,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds per case (median reported)")
    parser.add_argument("--memory-rounds", type=int, default=3, help="fresh interpreters per memory variant")
    parser.add_argument("-k", dest="select", default="", help="only the cases whose name contains this")
    parser.add_argument("--quick", action="store_true", help="small shapes, one round: checks that the script runs")
    add_out_argument(parser)
    args = parser.parse_args(argv)
    rounds, memory_rounds = (1, 1) if args.quick else (args.rounds, args.memory_rounds)
    cases = [c.shrunk() if args.quick else c for c in CASES if args.select in c.name]
    memory_shape = tuple(n // 16 for n in MEMORY_SHAPE) if args.quick else MEMORY_SHAPE
    memory_cases = [(m, d) for m, d in MEMORY if args.select in f"memory/{m}/{d}/cross_entropy+grad"]
    print(describe(), file=sys.stderr)
    rows = [measure(case, rounds) for case in cases]
    memory = [measure_memory(m, d, memory_shape, memory_rounds) for m, d in memory_cases]
    write(rows, memory, rounds, memory_rounds, args.quick, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
