"""``vocab_parallel_linear_cross_entropy``: the fused linear loss with the output layer's rows split across ranks.

Each rank holds a slice of the weight's rows (the classes) and runs the
single-device fused pass (``frontend.linear.fused_pass``) on it: a chunk of
tokens at a time it forms that chunk's logits for its classes, and the ranks
exchange the chunk's row totals (``rounds.Rounds``) before each writes its
slice of the gradient.  Chunks are sized for the widest slice, so every rank
runs the same number of them.  The hidden states' gradient is each rank's
``g @ W_slice`` summed over the group in float32 (one all-reduce of
``N x H``), then rounded once.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from softmaxkit.backends.torch import linear as _torch_linear
from softmaxkit.backends.torch.distributed import group as _group
from softmaxkit.backends.torch.distributed.cross_entropy import check_slice_arguments
from softmaxkit.backends.torch.distributed.rounds import Rounds
from softmaxkit.backends.torch.execution import as_float, loss_options, xp
from softmaxkit.frontend import linear as _linear
from softmaxkit.frontend import validate
from softmaxkit.numerics import linear as lin

_NAME = "vocab_parallel_linear_cross_entropy"


def _pass(h, w, b, t, class_w, slices, ignore_index, eps, z, softcap, reduction, normalizer, want_grad, row_scale=None):
    """``(loss rows, rounds, reduction rule, denominator, (d_hidden, d_weight, d_bias))`` of one pass; every rank takes part."""
    work = _torch_linear.work_dtype(h, w, b)
    # A soft cap hands each chunk's capped logits over in float64 (fused_pass).
    rounds = Rounds(slices, t, class_w, ignore_index, eps, z, torch.float64 if softcap is not None else work, h.device)
    total = rounds.target_weight_total() if reduction == "mean" else None
    rule, denominator = lin.normalized(reduction, total, None if normalizer is None else torch.tensor(normalizer, dtype=torch.float64))
    divide = denominator if rule == "mean" else None

    def row_loss(logits, grad, rows):
        totals = rounds.totals(logits, rows)
        return rounds.loss_rows(logits, rows, totals, grad, divide)

    loss, dh, dw, db = _torch_linear.head_pass(
        h, w, b, row_loss, want_grad=want_grad, computable=rule != "mean" or float(denominator) != 0,
        work=work, softcap=softcap, live=_linear.live_rows(xp, t, ignore_index), row_scale=row_scale,
        chunk_classes=slices.widest, hidden_grad_dtype=torch.promote_types(h.dtype, torch.float32),
    )
    if dh is not None:
        dist.all_reduce(dh, op=dist.ReduceOp.SUM, group=slices.group)
        dh = dh.to(h.dtype)
    return loss, rounds, rule, denominator, (dh, dw, db)


def linear_forward(h, w, b, t, class_w, slices, ignore_index, eps, z, softcap, reduction, normalizer, want_grad, loss_dtype):
    """``(loss, d_hidden, d_weight, d_bias)``: the loss and, for "mean" and
    "sum" with ``want_grad``, its gradients for a cotangent of 1 (empty otherwise)."""
    fuse = want_grad and reduction != "none"
    rows, rounds, rule, denominator, grads = _pass(h, w, b, t, class_w, slices, ignore_index, eps, z, softcap, reduction, normalizer, fuse)
    loss = rounds.finish(rows, rule, denominator, loss_dtype)
    empty = h.new_empty((0,))
    if not fuse:
        return loss, empty, w.new_empty((0,)), w.new_empty((0,))
    return (loss,) + _torch_linear.backward_outputs(grads, w)


def linear_backward(h, w, b, t, class_w, grad, slices, ignore_index, eps, z, softcap, reduction, normalizer):
    """The gradients for the cotangent ``grad``, recomputed in one pass (with the row totals' collectives)."""
    scale = _torch_linear.cotangent_scale(grad, h.shape[0])
    grads = _pass(h, w, b, t, class_w, slices, ignore_index, eps, z, softcap, reduction, normalizer, True, scale)[4]
    return _torch_linear.backward_outputs(grads, w)


_Function = _torch_linear.fused_function(linear_forward, linear_backward, 5, "VocabParallelLinearCrossEntropyFunction")


def _check(input, linear_weight, target, linear_bias, weight, vocab_start, ignore_index, label_smoothing, z_loss, reduction, softcap, normalizer):
    """The checks each rank can make alone."""
    h = as_float(input, "input")
    w = as_float(linear_weight, "linear_weight_shard")
    b = None if linear_bias is None else as_float(linear_bias, "linear_bias_shard")
    ignore_index, eps, z, reduction = loss_options(target, ignore_index, label_smoothing, z_loss, reduction)
    if h.ndim < 1:
        raise ValueError("input must have a hidden dimension (its last); got a 0-d tensor")
    if w.ndim != 2 or w.shape[1] != h.shape[-1]:
        raise ValueError(f"linear_weight_shard must have shape (V_local, {h.shape[-1]}) (input's hidden size last); got {tuple(w.shape)}")
    if b is not None and tuple(b.shape) != (w.shape[0],):
        raise ValueError(f"linear_bias_shard must have shape ({w.shape[0]},), one entry per class of the slice; got {tuple(b.shape)}")
    t, class_w, start = check_slice_arguments(h, target, w.shape[0], weight, vocab_start)
    cap = _linear.softcap_value(softcap)
    divisor = _linear.normalizer_value(normalizer, reduction)
    return (h.reshape(-1, h.shape[-1]), w, b, t, class_w, start), (ignore_index, eps, z, cap, reduction, divisor)


# Collectives and host-side checks: one opaque call under torch.compile.
@torch.compiler.disable
def vocab_parallel_linear_cross_entropy(
    input: torch.Tensor,
    linear_weight_shard: torch.Tensor,
    target: torch.Tensor,
    *,
    linear_bias_shard: torch.Tensor | None = None,
    group: Any = None,
    vocab_start: int | None = None,
    weight: torch.Tensor | None = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    reduction: str = "mean",
    normalizer: Any = None,
) -> torch.Tensor:
    r"""Cross-entropy of ``input @ W.T + b`` with the rows of ``W`` (the classes) split across ranks, without the logits.

    Every rank passes the same ``input`` and ``target`` and its own slice of
    the output layer; the loss is :func:`softmaxkit.torch.linear_cross_entropy`'s
    on the whole layer, on every rank.

    .. math:: \ell = \operatorname{cross\_entropy}\bigl(x W^\top + b,\; t\bigr)

    Parameters
    ----------
    input : torch.Tensor of shape (..., H)
        The hidden states, the same on every rank.
    linear_weight_shard : torch.Tensor of shape (V_local, H)
        This rank's rows of the output layer: classes
        ``[vocab_start, vocab_start + V_local)``.
    target : torch.Tensor of shape (...)
        Global class indices (or ``ignore_index``), the same on every rank.
    linear_bias_shard : torch.Tensor of shape (V_local,), optional
    group, vocab_start, weight, ignore_index, label_smoothing, z_loss, reduction
        As in :func:`vocab_parallel_cross_entropy`.
    softcap, normalizer
        As in :func:`softmaxkit.torch.linear_cross_entropy`: Gemma-2's
        ``c tanh(z / c)`` on the logits (with it the chunks' rows go
        through the compensated float64 formulas, slower), and the number a
        ``reduction="sum"`` is divided by (gradient accumulation).

    Returns
    -------
    torch.Tensor: the loss (a scalar, or of ``target``'s shape for "none"),
    equal on every rank.  Differentiable in ``input`` (the gradient is the
    whole layer's, summed over the group: do not sum it again), the weight
    slice and the bias slice.

    Notes
    -----
    No rank ever holds its ``N x V_local`` logits: tokens go through in
    chunks, each with the two all-reduces of
    :func:`vocab_parallel_cross_entropy` on its rows; "mean" with class
    weights adds one all-gather of one number per rank.  The gradients are
    computed in the forward pass (``"none"``: recomputed in backward, with
    each token's cotangent, and the chunks' collectives again), accumulated
    in float32 or wider, and the hidden states' gradient is summed over the
    group in float32 (one all-reduce of ``N x H``).  Accuracy of the loss and
    of the logits' gradient as in :func:`vocab_parallel_cross_entropy`.

    Examples
    --------
    Run with ``torchrun --nproc-per-node 2``; see ``docs/distributed.md``.

    >>> from softmaxkit.torch.distributed import vocab_parallel_linear_cross_entropy  # doctest: +SKIP
    >>> loss = vocab_parallel_linear_cross_entropy(hidden, head.weight, target)  # doctest: +SKIP
    """
    g = _group.process_group(group, _NAME)
    checked, error = _group.checked(
        lambda: _check(
            input, linear_weight_shard, target, linear_bias_shard, weight, vocab_start, ignore_index, label_smoothing, z_loss, reduction,
            softcap, normalizer,
        )
    )
    call, width, prints = {}, 0, (0, 0)
    if error is None:
        (h, w, b, t, class_w, start), (ignore_index, eps, z, cap, reduction, divisor) = checked
        width, prints = w.shape[0], _group.fingerprint(w)
        call = _group.describe(
            t, _group.DTYPES[h.dtype] * 16 + _group.DTYPES[w.dtype],
            _group.option_bits(ignore_index, eps, z, reduction, h.shape[-1], -1.0 if cap is None else cap, -1.0 if divisor is None else divisor), int(class_w is not None) + 2 * int(b is not None),
        )
    else:
        start = None
    slices = _group.agree(g, _NAME, error, width, start, call, prints)
    validate.class_indices(xp, t, slices.vocab, ignore_index, "target")
    want_grad = torch.is_grad_enabled() and any(a is not None and a.requires_grad for a in (h, w, b))
    loss_dtype = torch.promote_types(h.dtype, w.dtype)
    loss = _Function.apply(h, w, b, t, class_w, slices, ignore_index, eps, z, cap, reduction, divisor, want_grad, loss_dtype)[0]
    return loss.reshape(tuple(target.shape)) if reduction == "none" else loss
