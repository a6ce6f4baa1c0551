"""Vocabulary-parallel cross-entropy for JAX: a ``jax.custom_vjp`` called inside ``jax.shard_map``.

Each device holds a contiguous slice of every row's classes.  The forward
pass runs the steps of ``numerics.vocab_parallel`` with JAX collectives in
between: one ``pmax`` (the row maximum, and the target's class weight), one
``psum`` of the shares of ``s`` (the argmax left out by the slice holding
it), one ``psum`` of the slices' losses.  Reverse mode keeps the local
logits and a few numbers per row, and recomputes this slice's gradient from
them with no communication.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from softmaxkit import numerics as num
from softmaxkit.backends.jax.functions import _CHECKS, _as_float, _work
from softmaxkit.frontend import validate
from softmaxkit.numerics import vocab_parallel as vp
from softmaxkit.numerics.rows import with_row_sum


class _Options(NamedTuple):
    """The static part of a call (hashable: the custom_vjp's non-differentiable argument)."""

    axis_name: Any
    ignore_index: int
    eps: float
    z: float
    reduction: str


def _slice_targets(t, width: int, o: _Options, work):
    """``(local, on_slice, keep, hot)`` of the global labels for this device's
    slice of ``width`` classes (``numerics.vocab_parallel.target_slice``;
    ``keep`` is boolean, ``hot`` in ``work``)."""
    start = jax.lax.axis_index(o.axis_name) * width
    local, on_slice, keep = vp.target_slice(jnp, t, start, width, o.ignore_index)
    return local, on_slice, keep, vp.slice_hot(jnp, local, on_slice, width, work)


def _forward(x, t, w, o: _Options):
    """The reduced loss (``x``'s dtype) and the residuals of reverse mode."""
    work, widened = _work(x.dtype)
    xw = x.astype(work)
    local, on_slice, keep, hot = _slice_targets(t, x.shape[-1], o, work)
    m = vp.slice_max(jnp, xw)
    if w is None:
        a = jax.lax.pmax(m, o.axis_name)
        w_t = vp.row_weight(jnp, keep, None, work)
    else:
        # One MAX gives both: the row maximum and the target's weight (-inf
        # on the slices that do not hold the target).
        both = jax.lax.pmax(jnp.concatenate([m, vp.picked(jnp, w, local, on_slice)], axis=-1), o.axis_name)
        a = both[:, :1]
        w_t = vp.row_weight(jnp, keep, both[:, 1:], work)
    # Every column is summed, the count of slices holding the maximum too:
    # ties across devices are data, and a traced function cannot branch on them.
    cols, st = vp.shares(jnp, xw, a, o.eps, w, widened)
    summed = jax.lax.psum(jnp.concatenate(cols, axis=-1), o.axis_name)
    totals = vp.row_totals(jnp, [summed[:, i : i + 1] for i in range(len(cols))])
    st = with_row_sum(st, jnp, totals["s"])
    coef, _ = vp.coefficients(jnp, xw, hot, o.eps, w, w_t, keep.astype(work), totals)
    part = vp.slice_loss(jnp, st, coef, o.z, w_t, on_slice)
    if o.reduction != "none":
        part = num.compensated_sum(jnp, part[None, :], widened)[0]
    loss = jax.lax.psum(part, o.axis_name)
    # numerics.mean_denominator's rule, the sum of the kept rows' target
    # weights, taken from w_t: each class weight is known on its slice only.
    denominator = jnp.sum(w_t)
    out, _ = num.reduce(jnp, loss, None, denominator, o.reduction, widened)
    residuals = (x, t, w, a, totals["s"], w_t, totals["n_finite"], totals["finite_weight"], denominator)
    return out.astype(x.dtype), residuals


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def _vocab_parallel_ce(x, t, w, o: _Options):
    return _forward(x, t, w, o)[0]


def _vocab_parallel_ce_fwd(x, t, w, o: _Options):
    return _forward(x, t, w, o)


def _vocab_parallel_ce_bwd(o: _Options, residuals, cotangent):
    # This slice's columns of the gradient from the row's totals alone; no
    # collective.  Labels and class weights get no cotangent (None: zero).
    x, t, w, a, s, w_t, n_finite, finite_weight, denominator = residuals
    work, widened = _work(x.dtype)
    xw = x.astype(work)
    _, _, keep, hot = _slice_targets(t, x.shape[-1], o, work)
    st = vp.row_stats_of_slice(jnp, xw, a, s, widened)
    totals = {"s": s, "n_finite": n_finite, "finite_weight": finite_weight}
    coef, c_sum = vp.coefficients(jnp, xw, hot, o.eps, w, w_t, keep.astype(work), totals)
    grad = num.reduce_grad(jnp, vp.slice_grad(jnp, st, coef, c_sum, o.z, w_t), denominator, o.reduction)
    g = cotangent.astype(work)
    grad = grad * (g[:, None] if o.reduction == "none" else g)
    return grad.astype(x.dtype), None, None


_vocab_parallel_ce.defvjp(_vocab_parallel_ce_fwd, _vocab_parallel_ce_bwd)
# Compiled as a whole, so that an eager shard_map runs one program rather
# than dispatching each operation of the formulas on every device.
_vocab_parallel_ce_jit = jax.jit(_vocab_parallel_ce, static_argnums=(3,))


def _axis_size(axis_name: Any) -> int:
    """The number of devices along ``axis_name``; a clear error where it is not bound."""
    try:
        hash(axis_name)
    except TypeError:
        raise TypeError(f"axis_name must be a mesh axis name (a str, or a tuple of them); got {validate.describe(axis_name)}") from None
    try:
        return int(jax.lax.axis_size(axis_name))
    except NameError:
        raise ValueError(
            f"axis_name={axis_name!r} is not bound: call vocab_parallel_cross_entropy inside jax.shard_map "
            "over a mesh with that axis, the classes split along it"
        ) from None


def _require_varying(x: Any, axis_name: Any) -> None:
    """``x`` must vary along ``axis_name`` in shard_map's type system (``check_vma=True``).

    With ``check_vma=False`` JAX divides the cotangent of a replicated output
    by the number of devices and expects the backward pass to sum it back
    across them; this backward pass has no collective, so the gradients would
    come out that many times too small.  JAX versions whose avals record no
    varying axes are not checked.
    """
    varying = getattr(getattr(jax.typeof(x), "manual_axis_type", None), "varying", None)
    if varying is None:
        return
    names = axis_name if isinstance(axis_name, tuple) else (axis_name,)
    if not set(names) <= set(varying):
        raise ValueError(
            f"local_logits does not vary along axis_name={axis_name!r} (its varying axes: {sorted(varying)}): "
            "pass it through jax.shard_map with in_specs splitting the classes along that axis and check_vma=True "
            "(the default); under check_vma=False the gradients would be wrong"
        )


def vocab_parallel_cross_entropy(
    local_logits: Any,
    labels: Any,
    *,
    axis_name: Any,
    weight: Any = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    reduction: str = "mean",
) -> Any:
    r"""Cross-entropy over classes split across devices, inside ``jax.shard_map``.

    .. math:: \ell = \sum_j c_j\,\big((a - x_j) + \operatorname{log1p}(s)\big)
              + z\, w_t\, \operatorname{lse}(x)^2,\qquad
              s = \sum_{i \ne k} e^{x_i - a}

    the loss of :func:`softmaxkit.jax.cross_entropy` on the whole rows, with
    ``a`` the row maximum over every device, ``k`` its first position and
    ``c = (1 - eps) w_t onehot(t) + eps w / K`` (``K`` the row's classes,
    on all devices, whose logit is not ``-inf``).  No device gathers the
    rows.

    Parameters
    ----------
    local_logits : jax.Array of shape (N, V_local)
        This device's slice of the classes: the device at position
        ``r = jax.lax.axis_index(axis_name)`` holds classes
        ``[r * V_local, (r + 1) * V_local)`` (the layout of
        ``in_specs=P(None, axis_name)``); every device's slice has the same
        width.
    labels : jax.Array of shape (N,)
        Integer class indices into the whole vocabulary (``0`` to
        ``V_local * n_devices - 1``) or ``ignore_index``, the same on every
        device.
    axis_name : hashable
        The ``shard_map`` mesh axis (or tuple of axes) the classes are split
        along.
    weight : jax.Array of shape (V_local,), optional
        This device's slice of the finite class weights.
    ignore_index : int, default -100
        Labels equal to it contribute no loss and no gradient.
    label_smoothing : float in [0, 1], default 0
        Spread over the whole row's classes, on every device.
    z_loss : float >= 0, default 0
    reduction : {"mean", "sum", "none"}, default "mean"
        "mean" divides by the summed target weights of the rows not
        ignored, as ``softmaxkit.jax.cross_entropy`` does.

    Returns
    -------
    jax.Array: a scalar, or ``(N,)`` for "none", the same on every device
    (``out_specs=P()``); ``local_logits``' dtype.  Differentiable (reverse
    mode) in ``local_logits``; ``labels`` and ``weight`` get zero cotangents.

    Notes
    -----
    Algorithm: one ``jax.lax.pmax`` of the slices' row maxima (with class
    weights, stacked with the target's weight, ``-inf`` on the slices that
    do not hold it); one ``jax.lax.psum`` of each slice's share of ``s``,
    the first entry equal to the row maximum left out by every slice that
    holds one, and the count of those slices (each beyond the first left out
    a term equal to 1, added back), with label smoothing also the count of
    classes that are not ``-inf`` and their weights; one ``jax.lax.psum`` of
    the slices' losses (per row for "none", one partial total each
    otherwise).  The ``log1p(s)`` form survives the split, so confident rows
    keep their full relative accuracy.  The sums are in float64 where
    ``jax_enable_x64`` is on, else float32 with the compensations of
    ``softmaxkit.jax`` (16-bit logits: plain float32).

    Derivatives: a ``jax.custom_vjp``.  The forward pass keeps the local
    logits and, per row, ``a``, ``s``, ``w_t`` and with smoothing ``K`` and
    the finite classes' weight; reverse mode recomputes this slice's
    columns of ``(C + 2 z w_t lse) p - c`` from them, with no collective,
    the target's entry at the argmax ``(C - c_k) - C s / (1 + s)``, never
    ``p_k - 1``.  Forward mode raises (custom_vjp).

    Accuracy: with ``jax_enable_x64``, float32 and bfloat16 logits are
    computed in float64 and rounded once: within 2 ULP of
    :func:`softmaxkit.jax.cross_entropy` on the whole rows (tested on 2 and
    4 devices, every option).  Without it float32 is computed in
    compensated float32, the precision of ``softmaxkit.jax``'s formulas
    there (the loss within 4 ULP; XLA flushes subnormal results, so margins
    beyond about 87 lose their tiny terms).

    Edge cases as on one device: all labels ignored gives 0 and a zero
    gradient for "mean"; fully masked rows (every class ``-inf`` on every
    device) have zero gradients; ``+inf`` logits share the mass equally,
    across devices too; a label on a ``-inf`` logit gives ``+inf``; NaN
    stays in its row, on every device.

    Checks: shapes, dtypes and options always; label range and weight
    values only on concrete arrays (inside ``shard_map`` they are traced and
    the checks are skipped).  ``ValueError`` where ``axis_name`` is not
    bound (a call outside ``shard_map``), and where ``local_logits`` does
    not vary along it: ``shard_map(..., check_vma=False)`` hands reverse
    mode the cotangent of a replicated output divided by the number of
    devices, expecting a collective to sum it back, and this backward pass
    has none.  Without ``jax.jit``, reverse mode over a mesh from
    ``jax.make_mesh`` needs ``with jax.set_mesh(mesh):`` (JAX's rule).

    References
    ----------
    Shoeybi et al., "Megatron-LM", 2019 (the three all-reduces of a
    vocabulary-parallel loss); Blanchard, Higham & Higham, IMA J. Numer.
    Anal. 41 (2021), Algorithm 4.1 (the ``log1p(s)`` form).

    Examples
    --------
    >>> import jax, jax.numpy as jnp, softmaxkit.jax as smj
    >>> from jax.sharding import NamedSharding, PartitionSpec as P
    >>> mesh = jax.make_mesh((1,), ("vocab",), devices=jax.devices()[:1])
    >>> def loss(x, t):
    ...     return smj.vocab_parallel_cross_entropy(x, t, axis_name="vocab")
    >>> split = jax.shard_map(loss, mesh=mesh, in_specs=(P(None, "vocab"), P()), out_specs=P())
    >>> x = jax.device_put(jnp.array([[30.0, 0.0, 0.0, 0.0]]), NamedSharding(mesh, P(None, "vocab")))
    >>> float(jax.jit(jax.grad(split))(x, jnp.array([0]))[0, 0])  # jax.nn gives 0
    -2.807...e-13
    """
    ignore_index, eps, z, reduction = validate.loss_options(ignore_index, label_smoothing, z_loss, reduction)
    x = _as_float(local_logits, "local_logits")
    if x.ndim != 2:
        raise ValueError(f"local_logits must have shape (N, V_local), this device's slice of the classes; got shape {tuple(x.shape)}")
    if x.shape[1] == 0:
        raise ValueError(f"local_logits has an empty class axis (shape {tuple(x.shape)}); each device needs at least one class")
    labels = jnp.asarray(labels)
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"labels must hold integer class indices; got dtype {labels.dtype}")
    validate.target_shape("int", labels.shape, x.shape, 1, "labels", "local_logits", "axis")
    n_classes = x.shape[1] * _axis_size(axis_name)
    _require_varying(x, axis_name)
    validate.class_indices(jnp, labels, n_classes, ignore_index, "labels", _CHECKS)
    work, _ = _work(x.dtype)
    w = None
    if weight is not None:
        w = _as_float(weight, "weight")
        if tuple(w.shape) != (x.shape[1],):
            raise ValueError(f"weight must have shape ({x.shape[1]},), this device's slice of the class weights; got {tuple(w.shape)}")
        validate.class_weights(jnp, w, x.shape[1], _CHECKS)
        w = w.astype(work)
    return _vocab_parallel_ce_jit(x, labels, w, _Options(axis_name, ignore_index, eps, z, reduction))
