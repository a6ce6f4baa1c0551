"""A computation through the Triton kernels and through the other path (the
native or generic one), for the tests that compare the two.

The ``triton_path`` fixture (conftest.py) turns
``softmaxkit.kernels.triton.on_cpu`` on for every test; these turn it off
for one call and back on.
"""

from __future__ import annotations

import softmaxkit.kernels.triton as kernels


def other_path(fn):
    """``fn()`` with ``softmaxkit.kernels.triton.on_cpu`` off: CPU tensors take the native or generic path."""
    kernels.on_cpu = False
    try:
        return fn()
    finally:
        kernels.on_cpu = True


def both_paths(fn):
    """``(fn(), other_path(fn))``: ``fn()`` through the Triton kernel and through the other path."""
    return fn(), other_path(fn)
