"""scaled_dot_product_attention and merge_attention_states for torch, with autograd.

The forward passes are the NumPy / array-API functions of
``frontend/attention.py`` run on the tensors themselves (on their own
device, through ``array_api_compat.torch``); the backward passes are the
VJPs of ``numerics/attention.py`` (FlashAttention-2's backward, the weights
recomputed from the saved log-sum-exp) in the working precision of
:func:`.execution.working_dtype`.  Nothing here restates a formula.

On the CPU, float32 and bfloat16 attention goes to the native kernel while
it is active (``softmaxkit.kernels``): the forward is the NumPy front end
on zero-copy NumPy views of the tensors (bfloat16 through
``ml_dtypes.bfloat16`` views of their bits), which calls the kernel, and the
backward calls ``kernels.into.attention_backward_into`` on such views.

Attention runs as an autograd Function in eager code and as the custom
operators ``torch.ops.softmaxkit.attention`` and ``attention_backward``
(fake implementations and a registered autograd formula, as in ``ops.py``)
under ``torch.compile``, where it is one opaque node forward and backward
(:func:`.execution.apply_function`).  The merge is an autograd Function
only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Optional

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from softmaxkit.backends.torch.execution import (
    apply_function,
    as_float,
    working_dtype,
    xp,
)
from softmaxkit.frontend import attention as _front
from softmaxkit.frontend import registry, validate
from softmaxkit.numerics import attention as att


def _sum_to(grad: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """``grad`` summed over the dimensions broadcast to reach its shape from ``shape``."""
    extra = grad.ndim - len(shape)
    if extra:
        grad = grad.sum(dim=tuple(range(extra)))
    return grad.sum_to_size(shape)


# --- scaled dot-product attention --------------------------------------------


def _native(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, sinks: Tensor | None) -> Any:
    """The native kernels when they take these tensors: CPU, one dtype,
    float32 or bfloat16 (with ml_dtypes for the NumPy views); else None."""
    native = registry.native()
    if native is None or not (q.dtype == k.dtype == v.dtype) or q.dtype not in (torch.float32, torch.bfloat16):
        return None
    if any(t is not None and t.device.type != "cpu" for t in (q, k, v, mask, sinks)):
        return None
    if q.dtype == torch.bfloat16 or (mask is not None and mask.dtype == torch.bfloat16):
        try:
            import ml_dtypes  # noqa: F401
        except ImportError:
            return None
    return native


def _as_numpy(t: Tensor | None) -> Any:
    """A NumPy view of a CPU tensor (bfloat16 as ``ml_dtypes.bfloat16``), or None."""
    if t is None:
        return None
    t = t.detach()
    if t.dtype == torch.bfloat16:
        import ml_dtypes

        return t.view(torch.uint16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


def _bits(t: Tensor) -> Any:
    """A C-contiguous CPU tensor as the kernels' NumPy buffer (bfloat16 as its uint16 bits)."""
    t = t.detach().contiguous()
    return t.view(torch.uint16).numpy() if t.dtype == torch.bfloat16 else t.numpy()


