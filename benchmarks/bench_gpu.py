"""softmaxkit's GPU kernels against torch eager, torch compiled, Liger-Kernel and Cut Cross-Entropy (one GPU).

Every variant of a case runs in one process on the same tensors,
interleaved by the harness (one warm-up call each, then rounds in rotating
order); the table gives the median of the rounds.  A measurement is
``number`` calls between two ``torch.cuda.synchronize()``.  The cases:

- ``copy``: the device's copy bandwidth, ``dst.copy_(x)`` on each softmax
  input (1 GiB in bfloat16, 2 GiB in float32), timed in the same rounds as
  the softmax variants; GB/s count the bytes read plus those written;
- ``softmax`` and ``log_softmax`` along the last dim, forward, at
  4096 x 131072 in bfloat16 and float32: GB/s count the logits read and the
  result written, and ``% of copy`` divides by the copy's GB/s;
- ``cross-entropy`` forward + backward at 8192 x 128256 in bfloat16,
  ``reduction="mean"``, class targets; GB/s count the logits read and their
  gradient written, the least a fused loss moves.  Each variant gets its
  own copy of the logits, since Liger-Kernel writes the gradient over its
  input during the forward;
- ``linear cross-entropy`` forward + backward, ``cross_entropy(h @ W.T, y)``
  differentiated in ``h`` and ``W``, at N x V x H = 8192 x 128256 x 4096 in
  bfloat16 (``h ~ N(0, 1)``, ``W ~ N(0, 4 / H)``); torch eager and compiled
  form the N x V logits, the others are fused;
- the peak memory of one forward + backward of each loss variant, after its
  timed rounds: ``torch.cuda.max_memory_allocated`` after
  ``reset_peak_memory_stats``, less the memory allocated before the call
  (the inputs), so the gradients left at the end count; ``/ gradients``
  divides by the gradients' bytes (the logits' for cross-entropy,
  ``(N·H + V·H)·2`` for the linear loss);
- accuracy: the worst error in ULPs of the result's dtype against mpmath
  (``tests/reference``) on the confident rows of ``bench_accuracy.py``
  (margins 5 to 90, one row per margin, the target at the maximum), in
  float32 and bfloat16, for softmax, log_softmax, the summed cross-entropy
  and its gradient, and the summed linear cross-entropy and ``d_hidden``
  with ``W`` the identity (so the logits are the rows themselves).

Peers run with their default options; one that is not installed, or lacks
an operation in the installed version, is reported as such in its rows.  A
variant that raises (out of memory included) is reported with its error and
the others go on; the script exits with 1 when a softmaxkit variant fails.

Running it
----------
It needs torch with CUDA, triton, numpy, mpmath and softmaxkit's own
dependency array-api-compat (ml_dtypes for the bfloat16 accuracy rows);
``liger-kernel`` and ``cut-cross-entropy`` are optional peers.  From the
repository root, with softmaxkit importable from ``src`` (its C extension
is not used on CUDA tensors, so it need not be built)::

    PYTHONPATH=src python benchmarks/bench_gpu.py --out DIR

writes DIR/gpu.md and DIR/gpu.csv (default ``benchmarks/results``) and
prints the time each case ended at; the whole run is meant to take under
6 minutes on one H200, most of it compiling.  On a GPU machine without
network access, bring the missing packages as wheels, all pure Python
(their other needs, torch and triton, come with the machine's torch)::

    python -m pip download --no-deps --only-binary=:all: -d wheels \
        array-api-compat liger-kernel cut-cross-entropy
    # then, on the GPU machine:
    python -m pip install --no-index --no-deps --target /tmp/peers wheels/*.whl
    PYTHONPATH=/tmp/peers:src python benchmarks/bench_gpu.py --out DIR

``--smoke`` runs every case on tiny shapes with two rounds, to check the
script, not to measure: without CUDA it runs on the CPU, with
``TRITON_INTERPRET=1`` and ``SOFTMAXKIT_TRITON_ON_CPU=1`` set before
softmaxkit and triton are imported, so softmaxkit's Triton kernels (and
Liger-Kernel's) run in Triton's interpreter, and torch compiled uses
Dynamo's ``eager`` backend (inductor's code generation would take a minute
on a small CPU); times then come from
``time.perf_counter`` and memory from the resident set
(``_harness.peak_rss``).  Without ``--out`` a smoke run only prints its
table.
"""

