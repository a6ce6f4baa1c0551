"""The JAX backend: ``jax.custom_jvp`` functions over the shared formulas.

The public face is ``softmaxkit.jax``, whose docstring states the derivative
rules, the precision and the checks."""

from __future__ import annotations

import math
from functools import partial
from typing import Any, NamedTuple

try:
    import jax
    import jax.numpy as jnp
    from jax.custom_derivatives import SymbolicZero
except ImportError as exc:  # pragma: no cover - exercised only without jax
    raise ImportError("softmaxkit.jax needs JAX: pip install 'softmaxkit[jax]'") from exc

from softmaxkit import numerics as num
from softmaxkit.backends.jax import native
from softmaxkit.frontend import validate
from softmaxkit.frontend.layout import Layout

_INF = float("inf")
_NATIVE_DTYPES = (jnp.float16, jnp.bfloat16, jnp.float32, jnp.float64)


def _native(x) -> bool:
    """Whether ``x``'s forward pass runs the native kernels (see ``native.py``)."""
    return x.dtype in _NATIVE_DTYPES and native.active()


def _work(dtype) -> tuple[Any, bool]:
    return num.working_dtype(jnp, dtype)


def traced(a: Any) -> bool:
    """Whether ``a`` is a tracer (inside jit, vmap or grad), whose values cannot be read without a host round trip."""
    return isinstance(a, jax.core.Tracer)


# Values are checked on concrete arrays and skipped on tracers.
_CHECKS = validate.ValueChecks(readable=lambda bad: not traced(bad))


def _as_float(x: Any, name: str) -> Any:
    if not isinstance(x, (jax.Array, jnp.ndarray)) and not hasattr(x, "__array__"):
        raise TypeError(f"{name} must be an array; got {type(x).__module__}.{type(x).__name__}")
    return validate.as_float(jnp, jnp.asarray(x), name)


def _to_rows(x: Any, axes: tuple[int, ...]) -> tuple[Any, Any]:
    """``x`` with ``axes`` moved last (in the order given) and flattened, and a function undoing it."""
    layout = Layout(jnp, tuple(x.shape), axes, in_order=True)
    return layout.forward(x), layout.back


def _where_mask(where: Any, shape: tuple[int, ...], name: str) -> Any:
    """``where`` as a boolean array of ``shape`` (None stays None)."""
    if where is None:
        return None
    w = jnp.asarray(where)
    if w.dtype != jnp.bool_:
        raise TypeError(f"where must be a boolean array; got dtype {w.dtype}")
    try:
        ok = jnp.broadcast_shapes(w.shape, shape) == tuple(shape)
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"where of shape {tuple(w.shape)} does not broadcast to {name} of shape {tuple(shape)}")
    return jnp.broadcast_to(w, shape)


def _masked(x: Any, where: Any, name: str = "x") -> Any:
    """``x`` with the entries where ``where`` is False replaced by ``-inf``."""
    w = _where_mask(where, x.shape, name)
    return x if w is None else jnp.where(w, x, -_INF)


# --- softmax and log_softmax --------------------------------------------------


def _is_zero(t: Any) -> bool:
    """Whether a tangent is JAX's symbolic zero (an input nobody differentiates)."""
    return isinstance(t, SymbolicZero)


def _tsum(v: Any) -> Any:
    """Sum over the last axis (kept) of an expression linear in a tangent.

    Tangent rules must be transposable: no selection may depend on the
    tangent, so the guarded compensated sum of ``_numerics`` cannot be used
    here, and JAX's transpose of any sum is a broadcast followed by a plain
    reduction anyway.
    """
    return jnp.sum(v, axis=-1, keepdims=True)


def _softmax_tangent(p: Any, t: Any) -> Any:
    """``p (t - <p, t>)``, 0 where ``p = 0`` (the Jacobian is symmetric: also the VJP).

    The masked entries select ``p`` itself, which is 0 there: a separate
    zero array would be computed in the forward pass and saved for reverse
    mode, a residual as large as the input.
    """
    masked = p == 0
    return jnp.where(masked, p, p * (t - _tsum(jnp.where(masked, p, p * t))))


