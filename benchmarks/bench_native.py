"""Native CPU kernels against torch, jax and scipy, in one process, interleaved.

For each shape and operation every library is timed in turn, round after
round, after a warm-up; the table reports the median.  The order rotates
each round, because a large call runs slower right after another library's,
so no library may always follow the same one.  Pauses between calls make
every allocating call slower, so there are none.  Throughput is counted as
bytes read plus bytes written (logits in, result out; for cross-entropy,
logits in and gradient out) and compared with the machine's copy bandwidth,
measured here with ``np.copyto`` on an array of the same size.

Threads: softmaxkit and torch get the same count (``--threads``, default
softmaxkit's).  XLA on CPU has no exact thread-count setting; with one thread
it runs with ``--xla_cpu_multi_thread_eigen=false
intra_op_parallelism_threads=1``, otherwise with
``intra_op_parallelism_threads=N``.  scipy.special is single-threaded.

Usage::

    python benchmarks/bench_native.py [--threads N] [--repeats R] [--quick] [--out DIR]

writes benchmarks/results/native.md and native.csv.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.special
import torch
import torch.nn.functional as F
from _harness import (
    CopyBandwidth,
    add_out_argument,
    describe,
    interleaved,
    kernels_into,
    medians,
    timed,
    write_results,
)

import softmaxkit as smk
from softmaxkit import kernels

SHAPES = [(2048, 32768), (16384, 1024), (32, 262144), (8, 10)]
OPS = ["softmax", "log_softmax", "cross_entropy+grad"]
SMALL_CALLS = 2000
COLUMNS = ["op", "shape", "library", "time", "GB/s", "of copy", "softmaxkit speedup"]
CSV_FIELDS = ["op", "shape", "library", "seconds", "gbs", "copy_gbs", "alloc_copy_gbs", "of_copy", "speedup_vs_peer"]
INTO = kernels_into()

NOTES = [
    (
        "GB/s counts bytes read + written (logits in, result or gradient out); `of copy` compares with "
        "np.copyto on the same array, timed in the same rounds."
    ),
    (
        "`softmaxkit speedup` is the peer's time divided by softmaxkit's (> 1: softmaxkit faster), like with like: "
        "a peer's allocating call against softmaxkit's public function, a peer writing into a preallocated "
        "output (`out=`) against softmaxkit's kernel doing the same (the kernels' `*_into` functions, the path "
        "front ends use)."
    ),
    (
        "softmaxkit's public functions keep the memory of freed large results for reuse (`set_output_cache`); "
        "`softmaxkit (fresh output)` is the same kernel writing into a new `np.empty_like` array each call, whose "
        "pages the OS must fault in and zero, as every peer's allocating call does."
    ),
]


@dataclass(frozen=True)
class Case:
    """One row of the table: ``op`` in ``library``; ``setup`` takes a shape's inputs and returns the call to time."""

    op: str
    library: str
    setup: Callable[[Inputs], Callable[[], object]]


@dataclass
class Inputs:
    """One shape's logits and targets, as NumPy, torch and jax arrays, and the outputs to write into."""

    x: np.ndarray
    t: np.ndarray
    out: np.ndarray
    loss_rows: np.ndarray
    tx: torch.Tensor
    tt: torch.Tensor
    tout: torch.Tensor
    jx: object
    jt: object


def make_inputs(shape: tuple[int, int], rng: np.random.Generator) -> Inputs:
    import jax.numpy as jnp

    x = rng.standard_normal(shape, dtype=np.float32) * 3
    t = rng.integers(0, shape[1], shape[0])
    tx = torch.from_numpy(x)
    return Inputs(
        x=x,
        t=t,
        out=np.empty_like(x),
        loss_rows=np.empty(shape[0]),
        tx=tx,
        tt=torch.from_numpy(t),
        tout=torch.empty_like(tx),
        jx=jnp.asarray(x),
        jt=jnp.asarray(t.astype(np.int32)),
    )