from __future__ import annotations

import argparse
import functools
import gc
import importlib
import importlib.metadata
import importlib.util
import os
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from _harness import (
    REPOSITORY,
    RESULTS,
    describe,
    interleaved,
    markdown_table,
    peak_rss,
    reset_peak_rss,
    write_results,
)

sys.path.insert(0, str(REPOSITORY))

from tests import reference as ref

NAME = "gpu"
TITLE = "GPU: softmaxkit's kernels against torch eager, torch compiled, Liger-Kernel and Cut Cross-Entropy"
DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}
OP_TITLES = {
    "softmax": "softmax",
    "log_softmax": "log_softmax",
    "cross_entropy": "cross-entropy fwd+bwd",
    "linear_cross_entropy": "linear cross-entropy fwd+bwd",
}


@dataclass(frozen=True)
class Sizes:
    """Shapes, calls per measurement and rounds of one run."""

    softmax: tuple[int, int]
    cross_entropy: tuple[int, int]
    linear: tuple[int, int, int]  # N, V, H
    softmax_calls: int
    softmax_rounds: int
    loss_calls: int
    loss_rounds: int
    linear_rounds: int
    confident_rows: slice  # of bench_accuracy's confident rows


FULL = Sizes(
    (4096, 131072), (8192, 128256), (8192, 128256, 4096), 20, 15, 5, 10, 7, slice(None)
)
# Triton's interpreter takes about 0.1 s per row and kernel: few rows, and three of the confident ones.
SMOKE = Sizes((2, 512), (2, 1024), (4, 512, 64), 1, 2, 1, 2, 2, slice(None, None, 8))

COLUMNS = [
    "case",
    "dtype",
    "variant",
    "time (ms)",
    "softmaxkit / this",
    "GB/s",
    "% of copy",
    "peak (MiB)",
    "/ gradients",
]
ACCURACY_COLUMNS = [
    "dtype",
    "library",
    "softmax",
    "log_softmax",
    "CE loss",
    "CE gradient",
    "linear CE loss",
    "linear CE d_hidden",
]
METRICS = ["softmax", "log_softmax", "ce_loss", "ce_grad", "linear_loss", "linear_dh"]
CSV_FIELDS = [
    "section",
    "case",
    "dtype",
    "variant",
    "status",
    "time_s",
    "times",
    "calls",
    "rounds",
    "softmaxkit_over_this",
    "gbs",
    "copy_gbs",
    "of_copy",
    "peak_mib",
    "gradients_mib",
    "peak_over_gradients",
    *(f"{m}_ulp" for m in METRICS),
]


# --- the device -------------------------------------------------------------------------------


class Device:
    """The device measured: a CUDA GPU, or the CPU of a smoke run.

    Times are taken between two synchronisations; memory is the allocator's
    peak on CUDA and the resident set's on the CPU.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.cuda = kind == "cuda"

    def synchronize(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def timed(self, fn: Callable[[], object], number: int) -> float:
        """Seconds per call of ``fn``, ``number`` calls between two synchronisations."""
        self.synchronize()
        start = time.perf_counter()
        for _ in range(number):
            fn()
        self.synchronize()
        return (time.perf_counter() - start) / number

    def free(self) -> None:
        """Release what the last case left: Python's garbage, then the allocator's cache."""
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()

    def peak_growth(self, fn: Callable[[], object]) -> int:
        """Bytes at the peak of one call of ``fn`` beyond those allocated before it."""
        self.free()
        self.synchronize()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        else:
            base = reset_peak_rss()
        fn()
        self.synchronize()
        return (torch.cuda.max_memory_allocated() if self.cuda else peak_rss()) - base

    def describe(self) -> str:
        if not self.cuda:
            return f"CPU ({describe()}), Triton's interpreter"
        props = torch.cuda.get_device_properties(0)
        return (
            f"{props.name}, {props.total_memory / 2**30:.0f} GiB, {props.multi_processor_count} SMs, "
            f"CUDA {torch.version.cuda}; host {describe()}"
        )


def configure(smoke: bool) -> Device:
    """The device to measure; for a smoke run without CUDA, the interpreter switches set
    before softmaxkit and triton are imported."""
    if torch.cuda.is_available():
        return Device("cuda")
    if not smoke:
        raise SystemExit(
            "no CUDA device: the benchmark needs one (--smoke runs on the CPU)"
        )
    os.environ["TRITON_INTERPRET"] = "1"
    os.environ["SOFTMAXKIT_TRITON_ON_CPU"] = "1"
    return Device("cpu")


def failure(exc: BaseException) -> str:
    """A variant's error in a table cell: ``out of memory``, or ``failed: Type: first line``."""
    if isinstance(exc, torch.OutOfMemoryError):
        return "out of memory"
    lines = str(exc).strip().replace("|", "/").splitlines()
    return f"failed: {type(exc).__name__}" + (f": {lines[0][:80]}" if lines else "")


