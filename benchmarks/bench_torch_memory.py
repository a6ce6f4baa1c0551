"""Peak memory and time of cross-entropy forward + backward: softmaxkit.torch vs torch.

Each measurement runs in a fresh subprocess: the logits (float32, CPU) are
allocated and touched first, then ``ru_maxrss`` is read before and after
forward + backward, so the growth is what the loss itself needs.  Variants
alternate (torch, softmaxkit, torch, ...) so that drift in the shared machine
affects both; the table reports the median time of the repeats after a
warm-up and the largest memory growth.

    PYTHONPATH=src python benchmarks/bench_torch_memory.py [--rows 8192] [--classes 32768] [--out PATH]

Writes benchmarks/results/torch_memory.md and .csv (``--out PATH``: PATH.md and PATH.csv).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from _harness import RESULTS, describe, max_rss, run_fresh, write_results

COLUMNS = ["variant", "peak growth (MiB)", "× torch", "time (s)", "× torch"]


@dataclass(frozen=True)
class Case:
    """One variant of cross-entropy; ``setup`` imports and returns its loss function (in the fresh interpreter)."""

    variant: str
    setup: Callable[[], Callable]


def _torch_loss():
    from torch.nn.functional import cross_entropy

    return cross_entropy


def _softmaxkit_loss():
    from softmaxkit.torch import cross_entropy

    return cross_entropy


# The first case is the reference of the ratios.
CASES = [Case("torch", _torch_loss), Case("softmaxkit", _softmaxkit_loss)]

CHILD = r"""
import sys
from bench_torch_memory import measure_here
measure_here(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
"""


def measure_here(rows: int, classes: int, variant: str, repeats: int) -> None:
    """In the fresh interpreter: print the peak growth in MiB, the times and the softmaxkit path, as JSON."""
    import torch

    torch.manual_seed(0)
    x = torch.randn(rows, classes).mul_(4).requires_grad_()
    t = torch.randint(0, classes, (rows,))
    cross_entropy = next(c for c in CASES if c.variant == variant).setup()
    # Import-time allocations and the first-call setup are not the loss's memory.
    small = torch.randn(4, 8, requires_grad=True)
    cross_entropy(small, torch.zeros(4, dtype=torch.long)).backward()
    base = max_rss()
    times = []
    for _ in range(repeats):
        x.grad = None
        start = time.perf_counter()
        cross_entropy(x, t).backward()
        times.append(time.perf_counter() - start)
    peak = max_rss()
    from softmaxkit import kernels

    path = f"native kernel ({kernels.isa()})" if kernels.active() else "chunked xp formulas"
    print(json.dumps({"growth_mib": (peak - base) / 2**20, "times": times, "path": path}))


def measure(n: int, classes: int, rounds: int, repeats: int) -> tuple[list[dict], str]:
    """One row per variant (worst growth, median time, both over torch's) and softmaxkit's CPU path."""
    results = {c.variant: {"growth": [], "times": []} for c in CASES}
    path = "?"
    for _ in range(rounds):
        for case in CASES:
            r = run_fresh(CHILD, n, classes, case.variant, repeats)
            results[case.variant]["growth"].append(r["growth_mib"])
            results[case.variant]["times"].extend(r["times"][1:] if len(r["times"]) > 1 else r["times"])
            if case.variant == "softmaxkit":
                path = r["path"]
    rows = []
    for variant, r in results.items():
        rows.append({"variant": variant, "growth_mib": max(r["growth"]), "time_s": statistics.median(r["times"])})
    ref = rows[0]
    for row in rows:
        row["memory_ratio"] = row["growth_mib"] / ref["growth_mib"]
        row["time_ratio"] = row["time_s"] / ref["time_s"]
    return rows, path


def _cells(r: dict) -> list[str]:
    growth, memory_ratio, time_s, time_ratio = r["growth_mib"], r["memory_ratio"], r["time_s"], r["time_ratio"]
    return [r["variant"], f"{growth:.0f}", f"{memory_ratio:.2f}", f"{time_s:.3f}", f"{time_ratio:.2f}"]


def write(rows: list[dict], path: str, args: argparse.Namespace) -> None:
    import torch

    logits_mib = args.rows * args.classes * 4 / 2**20
    write_results(
        args.out.name,
        title="Cross-entropy forward + backward: peak memory growth and time (CPU)",
        machine=f"{describe()}, torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()})",
        notes=[
            f"N = {args.rows}, V = {args.classes}, float32 logits ({logits_mib:.0f} MiB), integer targets, reduction='mean'.",
            f"softmaxkit CPU path: {path} (SOFTMAXKIT_DISABLE_NATIVE=1 measures the chunked xp formulas).",
            (
                "Memory: ru_maxrss growth over a fresh subprocess's baseline (logits already allocated), "
                f"worst of {args.rounds} subprocesses."
            ),
            f"Time: median of {args.rounds * max(args.repeats - 1, 1)} runs after a warm-up per subprocess.",
        ],
        columns=COLUMNS,
        align="lrrrr",
        rows=map(_cells, rows),
        csv_fields=list(rows[0]),
        csv_rows=rows,
        out=args.out.parent,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=8192)
    parser.add_argument("--classes", type=int, default=32768)
    parser.add_argument("--rounds", type=int, default=3, help="fresh subprocesses per variant")
    parser.add_argument(
        "--repeats", type=int, default=3, help="forward+backward runs per subprocess; the first is a warm-up"
    )
    parser.add_argument(
        "--out", type=Path, default=RESULTS / "torch_memory", help="path of the tables, without .md or .csv"
    )
    args = parser.parse_args(argv)
    rows, path = measure(args.rows, args.classes, args.rounds, args.repeats)
    write(rows, path, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
