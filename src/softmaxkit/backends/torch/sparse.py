"""torch.autograd Functions for sparsemax and 1.5-entmax.

Forward and backward call the formulas in ``_sparse_numerics`` on torch
tensors (along the last axis, in the working dtype); the public functions in
``softmaxkit.sparse`` move the axis and cast around them.  Importing this
module imports torch, so ``softmaxkit.sparse`` imports it only when it meets
a tensor.
"""

from __future__ import annotations

import array_api_compat
import torch

from softmaxkit.numerics import sparse as sn


def _function(name, forward_formula, vjp_formula):
    def forward(ctx, x, widened):
        p = forward_formula(array_api_compat.array_namespace(x), x, widened)
        ctx.save_for_backward(p)
        ctx.widened = widened
        return p

    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        (p,) = ctx.saved_tensors
        return vjp_formula(array_api_compat.array_namespace(p), p, grad, ctx.widened), None

    return type(name, (torch.autograd.Function,), {"forward": staticmethod(forward), "backward": staticmethod(backward)})


SparsemaxFunction = _function("SparsemaxFunction", sn.sparsemax, sn.sparsemax_vjp)
Entmax15Function = _function("Entmax15Function", sn.entmax15, sn.entmax15_vjp)
