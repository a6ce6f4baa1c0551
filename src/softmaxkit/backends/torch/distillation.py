"""Distillation loss for torch tensors: the autograd Function, its custom operator, the functional API and the nn.Module.

The forward pass runs ``numerics.distillation.distillation_rows`` by chunks
of rows and keeps the gradients it computes in the same pass (of the
reduced loss, for a cotangent of 1); backward scales them by the cotangent.
Under ``torch.compile`` the custom operator ``softmaxkit::distillation_loss``
runs the same pass as one opaque node (see ``execution.apply_function``).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from softmaxkit import numerics as num
from softmaxkit.backends.torch.execution import (
    apply_function,
    as_float,
    autocast_dtype,
    by_rows,
    value_checks,
    working_dtype,
    xp,
)
from softmaxkit.frontend import validate
from softmaxkit.frontend.distillation import mean_reduction, options
from softmaxkit.numerics.distillation import distillation_rows

_LIB = "softmaxkit"


def distillation_forward(s, t, labels, divergence, beta, temperature, scale_t2, ignore_index, hard_label_weight, reduction, want_s, want_t, loss_dtype):
    """``(loss, grad_student, grad_teacher)`` of logit rows ``s``, ``t`` (classes last).

    The loss is reduced (one per row for "none") in ``loss_dtype``; the
    gradients are those of the reduced loss (of each row's loss for "none")
    for a cotangent of 1, in the dtypes of ``s`` and ``t``, or empty
    tensors where not wanted.
    """
    work, widened = working_dtype(torch.promote_types(s.dtype, t.dtype), s.device)
    n_classes = s.shape[-1]
    reduction = mean_reduction(reduction)
    rows = s if labels is None else labels
    denominator = num.mean_denominator(xp, rows, None, ignore_index, work, labels is None)
    want = want_s or want_t

    def compute(s2, t2, y):
        hot = None if y is None else num.one_hot(xp, y, n_classes, ignore_index, work)
        loss, gs, gt = distillation_rows(
            xp, s2.to(work), t2.to(work), hot, divergence=divergence, beta=beta, temperature=temperature,
            scale_t2=scale_t2, hard_label_weight=hard_label_weight, widened=widened, want_grad=want,
        )
        if not want:
            return (loss,)
        return loss, num.reduce_grad(xp, gs, denominator, reduction).to(s.dtype), num.reduce_grad(xp, gt, denominator, reduction).to(t.dtype)

    parts = by_rows(compute, s, t, labels)
    out, _ = num.reduce(xp, parts[0], None, denominator, reduction, widened)
    empty = s.new_empty((0,))
    gs = parts[1] if want_s else empty
    gt = parts[2] if want_t else empty
    return out.to(loss_dtype), gs, gt


def _scaled(g, grad, reduction):
    """A saved gradient times the cotangent ``grad`` (one per row for "none")."""
    if grad is None or g.numel() == 0:
        return None
    scale = grad[:, None] if reduction == "none" else grad
    return (g * scale).to(g.dtype)


class DistillationFunction(torch.autograd.Function):
    """Distillation loss of logit rows (classes last); the gradients of both
    logits are computed in the forward pass and scaled by the cotangent in backward."""

    @staticmethod
    def forward(s, t, labels, divergence, beta, temperature, scale_t2, ignore_index, hard_label_weight, reduction, want_s, want_t, loss_dtype):
        return distillation_forward(
            s, t, labels, divergence, beta, temperature, scale_t2, ignore_index, hard_label_weight, reduction, want_s, want_t, loss_dtype
        )

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.reduction = inputs[9]
        ctx.save_for_backward(output[1], output[2])
        ctx.mark_non_differentiable(output[1], output[2])
        ctx.set_materialize_grads(False)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad, *_):
        gs, gt = ctx.saved_tensors
        return (_scaled(gs, grad, ctx.reduction), _scaled(gt, grad, ctx.reduction)) + (None,) * 11


@torch.library.custom_op(f"{_LIB}::distillation_loss", mutates_args=())
def _distillation_op(
    s: Tensor,
    t: Tensor,
    labels: Optional[Tensor],
    divergence: str,
    beta: float,
    temperature: float,
    scale_t2: bool,
    ignore_index: int,
    hard_label_weight: float,
    reduction: str,
    want_s: bool,
    want_t: bool,
    loss_dtype: torch.dtype,
) -> tuple[Tensor, Tensor, Tensor]:
    with torch.no_grad():
        out = distillation_forward(
            s, t, labels, divergence, beta, temperature, scale_t2, ignore_index, hard_label_weight, reduction, want_s, want_t, loss_dtype
        )
    return tuple(o.contiguous() for o in out)


@_distillation_op.register_fake
def _(s, t, labels, divergence, beta, temperature, scale_t2, ignore_index, hard_label_weight, reduction, want_s, want_t, loss_dtype):
    loss = s.new_empty((s.shape[0],) if reduction == "none" else (), dtype=loss_dtype)
    gs = torch.empty_like(s, memory_format=torch.contiguous_format) if want_s else s.new_empty((0,))
    gt = torch.empty_like(t, memory_format=torch.contiguous_format) if want_t else s.new_empty((0,))
    return loss, gs, gt


def _op_setup(ctx, inputs, output):
    ctx.reduction = inputs[9]
    ctx.save_for_backward(output[1], output[2])


def _op_grad(ctx, grad, *_):
    gs, gt = ctx.saved_tensors
    return (_scaled(gs, grad, ctx.reduction), _scaled(gt, grad, ctx.reduction)) + (None,) * 11


_distillation_op.register_autograd(_op_grad, setup_context=_op_setup)


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    *,
    divergence: str = "forward_kl",
    beta: float = 0.5,
    temperature: float = 1.0,
    scale_by_temperature_squared: bool = False,
    target: torch.Tensor | None = None,
    ignore_index: int = -100,
    hard_label_weight: float = 0.0,
    reduction: str = "batchmean",
    dim: int = -1,
) -> torch.Tensor:
    r"""Knowledge-distillation loss with autograd in both logits.

    With ``p = softmax(student / T)``, ``q = softmax(teacher / T)`` along
    ``dim`` and ``f = T**2`` when ``scale_by_temperature_squared``:

    .. math:: \ell = f\,\mathrm{Div}(p, q) + w_h\,\mathrm{CE}(\mathrm{student}, y)

    ``"forward_kl"``: ``KL(q || p)``; ``"reverse_kl"``: ``KL(p || q)``;
    ``"jsd"``: ``beta KL(q || m) + (1 - beta) KL(p || m)``,
    ``m = beta q + (1 - beta) p`` (``beta`` in (0, 1): JSD is 0 at both
    ends, and 0 or 1 raises ``ValueError`` pointing at the KL divergences).

    Parameters
    ----------
    student_logits, teacher_logits : torch.Tensor of the same shape
        Raw logits, classes along ``dim``.  Gradients flow to both where
        they require one (detach the teacher to train the student alone).
    divergence : {"forward_kl", "reverse_kl", "jsd"}, default "forward_kl"
    beta : float, default 0.5
        JSD's mixing weight; ignored by the KL divergences.
    temperature : float > 0, default 1
    scale_by_temperature_squared : bool, default False
    target : integer torch.Tensor, optional
        Class indices of the logits' shape without ``dim``; rows at
        ``ignore_index`` contribute nothing and are not counted by "batchmean".
    ignore_index : int, default -100
    hard_label_weight : float >= 0, default 0
        Weight of the cross-entropy of the raw student logits at ``target``.
    reduction : {"batchmean", "sum", "none"}, default "batchmean"
    dim : int, default -1

    Returns
    -------
    torch.Tensor: a scalar, or the logits' shape without ``dim`` for "none";
    the promoted dtype of the logits (float32 for 16-bit input under autocast).

    Notes
    -----
    The formulas, accuracy contract and edge behaviour are those of
    :func:`softmaxkit.distillation_loss`: 2 ULP (float16, bfloat16, float32
    on CPU) and 8 ULP (float64) of ``max(loss, S)``; rows whose divergence
    is ``+inf`` have zero gradients; fully masked rows give 0.  The forward
    pass computes the gradients of both logits in the same pass over the
    rows (where they require one) and backward scales them by the
    cotangent: a training step reads the logits once.  Backward is not
    itself differentiable.  ``torch.compile(fullgraph=True)`` runs the
    custom operator ``softmaxkit::distillation_loss``.

    Examples
    --------
    >>> import torch, softmaxkit.torch as smt
    >>> s = torch.tensor([[20.0, 0.0]], requires_grad=True)
    >>> smt.distillation_loss(s, torch.tensor([[0.0, -float("inf")]])).backward()
    >>> s.grad  # p - q: torch's softmax(s) - q gives exactly 0 here
    tensor([[-2.0612e-09,  2.0612e-09]])
    """
    s = as_float(student_logits, "student_logits")
    t = as_float(teacher_logits, "teacher_logits")
    o = options(divergence, beta, temperature, scale_by_temperature_squared, target is not None, ignore_index, hard_label_weight, reduction, "target")
    if tuple(t.shape) != tuple(s.shape):
        raise ValueError(f"teacher_logits must have the shape of student_logits {tuple(s.shape)}; got {tuple(t.shape)}")
    if s.ndim == 0:
        raise ValueError("student_logits must have a class dimension; got a 0-d tensor")
    d = validate.axis(dim, s.ndim, "dim")[0]
    n_classes = s.shape[d]
    if n_classes == 0:
        raise ValueError(f"student_logits has an empty class dimension (shape {tuple(s.shape)}); distillation needs at least one class")
    rest = tuple(s.shape[:d]) + tuple(s.shape[d + 1 :])
    labels = None
    if target is not None:
        if not isinstance(target, torch.Tensor):
            raise TypeError(f"target must be a torch.Tensor; got {type(target).__module__}.{type(target).__name__}")
        if validate.target_kind(xp, target, "target") != "int":
            raise TypeError(f"target must hold integer class indices; got dtype {target.dtype}")
        validate.target_shape("int", target.shape, s.shape, d, "target", "student_logits", "dim")
        validate.class_indices(xp, target, n_classes, o.ignore_index, "target", value_checks())
        labels = target.reshape(-1).to(device=s.device, dtype=torch.int64)
    s2 = s.movedim(d, -1).reshape(-1, n_classes)
    t2 = t.to(s.device).movedim(d, -1).reshape(-1, n_classes)
    loss_dtype = autocast_dtype(torch.promote_types(s.dtype, t.dtype), s.device, True)
    grad_on = torch.is_grad_enabled()
    loss = apply_function(
        DistillationFunction, _distillation_op,
        s2, t2, labels, o.divergence, o.beta, o.temperature, o.scale_t2, o.ignore_index, o.hard_label_weight, o.reduction,
        grad_on and s.requires_grad, grad_on and t.requires_grad, loss_dtype,
    )[0]
    return loss.reshape(rest) if o.reduction == "none" else loss


class DistillationLoss(torch.nn.Module):
    """Module form of :func:`distillation_loss`: the options at construction, ``forward(student_logits, teacher_logits, target=None)``.

    Parameters
    ----------
    divergence, beta, temperature, scale_by_temperature_squared, ignore_index, hard_label_weight, reduction, dim
        As in :func:`distillation_loss`.

    Examples
    --------
    >>> import torch, softmaxkit.torch as smt
    >>> loss = smt.DistillationLoss(temperature=2.0, scale_by_temperature_squared=True)
    >>> loss(torch.zeros(2, 3), torch.zeros(2, 3))
    tensor(0.)
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
        dim: int = -1,
    ) -> None:
        super().__init__()
        # Checked now, so that a bad option fails at construction.
        options(divergence, beta, temperature, scale_by_temperature_squared, True, ignore_index, hard_label_weight, reduction, "target")
        self.divergence = divergence
        self.beta = beta
        self.temperature = temperature
        self.scale_by_temperature_squared = scale_by_temperature_squared
        self.ignore_index = ignore_index
        self.hard_label_weight = hard_label_weight
        self.reduction = reduction
        self.dim = dim

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        return distillation_loss(
            student_logits,
            teacher_logits,
            divergence=self.divergence,
            beta=self.beta,
            temperature=self.temperature,
            scale_by_temperature_squared=self.scale_by_temperature_squared,
            target=target,
            ignore_index=self.ignore_index,
            hard_label_weight=self.hard_label_weight,
            reduction=self.reduction,
            dim=self.dim,
        )


