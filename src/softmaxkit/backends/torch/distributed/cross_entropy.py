"""``vocab_parallel_cross_entropy``: the cross-entropy of logits whose classes are split across the ranks of a group."""

from __future__ import annotations

from typing import Any

import torch

from softmaxkit.backends.torch.distributed import group as _group
from softmaxkit.backends.torch.distributed.rounds import Rounds
from softmaxkit.backends.torch.execution import as_float, loss_options, xp
from softmaxkit.frontend import validate

_NAME = "vocab_parallel_cross_entropy"


class _VocabParallelCrossEntropy(torch.autograd.Function):
    """Forward: the collectives and this slice's part of the loss; for "mean" and
    "sum" the slice's gradient too, handed over by backward.  "none" keeps
    the row totals only and recomputes the gradient with each row's
    cotangent.  Backward never communicates."""

    @staticmethod
    def forward(ctx, x, t, weight, slices, ignore_index, eps, z, reduction):
        rounds = Rounds(slices, t, weight, ignore_index, eps, z, x.dtype, x.device)
        totals = rounds.totals(x, slice(None))
        denominator = rounds.denominator(totals)
        fuse = ctx.needs_input_grad[0] and reduction != "none"
        grad = torch.empty_like(x) if fuse else None
        divide = denominator if reduction == "mean" else None
        rows = rounds.loss_rows(x, slice(None), totals, grad, divide)
        ctx.rounds, ctx.totals, ctx.grad, ctx.reduction = rounds, totals, grad, reduction
        if ctx.needs_input_grad[0] and not fuse:
            ctx.save_for_backward(x)
        return rounds.finish(rows, reduction, denominator, x.dtype)

    @staticmethod
    def backward(ctx, g):
        if ctx.grad is not None:
            grad, ctx.grad = ctx.grad, None
            c = g.to(grad.dtype)
            return (grad if bool(c == 1) else grad * c), None, None, None, None, None, None, None
        (x,) = ctx.saved_tensors
        grad = torch.empty_like(x)
        ctx.rounds.loss_rows(x, slice(None), ctx.totals, grad, row_scale=g.to(torch.float64))
        return grad, None, None, None, None, None, None, None


def check_slice_arguments(input: torch.Tensor, target: Any, width: int, weight: Any, vocab_start: Any):
    """``(targets (n,), class weights or None, vocab_start or None)`` once checked: global
    class indices of ``input``'s shape without its last dimension, ``width`` class
    weights (this rank's slice), a first class ``>= 0``."""
    if validate.target_kind(xp, target, "target") != "int":
        raise TypeError(f"target must hold integer class indices (global ones); got dtype {target.dtype}")
    if tuple(target.shape) != tuple(input.shape[:-1]):
        raise ValueError(f"target must have shape {tuple(input.shape[:-1])} (input's shape without its last dimension); got {tuple(target.shape)}")
    start = None if vocab_start is None else validate.count(vocab_start, "vocab_start", 0)
    w = None
    if weight is not None:
        w = as_float(weight, "weight")
        validate.class_weights(xp, w, width)
        w = w.to(input.device)
    return target.reshape(-1).to(input.device), w, start


def _check(input: Any, target: Any, weight: Any, vocab_start: Any, ignore_index: Any, label_smoothing: Any, z_loss: Any, reduction: Any):
    """The checks each rank can make alone: ``(logits (n, V_local), targets (n,), weight, options)``."""
    x = as_float(input, "input")
    ignore_index, eps, z, reduction = loss_options(target, ignore_index, label_smoothing, z_loss, reduction)
    if x.ndim < 1:
        raise ValueError("input must have a class dimension (its last); got a 0-d tensor")
    t, w, start = check_slice_arguments(x, target, x.shape[-1], weight, vocab_start)
    return x.reshape(target.numel(), x.shape[-1]), t, w, start, (ignore_index, eps, z, reduction)


