"""``linear_distillation_loss`` for torch: distillation between two linear heads without their logits.

The student's head goes through the fused pass of ``frontend.linear`` with
torch's products; the per-row loss is ``frontend.linear_distillation``'s,
which forms the teacher's logits a chunk at a time.  Autograd is the fused
linear cross-entropy's (:func:`.linear.fused_function` in eager code, the
custom operators ``softmaxkit::linear_distillation_loss`` and its backward
under ``torch.compile``).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from softmaxkit.backends.torch.execution import apply_function, as_float, value_checks, xp
from softmaxkit.backends.torch.linear import (
    TorchProducts,
    work_dtype,
    backward_outputs,
    cotangent_scale,
    fake_gradients,
    fake_outputs,
    forward_outputs,
    fused_function,
    head_pass,
    register_fused_autograd,
    with_head_grads,
)
from softmaxkit.frontend import linear as _linear
from softmaxkit.frontend import linear_distillation as _ld
from softmaxkit.frontend import validate
from softmaxkit.frontend.distillation import Options, mean_reduction, options


def _pass(hs, ws, bs, ht, wt, bt, t, divergence, beta, temperature, scale_t2, ignore_index, hard_w, reduction, want_grad, row_scale=None):
    opts = Options(divergence, beta, temperature, scale_t2, ignore_index, hard_w, reduction)
    work = work_dtype(hs, ws, bs, ht, wt, bt)
    denominator, live = _ld.denominator_and_live(xp, t, hs.shape[0], ignore_index)
    rule = mean_reduction(reduction)
    row_loss = _ld.distillation_row_loss(xp, TorchProducts, ht, wt, None if bt is None else bt.to(work), t, opts, denominator)
    grads = head_pass(
        hs, ws, bs, row_loss, want_grad=want_grad, computable=_ld.computable(rule, denominator), work=work,
        softcap=None, live=live, row_scale=row_scale, loss_bytes=_ld.DISTILLATION_BYTES,
    )
    return grads[0], denominator, rule, grads[1:]


def distillation_forward(hs, ws, bs, ht, wt, bt, t, divergence, beta, temperature, scale_t2, ignore_index, hard_w, reduction, want_grad, loss_dtype):
    """``(loss, d_student_hidden, d_student_weight, d_student_bias)``, as
    ``linear.linear_forward`` for the cross-entropy."""
    fuse = want_grad and reduction != "none"
    loss_rows, denominator, rule, grads = _pass(hs, ws, bs, ht, wt, bt, t, divergence, beta, temperature, scale_t2, ignore_index, hard_w, reduction, fuse)
    return forward_outputs(loss_rows, denominator, rule, grads, hs, ws, fuse, loss_dtype)


def distillation_backward(hs, ws, bs, ht, wt, bt, t, grad, divergence, beta, temperature, scale_t2, ignore_index, hard_w, reduction):
    """The student's gradients for the cotangent ``grad``, recomputed in one pass."""
    scale = cotangent_scale(grad, hs.shape[0])
    grads = _pass(hs, ws, bs, ht, wt, bt, t, divergence, beta, temperature, scale_t2, ignore_index, hard_w, reduction, True, scale)[3]
    return backward_outputs(grads, ws)


LinearDistillationFunction = fused_function(distillation_forward, distillation_backward, 7, "LinearDistillationFunction")