def attempt(fn: Callable[[], object]) -> tuple[object, str | None]:
    """``(fn(), None)``, or ``(None, failure(exc))`` with the traceback printed to stderr."""
    try:
        return fn(), None
    except Exception as exc:  # noqa: BLE001 - any error of a variant goes into its row, and the run goes on
        traceback.print_exc()
        return None, failure(exc)


# --- the libraries ----------------------------------------------------------------------------


@dataclass
class Library:
    """One library's functions on tensors, by operation, or why it has none.

    ``ops`` maps an operation to a function: ``softmax(x)``,
    ``log_softmax(x)``, ``cross_entropy(x, t, reduction)``,
    ``linear_cross_entropy(h, w, t, reduction)``; ``missing`` maps an
    operation the library is expected to have to the reason it is absent
    (``not installed``, ``not in <version>``).
    """

    name: str
    version: str
    ops: dict[str, Callable]
    missing: dict[str, str]


def _naive_linear(h, w, t, reduction):
    return F.cross_entropy(h @ w.T, t, reduction=reduction)


def _softmaxkit() -> Library:
    import softmaxkit.torch as smt

    ops = {
        "softmax": lambda x: smt.softmax(x, -1),
        "log_softmax": lambda x: smt.log_softmax(x, -1),
        "cross_entropy": lambda x, t, reduction: smt.cross_entropy(
            x, t, reduction=reduction
        ),
        "linear_cross_entropy": lambda h, w, t, reduction: smt.linear_cross_entropy(
            h, w, t, reduction=reduction
        ),
    }
    return Library("softmaxkit", softmaxkit_version(), ops, {})


def _torch_eager() -> Library:
    ops = {
        "softmax": lambda x: torch.softmax(x, -1),
        "log_softmax": lambda x: torch.log_softmax(x, -1),
        "cross_entropy": lambda x, t, reduction: F.cross_entropy(
            x, t, reduction=reduction
        ),
        "linear_cross_entropy": _naive_linear,
    }
    return Library("torch eager", torch.__version__, ops, {})


def _torch_compiled(backend: str) -> Library:
    # One compiled function per operation; each shape and dtype compiles once (the warm-up).
    ops = {
        name: torch.compile(fn, dynamic=False, backend=backend)
        for name, fn in _torch_eager().ops.items()
    }
    return Library("torch compiled", f"{torch.__version__}, {backend}", ops, {})


def _torch_chunked() -> Library:
    if not hasattr(F, "linear_cross_entropy"):
        return Library(
            "torch chunked",
            torch.__version__,
            {},
            {"linear_cross_entropy": f"not in torch {torch.__version__}"},
        )

    def loss(h, w, t, reduction):
        return F.linear_cross_entropy(
            h, w, t, reduction=reduction, options=torch.nn.LinearCrossEntropyOptions()
        )

    return Library(
        "torch chunked", torch.__version__, {"linear_cross_entropy": loss}, {}
    )


