"""Worst error in ULPs against mpmath: softmaxkit beside PyTorch, JAX and SciPy.

Runs every library on the same float32 inputs in one process and writes
``benchmarks/results/accuracy.md`` and ``.csv``.  Peers that are not
installed are reported as such.

    python benchmarks/bench_accuracy.py [--out DIR]
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
from collections.abc import Callable
from dataclasses import dataclass

import mpmath as mp
import numpy as np
from _harness import REPOSITORY, add_out_argument, describe, write_results

sys.path.insert(0, str(REPOSITORY))

import softmaxkit as smk
from tests import reference as ref

F32 = np.dtype(np.float32)
METRICS = ["softmax", "log_softmax", "ce loss", "ce gradient"]
COLUMNS = ["case", "library", "softmax", "log_softmax", "CE loss", "CE gradient"]
NOTES = [
    (
        "Worst error in float32 ULPs against an mpmath reference of 60 digits, 30 for the row of width "
        "131072 (lower is better)."
    )
]


@dataclass(frozen=True)
class Case:
    """One library; ``setup`` imports it and returns its (softmax, log_softmax, ce loss+grad) on float32 rows."""

    library: str
    setup: Callable[[], tuple[Callable, Callable, Callable]]


# --- the libraries, each as (softmax, log_softmax, ce loss+grad) on float32 rows ---------


def _softmaxkit():
    def ce(x, t):
        return smk.cross_entropy(x, t, reduction="sum", return_grad=True)

    return smk.softmax, smk.log_softmax, ce


def _torch():
    import torch
    import torch.nn.functional as F

    def ce(x, t):
        xt = torch.tensor(x, requires_grad=True)
        loss = F.cross_entropy(xt, torch.tensor(t), reduction="sum")
        loss.backward()
        return loss.detach().numpy(), xt.grad.numpy()

    return (
        lambda x: torch.softmax(torch.tensor(x), -1).numpy(),
        lambda x: torch.log_softmax(torch.tensor(x), -1).numpy(),
        ce,
    )


def _jax():
    import jax
    import jax.numpy as jnp

    def loss_fn(x, t):
        return -jnp.sum(jnp.take_along_axis(jax.nn.log_softmax(x), t[:, None], axis=-1))

    grad_fn = jax.value_and_grad(loss_fn)

    def ce(x, t):
        loss, grad = grad_fn(jnp.asarray(x), jnp.asarray(t))
        return np.asarray(loss), np.asarray(grad)

    return (
        lambda x: np.asarray(jax.nn.softmax(jnp.asarray(x))),
        lambda x: np.asarray(jax.nn.log_softmax(jnp.asarray(x))),
        ce,
    )


def _softmaxkit_jax(path):
    """softmaxkit.jax under jit, on its native path or on its jax.numpy formulas (traced with the kernels off)."""

    def setup():
        import contextlib

        import jax
        import jax.numpy as jnp

        import softmaxkit.jax as smj
        from softmaxkit import kernels

        if path == "native" and not smj.kernel_path().startswith("native"):
            raise ImportError(smj.kernel_path())
        context = kernels.disabled if path == "formulas" else contextlib.nullcontext
        # New functions for each path: jax.jit caches traces by function, and
        # the path is chosen when a function is traced.
        softmax, log_softmax = jax.jit(lambda x: smj.softmax(x)), jax.jit(lambda x: smj.log_softmax(x))
        grad_fn = jax.jit(jax.value_and_grad(lambda x, t: smj.cross_entropy(x, t, reduction="sum")))

        def run(fn):
            def call(*args):
                with context():
                    out = fn(*(jnp.asarray(a) for a in args))
                return jax.tree.map(np.asarray, out)

            return call

        return run(softmax), run(log_softmax), run(grad_fn)

    return setup


def _scipy():
    from scipy import special

    def ce(x, t):
        ls = special.log_softmax(x, axis=-1)
        rows = np.arange(len(x))
        grad = special.softmax(x, axis=-1)
        grad[rows, t] -= 1
        return -ls[rows, t].sum(), grad

    return (lambda x: special.softmax(x, axis=-1), lambda x: special.log_softmax(x, axis=-1), ce)


CASES = [
    Case("softmaxkit", _softmaxkit),
    Case("softmaxkit.jax, jit, native", _softmaxkit_jax("native")),
    Case("softmaxkit.jax, jit, formulas", _softmaxkit_jax("formulas")),
    Case("torch", _torch),
    Case("jax", _jax),
    Case("scipy", _scipy),
]


# --- the inputs --------------------------------------------------------------------------


def confident_rows():
    margins = np.arange(5, 91, 5, dtype=np.float64)
    x = np.zeros((len(margins), 8))
    x[:, 0] = margins
    x[:, 1:] = np.linspace(-1, 0, 7)
    return "confident rows (margins 5 to 90)", x.astype(np.float32), np.zeros(len(margins), dtype=np.int64)


def scale_30():
    rng = np.random.default_rng(0)
    x = (30 * rng.standard_normal((32, 32))).astype(np.float32)
    return "logits of scale 30 (32x32)", x, rng.integers(0, 32, 32)


def wide_row():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 131072)).astype(np.float32)
    return "one row of width 131072", x, np.array([7])


INPUTS = [confident_rows, scale_30, wide_row]


def _exact(x, t):
    """softmax, log_softmax, the summed loss and its gradient, in mpmath; 30 digits for a wide row, else 60."""
    with mp.workdps(30 if x.size > 10000 else 60):
        rows = [ref.to_mp(r) for r in x]
        sm = [v for r in rows for v in ref.softmax(r)]
        ls = [v for r in rows for v in ref.log_softmax(r)]
        losses, grads = [], []
        for r, ti in zip(rows, t):
            loss, grad = ref.cross_entropy(r, ref.hard_coef(len(r), int(ti))[0])
            losses.append(loss)
            grads.extend(grad)
        return sm, ls, mp.fsum(losses), grads


def errors(library, x, t, exact) -> dict:
    """Worst ULP error of each metric for one library on one input."""
    softmax, log_softmax, ce = library
    with np.errstate(all="ignore"):
        loss, grad = ce(x, t)
        return {
            "softmax": ref.ulp_error(softmax(x), exact[0], F32),
            "log_softmax": ref.ulp_error(log_softmax(x), exact[1], F32),
            "ce loss": ref.ulp_error([loss], [exact[2]], F32),
            "ce gradient": ref.ulp_error(grad, exact[3], F32),
        }


def _nan_on_masked(fn):
    x = np.array([[-np.inf, -np.inf, -np.inf], [np.inf, 0.0, 1.0]], dtype=np.float32)
    with np.errstate(all="ignore"):
        out = np.asarray(fn(x))
    return "NaN" if np.isnan(out).any() else "ok"


def _fmt(v: float) -> str:
    if math.isinf(v):
        return "inf"
    return f"{v:.2g}" if v >= 1000 else f"{v:.2f}"


def load(cases) -> dict:
    """Each installed library's functions, by name; the others are reported and skipped."""
    libs = {}
    for case in cases:
        try:
            libs[case.library] = case.setup()
        except ImportError:
            print(f"{case.library}: not installed, skipped")
    return libs


