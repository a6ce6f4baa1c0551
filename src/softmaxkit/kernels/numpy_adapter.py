"""The NumPy adapters: which arrays the kernels take, and the calls on them.

The front end has validated the arguments; these neither validate values
nor reduce (the front end applies the shared loss rules to what they
return).  Anything unusual gives None from :func:`cross_entropy_inputs`, so
that the generic path runs and raises its own errors.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from softmaxkit.kernels import config
from softmaxkit.kernels.config import _kernels
from softmaxkit.kernels.into import bits, is_bfloat16

_FLOATS = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
# Outputs smaller than this come from NumPy: the C allocator's heap keeps and
# reuses memory of that size by itself.
_CACHE_MIN = 4 << 20
_PAGE = 4096


def empty_like(x: np.ndarray) -> np.ndarray:
    """An uninitialised C-contiguous array of ``x``'s shape and dtype, for a kernel's output.

    A cached block holds a page more than the output, which starts half a
    page from ``x`` modulo 4096 (64-byte aligned): a load at the same address
    modulo 4096 as a pending store waits for it, and an output a few cache
    lines ahead of its input slows the streamed kernels down.
    """
    if x.nbytes < _CACHE_MIN or x.nbytes + _PAGE > config.get_output_cache():
        return np.empty(x.shape, x.dtype)
    block = _kernels.block(x.nbytes + _PAGE)
    start = np.frombuffer(block, np.uint8, count=1).ctypes.data
    offset = (x.ctypes.data + _PAGE // 2 - start) % _PAGE // 64 * 64
    return np.frombuffer(block, dtype=x.dtype, count=x.size, offset=offset).reshape(x.shape)


# --- eligibility ---------------------------------------------------------------


def eligible(x: Any, axis: Any) -> bool:
    """Whether ``x`` reduced along ``axis`` can go to the kernels.

    True for a C-contiguous NumPy float16/32/64 or ``ml_dtypes.bfloat16``
    array (native byte order, aligned) reduced along one of its axes, given
    as an int in ``[-x.ndim, x.ndim)``, while the kernels are active.
    Anything else (a tuple of axes, None, a bool, arguments the generic path
    rejects) gives False.
    """
    return (
        config.active()
        and type(x) is np.ndarray
        and type(axis) is int
        and -x.ndim <= axis < x.ndim
        and (x.dtype in _FLOATS or is_bfloat16(x))
        and x.flags.c_contiguous
        and x.flags.aligned
    )


def eligible_pair(x: Any, y: Any, axis: Any) -> bool:
    """:func:`eligible` for ``x``, and ``y`` an array of the same shape and dtype."""
    return (
        eligible(x, axis)
        and type(y) is np.ndarray
        and y.dtype == x.dtype
        and y.shape == x.shape
        and y.flags.c_contiguous
        and y.flags.aligned
    )


# --- the core's entry points (arguments already validated) --------------------


# bfloat16 arrays go to the kernels as their bits (``into.bits``), with the
# flag.  ``axis`` is the reduced axis, any axis of the C-contiguous input.


def _without(shape: tuple, axis: int) -> tuple:
    """``shape`` less ``axis``: the shape of one value per row, in row order."""
    k = axis % len(shape)
    return shape[:k] + shape[k + 1 :]


def softmax(x: np.ndarray, temperature: float, axis: int = -1) -> np.ndarray:
    out = empty_like(x)
    _kernels.softmax(bits(x), bits(out), temperature, False, is_bfloat16(x), axis)
    return out


def log_softmax(x: np.ndarray, temperature: float, axis: int = -1) -> np.ndarray:
    out = empty_like(x)
    _kernels.softmax(bits(x), bits(out), temperature, True, is_bfloat16(x), axis)
    return out


def logsumexp(x: np.ndarray, keepdims: bool, return_sign: bool, axis: int = -1) -> Any:
    out = np.empty(_without(x.shape, axis), dtype=x.dtype)
    _kernels.logsumexp(bits(x), bits(out), is_bfloat16(x), axis)
    if keepdims:
        out = np.expand_dims(out, axis)
    if not return_sign:
        return out
    # a fully masked row (or empty axis) is the only way to get -inf
    sign = np.where(np.isnan(out), out, np.where(out == -np.inf, 0, 1).astype(x.dtype))
    return out, sign


def softmax_vjp(probs: np.ndarray, cotangent: np.ndarray, axis: int = -1) -> np.ndarray:
    out = empty_like(probs)
    _kernels.vjp(bits(probs), bits(cotangent), bits(out), False, is_bfloat16(probs), axis)
    return out


def log_softmax_vjp(log_probs: np.ndarray, cotangent: np.ndarray, axis: int = -1) -> np.ndarray:
    out = empty_like(log_probs)
    _kernels.vjp(bits(log_probs), bits(cotangent), bits(out), True, is_bfloat16(log_probs), axis)
    return out


def _class_indices(targets: np.ndarray, shape: tuple) -> np.ndarray | None:
    """``targets`` as C-contiguous int64, or None where the generic path must run."""
    if targets.dtype.kind not in "iu" or targets.shape != shape:
        return None
    if targets.dtype == np.uint64 and targets.size and targets.max() >= 2**63:
        return None
    # A private copy: the checks and the denominator read the same indices as the kernel.
    return np.array(targets, dtype=np.int64, order="C", copy=True)


def _weights(weight: Any, n: int) -> np.ndarray | None | bool:
    """float64 class weights, None for none, False where the generic path must run."""
    if weight is None:
        return None
    if type(weight) is not np.ndarray or weight.shape != (n,) or weight.dtype.kind not in "fiu":
        return False
    w = np.ascontiguousarray(weight, dtype=np.float64)
    if not bool(np.all(np.isfinite(w))):
        return False
    return w


def cross_entropy_inputs(logits: Any, targets: Any, axis: Any, weight: Any, ignore_index: int) -> Any:
    """``(class_indices, probabilities, weight)`` in the kernel's formats, or None where the generic path must run.

    Exactly one of the first two is an array: int64 class indices of the
    logits' shape without ``axis``, or probabilities of the logits' shape and dtype;
    ``weight`` is float64 or None.  Invalid values give None too, so that
    the generic path raises its own error.
    """
    if not eligible(logits, axis) or type(targets) is not np.ndarray:
        return None
    n = logits.shape[axis]
    if n == 0:
        return None
    w = _weights(weight, n)
    if w is False:
        return None
    if targets.dtype.kind in "iu":
        t = _class_indices(targets, _without(logits.shape, axis))
        if t is None or not -(2**63) <= ignore_index < 2**63:
            return None
        return t, None, w
    if (targets.dtype.kind == "f" or is_bfloat16(targets)) and eligible_pair(logits, targets, axis):
        # a class-naming ignore_index is an error with probabilities
        if ignore_index >= 0 or (targets.size and np.fmin.reduce(targets, axis=None) < 0):
            return None
        return None, targets, w
    return None


def cross_entropy(
    logits, class_indices, probabilities, weight, ignore_index, eps, z_loss, grad_divisor, return_grad, axis=-1
) -> Any:
    """``(per-row losses in float64, gradient or None)``, or None on a class index out of range.

    The losses have the logits' shape without ``axis``; the gradient is that
    of ``loss.sum() / grad_divisor``.
    """
    loss_rows = np.empty(_without(logits.shape, axis), dtype=np.float64)
    grad = empty_like(logits) if return_grad else None
    try:
        _kernels.cross_entropy(
            bits(logits), class_indices, bits(probabilities), weight, loss_rows, bits(grad), ignore_index, eps, z_loss,
            grad_divisor, is_bfloat16(logits), axis,
        )
    except ValueError:
        # a class index out of range: the generic path raises its own error
        return None
    return loss_rows, grad
