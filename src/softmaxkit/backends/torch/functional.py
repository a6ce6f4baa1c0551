"""The functional API of ``softmaxkit.torch``: ``torch.nn.functional`` names and arguments, checked once, over the autograd Functions."""

from __future__ import annotations

import warnings
from typing import Any

import torch

from softmaxkit.frontend.layout import Layout
from softmaxkit import numerics as num
from softmaxkit.frontend import validate
from softmaxkit.backends.torch.execution import (
    apply_function,
    as_float,
    loss_options,
    autocast_dtype,
    value_checks,
    working_dtype,
    xp,
)
from softmaxkit.backends.torch import ops
from softmaxkit.backends.torch.distributed import dtensor
from softmaxkit.backends.torch.functions import (
    BinaryCrossEntropyFunction,
    CrossEntropyFunction,
    LogSumExpFunction,
    SoftmaxFunction,
)


def _implicit_dim(ndim: int, name: str) -> int:
    warnings.warn(
        f"{name} without dim picks one by the legacy rule (dim 0 for 0-, 1- and 3-D input, else 1); pass dim",
        UserWarning,
        stacklevel=3,
    )
    return 0 if ndim in (0, 1, 3) else 1


def _softmax_family(input: Any, dim: Any, dtype: Any, temperature: float, log: bool, name: str) -> torch.Tensor:
    if dtype is not None:
        if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise TypeError(f"dtype must be a floating torch.dtype (for example torch.float32) or None; got {dtype!r}")
        if not isinstance(input, torch.Tensor):
            raise TypeError(f"input must be a torch.Tensor; got {type(input).__module__}.{type(input).__name__}")
        # As torch: cast first, so the gradient goes back through the cast
        # and arrives in the input's own dtype.
        input = input.to(dtype)
    x = as_float(input, "input")
    if dtype is None:
        # torch's autocast policy: float32 on accelerators, as if dtype were given
        x = x.to(autocast_dtype(x.dtype, x.device, False))
    T = validate.temperature(temperature)
    if dim is None:
        dim = _implicit_dim(x.ndim, name)
    d = validate.axis(dim, max(x.ndim, 1), "dim")[0]
    if x.ndim == 0:
        return apply_function(SoftmaxFunction, ops.softmax, x.reshape(1), 0, T, log).reshape(())
    return apply_function(SoftmaxFunction, ops.softmax, x, d, T, log)


def softmax(
    input: torch.Tensor, dim: int | None = None, *, dtype: torch.dtype | None = None, temperature: float = 1.0
) -> torch.Tensor:
    r"""Softmax along ``dim``, exact and NaN-free, with autograd.

    .. math:: \mathrm{softmax}(x)_i = \frac{e^{z_i}}{1 + s},\quad
              z_i = \frac{x_i - a}{T},\; s = \sum_{i \ne k} e^{z_i}

    where ``a = x_k`` is the row maximum (the max term is left out of ``s``).

    Parameters
    ----------
    input : torch.Tensor
        Logits of any shape; integer tensors are promoted to float64.
    dim : int
        The class dimension.  ``None`` follows torch's deprecated implicit
        rule, with a warning.
    dtype : torch.dtype, optional
        A floating dtype to cast ``input`` to before the operation, as in
        torch (for example float32 for a float16 input); the result has this
        dtype and the gradient comes back in ``input``'s dtype.
    temperature : float, default 1.0
        ``T > 0``: ``softmax(x, dim, temperature=T) == softmax(x / T, dim)``.

    Returns
    -------
    torch.Tensor of ``input``'s shape, and its dtype (or ``dtype``).

    Notes
    -----
    float32 and narrower are computed in float64 on CPU (within 2 ULP), in
    compensated float32 on accelerators.  A fully masked row (all ``-inf``)
    gives zeros with a zero gradient; ``+inf`` entries share the mass equally;
    NaN stays in its row.  The backward pass ``p (g - <p, g>) / T`` is itself
    differentiable (double backward), and ``torch.func.vmap``/``grad`` and
    ``torch.compile(fullgraph=True)`` work.

    Examples
    --------
    >>> import torch, softmaxkit.torch as smt
    >>> smt.softmax(torch.tensor([[-float("inf"), -float("inf")]]), dim=1)
    tensor([[0., 0.]])
    """
    return _softmax_family(input, dim, dtype, temperature, False, "softmax")


