"""Peak memory and time of cross-entropy forward + backward: softmaxkit.torch vs torch.

Each measurement runs in a fresh subprocess: the logits (float32, CPU) are
allocated and touched first, then ``ru_maxrss`` is read before and after
forward + backward, so the growth is what the loss itself needs.  Variants
alternate (torch, softmaxkit, torch, ...) so that drift in the shared machine
affects both; the table reports the median time of the repeats after a
warm-up and the largest memory growth.

    PYTHONPATH=src python benchmarks/bench_torch_memory.py [--rows 8192] [--classes 32768]

Writes benchmarks/results/torch_memory.md and .csv.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from _machine import describe

CHILD = r"""
import json, resource, sys, time
import torch
rows, classes, variant, repeats = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
torch.manual_seed(0)
x = torch.randn(rows, classes).mul_(4).requires_grad_()
t = torch.randint(0, classes, (rows,))
if variant == "torch":
    from torch.nn.functional import cross_entropy
else:
    from softmaxkit.torch import cross_entropy
# Import-time allocations and the first-call setup are not the loss's memory.
small = torch.randn(4, 8, requires_grad=True)
cross_entropy(small, torch.zeros(4, dtype=torch.long)).backward()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
times = []
for _ in range(repeats):
    x.grad = None
    start = time.perf_counter()
    cross_entropy(x, t).backward()
    times.append(time.perf_counter() - start)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
from softmaxkit import kernels as _native

path = f"native kernel ({_native.isa()})" if _native.active() else "chunked xp formulas"
print(json.dumps({"growth_mib": (peak - base) / 1024, "times": times, "path": path}))
"""


def _run(rows: int, classes: int, variant: str, repeats: int) -> dict:
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(rows), str(classes), variant, str(repeats)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=8192)
    parser.add_argument("--classes", type=int, default=32768)
    parser.add_argument("--rounds", type=int, default=3, help="fresh subprocesses per variant")
    parser.add_argument("--repeats", type=int, default=3, help="forward+backward runs per subprocess; the first is a warm-up")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "torch_memory")
    args = parser.parse_args(argv)

    results = {"torch": {"growth": [], "times": []}, "softmaxkit": {"growth": [], "times": []}}
    path = "?"
    for _ in range(args.rounds):
        for variant in results:
            r = _run(args.rows, args.classes, variant, args.repeats)
            results[variant]["growth"].append(r["growth_mib"])
            results[variant]["times"].extend(r["times"][1:] if len(r["times"]) > 1 else r["times"])
            if variant == "softmaxkit":
                path = r["path"]

    rows = []
    for variant, r in results.items():
        rows.append({"variant": variant, "growth_mib": max(r["growth"]), "time_s": statistics.median(r["times"])})
    ref = rows[0]
    for row in rows:
        row["memory_ratio"] = row["growth_mib"] / ref["growth_mib"]
        row["time_ratio"] = row["time_s"] / ref["time_s"]

    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out.with_suffix(".csv"), "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    import torch

    logits_mib = args.rows * args.classes * 4 / 2**20
    lines = [
        "# Cross-entropy forward + backward: peak memory growth and time (CPU)",
        "",
        f"N = {args.rows}, V = {args.classes}, float32 logits ({logits_mib:.0f} MiB), integer targets, reduction='mean'.",
        f"Machine: {describe()}, torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()}).",
        f"softmaxkit CPU path: {path} (SOFTMAXKIT_DISABLE_NATIVE=1 measures the chunked xp formulas).",
        f"Memory: ru_maxrss growth over a fresh subprocess's baseline (logits already allocated), worst of {args.rounds} subprocesses.",
        f"Time: median of {args.rounds * max(args.repeats - 1, 1)} runs after a warm-up per subprocess.",
        "",
        "| variant | peak growth (MiB) | × torch | time (s) | × torch |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['variant']} | {row['growth_mib']:.0f} | {row['memory_ratio']:.2f} | {row['time_s']:.3f} | {row['time_ratio']:.2f} |"
        )
    text = "\n".join(lines) + "\n"
    args.out.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
