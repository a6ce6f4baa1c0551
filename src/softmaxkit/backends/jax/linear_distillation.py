"""Fused linear distillation for JAX arrays: two linear heads, never holding either's logits.

The student's head goes through the fused pass of ``backends.jax.linear``
(its chunk loop, padding, custom_vjp and "none" recompute); the per-row loss
here forms the teacher's logits for the same chunk of tokens (the same
``form_logits``) and applies ``numerics.distillation``'s row formulas with
``xp = jax.numpy``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from softmaxkit import numerics as num
from softmaxkit.backends.jax.functions import _CHECKS, _as_float, _work
from softmaxkit.backends.jax.linear import FusedPass, chunk_size, form_logits, fused
from softmaxkit.frontend import linear as _linear
from softmaxkit.frontend import validate
from softmaxkit.frontend.distillation import Options, mean_reduction, options
from softmaxkit.frontend.linear_distillation import (
    DISTILLATION_BYTES,
    check_teacher_shapes,
)
from softmaxkit.numerics.distillation import distillation_rows


@dataclass(frozen=True)
class _DistillationHead:
    """``numerics.distillation``'s rows: ``tokens`` is ``(labels or None, teacher hidden states)``,
    ``consts`` ``(teacher weight, teacher bias in the working dtype or None)``."""

    opts: Options

    def keep(self, tokens):
        t, ht = tokens
        return jnp.ones(ht.shape[:1], bool) if t is None else t != self.opts.ignore_index

    def __call__(self, x, tokens, consts, denominator, rule, want_grad):
        t, ht = tokens
        wt, bt = consts
        o = self.opts
        teacher = form_logits(ht, wt, bt, x.dtype)
        wide, widened = _work(x.dtype)
        hot = None if t is None else num.one_hot(jnp, t, x.shape[1], o.ignore_index, wide)
        loss, gs, _ = distillation_rows(
            jnp, x.astype(wide), teacher.astype(wide), hot, divergence=o.divergence, beta=o.beta, temperature=o.temperature,
            scale_t2=o.scale_t2, hard_label_weight=o.hard_label_weight, widened=widened, want_grad=want_grad,
        )
        # JSD's rows give their gradients whether asked for or not.
        return loss, (num.reduce_grad(jnp, gs, denominator, rule) if want_grad else None)


def linear_distillation_loss(
    student_hidden: Any,
    student_weight: Any,
    teacher_hidden: Any,
    teacher_weight: Any,
    *,
    student_bias: Any = None,
    teacher_bias: Any = None,
    labels: Any = None,
    divergence: str = "forward_kl",
    beta: float = 0.5,
    temperature: float = 1.0,
    scale_by_temperature_squared: bool = False,
    ignore_index: int = -100,
    hard_label_weight: float = 0.0,
    reduction: str = "batchmean",
) -> Any:
    r""":func:`softmaxkit.jax.distillation_loss` of two linear heads' logits, without ever holding them.

    .. math:: \ell = \operatorname{distillation\_loss}\bigl(h_s W_s^\top + b_s,\; h_t W_t^\top + b_t\bigr)

    with ``p = softmax((h_s W_s^T + b_s) / T)``, ``q = softmax((h_t W_t^T +
    b_t) / T)`` and ``f = T**2`` when ``scale_by_temperature_squared``, each
    token's loss is ``f Div(p, q) + w_h CE(h_s W_s^T + b_s, y)``, ``Div``
    being ``KL(q || p)`` ("forward_kl"), ``KL(p || q)`` ("reverse_kl") or
    ``beta KL(q || m) + (1 - beta) KL(p || m)``, ``m = beta q + (1 - beta) p``
    ("jsd").  It is computed a chunk of tokens at a time: neither ``N x V``
    matrix of logits is formed.

    Parameters
    ----------
    student_hidden : jax.Array of shape (..., H_s)
        The student's hidden states, one row per token.
    student_weight : jax.Array of shape (V, H_s)
        The student's head (``torch.nn.Linear``'s layout; the transpose of a
        Flax ``Dense`` kernel).
    teacher_hidden : jax.Array of shape (..., H_t)
        The teacher's hidden states for the same tokens (same leading shape).
    teacher_weight : jax.Array of shape (V, H_t)
        The teacher's head, over the same ``V`` classes.
    student_bias, teacher_bias : jax.Array of shape (V,), optional
    labels : integer jax.Array of ``student_hidden``'s leading shape, optional
        Hard labels: tokens equal to ``ignore_index`` take no part at all
        (no divergence, no cross-entropy, not counted by "batchmean"), and
        with ``hard_label_weight > 0`` the student's cross-entropy at
        temperature 1 is added.
    divergence : {"forward_kl", "reverse_kl", "jsd"}, default "forward_kl"
    beta : float in (0, 1), default 0.5
        JSD's mixing weight; ignored by the KL divergences.
    temperature : float > 0, default 1
    scale_by_temperature_squared : bool, default False
    ignore_index : int, default -100
    hard_label_weight : float >= 0, default 0
        Needs ``labels``.
    reduction : {"batchmean", "sum", "none"}, default "batchmean"
        "batchmean" divides the sum by the number of tokens (of non-ignored
        tokens with ``labels``).

    Returns
    -------
    jax.Array: a scalar, or one loss per token (``student_hidden.shape[:-1]``)
    for "none"; dtype ``jnp.result_type(student_hidden, student_weight,
    student_bias)``.  Differentiable (reverse mode) in ``student_hidden``,
    ``student_weight`` and ``student_bias``.  The teacher is a constant: its
    arguments pass through ``jax.lax.stop_gradient``, so their gradients are
    zero.

    Notes
    -----
    Per chunk of tokens (sized by the peak-memory rule of
    :func:`softmaxkit.jax.linear_cross_entropy`, counting the row formulas'
    temporaries) both heads' logits are formed the same way, in float32
    (float64 when an input is float64; 16-bit inputs are widened, float32
    products requested at ``Precision.HIGHEST``).  The row formulas are
    :func:`softmaxkit.jax.distillation_loss`'s and give each token's loss
    and the student's logit gradient within that function's contract; two
    more products fold that gradient into the student's hidden-state and
    weight gradients, accumulated in float32 or wider and rounded once.
    The derivative is the fused pass's ``jax.custom_vjp``: the gradients are
    computed with the loss (recomputed per token for "none") and scaled by
    the cotangent.  Works under ``jax.jit``, ``jax.grad``,
    ``jax.value_and_grad`` and ``jax.vmap``; forward mode (``jax.jvp``)
    raises, as custom_vjp functions have no tangent rule.

    Edge behaviour is :func:`softmaxkit.jax.distillation_loss`'s: every
    token ignored gives 0 and zero gradients; ignored tokens' hidden states
    are not read (a NaN there reaches nothing); teacher mass on a class the
    student masks (a ``-inf`` bias) makes a KL ``+inf`` with zero gradients
    on that token.  Option and shape checks always run; label values are
    checked on concrete arrays and skipped on tracers.

    Examples
    --------
    >>> import jax, jax.numpy as jnp, softmaxkit.jax as smj
    >>> hs = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    >>> ws = jnp.array([[2.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
    >>> wt = jnp.array([[3.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    >>> loss = smj.linear_distillation_loss(hs, ws, hs, wt, temperature=2.0)
    >>> round(float(loss), 5)
    0.02966
    >>> jax.grad(smj.linear_distillation_loss, argnums=3)(hs, ws, hs, wt)  # the teacher is a constant
    Array([[0., 0.],
           [0., 0.],
           [0., 0.]], dtype=float32)
    """
    o = options(divergence, beta, temperature, scale_by_temperature_squared, labels is not None, ignore_index, hard_label_weight, reduction, "labels")
    hs = _as_float(student_hidden, "student_hidden")
    ws = _as_float(student_weight, "student_weight")
    bs = None if student_bias is None else _as_float(student_bias, "student_bias")
    ht = jax.lax.stop_gradient(_as_float(teacher_hidden, "teacher_hidden"))
    wt = jax.lax.stop_gradient(_as_float(teacher_weight, "teacher_weight"))
    bt = None if teacher_bias is None else jax.lax.stop_gradient(_as_float(teacher_bias, "teacher_bias"))
    v, width = _linear.check_shapes(tuple(hs.shape), tuple(ws.shape), None if bs is None else tuple(bs.shape), ("student_hidden", "student_weight", "student_bias"))
    check_teacher_shapes(tuple(hs.shape), tuple(ht.shape), v, tuple(wt.shape), None if bt is None else tuple(bt.shape), ("teacher_hidden", "teacher_weight", "teacher_bias"))
    out_dtype = jnp.result_type(hs.dtype, ws.dtype, *(() if bs is None else (bs.dtype,)))
    teacher_dtype = jnp.result_type(ht.dtype, wt.dtype, *(() if bt is None else (bt.dtype,)))
    work = jnp.float64 if jnp.result_type(out_dtype, teacher_dtype) == jnp.float64 else jnp.float32
    wide, _ = _work(work)
    lead = tuple(hs.shape[:-1])
    n = math.prod(lead)
    ht2 = ht.astype(teacher_dtype).reshape(n, ht.shape[-1])
    t2 = None
    if labels is not None:
        t = jnp.asarray(labels)
        if validate.target_kind(jnp, t, "labels") != "int" or tuple(t.shape) != lead:
            raise ValueError(
                f"labels must be integer class indices of shape {lead} (student_hidden's shape without its last axis); "
                f"got dtype {t.dtype}, shape {tuple(t.shape)}"
            )
        validate.class_indices(jnp, t, v, o.ignore_index, "labels", _CHECKS)
        t2 = t.reshape(n)
    denominator = num.mean_denominator(jnp, ht2 if t2 is None else t2, None, o.ignore_index, wide, t2 is None)
    # DISTILLATION_BYTES counts the formulas' temporaries in float64; they are in ``wide`` here.
    loss_bytes = DISTILLATION_BYTES * jnp.dtype(wide).itemsize // 8
    rows = chunk_size(n, v, width, out_dtype, work, wide, bs is not None, False, loss_bytes)
    p = FusedPass(rows, work, mean_reduction(o.reduction), None, _DistillationHead(o))
    consts = (wt.astype(teacher_dtype), None if bt is None else bt.astype(work))
    loss = fused(
        hs.astype(out_dtype).reshape(n, width), ws.astype(out_dtype), None if bs is None else bs.astype(out_dtype),
        (t2, ht2), consts, denominator, p,
    )
    loss = loss.reshape(lead) if o.reduction == "none" else loss
    return loss.astype(out_dtype)


def entry(student_hidden, student_weight, teacher_hidden, teacher_weight, *, student_bias, teacher_bias, targets, divergence, beta, temperature, scale_by_temperature_squared, ignore_index, hard_label_weight, reduction, return_grad):
    """``softmaxkit.linear_distillation_loss`` on JAX arrays, with ``return_grad`` the student's
    gradients ``(d_student_hidden, d_student_weight, d_student_bias)`` of the loss (of
    ``loss.sum()`` for "none"; ``d_student_bias`` None without a bias)."""
    return_grad = validate.flag(return_grad, "return_grad")

    def loss_fn(h, w, b):
        return linear_distillation_loss(
            h, w, teacher_hidden, teacher_weight, student_bias=b, teacher_bias=teacher_bias, labels=targets,
            divergence=divergence, beta=beta, temperature=temperature, scale_by_temperature_squared=scale_by_temperature_squared,
            ignore_index=ignore_index, hard_label_weight=hard_label_weight, reduction=reduction,
        )

    h = _as_float(student_hidden, "student_hidden")
    w = _as_float(student_weight, "student_weight")
    b = None if student_bias is None else _as_float(student_bias, "student_bias")
    if not return_grad:
        return loss_fn(h, w, b)
    loss, vjp = jax.vjp(loss_fn, h, w, b)
    return loss, vjp(jnp.ones_like(loss))
