"""softmaxkit's attention against torch's CPU scaled_dot_product_attention: time, accuracy, memory.

The libraries, on the same tensors in one process:

- ``softmaxkit``: ``softmaxkit.attention`` on NumPy arrays (forward only;
  bfloat16 as ml_dtypes' type);
- ``softmaxkit.torch``: ``softmaxkit.torch.scaled_dot_product_attention`` on
  CPU tensors;
- ``torch math`` and ``torch flash``:
  ``torch.nn.functional.scaled_dot_product_attention`` under
  ``torch.nn.attention.sdpa_kernel(SDPBackend.MATH)`` and
  ``(SDPBackend.FLASH_ATTENTION)``.

The cases (issue 18's targets): the training shape (B=4, H=16, L=S=1024,
D=64) and decoding (B=1, H=32, L=1, S=8192, D=128), float32 and bfloat16,
causal and padded (a boolean key-padding mask, True attends, that hides the
last keys of some batch rows), forward and forward + backward (the gradients
of query, key and value for a fixed output gradient).  Decoding's causal mask
is bottom-right, which at L=1 attends every key, so every library is called
there without a mask.

Timing: the harness's interleaved rounds, medians.  A library whose call
would take more than ``--budget`` seconds (one call on one head of each
batch row, times the heads) is timed on the first ``h`` heads instead, the
most that fit the budget, and its median scaled by ``H / h``: the table marks
such times ``≈`` (heads are independent problems of equal size).

Accuracy: the output and log-sum-exp of sampled rows (8 query rows of one
head; decoding: the row of 4 heads) against the mpmath reference of the
test suite (``tests/reference/attention.py``, 60 digits), on the inputs
rounded to the dtype: the log-sum-exp in float32 ULP (float64 for float64)
and the output in units of ``u Σ_j P_ij |v_j|``, ``u`` the unit roundoff of
the dtype (the mixed bound of softmaxkit's contract).  torch's math backend
returns no log-sum-exp; torch flash's comes from
``torch.ops.aten._scaled_dot_product_flash_attention_for_cpu``.

Memory: peak resident-set growth of one call in a fresh interpreter per
variant (float32, causal, B=1, H=2, D=64) at growing L=S, beside the size of
one L×S float32 array.

Usage::

    PYTHONPATH=src python benchmarks/bench_attention.py [--rounds 5] [--budget 10] [-k SUBSTRING] [--quick] [--out DIR]

writes benchmarks/results/attention.md and attention.csv.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import ml_dtypes
import numpy as np
import torch
import torch.nn.functional as F
from _harness import (
    REPOSITORY,
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
from torch.nn.attention import SDPBackend, sdpa_kernel

import softmaxkit
import softmaxkit.torch as smt

sys.path.insert(0, str(REPOSITORY))

from tests import reference as ref
from tests.reference import attention as aref

LIBRARIES = ("softmaxkit", "softmaxkit.torch", "torch math", "torch flash")
TORCH_BACKENDS = {
    "torch math": SDPBackend.MATH,
    "torch flash": SDPBackend.FLASH_ATTENTION,
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
NUMPY_DTYPES = {
    "float32": np.dtype(np.float32),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
}
MASKS = ("causal", "padded")
DIRECTIONS = ("forward", "forward+backward")


@dataclass(frozen=True)
class Shape:
    """(B, H, L, S, D) with a name; the heads of query, key and value are equal."""

    name: str
    B: int
    H: int
    L: int
    S: int
    D: int

    def __str__(self) -> str:
        return f"{self.name} B={self.B} H={self.H} L={self.L} S={self.S} D={self.D}"


SHAPES = (Shape("train", 4, 16, 1024, 1024, 64), Shape("decode", 1, 32, 1, 8192, 128))
QUICK_SHAPES = (Shape("train", 2, 2, 64, 64, 16), Shape("decode", 1, 4, 1, 256, 32))
# Sampled rows for the accuracy columns: query rows of one head, or (L = 1) the row of several heads.
SAMPLE_ROWS = {"train": 8, "decode": 2}
QUICK_SAMPLE_ROWS = 2
MEMORY_HEADS = 2
MEMORY_D = 64
MEMORY_SIZES = {"forward": (1024, 2048, 4096), "forward+backward": (1024, 2048, 4096)}
QUICK_MEMORY_SIZES = {"forward": (128,), "forward+backward": ()}


@dataclass(frozen=True)
class Case:
    """One timed row: ``direction`` of attention at ``shape`` in ``dtype`` with ``mask``."""

    shape: Shape
    dtype: str
    mask: str
    direction: str

    @property
    def name(self) -> str:
        return f"{self.shape.name}/{self.dtype}/{self.mask}/{self.direction}"


# --- the inputs and the calls -------------------------------------------------------------


@dataclass
class Inputs:
    """Query, key and value (dtype, standard normal), the key-padding mask or None, the
    causal flag (top-left, torch's ``is_causal``) and a fixed output gradient."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    mask: torch.Tensor | None
    causal: bool
    dout: torch.Tensor

    def heads(self, h: int) -> Inputs:
        """The first ``h`` heads of every batch row."""
        return Inputs(
            *(t[:, :h].contiguous() for t in (self.q, self.k, self.v)),
            self.mask,
            self.causal,
            self.dout[:, :h].contiguous(),
        )


def padding_mask(B: int, S: int) -> torch.Tensor:
    """(B, 1, 1, S) boolean, True attends: batch row ``b`` keeps its first ``S - b S / (2B)``
    keys (a single row keeps 3/4 of them)."""
    keep = [S * 3 // 4] if B == 1 else [S - b * S // (2 * B) for b in range(B)]
    return (torch.arange(S)[None, :] < torch.tensor(keep)[:, None])[:, None, None, :]


def make_inputs(shape: Shape, dtype: str, mask: str) -> Inputs:
    gen = torch.Generator().manual_seed(0)
    B, H, L, S, D = shape.B, shape.H, shape.L, shape.S, shape.D
    q, k, v = (
        torch.randn(size, generator=gen).to(DTYPES[dtype])
        for size in ((B, H, L, D), (B, H, S, D), (B, H, S, D))
    )
    dout = torch.randn((B, H, L, D), generator=gen).to(DTYPES[dtype])
    # At L = 1 the bottom-right causal mask attends every key: no mask.
    causal = mask == "causal" and L > 1
    return Inputs(
        q, k, v, padding_mask(B, S) if mask == "padded" else None, causal, dout
    )


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """A tensor as a NumPy array of the same dtype (bfloat16 as ml_dtypes')."""
    t = t.detach()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


def forward_of(library: str) -> Callable[..., torch.Tensor]:
    """``f(q, k, v, mask, causal)``: one forward of ``library`` (torch tensors in and out)."""
    if library == "softmaxkit":

        def numpy_attention(q, k, v, mask, causal):
            out = softmaxkit.attention(
                to_numpy(q),
                to_numpy(k),
                to_numpy(v),
                mask=None if mask is None else mask.numpy(),
                causal="top_left" if causal else None,
            )
            return torch.from_numpy(out.astype(np.float32))

        return numpy_attention
    if library == "softmaxkit.torch":
        return lambda q, k, v, mask, causal: smt.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=causal
        )
    backend = TORCH_BACKENDS[library]

    def torch_attention(q, k, v, mask, causal):
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, is_causal=causal
            )

    return torch_attention