def peer_module(name: str) -> tuple[object, str]:
    """``(module, "")``, or ``(None, reason)``: ``not installed`` when the package is
    absent, the error otherwise (a peer built for another torch or triton, say)."""
    try:
        return importlib.import_module(name), ""
    except ModuleNotFoundError as exc:
        if exc.name == name.split(".")[0]:
            return None, "not installed"
        traceback.print_exc()
        return None, f"import {failure(exc)}"
    except Exception as exc:  # noqa: BLE001 - a peer that cannot be imported is reported, and the run goes on
        traceback.print_exc()
        return None, f"import {failure(exc)}"


def _liger() -> Library:
    expected = ["softmax", "cross_entropy", "linear_cross_entropy"]
    functional, reason = peer_module("liger_kernel.transformers.functional")
    if functional is None:
        return Library("Liger-Kernel", "", {}, dict.fromkeys(expected, reason))
    version = importlib.metadata.version("liger-kernel")

    def first(result):
        # Some versions return the loss alone, others a tuple led by it.
        return result[0] if isinstance(result, tuple) else result

    ops = {
        "cross_entropy": lambda x, t, reduction: first(
            functional.liger_cross_entropy(x, t, reduction=reduction)
        ),
        "linear_cross_entropy": lambda h, w, t, reduction: first(
            functional.liger_fused_linear_cross_entropy(h, w, t, reduction=reduction)
        ),
    }
    missing = {}
    if hasattr(functional, "liger_softmax"):
        ops["softmax"] = lambda x: functional.liger_softmax(x)
    else:
        missing["softmax"] = f"not in liger-kernel {version}"
    return Library("Liger-Kernel", version, ops, missing)


def _cce() -> Library:
    cce, reason = peer_module("cut_cross_entropy")
    if cce is None:
        return Library("Cut Cross-Entropy", "", {}, {"linear_cross_entropy": reason})

    def loss(h, w, t, reduction):
        return cce.linear_cross_entropy(h, w, t, reduction=reduction)

    return Library(
        "Cut Cross-Entropy",
        importlib.metadata.version("cut-cross-entropy"),
        {"linear_cross_entropy": loss},
        {},
    )


def load_libraries(smoke: bool) -> list[Library]:
    """softmaxkit and the peers.  A smoke run compiles with Dynamo's ``eager`` backend:
    the same tracing without inductor's code generation, which takes a minute on a small CPU."""
    compiled = _torch_compiled("eager" if smoke else "inductor")
    return [_softmaxkit(), _torch_eager(), compiled, _torch_chunked(), _liger(), _cce()]


def softmaxkit_version() -> str:
    """The softmaxkit measured: its commit in this checkout (``+dirty`` with changes in ``src``),
    ``unknown`` where git cannot say (a copy of the files without git)."""
    from bench_linear_ce import source_version

    try:
        return source_version()
    except OSError:
        return "unknown"


def softmaxkit_path(device: Device) -> str:
    """Whether softmaxkit.torch sends this device's tensors to its Triton kernels."""
    from softmaxkit.backends.torch.execution import triton_ready

    where = "Triton's interpreter" if device.kind == "cpu" else "the GPU"
    with torch.no_grad():  # as inside softmaxkit's autograd Functions
        ready = triton_ready(torch.empty(1, device=device.kind))
    if ready:
        return f"softmaxkit.torch sends these tensors to its Triton kernels ({where})"
    return "softmaxkit.torch does not send these tensors to its Triton kernels (is triton installed?)"


# --- measuring --------------------------------------------------------------------------------


def measure(
    device: Device,
    calls: dict[str, Callable[[], object]],
    number: int,
    rounds: int,
    before_round=None,
):
    """Each call's times (seconds, the harness's interleaved rounds) and the failures.

    A call that raises is reported in ``errors`` and left out of the later rounds.
    """
    errors: dict[str, str] = {}

    def guarded(name: str, fn: Callable[[], object]) -> Callable[[], float | None]:
        def one() -> float | None:
            if name in errors:
                return None
            seconds, error = attempt(lambda: device.timed(fn, number))
            if error:
                errors[name] = error
                device.free()
            return seconds

        return one

    times = interleaved(
        {name: guarded(name, fn) for name, fn in calls.items()}, rounds, before_round
    )
    return {
        n: [t for t in ts if t is not None]
        for n, ts in times.items()
        if n not in errors
    }, errors


