"""softmaxkit.jax.vocab_parallel_cross_entropy against the one-device loss and mpmath.

The comparisons need several devices, and XLA's host platform fixes their
number when JAX starts, so they run in one fresh interpreter with four host
devices (this file, run as a script): it compiles each option set and
reduction for 2 and 4 devices, float32 and bfloat16, with and without
``jax_enable_x64``, runs every batch of rows through them, and prints the
worst distances as JSON.  The tests below read them.  The argument checks
run here, on a mesh of one device.

The one-device reference is ``softmaxkit.jax.cross_entropy`` on the whole
rows (its native path: float64 inside, rounded once).  With x64 the split
loss computes in float64 and rounds once as well, so the two agree within
the contract's 2 ULP.  Without x64 it computes in compensated float32, the
precision of ``softmaxkit.jax``'s formulas there (4 ULP, see its docstring).

XLA flushes subnormal float32 and bfloat16 results to 0: both sides are
compared with entries below twice the smallest normal number set to 0 (only
the confident rows' non-target probabilities lie there).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = jax.numpy

from jax.sharding import PartitionSpec as P

import softmaxkit.jax as smj
from tests.reference.ulps import ulp_distance

ROOT = Path(__file__).resolve().parents[2]
ROWS, CLASSES = 16, 64
DEVICES = (2, 4)
# Powers of two: the per-row cotangents of "none" scale the gradient exactly.
ROW_COTANGENT = [2.0 ** (i % 3 - 1) for i in range(ROWS)]
OPTIONS = {
    "plain": {},
    "weight": {"weight": True},
    "smoothing": {"label_smoothing": 0.1},
    "z_loss": {"z_loss": 0.01},
    "all": {"weight": True, "label_smoothing": 0.2, "z_loss": 0.01, "ignore_index": -1},
}
REDUCTIONS = ("mean", "sum", "none")
# What each dtype and device count is run with: every option set in float32
# on four devices, the one combining them all elsewhere (each is a compilation).
MATRIX = {
    ("float32", 4): tuple(OPTIONS),
    ("float32", 2): ("all",),
    ("bfloat16", 4): ("all",),
    ("bfloat16", 2): ("all",),
}
# Without x64: the formulas' compensated float32, and only while the sums
# stay normal float32 numbers (softmaxkit.jax's docstring): confident
# margins up to 80.  The loss within 4 ULP; the gradient within 6 ULP of the
# size of its terms C p_j and c_j (numerics' bound for compensated float32;
# the one-device formulas come within 5 of the native kernel on these rows).
X64_OFF_MATRIX = {("float32", 4): ("all",)}
X64_OFF_TOL = (4.0, 6.0)
X64_OFF_MARGIN = 80


# --- the batches --------------------------------------------------------------------


def batches(top_margin: int = 90) -> dict:
    """``name -> (float32 logits (ROWS, CLASSES), labels with -100 for ignored rows)``.

    Column ``c`` sits on device ``c // 16`` of four and ``c // 32`` of two.
    The confident rows' margins go up to ``top_margin``.
    """
    rng = np.random.default_rng(20)
    out = {}
    x = (rng.normal(size=(ROWS, CLASSES)) * 4).astype(np.float32)
    t = rng.integers(0, CLASSES, size=ROWS)
    t[[3, 11]] = -100
    out["random"] = (x, t)

    x = (rng.normal(size=(ROWS, CLASSES)) * 2).astype(np.float32)
    t = rng.integers(0, CLASSES, size=ROWS)
    x[0] = -np.inf  # fully masked, label ignored: loss 0, zero gradient
    t[0] = -100
    x[1, [3, 40]] = np.inf  # +inf on two devices share the mass
    t[1] = 3
    x[2, 50] = np.inf
    t[2] = 50
    x[3, [5, 21, 37, 53]] = 9.0  # the maximum tied on every device
    t[3] = 21
    x[4, [5, 21, 37, 53]] = 9.0
    t[4] = 5
    x[5, [5, 6, 37]] = 9.0  # tied twice on one device, once on another
    t[5] = 37
    x[6, :32] = -np.inf  # whole slices masked
    t[6] = 40
    x[7, ::3] = -np.inf
    t[7] = 1
    x[8] = 0.0  # every class the maximum
    t[8] = 10
    x[9, :] = -np.inf
    x[9, 60] = 1.5  # one live class
    t[9] = 60
    x[10, 33] = 40.0  # a confident maximum away from the target
    t[10] = 2
    out["edges"] = (x, t)

    # Margins 20 to 90 between the target and the other classes, all 0:
    # s = 63 exp(-margin) stays a normal float32 number.
    x = np.zeros((ROWS, CLASSES), np.float32)
    t = np.arange(ROWS) * 4 + 1
    margins = [20, 30, 50, 70, 80, 85, 88, 90] * 2
    x[np.arange(ROWS), t] = np.minimum(margins, top_margin)
    out["confident"] = (x, t)

    x = (rng.normal(size=(ROWS, CLASSES)) * 3).astype(np.float32)
    x[0] = -np.inf  # a label on a -inf logit gives +inf
    x[1, 7] = -np.inf
    x[2, 20] = np.nan  # NaN stays in its row, on every device
    t = rng.integers(0, CLASSES, size=ROWS)
    t[1] = 7
    out["infinite"] = (x, t)

    x = (rng.normal(size=(ROWS, CLASSES)) * 4).astype(np.float32)
    out["all_ignored"] = (x, np.full(ROWS, -100))
    return out


def class_weights() -> np.ndarray:
    w = np.random.default_rng(3).uniform(0.5, 2.0, CLASSES).astype(np.float32)
    w[10] = 0.0
    return w


# --- the measurements (run in a subprocess with four host devices) -------------------


# The one-device reverse mode multiplies a gradient it wrote in float32 by
# the cotangent in XLA, which flushes a subnormal gradient to 0 first; the
# split loss scales in float64.  Cotangents reach 2: entries below twice the
# smallest normal number are compared as 0.
FLUSH = 2 * float(np.finfo(np.float32).tiny)


def _flushed(a) -> np.ndarray:
    a = np.asarray(a).astype(np.float64)
    return np.where(np.abs(a) < FLUSH, 0.0, a)


def coefficients(name: str, x, t) -> tuple[np.ndarray, np.ndarray]:
    """The class coefficients ``c`` and the row weights ``w_t`` (float64) of
    option set ``name``: the gradient ``C p - c`` of a smoothed row cancels
    where ``C p_j`` is near ``c_j``."""
    o = OPTIONS[name]
    eps = o.get("label_smoothing", 0.0)
    w = class_weights().astype(np.float64) if o.get("weight") else np.ones(CLASSES)
    keep = t != -100
    hot = np.zeros(x.shape)
    hot[np.flatnonzero(keep), t[keep]] = 1.0
    finite = x != -np.inf
    k = np.maximum(finite.sum(axis=1, keepdims=True), 1)
    w_t = (hot * w).sum(axis=1, keepdims=True)
    return (1 - eps) * w_t * hot + eps * keep[:, None] * finite * w / k, w_t


def gradient_distance(a, b, scale) -> float:
    """Largest ``|a - b|`` in float32 ULP of ``max(|a|, |b|, scale)``: the
    distance of two gradients ``C p - c`` counted at the size of their terms."""
    a, b = _flushed(a), _flushed(b)
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    if not np.all(same | (np.isfinite(a) & np.isfinite(b))):
        return float("inf")
    size = np.maximum(np.maximum(np.abs(a), np.abs(b)), np.abs(scale))
    ulp = np.spacing(np.where(np.isfinite(size), size, 0).astype(np.float32)).astype(np.float64)
    return float(np.max(np.where(same, 0.0, np.abs(a - b) / ulp)))


def _options(name: str, w) -> dict:
    """The keyword arguments of option set ``name``, with class weights ``w`` where it has them."""
    o = dict(OPTIONS[name])
    o["weight"] = w if o.get("weight") else None
    return o


def _split_loss(xl, tl, wl, *, name, reduction):
    return smj.vocab_parallel_cross_entropy(xl, tl, axis_name="v", reduction=reduction, **_options(name, wl))


def _whole_loss(x, t, w, *, name, reduction):
    return smj.cross_entropy(x, t, reduction=reduction, **_options(name, w))


def _swap(loss, t, w, x):
    """``loss(x, t, w)``, for ``partial`` to leave ``x`` last."""
    return loss(x, t, w)


def _measure() -> dict:
    """Every distance the tests check, by name."""
    import mpmath as mp
    from jax.sharding import NamedSharding

    from tests.reference import exact
    from tests.reference.ulps import BFLOAT16, ulp_error

    assert len(jax.devices()) == 4, jax.devices()
    results: dict = {}
    w_np = class_weights()

    def labels_of(name, t):
        ignore = OPTIONS[name].get("ignore_index", -100)
        return jnp.asarray(np.where(t == -100, ignore, t))

    def value_and_grad(f, x, reduction):
        if reduction == "none":
            loss, vjp = jax.vjp(f, x)
            return loss, vjp(jnp.asarray(ROW_COTANGENT, dtype=x.dtype))[0]
        return jax.value_and_grad(f)(x)

    def split_fn(mesh, names):
        def run(x, labels, w):
            outs = {}
            for name in names:
                for reduction in REDUCTIONS:
                    local = partial(_split_loss, name=name, reduction=reduction)
                    mapped = jax.shard_map(local, mesh=mesh, in_specs=(P(None, "v"), P(), P("v")), out_specs=P())
                    outs[name, reduction] = value_and_grad(partial(_swap, mapped, labels[name], w), x, reduction)
            return outs

        return jax.jit(run)

    def one_device_fn(names):
        def run(x, labels, w):
            outs = {}
            for name in names:
                for reduction in REDUCTIONS:
                    whole = partial(_whole_loss, name=name, reduction=reduction)
                    outs[name, reduction] = value_and_grad(partial(_swap, whole, labels[name], w), x, reduction)
            return outs

        return jax.jit(run)

    exact_cache: dict = {}

    def exact_rows(name, x, t):
        """mpmath losses and target gradients of the rows of ``x`` (labels not ignored)."""
        key = (name, x.tobytes())
        if key not in exact_cache:
            o = OPTIONS[name]
            losses, target_grads = [], []
            for row, target in zip(x, t):
                xs = exact.to_mp(row)
                finite = [e != -exact.INF for e in xs]
                w = class_weights() if o.get("weight") else None
                coef, row_w = exact.hard_coef(CLASSES, int(target), o.get("label_smoothing", 0.0), w, finite)
                value, g = exact.cross_entropy(xs, coef, mp.mpf(o.get("z_loss", 0.0)), row_w)
                losses.append(value)
                target_grads.append(g[int(target)])
            exact_cache[key] = (losses, target_grads)
        return exact_cache[key]

    def compare(phase, matrix, data, tol_key):
        for (dtype_name, n), names in matrix.items():
            dtype = jnp.dtype(dtype_name)
            fmt = BFLOAT16 if dtype_name == "bfloat16" else np.dtype(np.float32)
            mesh = jax.make_mesh((n,), ("v",), devices=jax.devices()[:n])
            split, single = split_fn(mesh, names), one_device_fn(names)
            w_split = jax.device_put(jnp.asarray(w_np), NamedSharding(mesh, P("v")))
            for batch, (x_np, t_np) in data.items():
                x = jnp.asarray(x_np).astype(dtype)
                labels = {name: labels_of(name, t_np) for name in names}
                got = split(
                    jax.device_put(x, NamedSharding(mesh, P(None, "v"))),
                    {k: jax.device_put(v, NamedSharding(mesh, P())) for k, v in labels.items()},
                    w_split,
                )
                want = single(x, labels, jnp.asarray(w_np))
                for (name, reduction), (loss, grad) in got.items():
                    ref_loss, ref_grad = want[name, reduction]
                    assert loss.dtype == dtype and grad.dtype == dtype, (loss.dtype, grad.dtype)
                    key = f"{phase}/{dtype_name}/{n}/{batch}/{name}/{reduction}"
                    loss_d = ulp_distance(_flushed(loss), _flushed(ref_loss), fmt)
                    if tol_key == "at_result":
                        grad_d = ulp_distance(_flushed(grad), _flushed(ref_grad), fmt)
                    else:
                        coef, w_t = coefficients(name, x_np, t_np)
                        divisor = {"mean": w_t.sum() or np.inf, "sum": 1.0, "none": 1.0 / np.asarray(ROW_COTANGENT)[:, None]}[reduction]
                        scale = coef / divisor
                        grad_d = gradient_distance(grad, ref_grad, scale)
                    results[key] = [loss_d, grad_d]
                    if batch == "all_ignored" and reduction != "none":
                        results[f"all_ignored_zero/{key}"] = bool(float(loss) == 0.0 and not np.any(np.asarray(grad)))
                    if batch == "confident" and reduction == "none" and dtype_name == "float32":
                        want_loss, want_grad = exact_rows(name, x_np, t_np)
                        got_grad = np.asarray(grad)[np.arange(ROWS), t_np] / np.asarray(ROW_COTANGENT)
                        results[f"confident_exact/{key}"] = [
                            ulp_error(np.asarray(loss), want_loss, np.float32),
                            ulp_error(got_grad, want_grad, np.float32),
                        ]

    jax.config.update("jax_enable_x64", True)
    compare("x64", MATRIX, batches(), "at_result")
    # Eager (no jax.jit around shard_map): jax.grad of the mean.
    mesh = jax.make_mesh((4,), ("v",), devices=jax.devices())
    x_np, t_np = batches()["edges"]
    mapped = jax.shard_map(
        lambda xl, tl: smj.vocab_parallel_cross_entropy(xl, tl, axis_name="v"), mesh=mesh, in_specs=(P(None, "v"), P()), out_specs=P()
    )
    x, t = jax.device_put(jnp.asarray(x_np), NamedSharding(mesh, P(None, "v"))), jax.device_put(jnp.asarray(t_np), NamedSharding(mesh, P()))
    with jax.set_mesh(mesh):  # eager reverse mode over an explicit mesh needs it
        grad = jax.grad(mapped)(x, t)
    results["eager_grad"] = ulp_distance(grad, jax.grad(smj.cross_entropy)(jnp.asarray(x_np), jnp.asarray(t_np)), np.float32)
    jax.config.update("jax_enable_x64", False)
    compare("x32", X64_OFF_MATRIX, batches(X64_OFF_MARGIN), "at_terms")
    return results


# --- the tests ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def measured() -> dict:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, __file__], check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _worst(measured: dict, prefix: str) -> tuple[float, float, str]:
    """The largest loss and gradient distances among the keys starting with ``prefix``, and the worst key."""
    rows = {k: v for k, v in measured.items() if k.startswith(prefix)}
    assert rows, prefix
    key = max(rows, key=lambda k: max(rows[k]))
    return max(v[0] for v in rows.values()), max(v[1] for v in rows.values()), key


BATCHES = ("random", "edges", "confident", "infinite", "all_ignored")


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize(("dtype", "n"), list(MATRIX))
def test_matches_the_one_device_loss_and_gradient(measured, dtype, n, batch):
    """Loss and gradient of every option set and reduction within 2 ULP of
    ``cross_entropy`` on the whole rows (x64: float64 inside, rounded once)."""
    loss, grad, key = _worst(measured, f"x64/{dtype}/{n}/{batch}/")
    assert loss <= 2.0 and grad <= 2.0, (key, measured[key])


@pytest.mark.parametrize("batch", BATCHES)
def test_without_x64_matches_within_the_float32_formulas_precision(measured, batch):
    loss, grad, key = _worst(measured, f"x32/float32/4/{batch}/")
    assert loss <= X64_OFF_TOL[0] and grad <= X64_OFF_TOL[1], (key, measured[key])


@pytest.mark.parametrize(("phase", "n"), [("x64", 2), ("x64", 4), ("x32", 4)])
def test_confident_rows_are_exact(measured, phase, n):
    """Margins up to 90 in float32 (80 without x64): the loss and the target
    gradient against mpmath; at the argmax they are log1p(s) and -s/(1+s),
    where p_t - 1 would give 0."""
    loss, grad, key = _worst(measured, f"confident_exact/{phase}/float32/{n}/")
    tol = 2.0 if phase == "x64" else X64_OFF_TOL[0]
    assert loss <= tol and grad <= tol, (key, measured[key])


def test_all_ignored_mean_is_zero_with_a_zero_gradient(measured):
    flags = {k: v for k, v in measured.items() if k.startswith("all_ignored_zero/")}
    assert flags and all(flags.values()), [k for k, v in flags.items() if not v]


def test_eager_grad_matches_the_one_device_gradient(measured):
    assert measured["eager_grad"] <= 2.0


# --- checks (one device) -------------------------------------------------------------


def _on_one_device(fn, x, spec, check_vma=True, w=None):
    """``fn(x)`` (``fn(x, w)`` with class weights ``w``) inside ``shard_map``
    over a mesh of one device, ``x`` split by ``spec``."""
    from jax.sharding import NamedSharding

    mesh = jax.make_mesh((1,), ("v",), devices=jax.devices()[:1])
    specs = (spec,) if w is None else (spec, P("v"))
    args = (x,) if w is None else (x, w)
    mapped = jax.shard_map(fn, mesh=mesh, in_specs=specs, out_specs=P(), check_vma=check_vma)
    return mapped(*(jax.device_put(a, NamedSharding(mesh, sp)) for a, sp in zip(args, specs)))


X = jnp.zeros((2, 4))
T = jnp.array([0, 3])


def test_one_device_is_the_whole_row_loss():
    """Without x64 (this process): compensated float32 against the native
    kernel.  The class weights get a zero cotangent."""
    x = jnp.array([[30.0, 0.0, -jnp.inf, 1.0], [2.0, 2.0, 2.0, 2.0]])
    w = jnp.array([1.0, 2.0, 1.0, 0.5])

    def split(a, wa):
        return _on_one_device(lambda xl, wl: smj.vocab_parallel_cross_entropy(xl, T, axis_name="v", weight=wl), a, P(None, "v"), w=wa)

    loss, (grad, grad_w) = jax.jit(jax.value_and_grad(split, argnums=(0, 1)))(x, w)
    want, want_grad = jax.value_and_grad(smj.cross_entropy)(x, T, weight=w)
    assert loss.dtype == grad.dtype == jnp.float32
    assert ulp_distance(loss, want, np.float32) <= X64_OFF_TOL[0]
    assert ulp_distance(grad, want_grad, np.float32) <= X64_OFF_TOL[1]
    assert not np.any(np.asarray(grad_w))


def test_unbound_axis_name_names_it():
    with pytest.raises(ValueError, match="axis_name='v' is not bound"):
        smj.vocab_parallel_cross_entropy(X, T, axis_name="v")


def test_check_vma_off_is_refused():
    with pytest.raises(ValueError, match="does not vary along axis_name='v'"):
        _on_one_device(lambda xl: smj.vocab_parallel_cross_entropy(xl, T, axis_name="v"), X, P(None, "v"), check_vma=False)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"local_logits": jnp.zeros(4)}, ValueError, r"local_logits must have shape \(N, V_local\).*got shape \(4,\)"),
        ({"local_logits": jnp.zeros((2, 0))}, ValueError, "empty class axis"),
        ({"local_logits": jnp.zeros((2, 4), bool)}, TypeError, "local_logits must be a real floating"),
        ({"labels": jnp.zeros(2)}, TypeError, "labels must hold integer class indices; got dtype float32"),
        ({"labels": jnp.zeros(3, int)}, ValueError, r"labels of class indices must have shape \(2,\)"),
        ({"weight": jnp.ones(5)}, ValueError, r"weight must have shape \(4,\), this device's slice.*got \(5,\)"),
        ({"reduction": "avg"}, ValueError, "reduction"),
        ({"label_smoothing": 1.5}, ValueError, "label_smoothing"),
        ({"z_loss": -1.0}, ValueError, "z_loss"),
        ({"ignore_index": 0.5}, TypeError, "ignore_index"),
        ({"axis_name": ["v"]}, TypeError, "axis_name must be a mesh axis name"),
    ],
)
def test_arguments_are_checked(kwargs, error, match):
    args = {"local_logits": X, "labels": T, "axis_name": "v", **kwargs}
    x, t = args.pop("local_logits"), args.pop("labels")

    def fn(xl):
        return smj.vocab_parallel_cross_entropy(xl, t, **args)

    with pytest.raises(error, match=match):
        _on_one_device(fn, x, P(None, "v") if x.ndim == 2 else P("v"))


if __name__ == "__main__":
    print(json.dumps(_measure()))