def has_call(library: str, direction: str) -> bool:
    """Whether ``library`` has ``direction``: the NumPy function has no backward."""
    return direction == "forward" or library != "softmaxkit"


def make_call(case: Case, library: str, x: Inputs) -> Callable[[], object] | None:
    """The call to time, or None where ``library`` has no such call."""
    if not has_call(library, case.direction):
        return None
    forward = forward_of(library)
    if case.direction == "forward":

        def call():
            with torch.no_grad():
                return forward(x.q, x.k, x.v, x.mask, x.causal)

        return call
    q, k, v = (t.detach().requires_grad_() for t in (x.q, x.k, x.v))

    def forward_backward():
        q.grad = k.grad = v.grad = None
        forward(q, k, v, x.mask, x.causal).backward(x.dout)

    return forward_backward


# --- timing -------------------------------------------------------------------------------


def measure(case: Case, rounds: int, budget: float) -> dict:
    """Median seconds of every library on ``case``; ``<library>_heads`` the heads timed and
    ``<library>_calls`` the timed calls (1: the first call, which alone took over ``budget``)."""
    x = make_inputs(case.shape, case.dtype, case.mask)
    H = case.shape.H
    calls, heads, seconds = {}, {}, {}
    for library in LIBRARIES:
        if not has_call(library, case.direction):
            continue
        per_head = timed(make_call(case, library, x.heads(1)))
        if per_head > budget:
            heads[library], seconds[library] = 1, per_head
            continue
        if per_head * H > budget:
            per_head = timed(
                make_call(case, library, x.heads(1))
            )  # the first call warmed it up
        h = H if per_head * H <= budget else max(1, min(H, int(budget / per_head)))
        heads[library] = h
        calls[library] = make_call(case, library, x if h == H else x.heads(h))
    seconds.update(
        medians(
            interleaved(
                {lib: lambda fn=fn: timed(fn) for lib, fn in calls.items()}, rounds
            )
        )
    )
    row = {"case": case.name, "shape": str(case.shape)}
    for library, h in heads.items():
        row[f"{library}_s"] = seconds[library] * H / h
        row[f"{library}_heads"] = h
        row[f"{library}_calls"] = rounds if library in calls else 1
    fastest = min(row[f"{lib}_s"] for lib in TORCH_BACKENDS)
    for library in ("softmaxkit", "softmaxkit.torch"):
        if f"{library}_s" in row:
            row[f"{library}_ratio"] = row[f"{library}_s"] / fastest
    print(
        case.name, {lib: _time_text(row[f"{lib}_s"]) for lib in heads}, file=sys.stderr
    )
    return row


