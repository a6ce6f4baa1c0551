"""Kernels writing into preallocated NumPy arrays, for front ends that own their outputs (torch).

These take C-contiguous NumPy arrays (a CPU ``torch.Tensor`` converts without
a copy with ``.numpy()``; results come back with ``torch.from_numpy``), reduce
along ``axis`` (any axis, without a transposing copy; default the last), and
write into outputs of the input's dtype (float16, float32, float64 or
bfloat16).  bfloat16 comes as ``ml_dtypes.bfloat16``
arrays, or, with ``bfloat16=True``, as 2-byte integer arrays holding its bits
(``tensor.view(torch.uint16).numpy()``): neither NumPy nor torch exports
bfloat16 through the buffer protocol.  They check formats and sizes, not
values: validate arguments before calling them.  Outputs must not overlap the
inputs, except that ``out`` may be ``x`` itself for ``softmax_into`` and
``log_softmax_into``.  See the package docstring for each function's shapes.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np

from softmaxkit.kernels.config import _kernels


def _require() -> Any:
    if _kernels is None:
        raise RuntimeError("the native kernels are not built in this installation of softmaxkit")
    return _kernels


def is_bfloat16(a: Any) -> bool:
    """Whether ``a`` is an array of ``ml_dtypes.bfloat16`` (recognised without importing ml_dtypes).

    The dtype's kind ('V' for ml_dtypes' types) is read first: ``dtype.name``
    takes microseconds, as long as a small kernel call.
    """
    dtype = getattr(a, "dtype", None)
    return getattr(dtype, "kind", None) == "V" and dtype.name == "bfloat16"


def bits(a: Any) -> Any:
    """``a``'s bfloat16 values as uint16 (a view), for the kernels; any other argument as it is."""
    return a.view(np.uint16) if is_bfloat16(a) else a


