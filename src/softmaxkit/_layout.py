"""Moving the reduced axes to the end, and back.

The formulas in ``_numerics`` work along the last axis.  ``Layout`` permutes
the reduced axes to the end, flattens them into one, and undoes both on the
results.
"""

from __future__ import annotations

import math
from typing import Any


class Layout:
    def __init__(self, xp: Any, shape: tuple[int, ...], axes: tuple[int, ...]):
        self.xp = xp
        self.shape = tuple(shape)
        self.axes = axes
        rest = [i for i in range(len(shape)) if i not in axes]
        self.perm = rest + sorted(axes)
        self.identity = self.perm == list(range(len(shape))) and len(axes) == 1
        self.rest_shape = tuple(shape[i] for i in rest)
        self.n = math.prod(shape[i] for i in axes)

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