@partial(jax.custom_jvp, nondiff_argnums=(1, 2, 3))
def _softmax_last(x, temperature: float, log: bool, use_native: bool):
    if use_native:
        return native.softmax(x, temperature, log)
    work, widened = _work(x.dtype)
    st = num.row_stats(jnp, x.astype(work), None, temperature, widened)
    return (num.log_softmax if log else num.softmax)(jnp, st).astype(x.dtype)


@_softmax_last.defjvp
def _softmax_jvp(temperature, log, use_native, primals, tangents):
    # The tangent is linear in t and JAX transposes it for reverse mode:
    # softmax's Jacobian diag(p) - p p^T is symmetric, so its VJP formula is
    # also its JVP; log_softmax's transposes to g - p sum(g).  The primal
    # quantities come from _softmax_last itself, so higher derivatives use
    # these rules again rather than differentiating the row statistics.
    (x,), (t,) = primals, tangents
    y = _softmax_last(x, temperature, log, use_native)
    work, _ = _work(x.dtype)
    yw, tw = y.astype(work), t.astype(work) / temperature
    if log:
        live = yw != -_INF
        # exp(y) is 0 where y = -inf: the masked entries select it (see
        # _softmax_tangent).
        p = jnp.exp(yw)
        out = jnp.where(live, tw - _tsum(jnp.where(live, p * tw, p)), p)
    else:
        out = _softmax_tangent(yw, tw)
    return y, out.astype(x.dtype)


# Each differentiable core is compiled as a whole (and so are its tangent and
# transposed rules under ``jvp`` and ``grad``) rather than dispatched one
# operation at a time.
_softmax_last_jit = jax.jit(_softmax_last, static_argnums=(1, 2, 3))


def _softmax_family(x, axis, where, temperature, log):
    x = _as_float(x, "x")
    T = validate.temperature(temperature)
    axes = validate.axis(axis, max(x.ndim, 1), allow_many=True)
    if x.ndim == 0:
        x1 = _masked(x, where).reshape(1)
        return _softmax_last_jit(x1, T, log, _native(x1)).reshape(())
    x = _masked(x, where)
    x2, back = _to_rows(x, tuple(sorted(axes)))
    return back(_softmax_last_jit(x2, T, log, _native(x2)))


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
    module docstring.  There is no ``initial`` argument (``jax.nn`` dropped
    it too); ``where`` covers its use.

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


@partial(jax.custom_jvp, nondiff_argnums=(1,))
def _logsumexp_last(x, use_native: bool):
    if use_native:
        return native.logsumexp(x)
    work, widened = _work(x.dtype)
    st = num.row_stats(jnp, x.astype(work), None, 1.0, widened)
    return num.logsumexp(jnp, st)[..., 0].astype(x.dtype)


@_logsumexp_last.defjvp
def _logsumexp_jvp(use_native, primals, tangents):
    # <p, t>, transposed to g p; entries with p = 0 (masked) take no part, so
    # a fully masked row has a zero derivative.
    (x,), (t,) = primals, tangents
    work, _ = _work(x.dtype)
    p = _softmax_last(x, 1.0, False, use_native).astype(work)
    tw = t.astype(work)
    dot = _tsum(num.logsumexp_vjp(jnp, p, tw))[..., 0]
    return _logsumexp_last(x, use_native), dot.astype(x.dtype)


