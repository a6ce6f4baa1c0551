"""``linear_cross_entropy`` for torch: the fused pass of ``frontend.linear`` with torch's products.

On CPU the per-row loss is the native cross-entropy kernel, on the chunk's
logits where they lie; elsewhere the shared formulas.  Where a gradient is
wanted, the forward pass computes the gradients of the hidden states, the
weight and the bias for a cotangent of 1 (Liger-Kernel's scheme, exact
here), and backward scales them by the cotangent; a second backward, and
every backward of ``reduction="none"`` (a cotangent per token), recomputes
them in one more pass with the cotangent folded in per token.

In eager code an autograd Function runs the pass and hands the gradients
over to backward, so that no copy of them is kept; under ``torch.compile``
the custom operators ``softmaxkit::linear_cross_entropy`` and
``softmaxkit::linear_cross_entropy_backward`` are one opaque node each.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Optional

import torch
from torch import Tensor

from softmaxkit import numerics as num
from softmaxkit.backends.torch.execution import (
    apply_function,
    as_float,
    loss_options,
    triton_kernels,
    triton_ready,
    value_checks,
    xp,
)
from softmaxkit.frontend import linear as _linear
from softmaxkit.frontend import registry, validate
from softmaxkit.numerics import linear as lin


class TorchProducts:
    """The matrix products of ``frontend.linear.fused_pass`` for torch tensors."""

    temporary_bytes = 0

    @staticmethod
    def product_into(out: Tensor, a: Tensor, b: Tensor) -> None:
        torch.mm(a, b, out=out)

    @staticmethod
    def add_product(acc: Tensor, a: Tensor, b: Tensor) -> None:
        acc.addmm_(a, b)


def work_dtype(*tensors: Tensor | None) -> torch.dtype:
    return torch.float64 if any(t is not None and t.dtype == torch.float64 for t in tensors) else torch.float32


def _row_loss(h: Tensor, t: Tensor, class_w: Tensor | None, ignore_index: int, eps: float, z: float, denominator: Tensor, reduction: str, divisor: float | None, softcap: float | None, work: torch.dtype):
    """``(row_loss, bytes per logit it allocates)`` for :func:`head_pass`: the
    Triton kernel where it runs (float32 chunk logits, the soft cap applied
    inside it: :func:`_capped_by_kernel`), else the native kernel on CPU,
    else the shared formulas."""
    if _capped_by_kernel(h, work):
        return _triton_row_loss(t, class_w, ignore_index, eps, z, 1.0 if divisor is None else divisor, softcap), 0
    native = registry.native()
    if native is None or h.device.type != "cpu" or divisor is None:
        return _linear.formula_row_loss(xp, t, class_w, ignore_index, eps, z, denominator, reduction), _linear.FORMULA_BYTES
    inner = _linear.native_row_loss(
        native.into, t.numpy(), None if class_w is None else class_w.numpy(), ignore_index, eps, z, divisor
    )

    def row_loss(logits, grad, rows):
        index = rows if isinstance(rows, slice) else rows.numpy()
        return torch.from_numpy(inner(logits.numpy(), None if grad is None else grad.numpy(), index))

    return row_loss, 0


def _capped_by_kernel(h: Tensor, work: torch.dtype) -> bool:
    """Whether the chunks go to the Triton kernel, which then also applies a
    soft cap (``c tanh(x / c)`` and its slope in float64, inside the kernel),
    so that the pass hands it the uncapped float32 logits."""
    return work == torch.float32 and triton_ready(h)


def _triton_row_loss(t: Tensor, class_w: Tensor | None, ignore_index: int, eps: float, z: float, divisor: float, softcap: float | None):
    """The per-row loss by the Triton cross-entropy kernel: a chunk's float32
    logits are read where they lie, capped in the kernel with ``softcap``,
    and the gradient in the uncapped logits, divided by ``divisor``,
    written into the pass's buffer (over the logits themselves, when that is
    the buffer: the kernel reads each entry before writing it)."""
    rows_fn = triton_kernels("cross_entropy").cross_entropy_rows
    weight = None if class_w is None else class_w.to(torch.float32)

    def row_loss(logits, grad, rows):
        want = grad is not None
        loss, _, _ = rows_fn(
            logits, t[rows], 1, weight, ignore_index, eps, z, want_grad=want, divisor=divisor, grad_out=grad, softcap=softcap
        )
        return loss

    return row_loss


def _rules(t: Tensor, class_w: Tensor | None, ignore_index: int, reduction: str, normalizer: float | None):
    """``(reduction rule, denominator, divisor, live rows)`` of a call; the class indices are checked here."""
    probabilities = t.is_floating_point()
    denominator = num.mean_denominator(xp, t, class_w, ignore_index, torch.float64, probabilities)
    rule, denominator = lin.normalized(reduction, denominator, None if normalizer is None else torch.tensor(normalizer, dtype=torch.float64, device=t.device))
    divisor = num.gradient_divisor(denominator, rule)
    live = None if probabilities else _linear.live_rows(xp, t, ignore_index)
    return rule, denominator, divisor, live


def head_pass(h, w, b, row_loss, **options):
    """``frontend.linear.fused_pass`` with torch's products, gradient
    recording and autocast off: ``(loss rows, d_hidden, d_weight, d_bias)``."""
    with torch.no_grad(), torch.autocast(h.device.type, enabled=False):
        return _linear.fused_pass(xp, TorchProducts, h, w, b, row_loss, **options)


def _pass(h, w, b, t, class_w, ignore_index, eps, z, softcap, reduction, normalizer, want_grad, row_scale=None):
    rule, denominator, divisor, live = _rules(t, class_w, ignore_index, reduction, normalizer)
    work = work_dtype(h, w, b)
    row_loss, loss_bytes = _row_loss(h, t, class_w, ignore_index, eps, z, denominator, rule, divisor, softcap, work)
    grads = head_pass(
        h, w, b, row_loss, want_grad=want_grad, computable=divisor is not None, work=work,
        softcap=None if _capped_by_kernel(h, work) else softcap,
        live=live, row_scale=row_scale, loss_bytes=loss_bytes,
    )
    return grads[0], denominator, rule, grads[1:]


def _empty(like: Tensor) -> Tensor:
    return like.new_empty((0,))


def forward_outputs(loss_rows, denominator, rule, grads, h, w, fuse, loss_dtype):
    """A fused loss operator's ``(loss, d_hidden, d_weight, d_bias)``: the
    reduced loss in ``loss_dtype``, and the forward pass's gradients with
    ``fuse`` (empty tensors otherwise, and for a missing bias)."""
    loss, _ = num.reduce(xp, loss_rows, None, denominator, rule, True)
    if not fuse:
        return loss.to(loss_dtype), _empty(h), _empty(w), _empty(w)
    return (loss.to(loss_dtype),) + backward_outputs(grads, w)


def backward_outputs(grads, w):
    """``(d_hidden, d_weight, d_bias)`` with an empty tensor for a missing bias."""
    dh, dw, db = grads
    return dh, dw, (_empty(w) if db is None else db)


def cotangent_scale(grad: Tensor, n_rows: int) -> Tensor:
    """Each row's cotangent in float64: one per row for "none", the scalar repeated otherwise."""
    return grad.to(torch.float64).reshape(-1).expand(n_rows)


