"""softmaxkit.sample against plain JAX on a jitted decoding step.

A decoding step draws one token per sequence from a batch of logits.  Each
case jits softmaxkit.sample and the same sampling written in plain JAX
(``jax.lax.top_k``, ``jax.nn.softmax``, ``jax.random.categorical``), on the
same logits and key, in one process, interleaved (the harness's warm-up and
rotating rounds); the table gives medians and softmaxkit's time over plain
JAX's.  The cases, on 8 x 50257 float32 logits (std 3):

- ``top-k + top-p``: temperature 0.8, top-k 50, top-p 0.9 (the usual
  decoding step);
- ``temperature``: temperature 0.8, no truncation;
- ``top-p``: temperature 0.8, top-p 0.9 without top-k (both sort whole rows);
- ``greedy``: temperature 0.

Plain JAX keeps exactly k classes and takes no care of ties, NaN or fully
masked rows; softmaxkit keeps the ties at the boundaries and gives -1 for a
row with nothing to draw from.

Usage::

    PYTHONPATH=src python benchmarks/bench_jax_decode.py [--rounds 7] [--number 20] [--out DIR]

prints the table (and with ``--out`` writes DIR/jax_decode.md and .csv).
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
from _harness import describe, interleaved, markdown_table, medians, timed, write_results

import softmaxkit as smk

SHAPE = (8, 50257)
TEMPERATURE = 0.8
TOP_K = 50
TOP_P = 0.9
NUMBER = 20

TITLE = "softmaxkit.sample vs plain JAX, one jitted decoding step"
COLUMNS = ["case", "plain JAX", "softmaxkit", "softmaxkit / plain JAX"]
CSV_FIELDS = ["case", "jax_s", "softmaxkit_s", "ratio"]


def plain_top_k_top_p(x: jax.Array, key: jax.Array) -> jax.Array:
    """Temperature, top-k, then top-p on the renormalised top-k, in plain JAX."""
    values, classes = jax.lax.top_k(x / TEMPERATURE, TOP_K)
    p = jax.nn.softmax(values, axis=-1)
    before = jnp.cumsum(p, axis=-1) - p
    choice = jax.random.categorical(key, jnp.where(before < TOP_P, values, -jnp.inf), axis=-1)
    return jnp.take_along_axis(classes, choice[:, None], axis=-1)[:, 0]


def plain_temperature(x: jax.Array, key: jax.Array) -> jax.Array:
    return jax.random.categorical(key, x / TEMPERATURE, axis=-1)


def plain_top_p(x: jax.Array, key: jax.Array) -> jax.Array:
    """Temperature then top-p, sorting whole rows, in plain JAX."""
    z = x / TEMPERATURE
    order = jnp.argsort(-z, axis=-1)
    ranked = jnp.take_along_axis(z, order, axis=-1)
    p = jax.nn.softmax(ranked, axis=-1)
    before = jnp.cumsum(p, axis=-1) - p
    choice = jax.random.categorical(key, jnp.where(before < TOP_P, ranked, -jnp.inf), axis=-1)
    return jnp.take_along_axis(order, choice[:, None], axis=-1)[:, 0]


def plain_greedy(x: jax.Array, key: jax.Array) -> jax.Array:
    return jnp.argmax(x, axis=-1)


# Each case: (name, plain JAX step, softmaxkit.sample's settings).
CASES: list[tuple[str, Callable, dict]] = [
    ("top-k + top-p", plain_top_k_top_p, {"temperature": TEMPERATURE, "top_k": TOP_K, "top_p": TOP_P}),
    ("temperature", plain_temperature, {"temperature": TEMPERATURE}),
    ("top-p", plain_top_p, {"temperature": TEMPERATURE, "top_p": TOP_P}),
    ("greedy", plain_greedy, {"temperature": 0}),
]


def measure(name: str, plain: Callable, settings: dict, repeats: int, number: int) -> dict:
    """Median seconds per step of both versions, jitted, on the same logits and key."""
    x = jax.random.normal(jax.random.key(0), SHAPE, dtype=jnp.float32) * 3
    key = jax.random.key(1)
    steps = {
        "jax": jax.jit(plain),
        "softmaxkit": jax.jit(lambda x, key: smk.sample(x, rng=key, **settings)),
    }

    def call(step: Callable) -> None:
        step(x, key).block_until_ready()

    calls = {lib: functools.partial(timed, functools.partial(call, step), number) for lib, step in steps.items()}
    seconds = medians(interleaved(calls, repeats))
    return {
        "case": f"{name} {SHAPE[0]}x{SHAPE[1]}",
        "jax_s": seconds["jax"],
        "softmaxkit_s": seconds["softmaxkit"],
        "ratio": seconds["softmaxkit"] / seconds["jax"],
    }


def run(repeats: int, number: int = NUMBER) -> list[dict]:
    """One row per case: median seconds per jitted step of plain JAX and softmaxkit over ``repeats`` rounds, and the ratio."""
    return [measure(name, plain, settings, repeats, number) for name, plain, settings in CASES]


def _cells(row: dict) -> list[str]:
    return [row["case"], f"{row['jax_s'] * 1e3:.3f} ms", f"{row['softmaxkit_s'] * 1e3:.3f} ms", f"{row['ratio']:.2f}"]


def _notes(repeats: int, number: int) -> list[str]:
    return [
        (
            f"jax {jax.__version__} on {jax.devices()[0].platform}; median of {repeats} interleaved rounds after a "
            f"warm-up (compilation), each round averaging {number} jitted steps."
        ),
        (
            f"Settings: temperature {TEMPERATURE}, top-k {TOP_K}, top-p {TOP_P}. softmaxkit.sample is "
            "jitted with its settings as Python numbers (static) and the key as an argument."
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds per case (median reported)")
    parser.add_argument("--number", type=int, default=NUMBER, help="jitted steps per round")
    parser.add_argument("--out", type=Path, default=None, help="also write jax_decode.md and .csv into this folder")
    args = parser.parse_args(argv)
    print(describe(), file=sys.stderr)
    rows = run(args.rounds, args.number)
    if args.out is None:
        lines = [f"# {TITLE}", "", f"Machine: {describe()}.", *_notes(args.rounds, args.number), ""]
        print("\n".join(lines + markdown_table(COLUMNS, map(_cells, rows), "lrrr")))
        return 0
    write_results(
        "jax_decode",
        title=TITLE,
        machine=describe(),
        notes=_notes(args.rounds, args.number),
        columns=COLUMNS,
        align="lrrr",
        rows=map(_cells, rows),
        csv_fields=CSV_FIELDS,
        csv_rows=rows,
        out=args.out,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