_logsumexp_last_jit = jax.jit(_logsumexp_last, static_argnums=(1,))


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
    ``jax.nn.logsumexp``'s ``b`` and ``return_sign`` are not taken here:
    ``softmaxkit.logsumexp`` accepts JAX arrays with both.

    Examples
    --------
    >>> import jax.numpy as jnp, softmaxkit.jax as smj
    >>> smj.logsumexp(jnp.array([-jnp.inf, -jnp.inf]))
    Array(-inf, dtype=float32)
    """
    x = _as_float(a, "a")
    keepdims = validate.flag(keepdims, "keepdims")
    axes = validate.axis(axis, max(x.ndim, 1), allow_many=True)
    x = _masked(x, where, "a")
    if x.ndim == 0:
        return _logsumexp_last_jit(x.reshape(1), _native(x))
    x2, _ = _to_rows(x, tuple(sorted(axes)))
    out = _logsumexp_last_jit(x2, _native(x2))
    if keepdims:
        out = out.reshape(tuple(1 if i in axes else s for i, s in enumerate(x.shape)))
    return out


# --- cross-entropy ------------------------------------------------------------


def _ce_stats(x):
    work, widened = _work(x.dtype)
    return num.row_stats(jnp, x.astype(work), None, 1.0, widened)


@partial(jax.custom_jvp, nondiff_argnums=(3,))
def _ce_rows(x, coef, row_w, z):
    """Per-row loss (working dtype) of logits ``x``, class coefficients and row weights."""
    return num.cross_entropy_rows(jnp, _ce_stats(x), coef, z, row_w, False)[0]


@partial(jax.custom_jvp, nondiff_argnums=(3,))
def _ce_grad(x, coef, row_w, z):
    """The exact gradient of ``_ce_rows`` in ``x`` (working dtype)."""
    return num.cross_entropy_rows(jnp, _ce_stats(x), coef, z, row_w, True)[1]


def _ce_rows_jvp(z, primals, tangents):
    # The tangent in x is <g, t> with g the exact gradient: JAX transposes it
    # to g * cotangent, so reverse mode keeps the -s/(1+s) form at the target
    # and never forms p_t - 1.  d loss / d c_j = -log p_j and
    # d loss / d w_row = z lse^2 (0 on masked rows).  Tangents of inputs
    # nobody differentiates are symbolic zeros and are skipped: -log p_j is
    # +inf on -inf classes, and inf * 0 would be NaN.
    x, coef, row_w = primals
    tx, tc, tw = tangents
    loss = _ce_rows(x, coef, row_w, z)
    work, _ = _work(x.dtype)
    out = jnp.zeros_like(loss)
    if not _is_zero(tx):
        g = _ce_grad(x, coef, row_w, z)
        out = out + _tsum(g * tx.astype(work))[..., 0]
    if not _is_zero(tc):
        nlp = -_softmax_last(x, 1.0, True, _native(x)).astype(work)
        out = out + _tsum(nlp * tc)[..., 0]
    if z and not _is_zero(tw):
        lse = _logsumexp_last(x, _native(x)).astype(work)
        out = out + jnp.where(jnp.isinf(lse), jnp.zeros_like(lse), z * lse * lse) * tw[..., 0]
    return loss, out


def _ce_grad_jvp(z, primals, tangents):
    # g = M p - c with M = C + 2 z w lse; its tangent is
    # M dp + (dC + 2 z (dw lse + w dlse)) p - dc, dp = p (t - <p, t>),
    # dlse = <p, t>.  p and lse come from their own rules, so every order of
    # derivative is defined by these formulas.
    x, coef, row_w = primals
    tx, tc, tw = tangents
    g = _ce_grad(x, coef, row_w, z)
    work, widened = _work(x.dtype)
    p = _softmax_last(x, 1.0, False, _native(x)).astype(work)
    zero = jnp.zeros_like(p)
    live_row = ~jnp.all(p == 0, axis=-1, keepdims=True)
    M = num.compensated_sum(jnp, coef, widened)
    dM = jnp.zeros_like(M)
    if z:
        lse = _logsumexp_last(x, _native(x)).astype(work)[..., None]
        # Masked rows and rows with +inf carry no z-loss gradient.
        finite = ~jnp.isinf(lse)
        lse = jnp.where(finite, lse, jnp.zeros_like(lse))
        M = M + 2.0 * z * row_w * lse
    out = jnp.zeros_like(p)
    if not _is_zero(tx):
        t = tx.astype(work)
        dot = _tsum(jnp.where(p == 0, zero, p * t))
        out = out + M * _softmax_tangent(p, t)
        if z:
            dM = dM + 2.0 * z * row_w * jnp.where(finite, dot, jnp.zeros_like(dot))
    if not _is_zero(tc):
        dM = dM + _tsum(tc)
        out = out - tc
    if z and not _is_zero(tw):
        dM = dM + 2.0 * z * tw * lse
    out = out + jnp.where(p == 0, zero, dM * p)
    return g, jnp.where(live_row, out, zero)


_ce_rows.defjvp(_ce_rows_jvp, symbolic_zeros=True)
_ce_grad.defjvp(_ce_grad_jvp, symbolic_zeros=True)
_ce_rows_jit = jax.jit(_ce_rows, static_argnums=(3,))


def cross_entropy(
    logits: Any,
    labels: Any,
    axis: int | tuple[int, ...] | None = -1,
    where: Any = None,
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
    axis : int, tuple of ints or None, default -1
        The class axis.  With several axes the classes are the entries of
        ``logits``' slice along them, and an integer label is the flat
        (C-order) index into that slice with the axes in the order given, as
        ``jnp.ravel_multi_index`` forms it (``optax`` does the same); None
        means all axes.
    where : bool array, optional
        Broadcastable to ``logits``' shape; False classes take no part, as
        if their logit were ``-inf`` (no probability, no smoothing mass).
        A row with no class left takes no part at all: loss 0, zero
        gradient, and it is not counted by "mean".  To leave out whole rows
        pass ``where[..., None]``.  A label on (or probability mass at) a
        masked class of a row that takes part gives ``+inf``, as on a
        ``-inf`` logit.
    weight : jax.Array of shape (C,), optional
        Finite class weights (negative ones included, as in PyTorch); with
        several class axes also of the shape of the class slice.
    ignore_index : int, default -100
        Labels equal to it contribute no loss and no gradient.  With
        probability labels it must be negative (as in PyTorch).
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
    to ``-inf`` classes; fully masked rows have zero gradients.  Derivatives
    of every order, forward and reverse (see the module docstring).

    Examples
    --------
    >>> import jax, jax.numpy as jnp, softmaxkit.jax as smj
    >>> g = jax.grad(smj.cross_entropy)(jnp.array([[30.0, 0.0]]), jnp.array([0]))
    >>> float(g[0, 0])  # jax.nn / optax give 0
    -9.357...e-14
    """
    ignore_index, eps, z, reduction = validate.loss_options(ignore_index, label_smoothing, z_loss, reduction)
    x = _as_float(logits, "logits")
    labels = jnp.asarray(labels)
    if x.ndim == 0:
        raise ValueError("logits must have a class axis; got a 0-d array")
    axes = validate.axis(axis, x.ndim, allow_many=True)
    class_shape = tuple(x.shape[a] for a in axes)
    n_classes = math.prod(class_shape)
    if n_classes == 0:
        raise ValueError(f"logits has an empty class axis (axis={axis}, shape {tuple(x.shape)}); cross-entropy needs at least one class")
    valid = _where_mask(where, x.shape, "logits")
    x2, _ = _to_rows(x, axes)
    rest_shape = x2.shape[:-1]
    x2 = x2.reshape(-1, n_classes)
    live_row = None
    if valid is not None:
        valid2 = _to_rows(valid, axes)[0].reshape(-1, n_classes)
        x2 = jnp.where(valid2, x2, -_INF)
        live_row = jnp.any(valid2, axis=-1)
    work, _ = _work(x.dtype)
    w = None
    if weight is not None:
        w = _as_float(weight, "weight")
        if len(axes) > 1 and tuple(w.shape) == class_shape:
            w = w.reshape(-1)
        validate.class_weights(jnp, w, n_classes, _CHECKS)
        w = w.astype(work)
    if jnp.issubdtype(labels.dtype, jnp.integer):
        if len(axes) == 1:
            validate.target_shape("int", labels.shape, x.shape, axes[0], "labels", "logits", "axis")
        elif tuple(labels.shape) != rest_shape:
            raise ValueError(f"labels of class indices must have shape {rest_shape} (logits' shape without axes {axes}); got {tuple(labels.shape)}")
        validate.class_indices(jnp, labels, n_classes, ignore_index, "labels", _CHECKS)
        t = labels.reshape(-1)
        if live_row is not None:
            # A row with no class left is treated as ignored.
            t = jnp.where(live_row, t, ignore_index)
        denominator = num.mean_denominator(jnp, t, w, ignore_index, work, False)
    elif jnp.issubdtype(labels.dtype, jnp.floating):
        validate.target_shape("float", labels.shape, x.shape, axes[0], "labels", "logits", "axis")
        validate.probability_targets_ignore_index(ignore_index, labels.dtype, "labels")
        validate.probabilities(jnp, labels, "labels", _CHECKS)
        t = _to_rows(labels, axes)[0].reshape(-1, n_classes)
        denominator = num.mean_denominator(jnp, t, w, ignore_index, work, True, live=live_row)
    else:
        raise TypeError(f"labels must hold integer class indices or floating probabilities; got dtype {labels.dtype}")
    options = _CrossEntropyOptions(ignore_index, eps, z, reduction)
    if _native(x2) and (jnp.issubdtype(t.dtype, jnp.integer) or (t.dtype == x2.dtype and live_row is None)):
        out = _ce_native(x2, t, w, denominator, options)
    else:
        out = _ce_generic(x2, t, w, denominator, options, live_row)
    if reduction == "none":
        out = out.reshape(rest_shape)
    return out.astype(x.dtype)