def _same_memory(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether ``a`` and ``b`` are the same elements in the same layout."""
    return (
        a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
        and a.shape == b.shape
        and a.strides == b.strides
        and a.dtype == b.dtype
    )


def _no_overlap(out: np.ndarray, name: str, *inputs: tuple[str, Any]) -> None:
    for input_name, a in inputs:
        if a is not None and np.may_share_memory(out, a):
            raise ValueError(f"{name} must not overlap {input_name}")


def softmax_into(
    x: np.ndarray, out: np.ndarray, temperature: float = 1.0, *, axis: int = -1, bfloat16: bool = False
) -> np.ndarray:
    """``out[...] = softmax(x, axis=axis, temperature=temperature)``; returns ``out``.

    ``axis``: any axis of ``x``; ``out`` has ``x``'s shape.
    ``bfloat16=True``: ``x`` and ``out`` are 2-byte integer arrays holding
    bfloat16 (implied when ``x`` is an ``ml_dtypes.bfloat16`` array).
    """
    if out is not x:
        _no_overlap(out, "out", ("x", x))
    _require().softmax(bits(x), bits(out), float(temperature), False, bfloat16 or is_bfloat16(x), operator.index(axis))
    return out


def log_softmax_into(
    x: np.ndarray, out: np.ndarray, temperature: float = 1.0, *, axis: int = -1, bfloat16: bool = False
) -> np.ndarray:
    """``out[...] = log_softmax(x, axis=axis, temperature=temperature)``; returns ``out``.

    ``axis`` and ``bfloat16`` as for :func:`softmax_into`.
    """
    if out is not x:
        _no_overlap(out, "out", ("x", x))
    _require().softmax(bits(x), bits(out), float(temperature), True, bfloat16 or is_bfloat16(x), operator.index(axis))
    return out


def logsumexp_into(x: np.ndarray, out: np.ndarray, *, axis: int = -1, bfloat16: bool = False) -> np.ndarray:
    """``out[...] = logsumexp(x, axis=axis)``; ``out`` has ``x``'s shape without ``axis``.

    ``bfloat16`` as for :func:`softmax_into`.
    """
    _no_overlap(out, "out", ("x", x))
    _require().logsumexp(bits(x), bits(out), bfloat16 or is_bfloat16(x), operator.index(axis))
    return out


def cross_entropy_into(
    logits: np.ndarray,
    targets: np.ndarray,
    loss: np.ndarray,
    grad: np.ndarray | None = None,
    *,
    weight: np.ndarray | None = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    grad_divisor: float = 1.0,
    axis: int = -1,
    bfloat16: bool = False,
) -> None:
    """Per-row cross-entropy into ``loss`` and, optionally, its gradient into ``grad``.

    See the package docstring for the shapes; the classes lie along
    ``axis``; ``loss`` and class-index ``targets`` have ``logits``' shape
    without it, probability targets and ``grad`` the logits' shape.
    ``grad`` is the gradient of ``loss.sum() / grad_divisor`` with respect
    to ``logits``.
    ``bfloat16=True``: ``logits``, ``grad`` and probability targets are
    2-byte integer arrays holding bfloat16 (implied when ``logits`` is an
    ``ml_dtypes.bfloat16`` array); 2-byte integer targets are then
    probabilities, not class indices.
    ``grad`` may be ``logits`` itself (the same memory, same layout) for
    float32 logits with the classes along the last axis: each row's logits
    are read before its gradient is written, so a fused loss needs one
    buffer per chunk instead of two.
    """
    k = _require()
    bf16 = bfloat16 or is_bfloat16(logits)
    index = targets.dtype.kind in "iu" and not (bf16 and targets.dtype.itemsize == 2)
    if grad_divisor <= 0:
        raise ValueError(f"grad_divisor must be > 0; got {grad_divisor!r}")
    _no_overlap(loss, "loss", ("logits", logits), ("targets", targets), ("weight", weight))
    if grad is not None:
        in_place = _same_memory(grad, logits) and logits.dtype == np.float32 and axis in (-1, logits.ndim - 1)
        _no_overlap(grad, "grad", *(() if in_place else (("logits", logits),)), ("targets", targets), ("weight", weight), ("loss", loss))
    k.cross_entropy(
        bits(logits),
        targets if index else None,
        None if index else bits(targets),
        weight,
        loss,
        bits(grad),
        int(ignore_index),
        float(label_smoothing),
        float(z_loss),
        float(grad_divisor),
        bf16,
        operator.index(axis),
    )


def softmax_vjp_into(
    probs: np.ndarray, cotangent: np.ndarray, out: np.ndarray, *, axis: int = -1, bfloat16: bool = False
) -> np.ndarray:
    """``out[...] = probs * (cotangent - sum(probs * cotangent, axis, keepdims=True))``; returns ``out``.

    ``axis``: as for :func:`softmax_into`; ``bfloat16``: likewise, implied by ``probs``.
    """
    _no_overlap(out, "out", ("probs", probs), ("cotangent", cotangent))
    _require().vjp(bits(probs), bits(cotangent), bits(out), False, bfloat16 or is_bfloat16(probs), operator.index(axis))
    return out


def log_softmax_vjp_into(
    log_probs: np.ndarray, cotangent: np.ndarray, out: np.ndarray, *, axis: int = -1, bfloat16: bool = False
) -> np.ndarray:
    """``out[...] = cotangent - exp(log_probs) * sum(cotangent, axis, keepdims=True)``; returns ``out``.

    ``axis``: as for :func:`softmax_into`; ``bfloat16``: likewise, implied by ``log_probs``.
    """
    _no_overlap(out, "out", ("log_probs", log_probs), ("cotangent", cotangent))
    _require().vjp(bits(log_probs), bits(cotangent), bits(out), True, bfloat16 or is_bfloat16(log_probs), operator.index(axis))
    return out


# --- attention ------------------------------------------------------------------

_CAUSAL = {None: 0, "top_left": 1, "bottom_right": 2}


def _attention_args(query, key, value, mask, causal, scale, softcap, sinks, bfloat16):
    """The leading arguments of the extension's attention calls, checked for format."""
    bf16 = bfloat16 or is_bfloat16(query)
    if causal not in _CAUSAL:
        raise ValueError(f"causal must be None, 'top_left' or 'bottom_right'; got {causal!r}")
    if query.ndim < 3 or key.ndim < 3:
        raise ValueError(f"query and key must have at least 3 dimensions (..., H, L, D); got {query.shape} and {key.shape}")
    if mask is not None:
        mask = np.broadcast_to(mask, tuple(query.shape[:-1]) + (key.shape[-2],))
    if sinks is not None:
        sinks = np.ascontiguousarray(sinks, dtype=np.float64)
    return (
        bits(query), bits(key), bits(value), mask, sinks, _CAUSAL[causal], float(scale),
        None if softcap is None else float(softcap), bf16,
    )


def attention_forward_into(
    query: np.ndarray,
    key: np.ndarray,
    value: np.ndarray,
    out: np.ndarray,
    lse: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    causal: str | None = None,
    scale: float,
    softcap: float | None = None,
    sinks: np.ndarray | None = None,
    bfloat16: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Scaled dot-product attention into ``out`` and its log-sum-exp into ``lse``; returns ``(out, lse)``.

    ``query`` (..., Hq, L, D), ``key`` (..., Hkv, S, D) and ``value``
    (..., Hkv, S, Dv): C-contiguous, one dtype, float32 or bfloat16 (an
    ``ml_dtypes.bfloat16`` array, or its bits as uint16 with
    ``bfloat16=True``), the same leading dimensions, ``Hq`` a multiple of
    ``Hkv`` (query head ``h`` reads key head ``h // (Hq // Hkv)``).
    ``out`` (..., Hq, L, Dv) in the inputs' dtype and ``lse`` (..., Hq, L)
    float32, C-contiguous and writable.

    ``mask``: None, or a bool (True attends), float32 or float64 (added to
    the scores; ``-inf`` masks) array broadcastable to (..., Hq, L, S), read
    through its strides (a broadcast mask is never expanded).  ``causal``:
    None, ``"top_left"`` (key ``j <= i``) or ``"bottom_right"`` (``j <= i +
    S - L``).  ``scale`` > 0, ``softcap`` None or > 0 (``c tanh(s / c)``
    after the scale, before the mask), ``sinks`` None or (Hq,) logits.

    The formulas of :func:`softmaxkit.attention` (``numerics.attention``),
    computed in float64 and rounded once: the same accuracy contract and
    edge rules.  Work runs on the kernels' threads; results are bitwise the
    same for every thread count.  Memory: a few tiles per thread, never an
    ``L x S`` array.  Arguments are checked for format and shape, not value.
    """
    args = _attention_args(query, key, value, mask, causal, scale, softcap, sinks, bfloat16)
    _no_overlap(out, "out", ("query", query), ("key", key), ("value", value))
    _require().attention_forward(*args, bits(out), lse)
    return out, lse


def attention_backward_into(
    query: np.ndarray,
    key: np.ndarray,
    value: np.ndarray,
    out: np.ndarray,
    lse: np.ndarray,
    dout: np.ndarray,
    dlse: np.ndarray | None,
    dq: np.ndarray,
    dk: np.ndarray,
    dv: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    causal: str | None = None,
    scale: float,
    softcap: float | None = None,
    sinks: np.ndarray | None = None,
    dsinks: np.ndarray | None = None,
    dmask: np.ndarray | None = None,
    bfloat16: bool = False,
) -> None:
    """The gradients of :func:`attention_forward_into` into ``dq``, ``dk``, ``dv`` (and ``dsinks``, ``dmask``).

    ``out`` and ``lse`` are the forward's results (float32 ``lse``),
    ``dout`` the output's cotangent (the inputs' dtype) and ``dlse`` the
    log-sum-exp's (float32) or None; the other arguments as for the forward.
    ``dq``, ``dk``, ``dv`` have the shapes of ``query``, ``key``, ``value``
    and their dtype.  ``dsinks`` (Hq,) float64 is required exactly when
    ``sinks`` is given (it gets the sum over the batch and the rows).
    ``dmask``, with a float mask only: a float64 array (..., Hq, L, S) for
    the gradient of the additive mask before any reduction to the mask's own
    shape (that is O(L S), the only output that is).

    FlashAttention-2's backward from ``numerics.attention.attention_vjp_rows``:
    the weights recomputed from ``lse``, ``dS = P (dO . v + g)`` with ``g =
    dlse - dO . O``; in float64 and rounded once.  dq is computed per query
    block and dk, dv per key block, each by one thread in a fixed order, so
    results are bitwise the same for every thread count.  Rows with no key
    (``lse = -inf``) or an attended ``+inf`` score get zero gradients; masked
    keys, values and rows are never read.
    """
    args = _attention_args(query, key, value, mask, causal, scale, softcap, sinks, bfloat16)
    for name, a in (("dq", dq), ("dk", dk), ("dv", dv)):
        _no_overlap(a, name, ("query", query), ("key", key), ("value", value), ("out", out), ("dout", dout))
    _require().attention_backward(*args, bits(out), lse, bits(dout), dlse, bits(dq), bits(dk), bits(dv), dsinks, dmask)