# --- accuracy -----------------------------------------------------------------------------


def sample(shape: Shape, mask: str, count: int) -> tuple[int, list[int], list[int]]:
    """(batch row, heads, query rows) of the sampled rows: the most masked batch row when padded;
    ``count`` rows spread over one head, or row 0 of ``count`` heads when L = 1."""
    b = shape.B - 1 if mask == "padded" else 0
    if shape.L == 1:
        return b, list(range(min(count, shape.H))), [0]
    return (
        b,
        [0],
        sorted({round(i * (shape.L - 1) / max(count - 1, 1)) for i in range(count)}),
    )


def lse_of(library: str, q, k, v, mask, causal) -> np.ndarray | None:
    """The float32 log-sum-exp of ``library``'s forward, or None (torch's math backend has none)."""
    if library == "softmaxkit":
        _, lse = softmaxkit.attention(
            to_numpy(q),
            to_numpy(k),
            to_numpy(v),
            mask=None if mask is None else mask.numpy(),
            causal="top_left" if causal else None,
            return_lse=True,
        )
        return lse
    if library == "softmaxkit.torch":
        _, lse = smt.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=causal, return_lse=True
        )
        return lse.float().numpy()
    if library == "torch flash":
        bias = (
            None
            if mask is None
            else torch.zeros(mask.shape, dtype=q.dtype).masked_fill(~mask, -math.inf)
        )
        _, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            q, k, v, is_causal=causal, attn_mask=bias
        )
        return lse.float().numpy()
    return None


def accuracy(shape: Shape, dtype: str, mask: str, count: int) -> list[dict]:
    """One row per library: the worst lse ULP and output ``c`` on the sampled rows."""
    x = make_inputs(shape, dtype, mask)
    b, heads, rows = sample(shape, mask, count)
    sl = (slice(b, b + 1), slice(heads[0], heads[-1] + 1))
    q, k, v = (t[sl].contiguous() for t in (x.q, x.k, x.v))
    m = None if x.mask is None else x.mask[b : b + 1]
    # The reference sees the inputs as rounded to the dtype.
    q64, k64, v64 = (t.double().numpy()[0] for t in (q, k, v))
    attend = np.ones(shape.S, dtype=bool) if m is None else m.numpy().reshape(-1)
    scale = 1.0 / math.sqrt(shape.D)
    exact = {}
    for h in range(len(heads)):
        for i in rows:
            keep = attend & (np.arange(shape.S) <= i) if x.causal else attend
            scores = aref.exact_scores(q64[h, i], k64[h], scale)
            _, out, lse, bound = aref.attention_row(scores, keep, v64[h])
            exact[h, i] = (out, lse, bound)
    found = []
    for library in LIBRARIES:
        with torch.no_grad():
            out = forward_of(library)(q, k, v, m, x.causal).float().numpy()[0]
            lse = lse_of(library, q, k, v, m, x.causal)
        picked = [(h, i) for h in range(len(heads)) for i in rows]
        exact_out = [e for key in picked for e in exact[key][0]]
        bound = [e for key in picked for e in exact[key][2]]
        actual = np.stack([out[h, i] for h, i in picked])
        row = {
            "case": f"{shape.name}/{dtype}/{mask}/accuracy",
            "library": library,
            "rows": len(picked),
            "out_c": aref.mixed_error(actual, exact_out, bound, NUMPY_DTYPES[dtype]),
        }
        if lse is not None:
            lse_rows = np.array(
                [np.asarray(lse).reshape(len(heads), -1)[h, i] for h, i in picked],
                dtype=np.float32,
            )
            row["lse_ulp"] = ref.ulp_error(
                lse_rows, [exact[key][1] for key in picked], np.float32
            )
        found.append(row)
    print(
        f"{shape.name}/{dtype}/{mask}/accuracy",
        {r["library"]: (r.get("lse_ulp"), r["out_c"]) for r in found},
        file=sys.stderr,
    )
    return found


