"""dot_product_attention and merge_attention_states for JAX arrays, each a ``jax.custom_vjp``.

The forward passes are the NumPy / array-API functions of
``frontend/attention.py`` run with ``xp = jax.numpy``; the backward passes
are the VJPs of ``numerics/attention.py`` (FlashAttention-2's backward, the
weights recomputed from the saved log-sum-exp) in the working precision of
``numerics.working_dtype``.  Nothing here restates a formula; this module
maps ``jax.nn.dot_product_attention``'s layout (B, T, N, H) onto the
numerics' (..., N, T, H) and its masks onto one boolean or additive mask.
Works under ``jax.jit``, ``jax.vmap`` and ``jax.grad``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from softmaxkit.backends.jax.functions import _as_float, _work
from softmaxkit.frontend import attention as _front
from softmaxkit.frontend import validate
from softmaxkit.numerics import attention as att

_INF = float("inf")


def _sum_to(grad: Any, shape: tuple[int, ...]) -> Any:
    """``grad`` summed over the dimensions broadcast to reach its shape from ``shape``."""
    extra = grad.ndim - len(shape)
    if extra:
        grad = jnp.sum(grad, axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    return jnp.sum(grad, axis=axes, keepdims=True) if axes else grad


# --- dot-product attention -----------------------------------------------------


class _Static(NamedTuple):
    """The non-differentiable options of a call (hashable: the custom_vjp's static argument)."""

    causal: str | None
    scale: float
    softcap: float | None


@partial(jax.custom_vjp, nondiff_argnums=(5,))
def _attention(q, k, v, mask, sinks, o: _Static):
    """``(output, lse)`` of ``q`` (..., Hq, L, D), ``k`` (..., Hkv, S, D), ``v``
    (..., Hkv, S, Dv); ``mask`` boolean (True attends), additive or None."""
    return _front.attention(q, k, v, mask=mask, causal=o.causal, scale=o.scale, softcap=o.softcap, sinks=sinks, return_lse=True)


def _attention_fwd(q, k, v, mask, sinks, o: _Static):
    out, lse = _attention(q, k, v, mask, sinks, o)
    return (out, lse), (q, k, v, mask, sinks, out, lse)


def _attention_bwd(o: _Static, residuals, cotangents):
    q, k, v, mask, sinks, out, lse = residuals
    grad_out, grad_lse = cotangents
    work, widened = _work(jnp.result_type(q.dtype, k.dtype, v.dtype))
    bool_mask = mask is not None and mask.dtype == jnp.bool_
    attend = mask if bool_mask else None
    bias = None if mask is None or bool_mask else mask.astype(work)
    lead = math.prod(q.shape[:-2])
    step = max(1, _front._CHUNK_ELEMENTS // max(1, lead * att.BLOCK * max(q.shape[-1], v.shape[-1], 1)))
    dq, dk, dv, dsinks, dbias = att.attention_vjp(
        jnp, q.astype(work), k.astype(work), v.astype(work), out.astype(work), lse.astype(work), grad_out.astype(work),
        grad_lse.astype(work), attend=attend, bias=bias, causal=o.causal, scale=o.scale, softcap=o.softcap,
        sinks=None if sinks is None else sinks.astype(work), widened=widened, want_bias=bias is not None, rows_per_chunk=step,
    )
    dmask = None if bias is None else _sum_to(dbias, tuple(mask.shape)).astype(mask.dtype)
    dsinks = None if sinks is None else dsinks.astype(sinks.dtype)
    return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), dmask, dsinks


_attention.defvjp(_attention_fwd, _attention_bwd)
# Compiled as a whole (and so is its backward under ``grad``) rather than
# dispatched one operation at a time.
_attention_jit = jax.jit(_attention, static_argnums=(5,))


def _heads_last(x: Any) -> Any:
    """(..., T, N, H) <-> (..., N, T, H)."""
    return jnp.swapaxes(x, -3, -2)


def _length_mask(lengths: Any, size: int, batch: int, name: str) -> Any:
    """``arange(size) < lengths[b]`` as (B, 1, size) booleans."""
    n = jnp.asarray(lengths)
    if not jnp.issubdtype(n.dtype, jnp.integer):
        raise TypeError(f"{name} must be an integer array; got dtype {n.dtype}")
    if tuple(n.shape) != (batch,):
        raise ValueError(f"{name} must have shape ({batch},), one length per batch element; got {tuple(n.shape)}")
    return (jnp.arange(size) < n[:, None])[:, None, :]


def dot_product_attention(
    query: Any,
    key: Any,
    value: Any,
    bias: Any = None,
    mask: Any = None,
    *,
    scale: float | None = None,
    is_causal: bool = False,
    query_seq_lengths: Any = None,
    key_value_seq_lengths: Any = None,
    softcap: float | None = None,
    sinks: Any = None,
    return_lse: bool = False,
) -> Any:
    r"""Exact, NaN-free scaled dot-product attention in
    ``jax.nn.dot_product_attention``'s layout, differentiable under jit, vmap and grad.

    .. math:: s_{ij} = \mathrm{cap}(\tau\, q_i \cdot k_j) + B_{ij},\quad
              O_i = \frac{\sum_{j \in A_i} e^{s_{ij} - M_i} v_j}
                         {\sum_{j \in A_i} e^{s_{ij} - M_i} + e^{\sigma_n - M_i}},\quad
              \mathrm{lse}_i = M_i + \operatorname{log1p}(s)

    (the formula of :func:`softmaxkit.attention`: ``tau`` the scale,
    ``cap(x) = c tanh(x / c)``, ``B`` the bias, ``A_i`` the keys row ``i``
    may attend to, ``sigma_n`` the head's sink, ``M_i`` the row's largest
    score, ``s`` the normaliser's sum without its largest term).

    Parameters
    ----------
    query : jax.Array (B, T, N, H) or (T, N, H)
    key : jax.Array (B, S, K, H) or (S, K, H)
    value : jax.Array (B, S, K, Hv) or (S, K, Hv)
        ``N`` a multiple of ``K`` (grouped-query attention: query head ``n``
        uses key head ``n // (N // K)``, as ``jax.nn``).
    bias : jax.Array, optional
        Broadcastable to (B, N, T, S); added to the scores after the soft
        cap (differentiable).  ``-inf`` entries mask; finite ones, however
        negative, are ordinary scores.
    mask : bool jax.Array, optional
        Broadcastable to (B, N, T, S); True attends.
    scale : float, optional
        Finite and > 0; default ``1 / sqrt(H)``.
    is_causal : bool
        Row ``i`` attends to keys ``j <= i`` (top-left, as ``jax.nn``).
    query_seq_lengths, key_value_seq_lengths : int jax.Array (B,), optional
        Rows ``i >= query_seq_lengths[b]`` attend to nothing (output 0);
        keys ``j >= key_value_seq_lengths[b]`` are not attended.
    softcap : float, optional
        ``c tanh(s / c)`` after the scale, before the bias and mask (Gemma 2).
    sinks : jax.Array (N,), optional
        One logit per query head in the normaliser only (gpt-oss);
        differentiable.
    return_lse : bool
        Also return the natural-log log-sum-exp (B, N, T) (float32 for
        16-bit and float32 inputs, float64 for float64), differentiable.

    Returns
    -------
    jax.Array (B, T, N, Hv) in the inputs' promoted dtype, and the
    log-sum-exp with ``return_lse``.

    Notes
    -----
    The forward is :func:`softmaxkit.attention` on ``jax.numpy``; the
    backward is FlashAttention-2's, from the saved output and log-sum-exp
    (``jax.custom_vjp``; forward mode is not defined).  Gradients flow to
    ``query``, ``key``, ``value``, ``bias`` and ``sinks``.

    Precision: with ``jax_enable_x64``, float32 and narrower inputs are
    computed in float64 and rounded once, float64 with compensated dot
    products, with the accuracy contract of :func:`softmaxkit.attention`.
    Without x64 (JAX's default), bfloat16 and float16 are computed in
    float32 and rounded once; float32 is computed in float32 with the same
    compensations as float64 (TwoProduct scores, exact shift ``exp(hi)(1 +
    lo)``, compensated sums), so the error stays a few float32 roundings
    (the contract's float64-input constants, with ``u`` the float32 unit
    roundoff) while results stay normal: XLA flushes subnormals to 0.

    A row with nothing to attend to (all masked, a zero sequence length)
    gives output 0 and zero, finite gradients where ``jax.nn`` gives NaN or
    the mean of the values; masked keys and values (NaN or inf there) are
    never read, in the forward or the backward.  ``local_window_size`` and
    ``implementation`` are not supported.

    Examples
    --------
    >>> import jax, jax.numpy as jnp, softmaxkit.jax as smj
    >>> q = jnp.ones((1, 2, 1, 2)); k = jnp.ones((1, 3, 1, 2)); v = jnp.arange(6.0).reshape(1, 3, 1, 2)
    >>> mask = jnp.array([[True, True, False], [False, False, False]])
    >>> smj.dot_product_attention(q, k, v, mask=mask)[0, :, 0]
    Array([[1., 2.],
           [0., 0.]], dtype=float32)
    >>> jax.nn.dot_product_attention(q, k, v, mask=mask)[0, 1, 0]  # the mean of the values
    Array([2., 3.], dtype=float32)
    >>> g = jax.grad(lambda q: smj.dot_product_attention(q, k, v, mask=mask).sum())(q)
    >>> bool(jnp.isfinite(g).all())
    True
    """
    q, k, v = _as_float(query, "query"), _as_float(key, "key"), _as_float(value, "value")
    is_causal = validate.flag(is_causal, "is_causal")
    return_lse = validate.flag(return_lse, "return_lse")
    for name, a in (("query", q), ("key", k), ("value", v)):
        if a.ndim not in (3, 4):
            raise ValueError(f"{name} must have shape (B, T, N, H) or (T, N, H); got shape {tuple(a.shape)}")
    if not q.ndim == k.ndim == v.ndim:
        raise ValueError(f"query, key and value must have the same number of dimensions; got shapes {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    tau = 1.0 / math.sqrt(max(q.shape[-1], 1)) if scale is None else validate.positive_finite(scale, "scale")
    cap = None if softcap is None else validate.positive_finite(softcap, "softcap")
    keep = None
    if mask is not None:
        keep = jnp.asarray(mask)
        if keep.dtype != jnp.bool_:
            raise TypeError(f"mask must be a boolean array (True attends); got dtype {keep.dtype}; pass additive masks as bias")
    if query_seq_lengths is not None or key_value_seq_lengths is not None:
        if q.ndim != 4:
            raise ValueError(f"query_seq_lengths and key_value_seq_lengths need batched inputs (B, T, N, H); got query of shape {tuple(q.shape)}")
        n_batch = q.shape[0]
        lengths = jnp.ones((n_batch, 1, 1, 1), dtype=jnp.bool_)
        if query_seq_lengths is not None:
            lengths = lengths & _length_mask(query_seq_lengths, q.shape[1], n_batch, "query_seq_lengths")[..., None]
        if key_value_seq_lengths is not None:
            lengths = lengths & _length_mask(key_value_seq_lengths, k.shape[1], n_batch, "key_value_seq_lengths")[:, :, None, :]
        keep = lengths if keep is None else (keep & lengths)
    combined = keep
    if bias is not None:
        b = _as_float(bias, "bias")
        # A boolean mask selects: masked entries become -inf, which the
        # numerics never read (an inf or NaN bias there changes nothing).
        combined = b if keep is None else jnp.where(keep, b, jnp.asarray(-_INF, dtype=b.dtype))
    if sinks is not None:
        sinks = _as_float(sinks, "sinks")
    out, lse = _attention_jit(_heads_last(q), _heads_last(k), _heads_last(v), combined, sinks, _Static("top_left" if is_causal else None, tau, cap))
    out = _heads_last(out)
    return (out, lse) if return_lse else out


# --- merge of partial attention states ---------------------------------------


class _MergeStatic(NamedTuple):
    axis: int
    base: Any
    empty_lse: str


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def _merge(outputs, lses, o: _MergeStatic):
    return _front.merge_attention_states(outputs, lses, axis=o.axis, base=o.base, empty_lse=o.empty_lse)


def _merge_fwd(outputs, lses, o: _MergeStatic):
    out, lse = _merge(outputs, lses, o)
    return (out, lse), (outputs, lses, out, lse)


def _merge_bwd(o: _MergeStatic, residuals, cotangents):
    outputs, lses, out, lse = residuals
    grad_out, grad_lse = cotangents
    work, _ = _work(jnp.result_type(outputs.dtype, lses.dtype))
    axis = o.axis % lses.ndim
    m = jnp.moveaxis(lses.astype(work), axis, 0)
    acc = jnp.moveaxis(outputs.astype(work), axis, 0)
    merged = lse.astype(work)
    if o.empty_lse == "+inf":
        m = jnp.where(m == _INF, -_INF, m)
        merged = jnp.where(merged == _INF, -_INF, merged)
    dm, d_acc = att.merge_vjp(jnp, m, acc, merged, out.astype(work), grad_out.astype(work), grad_lse.astype(work), o.base == 2)
    return jnp.moveaxis(d_acc, 0, axis).astype(outputs.dtype), jnp.moveaxis(dm, 0, axis).astype(lses.dtype)


_merge.defvjp(_merge_fwd, _merge_bwd)
_merge_jit = jax.jit(_merge, static_argnums=(2,))


def merge_attention_states(outputs: Any, lses: Any, *, axis: int = 0, base: Any = "e", empty_lse: str = "-inf") -> tuple[Any, Any]:
    r"""Merge attention results over disjoint key sets into the attention over
    their union, differentiable (to ``outputs`` and ``lses``) under jit, vmap and grad.

    .. math:: \mathrm{lse} = M + \operatorname{log1p}\Bigl(\sum_{i \ne k} w_i\Bigr),\quad
              o = \frac{o_k + \sum_{i \ne k} w_i o_i}{1 + \sum_{i \ne k} w_i},\quad
              w_i = e^{\mathrm{lse}_i - M}

    with ``M = lse_k`` the largest log-sum-exp.

    Parameters
    ----------
    outputs : jax.Array (..., Dv) or a sequence of arrays
        The partial outputs, one state per index of ``axis``; a sequence is
        stacked along ``axis``.
    lses : jax.Array or a sequence of arrays
        Their log-sum-exps, of ``outputs``' shape without the last axis.
    axis : int
        The states' axis, in ``lses``' numbering.
    base : {"e", 2}
    empty_lse : {"-inf", "+inf"}
        As :func:`softmaxkit.merge_attention_states`.

    Returns
    -------
    (output, lse): arrays without ``axis``.

    Notes
    -----
    The forward is :func:`softmaxkit.merge_attention_states` on
    ``jax.numpy`` (the same edge rules: the empty state is the identity and
    its output is never read; float32 in compensated float32 without x64).
    The backward (``jax.custom_vjp``), with ``pi_i`` each state's share of
    the union: ``d o_i = pi_i dO`` and ``d lse_i = pi_i (dLSE + c dO . (o_i
    - o))`` (``c = ln 2`` for base 2); an empty state gets zero gradients.

    Examples
    --------
    >>> import jax, jax.numpy as jnp, softmaxkit.jax as smj
    >>> o = jnp.array([[1.0, 2.0], [jnp.nan, jnp.nan]]); lse = jnp.array([0.5, -jnp.inf])
    >>> smj.merge_attention_states(o, lse)[0]
    Array([1., 2.], dtype=float32)
    >>> jax.grad(lambda o: smj.merge_attention_states(o, lse)[0].sum())(o)
    Array([[1., 1.],
           [0., 0.]], dtype=float32)
    """
    if isinstance(outputs, Sequence):
        items = [_as_float(o, "outputs") for o in outputs]
        stack_axis = axis if axis >= 0 or not items else axis + items[0].ndim
        outputs = jnp.stack(items, axis=stack_axis)
    if isinstance(lses, Sequence):
        lses = jnp.stack([_as_float(x, "lses") for x in lses], axis=axis)
    outputs, lses = _as_float(outputs, "outputs"), _as_float(lses, "lses")
    if outputs.ndim < 2:
        raise ValueError(f"outputs must have at least 2 dimensions (the states and the head dimension); got shape {tuple(outputs.shape)}")
    (ax,) = validate.axis(axis, max(lses.ndim, 1))
    if not (isinstance(base, str) and base == "e") and not (type(base) is int and base == 2):
        raise ValueError(f"base must be 'e' or 2; got {validate.describe(base)}")
    if empty_lse not in _front.EMPTY_LSE:
        raise ValueError(f"empty_lse must be '-inf' or '+inf'; got {validate.describe(empty_lse)}")
    return _merge_jit(outputs, lses, _MergeStatic(ax, base, empty_lse))