def measure(libs: dict) -> list[dict]:
    """One row per input and library: the worst ULP error of each metric."""
    rows = []
    for make_input in INPUTS:
        title, x, t = make_input()
        exact = _exact(x, t)
        for name, library in libs.items():
            results = errors(library, x, t, exact)
            rows.append({"case": title, "library": name, **results})
            print(title, name, {k: f"{v:.3g}" for k, v in results.items()})
    return rows


def write(rows: list[dict], masked: dict, out) -> None:
    write_results(
        "accuracy",
        title="Accuracy: worst error in float32 ULPs against mpmath",
        machine=f"{describe()}, Python {platform.python_version()}, NumPy {np.__version__}",
        notes=NOTES,
        columns=COLUMNS,
        rows=([r["case"], r["library"], *(_fmt(r[k]) for k in METRICS)] for r in rows),
        footer=["Fully masked row and a row with +inf (softmax): " + ", ".join(f"{k}: {v}" for k, v in masked.items())],
        csv_fields=["case", "library", *METRICS],
        csv_rows=rows,
        out=out,
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_out_argument(parser)
    args = parser.parse_args(argv)
    libs = load(CASES)
    rows = measure(libs)
    write(rows, {name: _nan_on_masked(lib[0]) for name, lib in libs.items()}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
