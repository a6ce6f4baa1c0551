"""Worst error in ULPs against mpmath: softmaxkit beside PyTorch, JAX and SciPy.

Runs every library on the same float32 inputs in one process and writes
``benchmarks/results/accuracy.md`` and ``.csv``.  Peers that are not
installed are reported as such.

    python benchmarks/bench_accuracy.py
"""

from __future__ import annotations

import csv
import math
import os
import platform
import sys

import mpmath as mp
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

import reference as ref  # noqa: E402

import softmaxkit as smk  # noqa: E402

F32 = np.dtype(np.float32)


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


def _scipy():
    from scipy import special

    def ce(x, t):
        ls = special.log_softmax(x, axis=-1)
        rows = np.arange(len(x))
        grad = special.softmax(x, axis=-1)
        grad[rows, t] -= 1
        return -ls[rows, t].sum(), grad

    return (lambda x: special.softmax(x, axis=-1), lambda x: special.log_softmax(x, axis=-1), ce)


LIBRARIES = {"softmaxkit": _softmaxkit, "torch": _torch, "jax": _jax, "scipy": _scipy}


# --- the cases ---------------------------------------------------------------------------


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


def _exact(x, t):
    rows = [ref.to_mp(r) for r in x]
    sm = [v for r in rows for v in ref.softmax(r)]
    ls = [v for r in rows for v in ref.log_softmax(r)]
    losses, grads = [], []
    for r, ti in zip(rows, t):
        loss, grad = ref.cross_entropy(r, ref.hard_coef(len(r), int(ti))[0])
        losses.append(loss)
        grads.extend(grad)
    return sm, ls, mp.fsum(losses), grads


def _nan_on_masked(fn):
    x = np.array([[-np.inf, -np.inf, -np.inf], [np.inf, 0.0, 1.0]], dtype=np.float32)
    with np.errstate(all="ignore"):
        out = np.asarray(fn(x))
    return "NaN" if np.isnan(out).any() else "ok"


def main() -> int:
    cases = [confident_rows(), scale_30(), wide_row()]
    libs = {}
    for name, make in LIBRARIES.items():
        try:
            libs[name] = make()
        except ImportError:
            print(f"{name}: not installed, skipped")
    rows = []
    for title, x, t in cases:
        old = mp.mp.dps
        mp.mp.dps = 30 if x.size > 10000 else 60
        exact = _exact(x, t)
        mp.mp.dps = old
        for name, (softmax, log_softmax, ce) in libs.items():
            with np.errstate(all="ignore"):
                loss, grad = ce(x, t)
                results = {
                    "softmax": ref.ulp_error(softmax(x), exact[0], F32),
                    "log_softmax": ref.ulp_error(log_softmax(x), exact[1], F32),
                    "ce loss": ref.ulp_error([loss], [exact[2]], F32),
                    "ce gradient": ref.ulp_error(grad, exact[3], F32),
                }
            rows.append({"case": title, "library": name, **results})
            print(title, name, {k: f"{v:.3g}" for k, v in results.items()})
    masked = {name: _nan_on_masked(lib[0]) for name, lib in libs.items()}
    write(rows, masked)
    return 0


def _fmt(v: float) -> str:
    if math.isinf(v):
        return "inf"
    return f"{v:.2g}" if v >= 1000 else f"{v:.2f}"


def write(rows, masked) -> None:
    out_dir = os.path.join(HERE, "results")
    os.makedirs(out_dir, exist_ok=True)
    keys = ["softmax", "log_softmax", "ce loss", "ce gradient"]
    with open(os.path.join(out_dir, "accuracy.csv"), "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["case", "library"] + keys)
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        "Worst error in float32 ULPs against a 60-digit mpmath reference (lower is better).",
        "",
        "| case | library | softmax | log_softmax | CE loss | CE gradient |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['case']} | {r['library']} | " + " | ".join(_fmt(r[k]) for k in keys) + " |")
    lines += ["", "Fully masked row and a row with +inf (softmax): " + ", ".join(f"{k}: {v}" for k, v in masked.items()), ""]
    lines.append(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, NumPy {np.__version__}.")
    with open(os.path.join(out_dir, "accuracy.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