def variant_rows(
    case: str, dtype: str, op: str, libraries: list[Library]
) -> list[dict]:
    """One row per library that has ``op`` or is expected to, its reason kept when absent."""
    rows = []
    for lib in libraries:
        if op in lib.ops or op in lib.missing:
            rows.append(
                {
                    "section": "speed",
                    "case": case,
                    "dtype": dtype,
                    "variant": lib.name,
                    "status": lib.missing.get(op, ""),
                }
            )
    return rows


def fill_times(
    rows: list[dict],
    times: dict[str, list[float]],
    errors: dict[str, str],
    number: int,
    moved: int | None,
):
    """Median time, ratio to softmaxkit and GB/s into ``rows``; failures as their status."""
    for row in rows:
        name = row["variant"]
        if name in errors:
            row["status"] = errors[name]
        if name not in times:
            continue
        row.update(
            time_s=statistics.median(times[name]),
            times=" ".join(f"{t:.6f}" for t in times[name]),
        )
        row.update(calls=number, rounds=len(times[name]))
        if moved:
            row["gbs"] = moved / row["time_s"] / 1e9
    ours = next(
        (r for r in rows if r["variant"] == "softmaxkit" and "time_s" in r), None
    )
    for row in rows:
        if ours is not None and "time_s" in row:
            row["softmaxkit_over_this"] = ours["time_s"] / row["time_s"]


def normalisations(
    device: Device,
    case: str,
    dtype: str,
    op: str,
    libraries: list[Library],
    sizes: Sizes,
) -> list[dict]:
    """softmax or log_softmax forward, every library, with the copy bandwidth timed in the same rounds."""
    n, v = sizes.softmax
    x = (torch.randn(n, v, device=device.kind) * 3).to(DTYPES[dtype])
    rows = variant_rows(case, dtype, op, libraries)
    calls = {
        lib.name: (lambda fn=lib.ops[op]: fn(x)) for lib in libraries if op in lib.ops
    }
    dst = torch.empty_like(x).copy_(x)
    copy_times: list[float] = []
    yardstick = lambda: copy_times.append(
        device.timed(lambda: dst.copy_(x), sizes.softmax_calls)
    )
    times, errors = measure(
        device, calls, sizes.softmax_calls, sizes.softmax_rounds, yardstick
    )
    moved = 2 * x.numel() * x.element_size()
    fill_times(rows, times, errors, sizes.softmax_calls, moved)
    copy_gbs = moved / statistics.median(copy_times) / 1e9
    for row in rows:
        row["copy_gbs"] = copy_gbs
        if "gbs" in row:
            row["of_copy"] = row["gbs"] / copy_gbs
    copy = {
        "section": "speed",
        "case": case,
        "dtype": dtype,
        "variant": "copy_ (yardstick)",
        "time_s": statistics.median(copy_times),
    }
    copy.update(
        times=" ".join(f"{t:.6f}" for t in copy_times),
        calls=sizes.softmax_calls,
        rounds=len(copy_times),
    )
    copy.update(gbs=copy_gbs, copy_gbs=copy_gbs, of_copy=1.0)
    return [copy, *rows]


