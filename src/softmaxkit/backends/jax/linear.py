"""Fused linear cross-entropy for JAX arrays: a ``jax.custom_vjp`` over a scan of token chunks.

The forward pass goes through the tokens a chunk of rows at a time
(``numerics.linear.chunk_rows``, padded with ignored rows to a whole number
of chunks) inside ``jax.lax.scan``: per chunk one product forms the logits,
the cross-entropy rows of ``softmaxkit.jax`` (the native kernel through XLA
FFI on CPU, the ``jax.numpy`` formulas elsewhere) give each row's loss and
logit gradient, and two more products fold that gradient into the gradients
of the hidden states and the weight, accumulated in the scan's carry.  The
``tokens x classes`` logits are never held.  Reverse mode scales those
gradients by the cotangent; for ``reduction="none"`` the forward pass keeps
only its inputs and backward runs the pass again with each token's cotangent
folded into its row of the logit gradient.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from softmaxkit import numerics as num
from softmaxkit.backends.jax import native
from softmaxkit.backends.jax.functions import _CHECKS, _as_float, _work, traced
from softmaxkit.frontend import linear as _linear
from softmaxkit.frontend import validate
from softmaxkit.frontend.losses import cross_entropy_chunk
from softmaxkit.numerics import linear as lin


class _Options(NamedTuple):
    """The static options of a call (hashable: a non-differentiable argument)."""

    ignore_index: int
    eps: float
    z: float
    softcap: float | None
    reduction: str
    rule: str
    rows: int
    use_native: bool


def _dot(a: Any, b: Any, work: Any) -> Any:
    # HIGHEST: float32 operands are multiplied in float32 on every platform
    # (the default lets GPUs and TPUs round them to bfloat16 or TF32).
    return jnp.dot(a, b, precision=jax.lax.Precision.HIGHEST, preferred_element_type=work)


def _row_loss(x, t, class_w, denominator, divisor, o: _Options, want_grad: bool):
    """``(per-row losses, gradient of the reduced loss in x or None)`` of a chunk of logits ``x``."""
    ce_work, widened = _work(x.dtype)
    probabilities = jnp.issubdtype(t.dtype, jnp.floating)
    w = None if class_w is None else class_w.astype(ce_work)
    if o.use_native:
        labels = t.astype(x.dtype) if probabilities else t
        return native.cross_entropy(x, labels, w, divisor, o.ignore_index, o.eps, o.z, ce_work, want_grad)
    labels = t.astype(ce_work) if probabilities else t
    loss, g = cross_entropy_chunk(jnp, x.astype(ce_work), labels, w, o.ignore_index, o.eps, o.z, widened, want_grad)
    return loss, (None if g is None else num.reduce_grad(jnp, g, denominator, o.rule))


def _pass(h, w, b, t, class_w, denominator, o: _Options, want_grad: bool, row_scale=None):
    """``(loss, d_hidden, d_weight, d_bias)``: the reduced loss (per token for
    "none") in the wide dtype and, with ``want_grad``, its gradients (times
    ``row_scale`` per token when given) in the inputs' dtypes."""
    n, width = h.shape
    v = w.shape[0]
    work = jnp.float64 if h.dtype == jnp.float64 else jnp.float32
    wide, _ = _work(work)
    logit_dtype = work if o.softcap is None else wide
    _, widened = _work(logit_dtype)
    probabilities = jnp.issubdtype(t.dtype, jnp.floating)
    steps = -(-n // o.rows)
    pad = steps * o.rows - n
    tail = ((0, 0),) * (t.ndim - 1)
    t_pad = jnp.pad(t, ((0, pad),) + tail, constant_values=0 if probabilities else o.ignore_index)
    keep = jnp.arange(n + pad) < n if probabilities else t_pad != o.ignore_index
    xs = (
        jnp.pad(h, ((0, pad), (0, 0))).reshape(steps, o.rows, width),
        t_pad.reshape((steps, o.rows) + t.shape[1:]),
        keep.reshape(steps, o.rows),
        None if row_scale is None else jnp.pad(row_scale, (0, pad)).reshape(steps, o.rows),
    )
    bias_w = None if b is None else b.astype(work)
    divisor = num.gradient_divisor_array(jnp, denominator, o.rule)
    w_t = w.T

    def step(carry, chunk):
        dw, db = carry
        hc, tc, kc, sc = chunk
        # Ignored tokens take no part: a NaN in their hidden states reaches
        # neither their loss nor the weight's gradient.
        hc = jnp.where(kc[:, None], hc, jnp.zeros_like(hc))
        x = _dot(hc, w_t, work)
        if bias_w is not None:
            x = x + bias_w
        slope = None
        if o.softcap is not None:
            x, slope = lin.softcap(jnp, x.astype(wide), o.softcap)
        loss, g = _row_loss(x, tc, class_w, denominator, divisor, o, want_grad)
        loss = jnp.where(kc, loss, jnp.zeros_like(loss))
        if g is None:
            return carry, (loss, None)
        if slope is not None:
            g = g * slope
        g = g.astype(work)
        if probabilities and pad:
            # Padding rows of probability targets still carry label smoothing's mass.
            g = jnp.where(kc[:, None], g, jnp.zeros_like(g))
        if sc is not None:
            g = g * sc.astype(work)[:, None]
        dh = _dot(g, w, work).astype(h.dtype)
        dw = dw + _dot(g.T, hc, work)
        # A product, not jnp.sum: its order of summation does not change with
        # the fusions around it (under an enclosing jax.jit, say).
        db = None if db is None else db + _dot(jnp.ones((1, g.shape[0]), work), g, wide)[0]
        return (dw, db), (loss, dh)

    init = (
        jnp.zeros((v, width), work) if want_grad else None,
        jnp.zeros((v,), wide) if want_grad and b is not None else None,
    )
    (dw, db), (loss, dh) = jax.lax.scan(step, init, xs)
    loss, _ = num.reduce(jnp, loss.reshape(-1)[:n], None, denominator, o.rule, widened)
    if not want_grad:
        return loss, None, None, None
    dh = dh.reshape(-1, width)[:n]
    return loss, dh, dw.astype(w.dtype), (None if db is None else db.astype(b.dtype))


@partial(jax.custom_vjp, nondiff_argnums=(6,))
def _fused(h, w, b, t, class_w, denominator, o: _Options):
    """The reduced loss (per token for "none") of rows ``h`` (``(N, H)``), in the wide dtype."""
    return _pass(h, w, b, t, class_w, denominator, o, False)[0]


def _fused_fwd(h, w, b, t, class_w, denominator, o: _Options):
    if o.reduction == "none":
        loss = _pass(h, w, b, t, class_w, denominator, o, False)[0]
        return loss, (h, w, b, t, class_w, denominator)
    loss, dh, dw, db = _pass(h, w, b, t, class_w, denominator, o, True)
    return loss, (dh, dw, db)


def _scaled(g, cotangent):
    """``g * cotangent`` rounded once to ``g``'s dtype (exact for a cotangent of 1)."""
    return None if g is None else (g.astype(cotangent.dtype) * cotangent).astype(g.dtype)


def _fused_bwd(o: _Options, residuals, cotangent):
    if o.reduction == "none":
        h, w, b, t, class_w, denominator = residuals
        _, dh, dw, db = _pass(h, w, b, t, class_w, denominator, o, True, row_scale=cotangent)
    else:
        dh, dw, db = (_scaled(g, cotangent) for g in residuals)
    return dh, dw, db, None, None, None


_fused.defvjp(_fused_fwd, _fused_bwd)
_fused_jit = jax.jit(_fused, static_argnums=(6,))


def _chunk_rows(n: int, v: int, width: int, dtype: Any, work: Any, wide: Any, bias: bool, capped: bool) -> int:
    """Tokens per chunk, by ``numerics.linear.chunk_rows``'s peak-memory rule.

    The pass holds the hidden states' gradient, the weight's accumulator in
    ``work`` (beside a 16-bit weight's gradient: the rule's extra
    accumulator) and the bias's in ``wide``; a chunk holds its logits and
    their gradient in ``work``, and with a soft cap the capped logits, their
    slope and their gradient in ``wide``.
    """
    item, work_size, wide_size = jnp.dtype(dtype).itemsize, jnp.dtype(work).itemsize, jnp.dtype(wide).itemsize
    grads = lin.grad_bytes(n, v, width, item, bias)
    accumulator = v * width * work_size if item < work_size else 0
    held = n * width * item + v * width * work_size + (v * wide_size if bias else 0)
    per_logit = 2 * work_size + (3 * wide_size if capped else 0)
    return lin.chunk_rows(n, v, grads, accumulator, held, per_logit)


def _normalizer(normalizer: Any, reduction: str, dtype: Any) -> Any:
    """A caller's normaliser as a 0-d array (read and checked on the host unless traced), or None."""
    if normalizer is None or not traced(normalizer):
        value = _linear.normalizer_value(normalizer, reduction)
        return None if value is None else jnp.asarray(value, dtype)
    if reduction != "sum":
        raise ValueError(f"normalizer divides a sum: it needs reduction='sum'; got reduction={reduction!r}")
    if tuple(normalizer.shape) != ():
        raise ValueError(f"normalizer must be a single number; got an array of shape {tuple(normalizer.shape)}")
    return normalizer.astype(dtype)


def linear_cross_entropy(
    hidden: Any,
    linear_weight: Any,
    labels: Any,
    *,
    linear_bias: Any = None,
    weight: Any = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    reduction: str = "mean",
    normalizer: Any = None,
) -> Any:
    r"""Cross-entropy of a linear layer's logits, without ever holding them.

    .. math:: \ell = \operatorname{cross\_entropy}\bigl(\operatorname{cap}(h W^\top + b),\; t\bigr),
              \qquad \operatorname{cap}(z) = c \tanh(z / c)

    the loss of a language model's head over ``N`` tokens and ``V`` classes,
    computed a chunk of tokens at a time: the ``N x V`` logits are never
    formed.

    Parameters
    ----------
    hidden : jax.Array of shape (..., H)
        Hidden states, one row per token.
    linear_weight : jax.Array of shape (V, H)
        The head's weight (``torch.nn.Linear``'s layout; the transpose of a
        Flax ``Dense`` kernel).
    labels : jax.Array
        Integer class indices of shape ``hidden.shape[:-1]``, or
        probabilities of shape ``hidden.shape[:-1] + (V,)``.
    linear_bias : jax.Array of shape (V,), optional
        Added to the logits; a ``-inf`` entry masks its class.
    weight, ignore_index, label_smoothing, z_loss
        As in :func:`softmaxkit.jax.cross_entropy`.
    softcap : float > 0, optional
        Gemma-2's final-logit soft cap ``c``, applied before the loss, with
        its exact derivative ``sech^2(z / c)``; infinite logits stay
        infinite.
    reduction : {"mean", "sum", "none"}, default "mean"
        As in :func:`softmaxkit.jax.cross_entropy`.
    normalizer : number >= 0 or 0-d array, optional
        With ``reduction="sum"``: divide the sum (and its gradients) by this
        count, for gradient accumulation over several calls (Hugging Face's
        ``num_items_in_batch``); 0 gives 0 and zero gradients.  It may be
        traced (computed inside ``jax.jit``); its value is checked only when
        concrete.

    Returns
    -------
    jax.Array: a scalar, or one loss per token (``hidden.shape[:-1]``) for
    "none"; dtype ``jnp.result_type(hidden, linear_weight, linear_bias)``.
    Differentiable (reverse mode) in ``hidden``, ``linear_weight`` and
    ``linear_bias``; not in ``labels`` or ``weight`` (their cotangents are
    zero).

    Notes
    -----
    Algorithm: ``jax.lax.scan`` goes through the tokens in chunks sized by
    the shapes alone, by the peak-memory rule of the NumPy function (about
    1.25 times the gradients beyond the inputs, plus a float32 accumulator
    for a 16-bit weight; XLA's buffer assignment has the last word), the
    last chunk padded with ignored rows; per chunk, one product forms the
    logits, the
    cross-entropy rows write each row's loss and logit gradient (the native
    kernel through XLA FFI on CPU, the ``jax.numpy`` formulas elsewhere; see
    ``softmaxkit.jax``), and two more products fold that gradient into
    ``d_hidden`` and ``d_linear_weight``.  Ignored tokens get loss 0 and
    zero gradients (their hidden states are not read), but still pass
    through the products: shapes are static under ``jax.jit``.

    Derivatives: a ``jax.custom_vjp``.  The forward pass computes the
    gradients of all three arguments with the loss and keeps them (not the
    logits) for reverse mode, which multiplies them by the cotangent (one
    more rounding unless it is 1).  With ``reduction="none"`` the forward
    pass keeps only its inputs and reverse mode runs the pass again with
    each token's cotangent folded into its row of the logit gradient.
    Forward mode (``jax.jvp``, ``jax.jacfwd``) raises: custom_vjp functions
    have no tangent rule.  Works under ``jax.jit``, ``jax.grad``,
    ``jax.value_and_grad`` and ``jax.vmap``; under ``vmap`` each batch
    element holds its own chunk buffers and gradient accumulators.

    Accuracy: the logits are formed in float32 (float64 for float64 input;
    16-bit inputs are widened, never rounded back; float32 products are
    requested at ``Precision.HIGHEST``) and, with a soft cap, capped in
    float64 when ``jax_enable_x64`` is on, else in float32.  The loss and
    the logit gradient are then those of :func:`softmaxkit.jax.cross_entropy`
    on these logits, within its contract.  The other gradients are products
    of that gradient, accumulated across chunks in float32 or wider (the
    bias gradient in float64 with x64), and rounded once to the inputs'
    dtypes.  Chunk sizes depend on the shapes alone, so results are the
    same, bit for bit, from run to run.

    Edge behaviour is :func:`softmaxkit.jax.cross_entropy`'s: every target
    ignored gives 0 and zero gradients; a ``-inf`` bias masks a class; a
    target on a masked class gives ``+inf``.  Option and shape checks always
    run; label, weight and probability values are checked on concrete
    arrays and skipped on tracers.

    Examples
    --------
    >>> import jax, jax.numpy as jnp, softmaxkit.jax as smj
    >>> h = jnp.array([[1.0, 0.0], [0.0, 2.0]])
    >>> w = jnp.array([[30.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    >>> smj.linear_cross_entropy(h, w, jnp.array([0, 1]))
    Array(0.11977238, dtype=float32)
    >>> dh = jax.grad(smj.linear_cross_entropy)(h, w, jnp.array([0, 1]))
    >>> float(dh[0, 0])  # a confident token: naive float32 code, computing p_t - 1, gives -1.7e-14
    -1.937...e-12
    """
    reduction = validate.reduction(reduction)
    eps = validate.in_unit_interval(label_smoothing, "label_smoothing")
    z = validate.non_negative(z_loss, "z_loss")
    ignore_index = validate.integer(ignore_index, "ignore_index")
    cap = _linear.softcap_value(softcap)
    h = _as_float(hidden, "hidden")
    w_lin = _as_float(linear_weight, "linear_weight")
    b_lin = None if linear_bias is None else _as_float(linear_bias, "linear_bias")
    v, width = _linear.check_shapes(
        tuple(h.shape), tuple(w_lin.shape), None if b_lin is None else tuple(b_lin.shape), ("hidden", "linear_weight", "linear_bias")
    )
    out_dtype = jnp.result_type(h.dtype, w_lin.dtype, *(() if b_lin is None else (b_lin.dtype,)))
    work = jnp.float64 if out_dtype == jnp.float64 else jnp.float32
    wide, _ = _work(work)
    norm = _normalizer(normalizer, reduction, wide)
    lead = tuple(h.shape[:-1])
    n = math.prod(lead)
    t = jnp.asarray(labels)
    kind = validate.target_kind(jnp, t, "labels")
    class_w = None
    if weight is not None:
        class_w = _as_float(weight, "weight")
        validate.class_weights(jnp, class_w, v, _CHECKS)
        class_w = class_w.astype(wide)
    if kind == "int":
        if tuple(t.shape) != lead:
            raise ValueError(f"labels of class indices must have shape {lead} (hidden's shape without its last axis); got {tuple(t.shape)}")
        validate.class_indices(jnp, t, v, ignore_index, "labels", _CHECKS)
        t2 = t.reshape(n)
    else:
        if tuple(t.shape) != lead + (v,):
            raise ValueError(f"labels of probabilities must have shape {lead + (v,)}; got {tuple(t.shape)}")
        validate.probability_targets_ignore_index(ignore_index, t.dtype, "labels")
        validate.probabilities(jnp, t, "labels", _CHECKS)
        t2 = t.reshape(n, v)
    denominator = num.mean_denominator(jnp, t2, class_w, ignore_index, wide, kind != "int")
    rule, denominator = lin.normalized(reduction, denominator, norm)
    rows = _chunk_rows(n, v, width, out_dtype, work, wide, b_lin is not None, cap is not None)
    o = _Options(ignore_index, eps, z, cap, reduction, rule, rows, native.active())
    h2 = h.astype(out_dtype).reshape(n, width)
    b2 = None if b_lin is None else b_lin.astype(out_dtype)
    loss = _fused_jit(h2, w_lin.astype(out_dtype), b2, t2, class_w, denominator, o)
    loss = loss.reshape(lead) if reduction == "none" else loss
    return loss.astype(out_dtype)


def entry(hidden, linear_weight, targets, *, linear_bias, weight, ignore_index, label_smoothing, z_loss, softcap, reduction, normalizer, return_grad):
    """``softmaxkit.linear_cross_entropy`` on JAX arrays, with ``return_grad`` the gradients
    ``(d_hidden, d_linear_weight, d_linear_bias)`` of the loss (of ``loss.sum()`` for "none";
    ``d_linear_bias`` None without a bias)."""
    return_grad = validate.flag(return_grad, "return_grad")

    def loss_fn(h, w, b):
        return linear_cross_entropy(
            h, w, targets, linear_bias=b, weight=weight, ignore_index=ignore_index, label_smoothing=label_smoothing,
            z_loss=z_loss, softcap=softcap, reduction=reduction, normalizer=normalizer,
        )

    h = _as_float(hidden, "hidden")
    w = _as_float(linear_weight, "linear_weight")
    b = None if linear_bias is None else _as_float(linear_bias, "linear_bias")
    if not return_grad:
        return loss_fn(h, w, b)
    loss, vjp = jax.vjp(loss_fn, h, w, b)
    return loss, vjp(jnp.ones_like(loss))
