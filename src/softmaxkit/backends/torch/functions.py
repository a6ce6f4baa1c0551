"""The autograd Functions: forward, exact jvp and backward of each operation, over the shared formulas (see :mod:`.execution` for how they run)."""

from __future__ import annotations

import math

import numpy as np
import torch

from softmaxkit.frontend import registry
from softmaxkit import numerics as num
from softmaxkit.backends.torch.execution import as_numpy, by_rows, native_empty_like, native_ready, plain_eager, working_dtype, xp

_INF = float("inf")


# --- the passes ---------------------------------------------------------------
# One statement of each forward and backward computation.  The autograd
# Functions below and the custom operators (ops.py) both run these.


def softmax_forward(x2: torch.Tensor, temperature: float, log: bool) -> torch.Tensor:
    """softmax or log_softmax of (rows, n): the native kernel where it can run, else the shared formulas by chunks."""
    if native_ready(x2):
        out = native_empty_like(x2)
        into = registry.native().into
        kernel = into.log_softmax_into if log else into.softmax_into
        kernel(as_numpy(x2), as_numpy(out), temperature, bfloat16=x2.dtype == torch.bfloat16)
        return out
    work, widened = working_dtype(x2.dtype, x2.device)
    formula = num.log_softmax if log else num.softmax

    def compute(rows):
        st = num.row_stats(xp, rows.to(work), None, temperature, widened)
        return (formula(xp, st).to(x2.dtype),)

    return by_rows(compute, x2)[0]


def softmax_backward(y2: torch.Tensor, grad: torch.Tensor, temperature: float, log: bool) -> torch.Tensor:
    """The VJP of :func:`softmax_forward` from its output ``y2``.

    Outside plain eager mode (double backward records a graph) it is written
    with differentiable torch operations on ``y2``, so that double backward
    differentiates through it.
    """
    if native_ready(y2, grad) and grad.dtype == y2.dtype:
        out = native_empty_like(y2)
        into = registry.native().into
        kernel = into.log_softmax_vjp_into if log else into.softmax_vjp_into
        kernel(as_numpy(y2), as_numpy(grad), as_numpy(out), bfloat16=y2.dtype == torch.bfloat16)
        return out if temperature == 1.0 else out / temperature
    work, widened = working_dtype(y2.dtype, y2.device)

    def compute(y, g):
        y, g = y.to(work), g.to(work)
        if log:
            out = num.log_softmax_vjp(xp, xp.exp(y), y != -_INF, g, widened)
        else:
            out = num.softmax_vjp(xp, y, g, widened)
        if temperature != 1.0:
            out = out / temperature
        return (out.to(y2.dtype),)

    return by_rows(compute, y2, grad)[0]


# --- softmax and log_softmax --------------------------------------------------


class SoftmaxFunction(torch.autograd.Function):
    """Softmax along the last axis of a (rows, n) tensor; output saved for backward."""

    @staticmethod
    def forward(x2: torch.Tensor, temperature: float, log: bool) -> torch.Tensor:
        return softmax_forward(x2, temperature, log)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.temperature, ctx.log = inputs[1], inputs[2]
        ctx.save_for_backward(output)
        ctx.save_for_forward(output)

    @staticmethod
    def jvp(ctx, tangent, _temperature, _log):
        """Forward mode, exact: with ``u = t / T`` and ``<p, u>`` summed where
        ``p > 0``, softmax gives ``p (u - <p, u>)`` and log_softmax
        ``u - <p, u>`` (0 where the output is ``-inf``, a constant)."""
        (y2,) = ctx.saved_tensors
        work, widened = working_dtype(y2.dtype, y2.device)
        y, u = y2.to(work), tangent.to(work)
        if ctx.temperature != 1.0:
            u = u / ctx.temperature
        if not ctx.log:
            return num.softmax_vjp(xp, y, u, widened).to(y2.dtype)
        return num.log_softmax_jvp(xp, xp.exp(y), y != -_INF, u, widened).to(y2.dtype)

    @staticmethod
    def backward(ctx, grad):
        (y2,) = ctx.saved_tensors
        return softmax_backward(y2, grad, ctx.temperature, ctx.log), None, None

    generate_vmap_rule = True