def losses(
    device: Device, libraries: list[Library], sizes: Sizes, op: str
) -> list[dict]:
    """Cross-entropy or linear cross-entropy forward + backward in bfloat16: time, then each variant's peak memory."""
    gen = torch.Generator(device=device.kind).manual_seed(0)
    dtype = torch.bfloat16
    if op == "cross_entropy":
        n, v = sizes.cross_entropy
        x = (torch.randn(n, v, device=device.kind, generator=gen) * 3).to(dtype)
        t = torch.randint(0, v, (n,), device=device.kind, generator=gen)
        # Liger-Kernel writes the gradient over its logits: each variant gets its own.
        leaves = {
            lib.name: [x.clone().requires_grad_()] for lib in libraries if op in lib.ops
        }
        del x
        args = {name: (*tensors, t) for name, tensors in leaves.items()}
        gradient_bytes = n * v * dtype.itemsize
        case, moved, number, rounds = (
            f"{n}x{v}",
            2 * gradient_bytes,
            sizes.loss_calls,
            sizes.loss_rounds,
        )
    else:
        n, v, width = sizes.linear
        h = (
            torch.randn(n, width, device=device.kind, generator=gen)
            .to(dtype)
            .requires_grad_()
        )
        w = (
            (
                torch.randn(v, width, device=device.kind, generator=gen)
                * (2 / width**0.5)
            )
            .to(dtype)
            .requires_grad_()
        )
        t = torch.randint(0, v, (n,), device=device.kind, generator=gen)
        leaves = {lib.name: [h, w] for lib in libraries if op in lib.ops}
        args = {name: (h, w, t) for name in leaves}
        gradient_bytes = (n * width + v * width) * dtype.itemsize
        case, moved, number, rounds = (
            f"N={n} V={v} H={width}",
            None,
            1,
            sizes.linear_rounds,
        )

    def step(name: str, fn: Callable) -> Callable[[], None]:
        def call() -> None:
            for leaf in leaves[name]:
                leaf.grad = None
            fn(*args[name], "mean").backward()

        return call

    calls = {
        lib.name: step(lib.name, lib.ops[op]) for lib in libraries if op in lib.ops
    }
    rows = variant_rows(f"{OP_TITLES[op]} {case}", "bfloat16", op, libraries)
    times, errors = measure(device, calls, number, rounds)
    fill_times(rows, times, errors, number, moved)
    for row in rows:
        name = row["variant"]
        if name not in times:
            continue
        for leaf in (leaf for tensors in leaves.values() for leaf in tensors):
            leaf.grad = None
        growth, error = attempt(functools.partial(device.peak_growth, calls[name]))
        if error:
            row["status"] = f"memory: {error}"
            continue
        row.update(
            peak_mib=growth / 2**20,
            gradients_mib=gradient_bytes / 2**20,
            peak_over_gradients=growth / gradient_bytes,
        )
    return rows


# --- accuracy ---------------------------------------------------------------------------------


def exact(x: np.ndarray, t: np.ndarray) -> dict[str, list]:
    """softmax, log_softmax, the summed loss and its gradient of float64 rows, in mpmath (``tests/reference``)."""
    rows = [ref.to_mp(r) for r in x]
    grads, loss_terms = [], []
    for r, ti in zip(rows, t):
        loss, grad = ref.cross_entropy(r, ref.hard_coef(len(r), int(ti))[0])
        loss_terms.append(loss)
        grads.extend(grad)
    return {
        "softmax": [v for r in rows for v in ref.softmax(r)],
        "log_softmax": [v for r in rows for v in ref.log_softmax(r)],
        "loss": [ref.mp.fsum(loss_terms)],
        "grad": grads,
    }


def ulps(result: torch.Tensor, values: list) -> float:
    """Worst error of ``result`` in ULPs of its own dtype against exact values."""
    dtype = (
        ref.BFLOAT16
        if result.dtype == torch.bfloat16
        else np.dtype(str(result.dtype).removeprefix("torch."))
    )
    return ref.ulp_error(result.detach().float().cpu().numpy(), values, dtype)


