"""Moving the reduced axes to the end, and back; splitting rows into chunks.

The formulas in ``softmaxkit.numerics`` work along the last axis.  ``Layout`` permutes
the reduced axes to the end, flattens them into one, and undoes both on the
results.  Row-wise work goes through the rows in chunks of whole rows whose
size comes from one byte budget (:func:`chunk_rows`), so the working-precision
temporaries stay ``O(chunk)`` whatever the input's size.
"""

from __future__ import annotations

import math
from typing import Any

import array_api_compat


# Working-precision bytes of one chunk of rows.  The formulas keep about a
# dozen chunk-sized temporaries alive at once, so a chunk's peak stays in the
# tens of MiB, and a chunk is still large enough that the per-chunk Python
# overhead is small next to its arithmetic.
CHUNK_BYTES = 1 << 21


def chunk_rows(width: int, itemsize: int) -> int:
    """Rows per chunk: as many whole rows of ``width`` elements of
    ``itemsize`` bytes as fit in :data:`CHUNK_BYTES`, and at least one (a row
    is never split)."""
    return max(1, CHUNK_BYTES // max(1, width * itemsize))


def put(out: Any, index: Any, value: Any) -> Any:
    """``out[index] = value``, returning the written array.

    JAX arrays cannot be written in place: they get a new array (and
    :meth:`Layout.chunks` gives them one chunk, so that happens once).
    """
    if array_api_compat.is_jax_array(out):
        return out.at[index].set(value)
    out[index] = value
    return out


class Layout:
    """The reduced ``axes`` of an array of ``shape`` moved to the end and flattened: one statement of the axis moves.

    The axes go last in increasing order, or with ``in_order`` in the order
    given (where the caller's order numbers the classes, as in JAX's
    cross-entropy over several axes).
    """

    def __init__(self, xp: Any, shape: tuple[int, ...], axes: tuple[int, ...], in_order: bool = False):
        self.xp = xp
        self.shape = tuple(shape)
        self.axes = axes
        rest = [i for i in range(len(shape)) if i not in axes]
        self.perm = rest + (list(axes) if in_order else sorted(axes))
        self.identity = self.perm == list(range(len(shape))) and len(axes) == 1
        self.rest_shape = tuple(shape[i] for i in rest)
        # lists, not generators: torch.compile cannot trace math.prod over a generator
        self.n = math.prod([shape[i] for i in axes])
        self.n_rows = math.prod(list(self.rest_shape))

    def rows(self, a: Any) -> Any:
        """``a`` (of the full shape) as a 2-D ``(rows, n)`` array.

        A view where the strides allow one; otherwise one copy, in ``a``'s
        own dtype.
        """
        return self.xp.reshape(self.forward(a), (self.n_rows, self.n))

    def chunks(self, itemsize: int):
        """Slices of whole rows, each of :func:`chunk_rows` rows (the last may be shorter).

        One slice of every row for JAX, whose arrays are written by copying
        (see :func:`put`) and whose work is fused under ``jax.jit`` anyway.
        """
        step = max(1, self.n_rows) if array_api_compat.is_jax_namespace(self.xp) else chunk_rows(self.n, itemsize)
        for start in range(0, self.n_rows, step):
            yield slice(start, min(start + step, self.n_rows))

    def back_rows(self, y: Any) -> Any:
        """Undo ``rows`` on a ``(rows, n)`` result."""
        return self.back(self.xp.reshape(y, self.rest_shape + (self.n,)))

    def forward(self, a: Any) -> Any:
        """``a`` (of the full shape) with the reduced axes flattened at the end."""
        if self.identity:
            return a
        a = self.xp.permute_dims(a, tuple(self.perm))
        return self.xp.reshape(a, self.rest_shape + (self.n,))

    def back(self, y: Any) -> Any:
        """Undo ``forward`` on a result of the same shape."""
        if self.identity:
            return y
        permuted = tuple(self.shape[i] for i in self.perm)
        y = self.xp.reshape(y, permuted)
        inverse = sorted(range(len(self.perm)), key=self.perm.__getitem__)
        return self.xp.permute_dims(y, tuple(inverse))

    def back_reduced(self, y: Any, keepdims: bool) -> Any:
        """A per-row result (trailing axis of size 1) in the caller's shape."""
        if keepdims:
            kept = tuple(1 if i in self.axes else s for i, s in enumerate(self.shape))
            return self.xp.reshape(y, kept)
        return self.xp.reshape(y, self.rest_shape)