def _from_numpy(a: Any, dtype: torch.dtype) -> Tensor:
    """A tensor of ``dtype`` sharing the memory of the front end's NumPy result."""
    if dtype == torch.bfloat16:
        import numpy as np

        return torch.from_numpy(np.ascontiguousarray(a).view(np.uint16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def attention_forward(q, k, v, mask, sinks, causal, scale, softcap):
    """``(output, lse)``: the front end's attention on the tensors, without recording."""
    with torch.no_grad():
        if _native(q, k, v, mask, sinks) is not None:
            out, lse = _front.attention(
                _as_numpy(q), _as_numpy(k), _as_numpy(v), mask=_as_numpy(mask), causal=causal, scale=scale,
                softcap=softcap, sinks=_as_numpy(sinks), return_lse=True,
            )
            return _from_numpy(out, q.dtype), torch.from_numpy(lse)
        return _front.attention(q, k, v, mask=mask, causal=causal, scale=scale, softcap=softcap, sinks=sinks, return_lse=True)


def _native_backward(native, q, k, v, mask, sinks, causal, scale, softcap, out, lse, grad_out, grad_lse, want_bias):
    """``(dq, dk, dv, dsinks, dbias)`` from the native kernel; ``dbias`` (..., Hq, L, S) float64 or None."""
    dq, dk, dv = (torch.empty(t.shape, dtype=t.dtype) for t in (q, k, v))
    dsinks = None if sinks is None else torch.empty(sinks.shape, dtype=torch.float64)
    dbias = torch.empty(q.shape[:-1] + k.shape[-2:-1], dtype=torch.float64) if want_bias else None
    m = None
    if mask is not None:
        m = mask.detach()
        if m.dtype not in (torch.bool, torch.float32, torch.float64):
            m = m.to(torch.float32)
        m = m.numpy()
    native.into.attention_backward_into(
        _bits(q), _bits(k), _bits(v), _bits(out.to(q.dtype)), _bits(lse.to(torch.float32)), _bits(grad_out.to(q.dtype)),
        None if grad_lse is None else _bits(grad_lse.to(torch.float32)), _bits(dq), _bits(dk), _bits(dv),
        mask=m, causal=causal, scale=scale, softcap=softcap,
        sinks=None if sinks is None else sinks.detach().to(torch.float64).numpy(),
        dsinks=None if dsinks is None else dsinks.numpy(), dmask=None if dbias is None else dbias.numpy(),
        bfloat16=q.dtype == torch.bfloat16,
    )
    return dq, dk, dv, dsinks, dbias


def attention_backward(q, k, v, mask, sinks, causal, scale, softcap, out, lse, grad_out, grad_lse, want_mask):
    """``(dq, dk, dv, dsinks, dmask)`` from the saved output and log-sum-exp
    (``dsinks``/``dmask`` None unless asked for by a tensor there)."""
    dtype = torch.promote_types(torch.promote_types(q.dtype, k.dtype), v.dtype)
    work, widened = working_dtype(dtype, q.device)
    bool_mask = mask is not None and mask.dtype == torch.bool
    attend = mask if bool_mask else None
    bias = None if mask is None or bool_mask else mask.to(work)
    want_bias = want_mask and bias is not None
    if grad_out is None:
        grad_out = torch.zeros_like(out)
    native = _native(q, k, v, mask, sinks)
    if native is not None:
        dq, dk, dv, dsinks, dbias = _native_backward(
            native, q, k, v, mask, sinks, causal, scale, softcap, out, lse, grad_out, grad_lse, want_bias
        )
    else:
        lead = math.prod(q.shape[:-2])
        step = max(1, _front._CHUNK_ELEMENTS // max(1, lead * att.BLOCK * max(q.shape[-1], v.shape[-1], 1)))
        with torch.no_grad():
            dq, dk, dv, dsinks, dbias = att.attention_vjp(
                xp, q.to(work), k.to(work), v.to(work), out.to(work), lse.to(work), grad_out.to(work),
                None if grad_lse is None else grad_lse.to(work),
                attend=attend, bias=bias, causal=causal, scale=scale, softcap=softcap,
                sinks=None if sinks is None else sinks.to(work), widened=widened, want_bias=want_bias, rows_per_chunk=step,
            )
    dsinks = None if dsinks is None else dsinks.to(sinks.dtype)
    dmask = _sum_to(dbias, mask.shape).to(mask.dtype) if want_bias else None
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), dsinks, dmask


class AttentionFunction(torch.autograd.Function):
    """Attention and its log-sum-exp; the inputs, output and lse are saved for backward."""

    @staticmethod
    def forward(q, k, v, mask, sinks, causal, scale, softcap):
        return attention_forward(q, k, v, mask, sinks, causal, scale, softcap)

    @staticmethod
    def setup_context(ctx, inputs, output):
        q, k, v, mask, sinks, ctx.causal, ctx.scale, ctx.softcap = inputs
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(q, k, v, mask, sinks, *output)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, grad_lse):
        q, k, v, mask, sinks, out, lse = ctx.saved_tensors
        if grad_out is None and grad_lse is None:
            return (None,) * 8
        dq, dk, dv, dsinks, dmask = attention_backward(
            q, k, v, mask, sinks, ctx.causal, ctx.scale, ctx.softcap, out, lse, grad_out, grad_lse, ctx.needs_input_grad[3]
        )
        return dq, dk, dv, dmask, dsinks, None, None, None


def scaled_dot_product_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
    *,
    softcap: float | None = None,
    sinks: torch.Tensor | None = None,
    return_lse: bool = False,
) -> Any:
    r"""Exact, NaN-free scaled dot-product attention; drop-in for
    ``torch.nn.functional.scaled_dot_product_attention``.

    .. math:: s_{ij} = \mathrm{cap}(\tau\, q_i \cdot k_j) + B_{ij},\quad
              O_i = \frac{\sum_{j \in A_i} e^{s_{ij} - M_i} v_j}
                         {\sum_{j \in A_i} e^{s_{ij} - M_i} + e^{\sigma_h - M_i}},\quad
              \mathrm{lse}_i = M_i + \operatorname{log1p}(s)

    (the formula of :func:`softmaxkit.attention`: ``tau`` the scale,
    ``cap(x) = c tanh(x / c)``, ``B`` a float mask, ``A_i`` the keys row
    ``i`` may attend to, ``sigma_h`` the head's sink).

    Parameters
    ----------
    query : Tensor (..., Hq, L, D)
    key : Tensor (..., Hkv, S, D)
    value : Tensor (..., Hkv, S, Dv)
        ``Hkv == Hq`` unless ``enable_gqa`` (then ``Hq`` a multiple of
        ``Hkv``; query head ``h`` uses key head ``h // (Hq // Hkv)``).
    attn_mask : Tensor, optional
        Broadcastable to (..., Hq, L, S).  Boolean: True attends.  Float:
        added to the scores (differentiable).
    dropout_p : float
        Must be 0.0: dropout is not supported.
    is_causal : bool
        Row ``i`` attends to keys ``j <= i`` (top-left, as torch); combined
        with ``attn_mask`` where torch refuses both.
    scale : float, optional
        Default ``1 / sqrt(D)``.
    enable_gqa : bool
        Allow ``Hq != Hkv`` (grouped-query attention).
    softcap : float, optional
        ``c tanh(s / c)`` after the scale, before the mask (Gemma 2).
    sinks : Tensor (Hq,), optional
        One logit per query head in the normaliser only (gpt-oss);
        differentiable.
    return_lse : bool
        Also return the natural-log log-sum-exp (..., Hq, L) (float32 for
        16-bit and float32 inputs, float64 for float64), differentiable.

    Returns
    -------
    Tensor (..., Hq, L, Dv) in the inputs' dtype, and the log-sum-exp with
    ``return_lse``.

    Notes
    -----
    The forward is :func:`softmaxkit.attention` on the tensors' device:
    the same results bit for bit, and its accuracy contract (float32 and
    narrower computed in float64 and rounded once); on the CPU, float32 and
    bfloat16 run in the native kernel, forward and backward.  The backward is
    FlashAttention-2's, computed blockwise in the working precision of
    :func:`softmaxkit.torch.working_dtype` from the saved output and
    log-sum-exp (which carry the output dtype's and float32's rounding
    respectively).  Gradients flow to ``query``, ``key``, ``value``,
    ``sinks`` and a float ``attn_mask``.

    A row with nothing to attend to gives output 0 and zero, finite
    gradients where torch gives NaN; masked keys and values (NaN or inf
    there) are never read, in the forward or the backward.  A row with an
    attended ``+inf`` score gets zero gradients.

    Examples
    --------
    >>> import torch, softmaxkit.torch as smt
    >>> q = torch.ones(1, 1, 2, 2, requires_grad=True); k = torch.ones(1, 1, 3, 2); v = torch.arange(6.0).reshape(1, 1, 3, 2)
    >>> mask = torch.tensor([[True, True, False], [False, False, False]])
    >>> out = smt.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    >>> out
    tensor([[[[1., 2.],
              [0., 0.]]]], grad_fn=<AttentionFunctionBackward>)
    >>> out.sum().backward(); bool(torch.isfinite(q.grad).all())
    True
    """
    q, k, v = as_float(query, "query"), as_float(key, "key"), as_float(value, "value")
    if dropout_p != 0.0:
        raise ValueError(f"dropout_p must be 0.0: dropout is not supported; got dropout_p={validate.describe(dropout_p)}")
    is_causal = validate.flag(is_causal, "is_causal")
    enable_gqa = validate.flag(enable_gqa, "enable_gqa")
    return_lse = validate.flag(return_lse, "return_lse")
    if attn_mask is not None and not isinstance(attn_mask, torch.Tensor):
        raise TypeError(f"attn_mask must be None or a torch.Tensor; got {type(attn_mask).__module__}.{type(attn_mask).__name__}")
    if sinks is not None:
        sinks = as_float(sinks, "sinks")
    if not enable_gqa and q.ndim >= 3 and k.ndim >= 3 and q.shape[-3] != k.shape[-3]:
        raise ValueError(
            f"query's heads ({q.shape[-3]}) differ from key's ({k.shape[-3]}): pass enable_gqa=True for grouped-query attention"
        )
    tau = validate.attention_scale(scale, q.shape[-1])
    cap = None if softcap is None else validate.positive_finite(softcap, "softcap")
    causal = "top_left" if is_causal else None
    out, lse = apply_function(AttentionFunction, attention_op, q, k, v, attn_mask, sinks, causal, tau, cap)
    return (out, lse) if return_lse else out


