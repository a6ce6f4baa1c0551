"""The autograd Functions: forward, exact jvp and backward of each operation, over the shared formulas (see :mod:`.execution` for how they run)."""

from __future__ import annotations

import math

import numpy as np
import torch

from softmaxkit.frontend import registry
from softmaxkit import numerics as num
from softmaxkit.backends.torch.execution import (
    as_numpy,
    by_rows,
    from_rows,
    kernel_layout,
    native_empty_like,
    native_ready,
    plain_eager,
    restore_layout,
    rows_view,
    triton_kernels,
    triton_ready,
    working_dtype,
    xp,
)

_INF = float("inf")


# --- the passes ---------------------------------------------------------------
# One statement of each forward and backward computation.  The autograd
# Functions below and the custom operators (ops.py) both run these.


def _bf16(t: torch.Tensor) -> bool:
    return t.dtype == torch.bfloat16


def softmax_forward(x: torch.Tensor, dim: int, temperature: float, log: bool) -> torch.Tensor:
    """softmax or log_softmax along ``dim``: the native kernel where it can
    run (any dim, without moving it), else the shared formulas by chunks of rows.
    The Triton kernel comes first where :func:`~.execution.triton_ready` holds."""
    if triton_ready(x):
        return triton_kernels("softmax").softmax(x, dim, temperature, log)
    if native_ready(x):
        order, axis, (c,) = kernel_layout(dim, x)
        out = native_empty_like(c)
        into = registry.native().into
        kernel = into.log_softmax_into if log else into.softmax_into
        kernel(as_numpy(c), as_numpy(out), temperature, axis=axis, bfloat16=_bf16(c))
        return restore_layout(out, order)
    work, widened = working_dtype(x.dtype, x.device)
    formula = num.log_softmax if log else num.softmax

    def compute(rows):
        st = num.row_stats(xp, rows.to(work), None, temperature, widened)
        return (formula(xp, st).to(x.dtype),)

    return from_rows(by_rows(compute, rows_view(x, dim))[0], x, dim)


def softmax_backward(y: torch.Tensor, grad: torch.Tensor, dim: int, temperature: float, log: bool) -> torch.Tensor:
    """The VJP of :func:`softmax_forward` from its output ``y``.

    Outside plain eager mode (double backward records a graph) it is written
    with differentiable torch operations on ``y``, so that double backward
    differentiates through it.
    """
    if triton_ready(y, grad):
        return triton_kernels("softmax").softmax_vjp(y, grad, dim, temperature, log)
    if native_ready(y, grad) and grad.dtype == y.dtype:
        order, axis, (c, g) = kernel_layout(dim, y, grad)
        out = native_empty_like(c)
        into = registry.native().into
        kernel = into.log_softmax_vjp_into if log else into.softmax_vjp_into
        kernel(as_numpy(c), as_numpy(g), as_numpy(out), axis=axis, bfloat16=_bf16(c))
        out = restore_layout(out, order)
        return out if temperature == 1.0 else out / temperature
    work, widened = working_dtype(y.dtype, y.device)

    def compute(y2, g2):
        y2, g2 = y2.to(work), g2.to(work)
        if log:
            out = num.log_softmax_vjp(xp, xp.exp(y2), y2 != -_INF, g2, widened)
        else:
            out = num.softmax_vjp(xp, y2, g2, widened)
        if temperature != 1.0:
            out = out / temperature
        return (out.to(y.dtype),)

    return from_rows(by_rows(compute, rows_view(y, dim), rows_view(grad, dim))[0], y, dim)


# --- softmax and log_softmax --------------------------------------------------


class SoftmaxFunction(torch.autograd.Function):
    """Softmax along ``dim``; the output is saved for backward."""

    @staticmethod
    def forward(x: torch.Tensor, dim: int, temperature: float, log: bool) -> torch.Tensor:
        return softmax_forward(x, dim, temperature, log)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, ctx.dim, ctx.temperature, ctx.log = inputs
        ctx.save_for_backward(output)
        ctx.save_for_forward(output)

    @staticmethod
    def jvp(ctx, tangent, *_):
        """Forward mode, exact: with ``u = t / T`` and ``<p, u>`` summed where
        ``p > 0``, softmax gives ``p (u - <p, u>)`` and log_softmax
        ``u - <p, u>`` (0 where the output is ``-inf``, a constant)."""
        (y,) = ctx.saved_tensors
        work, widened = working_dtype(y.dtype, y.device)
        y2, u = rows_view(y, ctx.dim).to(work), rows_view(tangent, ctx.dim).to(work)
        if ctx.temperature != 1.0:
            u = u / ctx.temperature
        if not ctx.log:
            out = num.softmax_vjp(xp, y2, u, widened)
        else:
            out = num.log_softmax_jvp(xp, xp.exp(y2), y2 != -_INF, u, widened)
        return from_rows(out.to(y.dtype), y, ctx.dim)

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return softmax_backward(y, grad, ctx.dim, ctx.temperature, ctx.log), None, None, None

    generate_vmap_rule = True