class _CrossEntropyOptions(NamedTuple):
    """The static options of a cross-entropy call (hashable: a non-differentiable custom_jvp argument)."""

    ignore_index: int
    eps: float
    z: float
    reduction: str


def _ce_coefficients(x, t, w, o: _CrossEntropyOptions, live_row=None):
    """Class coefficients and row weights (working dtype) for rows ``x`` and
    targets ``t`` (indices, or probability rows with the rows a mask left
    without a class in ``live_row``)."""
    work, _ = _work(x.dtype)
    xw = jax.lax.stop_gradient(x).astype(work)
    if not jnp.issubdtype(t.dtype, jnp.floating):
        return num.class_coefficients(jnp, xw, o.eps, w, hot=num.one_hot(jnp, t, x.shape[-1], o.ignore_index, work))
    coef, row_w = num.class_coefficients(jnp, xw, o.eps, w, probs=t.astype(work))
    if live_row is not None:
        keep = live_row[:, None]
        coef = jnp.where(keep, coef, jnp.zeros_like(coef))
        row_w = jnp.where(keep, row_w, jnp.zeros_like(row_w))
    return coef, row_w


def _ce_generic(x, t, w, denominator, o: _CrossEntropyOptions, live_row=None):
    """The reduced loss by the ``jax.numpy`` formulas (``_ce_rows``)."""
    _, widened = _work(x.dtype)
    coef, row_w = _ce_coefficients(x, t, w, o, live_row)
    out, _ = num.reduce(jnp, _ce_rows_jit(x, coef, row_w, o.z), None, denominator, o.reduction, widened)
    return out