def entry(student_logits, teacher_logits, *, divergence, beta, temperature, scale_by_temperature_squared, targets, ignore_index, hard_label_weight, reduction, axis, return_grad):
    """``softmaxkit.distillation_loss`` on torch tensors: :func:`distillation_loss`, and with
    ``return_grad`` the gradients of the loss (of ``loss.sum()`` for "none") in both logits."""
    return_grad = validate.flag(return_grad, "return_grad")
    s = as_float(student_logits, "student_logits")
    t = teacher_logits if isinstance(teacher_logits, torch.Tensor) else validate.same_namespace(xp, teacher_logits, "teacher_logits")
    t = as_float(t, "teacher_logits")
    y = targets if targets is None or isinstance(targets, torch.Tensor) else validate.same_namespace(xp, targets, "targets")

    def loss_fn(a, b):
        return distillation_loss(
            a, b, divergence=divergence, beta=beta, temperature=temperature,
            scale_by_temperature_squared=scale_by_temperature_squared, target=y, ignore_index=ignore_index,
            hard_label_weight=hard_label_weight, reduction=reduction, dim=axis,
        )

    if not return_grad:
        return loss_fn(s, t)
    leaves = [a if a.requires_grad else a.detach().requires_grad_(True) for a in (s, t)]
    with torch.enable_grad():
        loss = loss_fn(*leaves)
    grads = torch.autograd.grad(loss.sum(), leaves, retain_graph=s.requires_grad or t.requires_grad)
    return (loss if loss.requires_grad and (s.requires_grad or t.requires_grad) else loss.detach()), grads