# --- logsumexp ----------------------------------------------------------------


def logsumexp_forward(x: torch.Tensor, dim: int) -> torch.Tensor:
    """logsumexp along ``dim`` (removed from the shape)."""
    if triton_ready(x):
        return triton_kernels("softmax").logsumexp(x, dim)
    if native_ready(x):
        order, axis, (c,) = kernel_layout(dim, x)
        out = torch.empty(c.shape[:axis] + c.shape[axis + 1 :], dtype=c.dtype)
        registry.native().into.logsumexp_into(as_numpy(c), as_numpy(out), axis=axis, bfloat16=_bf16(c))
        return restore_layout(out, [d - (d > dim) for d in order if d != dim])
    work, widened = working_dtype(x.dtype, x.device)

    def compute(rows):
        st = num.row_stats(xp, rows.to(work), None, 1.0, widened)
        return (num.logsumexp(xp, st)[:, 0].to(x.dtype),)

    return by_rows(compute, rows_view(x, dim))[0].reshape(x.shape[:dim] + x.shape[dim + 1 :])


def logsumexp_backward(x: torch.Tensor, grad: torch.Tensor, dim: int) -> torch.Tensor:
    """``softmax(x) * grad`` along ``dim``, recomputed from the input (0 where the softmax is 0)."""
    if triton_ready(x, grad):
        return triton_kernels("softmax").logsumexp_vjp(x, grad, dim)
    if native_ready(x, grad):
        p = softmax_forward(x, dim, 1.0, False)
        return num.logsumexp_vjp(xp, p, grad.to(x.dtype).unsqueeze(dim))
    work, widened = working_dtype(x.dtype, x.device)

    def compute(rows, g):
        p = num.softmax(xp, num.row_stats(xp, rows.to(work), None, 1.0, widened))
        return (num.logsumexp_vjp(xp, p, g.to(work)[:, None]).to(x.dtype),)

    return from_rows(by_rows(compute, rows_view(x, dim), grad.reshape(-1))[0], x, dim)


class LogSumExpFunction(torch.autograd.Function):
    """logsumexp along ``dim``; backward recomputes the softmax from the input."""

    @staticmethod
    def forward(x: torch.Tensor, dim: int) -> torch.Tensor:
        return logsumexp_forward(x, dim)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.dim = inputs[1]
        ctx.save_for_backward(inputs[0])
        ctx.save_for_forward(inputs[0])

    @staticmethod
    def jvp(ctx, tangent, _dim):
        """Forward mode, exact: ``<softmax(x), t>`` over the entries with ``p > 0``."""
        (x,) = ctx.saved_tensors
        work, widened = working_dtype(x.dtype, x.device)
        p = num.softmax(xp, num.row_stats(xp, rows_view(x, ctx.dim).to(work), None, 1.0, widened))
        terms = num.logsumexp_vjp(xp, p, rows_view(tangent, ctx.dim).to(work))
        out = num.compensated_sum(xp, terms, widened)[:, 0].to(x.dtype)
        return out.reshape(x.shape[: ctx.dim] + x.shape[ctx.dim + 1 :])

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return logsumexp_backward(x, grad, ctx.dim), None

    generate_vmap_rule = True


# --- cross-entropy ------------------------------------------------------------


def _coefficients(xw, t, weight, eps, ignore_index, hard):
    if hard:
        n = xw.shape[-1]
        return num.class_coefficients(xp, xw, eps, weight, hot=num.one_hot(xp, t, n, ignore_index, xw.dtype))
    return num.class_coefficients(xp, xw, eps, weight, probs=t.to(xw.dtype))


