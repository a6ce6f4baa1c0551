"""NumPy-style entry points for the core API's dispatch on torch tensors.

``softmaxkit.softmax(tensor, axis=...)`` and friends land here: the
arguments are mapped onto the autograd Functions, so results keep their
autograd history, and ``return_grad=True`` returns the gradient computed by
the Function's backward pass.
"""

from __future__ import annotations

import array_api_compat.torch as xp
import torch

from softmaxkit.frontend import validate as v
from softmaxkit.frontend.layout import Layout
from softmaxkit.backends.torch import functions as F


def _masked(x: torch.Tensor, where) -> torch.Tensor:
    x = F._as_float(x, "x")
    mask = v.where_mask(xp, where, tuple(x.shape))
    return x if mask is None else x.masked_fill(~mask.to(x.device), -float("inf"))


def _over_axes(x: torch.Tensor, axis, fn) -> torch.Tensor:
    axes = v.axis(axis, max(x.ndim, 1), allow_many=True)
    if len(axes) == 1 or x.ndim == 0:
        return fn(x, axes[0])
    layout = Layout(xp, tuple(x.shape), axes)
    return layout.back(fn(layout.forward(x), -1))


def _core_softmax(x, axis, *, temperature, where):
    return _over_axes(_masked(x, where), axis, lambda t, d: F.softmax(t, d, temperature=temperature))


def _core_log_softmax(x, axis, *, temperature, where):
    return _over_axes(_masked(x, where), axis, lambda t, d: F.log_softmax(t, d, temperature=temperature))


def _core_logsumexp(x, axis, *, keepdims, where):
    x = _masked(x, where)
    dims = v.axis(axis, max(x.ndim, 1), allow_many=True)
    return F.logsumexp(x, dims, keepdim=v.flag(keepdims, "keepdims"))


def _with_grad(loss_fn, logits: torch.Tensor):
    """``(loss, d loss.sum() / d logits)`` from the Function's backward."""
    tracked = logits.requires_grad
    leaf = logits if tracked else logits.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = loss_fn(leaf)
    (grad,) = torch.autograd.grad(loss.sum(), leaf, retain_graph=tracked)
    return (loss if tracked else loss.detach()), grad


def _core_cross_entropy(logits, targets, *, axis, weight, ignore_index, label_smoothing, reduction, z_loss, return_grad):
    logits = F._as_float(logits, "logits")
    if logits.ndim == 0:
        raise ValueError("logits must have a class axis; got a 0-d tensor")
    (ax,) = v.axis(axis, logits.ndim)
    targets = v.same_namespace(xp, targets, "targets")
    soft = v.target_kind(xp, targets, "targets") == "float"
    weight = None if weight is None else v.same_namespace(xp, weight, "weight")
    cdim = 0 if logits.ndim == 1 else 1

    def loss_fn(x):
        # torch puts the classes at dim 1; the NumPy API lets the caller choose.
        return F.cross_entropy(
            x.movedim(ax, cdim),
            targets.movedim(ax, cdim) if soft else targets,
            weight,
            ignore_index,
            reduction,
            label_smoothing,
            z_loss=z_loss,
        )

    if not v.flag(return_grad, "return_grad"):
        return loss_fn(logits)
    return _with_grad(loss_fn, logits)


def _core_binary_cross_entropy_with_logits(logits, targets, *, weight, pos_weight, reduction, return_grad):
    logits = F._as_float(logits, "logits")

    def as_tensor(value, name):
        return None if value is None else v.same_namespace(xp, value, name)

    targets, weight, pos_weight = as_tensor(targets, "targets"), as_tensor(weight, "weight"), as_tensor(pos_weight, "pos_weight")

    def loss_fn(x):
        return F.binary_cross_entropy_with_logits(x, F._as_float(targets, "targets"), weight, reduction, pos_weight)

    if not v.flag(return_grad, "return_grad"):
        return loss_fn(logits)
    return _with_grad(loss_fn, logits)
