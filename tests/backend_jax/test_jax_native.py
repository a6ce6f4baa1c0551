"""softmaxkit.jax on its two paths: the native kernels through XLA FFI, and the jax.numpy formulas.

Every accuracy test runs on both (the ``jax_path`` fixture), against mpmath;
the native path is also checked for its build and fallbacks, layouts, vmap,
thread counts, errors raised from inside jit, and agreement with the
formulas within the contract.
"""

import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = jax.numpy

import softmaxkit.jax as smj  # noqa: E402
from softmaxkit import kernels  # noqa: E402
from softmaxkit.backends.jax import native  # noqa: E402

from tests import reference as ref  # noqa: E402

NATIVE = native.active()
# How far apart the paths may be in float32 without x64: the native path is
# within 2 ULP of the exact result, the formulas within a few (each exp,
# log1p and division rounds in float32; see softmaxkit.jax's docstring).
FORMULAS_APART = 8
FORMULAS_FLOAT32 = 4
needs_native = pytest.mark.skipif(not NATIVE, reason=f"the native JAX path is not in use: {smj.kernel_path()}")


def _rand(*shape, seed=0, scale=3.0, dtype=np.float32):
    return jnp.asarray((np.random.default_rng(seed).normal(size=shape) * scale).astype(dtype))


def _confident(margins, n=16, seed=3):
    rng = np.random.default_rng(seed)
    rows = rng.normal(size=(len(margins), n)).astype(np.float32)
    for i, m in enumerate(margins):
        rows[i, 5] = rows[i].max() + m
    return rows


# --- the path in use -----------------------------------------------------------------


def test_kernel_path_is_one_line_naming_the_path(jax_path):
    line = smj.kernel_path()
    assert "\n" not in line
    assert line.startswith("native: XLA FFI handlers on CPU" if jax_path == "native" else "jax.numpy formulas: ")


def _run(code, **env):
    full = {**os.environ, "JAX_PLATFORMS": "cpu", **env}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=full, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


_COMPARE = """
    import numpy as np, jax, jax.numpy as jnp, softmaxkit.jax as smj
    x = (jnp.arange(24.0).reshape(4, 6) - 11.0) * 3.7
    t = jnp.array([0, 5, -100, 2])
    f = jax.jit(jax.value_and_grad(lambda a: smj.cross_entropy(a, t, label_smoothing=0.1)))
    loss, g = f(x)
    print(smj.kernel_path())
    np.save("{out}", np.concatenate([np.ravel(loss), np.ravel(g), np.ravel(smj.log_softmax(x))]))
"""


@needs_native
def test_without_a_compiler_the_formulas_give_the_results_within_the_contract(tmp_path):
    native_out, fallback_out = tmp_path / "native.npy", tmp_path / "fallback.npy"
    first = _run(_COMPARE.format(out=native_out))
    line = _run(_COMPARE.format(out=fallback_out), CXX=str(tmp_path / "no-such-compiler"), SOFTMAXKIT_CACHE_DIR=str(tmp_path / "cache"))
    assert first.startswith("native: ")
    assert line.startswith("jax.numpy formulas: the XLA FFI handlers could not be built"), line
    a, b = np.load(native_out), np.load(fallback_out)
    assert ref.ulp_distance(a, b, np.float32) <= FORMULAS_APART


def test_switched_off_by_the_environment(tmp_path):
    out = _run(_COMPARE.format(out=tmp_path / "off.npy"), SOFTMAXKIT_DISABLE_NATIVE="1")
    assert out.startswith("jax.numpy formulas: ")


@needs_native
def test_the_handlers_are_built_once_and_reused(tmp_path):
    code = "import softmaxkit.jax as smj, softmaxkit.backends.jax.native as n; print(smj.kernel_path()); print(n._library_path())"
    env = {"SOFTMAXKIT_CACHE_DIR": str(tmp_path)}
    first = _run(code, **env).splitlines()
    library = first[1]
    stamp = os.stat(library).st_mtime_ns
    second = _run(code, **env).splitlines()
    assert first[0].startswith("native: ") and second[0].startswith("native: ")
    assert second[1] == library and os.stat(library).st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".so"] == [os.path.basename(library)]