def library_errors(
    device: Device,
    lib: Library,
    x32: np.ndarray,
    t: np.ndarray,
    dtype: torch.dtype,
    values: dict,
) -> dict:
    """Each metric of one library on the rows: worst ULP, or the failure's text."""

    def rows():
        return torch.tensor(x32, device=device.kind).to(dtype)

    target = torch.tensor(t, device=device.kind)

    def gradient(op):
        def run():
            x = rows().requires_grad_()
            loss = lib.ops[op](x, target, "sum")
            loss.backward()
            return loss, x.grad

        return run

    def linear():
        h = rows().requires_grad_()
        w = torch.eye(x32.shape[1], device=device.kind, dtype=dtype).requires_grad_()
        loss = lib.ops["linear_cross_entropy"](h, w, target, "sum")
        loss.backward()
        return loss, h.grad

    out: dict[str, object] = {}
    for op, metrics, run in [
        ("softmax", ["softmax"], lambda: (lib.ops["softmax"](rows()),)),
        ("log_softmax", ["log_softmax"], lambda: (lib.ops["log_softmax"](rows()),)),
        ("cross_entropy", ["ce_loss", "ce_grad"], gradient("cross_entropy")),
        ("linear_cross_entropy", ["linear_loss", "linear_dh"], linear),
    ]:
        if op not in lib.ops:
            continue
        results, error = attempt(run)
        if error:
            out.update(dict.fromkeys(metrics, error))
            continue
        keys = {"softmax": ["softmax"], "log_softmax": ["log_softmax"]}.get(
            op, ["loss", "grad"]
        )
        for metric, result, key in zip(metrics, results, keys):
            out[metric] = ulps(result.reshape(-1), values[key])
    return out


def accuracy(device: Device, libraries: list[Library], sizes: Sizes) -> list[dict]:
    """The worst ULP of every library on the confident rows, float32 and bfloat16."""
    from bench_accuracy import confident_rows

    _, x, t = confident_rows()
    x, t = x[sizes.confident_rows], t[sizes.confident_rows]
    rows = []
    for dtype in ("float32", "bfloat16"):
        if dtype == "bfloat16" and ref.BFLOAT16 is None:
            print(
                "accuracy in bfloat16 skipped: ml_dtypes is not installed",
                file=sys.stderr,
            )
            continue
        # The rows as the dtype holds them, and the exact values of those.
        held = torch.tensor(x).to(DTYPES[dtype]).float().numpy()
        values = exact(held.astype(np.float64), t)
        for lib in libraries:
            if not lib.ops:
                continue
            errors = library_errors(device, lib, held, t, DTYPES[dtype], values)
            rows.append(
                {
                    "section": "accuracy",
                    "case": "confident rows",
                    "dtype": dtype,
                    "variant": lib.name,
                    **{f"{m}_ulp": errors.get(m) for m in METRICS},
                }
            )
            print(
                dtype,
                lib.name,
                {m: errors.get(m) for m in METRICS},
                file=sys.stderr,
                flush=True,
            )
    return rows


# --- the tables -------------------------------------------------------------------------------


def _ms(row: dict) -> str:
    return (
        f"{row['time_s'] * 1e3:.3f}" if "time_s" in row else (row.get("status") or "—")
    )