# Collectives and host-side checks: one opaque call under torch.compile.
@torch.compiler.disable
def vocab_parallel_cross_entropy(
    input: torch.Tensor,
    target: torch.Tensor,
    *,
    group: Any = None,
    vocab_start: int | None = None,
    weight: torch.Tensor | None = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Cross-entropy of logits whose classes are split across the ranks of a process group.

    Every rank passes its contiguous slice of the classes; the loss is that of
    :func:`softmaxkit.torch.cross_entropy` on the concatenated logits, with
    the same formulas and accuracy, and is returned on every rank.  With the
    row maximum ``a`` and ``s = sum_{i != k} exp(x_i - a)`` over the whole
    row, the loss of a row is

    .. math:: \ell = \sum_j c_j\,\big((a - x_j) + \operatorname{log1p}(s)\big) + z\,w_t\,\operatorname{lse}^2

    with ``c = (1 - eps) w_t onehot(t) + eps w / K`` over the row's ``K``
    classes that are not ``-inf`` (all ranks' classes).

    Parameters
    ----------
    input : torch.Tensor of shape (..., V_local)
        This rank's slice of the logits: classes ``[vocab_start, vocab_start + V_local)``.
        Slices may differ in size (0 included).
    target : torch.Tensor of shape (...)
        Global class indices, the same on every rank, or ``ignore_index``.
    group : ProcessGroup, optional
        The ranks that share the vocabulary; the default group if None.
    vocab_start : int, optional
        This rank's first class.  By default the slices follow the ranks'
        order, sized by one all-gather.  Given, it must be given on every
        rank, and the slices must tile ``[0, V)``.
    weight : torch.Tensor of shape (V_local,), optional
        This rank's slice of the class weights (finite, any sign).
    ignore_index, label_smoothing, z_loss, reduction
        As in :func:`softmaxkit.torch.cross_entropy`: smoothing spreads
        over the whole vocabulary, "mean" divides by the summed target
        weights, and a mean over nothing is 0 with a zero gradient.

    Returns
    -------
    torch.Tensor: the loss, a scalar or of ``target``'s shape for "none",
    in ``input``'s dtype, equal on every rank.  Differentiable in ``input``.

    Notes
    -----
    Communication per call (``n`` rows): one all-gather of 11 integers per
    rank (the collective check below), one all-reduce MAX of ``n`` float32
    values (``2n`` with class weights; float64 for float64 logits), one
    all-reduce SUM of ``n + 1`` float64 values (``2n + 1`` with smoothing,
    ``3n + 1`` with smoothing and weights), one all-gather of one float64
    per rank ("mean", "sum") or an all-reduce of ``n`` values ("none");
    never the logits.  A tie of the row maximum across ranks costs one more
    all-reduce of ``n`` float64.  Backward communicates nothing.  Under
    ``torch.compile`` the call is one opaque call (a graph break).

    Accuracy: the rank holding the row maximum leaves it out of its share
    of ``s`` (the ``log1p(s)`` form survives the split) and the target's
    gradient at the argmax is ``(C - c_k) - C s / (1 + s)``, never
    ``p_k - 1``; the shares are summed in float64 (all-gathered and summed
    with compensation for float64 logits).  Loss and gradient are within
    the single-device contract (2 ULP float32 and narrower, 4 ULP float64),
    and the same bit for bit from run to run.

    Faults: every rank checks its arguments and the ranks exchange their
    verdicts in one all-gather before any other collective, so a bad
    argument on one rank (a target out of range, a wrong shape, options or
    targets that differ between ranks, overlapping slices, logits that look
    gathered) raises on every rank.  A rank that never arrives (crashed,
    or not calling) leaves the others waiting until the process group's
    timeout (``init_process_group(timeout=...)``); with gloo, a crashed
    rank's closed connections make the others raise at once.

    Examples
    --------
    Run with ``torchrun --nproc-per-node 2``; see ``docs/distributed.md``.

    >>> import torch, torch.distributed as dist  # doctest: +SKIP
    >>> from softmaxkit.torch.distributed import vocab_parallel_cross_entropy  # doctest: +SKIP
    >>> dist.init_process_group("gloo")  # doctest: +SKIP
    >>> full = torch.tensor([[30.0, 0.0, 0.0, 0.0]], requires_grad=True)  # doctest: +SKIP
    >>> mine = full.detach()[:, 2 * dist.get_rank() : 2 * dist.get_rank() + 2].requires_grad_()  # doctest: +SKIP
    >>> vocab_parallel_cross_entropy(mine, torch.tensor([0]))  # doctest: +SKIP
    tensor(2.8074e-13)
    """
    g = _group.process_group(group, _NAME)
    checked, error = _group.checked(lambda: _check(input, target, weight, vocab_start, ignore_index, label_smoothing, z_loss, reduction))
    x, t, w, start, options = checked if checked is not None else (None, None, None, None, None)
    call = {}
    if error is None:
        ignore_index, eps, z, reduction = options
        call = _group.describe(t, _group.DTYPES[x.dtype], _group.option_bits(ignore_index, eps, z, reduction), int(w is not None))
    slices = _group.agree(
        g, _NAME, error, 0 if x is None else x.shape[-1], start, call, (0, 0) if x is None else _group.fingerprint(x)
    )
    validate.class_indices(xp, t, slices.vocab, ignore_index, "target")
    loss = _VocabParallelCrossEntropy.apply(x, t, w, slices, ignore_index, eps, z, reduction)
    return loss.reshape(tuple(target.shape)) if reduction == "none" else loss
