"""dot_product_attention and merge_attention_states for JAX arrays, each a ``jax.custom_vjp``.

Attention takes one of two paths, chosen when it is called:

- On the CPU, float32 and bfloat16 inputs run the native kernel
  (``kernels/csrc/attention.c``) through the XLA FFI handlers of
  ``native.py``, forward and backward.
- Otherwise the formulas of ``numerics/attention.py`` run on ``jax.numpy``
  in the working precision of ``numerics.working_dtype``: the forward's
  loops over query chunks and key blocks are ``lax.scan`` whose step is
  ``absorb_block`` (then ``absorb_sink`` and ``finish``), the backward's
  step is ``attention_vjp_rows`` on one chunk and one block (FlashAttention-2's
  backward, the weights recomputed from the saved log-sum-exp).  The traced
  program therefore has one copy of the formulas, and compile time does not
  grow with the lengths.

The merge runs the NumPy / array-API function of ``frontend/attention.py``
with ``xp = jax.numpy`` and ``merge_vjp`` backward.  Nothing here restates a
formula; this module maps ``jax.nn.dot_product_attention``'s layout (B, T,
N, H) onto the numerics' (..., N, T, H) and its masks onto one boolean or
additive mask.  Works under ``jax.jit``, ``jax.vmap`` and ``jax.grad``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from softmaxkit.backends.jax import native
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
    native: bool


# The dtypes the native kernel takes, and its codes for the causal masks.
_NATIVE_DTYPES = (jnp.float32, jnp.bfloat16)
_NATIVE_CAUSAL = {None: 0, "top_left": 1, "bottom_right": 2}


def _native_operands(q: Any, mask: Any, sinks: Any) -> tuple[Any, Any]:
    """The mask at query's rank (a float mask in float32 unless float64) and the sinks (float32 unless float64)."""
    if mask is not None:
        mask = jnp.reshape(mask, (1,) * (q.ndim - mask.ndim) + tuple(mask.shape))
        if mask.dtype not in (jnp.bool_, jnp.float32, jnp.float64):
            mask = mask.astype(jnp.float32)
    if sinks is not None and sinks.dtype not in (jnp.float32, jnp.float64):
        sinks = sinks.astype(jnp.float32)
    return mask, sinks