# --- the custom operators (torch.compile) ------------------------------------


def _out_dtypes(q: Tensor, k: Tensor, v: Tensor) -> tuple[torch.dtype, torch.dtype]:
    dtype = torch.promote_types(torch.promote_types(q.dtype, k.dtype), v.dtype)
    return dtype, (dtype if dtype in (torch.float32, torch.float64) else torch.float32)


@torch.library.custom_op("softmaxkit::attention", mutates_args=())
def attention_op(
    q: Tensor, k: Tensor, v: Tensor, mask: Optional[Tensor], sinks: Optional[Tensor], causal: Optional[str], scale: float, softcap: Optional[float]
) -> tuple[Tensor, Tensor]:
    out, lse = attention_forward(q, k, v, mask, sinks, causal, scale, softcap)
    return out.contiguous(), lse.contiguous()


@attention_op.register_fake
def _(q, k, v, mask, sinks, causal, scale, softcap):
    dtype, lse_dtype = _out_dtypes(q, k, v)
    return q.new_empty(q.shape[:-1] + v.shape[-1:], dtype=dtype), q.new_empty(q.shape[:-1], dtype=lse_dtype)


@torch.library.custom_op("softmaxkit::attention_backward", mutates_args=())
def attention_backward_op(
    q: Tensor, k: Tensor, v: Tensor, mask: Optional[Tensor], sinks: Optional[Tensor], causal: Optional[str], scale: float,
    softcap: Optional[float], out: Tensor, lse: Tensor, grad_out: Optional[Tensor], grad_lse: Optional[Tensor], want_mask: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(dq, dk, dv, dsinks, dmask)``; an empty tensor stands for a gradient not computed."""
    grads = attention_backward(q, k, v, mask, sinks, causal, scale, softcap, out, lse, grad_out, grad_lse, want_mask)
    return tuple(q.new_empty(0) if g is None else g.contiguous() for g in grads)


@attention_backward_op.register_fake
def _(q, k, v, mask, sinks, causal, scale, softcap, out, lse, grad_out, grad_lse, want_mask):
    dsinks = q.new_empty(0) if sinks is None else torch.empty_like(sinks)
    bias = mask is not None and mask.dtype != torch.bool and want_mask
    dmask = torch.empty_like(mask, memory_format=torch.contiguous_format) if bias else q.new_empty(0)
    like = [torch.empty_like(t, memory_format=torch.contiguous_format) for t in (q, k, v)]
    return (*like, dsinks, dmask)


def _attention_setup(ctx, inputs, output):
    q, k, v, mask, sinks, ctx.causal, ctx.scale, ctx.softcap = inputs
    ctx.has_sinks, ctx.has_mask = sinks is not None, mask is not None
    ctx.save_for_backward(q, k, v, mask, sinks, *output)


def _attention_grad(ctx, grad_out, grad_lse):
    q, k, v, mask, sinks, out, lse = ctx.saved_tensors
    dq, dk, dv, dsinks, dmask = attention_backward_op(
        q, k, v, mask, sinks, ctx.causal, ctx.scale, ctx.softcap, out, lse, grad_out, grad_lse, ctx.needs_input_grad[3]
    )
    dmask = dmask if ctx.has_mask and ctx.needs_input_grad[3] else None
    return dq, dk, dv, dmask, dsinks if ctx.has_sinks else None, None, None, None


attention_op.register_autograd(_attention_grad, setup_context=_attention_setup)


# --- merge of partial attention states ---------------------------------------


class MergeFunction(torch.autograd.Function):
    """The merge of attention states along ``dim``; the states and the result are saved."""

    @staticmethod
    def forward(outputs, lses, dim, base, empty_lse):
        with torch.no_grad():
            return _front.merge_attention_states(outputs, lses, axis=dim, base=base, empty_lse=empty_lse)

    @staticmethod
    def setup_context(ctx, inputs, output):
        outputs, lses, ctx.dim, ctx.base, ctx.empty_lse = inputs
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(outputs, lses, *output)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, grad_lse):
        outputs, lses, out, lse = ctx.saved_tensors
        if grad_out is None and grad_lse is None:
            return (None,) * 5
        work, _ = working_dtype(torch.promote_types(outputs.dtype, lses.dtype), outputs.device)
        dim = ctx.dim % lses.ndim
        m = lses.to(work).movedim(dim, 0)
        acc = outputs.to(work).movedim(dim, 0)
        merged = lse.to(work)
        if ctx.empty_lse == "+inf":
            m = torch.where(m == math.inf, -math.inf, m)
            merged = torch.where(merged == math.inf, -math.inf, merged)
        g_out = torch.zeros_like(out, dtype=work) if grad_out is None else grad_out.to(work)
        with torch.no_grad():
            dm, d_acc = att.merge_vjp(xp, m, acc, merged, out.to(work), g_out, None if grad_lse is None else grad_lse.to(work), ctx.base == 2)
        return d_acc.movedim(0, dim).to(outputs.dtype), dm.movedim(0, dim).to(lses.dtype), None, None, None


def merge_attention_states(outputs: Any, lses: Any, *, dim: int = 0, base: Any = "e", empty_lse: str = "-inf") -> tuple[torch.Tensor, torch.Tensor]:
    r"""Merge attention results over disjoint key sets into the attention over
    their union, with autograd (to ``outputs`` and ``lses``).

    .. math:: \mathrm{lse} = M + \operatorname{log1p}\Bigl(\sum_{i \ne k} w_i\Bigr),\quad
              o = \frac{o_k + \sum_{i \ne k} w_i o_i}{1 + \sum_{i \ne k} w_i},\quad
              w_i = e^{\mathrm{lse}_i - M}

    Parameters
    ----------
    outputs : Tensor (..., Dv) or a sequence of tensors
        The partial outputs, one state per index of ``dim``; a sequence is
        stacked along ``dim``.
    lses : Tensor or a sequence of tensors
        Their log-sum-exps, of ``outputs``' shape without the last axis.
    dim : int
        The states' dimension, in ``lses``' numbering.
    base : {"e", 2}
    empty_lse : {"-inf", "+inf"}
        As :func:`softmaxkit.merge_attention_states`.

    Returns
    -------
    (output, lse): tensors without ``dim``.

    Notes
    -----
    The forward is :func:`softmaxkit.merge_attention_states` on the tensors
    (same results bit for bit, same edge rules: the empty state is the
    identity and its output is never read).  The backward, with ``pi_i``
    each state's share of the union: ``d o_i = pi_i dO`` and ``d lse_i =
    pi_i (dLSE + c dO . (o_i - o))`` (``c = ln 2`` for base 2); an empty
    state gets zero gradients.

    Examples
    --------
    >>> import torch, softmaxkit.torch as smt
    >>> o = torch.tensor([[1.0, 2.0], [float("nan"), float("nan")]], requires_grad=True)
    >>> lse = torch.tensor([0.5, -float("inf")], requires_grad=True)
    >>> out, l = smt.merge_attention_states(o, lse)
    >>> out.sum().backward(); o.grad
    tensor([[1., 1.],
            [0., 0.]])
    """
    if isinstance(outputs, Sequence) and not isinstance(outputs, torch.Tensor):
        items = [as_float(o, "outputs") for o in outputs]
        stack_dim = dim if dim >= 0 or not items else dim + items[0].ndim
        outputs = torch.stack(items, dim=stack_dim)
    if isinstance(lses, Sequence) and not isinstance(lses, torch.Tensor):
        lses = torch.stack([as_float(x, "lses") for x in lses], dim=dim)
    outputs, lses = as_float(outputs, "outputs"), as_float(lses, "lses")
    if empty_lse not in _front.EMPTY_LSE:
        raise ValueError(f"empty_lse must be '-inf' or '+inf'; got {validate.describe(empty_lse)}")
    return MergeFunction.apply(outputs, lses, dim, base, empty_lse)
