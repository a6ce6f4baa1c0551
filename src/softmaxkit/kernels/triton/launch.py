"""How every Triton kernel of softmaxkit is launched: row geometry, block size, grid.

A kernel reduces along one axis of a tensor that
:func:`~softmaxkit.backends.torch.execution.kernel_layout` has made
C-contiguous in some order of its dimensions (no copy when the memory is
already dense in some order).  Of shape ``(outer, n, inner)`` about that
axis, the row ``r`` starts at ``(r // inner) * n * inner + r % inner`` and
its elements lie ``inner`` apart (``inner == 1`` along the last axis).  One
program handles one row; a row of ``n <= block`` entries is read once, a
wider one in blocks of ``block`` entries with the online rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from softmaxkit.backends.torch.execution import kernel_layout, restore_layout


def helper(fn):
    """Decorate a device function that kernels call (``@helper`` in place of ``@triton.jit``).

    Compiled, it is ``triton.jit(fn)``.  Under Triton's interpreter
    (``TRITON_INTERPRET=1`` when the decorating module is imported) it is
    ``fn`` itself: the interpreter runs kernels as Python with
    ``triton.language`` patched for the whole call, so a plain function
    computes the same thing, while a jitted one re-patches the language on
    every call (the softmax kernel took 1.35 times as long that way).
    """
    import triton

    return fn if triton.knobs.runtime.interpret else triton.jit(fn)

#: The widest block one program holds (a power of two).  Rows wider than
#: this are read in several blocks; tests lower it to reach that path on
#: small rows.
MAX_BLOCK: int = 4096


@dataclass(frozen=True)
class Rows:
    """A contiguous tensor seen as rows along ``axis``.

    ``n_rows`` rows of ``n`` entries, ``inner`` apart; ``block`` is the
    kernel's block width (a power of two, at least 16) and ``one_pass``
    whether a row fits in one block.
    """

    n_rows: int
    n: int
    inner: int
    block: int

    @property
    def one_pass(self) -> bool:
        return self.n <= self.block

    @property
    def num_warps(self) -> int:
        return 8 if self.block >= 2048 else 4


def rows(c: torch.Tensor, axis: int) -> Rows:
    """The row geometry of the contiguous tensor ``c`` along ``axis``."""
    n = c.shape[axis] if c.ndim else 1
    inner = math.prod(c.shape[axis + 1 :]) if c.ndim else 1
    n_rows = c.numel() // n if n else math.prod(c.shape[:axis]) * inner
    return Rows(n_rows, n, inner, block_size(n))


def block_size(n: int) -> int:
    """The block width for rows of ``n`` entries: the next power of two, 16 to :data:`MAX_BLOCK`."""
    return max(16, min(MAX_BLOCK, 1 << max(n - 1, 0).bit_length()))


def prepare(dim: int, x: torch.Tensor, *others: torch.Tensor) -> tuple[list[int], int, tuple[torch.Tensor, ...], Rows]:
    """``(order, axis, tensors, rows)``: :func:`kernel_layout`'s contiguous
    tensors and the row geometry of the first along ``dim``; undo the order
    on results with :func:`restore`."""
    order, axis, tensors = kernel_layout(dim, x, *others)
    return order, axis, tensors, rows(tensors[0], axis)


def restore(out: torch.Tensor, order: list[int]) -> torch.Tensor:
    """A result of the prepared tensors' shape back in the caller's order (a view)."""
    return restore_layout(out, order)


def launch(kernel, geometry: Rows, *args, **meta) -> None:
    """``kernel`` over one program per row, with the row geometry
    (``n, inner``) after ``args`` and ``BLOCK`` and ``ONE_PASS`` as
    compile-time constants; nothing runs for zero rows."""
    if geometry.n_rows == 0:
        return
    kernel[(geometry.n_rows,)](
        *args,
        geometry.n,
        geometry.inner,
        BLOCK=geometry.block,
        ONE_PASS=geometry.one_pass,
        num_warps=geometry.num_warps,
        **meta,
    )