# --- memory, in a fresh interpreter -------------------------------------------------------

CHILD = r"""
import sys
from bench_attention import memory_here
memory_here(sys.argv[1], sys.argv[2], int(sys.argv[3]))
"""


def memory_here(library: str, direction: str, length: int) -> None:
    """In a fresh interpreter: print, as JSON, the peak growth of one call (float32, causal,
    B=1, H=MEMORY_HEADS, L=S=length, D=MEMORY_D) over the inputs already made."""
    shape = Shape("memory", 1, MEMORY_HEADS, length, length, MEMORY_D)
    case = Case(shape, "float32", "causal", direction)
    call = make_call(case, library, make_inputs(shape, "float32", "causal"))
    gc.collect()
    base = reset_peak_rss()
    call()
    print(json.dumps({"growth_mib": (peak_rss() - base) / 2**20}))


def measure_memory(library: str, direction: str, length: int) -> dict:
    result = run_fresh(CHILD, library, direction, length, warnings=False)
    row = {
        "case": f"memory/float32/causal/{direction}/L=S={length}",
        "library": library,
        "growth_mib": result["growth_mib"],
        "scores_mib": MEMORY_HEADS * length * length * 4 / 2**20,
        "qkv_mib": 3 * MEMORY_HEADS * length * MEMORY_D * 4 / 2**20,
    }
    print(row["case"], library, f"{row['growth_mib']:.1f} MiB", file=sys.stderr)
    return row


# --- results ------------------------------------------------------------------------------