def _native_divisor(x, t, scale, want_target, divisor=None) -> float | None:
    """The kernel's ``grad_divisor`` when the native kernel can do this pass, else None.

    The kernel runs on CPU float tensors in plain eager mode and divides every
    row by one ``divisor``: the one given (a reduced loss's, stated exactly
    by the caller) or ``1 / scale`` for a uniform per-row ``scale``.  Per-row
    cotangents that differ, non-positive scales, probability targets of
    another dtype than the logits and target gradients take the chunked xp
    path.
    """
    if not (
        native_ready(x)
        and (t.dtype == x.dtype or not t.is_floating_point())
        and not want_target
        and plain_eager(t, scale)
    ):
        return None
    if scale is None:
        return 1.0
    if divisor is not None:
        return divisor if math.isfinite(divisor) and divisor > 0 else None
    first = float(scale[0]) if scale.numel() else 1.0
    if not (math.isfinite(first) and first > 0 and bool((scale == first).all())):
        return None
    return 1.0 / first


def _native_cross_entropy_pass(x, t, cdim, w, ignore_index, eps, z, hard, divisor, want_grad):
    """The kernel on shared memory, classes along ``cdim`` (no axis move): ``(loss per row, gradient or None)``.

    The logits and targets are read where they lie when contiguous (see
    :func:`~.execution.as_numpy` for the others); the rows come in the C
    order of the logits' shape without ``cdim``, the targets' order.
    """
    x = x.detach().contiguous()
    logits = as_numpy(x)
    targets = as_numpy(t.to(torch.int64) if hard else t)
    weight = None if w is None else w.detach().to(torch.float64).contiguous().numpy()
    loss = np.empty(x.shape[:cdim] + x.shape[cdim + 1 :], dtype=np.float64)
    grad = native_empty_like(x) if want_grad else None
    registry.native().into.cross_entropy_into(
        logits,
        targets,
        loss,
        None if grad is None else as_numpy(grad),
        weight=weight,
        ignore_index=ignore_index,
        label_smoothing=eps,
        z_loss=z,
        grad_divisor=divisor,
        axis=cdim,
        bfloat16=_bf16(x),
    )
    return torch.from_numpy(loss.reshape(-1)), grad


def _target_rows(t, cdim, hard):
    return t.reshape(-1) if hard else rows_view(t, cdim)


def _triton_ok(x, t, hard) -> bool:
    """Whether the Triton kernel takes a pass: the logits (and probability
    targets) in its dtypes, on its devices (see :func:`~.execution.triton_ready`)."""
    return triton_ready(x) if hard else triton_ready(x, t)


def _triton_cross_entropy_pass(x, t, cdim, w, ignore_index, eps, z, hard, scale, want_target, divisor):
    """:func:`_cross_entropy_pass` by the Triton kernel (classes read along
    ``cdim`` where they lie): the per-row losses in the working dtype, or the
    gradients.  A ``divisor`` (a float, or a 0-d tensor on the logits'
    device) stands for a uniform ``scale``; otherwise each row's gradient is
    multiplied by its ``scale``."""
    rows = triton_kernels("cross_entropy").cross_entropy_rows
    if scale is None:
        loss, _, _ = rows(x, t, cdim, w, ignore_index, eps, z)
        return (loss.to(working_dtype(x.dtype, x.device)[0]),)
    _, gx, gt = rows(
        x, t, cdim, w, ignore_index, eps, z, want_grad=True, want_target_grad=want_target,
        divisor=1.0 if divisor is None else divisor, scale=scale if divisor is None else None,
    )
    return (gx, gt) if want_target else (gx,)


def _cross_entropy_pass(x, t, cdim, w, ignore_index, eps, z, hard, scale=None, want_target=False, divisor=None):
    """One pass over the logits, classes along ``cdim``.

    Without ``scale``: the per-row losses (working dtype), rows in the C
    order of the logits' shape without ``cdim``.  With ``scale`` (per row):
    the gradient with respect to the logits times ``scale``, of the logits'
    shape and dtype, and with ``want_target`` also the gradient with respect
    to probability targets.  ``divisor``, where the caller knows it, is the
    uniform ``1 / scale`` rounded once, for the kernel (see
    :func:`_native_divisor`).  Forward and backward both come here: on CPU the
    native kernel (``softmaxkit.kernels``, same formulas) takes over where it
    can, without moving the class axis; otherwise the xp formulas run by
    chunks of rows.  The Triton kernel (:func:`_triton_cross_entropy_pass`)
    comes first where it runs.
    """
    if _triton_ok(x, t, hard):
        return _triton_cross_entropy_pass(x, t, cdim, w, ignore_index, eps, z, hard, scale, want_target, divisor)
    divisor = _native_divisor(x, t, scale, want_target, divisor)
    if divisor is not None:
        loss, grad = _native_cross_entropy_pass(x, t, cdim, w, ignore_index, eps, z, hard, divisor, scale is not None)
        return (loss,) if grad is None else (grad,)
    work, widened = working_dtype(x.dtype, x.device)

    def compute(rows, t2, s):
        xw = rows.to(work)
        coef, row_w = _coefficients(xw, t2, w, eps, ignore_index, hard)
        st = num.row_stats(xp, xw, None, 1.0, widened)
        loss, gx = num.cross_entropy_rows(xp, st, coef, z, row_w, s is not None)
        if s is None:
            return (loss,)
        s = s[:, None]
        parts = ((gx * s).to(x.dtype),)
        if want_target:
            dq = num.probability_target_grad(xp, st, eps, w)
            parts += ((dq * s).to(t.dtype),)
        return parts

    parts = by_rows(compute, rows_view(x, cdim), _target_rows(t, cdim, hard), scale)
    if scale is None:
        return parts
    return (from_rows(parts[0], x, cdim),) + tuple(from_rows(p, t, cdim) for p in parts[1:])