@torch.library.custom_op("softmaxkit::linear_distillation_loss", mutates_args=())
def linear_distillation_op(
    hs: Tensor,
    ws: Tensor,
    bs: Optional[Tensor],
    ht: Tensor,
    wt: Tensor,
    bt: Optional[Tensor],
    t: Optional[Tensor],
    divergence: str,
    beta: float,
    temperature: float,
    scale_t2: bool,
    ignore_index: int,
    hard_w: float,
    reduction: str,
    want_grad: bool,
    loss_dtype: torch.dtype,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    out = distillation_forward(hs, ws, bs, ht, wt, bt, t, divergence, beta, temperature, scale_t2, ignore_index, hard_w, reduction, want_grad, loss_dtype)
    return tuple(o.contiguous() for o in out)


@linear_distillation_op.register_fake
def _(hs, ws, bs, ht, wt, bt, t, divergence, beta, temperature, scale_t2, ignore_index, hard_w, reduction, want_grad, loss_dtype):
    return fake_outputs(hs, ws, bs, reduction == "none", want_grad, loss_dtype)


@torch.library.custom_op("softmaxkit::linear_distillation_loss_backward", mutates_args=())
def linear_distillation_backward_op(
    hs: Tensor,
    ws: Tensor,
    bs: Optional[Tensor],
    ht: Tensor,
    wt: Tensor,
    bt: Optional[Tensor],
    t: Optional[Tensor],
    grad: Tensor,
    divergence: str,
    beta: float,
    temperature: float,
    scale_t2: bool,
    ignore_index: int,
    hard_w: float,
    reduction: str,
) -> tuple[Tensor, Tensor, Tensor]:
    out = distillation_backward(hs, ws, bs, ht, wt, bt, t, grad, divergence, beta, temperature, scale_t2, ignore_index, hard_w, reduction)
    return tuple(o.contiguous() for o in out)


@linear_distillation_backward_op.register_fake
def _(hs, ws, bs, ht, wt, bt, t, grad, divergence, beta, temperature, scale_t2, ignore_index, hard_w, reduction):
    return fake_gradients(hs, ws, bs)


register_fused_autograd(linear_distillation_op, linear_distillation_backward_op, 7, 16)


def linear_distillation_loss(
    student_input: Tensor,
    student_weight: Tensor,
    teacher_input: Tensor,
    teacher_weight: Tensor,
    target: Tensor | None = None,
    *,
    student_bias: Tensor | None = None,
    teacher_bias: Tensor | None = None,
    divergence: str = "forward_kl",
    beta: float = 0.5,
    temperature: float = 1.0,
    scale_by_temperature_squared: bool = False,
    ignore_index: int = -100,
    hard_label_weight: float = 0.0,
    reduction: str = "batchmean",
) -> Tensor:
    r""":func:`distillation_loss` of two linear heads, without either's logits.

    .. math:: \ell = \operatorname{distillation\_loss}\bigl(x_s W_s^\top + b_s,\; x_t W_t^\top + b_t\bigr)

    Parameters
    ----------
    student_input : torch.Tensor of shape (..., H_s)
    student_weight : torch.Tensor of shape (V, H_s)
    teacher_input : torch.Tensor of shape (..., H_t)
        The same tokens (same leading shape).
    teacher_weight : torch.Tensor of shape (V, H_t)
    target : torch.Tensor of class indices, optional
        ``student_input``'s leading shape; rows equal to ``ignore_index``
        take no part, and ``hard_label_weight > 0`` adds the student's
        cross-entropy.
    student_bias, teacher_bias : torch.Tensor of shape (V,), optional
    divergence, beta, temperature, scale_by_temperature_squared, ignore_index, hard_label_weight, reduction
        As in :func:`softmaxkit.torch.distillation_loss`.

    Returns
    -------
    torch.Tensor: a scalar, or one loss per token for "none".
    Differentiable in the student's input, weight and bias.  The teacher is
    a constant: a teacher tensor that requires a gradient raises
    ``ValueError`` (detach it), rather than silently getting none.

    Notes
    -----
    See :func:`softmaxkit.linear_distillation_loss`: both heads' logits are
    formed a chunk of tokens at a time in float32 or wider, the row formulas
    are :func:`softmaxkit.torch.distillation_loss`'s, the student's
    gradients are computed in the forward pass (recomputed per token for
    "none"), and peak memory is about 1.25 times the student's gradients.

    Examples
    --------
    >>> import torch, softmaxkit.torch as smt
    >>> hs = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    >>> ws = torch.tensor([[2.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
    >>> wt = torch.tensor([[3.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    >>> loss = smt.linear_distillation_loss(hs, ws, hs.detach(), wt, temperature=2.0)
    >>> loss
    tensor(0.0297, grad_fn=<LinearDistillationFunctionBackward>)
    """
    hs = as_float(student_input, "student_input")
    ws = as_float(student_weight, "student_weight")
    ht = as_float(teacher_input, "teacher_input")
    wt = as_float(teacher_weight, "teacher_weight")
    bs = None if student_bias is None else as_float(student_bias, "student_bias")
    bt = None if teacher_bias is None else as_float(teacher_bias, "teacher_bias")
    opts = options(divergence, beta, temperature, scale_by_temperature_squared, target is not None, ignore_index, hard_label_weight, reduction, "target")
    if torch.is_grad_enabled():
        for name, value in (("teacher_input", ht), ("teacher_weight", wt), ("teacher_bias", bt)):
            if value is not None and value.requires_grad:
                raise ValueError(f"{name} requires a gradient, but the teacher of a fused distillation loss is a constant: pass {name}.detach()")
    v, width = _linear.check_shapes(tuple(hs.shape), tuple(ws.shape), None if bs is None else tuple(bs.shape), ("student_input", "student_weight", "student_bias"))
    _ld.check_teacher_shapes(tuple(hs.shape), tuple(ht.shape), v, tuple(wt.shape), None if bt is None else tuple(bt.shape), ("teacher_input", "teacher_weight", "teacher_bias"))
    lead = tuple(hs.shape[:-1])
    n = math.prod(lead)
    t = None
    if target is not None:
        if not isinstance(target, Tensor):
            raise TypeError(f"target must be a torch.Tensor; got {type(target).__module__}.{type(target).__name__}")
        if validate.target_kind(xp, target, "target") != "int" or tuple(target.shape) != lead:
            raise ValueError(f"target must hold class indices of shape {lead} (student_input's shape without its last dimension); got dtype {target.dtype}, shape {tuple(target.shape)}")
        validate.class_indices(xp, target, v, opts.ignore_index, "target", value_checks())
        t = target.reshape(n).to(device=hs.device, dtype=torch.int64)
    hs2 = hs.reshape(n, width).contiguous()
    ht2 = ht.reshape(n, ht.shape[-1]).contiguous()
    want_grad = torch.is_grad_enabled() and any(a is not None and a.requires_grad for a in (hs2, ws, bs))
    out = apply_function(
        LinearDistillationFunction, linear_distillation_op,
        hs2, ws.contiguous(), bs, ht2, wt.contiguous(), bt, t, opts.divergence, opts.beta, opts.temperature, opts.scale_t2,
        opts.ignore_index, opts.hard_label_weight, opts.reduction, want_grad, torch.promote_types(hs.dtype, ws.dtype),
    )
    loss = out[0]
    return loss.reshape(lead) if opts.reduction == "none" else loss


class LinearDistillationLoss(torch.nn.Module):
    """Module form of :func:`linear_distillation_loss`:
    ``loss(student_input, student_weight, teacher_input, teacher_weight, target=None, student_bias=None, teacher_bias=None)``.

    Parameters
    ----------
    divergence, beta, temperature, scale_by_temperature_squared, ignore_index, hard_label_weight, reduction
        As in :func:`linear_distillation_loss`.

    Examples
    --------
    >>> import torch, softmaxkit.torch as smt
    >>> loss = smt.LinearDistillationLoss(divergence="jsd", beta=0.5)
    >>> float(loss(torch.ones(2, 3), torch.ones(4, 3), torch.ones(2, 3), torch.ones(4, 3)))  # equal heads
    0.0
    """

    def __init__(
        self,
        divergence: str = "forward_kl",
        beta: float = 0.5,
        temperature: float = 1.0,
        scale_by_temperature_squared: bool = False,
        ignore_index: int = -100,
        hard_label_weight: float = 0.0,
        reduction: str = "batchmean",
    ) -> None:
        super().__init__()
        options(divergence, beta, temperature, scale_by_temperature_squared, True, ignore_index, hard_label_weight, reduction, "target")
        self.divergence = divergence
        self.beta = beta
        self.temperature = temperature
        self.scale_by_temperature_squared = scale_by_temperature_squared
        self.ignore_index = ignore_index
        self.hard_label_weight = hard_label_weight
        self.reduction = reduction

    def forward(
        self,
        student_input: Tensor,
        student_weight: Tensor,
        teacher_input: Tensor,
        teacher_weight: Tensor,
        target: Tensor | None = None,
        student_bias: Tensor | None = None,
        teacher_bias: Tensor | None = None,
    ) -> Tensor:
        return linear_distillation_loss(
            student_input, student_weight, teacher_input, teacher_weight, target,
            student_bias=student_bias, teacher_bias=teacher_bias, divergence=self.divergence, beta=self.beta,
            temperature=self.temperature, scale_by_temperature_squared=self.scale_by_temperature_squared,
            ignore_index=self.ignore_index, hard_label_weight=self.hard_label_weight, reduction=self.reduction,
        )


def entry(student_hidden, student_weight, teacher_hidden, teacher_weight, *, student_bias, teacher_bias, targets, divergence, beta, temperature, scale_by_temperature_squared, ignore_index, hard_label_weight, reduction, return_grad):
    """``softmaxkit.linear_distillation_loss`` on torch tensors (the registry's entry)."""
    student = [as_float(student_hidden, "student_hidden"), as_float(student_weight, "student_weight")]
    if student_bias is not None:
        student.append(as_float(student_bias, "student_bias"))

    def loss_fn(*args):
        return linear_distillation_loss(
            args[0], args[1], teacher_hidden, teacher_weight, targets, student_bias=args[2] if len(args) > 2 else None,
            teacher_bias=teacher_bias, divergence=divergence, beta=beta, temperature=temperature,
            scale_by_temperature_squared=scale_by_temperature_squared, ignore_index=ignore_index,
            hard_label_weight=hard_label_weight, reduction=reduction,
        )

    return with_head_grads(loss_fn, student, return_grad)