def linear_forward(h, w, b, t, class_w, ignore_index, eps, z, softcap, reduction, normalizer, want_grad, loss_dtype):
    """``(loss, d_hidden, d_weight, d_bias)``: the reduced loss (per token for
    "none") in ``loss_dtype`` and, with ``want_grad`` and a reduced loss, its
    gradients for a cotangent of 1 (empty tensors otherwise)."""
    fuse = want_grad and reduction != "none"
    loss_rows, denominator, rule, grads = _pass(h, w, b, t, class_w, ignore_index, eps, z, softcap, reduction, normalizer, fuse)
    return forward_outputs(loss_rows, denominator, rule, grads, h, w, fuse, loss_dtype)


def linear_backward(h, w, b, t, class_w, grad, ignore_index, eps, z, softcap, reduction, normalizer):
    """The gradients for the cotangent ``grad`` (a scalar, or one per token for "none"), recomputed in one pass."""
    scale = cotangent_scale(grad, h.shape[0])
    return backward_outputs(_pass(h, w, b, t, class_w, ignore_index, eps, z, softcap, reduction, normalizer, True, scale)[3], w)


def _scaled(g: Tensor, cotangent: Tensor) -> Tensor:
    """A forward-pass gradient for the scalar ``cotangent``: as it is for 1, else multiplied (one rounding)."""
    c = cotangent.to(g.dtype)
    return g if bool(c == 1) else g * c


def _has_grads(h: Tensor, dh: Tensor) -> bool:
    return h.numel() > 0 and dh.numel() == h.numel()