@functools.cache
def _jax():
    """jax's compiled functions, built on first use: jax must be imported after XLA_FLAGS is set."""
    import jax
    import jax.numpy as jnp

    @jax.jit
    def ce_grad(x, t):
        def loss(x):
            lp = jax.nn.log_softmax(x, axis=-1)
            return -jnp.mean(jnp.take_along_axis(lp, t[:, None], axis=-1))

        return jax.value_and_grad(loss)(x)

    return {
        "softmax": jax.jit(lambda x: jax.nn.softmax(x, axis=-1)),
        "log_softmax": jax.jit(lambda x: jax.nn.log_softmax(x, axis=-1)),
        "cross_entropy+grad": lambda x, t: jax.block_until_ready(ce_grad(x, t)),
    }


def _torch_ce(d: Inputs):
    def call():
        xg = d.tx.detach().requires_grad_(True)
        F.cross_entropy(xg, d.tt).backward()
        return xg.grad

    return call


def _ce_into(d: Inputs, grad: np.ndarray) -> None:
    INTO.cross_entropy_into(d.x, d.t, d.loss_rows, grad, grad_divisor=d.x.shape[0])


CASES = [
    Case("softmax", "softmaxkit", lambda d: lambda: smk.softmax(d.x)),
    Case("softmax", "softmaxkit (fresh output)", lambda d: lambda: INTO.softmax_into(d.x, np.empty_like(d.x))),
    Case("softmax", "softmaxkit (out=)", lambda d: lambda: INTO.softmax_into(d.x, d.out)),
    Case("softmax", "torch", lambda d: lambda: torch.softmax(d.tx, -1)),
    Case("softmax", "torch (out=)", lambda d: lambda: torch.softmax(d.tx, -1, out=d.tout)),
    Case("softmax", "jax", lambda d: lambda: _jax()["softmax"](d.jx).block_until_ready()),
    Case("softmax", "scipy", lambda d: lambda: scipy.special.softmax(d.x, axis=-1)),
    Case("log_softmax", "softmaxkit", lambda d: lambda: smk.log_softmax(d.x)),
    Case("log_softmax", "softmaxkit (fresh output)", lambda d: lambda: INTO.log_softmax_into(d.x, np.empty_like(d.x))),
    Case("log_softmax", "softmaxkit (out=)", lambda d: lambda: INTO.log_softmax_into(d.x, d.out)),
    Case("log_softmax", "torch", lambda d: lambda: torch.log_softmax(d.tx, -1)),
    Case("log_softmax", "torch (out=)", lambda d: lambda: torch.log_softmax(d.tx, -1, out=d.tout)),
    Case("log_softmax", "jax", lambda d: lambda: _jax()["log_softmax"](d.jx).block_until_ready()),
    Case("log_softmax", "scipy", lambda d: lambda: scipy.special.log_softmax(d.x, axis=-1)),
    Case("cross_entropy+grad", "softmaxkit", lambda d: lambda: smk.cross_entropy(d.x, d.t, return_grad=True)),
    Case("cross_entropy+grad", "softmaxkit (fresh output)", lambda d: lambda: _ce_into(d, np.empty_like(d.x))),
    Case("cross_entropy+grad", "softmaxkit (out=)", lambda d: lambda: _ce_into(d, d.out)),
    Case("cross_entropy+grad", "torch", _torch_ce),
    Case("cross_entropy+grad", "jax", lambda d: lambda: _jax()["cross_entropy+grad"](d.jx, d.jt)),
]


def measure_shape(shape: tuple[int, int], rng: np.random.Generator, repeats: int) -> list[dict]:
    """One row per case on ``shape``, with its median time and the copy bandwidth of the same rounds."""
    d = make_inputs(shape, rng)
    number = SMALL_CALLS if d.x.size < 10**5 else 1
    copy = CopyBandwidth(d.x, number)
    rows = []
    for op in OPS:
        measurements = {c.library: functools.partial(timed, c.setup(d), number) for c in CASES if c.op == op}
        seconds = medians(interleaved(measurements, repeats, before_round=copy))
        rows += [
            {"op": op, "shape": f"{shape[0]}x{shape[1]}", "library": lib, "seconds": s} for lib, s in seconds.items()
        ]
        print(op, shape, {k: f"{v * 1e3:.3f} ms" for k, v in seconds.items()}, file=sys.stderr)
    copy_gbs, alloc_copy_gbs = copy.gbs()
    for r in rows:
        r.update(bytes=2 * d.x.nbytes, copy_gbs=copy_gbs, alloc_copy_gbs=alloc_copy_gbs)
    return rows