# --- accuracy against mpmath, both paths --------------------------------------------------


MARGINS = (5, 20, 40, 60, 80, 88, 95, 100)


def test_confident_rows_float32_without_x64(jax_path):
    """The native path keeps the contract (2 ULP) at every margin, subnormal
    probabilities included.  The formulas compute in float32 where XLA
    flushes subnormals: there the contract holds while results stay normal
    (margins up to 80 here), which is the bound the module docstring states."""
    rows = _confident(MARGINS)
    x = jnp.asarray(rows)
    t = jnp.array([5, 0, 5, 5, 1, 5, 5, 5])
    losses = jax.jit(lambda a: smj.cross_entropy(a, t, reduction="none"))(x)
    grads = jax.jit(jax.grad(lambda a: smj.cross_entropy(a, t, reduction="sum")))(x)
    lsm, p = jax.jit(lambda a: smj.log_softmax(a))(x), jax.jit(lambda a: smj.softmax(a))(x)
    lse = jax.jit(lambda a: smj.logsumexp(a, axis=-1))(x)
    worst = {}
    for i, (r, m) in enumerate(zip(rows, MARGINS)):
        if jax_path == "formulas" and m > 80:
            continue
        xs = ref.to_mp(r)
        exact_loss, exact_grad = ref.cross_entropy(xs, ref.hard_coef(r.size, int(t[i]))[0])
        errors = {
            "loss": ref.ulp_error([float(losses[i])], [exact_loss], np.float32),
            "grad": ref.ulp_error(np.asarray(grads[i]), exact_grad, np.float32),
            "log_softmax": ref.ulp_error(np.asarray(lsm[i]), ref.log_softmax(xs), np.float32),
            "softmax": ref.ulp_error(np.asarray(p[i]), ref.softmax(xs), np.float32),
            "logsumexp": ref.ulp_error([float(lse[i])], [ref.lse(xs)], np.float32),
        }
        for k, v in errors.items():
            worst[k] = max(worst.get(k, 0.0), v)
    assert max(worst.values()) <= ref.tolerance(np.float32), worst


@needs_native
def test_native_softmax_keeps_subnormal_probabilities():
    x = jnp.array([[100.0, 0.0, -3.0]])
    p = jax.jit(lambda a: smj.softmax(a))(x)
    assert 0 < float(p[0, 1]) < np.finfo(np.float32).tiny
    assert ref.ulp_error(np.asarray(p[0]), ref.softmax(ref.to_mp(np.asarray(x[0]))), np.float32) <= 1


def _assert_gradient_row(g, exact, xs, coef, dtype, tol):
    """A gradient entry ``C p_j - c_j`` within ``tol`` ULP of its largest term (the contract's form)."""
    C = ref.mp.fsum(coef)
    for gj, ej, pj, cj in zip(g, exact, ref.softmax(xs), coef):
        assert abs(ref.mp.mpf(float(gj)) - ej) <= tol * ref.ulp(max(abs(C) * pj, abs(cj)), dtype)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_every_dtype_within_the_contract(jax_path, dtype):
    """The contract on both paths, except float32 on the formulas without
    x64, which compute in float32: a few ULP (FORMULAS_FLOAT32), as the
    module docstring says."""
    with jax.enable_x64(dtype == "float64"):
        rows = np.asarray(_rand(6, 40, seed=4, scale=4.0, dtype=np.float64)).astype(np.float32)
        x = jnp.asarray(rows).astype(dtype)
        xr = np.asarray(x.astype(jnp.float64 if dtype == "float64" else jnp.float32)).astype(np.float64)
        t = jnp.array([0, 39, 7, 7, 20, 1])
        p = jax.jit(lambda a: smj.softmax(a, temperature=0.7))(x)
        y = jax.jit(lambda a: smj.log_softmax(a))(x)
        loss = jax.jit(lambda a: smj.cross_entropy(a, t, reduction="none", label_smoothing=0.05))(x)
        g = jax.jit(jax.grad(lambda a: smj.cross_entropy(a, t, reduction="sum", label_smoothing=0.05)))(x)
        assert p.dtype == y.dtype == loss.dtype == g.dtype == x.dtype
        np_dtype = np.dtype(x.dtype)
        tol = FORMULAS_FLOAT32 if (jax_path, dtype) == ("formulas", "float32") else ref.tolerance(np_dtype)
        for i, r in enumerate(xr):
            xs = ref.to_mp(r)
            coef = ref.hard_coef(r.size, int(t[i]), eps=0.05)[0]
            exact_loss, exact_grad = ref.cross_entropy(xs, coef)
            assert ref.ulp_error(np.asarray(p[i]), ref.softmax(xs, T=0.7), np_dtype) <= tol
            assert ref.ulp_error(np.asarray(y[i]), ref.log_softmax(xs), np_dtype) <= tol
            assert ref.ulp_error([np.asarray(loss[i])], [exact_loss], np_dtype) <= tol
            _assert_gradient_row(np.asarray(g[i]), exact_grad, xs, coef, np_dtype, max(tol, ref.difference_tolerance(np_dtype)))