def _ce_generic_grad(x, t, w, denominator, o: _CrossEntropyOptions):
    """The gradient of :func:`_ce_generic` in ``x`` (working dtype), by the exact rule ``_ce_grad``."""
    coef, row_w = _ce_coefficients(x, t, w, o)
    return num.reduce_grad(jnp, _ce_grad(x, coef, row_w, o.z), denominator, o.reduction)


def _ce_native_pass(x, t, w, denominator, o: _CrossEntropyOptions, want_grad: bool):
    """``(reduced loss, its gradient in x or None)`` from one pass of the native kernel.

    The kernel divides the gradient by the reduction's divisor as it writes
    it, so the gradient of a "mean" or "sum" comes out in ``x``'s dtype
    rounded once.
    """
    work, widened = _work(x.dtype)
    divisor = num.gradient_divisor_array(jnp, denominator, o.reduction)
    rows, grad = native.cross_entropy(x, t, w, divisor, o.ignore_index, o.eps, o.z, work, want_grad)
    out, _ = num.reduce(jnp, rows, None, denominator, o.reduction, widened)
    return out, grad


def _ce_dot(g, tx, reduction):
    """``<g, tx>`` per row ("none") or in all (the reduced losses), in the working dtype."""
    work, _ = _work(tx.dtype)
    prod = g.astype(work) * tx.astype(work)
    return jnp.sum(prod, axis=-1) if reduction == "none" else jnp.sum(prod)


def _ce_other_tangents(x, t, w, denominator, o, tangents):
    """The tangent of the reduced loss from its arguments other than the
    logits (probability targets, class weights, the denominator), by
    forward mode through the ``jax.numpy`` formulas; None where all are zero."""
    rest = tangents[1:]
    if all(_is_zero(ta) for ta in rest):
        return None
    return _restricted_jvp(lambda *a: _ce_generic(x, *a, o), (t, w, denominator), rest)


@partial(jax.custom_jvp, nondiff_argnums=(4,))
def _ce_native(x, t, w, denominator, o: _CrossEntropyOptions):
    """The reduced loss of logit rows ``x`` (classes last) by the native kernel, loss only."""
    return _ce_native_pass(x, t, w, denominator, o, False)[0]


