"""Kernels writing into preallocated NumPy arrays, for front ends that own their outputs (torch).

These take C-contiguous NumPy arrays (a CPU ``torch.Tensor`` converts without
a copy with ``.numpy()``; results come back with ``torch.from_numpy``), reduce
along the last axis, and write into outputs of the input's dtype (float16,
float32 or float64).  They check formats and sizes, not values: validate
arguments before calling them.  Outputs must not overlap the inputs, except
that ``out`` may be ``x`` itself for ``softmax_into`` and ``log_softmax_into``.
See the package docstring for each function's shapes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from softmaxkit.kernels.config import _kernels


def _require() -> Any:
    if _kernels is None:
        raise RuntimeError("the native kernels are not built in this installation of softmaxkit")
    return _kernels


def _no_overlap(out: np.ndarray, name: str, *inputs: tuple[str, Any]) -> None:
    for input_name, a in inputs:
        if a is not None and np.may_share_memory(out, a):
            raise ValueError(f"{name} must not overlap {input_name}")


def softmax_into(x: np.ndarray, out: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """``out[...] = softmax(x, axis=-1, temperature=temperature)``; returns ``out``."""
    if out is not x:
        _no_overlap(out, "out", ("x", x))
    _require().softmax(x, out, float(temperature), False)
    return out


def log_softmax_into(x: np.ndarray, out: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """``out[...] = log_softmax(x, axis=-1, temperature=temperature)``; returns ``out``."""
    if out is not x:
        _no_overlap(out, "out", ("x", x))
    _require().softmax(x, out, float(temperature), True)
    return out


def logsumexp_into(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out[...] = logsumexp(x, axis=-1)``; ``out`` has ``x.shape[:-1]``."""
    _no_overlap(out, "out", ("x", x))
    _require().logsumexp(x, out)
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
) -> None:
    """Per-row cross-entropy into ``loss`` and, optionally, its gradient into ``grad``.

    See the module docstring for the shapes; ``grad`` is the gradient of
    ``loss.sum() / grad_divisor`` with respect to ``logits``.
    """
    k = _require()
    index = targets.dtype.kind in "iu"
    if grad_divisor <= 0:
        raise ValueError(f"grad_divisor must be > 0; got {grad_divisor!r}")
    _no_overlap(loss, "loss", ("logits", logits), ("targets", targets), ("weight", weight))
    if grad is not None:
        _no_overlap(grad, "grad", ("logits", logits), ("targets", targets), ("weight", weight), ("loss", loss))
    k.cross_entropy(
        logits,
        targets if index else None,
        None if index else targets,
        weight,
        loss,
        grad,
        int(ignore_index),
        float(label_smoothing),
        float(z_loss),
        float(grad_divisor),
    )


def softmax_vjp_into(probs: np.ndarray, cotangent: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out[...] = probs * (cotangent - sum(probs * cotangent, -1))``; returns ``out``."""
    _no_overlap(out, "out", ("probs", probs), ("cotangent", cotangent))
    _require().vjp(probs, cotangent, out, False)
    return out


def log_softmax_vjp_into(log_probs: np.ndarray, cotangent: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out[...] = cotangent - exp(log_probs) * sum(cotangent, -1)``; returns ``out``."""
    _no_overlap(out, "out", ("log_probs", log_probs), ("cotangent", cotangent))
    _require().vjp(log_probs, cotangent, out, True)
    return out
