"""nn.Module wrappers with torch's constructor arguments: switch by changing an import."""

from __future__ import annotations

import warnings

import torch

from softmaxkit.backends.torch import functional


def _legacy_reduction(size_average, reduce, reduction: str) -> str:
    """torch's mapping of the deprecated ``size_average``/``reduce`` pair."""
    if size_average is None and reduce is None:
        return reduction
    warnings.warn("size_average and reduce are deprecated; use reduction", DeprecationWarning, stacklevel=4)
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    if not reduce:
        return "none"
    return "mean" if size_average else "sum"


class _WeightedLoss(torch.nn.Module):
    """A loss with a ``weight`` buffer and torch's reduction arguments."""

    def __init__(self, weight: torch.Tensor | None, size_average, reduce, reduction: str) -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.reduction = _legacy_reduction(size_average, reduce, reduction)


class CrossEntropyLoss(_WeightedLoss):
    """Drop-in for ``torch.nn.CrossEntropyLoss``, plus ``z_loss``.

    See :func:`softmaxkit.torch.cross_entropy` for the formula, accuracy and
    the answers softmaxkit defines where torch gives NaN.

    Parameters
    ----------
    weight : torch.Tensor of shape (C,), optional
        Registered as a buffer, so ``.to(device)`` moves it.
    size_average, reduce : deprecated, as in torch.
    ignore_index : int, default -100
    reduction : {"mean", "sum", "none"}, default "mean"
    label_smoothing : float in [0, 1], default 0
    z_loss : float >= 0, default 0

    Examples
    --------
    >>> import torch, softmaxkit.torch as smt
    >>> loss = smt.CrossEntropyLoss(ignore_index=0)
    >>> loss(torch.zeros(2, 3), torch.tensor([0, 0]))  # torch gives nan
    tensor(0.)
    """

    def __init__(
        self,
        weight: torch.Tensor | None = None,
        size_average=None,
        ignore_index: int = -100,
        reduce=None,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
        *,
        z_loss: float = 0.0,
    ) -> None:
        super().__init__(weight, size_average, reduce, reduction)
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing
        self.z_loss = z_loss

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return functional.cross_entropy(
            input,
            target,
            weight=self.weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            label_smoothing=self.label_smoothing,
            z_loss=self.z_loss,
        )

    def extra_repr(self) -> str:
        return f"ignore_index={self.ignore_index}, reduction={self.reduction!r}, label_smoothing={self.label_smoothing}, z_loss={self.z_loss}"


class NLLLoss(_WeightedLoss):
    """Drop-in for ``torch.nn.NLLLoss``.

    See :func:`softmaxkit.torch.nll_loss`.

    Parameters
    ----------
    weight : torch.Tensor of shape (C,), optional
        Registered as a buffer, so ``.to(device)`` moves it.
    size_average, reduce : deprecated, as in torch.
    ignore_index : int, default -100
    reduction : {"mean", "sum", "none"}, default "mean"

    Examples
    --------
    >>> import torch, softmaxkit.torch as smt
    >>> smt.NLLLoss()(torch.zeros(2, 3), torch.tensor([-100, -100]))  # torch gives nan
    tensor(0.)
    """

    def __init__(
        self,
        weight: torch.Tensor | None = None,
        size_average=None,
        ignore_index: int = -100,
        reduce=None,
        reduction: str = "mean",
    ) -> None:
        super().__init__(weight, size_average, reduce, reduction)
        self.ignore_index = ignore_index

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return functional.nll_loss(input, target, weight=self.weight, ignore_index=self.ignore_index, reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"ignore_index={self.ignore_index}, reduction={self.reduction!r}"


class BCEWithLogitsLoss(_WeightedLoss):
    """Drop-in for ``torch.nn.BCEWithLogitsLoss``.

    See :func:`softmaxkit.torch.binary_cross_entropy_with_logits`.

    Parameters
    ----------
    weight : torch.Tensor, optional
        Broadcastable to the input; registered as a buffer.
    size_average, reduce : deprecated, as in torch.
    reduction : {"mean", "sum", "none"}, default "mean"
    pos_weight : torch.Tensor, optional
        Broadcastable to the input; registered as a buffer.
    """

    def __init__(
        self,
        weight: torch.Tensor | None = None,
        size_average=None,
        reduce=None,
        reduction: str = "mean",
        pos_weight: torch.Tensor | None = None,
    ) -> None:
        super().__init__(weight, size_average, reduce, reduction)
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return functional.binary_cross_entropy_with_logits(input, target, self.weight, reduction=self.reduction, pos_weight=self.pos_weight)


class _SoftmaxFamily(torch.nn.Module):
    def __init__(self, dim: int | None = None) -> None:
        super().__init__()
        self.dim = dim

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class Softmax(_SoftmaxFamily):
    """Drop-in for ``torch.nn.Softmax``; see :func:`softmaxkit.torch.softmax`.

    Parameters
    ----------
    dim : int, optional
        ``None`` follows torch's deprecated implicit rule, with a warning.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return functional.softmax(input, self.dim)


class LogSoftmax(_SoftmaxFamily):
    """Drop-in for ``torch.nn.LogSoftmax``; see :func:`softmaxkit.torch.log_softmax`.

    Parameters
    ----------
    dim : int, optional
        ``None`` follows torch's deprecated implicit rule, with a warning.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return functional.log_softmax(input, self.dim)