def log_softmax(
    input: torch.Tensor, dim: int | None = None, *, dtype: torch.dtype | None = None, temperature: float = 1.0
) -> torch.Tensor:
    r"""Log-softmax along ``dim``: ``z_i - log1p(s)``, exact at any margin.

    .. math:: \log\mathrm{softmax}(x)_i = z_i - \operatorname{log1p}(s)

    (notation as in :func:`softmax`).  At the argmax the value is
    ``-log1p(s)``, where ``x - logsumexp(x)`` rounds to 0.

    Parameters
    ----------
    input, dim, dtype, temperature
        As in :func:`softmax`.

    Returns
    -------
    torch.Tensor of ``input``'s shape, and its dtype (or ``dtype``).

    Notes
    -----
    Within 2 ULP for float32 and narrower on CPU.  Fully masked rows give
    ``-inf`` and a zero gradient.  The backward pass ``g - e^y sum(g)`` (over
    entries whose output is not ``-inf``) is differentiable.

    Examples
    --------
    >>> import torch, softmaxkit.torch as smt
    >>> smt.log_softmax(torch.tensor([20.0, 0.0]), dim=0)[0]  # torch gives 0
    tensor(-2.0612e-09)
    """
    return _softmax_family(input, dim, dtype, temperature, True, "log_softmax")


def logsumexp(input: torch.Tensor, dim: int | tuple[int, ...], keepdim: bool = False) -> torch.Tensor:
    r"""``log(sum(exp(input)))`` over ``dim``, as ``a + log1p(s)``.

    .. math:: \operatorname{lse}(x) = a + \operatorname{log1p}\Big(\sum_{i \ne k} e^{x_i - a}\Big)

    Parameters
    ----------
    input : torch.Tensor
    dim : int or tuple of ints
        Dimensions to reduce.
    keepdim : bool, default False

    Returns
    -------
    torch.Tensor with ``dim`` removed (or kept with size 1).

    Notes
    -----
    Blanchard, Higham & Higham (2021), Algorithm 4.1.  Within 2 ULP for
    float32 and narrower on CPU.  A fully masked row or an empty ``dim``
    gives ``-inf`` with a zero gradient; ``+inf`` gives ``+inf``.  The
    gradient, ``softmax(input)``, is recomputed in backward from the input.

    Examples
    --------
    >>> import torch, softmaxkit.torch as smt
    >>> smt.logsumexp(torch.tensor([1000.0, 1000.0]), dim=0)
    tensor(1000.6932)
    """
    x = as_float(input, "input")
    x = x.to(autocast_dtype(x.dtype, x.device, False))
    keepdim = validate.flag(keepdim, "keepdim")
    dims = validate.axis(dim, max(x.ndim, 1), "dim", allow_many=True)
    if x.ndim == 0:
        return apply_function(LogSumExpFunction, ops.logsumexp, x.reshape(1), 0).reshape(())
    if len(dims) == 1:
        out = apply_function(LogSumExpFunction, ops.logsumexp, x, dims[0])
        return out.unsqueeze(dims[0]) if keepdim else out
    # several dims: moved last and flattened into one (a copy unless they already are)
    layout = Layout(xp, tuple(x.shape), dims)
    return layout.back_reduced(apply_function(LogSumExpFunction, ops.logsumexp, layout.rows(x), 1), keepdim)


