"""Native CPU kernels against torch, jax and scipy, in one process, interleaved.

For each shape and operation every library is timed in turn, round after
round, after a warm-up; the table reports the median.  The order rotates
each round: a large call runs slower right after another library's (about
30 ms on a 2048x32768 cross-entropy timed right after XLA's, still there
after a 0.2 s wait), so no library may always follow the same one.  Pauses
between calls make every allocating call slower on this machine, so there
are none.  Throughput is counted
as bytes read plus bytes written (logits in, result out; for cross-entropy,
logits in and gradient out) and compared with the machine's copy bandwidth,
measured here with ``np.copyto`` on an array of the same size.

Threads: softmaxkit and torch get the same count (``--threads``, default
softmaxkit's).  XLA on CPU has no exact thread-count setting; with one thread
it runs with ``--xla_cpu_multi_thread_eigen=false
intra_op_parallelism_threads=1``, otherwise with
``intra_op_parallelism_threads=N``.  scipy.special is single-threaded.

Usage::

    python benchmarks/bench_native.py [--threads N] [--repeats R] [--quick]

writes benchmarks/results/native.md and native.csv.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import time
from pathlib import Path

from _machine import machine

SHAPES = [(2048, 32768), (16384, 1024), (32, 262144), (8, 10)]
OPS = ["softmax", "log_softmax", "cross_entropy+grad"]
RESULTS = Path(__file__).resolve().parent / "results"


def timed(fn, number: int) -> float:
    t0 = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - t0) / number


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=None, help="threads for every library (default: softmaxkit's)")
    ap.add_argument("--repeats", type=int, default=5, help="timed rounds per case (median reported)")
    ap.add_argument("--quick", action="store_true", help="3 rounds, for a smoke run")
    args = ap.parse_args(argv)
    repeats = 3 if args.quick else args.repeats

    import softmaxkit as smk
    from softmaxkit import kernels as _native

    threads = args.threads or smk.get_num_threads()
    smk.set_num_threads(threads)
    eigen = "false" if threads == 1 else "true"
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + f" --xla_cpu_multi_thread_eigen={eigen} intra_op_parallelism_threads={threads}"
    )
    os.environ.setdefault("JAX_PLATFORMS", "cpu")

    import jax
    import jax.numpy as jnp
    import numpy as np
    import scipy.special
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    info = machine()
    info.update(threads=threads, softmaxkit_isa=_native.isa(), torch=torch.__version__, jax=jax.__version__)
    print(info, file=sys.stderr)

    @jax.jit
    def jax_ce_grad(x, t):
        def loss(x):
            lp = jax.nn.log_softmax(x, axis=-1)
            return -jnp.mean(jnp.take_along_axis(lp, t[:, None], axis=-1))

        return jax.value_and_grad(loss)(x)

    jax_softmax = jax.jit(lambda x: jax.nn.softmax(x, axis=-1))
    jax_log_softmax = jax.jit(lambda x: jax.nn.log_softmax(x, axis=-1))

    rows = []
    rng = np.random.default_rng(0)
    for shape in SHAPES:
        x = rng.standard_normal(shape, dtype=np.float32) * 3
        t = rng.integers(0, shape[1], shape[0])
        nbytes = 2 * x.nbytes
        small = x.size < 10**5
        number = 2000 if small else 1
        dst = np.empty_like(x)
        tx, tt = torch.from_numpy(x), torch.from_numpy(t)
        jx, jt = jnp.asarray(x), jnp.asarray(t.astype(np.int32))

        out = np.empty_like(x)
        tout = torch.empty_like(tx)
        loss_rows = np.empty(shape[0])

        def torch_ce():
            xg = tx.detach().requires_grad_(True)
            F.cross_entropy(xg, tt).backward()
            return xg.grad

        cases = {
            "softmax": {
                "softmaxkit": lambda: smk.softmax(x),
                "softmaxkit (fresh output)": lambda: _native.softmax_into(x, np.empty_like(x)),
                "softmaxkit (out=)": lambda: _native.softmax_into(x, out),
                "torch": lambda: torch.softmax(tx, -1),
                "torch (out=)": lambda: torch.softmax(tx, -1, out=tout),
                "jax": lambda: jax_softmax(jx).block_until_ready(),
                "scipy": lambda: scipy.special.softmax(x, axis=-1),
            },
            "log_softmax": {
                "softmaxkit": lambda: smk.log_softmax(x),
                "softmaxkit (fresh output)": lambda: _native.log_softmax_into(x, np.empty_like(x)),
                "softmaxkit (out=)": lambda: _native.log_softmax_into(x, out),
                "torch": lambda: torch.log_softmax(tx, -1),
                "torch (out=)": lambda: torch.log_softmax(tx, -1, out=tout),
                "jax": lambda: jax_log_softmax(jx).block_until_ready(),
                "scipy": lambda: scipy.special.log_softmax(x, axis=-1),
            },
            "cross_entropy+grad": {
                "softmaxkit": lambda: smk.cross_entropy(x, t, return_grad=True),
                "softmaxkit (fresh output)": lambda: _native.cross_entropy_into(
                    x, t, loss_rows, np.empty_like(x), grad_divisor=shape[0]
                ),
                "softmaxkit (out=)": lambda: _native.cross_entropy_into(x, t, loss_rows, out, grad_divisor=shape[0]),
                "torch": torch_ce,
                "jax": lambda: jax.block_until_ready(jax_ce_grad(jx, jt)),
            },
        }
        copy_times, alloc_copy_times = [], []
        for op in OPS:
            libs = cases[op]
            for fn in libs.values():
                fn()
            times = {name: [] for name in libs}
            order = list(libs)
            for round_ in range(repeats):
                copy_times.append(timed(lambda: np.copyto(dst, x), number))
                alloc_copy_times.append(timed(x.copy, number))
                # the order rotates each round: a large call runs slower right
                # after another library's (measured: about 30 ms on a
                # 2048x32768 cross-entropy after XLA's), so no library may
                # always follow the same one
                for name in order[round_ % len(order) :] + order[: round_ % len(order)]:
                    times[name].append(timed(libs[name], number))
            for name, ts in times.items():
                rows.append({"op": op, "shape": f"{shape[0]}x{shape[1]}", "library": name, "seconds": statistics.median(ts), "bytes": nbytes})
            print(op, shape, {k: f"{statistics.median(v) * 1e3:.3f} ms" for k, v in times.items()}, file=sys.stderr)
        copy_s, alloc_copy_s = statistics.median(copy_times), statistics.median(alloc_copy_times)
        for r in rows:
            if r["shape"] == f"{shape[0]}x{shape[1]}":
                r["copy_gbs"] = nbytes / copy_s / 1e9
                r["alloc_copy_gbs"] = nbytes / alloc_copy_s / 1e9
        del tx, tout, jx, dst, out

    for r in rows:
        r["gbs"] = r["bytes"] / r["seconds"] / 1e9
        r["of_copy"] = r["gbs"] / r["copy_gbs"]
        # like with like: a peer writing into a given output against softmaxkit doing the same
        mine = "softmaxkit (out=)" if r["library"].endswith("(out=)") else "softmaxkit"
        ours = next(q for q in rows if q["op"] == r["op"] and q["shape"] == r["shape"] and q["library"] == mine)
        r["speedup_vs_peer"] = r["seconds"] / ours["seconds"]

    RESULTS.mkdir(parents=True, exist_ok=True)
    fields = ["op", "shape", "library", "seconds", "gbs", "copy_gbs", "alloc_copy_gbs", "of_copy", "speedup_vs_peer"]
    with open(RESULTS / "native.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)

    lines = [
        "# Native kernels: softmaxkit vs torch, jax, scipy (CPU, float32)",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores available, ISA: {info['isa']}; "
        f"softmaxkit kernels: {info['softmaxkit_isa']}; threads: {threads} for softmaxkit, torch and XLA "
        f"(scipy single-threaded); torch {info['torch']}, jax {info['jax']}.",
        f"Median of {repeats} interleaved rounds after a warm-up; the order of the libraries rotates each round, "
        "so that no library always runs right after the same other one. 8x10 is per call, averaged over 2000 calls per round.",
        "GB/s counts bytes read + written (logits in, result or gradient out); `of copy` compares with "
        "np.copyto on the same array, timed in the same rounds.",
        "`softmaxkit speedup` is the peer's time divided by softmaxkit's (> 1: softmaxkit faster), like with like: "
        "a peer's allocating call against softmaxkit's public function, a peer writing into a preallocated "
        "output (`out=`) against softmaxkit's kernel doing the same (`_native.*_into`, the path front ends use).",
        "softmaxkit's public functions keep the memory of freed large results for reuse (`set_output_cache`); "
        "`softmaxkit (fresh output)` is the same kernel writing into a new `np.empty_like` array each call, whose "
        "pages the OS must fault in and zero, as every peer's allocating call does.",
        "",
        "| op | shape | library | time | GB/s | of copy | softmaxkit speedup |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        t_text = f"{r['seconds'] * 1e6:.2f} µs" if r["seconds"] < 1e-3 else f"{r['seconds'] * 1e3:.1f} ms"
        speedup = "—" if r["library"].startswith("softmaxkit") else f"{r['speedup_vs_peer']:.2f}x"
        lines.append(
            f"| {r['op']} | {r['shape']} | {r['library']} | {t_text} | {r['gbs']:.2f} | {r['of_copy']:.0%} | {speedup} |"
        )
    copies = sorted({(r["shape"], r["copy_gbs"], r["alloc_copy_gbs"]) for r in rows})
    lines += [
        "",
        "Copy bandwidth, read + write: "
        + ", ".join(f"{s}: {g:.1f} GB/s into an existing array (np.copyto), {a:.1f} GB/s into a new one (x.copy())" for s, g, a in copies),
        "",
    ]
    (RESULTS / "native.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