def add_ratios(rows: list[dict]) -> None:
    """GB/s, fraction of copy bandwidth, and each peer's time over softmaxkit's, like with like."""
    for r in rows:
        r["gbs"] = r["bytes"] / r["seconds"] / 1e9
        r["of_copy"] = r["gbs"] / r["copy_gbs"]
        mine = "softmaxkit (out=)" if r["library"].endswith("(out=)") else "softmaxkit"
        ours = next(q for q in rows if q["op"] == r["op"] and q["shape"] == r["shape"] and q["library"] == mine)
        r["speedup_vs_peer"] = r["seconds"] / ours["seconds"]


def _cells(r: dict) -> list[str]:
    t_text = f"{r['seconds'] * 1e6:.2f} µs" if r["seconds"] < 1e-3 else f"{r['seconds'] * 1e3:.1f} ms"
    speedup = "—" if r["library"].startswith("softmaxkit") else f"{r['speedup_vs_peer']:.2f}x"
    return [r["op"], r["shape"], r["library"], t_text, f"{r['gbs']:.2f}", f"{r['of_copy']:.0%}", speedup]


def use_threads(threads: int) -> None:
    """Give softmaxkit, torch and XLA ``threads`` threads (XLA through ``XLA_FLAGS``, so before jax is imported)."""
    smk.set_num_threads(threads)
    torch.set_num_threads(threads)
    eigen = "false" if threads == 1 else "true"
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "")
        + f" --xla_cpu_multi_thread_eigen={eigen} intra_op_parallelism_threads={threads}"
    )
    os.environ.setdefault("JAX_PLATFORMS", "cpu")


def write(rows: list[dict], setting: str, repeats: int, out: Path) -> None:
    copies = sorted({(r["shape"], r["copy_gbs"], r["alloc_copy_gbs"]) for r in rows})
    write_results(
        "native",
        title="Native kernels: softmaxkit vs torch, jax, scipy (CPU, float32)",
        machine=f"{describe()}; {setting}",
        notes=[
            (
                f"Median of {repeats} interleaved rounds after a warm-up; the order of the libraries rotates each "
                "round, so that no library always runs right after the same other one. 8x10 is per call, averaged "
                f"over {SMALL_CALLS} calls per round."
            ),
            *NOTES,
        ],
        columns=COLUMNS,
        align="lllrrrr",
        rows=map(_cells, rows),
        footer=[
            "Copy bandwidth, read + write: "
            + ", ".join(
                f"{s}: {g:.1f} GB/s into an existing array (np.copyto), {a:.1f} GB/s into a new one (x.copy())"
                for s, g, a in copies
            ),
        ],
        csv_fields=CSV_FIELDS,
        csv_rows=rows,
        out=out,
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=None, help="threads for every library (default: softmaxkit's)")
    ap.add_argument("--repeats", type=int, default=5, help="timed rounds per case (median reported)")
    ap.add_argument("--quick", action="store_true", help="3 rounds, for a smoke run")
    add_out_argument(ap)
    args = ap.parse_args(argv)
    repeats = 3 if args.quick else args.repeats
    threads = args.threads or smk.get_num_threads()
    use_threads(threads)
    import jax

    setting = (
        f"softmaxkit kernels: {kernels.isa()}; threads: {threads} for softmaxkit, torch and XLA "
        f"(scipy single-threaded); torch {torch.__version__}, jax {jax.__version__}"
    )
    print(describe(), setting, file=sys.stderr)
    rng = np.random.default_rng(0)
    rows = [r for shape in SHAPES for r in measure_shape(shape, rng, repeats)]
    add_ratios(rows)
    write(rows, setting, repeats, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
