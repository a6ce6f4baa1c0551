"""Distillation loss for JAX arrays: a ``jax.custom_vjp`` over ``numerics.distillation``.

The forward pass computes the loss and the gradients of both logits in one
pass of the ``jax.numpy`` formulas; the backward pass scales them by the
cotangent, so ``jax.grad`` returns the exact gradient formulas (the argmax
entry of ``p - q`` assembled from the other classes).  Works under
``jax.jit``, ``jax.grad`` and ``jax.vmap``.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp

from softmaxkit import numerics as num
from softmaxkit.backends.jax.functions import _CHECKS, _as_float, _to_rows, _work
from softmaxkit.frontend import validate
from softmaxkit.frontend.distillation import Options, mean_reduction, options
from softmaxkit.numerics.distillation import distillation_rows


def _pass(s, t, hot, denominator, o: Options, want_grad: bool):
    """``(reduced loss, grad in s, grad in t)`` (working dtype; gradients None without ``want_grad``)."""
    work, widened = _work(jnp.result_type(s.dtype, t.dtype))
    loss, gs, gt = distillation_rows(
        jnp, s.astype(work), t.astype(work), hot, divergence=o.divergence, beta=o.beta, temperature=o.temperature,
        scale_t2=o.scale_t2, hard_label_weight=o.hard_label_weight, widened=widened, want_grad=want_grad,
    )
    reduction = mean_reduction(o.reduction)
    out, _ = num.reduce(jnp, loss, None, denominator, reduction, widened)
    if want_grad:
        gs = num.reduce_grad(jnp, gs, denominator, reduction)
        gt = num.reduce_grad(jnp, gt, denominator, reduction)
    return out, gs, gt


@partial(jax.custom_vjp, nondiff_argnums=(4,))
def _distill(s, t, hot, denominator, o: Options):
    """The reduced distillation loss of logit rows ``s``, ``t`` (classes last; working dtype)."""
    return _pass(s, t, hot, denominator, o, False)[0]


def _distill_fwd(s, t, hot, denominator, o: Options):
    out, gs, gt = _pass(s, t, hot, denominator, o, True)
    return out, (gs.astype(s.dtype), gt.astype(t.dtype), hot, denominator)


def _distill_bwd(o: Options, residuals, g):
    gs, gt, hot, denominator = residuals
    scale = g[:, None] if o.reduction == "none" else g
    zero_hot = None if hot is None else jnp.zeros_like(hot)
    return (gs * scale).astype(gs.dtype), (gt * scale).astype(gt.dtype), zero_hot, jnp.zeros_like(denominator)


_distill.defvjp(_distill_fwd, _distill_bwd)


def distillation_loss(
    student_logits: Any,
    teacher_logits: Any,
    *,
    divergence: str = "forward_kl",
    beta: float = 0.5,
    temperature: float = 1.0,
    scale_by_temperature_squared: bool = False,
    labels: Any = None,
    ignore_index: int = -100,
    hard_label_weight: float = 0.0,
    reduction: str = "batchmean",
    axis: int = -1,
) -> Any:
    r"""Knowledge-distillation loss between student and teacher logits.

    With ``p = softmax(student / T)``, ``q = softmax(teacher / T)`` along
    ``axis`` and ``f = T**2`` when ``scale_by_temperature_squared``:

    .. math:: \ell = f\,\mathrm{Div}(p, q) + w_h\,\mathrm{CE}(\mathrm{student}, y)

    ``"forward_kl"``: ``KL(q || p)``; ``"reverse_kl"``: ``KL(p || q)``;
    ``"jsd"``: ``beta KL(q || m) + (1 - beta) KL(p || m)``,
    ``m = beta q + (1 - beta) p`` (``beta`` in (0, 1): JSD is 0 at both
    ends, and 0 or 1 raises ``ValueError`` pointing at the KL divergences).

    Parameters
    ----------
    student_logits, teacher_logits : jax.Array of the same shape
        Raw logits, classes along ``axis``.
    divergence : {"forward_kl", "reverse_kl", "jsd"}, default "forward_kl"
    beta : float, default 0.5
        JSD's mixing weight; ignored by the KL divergences.
    temperature : float > 0, default 1
    scale_by_temperature_squared : bool, default False
    labels : integer jax.Array, optional
        Class indices of the logits' shape without ``axis``; rows at
        ``ignore_index`` contribute nothing and are not counted by "batchmean".
    ignore_index : int, default -100
    hard_label_weight : float >= 0, default 0
        Weight of the cross-entropy of the raw student logits at ``labels``.
    reduction : {"batchmean", "sum", "none"}, default "batchmean"
    axis : int, default -1

    Returns
    -------
    jax.Array: a scalar, or the logits' shape without ``axis`` for "none";
    the logits' promoted dtype.  Differentiable (reverse mode) in both logits.

    Notes
    -----
    The formulas, accuracy contract and edge behaviour are those of
    :func:`softmaxkit.distillation_loss`; JAX computes float32 in
    compensated float32 unless x64 is enabled (see ``softmaxkit.jax``).
    The derivative is a ``jax.custom_vjp``: the forward pass computes the
    gradients of both logits with the loss and reverse mode scales them by
    the cotangent (forward mode is not defined).  Label values are checked
    on concrete arrays and skipped on tracers.

    Examples
    --------
    >>> import jax, jax.numpy as jnp, softmaxkit.jax as smj
    >>> s, t = jnp.array([[20.0, 0.0]]), jnp.array([[0.0, -jnp.inf]])
    >>> jax.grad(smj.distillation_loss)(s, t)  # p - q; jax.nn.softmax(s) - q gives 0
    Array([[-2.0611537e-09,  2.0611537e-09]], dtype=float32)
    """
    o = options(divergence, beta, temperature, scale_by_temperature_squared, labels is not None, ignore_index, hard_label_weight, reduction, "labels")
    s = _as_float(student_logits, "student_logits")
    t = _as_float(teacher_logits, "teacher_logits")
    if tuple(t.shape) != tuple(s.shape):
        raise ValueError(f"teacher_logits must have the shape of student_logits {tuple(s.shape)}; got {tuple(t.shape)}")
    if s.ndim == 0:
        raise ValueError("student_logits must have a class axis; got a 0-d array")
    (ax,) = validate.axis(axis, s.ndim)
    n_classes = s.shape[ax]
    if n_classes == 0:
        raise ValueError(f"student_logits has an empty class axis (axis={axis}, shape {tuple(s.shape)}); distillation needs at least one class")
    dtype = jnp.result_type(s.dtype, t.dtype)
    work, _ = _work(dtype)
    s2, _ = _to_rows(s.astype(dtype), (ax,))
    rest_shape = s2.shape[:-1]
    s2 = s2.reshape(-1, n_classes)
    t2 = _to_rows(t.astype(dtype), (ax,))[0].reshape(-1, n_classes)
    hot = None
    if labels is not None:
        y = jnp.asarray(labels)
        if not jnp.issubdtype(y.dtype, jnp.integer):
            raise TypeError(f"labels must hold integer class indices; got dtype {y.dtype}")
        validate.target_shape("int", y.shape, s.shape, ax, "labels", "student_logits", "axis")
        validate.class_indices(jnp, y, n_classes, o.ignore_index, "labels", _CHECKS)
        y = y.reshape(-1)
        hot = num.one_hot(jnp, y, n_classes, o.ignore_index, work)
    denominator = num.mean_denominator(jnp, s2 if labels is None else y, None, o.ignore_index, work, labels is None)
    out = _distill(s2, t2, hot, denominator, o)
    if o.reduction == "none":
        out = out.reshape(rest_shape)
    return out.astype(dtype)


def entry(student_logits, teacher_logits, *, divergence, beta, temperature, scale_by_temperature_squared, targets, ignore_index, hard_label_weight, reduction, axis, return_grad):
    """``softmaxkit.distillation_loss`` on JAX arrays, with ``return_grad`` the
    gradients of the loss (of ``loss.sum()`` for "none") in both logits."""
    return_grad = validate.flag(return_grad, "return_grad")

    def loss_fn(s, t):
        return distillation_loss(
            s, t, divergence=divergence, beta=beta, temperature=temperature,
            scale_by_temperature_squared=scale_by_temperature_squared, labels=targets, ignore_index=ignore_index,
            hard_label_weight=hard_label_weight, reduction=reduction, axis=axis,
        )

    if not return_grad:
        return loss_fn(student_logits, teacher_logits)
    loss, vjp = jax.vjp(loss_fn, _as_float(student_logits, "student_logits"), _as_float(teacher_logits, "teacher_logits"))
    return loss, vjp(jnp.ones_like(loss))