def _split(n: int, most: int) -> tuple[int, int]:
    """``(count, size)``: ``n`` items in ``count`` equal pieces of at most ``most``, padded by fewer than ``count``."""
    count = -(-n // most)
    return count, (-(-n // count) if count else 0)


def _pad(x: Any, axis: int, size: int, fill: Any) -> Any:
    """``x`` padded with ``fill`` at the end of ``axis`` to ``size``."""
    extra = size - x.shape[axis]
    if not extra:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, extra)
    return jnp.pad(x, widths, constant_values=fill)


def _scan(body: Any, carry: Any, xs: Any) -> tuple[Any, Any]:
    """``lax.scan(body, carry, xs)``; one step is called directly (a loop of
    one trip only costs compile time)."""
    if jax.tree.leaves(xs)[0].shape[0] != 1:
        return lax.scan(body, carry, xs)
    carry, y = body(carry, jax.tree.map(lambda x: x[0], xs))
    return carry, jax.tree.map(lambda x: x[None], y)


class _Tiles:
    """Query rows in chunks and keys in blocks of ``att.BLOCK`` (one block of
    all keys when fewer), each a ``lax.scan`` step, so that the traced
    program has one copy of the formulas whatever the lengths.

    Grouped layout: queries (..., Hkv, G, L, D) and keys (..., Hkv, 1, S, D),
    as :func:`softmaxkit.attention`'s.  Lengths are padded to whole chunks
    and blocks: padded keys are never attended, padded rows are dropped (and
    given the empty row's log-sum-exp ``-inf`` in the backward, so that they
    contribute nothing).  The chunk size depends on the shapes only, never
    on values, as in the NumPy front end.
    """

    def __init__(self, q_shape: tuple[int, ...], k_shape: tuple[int, ...], v_shape: tuple[int, ...]):
        *batch, self.n_q, self.n_rows, depth = q_shape
        self.n_kv, self.n_keys = k_shape[-3], k_shape[-2]
        self.batch = tuple(batch)
        self.group = self.n_q // self.n_kv
        self.lead = self.batch + (self.n_kv, self.group)
        self.width = min(self.n_keys, att.BLOCK)
        per_row = max(1, math.prod(self.lead) * self.width * max(depth, v_shape[-1], 1))
        self.n_chunks, self.rows = _split(self.n_rows, max(1, _front._CHUNK_ELEMENTS // per_row))
        self.n_blocks = -(-self.n_keys // att.BLOCK)

    def grouped_queries(self, x: Any) -> Any:
        """(..., Hq, L[, D]) -> (..., Hkv, G, L[, D])."""
        return jnp.reshape(x, self.lead + tuple(x.shape[len(self.batch) + 1 :]))

    def chunks(self, x: Any, fill: Any) -> Any:
        """Grouped (..., L) or (..., L, D) -> (chunks, ..., rows[, D]), padded with ``fill``."""
        axis = len(self.lead)
        x = _pad(x, axis, self.n_chunks * self.rows, fill)
        x = jnp.reshape(x, x.shape[:axis] + (self.n_chunks, self.rows) + x.shape[axis + 1 :])
        return jnp.moveaxis(x, axis, 0)

    def unchunk(self, y: Any) -> Any:
        """(chunks, ..., rows[, D]) -> (..., L[, D])."""
        axis = len(self.lead)
        y = jnp.moveaxis(y, 0, axis)
        y = jnp.reshape(y, y.shape[:axis] + (self.n_chunks * self.rows,) + y.shape[axis + 2 :])
        return lax.slice_in_dim(y, 0, self.n_rows, axis=axis)

    def blocks(self, x: Any) -> Any:
        """(..., S, D) -> (blocks, ..., BLOCK, D), padded with zeros (never read)."""
        x = _pad(x, -2, self.n_blocks * self.width, 0)
        x = jnp.reshape(x, x.shape[:-2] + (self.n_blocks, self.width, x.shape[-1]))
        return jnp.moveaxis(x, -3, 0)

    def unblock(self, y: Any, axis: int) -> Any:
        """(blocks, ..., BLOCK at ``axis`` (negative), ...) -> (..., S, ...)."""
        y = jnp.moveaxis(y, 0, axis - 1)
        y = jnp.reshape(y, y.shape[: axis - 1] + (self.n_blocks * self.width,) + (y.shape[axis + 1 :] if axis != -1 else ()))
        return lax.slice_in_dim(y, 0, self.n_keys, axis=axis)

    def grouped_mask(self, mask: Any, fill: Any) -> Any:
        """``mask`` (broadcastable to (..., Hq, L, S)) in the grouped layout,
        broadcast dimensions kept at 1, L and S padded with ``fill``."""
        mask = jnp.reshape(mask, (1,) * (len(self.batch) + 3 - mask.ndim) + tuple(mask.shape))
        heads = (self.n_kv, self.group) if mask.shape[-3] != 1 else (1, 1)
        mask = jnp.reshape(mask, mask.shape[:-3] + heads + mask.shape[-2:])
        if mask.shape[-2] != 1:
            mask = _pad(mask, -2, self.n_chunks * self.rows, fill)
        if mask.shape[-1] != 1:
            mask = _pad(mask, -1, self.n_blocks * self.width, fill)
        return mask

    def selection(self, attend: Any, bias: Any, causal: str | None, l0: Any, j0: Any):
        """``(attend_block, bias_block)`` of the numerics for the chunk of rows
        at ``l0`` and the block of keys at ``j0`` (both traced): they take
        offsets within the block."""

        def window(m: Any, a: int, b: int) -> Any:
            if m.shape[-2] != 1:
                m = lax.dynamic_slice_in_dim(m, l0, self.rows, axis=-2)
            if m.shape[-1] != 1:
                m = lax.dynamic_slice_in_dim(m, j0 + a, b - a, axis=-1)
            return m

        def attend_block(a: int, b: int) -> Any:
            keep = None if attend is None else window(attend, a, b)
            keys = j0 + a + jnp.arange(b - a)
            if causal is not None:
                c = att.causal_keep(l0 + jnp.arange(self.rows), keys, self.n_rows, self.n_keys, causal)
                keep = c if keep is None else (keep & c)
            if self.n_keys % max(self.width, 1):
                real = keys < self.n_keys
                keep = real if keep is None else (keep & real)
            return keep

        def bias_block(a: int, b: int) -> Any:
            return None if bias is None else window(bias, a, b)

        return attend_block, bias_block


def _split_mask(mask: Any, work: Any) -> tuple[Any, Any]:
    """``(attend, bias)``: a boolean mask selects, any other is added (in ``work``)."""
    if mask is None:
        return None, None
    if mask.dtype == jnp.bool_:
        return mask, None
    return None, mask.astype(work)


@partial(jax.custom_vjp, nondiff_argnums=(5,))
def _attention(q, k, v, mask, sinks, o: _Static):
    """``(output, lse)`` of ``q`` (..., Hq, L, D), ``k`` (..., Hkv, S, D), ``v``
    (..., Hkv, S, Dv); ``mask`` boolean (True attends), additive or None.

    The forward of :func:`softmaxkit.attention` with its loops as
    ``lax.scan``: each step is ``numerics.attention.absorb_block``, the
    sink ``absorb_sink``, the result ``finish``.  With ``o.native`` (float32
    or bfloat16 inputs of one dtype, on the CPU) the native kernel instead.
    """
    if o.native:
        m, sk = _native_operands(q, mask, sinks)
        return native.attention_forward(q, k, v, m, sk, _NATIVE_CAUSAL[o.causal], o.scale, o.softcap)
    out_dtype = jnp.result_type(q.dtype, k.dtype, v.dtype)
    work, widened = _work(out_dtype)
    lse_dtype = out_dtype if out_dtype in (jnp.float32, jnp.float64) else jnp.float32
    t = _Tiles(q.shape, k.shape, v.shape)
    attend, bias = _split_mask(mask, work)
    attend = None if attend is None else t.grouped_mask(attend, False)
    bias = None if bias is None else t.grouped_mask(bias, 0.0)
    qc = t.chunks(t.grouped_queries(q.astype(work)), 0.0)
    kb = t.blocks(jnp.expand_dims(k.astype(work), -3))
    vb = t.blocks(jnp.expand_dims(v.astype(work), -3))
    sink = None if sinks is None else jnp.reshape(sinks.astype(work), (t.n_kv, t.group, 1))
    starts = jnp.arange(t.n_blocks) * t.width
    options = {"scale": o.scale, "softcap": o.softcap, "widened": widened}

    def chunk(_, xs):
        l0, qrows = xs

        def block(state, ys):
            j0, kblock, vblock = ys
            attend_block, bias_block = t.selection(attend, bias, o.causal, l0, j0)
            state = att.absorb_block(
                jnp, state, qrows, kblock, vblock, 0, t.width, attend_block=attend_block, bias_block=bias_block, **options
            )
            return state, None

        state = att.empty_state(jnp, tuple(qrows.shape[:-1]), v.shape[-1], work, None)
        state, _ = _scan(block, state, (starts, kb, vb))
        if sink is not None:
            state = att.absorb_sink(jnp, state, sink, widened)
        out, lse = att.finish(jnp, *state)
        return None, (out.astype(out_dtype), lse.astype(lse_dtype))

    _, (out, lse) = _scan(chunk, None, (jnp.arange(t.n_chunks) * t.rows, qc))
    out = jnp.reshape(t.unchunk(out), t.batch + (t.n_q, t.n_rows, v.shape[-1]))
    return out, jnp.reshape(t.unchunk(lse), t.batch + (t.n_q, t.n_rows))


def _attention_fwd(q, k, v, mask, sinks, o: _Static):
    out, lse = _attention(q, k, v, mask, sinks, o)
    return (out, lse), (q, k, v, mask, sinks, out, lse)


def _attention_bwd(o: _Static, residuals, cotangents):
    """``numerics.attention.attention_vjp_rows`` a chunk of rows and a block
    of keys at a time (two nested ``lax.scan``), the sinks' gradient from
    one call without keys."""
    q, k, v, mask, sinks, out, lse = residuals
    grad_out, grad_lse = cotangents
    if o.native:
        m, sk = _native_operands(q, mask, sinks)
        want_bias = mask is not None and mask.dtype != jnp.bool_
        dq, dk, dv, dsinks, dbias = native.attention_backward(
            q, k, v, m, sk, out, lse, grad_out.astype(q.dtype), grad_lse.astype(jnp.float32), _NATIVE_CAUSAL[o.causal],
            o.scale, o.softcap, want_bias,
        )
        dmask = _sum_to(dbias, tuple(mask.shape)).astype(mask.dtype) if want_bias else None
        return dq, dk, dv, dmask, (None if sinks is None else dsinks.astype(sinks.dtype))
    work, widened = _work(jnp.result_type(q.dtype, k.dtype, v.dtype))
    t = _Tiles(q.shape, k.shape, v.shape)
    attend, bias = _split_mask(mask, work)
    attend = None if attend is None else t.grouped_mask(attend, False)
    bias = None if bias is None else t.grouped_mask(bias, 0.0)
    rows = [t.grouped_queries(a.astype(work)) for a in (q, out, grad_out, lse, grad_lse)]
    kg = jnp.expand_dims(k.astype(work), -3)
    vg = jnp.expand_dims(v.astype(work), -3)
    options = {"scale": o.scale, "softcap": o.softcap, "widened": widened}
    # Padded rows get lse = -inf: empty rows, whose gradients are zero.
    fills = (0.0, 0.0, 0.0, -_INF, 0.0)
    chunked = [t.chunks(a, fill) for a, fill in zip(rows, fills)]
    kb, vb = t.blocks(kg), t.blocks(vg)
    starts = jnp.arange(t.n_blocks) * t.width
    want_bias = bias is not None

    def chunk(acc, xs):
        l0, qrows, orows, dorows, lrows, dlrows = xs

        def block(dq, ys):
            j0, kblock, vblock = ys
            attend_block, bias_block = t.selection(attend, bias, o.causal, l0, j0)
            dq_b, dk_b, dv_b, _, db_b = att.attention_vjp_rows(
                jnp, qrows, kblock, vblock, orows, lrows, dorows, dlrows, attend_block=attend_block,
                bias_block=bias_block, sink=None, want_bias=want_bias, **options,
            )
            return dq + dq_b, (dk_b, dv_b, db_b)

        dq, (dk, dv, db) = _scan(block, jnp.zeros_like(qrows), (starts, kb, vb))
        return (acc[0] + dk, acc[1] + dv), (dq, db)

    zero_k = jnp.zeros((t.n_blocks,) + t.lead + (t.width, k.shape[-1]), work)
    zero_v = jnp.zeros((t.n_blocks,) + t.lead + (t.width, v.shape[-1]), work)
    (dk, dv), (dq, db) = _scan(chunk, (zero_k, zero_v), (jnp.arange(t.n_chunks) * t.rows, *chunked))
    dq = jnp.reshape(t.unchunk(dq), q.shape)
    dk = jnp.reshape(jnp.sum(t.unblock(dk, -2), axis=-3), k.shape)
    dv = jnp.reshape(jnp.sum(t.unblock(dv, -2), axis=-3), v.shape)
    dmask = None
    if want_bias:
        # (chunks, blocks, ..., rows, BLOCK) -> (..., L, S)
        db = t.unchunk(jnp.moveaxis(db, 1, -2))
        db = t.unblock(jnp.moveaxis(db, -2, 0), -1)
        dmask = _sum_to(jnp.reshape(db, t.batch + (t.n_q, t.n_rows, t.n_keys)), tuple(mask.shape)).astype(mask.dtype)
    dsinks = None
    if sinks is not None:
        sink = jnp.reshape(sinks.astype(work), (t.n_kv, t.group, 1))
        none = lax.slice_in_dim(kg, 0, 0, axis=-2), lax.slice_in_dim(vg, 0, 0, axis=-2)
        per_row = att.attention_vjp_rows(
            jnp, rows[0], *none, rows[1], rows[3], rows[2], rows[4], attend_block=None, bias_block=None, sink=sink, **options
        )[3]
        dsinks = jnp.sum(jnp.reshape(jnp.sum(per_row, axis=-1), (-1, t.n_q)), axis=0).astype(sinks.dtype)
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


def _check_shapes(q: Any, k: Any, v: Any) -> None:
    """query (..., T, N, H), key (..., S, K, H), value (..., S, K, Hv), N a multiple of K."""
    if tuple(k.shape[:-3]) != tuple(q.shape[:-3]):
        raise ValueError(f"key must have query's batch size; got query of shape {tuple(q.shape)} and key of shape {tuple(k.shape)}")
    if k.shape[-1] != q.shape[-1]:
        raise ValueError(f"key's last dimension (H) must equal query's {q.shape[-1]}; got key of shape {tuple(k.shape)}")
    if tuple(v.shape[:-1]) != tuple(k.shape[:-1]):
        want = tuple(k.shape[:-1]) + ("Hv",)
        raise ValueError(f"value must have shape {want} (key's batch, length and heads); got {tuple(v.shape)}")
    validate.grouped_heads(q.shape[-2], k.shape[-2], "N", "K")


def _check_scores_shape(m: Any, name: str, q: Any, k: Any) -> None:
    """``m`` broadcastable to the scores (B, N, T, S) (or (N, T, S) unbatched)."""
    target = tuple(q.shape[:-3]) + (q.shape[-2], q.shape[-3], k.shape[-3])
    shape = tuple(m.shape)
    if len(shape) > len(target) or any(a not in (1, b) for a, b in zip(reversed(shape), reversed(target))):
        raise ValueError(f"{name} must be broadcastable to the scores {target} (batch, query heads, query length, key length); got shape {shape}")


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
    On the CPU, float32 and bfloat16 inputs run softmaxkit's native kernel
    (XLA FFI custom calls; :func:`softmaxkit.jax.kernel_path` says whether
    it is in use), computed in float64 and rounded once, with the accuracy
    contract of :func:`softmaxkit.attention`.  Otherwise the forward is the
    formulas of :func:`softmaxkit.attention` on ``jax.numpy``, their loops
    over query chunks and key blocks of 128 as ``lax.scan`` (compile time
    does not grow with ``T`` or ``S``).  Either way the backward is
    FlashAttention-2's, from the saved output and log-sum-exp
    (``jax.custom_vjp``; forward mode is not defined).  Gradients flow to
    ``query``, ``key``, ``value``, ``bias`` and ``sinks``.

    Precision of the formulas: with ``jax_enable_x64``, float32 and narrower
    inputs are computed in float64 and rounded once, float64 with
    compensated dot products, with the accuracy contract of
    :func:`softmaxkit.attention`.  Without x64 (JAX's default), bfloat16 and float16 are computed in
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
    _check_shapes(q, k, v)
    tau = validate.attention_scale(scale, q.shape[-1])
    cap = None if softcap is None else validate.positive_finite(softcap, "softcap")
    keep = None
    if mask is not None:
        keep = jnp.asarray(mask)
        if keep.dtype != jnp.bool_:
            raise TypeError(f"mask must be a boolean array (True attends); got dtype {keep.dtype}; pass additive masks as bias")
        _check_scores_shape(keep, "mask", q, k)
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
        _check_scores_shape(b, "bias", q, k)
        # A boolean mask selects: masked entries become -inf, which the
        # numerics never read (an inf or NaN bias there changes nothing).
        combined = b if keep is None else jnp.where(keep, b, jnp.asarray(-_INF, dtype=b.dtype))
    if sinks is not None:
        sinks = _as_float(sinks, "sinks")
        if tuple(sinks.shape) != (q.shape[-2],):
            raise ValueError(f"sinks must have shape ({q.shape[-2]},), one logit per query head; got {tuple(sinks.shape)}")
    dtype = jnp.result_type(q.dtype, k.dtype, v.dtype)
    use_native = dtype in _NATIVE_DTYPES and native.active()
    if use_native:
        q, k, v = q.astype(dtype), k.astype(dtype), v.astype(dtype)
    static = _Static("top_left" if is_causal else None, tau, cap, use_native)
    out, lse = _attention_jit(_heads_last(q), _heads_last(k), _heads_last(v), combined, sinks, static)
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