@partial(jax.custom_jvp, nondiff_argnums=(4,))
def _ce_native_and_grad(x, t, w, denominator, o: _CrossEntropyOptions):
    """``(reduced loss, its gradient in x)`` from one pass of the native kernel."""
    return _ce_native_pass(x, t, w, denominator, o, True)


def _ce_loss_tangent(out, g, o, primals, tangents):
    """The reduced loss's tangent: ``<g, t_x>`` with ``g`` the kernel's
    gradient (None where ``t_x`` is zero), plus the other arguments' tangents
    from the ``jax.numpy`` formulas."""
    tangent = jnp.zeros_like(out) if g is None else _ce_dot(g, tangents[0], o.reduction).astype(out.dtype)
    other = _ce_other_tangents(*primals, o, tangents)
    return tangent if other is None else tangent + other


def _ce_native_jvp(o, primals, tangents):
    # The gradient comes from the same kernel pass as the loss: reverse mode
    # transposes <g, t_x> to g * cotangent, which is g itself for a scalar
    # loss's cotangent of 1.
    if _is_zero(tangents[0]):
        out, g = _ce_native_pass(*primals, o, False)
    else:
        out, g = _ce_native_and_grad(*primals, o)
    return out, _ce_loss_tangent(out, g, o, primals, tangents)


def _restricted_jvp(f, primals, tangents):
    """``jax.jvp`` of ``f`` in the primals whose tangent is not a symbolic zero (the others held)."""
    live = [i for i, ta in enumerate(tangents) if not _is_zero(ta)]

    def g(*args):
        full = list(primals)
        for i, a in zip(live, args):
            full[i] = a
        return f(*full)

    return jax.jvp(g, tuple(primals[i] for i in live), tuple(tangents[i] for i in live))[1]


def _ce_native_and_grad_jvp(o, primals, tangents):
    # Second order: the loss's tangent as in _ce_native_jvp, the gradient's
    # from the exact rule of the jax.numpy gradient (_ce_grad_jvp).
    out, g = _ce_native_and_grad(*primals, o)
    d_out = _ce_loss_tangent(out, None if _is_zero(tangents[0]) else g, o, primals, tangents)
    d_g = _restricted_jvp(lambda *a: _ce_generic_grad(*a, o), primals, tangents)
    return (out, g), (d_out, d_g.astype(g.dtype))


_ce_native.defjvp(_ce_native_jvp, symbolic_zeros=True)
_ce_native_and_grad.defjvp(_ce_native_and_grad_jvp, symbolic_zeros=True)


# --- Kullback-Leibler divergence ---------------------------------------------


def _log_probs_and_probs(x, log_probs: bool):
    """``(log P, P)`` of a row (working dtype), from logits or log-probabilities."""
    work, _ = _work(x.dtype)
    if log_probs:
        lp = x.astype(work)
        return lp, jnp.exp(lp)
    return _softmax_last(x, 1.0, True, _native(x)).astype(work), _softmax_last(x, 1.0, False, _native(x)).astype(work)


@partial(jax.custom_jvp, nondiff_argnums=(2,))
def _kl_rows(p, q, log_probs: bool):
    """``KL(P || Q)`` per row (working dtype) from logits or log-probabilities."""
    work, widened = _work(p.dtype)
    return num.kl_rows(jnp, p.astype(work), q.astype(work), log_probs, widened)[..., 0]


@_kl_rows.defjvp
def _kl_rows_jvp(log_probs, primals, tangents):
    # With d_j = log P_j - log Q_j on P's support:
    #   logits:            dKL = <P (d - KL), t_p> + <Q - P, t_q>
    #   log-probabilities: dKL = <P (d + 1), t_p> - <P, t_q>
    # An infinite divergence stays infinite under any finite change of the
    # finite entries, so its row has a zero derivative; a fully masked P row
    # has divergence 0 whatever q is.
    p, q = primals
    tp, tq = tangents
    kl = _kl_rows(p, q, log_probs)
    work, _ = _work(p.dtype)
    lp, prob = _log_probs_and_probs(p, log_probs)
    lq, q_prob = _log_probs_and_probs(q, log_probs)
    zero = jnp.zeros_like(lp)
    keep = (lp != -_INF) & ~jnp.isinf(kl)[..., None]
    d = jnp.where(keep, lp - lq, zero)
    out = jnp.zeros_like(kl)
    if not _is_zero(tp):
        gp = prob * (d + 1.0) if log_probs else prob * (d - kl[..., None])
        out = out + _tsum(jnp.where(keep, gp, zero) * tp.astype(work))[..., 0]
    if not _is_zero(tq):
        if log_probs:
            gq = jnp.where(keep, -prob, zero)
        else:
            constant = jnp.isinf(kl)[..., None] | jnp.all(lp == -_INF, axis=-1, keepdims=True)
            gq = jnp.where(constant, zero, q_prob - prob)
        out = out + _tsum(gq * tq.astype(work))[..., 0]
    return kl, out


