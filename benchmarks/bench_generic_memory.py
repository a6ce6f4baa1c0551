"""Peak memory of the generic (array-API) path: every row-wise function and loss.

The generic path serves bfloat16 (always), a class axis other than the last,
``where=``, non-contiguous input, ``diagnose``, ``sample``,
``fit_temperature`` and ``SOFTMAXKIT_DISABLE_NATIVE=1``; every case here
runs with the native kernels disabled.  Each measurement runs in a fresh
subprocess: the inputs are allocated and touched, the call is made once on a
two-row slice (imports, first-call set-up), the peak resident set is reset,
and the peak after the full call minus the resident set before it is the
call's peak growth (``_harness.reset_peak_rss`` and ``peak_rss``).  The
table gives it in MiB and divided by the output (the largest one: the
gradient for the losses with ``return_grad``), with the median time of the timed
repeats that follow in the same process.

    PYTHONPATH=src python benchmarks/bench_generic_memory.py [--scale 4] [--src DIR] [--label NAME] [--out DIR]

``--scale k`` divides every case's rows by ``k``; ``--src DIR`` measures
the package under ``DIR`` (for example an older checkout, ``git archive`` of
a commit with the built extension copied in), labelled ``--label``.
Results are appended to benchmarks/results/generic_memory.csv and the table
is rewritten to benchmarks/results/generic_memory.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from _harness import (
    FreshRunFailed,
    add_out_argument,
    describe,
    peak_rss,
    reset_peak_rss,
    run_fresh,
    write_results,
)

import softmaxkit as smk

FLOAT_ROWS, BF16_ROWS, CLASSES = 1024, 256, 131072


def _column(x: np.ndarray) -> np.ndarray:
    return np.zeros((x.shape[0], 1), x.dtype)


def _uniform(x: np.ndarray) -> np.ndarray:
    return np.full(x.shape, 1.0 / x.shape[1], x.dtype)


def _negative_uniform(x: np.ndarray) -> np.ndarray:
    return -_uniform(x)  # negative weights: a sign of -1


@dataclass(frozen=True)
class Case:
    """One measurement: ``call`` on logits x, class targets t and the second input ``second(x)`` (q)."""

    op: str
    dtype: str
    rows: int
    call: Callable[[np.ndarray, np.ndarray, np.ndarray], object]
    second: Callable[[np.ndarray], np.ndarray] = _column
    classes: int = CLASSES


# The shapes of the measurements that showed the unbounded growth, 512 MiB of float32 and 64 MiB of bfloat16.
CASES = [
    Case("cross_entropy+grad", "float32", FLOAT_ROWS, lambda x, t, q: smk.cross_entropy(x, t, return_grad=True)),
    Case("cross_entropy", "float32", FLOAT_ROWS, lambda x, t, q: smk.cross_entropy(x, t)),
    Case("softmax", "float32", FLOAT_ROWS, lambda x, t, q: smk.softmax(x)),
    Case("log_softmax", "float32", FLOAT_ROWS, lambda x, t, q: smk.log_softmax(x)),
    Case("logsumexp", "float32", FLOAT_ROWS, lambda x, t, q: smk.logsumexp(x)),
    Case("cross_entropy+grad", "bfloat16", BF16_ROWS, lambda x, t, q: smk.cross_entropy(x, t, return_grad=True)),
    Case("softmax", "bfloat16", BF16_ROWS, lambda x, t, q: smk.softmax(x)),
    Case(
        "logsumexp+b+sign",
        "float32",
        FLOAT_ROWS,
        lambda x, t, q: smk.logsumexp(x, b=q, return_sign=True),
        _negative_uniform,
    ),
    Case("entropy", "float32", FLOAT_ROWS, lambda x, t, q: smk.entropy(x)),
    Case("kl_div", "float32", FLOAT_ROWS, lambda x, t, q: smk.kl_div(x, q), _uniform),
    Case("softmax_vjp", "float32", FLOAT_ROWS, lambda x, t, q: smk.softmax_vjp(q, x), _uniform),
    Case("log_softmax_vjp", "float32", FLOAT_ROWS, lambda x, t, q: smk.log_softmax_vjp(q, x), _uniform),
    Case("logsumexp_vjp", "float32", FLOAT_ROWS, lambda x, t, q: smk.logsumexp_vjp(x, q[:, 0]), _uniform),
    Case("nll_loss+grad", "float32", FLOAT_ROWS, lambda x, t, q: smk.nll_loss(x, t, return_grad=True)),
    Case("bce", "float32", FLOAT_ROWS, lambda x, t, q: smk.binary_cross_entropy_with_logits(x, q), _uniform),
    Case(
        "bce+grad",
        "float32",
        FLOAT_ROWS,
        lambda x, t, q: smk.binary_cross_entropy_with_logits(x, q, return_grad=True),
        _uniform,
    ),
]
BY_NAME = {(c.op, c.dtype): c for c in CASES}

CHILD = r"""
import sys
from bench_generic_memory import measure_here
measure_here(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
"""

COLUMNS = [
    "code",
    "operation",
    "dtype",
    "shape",
    "input MiB",
    "output MiB",
    "peak growth MiB",
    "growth / output",
    "growth / input",
    "median s",
]
FIELDS = ["label", "op", "dtype", "rows", "classes", "input", "output", "growth", "seconds", "error"]


def inputs(case: Case, rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Touched logits, targets and the second input of ``case`` with ``rows`` rows."""
    if case.dtype == "bfloat16":
        import ml_dtypes

        dtype = np.dtype(ml_dtypes.bfloat16)
    else:
        dtype = np.dtype(case.dtype)
    x = np.zeros((rows, case.classes), dtype)
    x[:, ::3] = 1
    x[:, 1::7] = -2
    t = np.arange(rows) % case.classes
    return x, t, case.second(x)


def measure_here(op: str, dtype_name: str, rows: int, repeats: int) -> None:
    """In the fresh interpreter: print the peak growth of one call, the sizes and the median time, as JSON."""
    case = BY_NAME[op, dtype_name]
    x, t, q = inputs(case, rows)
    call = case.call
    call(x[:2], t[:2], q[:2])
    before = reset_peak_rss()
    out = call(x, t, q)
    peak = peak_rss()
    outs = out if isinstance(out, tuple) else (out,)
    out_bytes = max(np.asarray(o).nbytes for o in outs)
    del out, outs
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call(x, t, q)
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times) if times else None
    print(json.dumps({"growth": peak - before, "input": x.nbytes, "output": out_bytes, "seconds": seconds}))