# --- logsumexp ----------------------------------------------------------------


def logsumexp_forward(x2: torch.Tensor) -> torch.Tensor:
    """logsumexp of each row of (rows, n)."""
    if native_ready(x2):
        out = torch.empty(x2.shape[:1], dtype=x2.dtype)
        registry.native().into.logsumexp_into(as_numpy(x2), as_numpy(out), bfloat16=x2.dtype == torch.bfloat16)
        return out
    work, widened = working_dtype(x2.dtype, x2.device)

    def compute(rows):
        st = num.row_stats(xp, rows.to(work), None, 1.0, widened)
        return (num.logsumexp(xp, st)[:, 0].to(x2.dtype),)

    return by_rows(compute, x2)[0]


def logsumexp_backward(x2: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``softmax(x2) * grad`` per row, recomputed from the input (0 where the softmax is 0)."""
    if native_ready(x2, grad):
        p = softmax_forward(x2, 1.0, False)
        return num.logsumexp_vjp(xp, p, grad.to(x2.dtype)[:, None])
    work, widened = working_dtype(x2.dtype, x2.device)

    def compute(rows, g):
        p = num.softmax(xp, num.row_stats(xp, rows.to(work), None, 1.0, widened))
        return (num.logsumexp_vjp(xp, p, g.to(work)[:, None]).to(x2.dtype),)

    return by_rows(compute, x2, grad)[0]


class LogSumExpFunction(torch.autograd.Function):
    """logsumexp along the last axis of (rows, n); backward recomputes softmax."""

    @staticmethod
    def forward(x2: torch.Tensor) -> torch.Tensor:
        return logsumexp_forward(x2)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])
        ctx.save_for_forward(inputs[0])

    @staticmethod
    def jvp(ctx, tangent):
        """Forward mode, exact: ``<softmax(x), t>`` over the entries with ``p > 0``."""
        (x2,) = ctx.saved_tensors
        work, widened = working_dtype(x2.dtype, x2.device)
        p = num.softmax(xp, num.row_stats(xp, x2.to(work), None, 1.0, widened))
        terms = num.logsumexp_vjp(xp, p, tangent.to(work))
        return num.compensated_sum(xp, terms, widened)[:, 0].to(x2.dtype)

    @staticmethod
    def backward(ctx, grad):
        (x2,) = ctx.saved_tensors
        return logsumexp_backward(x2, grad)

    generate_vmap_rule = True



# --- cross-entropy ------------------------------------------------------------


def _coefficients(xw, t, weight, eps, ignore_index, hard):
    if hard:
        n = xw.shape[-1]
        return num.class_coefficients(xp, xw, eps, weight, hot=num.one_hot(xp, t, n, ignore_index, xw.dtype))
    return num.class_coefficients(xp, xw, eps, weight, probs=t.to(xw.dtype))


def _native_divisor(x2, t2, scale, want_target) -> float | None:
    """The kernel's ``grad_divisor`` when the native kernel can do this pass, else None.

    The kernel runs on contiguous CPU float tensors in plain eager mode and
    scales every row by one ``1 / divisor``; per-row cotangents other than 1,
    non-positive scales, probability targets of another dtype than the logits
    and target gradients take the chunked xp path.
    """
    if not (
        native_ready(x2)
        and t2.is_contiguous()
        and (t2.dtype == x2.dtype or not t2.is_floating_point())
        and not want_target
        and plain_eager(t2, scale)
    ):
        return None
    if scale is None:
        return 1.0
    first = float(scale[0]) if scale.numel() else 1.0
    if not (math.isfinite(first) and first > 0 and bool((scale == first).all())):
        return None
    return 1.0 / first


def _native_cross_entropy_pass(x2, t2, w, ignore_index, eps, z, hard, divisor, want_grad):
    """The kernel on shared memory: ``.numpy()`` views in, ``torch.from_numpy`` out."""
    logits = as_numpy(x2)
    targets = as_numpy((t2.to(torch.int64) if hard else t2).contiguous())
    weight = None if w is None else w.detach().to(torch.float64).contiguous().numpy()
    loss = np.empty(x2.shape[0], dtype=np.float64)
    grad = native_empty_like(x2) if want_grad else None
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
        bfloat16=x2.dtype == torch.bfloat16,
    )
    return torch.from_numpy(loss), grad


def _cross_entropy_pass(x2, t2, w, ignore_index, eps, z, hard, scale=None, want_target=False):
    """One pass over the (rows, classes) logits, chunk by chunk.

    Without ``scale``: the per-row losses (working dtype).  With ``scale``
    (per row): the gradient with respect to the logits times ``scale``, in
    the logits' dtype, and with ``want_target`` also the gradient with
    respect to probability targets.  Forward and backward both come here:
    on CPU the native kernel (``softmaxkit.kernels``, same formulas) takes
    over where it can, zero-copy; otherwise the xp formulas run by chunks.
    """
    divisor = _native_divisor(x2, t2, scale, want_target)
    if divisor is not None:
        loss, grad = _native_cross_entropy_pass(x2, t2, w, ignore_index, eps, z, hard, divisor, scale is not None)
        return (loss,) if grad is None else (grad,)
    work, widened = working_dtype(x2.dtype, x2.device)

    def compute(rows, t, s):
        xw = rows.to(work)
        coef, row_w = _coefficients(xw, t, w, eps, ignore_index, hard)
        st = num.row_stats(xp, xw, None, 1.0, widened)
        loss, gx = num.cross_entropy_rows(xp, st, coef, z, row_w, s is not None)
        if s is None:
            return (loss,)
        s = s[:, None]
        parts = ((gx * s).to(x2.dtype),)
        if want_target:
            dq = num.probability_target_grad(xp, st, eps, w)
            parts += ((dq * s).to(t2.dtype),)
        return parts

    return by_rows(compute, x2, t2, scale)


def cross_entropy_forward(x2, t2, weight, ignore_index, eps, z, reduction, hard, loss_dtype, fuse=False):
    """``(loss, denominator, gradient)``: the reduced loss in ``loss_dtype``, the
    "mean" denominator (working dtype, 0-d) and, with ``fuse``, the gradient.

    ``fuse`` asks the native kernel to write, in the same pass over the
    logits, the gradient of the reduced loss for a cotangent of 1 (of each
    row's loss for "none"): a training step then reads the logits once, and
    backward has nothing left to compute.  The gradient is None where the
    kernel cannot do it (see :func:`_native_divisor`), or for a "mean" over a
    total weight that is not positive.
    """
    work, widened = working_dtype(x2.dtype, x2.device)
    w = None if weight is None else weight.to(work)
    denominator = num.mean_denominator(xp, t2, w, ignore_index, work, not hard)
    divisor = None
    if fuse and _native_divisor(x2, t2, None, False) is not None:
        divisor = num.gradient_divisor(denominator, reduction)
    if divisor is not None and divisor > 0:
        loss, grad = _native_cross_entropy_pass(x2, t2, w, ignore_index, eps, z, hard, divisor, True)
    else:
        (loss,), grad = _cross_entropy_pass(x2, t2, w, ignore_index, eps, z, hard), None
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


def cross_entropy_backward(x2, t2, weight, denominator, grad, ignore_index, eps, z, reduction, hard, want_target):
    """``(gradient in x2, gradient in probability targets or None)`` of :func:`cross_entropy_forward`."""
    work, _ = working_dtype(x2.dtype, x2.device)
    w = None if weight is None else weight.to(work)
    g = grad.to(work)
    if reduction == "mean":
        # The mean's rule, 0 over a total weight of 0, is num.reduce's alone.
        _, g = num.reduce(xp, xp.zeros_like(g)[None], g, denominator, "mean", True)
    # expand, not broadcast_to: batched cotangents (is_grads_batched)
    # have no batching rule for the latter.
    scale = g if reduction == "none" else g.expand(x2.shape[0])
    parts = _cross_entropy_pass(x2, t2, w, ignore_index, eps, z, hard, scale, want_target)
    return parts[0], (parts[1] if want_target else None)


class CrossEntropyFunction(torch.autograd.Function):
    """Cross-entropy of (rows, classes) logits; reduced inside.

    Forward saves the targets, the class weights and the reduction's
    denominator (a scalar).  Where the logits need a gradient and the native
    kernel runs, forward also writes it (see :func:`cross_entropy_forward`)
    and backward hands it over; otherwise backward recomputes each chunk's
    row statistics from the logits and writes the gradient into one
    preallocated tensor.  No other (rows x classes) tensor is kept.
    """

    @staticmethod
    def forward(x2, t2, weight, ignore_index, eps, z, reduction, hard, loss_dtype):
        fuse = x2.requires_grad and not t2.requires_grad
        return cross_entropy_forward(x2, t2, weight, ignore_index, eps, z, reduction, hard, loss_dtype, fuse)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x2, t2, weight, ctx.ignore_index, ctx.eps, ctx.z, ctx.reduction, ctx.hard, ctx.loss_dtype = inputs
        # Held outside save_for_backward: it is handed over once, and
        # dropped then (a second backward, with retain_graph, recomputes).
        ctx.fused = output[2]
        ctx.save_for_backward(x2, t2, weight, output[1])
        ctx.save_for_forward(x2, t2, weight, output[1])
        ctx.mark_non_differentiable(*(o for o in output[1:] if o is not None))

    @staticmethod
    def jvp(ctx, tx, tt, *_):
        """Forward mode, exact: per row ``<g, t_x> + <d, t_q>`` with ``g`` the
        logit gradient ``(C + 2 z w lse) p - c`` and ``d = (1 - eps) w (-log p)``
        the probability-target gradient, then the forward pass's reduction."""
        x2, t2, weight, denominator = ctx.saved_tensors
        work, widened = working_dtype(x2.dtype, x2.device)
        xw = x2.to(work)
        w = None if weight is None else weight.to(work)
        coef, row_w = _coefficients(xw, t2, w, ctx.eps, ctx.ignore_index, ctx.hard)
        st = num.row_stats(xp, xw, None, 1.0, widened)
        zero = xp.zeros_like(xw)
        terms = zero
        if tx is not None:
            _, gx = num.cross_entropy_rows(xp, st, coef, ctx.z, row_w, True)
            terms = gx * tx.to(work)
        if tt is not None and not ctx.hard:
            dq = num.probability_target_grad(xp, st, ctx.eps, w)
            u = tt.to(work)
            terms = terms + xp.where(u == 0, zero, dq * u)
        rows = num.compensated_sum(xp, terms, widened)[:, 0]
        out, _ = num.reduce(xp, rows, None, denominator, ctx.reduction, widened)
        return out.to(ctx.loss_dtype), None, None

    @staticmethod
    def backward(ctx, grad, *_):
        fused, ctx.fused = ctx.fused, None
        x2, t2, weight, denominator = ctx.saved_tensors
        if fused is not None and plain_eager(grad):
            gx = _fused_gradient(fused, grad, ctx.reduction)
            if gx is not None:
                return gx, None, None, None, None, None, None, None, None
        gx, gt = cross_entropy_backward(
            x2, t2, weight, denominator, grad, ctx.ignore_index, ctx.eps, ctx.z, ctx.reduction, ctx.hard,
            ctx.needs_input_grad[1],
        )
        return gx, gt, None, None, None, None, None, None, None

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
        # d loss / d y = beta softplus(-x) - softplus(x)
        pos = num.softplus(xp, -xw)
        dy = (pos if beta is None else beta * pos) - num.softplus(xp, xw)
        grad_y = (dy * g).to(y.dtype)
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
            pos = num.softplus(xp, -xw)
            d = d + ((pos if beta is None else beta * pos) - num.softplus(xp, xw)) * ty.to(work)
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