def _number(value: object, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def _ulp(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    return (
        "inf"
        if value == float("inf")
        else f"{value:.3g}"
        if value >= 1000
        else f"{value:.2f}"
    )


def speed_cells(row: dict) -> list[str]:
    status = row.get("status")
    percent = row.get("of_copy")
    return [
        row["case"],
        row["dtype"],
        row["variant"] + (f" ({status})" if status and "time_s" in row else ""),
        _ms(row),
        _number(row.get("softmaxkit_over_this"), ".2f"),
        _number(row.get("gbs"), ".0f" if row.get("gbs", 0) >= 100 else ".3g"),
        "—" if percent is None else f"{100 * percent:.0f} %",
        _number(row.get("peak_mib"), ".0f"),
        _number(row.get("peak_over_gradients"), ".2f"),
    ]


def write(
    rows: list[dict],
    device: Device,
    libraries: list[Library],
    smoke: bool,
    seconds: float,
    out: Path,
) -> None:
    speed = [r for r in rows if r["section"] == "speed"]
    accurate = [r for r in rows if r["section"] == "accuracy"]
    versions = ", ".join(
        f"{lib.name} {lib.version}"
        if lib.version
        else f"{lib.name}: {next(iter(lib.missing.values()))}"
        for lib in libraries
    )
    triton = (
        importlib.metadata.version("triton")
        if importlib.util.find_spec("triton")
        else "not installed"
    )
    notes = [
        *(
            [
                "**Smoke run: tiny shapes, two rounds and three of the confident rows, to check the script; not measurements.**"
            ]
            if smoke
            else []
        ),
        f"Versions: {versions}; triton {triton}. {softmaxkit_path(device)}.",
        (
            "Time: milliseconds per call, the median of the rounds interleaved in one process after one warm-up "
            "call of each variant (compilation included there). `softmaxkit / this` below 1: softmaxkit is faster. "
            "GB/s: softmax rows count the logits read and the result written, cross-entropy rows the logits read "
            "and their gradient written; `% of copy` divides by the `copy_` yardstick timed in the same rounds."
        ),
        (
            "Peak: the allocator's peak during one forward + backward beyond the memory allocated before it, "
            "gradients included; `/ gradients` divides by the gradients' bytes. torch eager and compiled form "
            "the N x V logits for the linear loss. Liger-Kernel's cross-entropy writes the logits' gradient over "
            "its input, so its growth leaves that gradient out (each variant has its own copy of the logits)."
        ),
        f"The run took {seconds:.0f} s.",
    ]
    accuracy_table = markdown_table(
        ACCURACY_COLUMNS,
        (
            [r["dtype"], r["variant"], *(_ulp(r[f"{m}_ulp"]) for m in METRICS)]
            for r in accurate
        ),
    )
    footer = [
        "## Accuracy on confident rows",
        "",
        (
            "Worst error in ULPs of the result's dtype against mpmath (60 digits) on the confident rows of "
            "bench_accuracy.py (margins 5 to 90, target at the maximum), the rows rounded to the dtype first; "
            "losses summed; the linear loss with W the identity. — where the library has no such function."
        ),
        "",
        *accuracy_table,
    ]
    write_results(
        NAME,
        title=TITLE,
        machine=device.describe(),
        notes=notes,
        columns=COLUMNS,
        align="lllrrrrrr",
        rows=map(speed_cells, speed),
        csv_fields=CSV_FIELDS,
        csv_rows=rows,
        footer=footer,
        out=out,
    )


def softmaxkit_failures(rows: list[dict]) -> list[str]:
    """``case dtype: error`` for each softmaxkit row with a failure (a status, or an accuracy metric's text)."""
    failed = []
    for row in (r for r in rows if r["variant"] == "softmaxkit"):
        errors = [row["status"]] if row.get("status") else []
        errors += [
            row[f"{m}_ulp"] for m in METRICS if isinstance(row.get(f"{m}_ulp"), str)
        ]
        failed += [f"{row['case']} {row['dtype']}: {error}" for error in errors]
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny shapes, two rounds; on the CPU through Triton's interpreter without CUDA",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"folder for gpu.md and gpu.csv (default {RESULTS}; none for --smoke)",
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    device = configure(args.smoke)
    sizes = SMOKE if args.smoke else FULL
    libraries = load_libraries(args.smoke)
    print(device.describe(), file=sys.stderr, flush=True)
    rows: list[dict] = []
    for op in ("softmax", "log_softmax"):
        for dtype in DTYPES:
            rows += normalisations(
                device,
                f"{op} {sizes.softmax[0]}x{sizes.softmax[1]}",
                dtype,
                op,
                libraries,
                sizes,
            )
            device.free()
            print(
                f"{op} {dtype} done at {time.perf_counter() - started:.0f} s",
                file=sys.stderr,
                flush=True,
            )
    for op in ("cross_entropy", "linear_cross_entropy"):
        rows += losses(device, libraries, sizes, op)
        device.free()
        print(
            f"{op} done at {time.perf_counter() - started:.0f} s",
            file=sys.stderr,
            flush=True,
        )
    rows += accuracy(device, libraries, sizes)
    seconds = time.perf_counter() - started
    if args.out is None and args.smoke:
        with tempfile.TemporaryDirectory() as folder:
            write(rows, device, libraries, args.smoke, seconds, Path(folder))
    else:
        write(rows, device, libraries, args.smoke, seconds, args.out or RESULTS)
    failed = softmaxkit_failures(rows)
    for line in failed:
        print(f"softmaxkit failed: {line}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