def _denominator(x, t, cdim, w, ignore_index, work, hard):
    """The "mean" denominator (one pass over the targets); for probability
    targets only the row count matters, so no row of them is formed."""
    rows = t.reshape(-1) if hard else x.new_empty((x.numel() // max(x.shape[cdim], 1), 0))
    return num.mean_denominator(xp, rows, w, ignore_index, work, not hard)


def cross_entropy_forward(x, t, cdim, weight, ignore_index, eps, z, reduction, hard, loss_dtype, fuse=False):
    """``(loss, denominator, gradient)``: the reduced loss in ``loss_dtype`` (per
    row for "none"), the "mean" denominator (working dtype, 0-d) and, with
    ``fuse``, the gradient.

    ``fuse`` asks the native or Triton kernel to write, in the same pass
    over the logits, the gradient of the reduced loss for a cotangent of 1
    (of each row's loss for "none"): a training step then reads the logits
    once, and backward has nothing left to compute.  The gradient is None
    where no kernel can do it (see :func:`_native_divisor`), or, for the
    native kernel, for a "mean" over a total weight that is not positive.
    The Triton kernel reads the divisor on the device
    (``numerics.gradient_divisor_array``): no host round trip.
    """
    work, widened = working_dtype(x.dtype, x.device)
    w = None if weight is None else weight.to(work)
    denominator = _denominator(x, t, cdim, w, ignore_index, work, hard)
    divisor = None
    if fuse and _native_divisor(x, t, None, False) is not None:
        divisor = num.gradient_divisor(denominator, reduction)
    if _triton_ok(x, t, hard):
        rows = triton_kernels("cross_entropy").cross_entropy_rows
        div = num.gradient_divisor_array(xp, denominator, reduction) if fuse else 1.0
        loss, grad, _ = rows(x, t, cdim, w, ignore_index, eps, z, want_grad=fuse, divisor=div)
        loss = loss.to(work)
    elif divisor is not None and divisor > 0:
        loss, grad = _native_cross_entropy_pass(x, t, cdim, w, ignore_index, eps, z, hard, divisor, True)
    else:
        (loss,), grad = _cross_entropy_pass(x, t, cdim, w, ignore_index, eps, z, hard), None
    out, _ = num.reduce(xp, loss, None, denominator, reduction, widened)
    return out.to(loss_dtype), denominator, grad


def _fused_gradient(fused, grad, reduction):
    """The forward pass's gradient for the cotangent ``grad``, or None where it must be recomputed.

    It serves a cotangent of 1 as it is and a power of two by an exact
    scaling (a loss scaler's), so that it is rounded once like the
    recomputed one; other cotangents are recomputed.
    """
    if reduction == "none":
        return fused if bool((grad == 1).all()) else None
    g = float(grad)
    if g == 1.0:
        return fused
    if math.isfinite(g) and g != 0 and math.frexp(g)[0] == 0.5:
        return fused.mul_(g)
    return None


def cross_entropy_backward(x, t, cdim, weight, denominator, grad, ignore_index, eps, z, reduction, hard, want_target):
    """``(gradient in x, gradient in probability targets or None)`` of :func:`cross_entropy_forward`."""
    work, _ = working_dtype(x.dtype, x.device)
    w = None if weight is None else weight.to(work)
    g = grad.to(work)
    # The Triton kernel divides by the reduced loss's divisor over the
    # cotangent, on the device, as the forward pass's fused gradient does.
    triton_divisor = None
    if reduction != "none" and _triton_ok(x, t, hard):
        triton_divisor = num.gradient_divisor_array(xp, denominator, reduction) / g
    if reduction == "mean":
        # The mean's rule, 0 over a total weight of 0, is num.reduce's alone.
        _, g = num.reduce(xp, xp.zeros_like(g)[None], g, denominator, "mean", True)
    # expand, not broadcast_to: batched cotangents (is_grads_batched)
    # have no batching rule for the latter.
    n_rows = x.numel() // max(x.shape[cdim], 1)
    scale = g.reshape(-1) if reduction == "none" else g.expand(n_rows)
    divisor = _reduced_divisor(denominator, grad, reduction) if native_ready(x) else triton_divisor
    parts = _cross_entropy_pass(x, t, cdim, w, ignore_index, eps, z, hard, scale, want_target, divisor)
    return parts[0], (parts[1] if want_target else None)


def _reduced_divisor(denominator, grad, reduction) -> float | None:
    """What a reduced loss's gradient rows are divided by for the cotangent
    ``grad``, rounded once: ``denominator / grad`` for "mean", ``1 / grad``
    for "sum" (None for "none", or where the rule is not a division).  The
    forward pass's fused gradient divides by the same number for a cotangent
    of 1, so a recomputed gradient (a second backward) matches it bit for bit.
    """
    if reduction == "none" or not plain_eager(grad):
        return None
    divisor = num.gradient_divisor(denominator, reduction)
    g = float(grad)
    return None if divisor is None or g == 0 else divisor / g


class CrossEntropyFunction(torch.autograd.Function):
    """Cross-entropy of logits with classes along ``cdim``; reduced inside.

    Forward saves the targets, the class weights and the reduction's
    denominator (a scalar).  Where the logits need a gradient and the native
    kernel runs, forward also writes it (see :func:`cross_entropy_forward`)
    and backward hands it over; otherwise backward recomputes each chunk's
    row statistics from the logits and writes the gradient into one
    preallocated tensor.  No other tensor of the logits' size is kept.
    """

    @staticmethod
    def forward(x, t, cdim, weight, ignore_index, eps, z, reduction, hard, loss_dtype):
        fuse = x.requires_grad and not t.requires_grad
        return cross_entropy_forward(x, t, cdim, weight, ignore_index, eps, z, reduction, hard, loss_dtype, fuse)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, t, ctx.cdim, weight, ctx.ignore_index, ctx.eps, ctx.z, ctx.reduction, ctx.hard, ctx.loss_dtype = inputs
        # Held outside save_for_backward: it is handed over once, and
        # dropped then (a second backward, with retain_graph, recomputes).
        ctx.fused = output[2]
        ctx.save_for_backward(x, t, weight, output[1])
        ctx.save_for_forward(x, t, weight, output[1])
        ctx.mark_non_differentiable(*(o for o in output[1:] if o is not None))
        # The outputs besides the loss get no cotangent: without this,
        # autograd would fill a zero tensor as large as the logits for the
        # gradient output on every backward.
        ctx.set_materialize_grads(False)

    @staticmethod
    def jvp(ctx, tx, tt, *_):
        """Forward mode, exact: per row ``<g, t_x> + <d, t_q>`` with ``g`` the
        logit gradient ``(C + 2 z w lse) p - c`` and ``d = (1 - eps) w (-log p)``
        the probability-target gradient, then the forward pass's reduction."""
        x, t, weight, denominator = ctx.saved_tensors
        work, widened = working_dtype(x.dtype, x.device)
        xw = rows_view(x, ctx.cdim).to(work)
        w = None if weight is None else weight.to(work)
        coef, row_w = _coefficients(xw, _target_rows(t, ctx.cdim, ctx.hard), w, ctx.eps, ctx.ignore_index, ctx.hard)
        st = num.row_stats(xp, xw, None, 1.0, widened)
        zero = xp.zeros_like(xw)
        terms = zero
        if tx is not None:
            _, gx = num.cross_entropy_rows(xp, st, coef, ctx.z, row_w, True)
            terms = gx * rows_view(tx, ctx.cdim).to(work)
        if tt is not None and not ctx.hard:
            dq = num.probability_target_grad(xp, st, ctx.eps, w)
            u = rows_view(tt, ctx.cdim).to(work)
            terms = terms + xp.where(u == 0, zero, dq * u)
        rows = num.compensated_sum(xp, terms, widened)[:, 0]
        out, _ = num.reduce(xp, rows, None, denominator, ctx.reduction, widened)
        return out.to(ctx.loss_dtype), None, None

    @staticmethod
    def backward(ctx, grad, *_):
        fused, ctx.fused = ctx.fused, None
        x, t, weight, denominator = ctx.saved_tensors
        if grad is None:
            return (None,) * 10
        if fused is not None and plain_eager(grad):
            gx = _fused_gradient(fused, grad, ctx.reduction)
            if gx is not None:
                return gx, None, None, None, None, None, None, None, None, None
        gx, gt = cross_entropy_backward(
            x, t, ctx.cdim, weight, denominator, grad, ctx.ignore_index, ctx.eps, ctx.z, ctx.reduction, ctx.hard,
            ctx.needs_input_grad[1],
        )
        return gx, gt, None, None, None, None, None, None, None, None

    generate_vmap_rule = True


# --- binary cross-entropy -----------------------------------------------------


def binary_cross_entropy_forward(x, y, weight, pos_weight, reduction, loss_dtype):
    """The reduced elementwise binary cross-entropy, in ``loss_dtype``."""
    work, widened = working_dtype(torch.promote_types(x.dtype, y.dtype), x.device)
    beta = None if pos_weight is None else pos_weight.to(work)
    loss, _ = num.binary_cross_entropy(xp, x.to(work), y.to(work), beta, False)
    if weight is not None:
        loss = weight.to(work) * loss
    denominator = num.elementwise_denominator(xp, x, work)
    out, _ = num.reduce(xp, loss, None, denominator, reduction, widened)
    return out.to(loss_dtype)


def binary_cross_entropy_backward(x, y, weight, pos_weight, grad, reduction, want_x, want_y):
    """``(gradient in x or None, gradient in y or None)`` of :func:`binary_cross_entropy_forward`."""
    work, _ = working_dtype(torch.promote_types(x.dtype, y.dtype), x.device)
    xw, yw = x.to(work), y.to(work)
    beta = None if pos_weight is None else pos_weight.to(work)
    g = grad.to(work)
    if reduction == "mean":
        g = g / x.numel()
    if weight is not None:
        g = g * weight.to(work)
    grad_x = grad_y = None
    if want_x:
        _, gx = num.binary_cross_entropy(xp, xw, yw, beta, True)
        grad_x = (gx * g).to(x.dtype)
    if want_y:
        grad_y = (num.binary_cross_entropy_target_grad(xp, xw, beta) * g).to(y.dtype)
    return grad_x, grad_y


class BinaryCrossEntropyFunction(torch.autograd.Function):
    """Elementwise BCE from logits, reduced inside; backward recomputes."""

    @staticmethod
    def forward(x, y, weight, pos_weight, reduction, loss_dtype):
        return binary_cross_entropy_forward(x, y, weight, pos_weight, reduction, loss_dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, y, weight, pos_weight, ctx.reduction, ctx.loss_dtype = inputs
        ctx.save_for_backward(x, y, weight, pos_weight)
        ctx.save_for_forward(x, y, weight, pos_weight)

    @staticmethod
    def jvp(ctx, tx, ty, *_):
        """Forward mode: ``w (g_x t_x + g_y t_y)`` elementwise with the
        gradients of :meth:`backward`, then the forward pass's reduction."""
        x, y, weight, pos_weight = ctx.saved_tensors
        work, widened = working_dtype(torch.promote_types(x.dtype, y.dtype), x.device)
        xw, yw = x.to(work), y.to(work)
        beta = None if pos_weight is None else pos_weight.to(work)
        _, gx = num.binary_cross_entropy(xp, xw, yw, beta, True)
        d = xp.zeros_like(xw) if tx is None else gx * tx.to(work)
        if ty is not None:
            d = d + num.binary_cross_entropy_target_grad(xp, xw, beta) * ty.to(work)
        if weight is not None:
            d = weight.to(work) * d
        denominator = num.elementwise_denominator(xp, x, work)
        out, _ = num.reduce(xp, d, None, denominator, ctx.reduction, widened)
        return out.to(ctx.loss_dtype)

    @staticmethod
    def backward(ctx, grad):
        x, y, weight, pos_weight = ctx.saved_tensors
        gx, gy = binary_cross_entropy_backward(
            x, y, weight, pos_weight, grad, ctx.reduction, ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        )
        return gx, gy, None, None, None, None

    generate_vmap_rule = True