def _time_text(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    return f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _time_cell(row: dict, library: str, H: int) -> str:
    if f"{library}_s" not in row:
        return "—"
    text = _time_text(row[f"{library}_s"])
    return text if row[f"{library}_heads"] == H else f"≈ {text}"


def _ratio_cell(row: dict, library: str) -> str:
    return f"{row[f'{library}_ratio']:.2f}" if f"{library}_ratio" in row else "—"


def _timing_cells(row: dict, H: int) -> list[str]:
    return [
        row["case"],
        *(_time_cell(row, lib, H) for lib in LIBRARIES),
        _ratio_cell(row, "softmaxkit"),
        _ratio_cell(row, "softmaxkit.torch"),
    ]


def _accuracy_cells(row: dict) -> list[str]:
    lse = f"{row['lse_ulp']:.2f}" if "lse_ulp" in row else "—"
    return [row["case"], row["library"], str(row["rows"]), lse, f"{row['out_c']:.3g}"]


def _memory_cells(row: dict) -> list[str]:
    return [
        row["case"],
        row["library"],
        f"{row['growth_mib']:.1f}",
        f"{row['scores_mib']:.0f}",
        f"{row['qkv_mib']:.1f}",
    ]


CSV_FIELDS = [
    "case",
    "shape",
    "library",
    *(f"{lib}_{what}" for lib in LIBRARIES for what in ("s", "heads", "calls")),
    "softmaxkit_ratio",
    "softmaxkit.torch_ratio",
    "rows",
    "lse_ulp",
    "out_c",
    "growth_mib",
    "scores_mib",
    "qkv_mib",
]


def write(
    timing: list[dict],
    acc: list[dict],
    memory: list[dict],
    shapes,
    args,
    seconds: float,
) -> None:
    heads = {s.name: s.H for s in shapes}
    footer = []
    if acc:
        footer += [
            (
                "Accuracy: worst error on the sampled rows against the mpmath reference of the test suite "
                "(60 digits), the inputs rounded to the dtype; lse in float32 ULP, output in units of "
                "u·Σ_j P_ij|v_j| (u = 2⁻²⁴ float32, 2⁻⁸ bfloat16). softmaxkit's contract: lse ≤ 2 ULP, output ≤ 2. "
                "The rows: "
                + "; ".join(f"{s.name}: {_sample_text(s, args)}" for s in shapes)
                + "."
            ),
            "",
            *markdown_table(
                ["case", "library", "rows", "lse (ULP)", "output (u·Σ P|v|)"],
                map(_accuracy_cells, acc),
                "llrrr",
            ),
            "",
        ]
    if memory:
        footer += [
            (
                f"Memory: peak resident-set growth (MiB) of one call in a fresh interpreter (float32, causal, B=1, "
                f"H={MEMORY_HEADS}, D={MEMORY_D}), beside one L×S float32 array of scores and query + key + value "
                "(L×D each)."
            ),
            "",
            *markdown_table(
                [
                    "case",
                    "library",
                    "growth (MiB)",
                    "L×S scores (MiB)",
                    "q, k, v (MiB)",
                ],
                map(_memory_cells, memory),
                "llrrr",
            ),
            "",
        ]
    footer.append(f"Whole run: {seconds / 60:.1f} min.")
    write_results(
        "attention",
        title="Attention: softmaxkit vs torch's CPU scaled_dot_product_attention"
        + (" — quick run, small shapes" if args.quick else ""),
        machine=(
            f"{describe()}; torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()}), "
            f"{torch.get_num_threads()} torch threads, {softmaxkit.get_num_threads()} softmaxkit threads"
        ),
        notes=[
            "Shapes: " + "; ".join(map(str, shapes)) + ".",
            (
                f"Median of {args.rounds if not args.quick else 1} interleaved rounds after a warm-up (the order "
                "rotates every round). `forward+backward`: the gradients of query, key and value for a fixed output "
                "gradient. `causal`: top-left (L = S); for decode, bottom-right at L = 1, which attends every key, "
                "so no mask is passed. `padded`: a boolean key-padding mask (B, 1, 1, S) hiding the last keys of "
                "some batch rows. `softmaxkit` is the NumPy function (forward only); the ratios are over torch's "
                "faster backend in that row."
            ),
            (
                f"`≈`: a call over {args.budget:g} s (estimated from one head per batch row) is timed on the first h "
                "heads, the most that fit, and scaled by H / h; a call over it even on one head is timed once, its "
                "first call. The CSV gives h (`<library>_heads`) and the timed calls (`<library>_calls`)."
            ),
        ],
        columns=[
            "case",
            *LIBRARIES,
            "softmaxkit / fastest torch",
            "softmaxkit.torch / fastest torch",
        ],
        align="lrrrrrr",
        rows=[_timing_cells(r, heads[r["case"].split("/")[0]]) for r in timing],
        footer=footer,
        csv_fields=CSV_FIELDS,
        csv_rows=timing + acc + memory,
        out=args.out,
    )


def _sample_text(shape: Shape, args) -> str:
    count = QUICK_SAMPLE_ROWS if args.quick else SAMPLE_ROWS[shape.name]
    if shape.L == 1:
        return f"the row of heads 0–{min(count, shape.H) - 1}"
    return f"{count} query rows of head 0 spread over L, the last batch row when padded"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rounds", type=int, default=5, help="timed rounds per case (median reported)"
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=3.0,
        help="seconds per timed call before timing fewer heads",
    )
    parser.add_argument(
        "-k", dest="select", default="", help="only the cases whose name contains this"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small shapes, one round: checks that the script runs",
    )
    add_out_argument(parser)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    shapes = QUICK_SHAPES if args.quick else SHAPES
    rounds = 1 if args.quick else args.rounds
    print(describe(), file=sys.stderr)
    cases = [
        Case(shape, dtype, mask, direction)
        for shape in shapes
        for dtype in DTYPES
        for mask in MASKS
        for direction in DIRECTIONS
        if args.select in Case(shape, dtype, mask, direction).name
    ]
    timing = [measure(case, rounds, args.budget) for case in cases]
    acc = [
        row
        for shape in shapes
        for dtype in DTYPES
        for mask in MASKS
        if args.select in f"{shape.name}/{dtype}/{mask}/accuracy"
        for row in accuracy(
            shape,
            dtype,
            mask,
            QUICK_SAMPLE_ROWS if args.quick else SAMPLE_ROWS[shape.name],
        )
    ]
    sizes = QUICK_MEMORY_SIZES if args.quick else MEMORY_SIZES
    memory = [
        measure_memory(library, direction, length)
        for direction in DIRECTIONS
        for length in sizes[direction]
        for library in LIBRARIES
        if args.select in f"memory/float32/causal/{direction}/L=S={length}"
        and has_call(library, direction)
    ]
    write(timing, acc, memory, shapes, args, time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