def _check_weight(weight: Any, n_classes: int, ref: torch.Tensor) -> torch.Tensor | None:
    if weight is None:
        return None
    w = as_float(weight, "weight")
    validate.class_weights(xp, w, n_classes, value_checks())
    return w.to(device=ref.device)


def cross_entropy(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    *,
    z_loss: float = 0.0,
) -> torch.Tensor:
    r"""Softmax cross-entropy, drop-in for ``torch.nn.functional.cross_entropy``.

    With class coefficients ``c`` built from the target, the loss of a row is

    .. math:: \ell = \sum_j c_j\,\big((a - x_j) + \operatorname{log1p}(s)\big)
              + z\, w\, \operatorname{lse}(x)^2

    and its gradient ``(C + 2 z w lse) p - c`` (``C = sum_j c_j``), formed at
    the argmax from the other classes so that confident rows keep their exact,
    non-zero target gradient.

    * class indices ``t``: ``c = (1 - eps) w_t onehot(t) + eps w / K``, where
      ``K`` counts the classes whose logit is not ``-inf``;
    * probabilities ``q``: ``c_j = w_j ((1 - eps) q_j + eps / K)``.

    Parameters
    ----------
    input : torch.Tensor
        Logits of shape (C,), (N, C) or (N, C, d1, ..., dk): the classes are
        dimension 1 (dimension 0 for 1-D input), as in torch.
    target : torch.Tensor
        Integer class indices of shape (), (N,) or (N, d1, ..., dk), or
        non-negative probabilities of ``input``'s shape.
    weight : torch.Tensor of shape (C,), optional
        Finite class weights; negative ones are allowed, as in torch.
    ignore_index : int, default -100
        Class-index targets equal to it contribute no loss and no gradient.
        With probability targets it must be negative (``ValueError``
        otherwise; torch raises ``RuntimeError``).
    reduction : {"mean", "sum", "none"}, default "mean"
        "mean" divides by the summed weights of the non-ignored rows (class
        indices) or by the number of rows (probabilities), as torch does.
    label_smoothing : float in [0, 1], default 0
    z_loss : float >= 0, default 0
        Adds ``z_loss * lse**2`` per row (PaLM's auxiliary loss), times the
        row weight.

    Returns
    -------
    torch.Tensor: a scalar, or per row for ``reduction="none"``; dtype of
    ``input``.  Differentiable in ``input`` and in probability targets.

    Notes
    -----
    Loss and gradient within 2 ULP for float32 and narrower on CPU (class
    indices).  Defined where torch gives NaN: all targets ignored (or a
    total class weight of 0, from weights of both signs) gives 0 with a zero
    gradient; smoothing gives no mass to ``-inf`` classes; a fully
    masked row has a zero gradient.  On CPU the native kernel reads the
    logits where they lie, (N, C, d1, ...) included, and, when they need a
    gradient, writes it in the same pass (backward hands it over); elsewhere
    backward recomputes the softmax chunk by chunk.  Either way no tensor of
    the logits' size is kept besides the gradient.

    A DTensor ``input`` with its classes sharded on a 1-D mesh takes the
    vocabulary-parallel loss
    (:func:`softmaxkit.torch.distributed.vocab_parallel_cross_entropy`) and
    gives a replicated DTensor; see ``docs/distributed.md``.

    Examples
    --------
    >>> import torch, softmaxkit.torch as smt
    >>> x = torch.tensor([[30.0, 0.0]], requires_grad=True)
    >>> smt.cross_entropy(x, torch.tensor([0])).backward()
    >>> x.grad[0, 0]  # torch.nn.functional.cross_entropy gives 0
    tensor(-9.3576e-14)
    """
    if dtensor.is_dtensor(input):
        return dtensor.cross_entropy(input, target, weight, ignore_index, reduction, label_smoothing, z_loss)
    x = as_float(input, "input")
    ignore_index, eps, z, reduction = loss_options(target, ignore_index, label_smoothing, z_loss, reduction)
    if x.ndim == 0:
        raise ValueError("input must have a class dimension; got a 0-d tensor")
    cdim = 0 if x.ndim == 1 else 1
    n_classes = x.shape[cdim]
    if n_classes == 0:
        raise ValueError(f"input has an empty class dimension (shape {tuple(x.shape)}); cross-entropy needs at least one class")
    kind = validate.target_kind(xp, target, "target")
    hard = kind == "int"
    validate.target_shape(kind, target.shape, x.shape, cdim, "target", "input", "dim")
    if hard:
        validate.class_indices(xp, target, n_classes, ignore_index, "target", value_checks())
    else:
        validate.probability_targets_ignore_index(ignore_index, target.dtype, "target")
        validate.probabilities(xp, target, "target", value_checks())
    w = _check_weight(weight, n_classes, x)
    loss = apply_function(
        CrossEntropyFunction, ops.cross_entropy,
        x, target.to(x.device), cdim, w, ignore_index, eps, z, reduction, hard, autocast_dtype(x.dtype, x.device, True),
    )[0]
    if reduction == "none":
        return loss.reshape(tuple(target.shape) if hard else tuple(x.shape[:cdim]) + tuple(x.shape[cdim + 1 :]))
    return loss


