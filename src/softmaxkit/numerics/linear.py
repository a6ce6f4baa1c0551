"""Rules of the fused linear losses: how rows are chunked, the logit soft cap, the sum's normaliser.

A fused linear loss never holds the ``N x V`` logits ``hidden @ weight.T``:
it goes through the tokens a chunk of rows at a time.  These rules are
shared by every front end (NumPy, torch, JAX), so that chunk sizes, and
with them every bit of the results, depend on the shapes alone, never on the
thread count or the device.
"""

from __future__ import annotations

from typing import Any

# Peak memory beyond the inputs: this many times the gradients returned,
# plus a float32 accumulator for a 16-bit weight's gradient.  Of what the
# gradients themselves leave free, chunks take _CHUNK_SHARE (the rest covers
# a chunk's small temporaries), and at least _MIN_CHUNK_BYTES.
_PEAK_FACTOR = 1.25
_CHUNK_SHARE = 0.7
_MIN_CHUNK_BYTES = 8 << 20
# A tile of the weight's rows, for one product of the logits.
_TILE_BYTES = 16 << 20


def chunk_rows(n_rows: int, n_classes: int, grad_bytes: int, accumulator_bytes: int, held_bytes: int, bytes_per_logit: int) -> int:
    """Token rows per chunk.

    The pass may use ``1.25 * grad_bytes + accumulator_bytes`` beyond its
    inputs (``grad_bytes``: the gradients it returns; ``accumulator_bytes``:
    a float32 accumulator for a 16-bit weight's gradient, else 0); it holds
    ``held_bytes`` for the whole pass (its gradients and accumulators), and a
    chunk's buffers take ``bytes_per_logit`` per logit.  A chunk gets 70 %
    of what is left: at least one row, at most ``n_rows``.
    """
    free = _PEAK_FACTOR * grad_bytes + accumulator_bytes - held_bytes
    budget = max(_CHUNK_SHARE * free, _MIN_CHUNK_BYTES)
    rows = int(budget // max(1, n_classes * bytes_per_logit))
    return max(1, min(max(n_rows, 1), rows))


def tile_rows(n_classes: int, width: int, itemsize: int) -> int:
    """Rows of the weight per product of the logits (a 16-bit weight is
    widened to the working dtype a tile at a time): about 16 MiB of them."""
    return max(1, min(n_classes, _TILE_BYTES // max(1, width * itemsize)))


def softcap(xp: Any, z: Any, cap: float) -> tuple[Any, Any]:
    r"""Gemma-2's logit soft cap and its derivative: ``(c tanh(z / c), sech(z / c)^2)``.

    Infinite logits keep their value (a class masked by a ``-inf`` bias stays
    masked) with derivative 0.  The derivative is ``1 / cosh^2``, not
    ``1 - tanh^2``, which cancels where ``tanh`` rounds to 1.
    """
    y = z / cap
    finite = xp.isfinite(z)
    capped = xp.where(finite, cap * xp.tanh(xp.where(finite, y, xp.zeros_like(y))), z)
    c = xp.cosh(xp.where(finite, y, xp.zeros_like(y)))
    slope = xp.where(finite, 1.0 / (c * c), xp.zeros_like(y))
    return capped, slope


def normalized(reduction: str, denominator: Any, normalizer: Any) -> tuple[str, Any]:
    """``(reduction, denominator)`` once a caller's normaliser is applied.

    A "sum" divided by ``normalizer`` (the number of items over a whole
    gradient-accumulation step, Hugging Face's ``num_items_in_batch``) is a
    "mean" over that number, with the mean's rule for 0 (loss 0, gradient 0).
    """
    if normalizer is None:
        return reduction, denominator
    return "mean", normalizer


def grad_bytes(n_rows: int, n_classes: int, width: int, itemsize: int, bias: bool) -> int:
    """Bytes of the gradients a fused linear loss returns: ``hidden``, ``weight`` and ``bias``."""
    return itemsize * (n_rows * width + n_classes * width + (n_classes if bias else 0))
