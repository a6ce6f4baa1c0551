"""The torch backend's operations as PyTorch custom operators (``torch.ops.softmaxkit.*``).

Each operator runs the same pass as the autograd Functions
(:mod:`.functions`): on CPU the native kernels, zero-copy, where they can
run, and the shared formulas elsewhere (CUDA and other devices).  Each has a
fake implementation (shapes and dtypes only) for tracing and a registered
autograd formula, so that under ``torch.compile(fullgraph=True)`` every
operation is one opaque node in the graph, forward and backward, with no
graph break and no recompilation per shape.

Operators (the classes of ``x`` lie along ``dim`` or ``cdim``; nothing is moved):

* ``softmax(x, dim, temperature, log)`` and ``softmax_backward(y, grad, dim, temperature, log)``;
* ``logsumexp(x, dim)`` and ``logsumexp_backward(x, grad, dim)``;
* ``cross_entropy(x, target, cdim, weight, ignore_index, label_smoothing,
  z_loss, reduction, hard, loss_dtype) -> (loss, denominator)`` (the loss
  per row for reduction "none", rows in the C order of ``x``'s shape
  without ``cdim``) and ``cross_entropy_backward(...) -> (grad_x, grad_target)``;
* ``binary_cross_entropy_with_logits(x, y, weight, pos_weight, reduction,
  loss_dtype)`` and its ``_backward``.

Backward operators are differentiable too (double backward): their own
gradient is the vector-Jacobian product of the differentiable formulas,
which run outside the operators.

Outputs are always new contiguous tensors.  Operators run with gradient
recording off: they are leaves for autograd, whose formula is registered.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from softmaxkit.backends.torch import functions as fn
from softmaxkit.backends.torch.execution import working_dtype

_LIB = "softmaxkit"


def _run(compute, *args):
    """``compute(*args)`` without recording gradients, as contiguous tensors (None stays None)."""
    with torch.no_grad():
        out = compute(*args)
    if isinstance(out, tuple):
        return tuple(None if o is None else o.contiguous() for o in out)
    return out.contiguous()


# --- softmax and log_softmax --------------------------------------------------


@torch.library.custom_op(f"{_LIB}::softmax", mutates_args=())
def softmax(x: Tensor, dim: int, temperature: float, log: bool) -> Tensor:
    return _run(fn.softmax_forward, x, dim, temperature, log)


@softmax.register_fake
def _(x, dim, temperature, log):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.custom_op(f"{_LIB}::softmax_backward", mutates_args=())
def softmax_backward(y: Tensor, grad: Tensor, dim: int, temperature: float, log: bool) -> Tensor:
    return _run(fn.softmax_backward, y, grad, dim, temperature, log)


@softmax_backward.register_fake
def _(y, grad, dim, temperature, log):
    return torch.empty_like(y, memory_format=torch.contiguous_format)


def _softmax_setup(ctx, inputs, output):
    _, ctx.dim, ctx.temperature, ctx.log = inputs
    ctx.save_for_backward(output)


def _softmax_grad(ctx, grad):
    (y,) = ctx.saved_tensors
    return softmax_backward(y, grad, ctx.dim, ctx.temperature, ctx.log), None, None, None


softmax.register_autograd(_softmax_grad, setup_context=_softmax_setup)


def _softmax_backward_setup(ctx, inputs, output):
    y, grad, ctx.dim, ctx.temperature, ctx.log = inputs
    ctx.save_for_backward(y, grad)


def _softmax_backward_grad(ctx, gg):
    y, grad = ctx.saved_tensors
    _, vjp = torch.func.vjp(lambda a, b: fn.softmax_backward(a, b, ctx.dim, ctx.temperature, ctx.log), y, grad)
    return (*vjp(gg), None, None, None)


softmax_backward.register_autograd(_softmax_backward_grad, setup_context=_softmax_backward_setup)


# --- logsumexp ----------------------------------------------------------------


@torch.library.custom_op(f"{_LIB}::logsumexp", mutates_args=())
def logsumexp(x: Tensor, dim: int) -> Tensor:
    return _run(fn.logsumexp_forward, x, dim)


@logsumexp.register_fake
def _(x, dim):
    return x.new_empty(x.shape[:dim] + x.shape[dim + 1 :])


@torch.library.custom_op(f"{_LIB}::logsumexp_backward", mutates_args=())
def logsumexp_backward(x: Tensor, grad: Tensor, dim: int) -> Tensor:
    return _run(fn.logsumexp_backward, x, grad, dim)


@logsumexp_backward.register_fake
def _(x, grad, dim):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _save_tensors_and_dim(ctx, inputs, output):
    *tensors, ctx.dim = inputs
    ctx.save_for_backward(*tensors)


def _logsumexp_grad(ctx, grad):
    (x,) = ctx.saved_tensors
    return logsumexp_backward(x, grad, ctx.dim), None


def _logsumexp_backward_grad(ctx, gg):
    x, grad = ctx.saved_tensors
    _, vjp = torch.func.vjp(lambda a, b: fn.logsumexp_backward(a, b, ctx.dim), x, grad)
    return (*vjp(gg), None)


logsumexp.register_autograd(_logsumexp_grad, setup_context=_save_tensors_and_dim)
logsumexp_backward.register_autograd(_logsumexp_backward_grad, setup_context=_save_tensors_and_dim)


# --- cross-entropy ------------------------------------------------------------


@torch.library.custom_op(f"{_LIB}::cross_entropy", mutates_args=())
def cross_entropy(
    x: Tensor,
    target: Tensor,
    cdim: int,
    weight: Optional[Tensor],
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    reduction: str,
    hard: bool,
    loss_dtype: torch.dtype,
) -> tuple[Tensor, Tensor]:
    loss, denominator, _ = _run(
        fn.cross_entropy_forward, x, target, cdim, weight, ignore_index, label_smoothing, z_loss, reduction, hard, loss_dtype
    )
    return loss, denominator


@cross_entropy.register_fake
def _(x, target, cdim, weight, ignore_index, label_smoothing, z_loss, reduction, hard, loss_dtype):
    work, _ = working_dtype(x.dtype, x.device)
    shape = (x.numel() // x.shape[cdim],) if reduction == "none" else ()
    return x.new_empty(shape, dtype=loss_dtype), x.new_empty((), dtype=work)


@torch.library.custom_op(f"{_LIB}::cross_entropy_backward", mutates_args=())
def cross_entropy_backward(
    x: Tensor,
    target: Tensor,
    cdim: int,
    weight: Optional[Tensor],
    denominator: Tensor,
    grad: Tensor,
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    reduction: str,
    hard: bool,
    want_target: bool,
) -> tuple[Tensor, Tensor]:
    gx, gt = _run(
        fn.cross_entropy_backward,
        x, target, cdim, weight, denominator, grad, ignore_index, label_smoothing, z_loss, reduction, hard, want_target,
    )
    return gx, (gt if gt is not None else target.new_empty((0,)))


@cross_entropy_backward.register_fake
def _(x, target, cdim, weight, denominator, grad, ignore_index, label_smoothing, z_loss, reduction, hard, want_target):
    gt = torch.empty_like(target, memory_format=torch.contiguous_format) if want_target else target.new_empty((0,))
    return torch.empty_like(x, memory_format=torch.contiguous_format), gt


def _cross_entropy_setup(ctx, inputs, output):
    x, target, ctx.cdim, weight, ctx.ignore_index, ctx.eps, ctx.z, ctx.reduction, ctx.hard, _ = inputs
    ctx.save_for_backward(x, target, weight, output[1])


def _cross_entropy_grad(ctx, grad, _):
    x, target, weight, denominator = ctx.saved_tensors
    want_target = ctx.needs_input_grad[1]
    gx, gt = cross_entropy_backward(
        x, target, ctx.cdim, weight, denominator, grad, ctx.ignore_index, ctx.eps, ctx.z, ctx.reduction, ctx.hard,
        want_target,
    )
    return gx, (gt if want_target else None), None, None, None, None, None, None, None, None


cross_entropy.register_autograd(_cross_entropy_grad, setup_context=_cross_entropy_setup)


# --- binary cross-entropy -----------------------------------------------------


@torch.library.custom_op(f"{_LIB}::binary_cross_entropy_with_logits", mutates_args=())
def binary_cross_entropy_with_logits(
    x: Tensor, y: Tensor, weight: Optional[Tensor], pos_weight: Optional[Tensor], reduction: str, loss_dtype: torch.dtype
) -> Tensor:
    return _run(fn.binary_cross_entropy_forward, x, y, weight, pos_weight, reduction, loss_dtype)


@binary_cross_entropy_with_logits.register_fake
def _(x, y, weight, pos_weight, reduction, loss_dtype):
    return x.new_empty(x.shape if reduction == "none" else (), dtype=loss_dtype)


@torch.library.custom_op(f"{_LIB}::binary_cross_entropy_with_logits_backward", mutates_args=())
def binary_cross_entropy_with_logits_backward(
    x: Tensor, y: Tensor, weight: Optional[Tensor], pos_weight: Optional[Tensor], grad: Tensor, reduction: str
) -> tuple[Tensor, Tensor]:
    return _run(fn.binary_cross_entropy_backward, x, y, weight, pos_weight, grad, reduction, True, True)


@binary_cross_entropy_with_logits_backward.register_fake
def _(x, y, weight, pos_weight, grad, reduction):
    return torch.empty_like(x, memory_format=torch.contiguous_format), torch.empty_like(y, memory_format=torch.contiguous_format)


def _bce_setup(ctx, inputs, output):
    x, y, weight, pos_weight, ctx.reduction, _ = inputs
    ctx.save_for_backward(x, y, weight, pos_weight)


def _bce_grad(ctx, grad):
    x, y, weight, pos_weight = ctx.saved_tensors
    gx, gy = binary_cross_entropy_with_logits_backward(x, y, weight, pos_weight, grad, ctx.reduction)
    return gx, gy, None, None, None, None


binary_cross_entropy_with_logits.register_autograd(_bce_grad, setup_context=_bce_setup)