_kl_rows_jit = jax.jit(_kl_rows, static_argnums=(2,))


def kl_div(p: Any, q: Any, axis: int | tuple[int, ...] | None = -1, where: Any = None, *, log_probs: bool = False) -> Any:
    r"""Kullback-Leibler divergence ``KL(P || Q)`` between two rows of logits.

    .. math:: \mathrm{KL}(P\,\|\,Q) = \sum_j P_j (\log P_j - \log Q_j),
              \quad P = \mathrm{softmax}(p),\; Q = \mathrm{softmax}(q)

    Parameters
    ----------
    p, q : jax.Array of the same shape
        Logits (or, with ``log_probs=True``, log-probabilities) of the two
        distributions; the result has their promoted dtype.
    axis : int, tuple of ints or None, default -1
        The class axis (or axes; None means all).
    where : bool array, optional
        Broadcastable to ``p``'s shape; False classes take no part in either
        distribution (as if both logits were ``-inf``).
    log_probs : bool, default False
        Take ``p`` and ``q`` as normalised log-probabilities (such as
        :func:`log_softmax` output) instead of logits.

    Returns
    -------
    jax.Array with ``axis`` removed: one divergence per row.

    Notes
    -----
    As ``softmaxkit.kl_div``: both log-probabilities come from the exact
    log-softmax and the terms are summed with compensation; classes with
    ``P_j = 0`` contribute 0, also where ``Q_j = 0``; a class with
    ``P_j > 0 = Q_j`` gives ``+inf``; a fully masked ``P`` row gives 0.

    Derivatives (every order, forward and reverse): in the logits of ``P``,
    ``P (d - KL)`` with ``d = log P - log Q``; in the logits of ``Q``,
    ``Q - P``; for log-probabilities ``P (d + 1)`` and ``-P``.  A row whose
    divergence is ``+inf`` has a zero derivative (it stays ``+inf`` under
    any finite change of the finite entries), and so does a fully masked
    ``P`` row.

    Examples
    --------
    >>> import jax, jax.numpy as jnp, softmaxkit.jax as smj
    >>> p, q = jnp.array([0.0, 0.0, 5.0]), jnp.array([0.0, -jnp.inf, 1.0])
    >>> smj.kl_div(p, q)  # P > 0 = Q at the middle class
    Array(inf, dtype=float32)
    >>> m = jnp.array([True, False, True])  # leave the middle class out
    >>> smj.kl_div(p, q, where=m)
    Array(0.27977493, dtype=float32)
    >>> jax.grad(smj.kl_div, argnums=1)(p, q, where=m)  # Q - P
    Array([ 0.26224858,  0.        , -0.26224858], dtype=float32)
    """
    log_probs = validate.flag(log_probs, "log_probs")
    p = _as_float(p, "p")
    q = _as_float(q, "q")
    if tuple(q.shape) != tuple(p.shape):
        raise ValueError(f"q must have the shape of p {tuple(p.shape)}; got {tuple(q.shape)}")
    dtype = jnp.result_type(p.dtype, q.dtype)
    p, q = p.astype(dtype), q.astype(dtype)
    axes = validate.axis(axis, max(p.ndim, 1), allow_many=True)
    if p.ndim == 0:
        p, q = p.reshape(1), q.reshape(1)
    valid = _where_mask(where, p.shape, "p")
    if valid is not None:
        p, q = jnp.where(valid, p, -_INF), jnp.where(valid, q, -_INF)
    axes = tuple(sorted(axes))
    return _kl_rows_jit(_to_rows(p, axes)[0], _to_rows(q, axes)[0], log_probs).astype(dtype)


# --- NumPy-style entry points for the core API's dispatch ----------------------