# --- the native path agrees with the formulas --------------------------------------------

CE_OPTIONS = [
    {},
    {"reduction": "sum"},
    {"reduction": "none"},
    {"weight": "w"},
    {"weight": "w", "reduction": "none", "ignore_index": 3},
    {"label_smoothing": 0.2, "z_loss": 1e-3},
    {"where": "mask"},
    {"probabilities": True, "label_smoothing": 0.1, "weight": "w"},
]


def _ce_args(options, seed=5):
    x = _rand(7, 11, seed=seed)
    kw = dict(options)
    labels = jnp.array([0, 10, 3, 3, kw.get("ignore_index", -100), 5, 9])
    if kw.pop("probabilities", False):
        labels = jax.nn.softmax(_rand(7, 11, seed=seed + 1))
    if kw.get("weight") == "w":
        kw["weight"] = jnp.linspace(0.25, 2.0, 11)
    if kw.get("where") == "mask":
        kw["where"] = jnp.asarray(np.random.default_rng(seed).random((7, 11)) > 0.3).at[:, 0].set(True).at[2].set(False)
    return x, labels, kw


def _value_grad_and_tangent(x, labels, kw):
    def f(a):
        return smj.cross_entropy(a, labels, **kw)

    value = jax.jit(f)(x)
    grad = jax.jit(jax.grad(lambda a: f(a).sum()))(x)
    tangent = jax.jit(lambda a, v: jax.jvp(f, (a,), (v,))[1])(x, jnp.cos(x))
    return value, grad, tangent


def _assert_close_in_row_ulps(a, b):
    """``a`` within FORMULAS_APART ULP of ``b``'s largest magnitude in each row (gradient
    entries are differences, accurate to a few ULP of their largest term)."""
    a, b = np.atleast_2d(np.asarray(a, np.float64)), np.atleast_2d(np.asarray(b, np.float64))
    scale = np.spacing(np.max(np.abs(b), axis=-1, keepdims=True).astype(np.float32)).astype(np.float64)
    with np.errstate(invalid="ignore"):  # inf - inf where both are inf
        close = (a == b) | (np.abs(a - b) <= FORMULAS_APART * scale)
    assert np.all(close), (a[~close], b[~close])


@needs_native
@pytest.mark.parametrize("options", CE_OPTIONS, ids=lambda o: "-".join(o) or "plain")
def test_native_cross_entropy_equals_the_formulas_within_the_contract(options):
    x, labels, kw = _ce_args(options)
    ours = _value_grad_and_tangent(x, labels, kw)
    with kernels.disabled():
        formulas = _value_grad_and_tangent(x, labels, kw)
    for a, b in zip(ours, formulas):
        _assert_close_in_row_ulps(a, b)


@needs_native
def test_native_value_and_grad_is_one_kernel_pass():
    """jit(value_and_grad) of the loss calls the cross-entropy handler once, and nothing computes exp in XLA."""
    x, t = _rand(8, 300), jnp.arange(8)
    text = jax.jit(jax.value_and_grad(lambda a, t: smj.cross_entropy(a, t))).lower(x, t).as_text()
    assert text.count("softmaxkit_cross_entropy") == 1
    assert "exponential" not in text


# --- layouts, vmap, threads, errors ------------------------------------------------------


