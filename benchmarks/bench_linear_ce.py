"""Fused linear cross-entropy, forward + backward: softmaxkit against naive torch and torch's chunked path (CPU).

Three variants of the loss of a language model's head, ``cross_entropy(h @ W.T, y)``
with ``reduction="mean"`` and class-index targets, differentiated in the
hidden states ``h`` and the weight ``W``:

- ``naive``: ``F.cross_entropy(h @ W.T, y)``, the ``N x V`` logits materialised;
- ``torch chunked``: ``F.linear_cross_entropy(h, W, y,
  options=torch.nn.LinearCrossEntropyOptions())``, torch's own fused path
  with its automatic chunking and accumulation policy;
- ``softmaxkit``: ``softmaxkit.torch.linear_cross_entropy(h, W, y)``.

Inputs: ``h ~ N(0, 1)``, ``W ~ N(0, 4 / H)`` (logits of standard deviation
about 2), uniform targets, in float32 and in bfloat16 (the bfloat16 tensors
are the float32 ones rounded).  Shapes: ``--quick`` N=256, H=256, V=8192;
the default N=4096, H=1024, V=65536; ``--large`` N=8192, H=2048, V=128256.

Time: seconds per forward + backward (``h.grad`` and ``W.grad`` set to None
before each call), the variants of one dtype in one process, interleaved,
the order rotating every round; each variant is warmed up once on a small
shape first, and the table gives the median of the timed rounds.

Memory: the peak resident-set growth of one forward + backward in a fresh
interpreter per variant: the inputs are allocated and the variant warmed up
on a small shape before the baseline is read (``_harness.reset_peak_rss``,
Linux's resettable ``ru_maxrss``), so the growth is what the loss needs,
its gradients included.  The memory model it is compared with is that of
``softmaxkit.torch.linear_cross_entropy``'s docstring: the gradients' bytes
``(N·H + V·H)·itemsize``, times 1.25, plus a float32 accumulator ``V·H·4``
for a 16-bit weight.  A naive variant whose logits cannot fit (three
``N x V`` buffers of the logits' dtype beside the inputs and gradients,
against the smaller of 24 GiB and the memory available now) is skipped with
the reason printed; the fused variants still run.

Accuracy (quick and default shapes): the loss of each variant against a
float64 reference on the same inputs (the 16-bit values widened exactly,
logits formed in float64 a block of rows at a time), as a relative error,
and the worst row-wise relative error of ``d_hidden``:
``max_i max_j |dh_ij - ref_ij| / max_j |ref_ij|``.

Usage::

    PYTHONPATH=src python benchmarks/bench_linear_ce.py [--quick | --large] [--rounds 2]
        [--dtypes float32,bfloat16] [--variants naive,torch chunked,softmaxkit] [--out DIR]

prints the table and writes DIR/linear_ce.md and .csv (default
benchmarks/results); the rows of the shape and dtypes measured replace
those of an earlier run, and the other rows are kept, so that the default
and the large shape can be measured in separate runs.
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from _harness import (
    REPOSITORY,
    add_out_argument,
    option_names,
    describe,
    peak_rss,
    reset_peak_rss,
    run_fresh,
    write_results,
)

import softmaxkit
import softmaxkit.torch as smt

QUICK = (256, 256, 8192)
# Warm-up calls use a smaller shape than any measured, so they leave no freed buffers of the measured sizes.
WARM = (64, 64, 1024)
DEFAULT = (4096, 1024, 65536)
LARGE = (8192, 2048, 128256)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
VARIANTS = ["naive", "torch chunked", "softmaxkit"]
PEERS = ["naive", "torch chunked"]
# The naive variant's logits must fit beside everything else in this much memory.
MEMORY_LIMIT = 24 << 30
REFERENCE_ROWS = 256
# The softmaxkit measured, which the fresh interpreters import too.
SOURCE = Path(softmaxkit.__file__).resolve().parents[1]

TITLE = "Fused linear cross-entropy forward + backward: softmaxkit vs naive torch and torch's chunked path (CPU)"
NAME = "linear_ce"
COLUMNS = [
    "shape",
    "dtype",
    "variant",
    "time (s)",
    "softmaxkit / this",
    "peak growth (MiB)",
    "/ model",
    "loss rel. error",
    "d_hidden rel. error",
]
CSV_FIELDS = [
    "shape",
    "dtype",
    "variant",
    "softmaxkit",
    "rounds",
    "time_s",
    "times",
    "softmaxkit_over_this",
    "growth_mib",
    "model_mib",
    "growth_over_model",
    "loss",
    "loss_rel_error",
    "dh_rel_error",
    "skipped",
]


# --- the variants -----------------------------------------------------------------------------


def _naive(h: torch.Tensor, w: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(h @ w.T, y)


def _torch_chunked(h: torch.Tensor, w: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.linear_cross_entropy(h, w, y, options=torch.nn.LinearCrossEntropyOptions())


def _softmaxkit(h: torch.Tensor, w: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return smt.linear_cross_entropy(h, w, y)


LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "naive": _naive,
    "torch chunked": _torch_chunked,
    "softmaxkit": _softmaxkit,
}


def make_inputs(shape: tuple[int, int, int], dtype: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(h, W, y)``: leaves that require gradients, and targets; the same values in every process."""
    n, width, v = shape
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(n, width, generator=gen).to(DTYPES[dtype])
    w = torch.randn(v, width, generator=gen).mul_(2 / width**0.5).to(DTYPES[dtype])
    y = torch.randint(0, v, (n,), generator=gen)
    return h.requires_grad_(), w.requires_grad_(), y


