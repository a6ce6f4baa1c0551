"""softmaxkit for JAX: ``jax.nn``-style functions with custom VJPs.

The forward passes and the VJPs call the formulas in ``softmaxkit._numerics``
with ``xp = jax.numpy``, so results agree with the NumPy and PyTorch APIs.
Everything works under ``jax.jit``, ``jax.vmap`` and ``jax.grad`` (also
``grad`` of ``grad``: the VJPs are ordinary differentiable JAX code);
forward-mode (``jax.jvp``, ``jax.jacfwd``) is not defined for
``custom_vjp`` functions.

Precision
---------
JAX computes in float32 unless x64 is enabled.

* With ``jax_enable_x64``: float32 and narrower are computed in float64 and
  rounded once (within 2 ULP); float64 uses the compensated path.
* Without it (the default): float16 and bfloat16 are computed in float32 and
  rounded once; float32 uses the compensated float32 path of ``_numerics``
  (exact shift ``hi + lo``, ``exp(hi)(1 + lo)``, cascaded sums).  The shift
  is then exact, so confident rows keep their full relative accuracy, but
  ``exp``, ``log1p`` and the division each round in float32: expect a few
  ULP rather than 2 (see ``docs/torch.md`` for the measured figures).

softmaxkit does not switch x64 on for you: the flag is global in JAX and
changing it inside a traced function is not supported.

Checks
------
Option, dtype and shape checks always run.  Value checks (label range,
signs of weights and probabilities) raise ``ValueError`` on concrete arrays
and are skipped on tracers (inside ``jit``, ``vmap`` or ``grad``), where
they cannot be evaluated without a host round trip.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

try:
    import jax
    import jax.numpy as jnp
except ImportError as exc:  # pragma: no cover - exercised only without jax
    raise ImportError("softmaxkit.jax needs JAX: pip install 'softmaxkit[jax]'") from exc

from softmaxkit import _numerics as num
from softmaxkit import _validate as v
from softmaxkit._losses import _reduce

__all__ = [
    "cross_entropy",
    "log_softmax",
    "logsumexp",
    "softmax",
]

_INF = float("inf")


def _work(dtype) -> tuple[Any, bool]:
    return num.working_dtype(jnp, dtype)


def _concrete(*arrays: Any) -> bool:
    return not any(isinstance(a, jax.core.Tracer) for a in arrays if a is not None)


def _require_none(bad: Any, message: str) -> None:
    if _concrete(bad) and bool(jnp.any(bad)):
        pos = v.first_position(bad)
        raise ValueError(f"{message}; first at position {list(pos)}")


def _as_float(x: Any, name: str) -> Any:
    if not isinstance(x, (jax.Array, jnp.ndarray)) and not hasattr(x, "__array__"):
        raise TypeError(f"{name} must be an array; got {type(x).__module__}.{type(x).__name__}")
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.floating):
        return x
    if jnp.issubdtype(x.dtype, jnp.integer):
        return x.astype(_work(jnp.float32)[0])
    raise TypeError(f"{name} must be a real floating or integer array; got dtype {x.dtype}")


def _to_rows(x: Any, axes: tuple[int, ...]) -> tuple[Any, Any]:
    """``x`` with ``axes`` moved last and flattened, and a function undoing it."""
    rest = [i for i in range(x.ndim) if i not in axes]
    perm = rest + sorted(axes)
    moved = jnp.transpose(x, perm)
    rest_shape = tuple(x.shape[i] for i in rest)
    x2 = moved.reshape(rest_shape + (math.prod(x.shape[i] for i in axes),))
    inverse = sorted(range(len(perm)), key=perm.__getitem__)

    def back(y):
        return jnp.transpose(y.reshape(moved.shape), inverse)

    return x2, back


def _masked(x: Any, where: Any) -> Any:
    if where is None:
        return x
    w = jnp.asarray(where)
    if w.dtype != jnp.bool_:
        raise TypeError(f"where must be a boolean array; got dtype {w.dtype}")
    return jnp.where(w, x, -_INF)


# --- softmax and log_softmax --------------------------------------------------


@partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _softmax_last(x, temperature: float, log: bool):
    work, extra = _work(x.dtype)
    st = num.row_stats(jnp, x.astype(work), None, temperature, extra)
    return (num.log_softmax if log else num.softmax)(jnp, st).astype(x.dtype)


def _softmax_fwd(x, temperature, log):
    y = _softmax_last(x, temperature, log)
    return y, y


def _softmax_bwd(temperature, log, y, g):
    work, extra = _work(y.dtype)
    yw, gw = y.astype(work), g.astype(work)
    if log:
        out = num.log_softmax_vjp(jnp, jnp.exp(yw), yw != -_INF, gw, extra)
    else:
        out = num.softmax_vjp(jnp, yw, gw, extra)
    return ((out / temperature).astype(y.dtype),)


_softmax_last.defvjp(_softmax_fwd, _softmax_bwd)
# Each custom-VJP function is compiled as a whole (and so are its forward and
# backward passes under ``grad``) rather than dispatched one operation at a time.
_softmax_last_jit = jax.jit(_softmax_last, static_argnums=(1, 2))


def _softmax_family(x, axis, where, temperature, log):
    x = _as_float(x, "x")
    T = v.temperature(temperature)
    axes = v.axis(axis, max(x.ndim, 1), allow_many=True)
    if x.ndim == 0:
        return _softmax_last_jit(_masked(x, where).reshape(1), T, log).reshape(())
    x = _masked(x, where)
    x2, back = _to_rows(x, axes)
    return back(_softmax_last_jit(x2, T, log))


def softmax(x: Any, axis: int | tuple[int, ...] | None = -1, where: Any = None, *, temperature: float = 1.0) -> Any:
    r"""Softmax, exact and NaN-free, differentiable under jit, vmap and grad.

    .. math:: \mathrm{softmax}(x)_i = \frac{e^{z_i}}{1 + s},\quad
              z_i = \frac{x_i - a}{T},\; s = \sum_{i \ne k} e^{z_i}

    Parameters
    ----------
    x : jax.Array
        Logits; integer arrays are promoted to the default float type.
    axis : int, tuple of ints or None, default -1
        The axis (or axes) each distribution runs along; None means all.
    where : bool array, optional
        Broadcastable to ``x``; False entries take no part and get 0.
    temperature : float, default 1.0
        ``T > 0``.

    Returns
    -------
    jax.Array of ``x``'s shape and dtype.

    Notes
    -----
    A fully masked row gives zeros and a zero gradient (``jax.nn.softmax``
    gives NaN); ``+inf`` entries share the mass equally.  Precision: see the
    module docstring.

    Examples
    --------
    >>> import jax.numpy as jnp, softmaxkit.jax as smj
    >>> smj.softmax(jnp.array([[-jnp.inf, -jnp.inf]]))
    Array([[0., 0.]], dtype=float32)
    """
    return _softmax_family(x, axis, where, temperature, False)


def log_softmax(x: Any, axis: int | tuple[int, ...] | None = -1, where: Any = None, *, temperature: float = 1.0) -> Any:
    r"""Log-softmax ``z_i - log1p(s)``, exact at any margin.

    .. math:: \log\mathrm{softmax}(x)_i = z_i - \operatorname{log1p}(s)

    Parameters
    ----------
    x, axis, where, temperature
        As in :func:`softmax`.

    Returns
    -------
    jax.Array of ``x``'s shape and dtype.

    Notes
    -----
    Masked entries and fully masked rows give ``-inf`` and a zero gradient.

    Examples
    --------
    >>> import jax.numpy as jnp, softmaxkit.jax as smj
    >>> float(smj.log_softmax(jnp.array([20.0, 0.0]))[0])  # jax.nn gives 0
    -2.0611536...e-09
    """
    return _softmax_family(x, axis, where, temperature, True)


# --- logsumexp ----------------------------------------------------------------


@jax.custom_vjp
def _logsumexp_last(x):
    work, extra = _work(x.dtype)
    st = num.row_stats(jnp, x.astype(work), None, 1.0, extra)
    return num.logsumexp(jnp, st)[..., 0].astype(x.dtype)


def _logsumexp_fwd(x):
    return _logsumexp_last(x), x


def _logsumexp_bwd(x, g):
    work, extra = _work(x.dtype)
    p = num.softmax(jnp, num.row_stats(jnp, x.astype(work), None, 1.0, extra))
    out = jnp.where(p == 0, jnp.zeros_like(p), g.astype(work)[..., None] * p)
    return (out.astype(x.dtype),)


_logsumexp_last.defvjp(_logsumexp_fwd, _logsumexp_bwd)
_logsumexp_last_jit = jax.jit(_logsumexp_last)


def logsumexp(a: Any, axis: int | tuple[int, ...] | None = None, keepdims: bool = False, where: Any = None) -> Any:
    r"""``log(sum(exp(a)))`` over ``axis`` as ``a_max + log1p(s)``.

    .. math:: \operatorname{lse}(x) = a + \operatorname{log1p}\Big(\sum_{i \ne k} e^{x_i - a}\Big)

    Parameters
    ----------
    a : jax.Array
    axis : int, tuple of ints or None, default None
        Axes to reduce; None reduces all (as ``jax.nn.logsumexp``).
    keepdims : bool, default False
    where : bool array, optional
        Only True entries are summed.

    Returns
    -------
    jax.Array with ``axis`` removed (or kept with size 1).

    Notes
    -----
    A fully masked row or empty axis gives ``-inf`` with a zero gradient.

    Examples
    --------
    >>> import jax.numpy as jnp, softmaxkit.jax as smj
    >>> smj.logsumexp(jnp.array([-jnp.inf, -jnp.inf]))
    Array(-inf, dtype=float32)
    """
    x = _as_float(a, "a")
    keepdims = v.flag(keepdims, "keepdims")
    axes = v.axis(axis, max(x.ndim, 1), allow_many=True)
    x = _masked(x, where)
    if x.ndim == 0:
        return _logsumexp_last_jit(x.reshape(1))
    x2, _ = _to_rows(x, axes)
    out = _logsumexp_last_jit(x2)
    if keepdims:
        out = out.reshape(tuple(1 if i in axes else s for i, s in enumerate(x.shape)))
    return out


# --- cross-entropy ------------------------------------------------------------


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def _ce_rows(x, coef, row_w, z):
    work, extra = _work(x.dtype)
    st = num.row_stats(jnp, x.astype(work), None, 1.0, extra)
    return num.cross_entropy_rows(jnp, st, coef, z, row_w, False)[0]


def _ce_fwd(x, coef, row_w, z):
    return _ce_rows(x, coef, row_w, z), (x, coef, row_w)


def _ce_bwd(z, res, g):
    x, coef, row_w = res
    work, extra = _work(x.dtype)
    st = num.row_stats(jnp, x.astype(work), None, 1.0, extra)
    _, grad = num.cross_entropy_rows(jnp, st, coef, z, row_w, True)
    g = g[..., None]
    # d loss / d c_j = -log p_j; d loss / d w_row = z lse^2 (0 on masked rows).
    d_coef = num.neg_log_softmax(jnp, st) * g
    lse = num.logsumexp(jnp, st)
    d_row = jnp.where(st.masked_row | st.inf_row, jnp.zeros_like(lse), z * lse * lse) * g
    return (grad * g).astype(x.dtype), d_coef.astype(coef.dtype), d_row.astype(row_w.dtype)


_ce_rows.defvjp(_ce_fwd, _ce_bwd)
_ce_rows_jit = jax.jit(_ce_rows, static_argnums=(3,))


def cross_entropy(
    logits: Any,
    labels: Any,
    axis: int = -1,
    *,
    weight: Any = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    reduction: str = "mean",
) -> Any:
    r"""Softmax cross-entropy with integer labels or probabilities.

    .. math:: \ell = \sum_j c_j\,\big((a - x_j) + \operatorname{log1p}(s)\big)
              + z\, w\, \operatorname{lse}(x)^2

    with ``c = (1 - eps) w_t onehot(t) + eps w / K`` for labels and
    ``c_j = w_j ((1 - eps) q_j + eps / K)`` for probabilities (``K`` counts
    the classes whose logit is not ``-inf``); the gradient
    ``(C + 2 z w lse) p - c`` is formed at the argmax from the other
    classes, so confident rows keep an exact, non-zero target gradient.

    Parameters
    ----------
    logits : jax.Array
        Classes along ``axis``.
    labels : jax.Array
        Integer labels of ``logits``' shape without ``axis``, or
        probabilities of ``logits``' shape.
    axis : int, default -1
        The class axis.
    weight : jax.Array of shape (C,), optional
        Non-negative class weights.
    ignore_index : int, default -100
        Labels equal to it contribute no loss and no gradient.
    label_smoothing : float in [0, 1], default 0
    z_loss : float >= 0, default 0
    reduction : {"mean", "sum", "none"}, default "mean"
        "mean" divides by the summed weights of non-ignored rows (labels) or
        the number of rows (probabilities), as ``torch.nn.functional`` does.

    Returns
    -------
    jax.Array: scalar, or per row for ``reduction="none"``; ``logits``' dtype.
    Differentiable in ``logits``, probability ``labels`` and ``weight``.

    Notes
    -----
    All labels ignored gives 0 with a zero gradient; smoothing gives no mass
    to ``-inf`` classes; fully masked rows have zero gradients.

    Examples
    --------
    >>> import jax, jax.numpy as jnp, softmaxkit.jax as smj
    >>> g = jax.grad(smj.cross_entropy)(jnp.array([[30.0, 0.0]]), jnp.array([0]))
    >>> float(g[0, 0])  # jax.nn / optax give 0
    -9.357...e-14
    """
    reduction = v.reduction(reduction)
    eps = v.in_unit_interval(label_smoothing, "label_smoothing")
    z = v.non_negative(z_loss, "z_loss")
    ignore_index = v.integer(ignore_index, "ignore_index")
    x = _as_float(logits, "logits")
    labels = jnp.asarray(labels)
    if x.ndim == 0:
        raise ValueError("logits must have a class axis; got a 0-d array")
    (ax,) = v.axis(axis, x.ndim)
    n_classes = x.shape[ax]
    if n_classes == 0:
        raise ValueError(f"logits has an empty class axis (axis={axis}, shape {tuple(x.shape)}); cross-entropy needs at least one class")
    x2, _ = _to_rows(x, (ax,))
    rest_shape = x2.shape[:-1]
    x2 = x2.reshape(-1, n_classes)
    work, extra = _work(x.dtype)
    xw = jax.lax.stop_gradient(x2).astype(work)
    w = None
    if weight is not None:
        w = _as_float(weight, "weight")
        v.weight_shape(w.shape, n_classes)
        _require_none(v.bad_weight(jnp, w), v.BAD_WEIGHT)
        w = w.astype(work)
    if jnp.issubdtype(labels.dtype, jnp.integer):
        v.target_shape("int", labels.shape, x.shape, ax, "labels", "logits", "axis")
        t = labels.reshape(-1)
        _require_none(v.not_a_class(t, n_classes, ignore_index), v.not_a_class_message("a label", n_classes, ignore_index))
        hot = (jnp.arange(n_classes) == t[:, None]) & (t != ignore_index)[:, None]
        coef, row_w = num.class_coefficients(jnp, xw, eps, w, hot=hot.astype(work))
        denominator = jnp.sum(row_w)
    elif jnp.issubdtype(labels.dtype, jnp.floating):
        v.target_shape("float", labels.shape, x.shape, ax, "labels", "logits", "axis")
        _require_none(labels < 0, f"labels {v.NEGATIVE_PROBABILITY}")
        q, _ = _to_rows(labels, (ax,))
        coef, row_w = num.class_coefficients(jnp, xw, eps, w, probs=q.reshape(-1, n_classes).astype(work))
        denominator = jnp.asarray(float(x2.shape[0]), dtype=work)
    else:
        raise TypeError(f"labels must hold integer class indices or floating probabilities; got dtype {labels.dtype}")
    loss = _ce_rows_jit(x2, coef, row_w, z)
    out, _ = _reduce(jnp, loss, None, denominator, reduction, extra)
    if reduction == "none":
        out = out.reshape(rest_shape)
    return out.astype(x.dtype)


# --- NumPy-style entry points for the core API's dispatch ----------------------


def _core_softmax(x, axis, *, temperature, where):
    return softmax(x, axis, where, temperature=temperature)


def _core_log_softmax(x, axis, *, temperature, where):
    return log_softmax(x, axis, where, temperature=temperature)


def _core_logsumexp(x, axis, *, keepdims, where):
    return logsumexp(x, axis, keepdims, where)


def _core_cross_entropy(logits, targets, *, axis, weight, ignore_index, label_smoothing, reduction, z_loss, return_grad):
    def loss_fn(x):
        return cross_entropy(
            x, targets, axis, weight=weight, ignore_index=ignore_index, label_smoothing=label_smoothing, z_loss=z_loss, reduction=reduction
        )

    if not return_grad:
        return loss_fn(logits)
    loss, vjp = jax.vjp(loss_fn, logits)
    (grad,) = vjp(jnp.ones_like(loss))
    return loss, grad