@needs_native
def test_any_axis_and_batch_dimensions():
    x = _rand(3, 5, 4, seed=8)
    t = jnp.array([[0, 1, 2, 3], [4, 4, -100, 0], [1, 1, 1, 1]])

    def every_axis(a):
        each = [(smj.log_softmax(a, axis=axis), smj.softmax(a, axis=axis), smj.logsumexp(a, axis=axis)) for axis in (0, 1, 2, (0, 2))]
        return each, smj.cross_entropy(a, t, axis=1, reduction="none")

    # One compilation per path (eager, every operation of the formulas would compile on its own).
    got, loss = jax.jit(lambda a: every_axis(a))(x)
    with kernels.disabled():
        expected, expected_loss = jax.jit(lambda a: every_axis(a))(x)
    for got_axis, expected_axis in zip(got, expected):
        for a, b in zip(got_axis, expected_axis):
            assert a.shape == b.shape
            assert ref.ulp_distance(np.asarray(a), np.asarray(b), np.float32) <= FORMULAS_APART
    assert loss.shape == (3, 4)
    assert ref.ulp_distance(np.asarray(loss), np.asarray(expected_loss), np.float32) <= FORMULAS_APART


@needs_native
def test_vmap_of_the_custom_calls_matches_a_loop():
    xs = _rand(3, 5, 9, seed=9)
    ts = jnp.array([[0, 1, 2, -100, 8], [-100] * 5, [3, 3, 3, 3, 3]])
    ws = jnp.abs(_rand(3, 9, seed=10)) + 0.1

    def loss(x, t, w):
        return smj.cross_entropy(x, t, weight=w, label_smoothing=0.1)

    batched = jax.jit(jax.vmap(jax.value_and_grad(loss)))(xs, ts, ws)
    for i in range(3):
        one = jax.value_and_grad(loss)(xs[i], ts[i], ws[i])
        assert float(batched[0][i]) == float(one[0])
        assert np.array_equal(np.asarray(batched[1][i]), np.asarray(one[1]))
    assert float(batched[0][1]) == 0.0 and not np.asarray(batched[1][1]).any()  # every label ignored
    shared_w = jax.vmap(lambda x, t: loss(x, t, ws[0]))(xs, ts)
    assert float(shared_w[2]) == float(loss(xs[2], ts[2], ws[0]))
    p = jax.vmap(lambda x: smj.softmax(x, temperature=0.5))(xs)
    assert np.array_equal(np.asarray(p[1]), np.asarray(smj.softmax(xs[1], temperature=0.5)))


@needs_native
def test_results_do_not_depend_on_the_thread_count():
    x, t = _rand(64, 5000, seed=11), jnp.arange(64) * 7
    before = kernels.get_num_threads()
    results = []
    try:
        for n in (1, 2, 3):
            kernels.set_num_threads(n)
            results.append(jax.jit(jax.value_and_grad(lambda a, t: smj.cross_entropy(a, t)))(x, t))
    finally:
        kernels.set_num_threads(before)
    for loss, grad in results[1:]:
        assert float(loss) == float(results[0][0]) and np.array_equal(np.asarray(grad), np.asarray(results[0][1]))


@needs_native
def test_out_of_range_label_under_jit_raises_naming_labels():
    with pytest.raises(Exception, match="labels holds a class index outside"):
        jax.block_until_ready(jax.jit(lambda a, t: smj.cross_entropy(a, t))(_rand(3, 4), jnp.array([0, 4, 1])))


def test_empty_batch(jax_path):
    x = jnp.zeros((0, 5))
    assert jax.jit(lambda a: smj.softmax(a))(x).shape == (0, 5)
    loss, grad = jax.jit(jax.value_and_grad(lambda a, t: smj.cross_entropy(a, t)))(x, jnp.zeros((0,), jnp.int32))
    assert float(loss) == 0.0 and grad.shape == (0, 5)


def test_all_ignored_mean_is_zero_with_zero_gradient(jax_path):
    x = _rand(4, 6)
    loss, grad = jax.jit(jax.value_and_grad(lambda a, t: smj.cross_entropy(a, t)))(x, jnp.full((4,), -100))
    assert float(loss) == 0.0 and not np.asarray(grad).any() and not math.isnan(float(loss))