def fused_function(forward: Any, backward: Any, n_tensors: int, name: str) -> type:
    """An eager autograd Function for a fused linear loss.

    ``forward(*inputs) -> (loss, d_hidden, d_weight, d_bias)`` with the
    inputs ``(hidden, weight, bias, <other tensors>, <options>, want_grad,
    loss_dtype)``, the first ``n_tensors`` of them tensors (or None); the
    gradients are the forward pass's for a cotangent of 1, or empty.  They
    are handed over to the first backward (then dropped, so no copy is
    kept); later backwards, and losses without them, call
    ``backward(*tensors, cotangent, *options) -> (d_hidden, d_weight, d_bias)``.
    """
    n_inputs = len(inspect.signature(forward).parameters)

    def setup_context(ctx, inputs, output):
        ctx.options = inputs[n_tensors:-2]
        ctx.save_for_backward(*inputs[:n_tensors])
        ctx.grads = output[1:] if _has_grads(inputs[0], output[1]) else None
        ctx.mark_non_differentiable(*output[1:])
        ctx.set_materialize_grads(False)

    def backward_rule(ctx, grad, *_):
        if grad is None:
            return (None,) * n_inputs
        tensors = ctx.saved_tensors
        fused, ctx.grads = ctx.grads, None
        if fused is not None:
            dh, dw, db = (_scaled(g, grad) for g in fused)
        else:
            dh, dw, db = backward(*tensors, grad, *ctx.options)
        return (dh, dw, db if tensors[2] is not None else None) + (None,) * (n_inputs - 3)

    return type(name, (torch.autograd.Function,), {
        "__doc__": f"Eager autograd of :func:`{forward.__name__}` (see :func:`fused_function`).",
        "forward": staticmethod(forward),
        "setup_context": staticmethod(setup_context),
        "backward": staticmethod(backward_rule),
    })


def fake_outputs(h: Tensor, w: Tensor, b: Tensor | None, per_row: bool, want_grad: bool, loss_dtype: torch.dtype):
    """The shapes and dtypes of a fused linear loss operator's outputs (see :func:`fused_function`)."""
    loss = h.new_empty((h.shape[0],) if per_row else (), dtype=loss_dtype)
    if not want_grad or per_row:
        return loss, h.new_empty((0,)), w.new_empty((0,)), w.new_empty((0,))
    return loss, torch.empty_like(h), torch.empty_like(w), (w.new_empty((0,)) if b is None else torch.empty_like(b))


def fake_gradients(h: Tensor, w: Tensor, b: Tensor | None):
    return torch.empty_like(h), torch.empty_like(w), (w.new_empty((0,)) if b is None else torch.empty_like(b))


def register_fused_autograd(op: Any, backward_op: Any, n_tensors: int, n_inputs: int) -> None:
    """Autograd for a fused linear loss operator of ``n_inputs`` arguments
    (under ``torch.compile``): the forward pass's gradients scaled by the
    cotangent, or ``backward_op``."""

    def setup(ctx, inputs, output):
        ctx.options = inputs[n_tensors:-2]
        ctx.has_bias = inputs[2] is not None
        ctx.fused = _has_grads(inputs[0], output[1])
        ctx.save_for_backward(*inputs[:n_tensors], *output[1:])

    def grad_rule(ctx, grad, *_):
        saved = ctx.saved_tensors
        if ctx.fused:
            dh, dw, db = (g * grad.to(g.dtype) for g in saved[n_tensors:])
        else:
            dh, dw, db = backward_op(*saved[:n_tensors], grad, *ctx.options)
        return (dh, dw, db if ctx.has_bias else None) + (None,) * (n_inputs - 3)

    op.register_autograd(grad_rule, setup_context=setup)


LinearCrossEntropyFunction = fused_function(linear_forward, linear_backward, 5, "LinearCrossEntropyFunction")


