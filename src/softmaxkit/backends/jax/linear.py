"""Fused linear losses for JAX arrays: a ``jax.custom_vjp`` over a scan of token chunks.

The forward pass goes through the tokens a chunk of rows at a time
(``numerics.linear.chunk_rows``, padded to a whole number of chunks with
rows that take no part) inside ``jax.lax.scan``: per chunk one product forms
the logits, the head's per-row loss (a parameter, :class:`FusedPass`) gives
each row's loss and logit gradient, and two more products fold that
gradient into the gradients of the hidden states and the weight,
accumulated in the scan's carry.  The ``tokens x classes`` logits are never
held.  Reverse mode scales those gradients by the cotangent; for
``reduction="none"`` the forward pass keeps only its inputs and backward
runs the pass again with each token's cotangent folded into its row of the
logit gradient.

This module states that machinery once and gives the cross-entropy head
(:func:`linear_cross_entropy`: the cross-entropy rows of ``softmaxkit.jax``,
the native kernel through XLA FFI on CPU, the ``jax.numpy`` formulas
elsewhere); ``linear_distillation`` gives the distillation head.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp

from softmaxkit import numerics as num
from softmaxkit.backends.jax import native
from softmaxkit.backends.jax.functions import _CHECKS, _as_float, _work, traced
from softmaxkit.frontend import linear as _linear
from softmaxkit.frontend import validate
from softmaxkit.frontend.losses import cross_entropy_chunk
from softmaxkit.numerics import linear as lin


@dataclass(frozen=True)
class FusedPass:
    """The static part of a fused call (hashable: the custom_vjp's non-differentiable argument).

    ``rows`` tokens per chunk; logits formed in ``work``; ``rule`` is
    ``numerics.reduction``'s "mean", "sum" or "none"; ``softcap`` caps the
    logits before the loss (None: no cap).  ``head`` is the per-row loss, a
    hashable object with two methods:

    * ``head.keep(tokens)``: ``(N,)`` booleans, the tokens that take part
      (the others get loss 0 and zero gradients, and their hidden states are
      not read);
    * ``head(x, tokens, consts, denominator, rule, want_grad)``: for a
      chunk's logits ``x`` ``(k, V)`` (``work``, or its wide dtype with a
      soft cap), the chunk's rows of every per-token array in ``tokens``,
      the call's other arrays ``consts`` and the "mean" ``denominator``:
      ``(per-row losses, gradient of the reduced loss in x or None)``, the
      losses in ``x``'s wide dtype.
    """

    rows: int
    work: Any
    rule: str
    softcap: float | None
    head: Any


def _dot(a: Any, b: Any, work: Any) -> Any:
    # HIGHEST: float32 operands are multiplied in float32 on every platform
    # (the default lets GPUs and TPUs round them to bfloat16 or TF32).
    return jnp.dot(a, b, precision=jax.lax.Precision.HIGHEST, preferred_element_type=work)


def form_logits(h: Any, w: Any, b: Any, work: Any) -> Any:
    """A chunk's logits ``h @ w.T + b`` in ``work`` (``h`` ``(k, H)``, ``w`` ``(V, H)``, ``b`` ``(V,)`` in ``work`` or None)."""
    x = _dot(h, w.T, work)
    return x if b is None else x + b


@dataclass(frozen=True)
class _CrossEntropyHead:
    """The cross-entropy rows of ``softmaxkit.jax``: ``tokens`` the labels (class indices, or
    probabilities with a class axis), ``consts`` the class weights (wide dtype) or None."""

    ignore_index: int
    eps: float
    z: float
    use_native: bool

    def keep(self, t):
        if jnp.issubdtype(t.dtype, jnp.floating):
            return jnp.ones(t.shape[:1], bool)
        return t != self.ignore_index

    def __call__(self, x, t, class_w, denominator, rule, want_grad):
        ce_work, widened = _work(x.dtype)
        probabilities = jnp.issubdtype(t.dtype, jnp.floating)
        w = None if class_w is None else class_w.astype(ce_work)
        if self.use_native:
            labels = t.astype(x.dtype) if probabilities else t
            divisor = num.gradient_divisor_array(jnp, denominator, rule)
            return native.cross_entropy(x, labels, w, divisor, self.ignore_index, self.eps, self.z, ce_work, want_grad)
        labels = t.astype(ce_work) if probabilities else t
        loss, g = cross_entropy_chunk(jnp, x.astype(ce_work), labels, w, self.ignore_index, self.eps, self.z, widened, want_grad)
        return loss, (None if g is None else num.reduce_grad(jnp, g, denominator, rule))