def measure(case: Case, rows: int, src: str | None, repeats: int) -> dict:
    """The fresh interpreter's measurement of ``case`` with ``rows`` rows, or the error it failed with."""
    env = {"SOFTMAXKIT_DISABLE_NATIVE": "1"}
    if src:
        env["PYTHONPATH"] = src
    try:
        return run_fresh(CHILD, case.op, case.dtype, rows, repeats, env=env, warnings=False)
    except FreshRunFailed as exc:
        return {"error": str(exc)}


def _cells(r: dict) -> list[str]:
    shape = f"{r['rows']}x{r['classes']}"
    if r.get("error"):
        return [r["label"], r["op"], r["dtype"], shape, "", "", f"failed: {r['error']}", "", "", ""]
    mib = 2**20
    per_out = f"{r['growth'] / r['output']:.2f}x" if r["output"] >= mib else "-"
    secs = f"{r['seconds']:.3f}" if r.get("seconds") else "-"
    return [
        r["label"],
        r["op"],
        r["dtype"],
        shape,
        f"{r['input'] / mib:.0f}",
        f"{r['output'] / mib:.2f}",
        f"{r['growth'] / mib:.0f}",
        per_out,
        f"{r['growth'] / r['input']:.2f}x",
        secs,
    ]


def _from_csv(r: dict) -> dict:
    r = dict(r)
    for k in ("rows", "classes", "input", "output", "growth"):
        r[k] = int(r[k]) if r.get(k) not in (None, "") else 0
    r["seconds"] = float(r["seconds"]) if r.get("seconds") not in (None, "") else None
    return r


def measure_all(args: argparse.Namespace) -> list[dict]:
    """One row per case, its rows divided by ``--scale``, printed as it comes."""
    new = []
    for case in CASES:
        rows = max(1, case.rows // args.scale)
        row = {"label": args.label, "op": case.op, "dtype": case.dtype, "rows": rows, "classes": case.classes}
        row.update(measure(case, rows, args.src, args.repeats))
        new.append(row)
        print("| " + " | ".join(map(str, _cells(row))) + " |", flush=True)
    return new


def earlier_rows(out: Path, new: list[dict]) -> list[dict]:
    """The rows of ``out``'s CSV for another label or row count than the ``new`` ones."""
    csv_path = out / "generic_memory.csv"
    if not csv_path.exists():
        return []
    measured = {(n["label"], str(n["rows"])) for n in new}
    with csv_path.open() as f:
        return [r for r in csv.DictReader(f) if (r["label"], r["rows"]) not in measured]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=1, help="divide every case's rows by this")
    parser.add_argument("--src", default=None, help="measure the package under this directory")
    parser.add_argument("--label", default="this tree", help="name of the measured code in the table")
    parser.add_argument("--repeats", type=int, default=2, help="timed calls after the measured one")
    add_out_argument(parser)
    args = parser.parse_args()
    if args.scale < 1:
        parser.error(f"--scale must be >= 1; got {args.scale}")
    new = measure_all(args)
    old = earlier_rows(args.out, new)
    write_results(
        "generic_memory",
        title="Generic path: peak memory",
        machine=describe(),
        notes=["Native kernels disabled (SOFTMAXKIT_DISABLE_NATIVE=1); bfloat16 always takes this path."],
        columns=COLUMNS,
        rows=[_cells(_from_csv(r)) for r in old] + [_cells(r) for r in new],
        csv_fields=FIELDS,
        csv_rows=old + new,
        out=args.out,
    )


if __name__ == "__main__":
    sys.exit(main())