# --- negative log-likelihood --------------------------------------------------


def nll_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Negative log-likelihood of class indices, drop-in for ``torch.nn.functional.nll_loss``.

    .. math:: \ell_i = -w_{t_i}\, y_{i, t_i}

    where ``y`` holds log-probabilities (for example :func:`log_softmax`
    output) and ``w`` the class weights (1 without ``weight``).

    Parameters
    ----------
    input : torch.Tensor
        Log-probabilities of shape (C,), (N, C) or (N, C, d1, ..., dk): the
        classes are dimension 1 (dimension 0 for 1-D input), as in torch.
    target : torch.Tensor
        Integer class indices of shape (), (N,) or (N, d1, ..., dk).
    weight : torch.Tensor of shape (C,), optional
        Finite class weights; negative ones are allowed, as in torch.
    ignore_index : int, default -100
        Targets equal to it contribute no loss and no gradient.
    reduction : {"mean", "sum", "none"}, default "mean"
        "mean" divides by the summed weights of the non-ignored targets.

    Returns
    -------
    torch.Tensor: a scalar, or of ``target``'s shape for ``reduction="none"``
    (0 at ignored targets); dtype of ``input``.  Differentiable in ``input``
    (reverse and forward mode, to any order).

    Notes
    -----
    Exact: each term is one product, computed in the working precision
    (float64 for float32 and narrower on CPU) and the reductions use the same
    compensated sum as :func:`cross_entropy`, so the loss is within 1 ULP
    for float32 and narrower and the gradient ``-w_t / sum(w)`` has one
    rounding.  An all-ignored batch, or a total weight of 0, gives a "mean"
    of 0 with a zero gradient (torch gives NaN).  Like :func:`cross_entropy`
    there are no ``size_average``/``reduce`` positional slots; pass
    ``ignore_index`` and ``reduction`` by keyword.  Any integer dtype is
    accepted for ``target`` (torch takes int64 and uint8).

    Examples
    --------
    >>> import torch, softmaxkit.torch as smt
    >>> y = smt.log_softmax(torch.tensor([[20.0, 0.0]]), dim=1)
    >>> smt.nll_loss(y, torch.tensor([0]))  # torch's log_softmax gives 0 here
    tensor(2.0612e-09)
    """
    y = as_float(input, "input")
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor; got {type(target).__module__}.{type(target).__name__}")
    reduction = validate.reduction(reduction)
    ignore_index = validate.integer(ignore_index, "ignore_index")
    if y.ndim == 0:
        raise ValueError("input must have a class dimension; got a 0-d tensor")
    if validate.target_kind(xp, target, "target") != "int":
        raise TypeError(f"target must hold integer class indices; got dtype {target.dtype}")
    cdim = 0 if y.ndim == 1 else 1
    n_classes = y.shape[cdim]
    validate.target_shape("int", target.shape, y.shape, cdim, "target", "input", "dim")
    t = target.to(device=y.device, dtype=torch.int64)
    validate.class_indices(xp, t, n_classes, ignore_index, "target", value_checks())
    w = _check_weight(weight, n_classes, y)
    work, widened = working_dtype(y.dtype, y.device)
    keep = t != ignore_index
    safe = torch.where(keep, t, torch.zeros_like(t))
    # Plain differentiable operations: the gradient (-w_t at the target),
    # forward mode, vmap and batched gradients all follow from autograd.
    picked = y.gather(cdim, safe.unsqueeze(cdim)).squeeze(cdim).to(work)
    row_w = keep.to(work) if w is None else torch.where(keep, w.to(work)[safe], torch.zeros((), dtype=work, device=y.device))
    loss = torch.where(row_w == 0, torch.zeros_like(picked), -(row_w * picked))
    out_dtype = autocast_dtype(y.dtype, y.device, True)
    if reduction == "none":
        return loss.to(out_dtype)
    denominator = num.mean_denominator(xp, t.reshape(-1), None if w is None else w.to(work), ignore_index, work, False)
    out, _ = num.reduce(xp, loss, None, denominator, reduction, widened)
    return out.to(out_dtype)


def binary_cross_entropy_with_logits(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    reduction: str = "mean",
    pos_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Binary cross-entropy from logits, drop-in for torch's functional.

    .. math:: \ell = w\,[\,\beta\, y \operatorname{softplus}(-x) + (1 - y) \operatorname{softplus}(x)\,]

    with ``beta = pos_weight``; each softplus is ``max(x, 0) + log1p(e^{-|x|})``.

    Parameters
    ----------
    input : torch.Tensor
        Logits.
    target : torch.Tensor of ``input``'s shape
        Probabilities in [0, 1].
    weight : torch.Tensor, optional
        Broadcastable to ``input``.
    reduction : {"mean", "sum", "none"}, default "mean"
    pos_weight : torch.Tensor, optional
        Finite (negative values included, as in torch), broadcastable to
        ``input`` (per class along the last dimension).

    Returns
    -------
    torch.Tensor: a scalar, or ``input``'s shape for ``reduction="none"``.
    Differentiable in ``input`` and ``target``.

    Notes
    -----
    No cancellation: the form ``(1 - y) x + softplus(-x)`` loses every digit
    for ``y = 0`` and very negative ``x``.  Within 2 ULP for float32 and
    narrower on CPU (hard targets).  Each term is skipped where its target
    factor is 0, so infinite logits on the agreeing side give 0, not NaN.

    Examples
    --------
    >>> import torch, softmaxkit.torch as smt
    >>> smt.binary_cross_entropy_with_logits(torch.tensor([-40.0]), torch.tensor([0.0]))
    tensor(4.2484e-18)
    """
    x = as_float(input, "input")
    y = as_float(target, "target")
    reduction = validate.reduction(reduction)
    if tuple(y.shape) != tuple(x.shape):
        raise ValueError(f"target must have input's shape {tuple(x.shape)}; got {tuple(y.shape)}")
    validate.binary_targets(xp, y, "target", value_checks())

    def factor(value, name):
        if value is None:
            return None
        f = as_float(value, name).to(x.device)
        return validate.broadcast_to(xp, f, tuple(x.shape), name, "input")

    w = factor(weight, "weight")
    beta = factor(pos_weight, "pos_weight")
    if beta is not None:
        validate.pos_weights(xp, beta, value_checks())
    out_dtype = autocast_dtype(torch.promote_types(x.dtype, y.dtype), x.device, True)
    return apply_function(
        BinaryCrossEntropyFunction, ops.binary_cross_entropy_with_logits,
        x, y, w, beta, reduction, out_dtype,
    )
