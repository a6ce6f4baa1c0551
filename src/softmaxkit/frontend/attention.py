"""attention and merge_attention_states: the public NumPy / array-API functions.

Both validate once, convert to the working dtype, call the formulas of
``numerics.attention`` and round once to the output dtype.  ``attention``
goes through the query rows a chunk at a time and through the keys a block
at a time (``numerics.attention.BLOCK``), so its peak memory is the output,
the inputs in the working dtype and a few tens of MiB, never ``L x S``
scores.  NumPy float32 and bfloat16 inputs (one dtype, no ``p_dtype``) go to
the native kernel instead, through the registry (``kernels.into
.attention_forward_into``): the same formulas in C, on the kernels' threads.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from softmaxkit import numerics as num
from softmaxkit.frontend import registry, validate
from softmaxkit.frontend.layout import put
from softmaxkit.numerics import attention as att

CAUSAL = ("top_left", "bottom_right")
EMPTY_LSE = ("-inf", "+inf")
# Elements of one block's products (query rows x keys x head dim) per chunk.
_CHUNK_ELEMENTS = 2**19


def _heads(a: Any, name: str, letters: str) -> tuple[int, ...]:
    if a.ndim < 3:
        raise ValueError(f"{name} must have at least 3 dimensions {letters}; got shape {tuple(a.shape)}")
    return tuple(a.shape)


def _float_dtype(xp: Any, value: Any, name: str) -> Any:
    """``value`` as a real floating dtype of namespace ``xp`` (a NumPy dtype
    name such as ``"bfloat16"`` for NumPy, with ml_dtypes installed)."""
    if xp.__name__.endswith("numpy"):
        try:
            dtype = np.dtype(value)
        except TypeError:
            dtype = None
        if dtype is not None and (dtype.kind == "f" or dtype.name == "bfloat16" or dtype.name.startswith("float8")):
            return dtype
    else:
        try:
            if xp.isdtype(value, "real floating"):
                return value
        except (TypeError, ValueError):
            pass
    raise TypeError(f"{name} must be None or a real floating dtype (such as float16 or bfloat16); got {validate.describe(value)}")


def _native_eligible(q: Any, k: Any, v: Any, mask: Any) -> bool:
    """Whether the native kernel takes these (validated) arrays: NumPy
    float32 or bfloat16 inputs of one dtype, a bool or float mask."""
    if not (type(q) is np.ndarray and type(k) is np.ndarray and type(v) is np.ndarray):
        return False
    if not (q.dtype == k.dtype == v.dtype) or not (q.dtype == np.float32 or q.dtype.name == "bfloat16"):
        return False
    return mask is None or type(mask) is np.ndarray


def _native_attention(into: Any, q, k, v, mask, causal, scale, softcap, sinks):
    """``(output, lse)`` from the native kernel (``kernels.into.attention_forward_into``)."""
    if mask is not None and mask.dtype != np.bool_ and mask.dtype not in (np.float32, np.float64):
        # float16 and bfloat16 masks widen exactly (at the mask's own shape, not the scores')
        mask = np.asarray(mask, dtype=np.float32)
    q, k, v = (np.ascontiguousarray(a) for a in (q, k, v))
    out = np.empty(q.shape[:-1] + v.shape[-1:], dtype=q.dtype)
    lse = np.empty(q.shape[:-1], dtype=np.float32)
    sk = None if sinks is None else np.asarray(sinks, dtype=np.float64)
    return into.attention_forward_into(q, k, v, out, lse, mask=mask, causal=causal, scale=scale, softcap=softcap, sinks=sk)


@validate.quiet
def attention(
    query: Any,
    key: Any,
    value: Any,
    *,
    mask: Any = None,
    causal: Any = None,
    scale: Any = None,
    softcap: Any = None,
    sinks: Any = None,
    return_lse: bool = False,
    p_dtype: Any = None,
) -> Any:
    r"""Scaled dot-product attention, exact and NaN-free, with its log-sum-exp.

    .. math:: s_{ij} = \mathrm{cap}(\tau\, q_i \cdot k_j) + B_{ij},\quad
              O_i = \frac{\sum_{j \in A_i} e^{s_{ij} - M_i} v_j}
                         {\sum_{j \in A_i} e^{s_{ij} - M_i} + e^{\sigma_h - M_i}},\quad
              \mathrm{lse}_i = M_i + \operatorname{log1p}(s)

    with ``tau`` the scale, ``cap(x) = c tanh(x / c)`` the soft cap,
    ``B`` an additive mask, ``A_i`` the keys row ``i`` attends to (the
    boolean mask, the causal mask, a ``-inf`` score or bias excluded),
    ``sigma_h`` the head's sink, ``M_i`` the largest of the row's scores and
    its sink, and ``s`` the normaliser's sum without its largest term.

    Parameters
    ----------
    query : array (..., Hq, L, D)
    key : array (..., Hkv, S, D)
        Same leading dimensions as ``query``; ``Hq`` must be a multiple of
        ``Hkv`` (grouped-query attention: query head ``h`` uses key head
        ``h // (Hq // Hkv)``).
    value : array (..., Hkv, S, Dv)
    mask : bool or float array, optional
        Broadcastable to (..., Hq, L, S).  Boolean: True attends.  Float:
        added to the scores after the soft cap; ``-inf`` entries mask (their
        keys are never read), finite ones, however negative, are ordinary
        scores.
    causal : {None, "top_left", "bottom_right"}
        Row ``i`` attends to keys ``j <= i`` (``"top_left"``, torch's
        ``is_causal``) or ``j <= i + S - L`` (``"bottom_right"``,
        FlashAttention's); combined with ``mask``.
    scale : float, optional
        Finite and > 0; default ``1 / sqrt(D)``.
    softcap : float, optional
        Finite and > 0: scores become ``c tanh(s / c)`` after scaling and
        before the mask (Gemma 2).
    sinks : array (Hq,), optional
        One logit per query head that counts in every row's normaliser and
        adds nothing to the output (gpt-oss; 0 gives "softmax off by one").
    return_lse : bool, default False
        Also return the natural-log log-sum-exp of each row (with the sink).
    p_dtype : dtype, optional
        Round the weights ``exp(s - m)`` (relative to their block's maximum)
        to this dtype before they multiply ``value``, while the normaliser
        sums them unrounded, as FlashAttention-style kernels do: to measure
        that mismatch.  None (default) rounds nothing.

    Returns
    -------
    output : array (..., Hq, L, Dv)
        In the floating dtype of the inputs.
    lse : array (..., Hq, L), with ``return_lse``
        float64 for float64 inputs, float32 otherwise.

    Notes
    -----
    Keys are processed in blocks of 128 with the online softmax; each
    block's state is merged into the running one by the formula of
    :func:`merge_attention_states`, and query rows go a chunk at a time, so
    no ``L x S`` array is formed.  The result of a row does not depend on
    the other rows or on the batch size (bit for bit).  NumPy float32 and
    bfloat16 inputs of one dtype (without ``p_dtype``) run in the native C
    kernel (``softmaxkit.kernels``; the same formulas and contract, results
    bitwise the same for every thread count); other inputs, and builds
    without the kernels, run the formulas on ``xp`` arrays.

    Accuracy against the exact attention of the inputs (``u`` the output
    format's unit roundoff; float32 and narrower computed in float64 and
    rounded once; float64 with compensated dot products and an exact
    shift): the log-sum-exp within 2 ULP of float32 (float32, bfloat16,
    float16 inputs) or 4 ULP (float64); the weights within 2 (4) ULP; each
    output entry within ``c u sum_j P_ij |v_j| + eta`` with ``c = 2``
    (``c = 8`` for float64) and ``eta`` half the smallest subnormal.  A
    float64 log-sum-exp near 0 through cancellation is within 4 ULP of the
    largest ``|score|``.  float64 with a soft cap ``cap`` adds ``tanh``'s
    rounding: ``cap`` ULP on the log-sum-exp and the weights, ``cap / 2`` on
    ``c``.  An additive mask is added exactly while ``|s + B| <= 2**20`` and
    rounded in float64 above.  See ``docs/attention.md`` for the measured
    figures.

    Edge behaviour: a row with no key to attend to gives output 0 and
    log-sum-exp ``-inf`` (with a sink: 0 and the sink); masked keys and
    values are never read, so NaN or inf there changes nothing; NaN in an
    attended score or value makes that row NaN; ``+inf`` scores share the
    row's mass equally (log-sum-exp ``+inf``); ``S = 0`` gives zeros and
    ``L = 0`` an empty output.

    Examples
    --------
    A fully masked row gives 0, where the naive formula gives NaN:

    >>> import numpy as np, softmaxkit as smk
    >>> q = np.ones((1, 2, 2)); k = np.ones((1, 3, 2)); v = np.arange(6.0).reshape(1, 3, 2)
    >>> mask = np.array([[True, True, False], [False, False, False]])
    >>> smk.attention(q, k, v, mask=mask)
    array([[[1., 2.],
            [0., 0.]]])
    >>> s = np.where(mask, 1.0, -np.inf)  # the naive softmax of the masked scores
    >>> with np.errstate(invalid="ignore"):
    ...     (np.exp(s - s.max(-1, keepdims=True)) / np.exp(s - s.max(-1, keepdims=True)).sum(-1, keepdims=True))[1]
    array([nan, nan, nan])
    """
    return_lse = validate.flag(return_lse, "return_lse")
    xp, q, q_dtype = validate.real_array(query, "query")
    _, k, k_dtype = validate.real_array(validate.same_namespace(xp, key, "key"), "key")
    _, v, v_dtype = validate.real_array(validate.same_namespace(xp, value, "value"), "value")
    *batch, n_q_heads, n_rows, depth = _heads(q, "query", "(..., Hq, L, D)")
    *k_batch, n_kv_heads, n_keys, k_depth = _heads(k, "key", "(..., Hkv, S, D)")
    *v_batch, v_heads, v_keys, v_depth = _heads(v, "value", "(..., Hkv, S, Dv)")
    batch = tuple(batch)
    if tuple(k_batch) != batch:
        raise ValueError(f"key must have the leading dimensions of query {batch}; got key of shape {tuple(k.shape)}")
    if k_depth != depth:
        raise ValueError(f"key's last dimension (D) must equal query's {depth}; got key of shape {tuple(k.shape)}")
    if (tuple(v_batch), v_heads, v_keys) != (batch, n_kv_heads, n_keys):
        want = batch + (n_kv_heads, n_keys, "Dv")
        raise ValueError(f"value must have shape {want} (key's leading dimensions, heads and length); got {tuple(v.shape)}")
    group = validate.grouped_heads(n_q_heads, n_kv_heads)
    if causal is not None and causal not in CAUSAL:
        raise ValueError(f"causal must be None, 'top_left' or 'bottom_right'; got {validate.describe(causal)}")
    tau = validate.attention_scale(scale, depth)
    cap = None if softcap is None else validate.positive_finite(softcap, "softcap")
    if p_dtype is not None:
        p_dtype = _float_dtype(xp, p_dtype, "p_dtype")

    out_dtype = xp.result_type(q_dtype, k_dtype, v_dtype)
    work, widened = num.working_dtype(xp, out_dtype, q)
    lse_dtype = out_dtype if out_dtype in (xp.float32, xp.float64) else xp.float32
    lead = batch + (n_kv_heads, group)
    attend_all, bias_all, mask_full = None, None, None
    if mask is not None:
        m = validate.same_namespace(xp, mask, "mask")
        kind = validate._kind(xp, m.dtype)
        if kind not in ("bool", "float"):
            raise TypeError(f"mask must be a boolean array (True attends) or a floating array (added to the scores); got dtype {m.dtype}")
        m = mask_full = validate.broadcast_to(xp, m, batch + (n_q_heads, n_rows, n_keys), "mask", "the scores (..., Hq, L, S)")
        m = xp.reshape(m, lead + (n_rows, n_keys))
        attend_all, bias_all = (m, None) if kind == "bool" else (None, m)

    sink = None
    if sinks is not None:
        _, sk, _ = validate.real_array(validate.same_namespace(xp, sinks, "sinks"), "sinks")
        if tuple(sk.shape) != (n_q_heads,):
            raise ValueError(f"sinks must have shape ({n_q_heads},), one logit per query head; got {tuple(sk.shape)}")
        sink = xp.reshape(xp.astype(sk, work), (n_kv_heads, group, 1))

    native = registry.native()
    if native is not None and p_dtype is None and _native_eligible(q, k, v, mask_full):
        out, lse = _native_attention(native.into, q, k, v, mask_full, causal, tau, cap, sinks)
        return (out, lse) if return_lse else out

    qg = xp.reshape(xp.astype(q, work, copy=False), lead + (n_rows, depth))
    kg = xp.reshape(xp.astype(k, work, copy=False), batch + (n_kv_heads, 1, n_keys, depth))
    vg = xp.reshape(xp.astype(v, work, copy=False), batch + (n_kv_heads, 1, n_keys, v_depth))

    dev = num.device(q)
    out = xp.empty(lead + (n_rows, v_depth), dtype=out_dtype, device=dev)
    lse = xp.empty(lead + (n_rows,), dtype=lse_dtype, device=dev)
    per_row = max(1, math.prod(lead) * att.BLOCK * max(depth, v_depth, 1))
    step = max(1, _CHUNK_ELEMENTS // per_row)
    for l0 in range(0, n_rows, step):
        l1 = min(l0 + step, n_rows)

        def attend_block(j0, j1, l0=l0, l1=l1):
            keep = None if attend_all is None else attend_all[..., l0:l1, j0:j1]
            if causal is not None:
                rows = xp.arange(l0, l1, device=dev)
                keys = xp.arange(j0, j1, device=dev)
                c = att.causal_keep(rows, keys, n_rows, n_keys, causal)
                keep = c if keep is None else (keep & c)
            return keep

        def bias_block(j0, j1, l0=l0, l1=l1):
            return None if bias_all is None else xp.astype(bias_all[..., l0:l1, j0:j1], work)

        state = att.attention_rows(
            xp, qg[..., l0:l1, :], kg, vg, scale=tau, softcap=cap, widened=widened,
            attend_block=attend_block, bias_block=bias_block, sink=sink, p_dtype=p_dtype,
        )
        o, r = att.finish(xp, *state)
        out = put(out, (..., slice(l0, l1), slice(None)), xp.astype(o, out_dtype))
        lse = put(lse, (..., slice(l0, l1)), xp.astype(r, lse_dtype))
    out = xp.reshape(out, batch + (n_q_heads, n_rows, v_depth))
    if return_lse:
        return out, xp.reshape(lse, batch + (n_q_heads, n_rows))
    return out


@validate.quiet
def merge_attention_states(outputs: Any, lses: Any, *, axis: int = 0, base: Any = "e", empty_lse: str = "-inf") -> Any:
    r"""Merge attention results over disjoint key sets into the attention over their union.

    .. math:: \mathrm{lse} = M + \operatorname{log1p}\Bigl(\sum_{i \ne k} w_i\Bigr),\quad
              o = \frac{o_k + \sum_{i \ne k} w_i o_i}{1 + \sum_{i \ne k} w_i},\quad
              w_i = e^{\mathrm{lse}_i - M}

    with ``M = lse_k`` the largest log-sum-exp (the first of equal ones).

    Parameters
    ----------
    outputs : array (..., Dv)
        The partial outputs, one state per index of ``axis`` (a list of
        arrays is stacked along axis 0).
    lses : array
        Their log-sum-exps, of the shape of ``outputs`` without its last
        axis.
    axis : int, default 0
        The axis of the states, in ``lses``' numbering (not the last axis of
        ``outputs``).
    base : {"e", 2}
        The base of the log-sum-exps: natural (FlashAttention, FlexAttention)
        or 2 (FlashInfer).  The result is in the same base.
    empty_lse : {"-inf", "+inf"}
        How an empty state (no key) is written: ``-inf`` (FlashAttention 3,
        FlashInfer, FlexAttention) or ``+inf`` (FlashAttention 2's forward).
        With ``"+inf"`` every ``+inf`` input is read as empty and an empty
        result is written ``+inf``.

    Returns
    -------
    output : array of ``outputs``' shape without ``axis``
    lse : array of ``lses``' shape without ``axis``

    Notes
    -----
    The empty state ``(0, -inf)`` is the identity and its output is never
    read (a NaN there does not leak); merging only empty states gives
    ``(0, -inf)``.  A NaN log-sum-exp makes the row NaN; a NaN output makes
    its own entries NaN.  The states are taken in decreasing order of
    log-sum-exp, so the result does not depend on their order (bit for
    bit) except among states of equal log-sum-exp; the merge of two states
    is commutative bit for bit.  Computed in float64 (compensated for
    float64 inputs) and rounded once: the log-sum-exp within 2 ULP (4 for
    float64), each output entry within ``2 u sum_i P_i |o_i|`` with ``P_i``
    the states' weights (``4 u`` for float64).  Associativity holds within
    these bounds.

    Examples
    --------
    Split-KV: attention over two halves of the keys, merged.

    >>> import numpy as np, softmaxkit as smk
    >>> rng = np.random.default_rng(0)
    >>> q, k, v = rng.normal(size=(1, 4, 8)), rng.normal(size=(1, 6, 8)), rng.normal(size=(1, 6, 3))
    >>> o1, l1 = smk.attention(q, k[:, :2], v[:, :2], return_lse=True)
    >>> o2, l2 = smk.attention(q, k[:, 2:], v[:, 2:], return_lse=True)
    >>> o, l = smk.merge_attention_states([o1, o2], [l1, l2])
    >>> bool(np.allclose(o, smk.attention(q, k, v)))
    True

    An empty state is the identity, even with a NaN output:

    >>> smk.merge_attention_states(np.array([[1.0, 2.0], [np.nan, np.nan]]), np.array([0.5, -np.inf]))
    (array([1., 2.]), np.float64(0.5))
    """
    xp, o, o_dtype = validate.real_array(outputs, "outputs")
    _, lse, lse_dtype = validate.real_array(validate.same_namespace(xp, lses, "lses"), "lses")
    if o.ndim < 2:
        raise ValueError(f"outputs must have at least 2 dimensions (the states and the head dimension); got shape {tuple(o.shape)}")
    if tuple(lse.shape) != tuple(o.shape[:-1]):
        raise ValueError(f"lses must have the shape of outputs without its last axis {tuple(o.shape[:-1])}; got {tuple(lse.shape)}")
    (ax,) = validate.axis(axis, lse.ndim)
    if not (isinstance(base, str) and base == "e") and not (type(base) is int and base == 2):
        raise ValueError(f"base must be 'e' or 2; got {validate.describe(base)}")
    if empty_lse not in EMPTY_LSE:
        raise ValueError(f"empty_lse must be '-inf' or '+inf'; got {validate.describe(empty_lse)}")
    base2 = base == 2
    work, widened = num.working_dtype(xp, xp.result_type(o_dtype, lse_dtype), o)
    m = xp.moveaxis(xp.astype(lse, work), ax, 0)
    acc = xp.moveaxis(xp.astype(o, work), ax, 0)
    inf = float("inf")
    if empty_lse == "+inf":
        m = xp.where(m == inf, xp.full_like(m, -inf), m)
    if m.shape[0] == 0:
        merged = xp.zeros(acc.shape[1:], dtype=work, device=num.device(o))
        merged_lse = xp.full(m.shape[1:], -inf, dtype=work, device=num.device(o))
    else:
        merged, merged_lse = att.finish(xp, *att.combine(xp, m, xp.zeros_like(m), acc, widened, base2), base2)
    if empty_lse == "+inf":
        merged_lse = xp.where(merged_lse == -inf, xp.full_like(merged_lse, inf), merged_lse)
    out, out_lse = xp.astype(merged, o_dtype), xp.astype(merged_lse, lse_dtype)
    if type(out) is np.ndarray and out_lse.ndim == 0:
        out_lse = out_lse[()]
    return out, out_lse