def step(variant: str, h: torch.Tensor, w: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One forward + backward from fresh gradients; returns the loss (detached)."""
    h.grad = w.grad = None
    loss = LOSSES[variant](h, w, y)
    loss.backward()
    return loss.detach()


def warm_up(variant: str, dtype: str) -> None:
    """One call on a small shape: libraries loaded, thread pools and kernels set up."""
    step(variant, *make_inputs(WARM, dtype))


# --- the memory model and the fit check -------------------------------------------------------


def model_bytes(shape: tuple[int, int, int], dtype: str) -> int:
    """softmaxkit's stated peak beyond the inputs: 1.25 x the gradients, plus a float32 accumulator for 16-bit weights."""
    n, width, v = shape
    itemsize = DTYPES[dtype].itemsize
    grads = (n * width + v * width) * itemsize
    return int(1.25 * grads) + (v * width * 4 if itemsize < 4 else 0)


def naive_estimate(shape: tuple[int, int, int], dtype: str) -> int:
    """Bytes the naive variant needs at its peak, inputs included: three ``N x V`` buffers
    (log-softmax, its gradient, the logits' gradient) beside the inputs and their gradients."""
    n, width, v = shape
    itemsize = DTYPES[dtype].itemsize
    return (3 * n * v + 2 * (n * width + v * width)) * itemsize


def available_bytes() -> int:
    """``MemAvailable`` (Linux), or the fixed limit where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable"))
    except (OSError, StopIteration):
        return MEMORY_LIMIT


def naive_skip_reason(shape: tuple[int, int, int], dtype: str) -> str | None:
    """Why the naive variant cannot run on this shape, or None."""
    need, room = naive_estimate(shape, dtype), min(MEMORY_LIMIT, available_bytes())
    if need <= 0.9 * room:
        return None
    return f"naive {dtype} needs about {need / 2**30:.1f} GiB; {room / 2**30:.1f} GiB available (limit 24 GiB)"


# --- accuracy ---------------------------------------------------------------------------------


def reference(h: torch.Tensor, w: torch.Tensor, y: torch.Tensor) -> tuple[float, torch.Tensor]:
    """The mean loss and ``d_hidden`` in float64, the logits formed a block of rows at a time."""
    h64, w64 = h.detach().double(), w.detach().double()
    n = h64.shape[0]
    total = torch.zeros((), dtype=torch.float64)
    dh = torch.empty_like(h64)
    for start in range(0, n, REFERENCE_ROWS):
        rows = slice(start, start + REFERENCE_ROWS)
        logits = h64[rows] @ w64.T
        logp = torch.log_softmax(logits, dim=1)
        t = y[rows]
        total += -logp.gather(1, t[:, None]).sum()
        g = logp.exp_()
        g[torch.arange(g.shape[0]), t] -= 1
        dh[rows] = (g @ w64) / n
    return float(total) / n, dh


def dh_error(dh: torch.Tensor, ref: torch.Tensor) -> float:
    """Worst row-wise relative error: ``max_i max_j |dh_ij - ref_ij| / max_j |ref_ij|``."""
    err = (dh.double() - ref).abs().amax(dim=1)
    return float((err / ref.abs().amax(dim=1)).max())


# --- measuring --------------------------------------------------------------------------------


CHILD = r"""
import sys
from bench_linear_ce import memory_here
memory_here(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
"""


def memory_here(variant: str, dtype: str, n: int, width: int, v: int) -> None:
    """In a fresh interpreter: print the peak growth of one forward + backward and its time, as JSON."""
    h, w, y = make_inputs((n, width, v), dtype)
    warm_up(variant, dtype)
    gc.collect()
    base = reset_peak_rss()
    start = time.perf_counter()
    step(variant, h, w, y)
    seconds = time.perf_counter() - start
    growth = peak_rss() - base
    print(json.dumps({"growth_mib": growth / 2**20, "time_s": seconds}))


def source_version() -> str:
    """The commit of the softmaxkit measured (``+dirty`` with uncommitted changes), or its folder outside this checkout."""
    if SOURCE != REPOSITORY / "src":
        return str(SOURCE)
    git = ["git", "-C", str(REPOSITORY)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False).stdout.strip()
    dirty = subprocess.run([*git, "status", "--porcelain", "--", "src"], capture_output=True, text=True, check=False).stdout.strip()
    return (commit or "unknown") + ("+dirty" if dirty else "")


def measure_dtype(shape: tuple[int, int, int], dtype: str, variants: list[str], rounds: int, accuracy: bool) -> list[dict]:
    """One row per variant of ``dtype``: times, peak growth against the model, accuracy."""
    skip = naive_skip_reason(shape, dtype) if "naive" in variants else None
    if skip:
        print(f"skipped: {skip}", file=sys.stderr)
    running = [v for v in variants if not (v == "naive" and skip)]
    h, w, y = make_inputs(shape, dtype)
    results: dict[str, dict] = {v: {"times": []} for v in running}
    for variant in running:
        warm_up(variant, dtype)
    for r in range(rounds):
        shift = r % len(running)
        for variant in running[shift:] + running[:shift]:
            start = time.perf_counter()
            loss = step(variant, h, w, y)
            results[variant]["times"].append(time.perf_counter() - start)
            results[variant].update(loss=float(loss), dh=h.grad)
            print(f"{dtype} {variant}: {results[variant]['times'][-1]:.2f} s", file=sys.stderr, flush=True)
    if accuracy and rounds:
        ref_loss, ref_dh = reference(h, w, y)
        for variant in running:
            res = results[variant]
            res["loss_rel_error"] = abs(res["loss"] - ref_loss) / ref_loss
            res["dh_rel_error"] = dh_error(res["dh"], ref_dh)
    del h, w, y
    for res in results.values():
        res.pop("dh", None)
    gc.collect()
    for variant in running:
        fresh = run_fresh(CHILD, variant, dtype, *shape, env={"PYTHONPATH": str(SOURCE)}, warnings=False)
        results[variant]["growth_mib"] = fresh["growth_mib"]
        results[variant]["fresh_time_s"] = fresh["time_s"]
        print(f"{dtype} {variant}: {fresh['growth_mib']:.0f} MiB in a fresh interpreter", file=sys.stderr, flush=True)
    model_mib = model_bytes(shape, dtype) / 2**20
    version = source_version()
    rows = []
    for variant in variants:
        row = {"shape": "x".join(map(str, shape)), "dtype": dtype, "variant": variant, "softmaxkit": version, "rounds": rounds, "model_mib": model_mib}
        if variant not in results:
            rows.append({**row, "skipped": skip})
            continue
        res = results[variant]
        times = res["times"] or [res["fresh_time_s"]]
        row.update(
            time_s=statistics.median(times),
            times=" ".join(f"{t:.3f}" for t in times),
            growth_mib=res["growth_mib"],
            growth_over_model=res["growth_mib"] / model_mib,
            loss=res.get("loss"),
            loss_rel_error=res.get("loss_rel_error"),
            dh_rel_error=res.get("dh_rel_error"),
        )
        rows.append(row)
    ours = next((r for r in rows if r["variant"] == "softmaxkit" and "time_s" in r), None)
    for row in rows:
        if ours is not None and "time_s" in row:
            row["softmaxkit_over_this"] = ours["time_s"] / row["time_s"]
    return rows


# --- results ----------------------------------------------------------------------------------


def _float(value: object) -> float | None:
    return None if value in (None, "") else float(value)


def _number(value: object, fmt: str) -> str:
    number = _float(value)
    return "—" if number is None else format(number, fmt)


def _cells(r: dict) -> list[str]:
    if r.get("skipped"):
        return [r["shape"], r["dtype"], r["variant"], "skipped", "—", "—", "—", "—", "—"]
    rounds = int(_float(r["rounds"]) or 0)
    timed = f"{rounds} round{'s' * (rounds > 1)}" if rounds else "fresh call"
    return [
        r["shape"],
        r["dtype"],
        r["variant"],
        f"{_float(r['time_s']):.2f} ({timed})",
        _number(r.get("softmaxkit_over_this"), ".2f"),
        _number(r["growth_mib"], ".0f"),
        _number(r["growth_over_model"], ".2f"),
        _number(r.get("loss_rel_error"), ".1e"),
        _number(r.get("dh_rel_error"), ".1e"),
    ]


def merged(new: list[dict], out: Path) -> list[dict]:
    """``new`` in place of the rows of the same shape and dtype in ``out/linear_ce.csv``, the others kept."""
    old = []
    if (out / f"{NAME}.csv").exists():
        with open(out / f"{NAME}.csv", newline="") as f:
            old = list(csv.DictReader(f))
    replaced = {(r["shape"], r["dtype"]) for r in new}
    rows = [r for r in old if (r["shape"], r["dtype"]) not in replaced] + new
    order = {"x".join(map(str, s)): i for i, s in enumerate([QUICK, DEFAULT, LARGE])}
    return sorted(rows, key=lambda r: (order.get(r["shape"], 3), list(DTYPES).index(r["dtype"]), VARIANTS.index(r["variant"])))


def not_run(rows: list[dict]) -> list[str]:
    """A note for each variant left out of a shape and dtype (``--variants``), with the naive variant's estimated peak."""
    notes = []
    for shape, dtype in dict.fromkeys((r["shape"], r["dtype"]) for r in rows):
        present = {r["variant"] for r in rows if (r["shape"], r["dtype"]) == (shape, dtype)}
        for variant in (v for v in VARIANTS if v not in present):
            estimate = ""
            if variant == "naive":
                size = tuple(int(d) for d in shape.split("x"))
                estimate = f" (estimated peak {naive_estimate(size, dtype) / 2**30:.1f} GiB)"
            notes.append(f"Not run (left out with --variants): {variant} at {shape} {dtype}{estimate}.")
    return notes


def write(rows: list[dict], out: Path) -> None:
    from softmaxkit import kernels

    path = f"native cross-entropy kernel ({kernels.isa()})" if kernels.active() else "the shared xp formulas"
    notes = [
        (
            "Shape N x H x V (tokens, hidden size, classes); reduction='mean', class-index targets; forward + backward "
            "in the hidden states and the weight. `naive`: F.cross_entropy(h @ W.T, y); `torch chunked`: "
            "F.linear_cross_entropy(h, W, y, options=torch.nn.LinearCrossEntropyOptions()); `softmaxkit`: "
            f"softmaxkit.torch.linear_cross_entropy(h, W, y) (per-row loss: {path})."
        ),
        (
            "Time: seconds per forward + backward, the median of the rounds interleaved in one process (order "
            "rotating), after a warm-up call of each variant on a small shape; `fresh call`: one call in the fresh "
            "interpreter of the memory measurement. `softmaxkit / this`: softmaxkit's time over the row's (below 1: "
            "softmaxkit is faster)."
        ),
        (
            "Memory: peak resident-set growth of one forward + backward in a fresh interpreter per variant, the "
            "inputs allocated and the variant warmed up before the baseline is read; gradients included. `/ model` "
            "divides by softmaxkit's memory model: 1.25 x the gradients' bytes (N·H + V·H)·itemsize, plus a float32 "
            "accumulator V·H·4 for bfloat16."
        ),
        (
            "Accuracy: relative error of the loss against a float64 reference on the same inputs, and the worst "
            "row-wise relative error of d_hidden, max_i max_j |dh - ref| / max_j |ref|; — where not measured "
            "(the float64 reference of the large shape costs minutes)."
        ),
        (
            "Each shape is measured in a run of its own, under the load of its time: compare the variants within "
            "a shape and dtype. The CSV's `softmaxkit` column names the code measured."
        ),
        *sorted({f"Skipped: {r['skipped']}." for r in rows if r.get("skipped")}),
        *not_run(rows),
    ]
    write_results(
        NAME,
        title=TITLE,
        machine=f"{describe()}; torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()}), "
        f"{torch.get_num_threads()} torch threads, {softmaxkit.get_num_threads()} softmaxkit threads; "
        "the cores are shared with other work, so timings are noisy",
        notes=notes,
        columns=COLUMNS,
        align="lllrrrrrr",
        rows=map(_cells, rows),
        csv_fields=CSV_FIELDS,
        csv_rows=rows,
        out=out,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help=f"N, H, V = {QUICK}: checks that the script runs")
    size.add_argument("--large", action="store_true", help=f"N, H, V = {LARGE}, without the float64 reference")
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds per variant; 0: time the fresh interpreter's call")
    parser.add_argument("--dtypes", default="float32,bfloat16", help="comma-separated: float32, bfloat16")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated: " + ", ".join(VARIANTS))
    add_out_argument(parser)
    args = parser.parse_args(argv)
    if args.rounds < 0:
        parser.error(f"--rounds must be >= 0; got {args.rounds}")
    dtypes = option_names(args.dtypes, list(DTYPES), "--dtypes")
    variants = option_names(args.variants, VARIANTS, "--variants")
    shape = QUICK if args.quick else LARGE if args.large else DEFAULT
    print(describe(), file=sys.stderr)
    rows: list[dict] = []
    with warnings.catch_warnings(record=True) as found:
        warnings.simplefilter("always")
        for dtype in dtypes:
            rows += measure_dtype(shape, dtype, variants, args.rounds, accuracy=not args.large)
    for w in {str(w.message).splitlines()[0] for w in found}:
        print(f"warning raised by a variant: {w}", file=sys.stderr)
    write(merged(rows, args.out), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