@torch.library.custom_op("softmaxkit::linear_cross_entropy", mutates_args=())
def linear_cross_entropy_op(
    h: Tensor,
    w: Tensor,
    b: Optional[Tensor],
    t: Tensor,
    class_w: Optional[Tensor],
    ignore_index: int,
    eps: float,
    z: float,
    softcap: Optional[float],
    reduction: str,
    normalizer: Optional[float],
    want_grad: bool,
    loss_dtype: torch.dtype,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    out = linear_forward(h, w, b, t, class_w, ignore_index, eps, z, softcap, reduction, normalizer, want_grad, loss_dtype)
    return tuple(o.contiguous() for o in out)


@linear_cross_entropy_op.register_fake
def _(h, w, b, t, class_w, ignore_index, eps, z, softcap, reduction, normalizer, want_grad, loss_dtype):
    return fake_outputs(h, w, b, reduction == "none", want_grad, loss_dtype)


@torch.library.custom_op("softmaxkit::linear_cross_entropy_backward", mutates_args=())
def linear_cross_entropy_backward_op(
    h: Tensor,
    w: Tensor,
    b: Optional[Tensor],
    t: Tensor,
    class_w: Optional[Tensor],
    grad: Tensor,
    ignore_index: int,
    eps: float,
    z: float,
    softcap: Optional[float],
    reduction: str,
    normalizer: Optional[float],
) -> tuple[Tensor, Tensor, Tensor]:
    out = linear_backward(h, w, b, t, class_w, grad, ignore_index, eps, z, softcap, reduction, normalizer)
    return tuple(o.contiguous() for o in out)


@linear_cross_entropy_backward_op.register_fake
def _(h, w, b, t, class_w, grad, ignore_index, eps, z, softcap, reduction, normalizer):
    return fake_gradients(h, w, b)


register_fused_autograd(linear_cross_entropy_op, linear_cross_entropy_backward_op, 5, 13)


def _host_number(value: Any, name: str) -> Any:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a single number; got a tensor of shape {tuple(value.shape)}")
        return float(value.detach().cpu())
    return value


def linear_cross_entropy(
    input: Tensor,
    linear_weight: Tensor,
    target: Tensor,
    *,
    linear_bias: Tensor | None = None,
    weight: Tensor | None = None,
    reduction: str = "mean",
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    normalizer: Any = None,
) -> Tensor:
    r"""Cross-entropy of ``input @ linear_weight.T + linear_bias`` without the logits; a superset of
    ``torch.nn.functional.linear_cross_entropy``.

    .. math:: \ell = \operatorname{cross\_entropy}\bigl(\operatorname{cap}(x W^\top + b),\; t\bigr),
              \qquad \operatorname{cap}(z) = c \tanh(z / c)

    Parameters
    ----------
    input : torch.Tensor of shape (..., H)
        Hidden states, one row per token.
    linear_weight : torch.Tensor of shape (V, H)
        The head's weight (``lm_head.weight``).
    target : torch.Tensor
        Class indices of shape ``input.shape[:-1]``, or probabilities of
        shape ``input.shape[:-1] + (V,)``.
    linear_bias : torch.Tensor of shape (V,), optional
        A ``-inf`` entry masks its class.
    weight, reduction, ignore_index, label_smoothing, z_loss
        As in :func:`softmaxkit.torch.cross_entropy`.
    softcap : float > 0, optional
        Gemma-2's final-logit soft cap ``c tanh(z / c)``, with its exact
        derivative; infinite logits stay infinite.
    normalizer : number or 1-element tensor, optional
        With ``reduction="sum"``: divide the sum and its gradients by it (a
        gradient-accumulation step's token count, ``num_items_in_batch``);
        0 gives 0 and zero gradients.

    Returns
    -------
    torch.Tensor: a scalar, or one loss per token (``target``'s leading
    shape) for "none"; dtype ``torch.result_type(input, linear_weight)``.
    Differentiable in ``input``, ``linear_weight`` and ``linear_bias``.

    Notes
    -----
    Tokens go through in chunks; per chunk the logits are formed in float32
    (float64 for float64 input; 16-bit inputs widened) and capped in float64,
    and the native cross-entropy kernel writes each row's loss and logit
    gradient, which two products fold into the input and weight gradients
    (accumulated in float32 or wider, rounded once).  So the loss and the
    logit gradient meet :func:`softmaxkit.torch.cross_entropy`'s contract on
    these logits, the target gradient never comes from ``p_t - 1``, and
    peak memory beyond the inputs is about 1.25 times the gradients (plus a
    float32 accumulator for a 16-bit weight).  Tokens with an ignored target
    are skipped.  Results do not depend on the thread count.  A backward
    with a cotangent other than 1 scales the forward pass's gradients (one
    more rounding); "none" recomputes them with each token's cotangent.

    Edge behaviour: every target ignored gives 0 and zero gradients (torch
    gives NaN); a target on a masked class gives ``+inf``.

    Examples
    --------
    >>> import torch, softmaxkit.torch as smt
    >>> h = torch.tensor([[1.0, 0.0]], requires_grad=True)
    >>> w = torch.tensor([[30.0, 0.0], [0.0, 1.0]])
    >>> smt.linear_cross_entropy(h, w, torch.tensor([0])).backward()
    >>> h.grad[0, 0]  # torch.nn.functional.linear_cross_entropy gives 0
    tensor(-2.8073e-12)
    """
    h = as_float(input, "input")
    w = as_float(linear_weight, "linear_weight")
    b = None if linear_bias is None else as_float(linear_bias, "linear_bias")
    ignore_index, eps, z, reduction = loss_options(target, ignore_index, label_smoothing, z_loss, reduction)
    cap = _linear.softcap_value(_host_number(softcap, "softcap"))
    norm = _linear.normalizer_value(_host_number(normalizer, "normalizer"), reduction)
    v, width = _linear.check_shapes(tuple(h.shape), tuple(w.shape), None if b is None else tuple(b.shape), ("input", "linear_weight", "linear_bias"))
    lead = tuple(h.shape[:-1])
    n = math.prod(lead)
    if _linear.check_targets(xp, target, lead, v, ignore_index, "target", value_checks()):
        t = target.reshape(n, v).to(h.device)
    else:
        t = target.reshape(n).to(device=h.device, dtype=torch.int64)
    class_w = None
    if weight is not None:
        class_w = as_float(weight, "weight")
        validate.class_weights(xp, class_w, v, value_checks())
        class_w = class_w.to(device=h.device, dtype=torch.float64)
    h = h.reshape(n, width).contiguous()
    want_grad = torch.is_grad_enabled() and any(a is not None and a.requires_grad for a in (h, w, b))
    loss_dtype = torch.promote_types(h.dtype, w.dtype)
    out = apply_function(
        LinearCrossEntropyFunction, linear_cross_entropy_op,
        h, w.contiguous(), b, t, class_w, ignore_index, eps, z, cap, reduction, norm, want_grad, loss_dtype,
    )
    loss = out[0]
    return loss.reshape(lead) if reduction == "none" else loss


class LinearCrossEntropyLoss(torch.nn.Module):
    """Module form of :func:`linear_cross_entropy`: ``loss(input, linear_weight, target, linear_bias=None)``.

    Parameters
    ----------
    weight : torch.Tensor of shape (V,), optional
        Class weights, registered as a buffer.
    reduction, ignore_index, label_smoothing, z_loss, softcap
        As in :func:`linear_cross_entropy`.

    Examples
    --------
    >>> import torch, softmaxkit.torch as smt
    >>> loss = smt.LinearCrossEntropyLoss(ignore_index=-100)
    >>> loss(torch.zeros(2, 4), torch.zeros(3, 4), torch.tensor([-100, -100]))  # torch gives nan
    tensor(0.)
    """

    def __init__(
        self,
        weight: Tensor | None = None,
        reduction: str = "mean",
        ignore_index: int = -100,
        label_smoothing: float = 0.0,
        *,
        z_loss: float = 0.0,
        softcap: float | None = None,
    ) -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.reduction = validate.reduction(reduction)
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing
        self.z_loss = z_loss
        self.softcap = softcap

    def forward(self, input: Tensor, linear_weight: Tensor, target: Tensor, linear_bias: Tensor | None = None, normalizer: Any = None) -> Tensor:
        return linear_cross_entropy(
            input, linear_weight, target, linear_bias=linear_bias, weight=self.weight, reduction=self.reduction,
            ignore_index=self.ignore_index, label_smoothing=self.label_smoothing, z_loss=self.z_loss,
            softcap=self.softcap, normalizer=normalizer,
        )


def entry(hidden, linear_weight, targets, *, linear_bias, weight, ignore_index, label_smoothing, z_loss, softcap, reduction, normalizer, return_grad):
    """``softmaxkit.linear_cross_entropy`` on torch tensors (the registry's entry)."""
    inputs = [as_float(hidden, "hidden"), as_float(linear_weight, "linear_weight")]
    if linear_bias is not None:
        inputs.append(as_float(linear_bias, "linear_bias"))

    def loss_fn(*args):
        return linear_cross_entropy(
            args[0], args[1], targets, linear_bias=args[2] if len(args) > 2 else None, weight=weight,
            reduction=reduction, ignore_index=ignore_index, label_smoothing=label_smoothing, z_loss=z_loss,
            softcap=softcap, normalizer=normalizer,
        )

    return with_head_grads(loss_fn, inputs, return_grad)


def with_head_grads(loss_fn: Any, inputs: list, return_grad: Any) -> Any:
    """``loss_fn(hidden, weight[, bias])``, and with ``return_grad`` also the
    gradients of ``loss.sum()`` in them (the third None without a bias)."""
    if not validate.flag(return_grad, "return_grad"):
        return loss_fn(*inputs)
    leaves = [a.detach().requires_grad_(True) for a in inputs]
    with torch.enable_grad():
        loss = loss_fn(*leaves)
    grads = torch.autograd.grad(loss.sum(), leaves)
    return loss.detach(), (grads[0], grads[1], grads[2] if len(grads) > 2 else None)