def _pass(h, w, b, tokens, consts, denominator, p: FusedPass, want_grad: bool, row_scale=None):
    """``(loss, d_hidden, d_weight, d_bias)``: the reduced loss (per token for
    "none") in the wide dtype and, with ``want_grad``, its gradients (times
    ``row_scale`` per token when given) in the inputs' dtypes."""
    n, width = h.shape
    v = w.shape[0]
    work = p.work
    wide, _ = _work(work)
    _, widened = _work(work if p.softcap is None else wide)
    steps = -(-n // p.rows)
    pad = steps * p.rows - n

    def chunked(a):
        a = jnp.pad(a, ((0, pad),) + ((0, 0),) * (a.ndim - 1))
        return a.reshape((steps, p.rows) + a.shape[1:])

    xs = (
        chunked(h),
        jax.tree.map(chunked, tokens),
        chunked(p.head.keep(tokens)),
        None if row_scale is None else chunked(row_scale),
    )
    bias_w = None if b is None else b.astype(work)

    def step(carry, chunk):
        dw, db = carry
        hc, tc, kc, sc = chunk
        # Tokens that take no part (ignored, or padding) are not read: a NaN
        # in their hidden states reaches neither their loss nor the weight's
        # gradient.
        hc = jnp.where(kc[:, None], hc, jnp.zeros_like(hc))
        x = form_logits(hc, w, bias_w, work)
        slope = None
        if p.softcap is not None:
            x, slope = lin.softcap(jnp, x.astype(wide), p.softcap)
        loss, g = p.head(x, tc, consts, denominator, p.rule, want_grad)
        loss = jnp.where(kc, loss, jnp.zeros_like(loss))
        if g is None:
            return carry, (loss, None)
        if slope is not None:
            g = g * slope
        # Selected, whatever the head gives such rows (padding rows of
        # probability labels still carry label smoothing's mass).
        g = jnp.where(kc[:, None], g.astype(work), jnp.zeros((), work))
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
    loss, _ = num.reduce(jnp, loss.reshape(-1)[:n], None, denominator, p.rule, widened)
    if not want_grad:
        return loss, None, None, None
    dh = dh.reshape(-1, width)[:n]
    return loss, dh, dw.astype(w.dtype), (None if db is None else db.astype(b.dtype))


@partial(jax.custom_vjp, nondiff_argnums=(6,))
def _fused(h, w, b, tokens, consts, denominator, p: FusedPass):
    """The reduced loss (per token for "none") of rows ``h`` (``(N, H)``), in the wide dtype."""
    return _pass(h, w, b, tokens, consts, denominator, p, False)[0]


def _fused_fwd(h, w, b, tokens, consts, denominator, p: FusedPass):
    if p.rule == "none":
        loss = _pass(h, w, b, tokens, consts, denominator, p, False)[0]
        return loss, (h, w, b, tokens, consts, denominator)
    loss, dh, dw, db = _pass(h, w, b, tokens, consts, denominator, p, True)
    return loss, (dh, dw, db)


def _scaled(g, cotangent):
    """``g * cotangent`` rounded once to ``g``'s dtype (exact for a cotangent of 1)."""
    return None if g is None else (g.astype(cotangent.dtype) * cotangent).astype(g.dtype)


def _fused_bwd(p: FusedPass, residuals, cotangent):
    if p.rule == "none":
        h, w, b, tokens, consts, denominator = residuals
        _, dh, dw, db = _pass(h, w, b, tokens, consts, denominator, p, True, row_scale=cotangent)
    else:
        dh, dw, db = (_scaled(g, cotangent) for g in residuals)
    # The per-token arrays, the other arrays and the denominator are constants of the pass.
    return dh, dw, db, None, None, None


_fused.defvjp(_fused_fwd, _fused_bwd)
# fused(h, w, b, tokens, consts, denominator, p): the loss of the head p.head
# over hidden states h (N, H) and the weight w (V, H) (bias b (V,) or None),
# reduced by p.rule (per token for "none"), in the wide dtype of p.work;
# differentiable in reverse mode in h, w and b.  tokens is a pytree of
# per-token arrays (first axis N), consts a pytree of other arrays.
fused = jax.jit(_fused, static_argnums=(6,))


def chunk_size(n: int, v: int, width: int, dtype: Any, work: Any, wide: Any, bias: bool, capped: bool, loss_bytes: int = 0) -> int:
    """Tokens per chunk, by ``numerics.linear.chunk_rows``'s peak-memory rule.

    The pass holds the hidden states' gradient, the weight's accumulator in
    ``work`` (beside a 16-bit weight's gradient: the rule's extra
    accumulator) and the bias's in ``wide``; a chunk holds its logits and
    their gradient in ``work``, with a soft cap the capped logits, their
    slope and their gradient in ``wide``, and ``loss_bytes`` per logit for
    the head's own temporaries.
    """
    item, work_size, wide_size = jnp.dtype(dtype).itemsize, jnp.dtype(work).itemsize, jnp.dtype(wide).itemsize
    grads = lin.grad_bytes(n, v, width, item, bias)
    accumulator = v * width * work_size if item < work_size else 0
    held = n * width * item + v * width * work_size + (v * wide_size if bias else 0)
    per_logit = 2 * work_size + (3 * wide_size if capped else 0) + loss_bytes
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
    ignore_index, eps, z, reduction = validate.loss_options(ignore_index, label_smoothing, z_loss, reduction)
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
    probabilities = _linear.check_targets(jnp, t, lead, v, ignore_index, "labels", _CHECKS)
    class_w = None
    if weight is not None:
        class_w = _as_float(weight, "weight")
        validate.class_weights(jnp, class_w, v, _CHECKS)
        class_w = class_w.astype(wide)
    t2 = t.reshape(n, v) if probabilities else t.reshape(n)
    denominator = num.mean_denominator(jnp, t2, class_w, ignore_index, wide, probabilities)
    rule, denominator = lin.normalized(reduction, denominator, norm)
    rows = chunk_size(n, v, width, out_dtype, work, wide, b_lin is not None, cap is not None)
    p = FusedPass(rows, work, rule, cap, _CrossEntropyHead(ignore_index, eps, z, native.active()))
    h2 = h.astype(out_dtype).reshape(n, width)
    b2 = None if b_lin is None else b_lin.astype(out_dtype)
    loss = fused(h2, w_lin.astype(out_dtype), b2, t2, class_w, denominator, p)
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
