"""softmaxkit.jax against jax.nn and optax under jax.jit (CPU).

Each case jits the peer's function and softmaxkit's, runs both on the same
arrays in one process, interleaved (the harness's warm-up and rotating
rounds), and reports medians, softmaxkit's time over the peer's and how many
times faster softmaxkit is.  Compilation is the warm-up, so it is not timed.

- ``jit(value_and_grad)`` of the mean cross-entropy with integer labels,
  against ``optax.softmax_cross_entropy_with_integer_labels(...).mean()``;
- ``jit`` softmax and log_softmax against ``jax.nn``;
- ``jit`` of a batched decode step (see ``bench_jax_decode.py``);
- a training loop: 20 Adam steps of an MLP with a 32768-class output under
  one ``jit``, with either loss.

The path softmaxkit.jax takes (``softmaxkit.jax.kernel_path()``) is printed
with the table.

Usage::

    PYTHONPATH=src python benchmarks/bench_jax.py [--rounds 7] [-k SUBSTRING] [--quick] [--out DIR]

writes benchmarks/results/jax.md and jax.csv.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import optax
from _harness import add_out_argument, describe, interleaved, medians, timed, write_results

import softmaxkit.jax as smj

SHAPES = [(2048, 32768), (16384, 1024), (256, 32000)]
QUICK_SHAPES = [(256, 32000)]


def _cases(shapes):
    """(group, name, peer name, peer fn, softmaxkit fn, argument maker)."""
    for dtype in (jnp.float32, jnp.bfloat16):
        dname = jnp.dtype(dtype).name
        for n, c in shapes:

            def make(n=n, c=c, dtype=dtype):
                key = jax.random.key(0)
                x = (jax.random.normal(key, (n, c), jnp.float32) * 3).astype(dtype)
                t = jax.random.randint(jax.random.key(1), (n,), 0, c)
                return x, t

            def optax_ce(x, t):
                return optax.softmax_cross_entropy_with_integer_labels(x, t).mean()

            yield (
                "jit(value_and_grad) cross-entropy",
                f"{dname} {n}x{c}",
                "optax",
                jax.jit(jax.value_and_grad(optax_ce)),
                jax.jit(jax.value_and_grad(smj.cross_entropy)),
                make,
            )
            yield ("jit softmax", f"{dname} {n}x{c}", "jax.nn", jax.jit(jax.nn.softmax), jax.jit(smj.softmax), lambda m=make: m()[:1])
            yield (
                "jit log_softmax",
                f"{dname} {n}x{c}",
                "jax.nn",
                jax.jit(jax.nn.log_softmax),
                jax.jit(smj.log_softmax),
                lambda m=make: m()[:1],
            )


def _training_cases(quick):
    """An MLP (256 -> 256 -> classes) trained with Adam, 20 steps per call under one jit (lax.scan)."""
    classes = 4096 if quick else 32768
    batch, features, hidden, steps = 128, 256, 256, 20
    rng = jax.random.split(jax.random.key(2), 4)
    params = {
        "w1": jax.random.normal(rng[0], (features, hidden)) / features**0.5,
        "w2": jax.random.normal(rng[1], (hidden, classes)) / hidden**0.5,
    }
    xs = jax.random.normal(rng[2], (steps, batch, features))
    ys = jax.random.randint(rng[3], (steps, batch), 0, classes)
    optimizer = optax.adam(1e-3)

    def trainer(loss_fn):
        def step(carry, batch_xy):
            p, state = carry
            x, y = batch_xy
            loss, grads = jax.value_and_grad(lambda q: loss_fn(jax.nn.gelu(x @ q["w1"]) @ q["w2"], y))(p)
            updates, state = optimizer.update(grads, state, p)
            return (optax.apply_updates(p, updates), state), loss

        return jax.jit(lambda p, s, x, y: jax.lax.scan(step, (p, s), (x, y))[1])

    def optax_ce(z, y):
        return optax.softmax_cross_entropy_with_integer_labels(z, y).mean()

    args = (params, optimizer.init(params), xs, ys)
    yield ("train MLP, 20 Adam steps", f"float32 batch {batch}, {classes} classes", "optax", trainer(optax_ce), trainer(smj.cross_entropy), lambda: args)


def _block(out):
    jax.block_until_ready(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("-k", default="", help="run only cases whose group or name contains this")
    parser.add_argument("--quick", action="store_true", help="one small shape")
    add_out_argument(parser)
    args = parser.parse_args()
    rows, csv_rows = [], []
    cases = list(_cases(QUICK_SHAPES if args.quick else SHAPES)) + list(_training_cases(args.quick))
    for group, name, peer, peer_fn, ours, make in cases:
        if args.k not in f"{group} {name}":
            continue
        inputs = make()
        times = medians(
            interleaved(
                {
                    peer: lambda f=peer_fn, a=inputs: timed(lambda: _block(f(*a))),
                    "softmaxkit": lambda f=ours, a=inputs: timed(lambda: _block(f(*a))),
                },
                args.rounds,
            )
        )
        del inputs
        ratio = times["softmaxkit"] / times[peer]
        rows.append([group, name, peer, f"{times[peer] * 1e3:.2f}", f"{times['softmaxkit'] * 1e3:.2f}", f"{ratio:.2f}", f"{1 / ratio:.2f}x"])
        csv_rows.append({"group": group, "case": name, "peer": peer, "peer_ms": times[peer] * 1e3, "softmaxkit_ms": times["softmaxkit"] * 1e3})
        print(" | ".join(rows[-1]), file=sys.stderr)
    if not args.k or "decode" in args.k:
        sys.path.insert(0, str(Path(__file__).parent))
        import bench_jax_decode

        for r in bench_jax_decode.run(args.rounds):
            peer_ms, ours_ms = r["jax_s"] * 1e3, r["softmaxkit_s"] * 1e3
            rows.append(["jit decode step", r["case"], "plain JAX", f"{peer_ms:.3f}", f"{ours_ms:.3f}",
                         f"{ours_ms / peer_ms:.2f}", f"{peer_ms / ours_ms:.2f}x"])
            csv_rows.append({"group": "jit decode step", "case": r["case"], "peer": "plain JAX", "peer_ms": peer_ms, "softmaxkit_ms": ours_ms})
    write_results(
        "jax",
        title="softmaxkit.jax against jax.nn and optax (jit, CPU)",
        machine=describe(),
        notes=["", f"softmaxkit.jax path: {smj.kernel_path()}; JAX {jax.__version__}, optax {optax.__version__}; "
               f"medians of {args.rounds} interleaved rounds, milliseconds per call."],
        columns=["case", "shape", "peer", "peer ms", "softmaxkit ms", "softmaxkit / peer", "speed-up"],
        rows=rows,
        align="lllrrrr",
        csv_fields=["group", "case", "peer", "peer_ms", "softmaxkit_ms"],
        csv_rows=csv_rows,
        out=args.out,
    )


if __name__ == "__main__":
    main()
