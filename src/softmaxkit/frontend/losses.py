"""cross_entropy, nll_loss and binary_cross_entropy_with_logits.

Names and semantics follow ``torch.nn.functional`` (weighted means, soft
targets, label smoothing), with defined answers where PyTorch gives NaN: an
all-ignored batch has loss 0 and a zero gradient; label smoothing gives no
mass to ``-inf`` classes.
"""

from __future__ import annotations

import math
from typing import Any

import array_api_compat
import array_api_compat.numpy as _NUMPY
import numpy as np

from softmaxkit.frontend import layout as _layout
from softmaxkit.frontend import registry
from softmaxkit import numerics as num
from softmaxkit.frontend import validate
from softmaxkit.frontend.softmax import _itemsize, _prepare_rows, _working
from softmaxkit.frontend.layout import put


# Elements per partial sum of the binary cross-entropy's reduced loss: a
# fixed count, so the result does not depend on the chunk size.
_SUM_BLOCK = 4096


def _class_weight(xp: Any, weight: Any, n_classes: int, work: Any) -> Any:
    if weight is None:
        return None
    w = validate.same_namespace(xp, weight, "weight")
    _, w, _ = validate.real_array(w, "weight")
    validate.class_weights(xp, w, n_classes)
    return xp.astype(w, work)


def _finish(xp, layout, loss, grad, out_dtype, return_grad):
    loss = xp.astype(loss, out_dtype)
    if not return_grad:
        return loss
    return loss, layout.back_rows(xp.astype(grad, out_dtype, copy=False))


def _native_cross_entropy(kernel, logits, inputs, axis, ignore_index, eps, z, reduction, return_grad):
    """The native kernel's per-row losses and gradient, finished by the shared rules; None if it declines.

    ``axis`` is the class axis, normalised; the per-row losses have the
    logits' shape without it, in C order, and the gradient the logits' shape.
    """
    t, q, w = inputs
    xp = _NUMPY
    n_classes = logits.shape[axis]
    if t is not None and w is not None:
        # The class weights are indexed by target below; without them the
        # kernel checks the indices itself and declines on a bad one, and the
        # generic path then raises the error.
        validate.class_indices(xp, t, n_classes, ignore_index, "targets")
    widened = num.working_dtype(xp, logits.dtype, logits)[1]
    # Of probability targets the denominator reads only the row count (the
    # first axis): a (rows, classes) view gives it without moving the class axis.
    rows = xp.reshape(t, (-1,)) if t is not None else xp.reshape(q, (logits.size // n_classes, n_classes))
    denominator = num.mean_denominator(xp, rows, w, ignore_index, xp.float64, q is not None)
    divisor = num.gradient_divisor(denominator, reduction)
    result = kernel.cross_entropy(logits, t, q, w, ignore_index, eps, z, 1.0 if divisor is None else divisor, return_grad, axis)
    if result is None:
        return None
    loss_rows, grad = result
    if grad is not None and divisor is None:
        grad[...] = 0
    loss, _ = num.reduce(xp, loss_rows, None, denominator, reduction, widened)
    loss = xp.astype(xp.asarray(loss), logits.dtype)
    return (loss, grad) if return_grad else loss


def cross_entropy_chunk(xp, xw, targets, weight, ignore_index, eps, z, widened, want_grad):
    """Per-row losses and gradients (``None`` without ``want_grad``) of rows
    ``xw`` of logits in the working dtype: the formulas of ``numerics``,
    before the reduction.  ``targets``: checked class indices (one per row)
    or probabilities (``xw``'s shape, working dtype)."""
    if validate.target_kind(xp, targets, "targets") == "int":
        hot = num.one_hot(xp, targets, xw.shape[-1], ignore_index, xw.dtype)
        coef, row_w = num.class_coefficients(xp, xw, eps, weight, hot=hot)
    else:
        coef, row_w = num.class_coefficients(xp, xw, eps, weight, probs=targets)
    st = num.row_stats(xp, xw, None, 1.0, widened)
    return num.cross_entropy_rows(xp, st, coef, z, row_w, want_grad)


@validate.quiet
def cross_entropy(
    logits: Any,
    targets: Any,
    *,
    axis: int = -1,
    weight: Any = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
    z_loss: float = 0.0,
    return_grad: bool = False,
) -> Any:
    r"""Softmax cross-entropy from logits, exact and NaN-free, with its gradient.

    With class coefficients ``c_j`` built from the target (below) the loss of
    a row is

    .. math:: \ell = \sum_j c_j\,(-\log p_j) + z\, w\, \operatorname{lse}(x)^2,
              \qquad -\log p_j = (a - x_j) + \operatorname{log1p}(s)

    and its gradient ``(C + 2 z w lse) p - c`` with ``C = sum_j c_j``.

    * Class indices ``t``: ``c = (1 - eps) w_t onehot(t) + eps w / K`` over the
      ``K`` classes whose logit is not ``-inf``; the row weight is ``w_t``.
    * Probabilities ``q``: ``c_j = w_j ((1 - eps) q_j + eps / K)``; row weight 1.

    Parameters
    ----------
    logits : array_like or array-API array
        Unnormalised scores with the classes along ``axis``.
    targets : array
        Integer class indices with ``logits``' shape minus ``axis``, or
        non-negative floating probabilities with ``logits``' shape.
    axis : int, default -1
        The class axis.
    weight : array of shape (C,), optional
        Finite per-class weights (PyTorch's ``weight``); negative ones are
        allowed, as in PyTorch.
    ignore_index : int, default -100
        Index targets equal to it contribute neither loss nor gradient.  With
        probability targets it must be negative (as in PyTorch).
    label_smoothing : float in [0, 1], default 0
    reduction : {"mean", "sum", "none"}, default "mean"
        "mean" divides by the sum of row weights (the number of non-ignored
        rows without ``weight``) for class indices and by the number of rows
        for probabilities, as PyTorch does.
    z_loss : float >= 0, default 0
        Adds ``z_loss * lse**2`` per row (PaLM's auxiliary loss), weighted by
        the row weight.
    return_grad : bool, default False
        Also return the gradient with respect to ``logits``; with
        ``reduction="none"`` it is the gradient of ``loss.sum()``.

    Returns
    -------
    loss, or ``(loss, grad)``: ``loss`` is a scalar array, or per row for
    ``reduction="none"`` (0 for ignored rows); ``grad`` has ``logits``' shape.

    Notes
    -----
    The loss is a sum of non-negative terms.  The gradient at the argmax is
    ``(C - c_k) - C s / (1 + s)``, never ``p_t - 1``, so a confident row keeps
    a non-zero target gradient where naive code and other libraries return 0.
    Accuracy for class-index targets: loss and every gradient entry within
    2 ULP (float16, bfloat16, float32) and 4 ULP (float64).  With probability
    targets, label smoothing or a z-loss a gradient entry
    ``C p_j + zg p_j - c_j`` (``zg = 2 z w lse``) can cancel; its error is
    then within 2 ULP (float16, bfloat16, float32) or 8 ULP (float64) of its
    largest term, ``max(C p_j, |zg| p_j, c_j)``.  Away from the native
    kernels the rows are computed a chunk at a time: peak memory is the
    gradient (if asked for) plus a few tens of MiB.

    Edge behaviour: all targets ignored gives 0 and a zero gradient (mean
    included), and so does a "mean" whose total weight is 0 (weights of both
    signs that cancel), where PyTorch divides by 0; label smoothing gives no
    mass to ``-inf`` classes; a target on a ``-inf`` logit gives ``+inf`` with
    a finite gradient; a fully masked row has a zero gradient.  An empty class axis raises ``ValueError``.

    Examples
    --------
    >>> import numpy as np, softmaxkit as smk
    >>> x = np.array([[2.0, 1.0, 0.1], [1000.0, 1.0, -1000.0], [3.0, 2.0, 1.0]])
    >>> loss, grad = smk.cross_entropy(x, np.array([0, 2, 1]), return_grad=True)
    >>> round(float(loss), 4)
    667.2749
    >>> grad[1]  # e^-999 / 3 underflows; naive code gives [nan, nan, nan]
    array([ 0.33333333,  0.        , -0.33333333])
    """
    backend = registry.backend_for(logits)
    if backend is not None:
        return backend.cross_entropy(
            logits, targets, axis=axis, weight=weight, ignore_index=ignore_index, label_smoothing=label_smoothing,
            reduction=reduction, z_loss=z_loss, return_grad=return_grad,
        )
    return_grad = validate.flag(return_grad, "return_grad")
    ignore_index, eps, z, reduction = validate.loss_options(ignore_index, label_smoothing, z_loss, reduction)
    if isinstance(targets, np.ndarray) and (targets.dtype.kind == "f" or (targets.dtype.kind == "V" and targets.dtype.name == "bfloat16")):  # the native kernels' probability targets
        validate.probability_targets_ignore_index(ignore_index, targets.dtype, "targets")
    native = registry.native()
    inputs = None if native is None else native.numpy.cross_entropy_inputs(logits, targets, axis, weight, ignore_index)
    if inputs is not None:
        class_axis = validate.axis(axis, logits.ndim)[0]
        result = _native_cross_entropy(native.numpy, logits, inputs, class_axis, ignore_index, eps, z, reduction, return_grad)
        if result is not None:
            return result
    xp, layout, rows, _, out_dtype, work, widened = _prepare_rows(logits, axis, name="logits", allow_many=False)
    n_classes = layout.n
    if n_classes == 0:
        raise ValueError(f"logits has an empty class axis (axis={axis}, shape {layout.shape}); cross-entropy needs at least one class")
    t = validate.same_namespace(xp, targets, "targets")
    kind = validate.target_kind(xp, t, "targets")
    w = _class_weight(xp, weight, n_classes, work)
    validate.target_shape(kind, t.shape, layout.shape, layout.axes[0], "targets", "logits", "axis")
    device = array_api_compat.device(rows)
    size = _itemsize(xp, work)
    if kind == "int":
        validate.class_indices(xp, t, n_classes, ignore_index, "targets")
        t_rows = xp.reshape(t, (layout.n_rows,))
    else:
        validate.probability_targets_ignore_index(ignore_index, t.dtype, "targets")
        q_rows = layout.rows(t)
    # The rows go through in chunks (see layout.chunk_rows): the gradient
    # of each is final when written, so a mean's denominator comes first.
    denominator = num.mean_denominator(xp, t_rows if kind == "int" else q_rows, w, ignore_index, work, kind != "int")
    loss = xp.empty((layout.n_rows,), dtype=work, device=device)
    grad = xp.empty_like(rows) if return_grad else None
    for part in layout.chunks(size):
        xw = _working(xp, rows, part, work)
        if kind == "int":
            targets_part = t_rows[part]
        else:
            targets_part = _working(xp, q_rows, part, work)
            if bool(xp.any(targets_part < 0)):
                validate.probabilities(xp, t, "targets")  # raises, naming the first negative entry
        loss[part], g = cross_entropy_chunk(xp, xw, targets_part, w, ignore_index, eps, z, widened, return_grad)
        if return_grad:
            grad[part, :] = xp.astype(num.reduce_grad(xp, g, denominator, reduction), out_dtype)
    loss, _ = num.reduce(xp, xp.reshape(loss, layout.rest_shape), None, denominator, reduction, widened)
    return _finish(xp, layout, loss, grad, out_dtype, return_grad)


@validate.quiet
def nll_loss(
    log_probs: Any,
    targets: Any,
    *,
    axis: int = -1,
    weight: Any = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    return_grad: bool = False,
) -> Any:
    r"""Negative log-likelihood of class indices given log-probabilities.

    .. math:: \ell = -w_t\, y_t

    where ``y`` are log-probabilities (for example :func:`log_softmax`
    output), with PyTorch's ``nll_loss`` semantics.

    Parameters
    ----------
    log_probs : array
        Log-probabilities with the classes along ``axis``.
    targets : integer array
        ``log_probs``' shape minus ``axis``.
    axis, weight, ignore_index, reduction, return_grad
        As in :func:`cross_entropy`.

    Returns
    -------
    loss, or ``(loss, grad)`` with the gradient with respect to ``log_probs``.

    Notes
    -----
    Exact: one negation, a weight, and a compensated sum for the reductions.
    An all-ignored batch gives 0 and a zero gradient.  The rows are computed
    a chunk at a time: peak memory is the gradient (if asked for) plus a few
    tens of MiB.

    Examples
    --------
    >>> import numpy as np, softmaxkit as smk
    >>> y = smk.log_softmax(np.array([[20.0, 0.0]], dtype=np.float32))
    >>> smk.nll_loss(y, np.array([0]))
    array(2.0611537e-09, dtype=float32)
    """
    return_grad = validate.flag(return_grad, "return_grad")
    reduction = validate.reduction(reduction)
    ignore_index = validate.integer(ignore_index, "ignore_index")
    xp, layout, rows, _, out_dtype, work, widened = _prepare_rows(log_probs, axis, name="log_probs", allow_many=False)
    n_classes = layout.n
    if n_classes == 0:
        raise ValueError(f"log_probs has an empty class axis (axis={axis}, shape {layout.shape})")
    t = validate.same_namespace(xp, targets, "targets")
    if validate.target_kind(xp, t, "targets") != "int":
        raise TypeError(f"targets must hold integer class indices; got dtype {t.dtype}")
    if tuple(t.shape) != layout.rest_shape:
        raise ValueError(f"targets must have shape {layout.rest_shape} (log_probs' shape without axis {axis}); got {tuple(t.shape)}")
    w = _class_weight(xp, weight, n_classes, work)
    validate.class_indices(xp, t, n_classes, ignore_index, "targets")
    t_rows = xp.reshape(t, (layout.n_rows,))
    size = _itemsize(xp, work)

    def weighted_hot(part):
        hot = num.one_hot(xp, t_rows[part], n_classes, ignore_index, work)
        return hot if w is None else hot * w

    # A chunk's gradient is final when written, so the mean's denominator comes first.
    denominator = num.mean_denominator(xp, t_rows, w, ignore_index, work, False)
    loss = xp.empty((layout.n_rows,), dtype=work, device=array_api_compat.device(rows))
    grad = xp.empty_like(rows) if return_grad else None
    for part in layout.chunks(size):
        hot, yw = weighted_hot(part), _working(xp, rows, part, work)
        loss = put(loss, part, -num.compensated_sum(xp, xp.where(hot == 0, xp.zeros_like(yw), hot * yw), widened)[..., 0])
        if return_grad:
            grad = put(grad, (part, slice(None)), xp.astype(num.reduce_grad(xp, -hot, denominator, reduction), out_dtype))
    loss, _ = num.reduce(xp, xp.reshape(loss, layout.rest_shape), None, denominator, reduction, widened)
    return _finish(xp, layout, loss, grad, out_dtype, return_grad)


@validate.quiet
def binary_cross_entropy_with_logits(
    logits: Any,
    targets: Any,
    *,
    weight: Any = None,
    pos_weight: Any = None,
    reduction: str = "mean",
    return_grad: bool = False,
) -> Any:
    r"""Binary cross-entropy from logits, elementwise.

    .. math:: \ell = w\,[\,\beta\, y \operatorname{softplus}(-x) + (1 - y) \operatorname{softplus}(x)\,]

    with ``beta = pos_weight``; its gradient is
    ``w [(1 - y) sigmoid(x) - beta y sigmoid(-x)]``.

    Parameters
    ----------
    logits : array
    targets : array of the same shape, values in [0, 1]
    weight : array, optional
        Broadcastable to ``logits``.
    pos_weight : array, optional
        Finite (negative values included, as in PyTorch), broadcastable to
        ``logits`` (per class along the last axis, as in PyTorch).
    reduction : {"mean", "sum", "none"}, default "mean"
        "mean" averages over all elements.
    return_grad : bool, default False
        Also return the gradient with respect to ``logits``.

    Returns
    -------
    loss, or ``(loss, grad)``.

    Notes
    -----
    Both terms are non-negative and each softplus is computed as
    ``max(x, 0) + log1p(exp(-|x|))``, so there is no cancellation: the common
    form ``(1 - y) x + softplus(-x)`` loses everything for ``y = 0`` and very
    negative ``x``.  Accuracy for hard targets: 2 ULP (float16, bfloat16,
    float32), 4 ULP (float64).  Infinite logits give the limits.  On the
    array-API path the elements are computed a chunk of slices along the
    first axis at a time (the loss summed in blocks of whole slices, then
    over blocks): peak memory is the outputs plus a few tens of MiB.

    Examples
    --------
    >>> import numpy as np, softmaxkit as smk
    >>> float(smk.binary_cross_entropy_with_logits(np.array([-40.0]), np.array([0.0])))
    4.248354255291589e-18
    """
    backend = registry.backend_for(logits)
    if backend is not None and backend.binary_cross_entropy_with_logits is not None:
        return backend.binary_cross_entropy_with_logits(
            logits, targets, weight=weight, pos_weight=pos_weight, reduction=reduction, return_grad=return_grad
        )
    return_grad = validate.flag(return_grad, "return_grad")
    reduction = validate.reduction(reduction)
    xp, x, out_dtype = validate.real_array(logits, "logits")
    y = validate.same_namespace(xp, targets, "targets")
    _, y, y_dtype = validate.real_array(y, "targets")
    if tuple(y.shape) != tuple(x.shape):
        raise ValueError(f"targets must have the shape of logits {tuple(x.shape)}; got {tuple(y.shape)}")
    out_dtype = xp.result_type(out_dtype, y_dtype)
    work, widened = num.working_dtype(xp, out_dtype, x)
    shape = tuple(x.shape)
    # The elements go through in chunks of whole slices along the first axis
    # (single elements for 1-D input), each flattened to a row.  The loss is
    # summed per block of `group` slices (about _SUM_BLOCK elements; a
    # chunk holds whole blocks), then over blocks: the partial sums stay few
    # and no chunk size changes a bit.
    flat_shape = shape if shape else (1,)
    x, y = xp.reshape(x, flat_shape), xp.reshape(y, flat_shape)
    width = math.prod(flat_shape[1:])
    group = max(1, _SUM_BLOCK // max(1, width))
    step = max(1, _layout.chunk_rows(width, _itemsize(xp, work)) // group) * group
    parts = [slice(start, min(start + step, flat_shape[0])) for start in range(0, flat_shape[0], step)]

    def chunk(a, part):
        piece = a[part, ...]
        return xp.reshape(xp.astype(xp.reshape(piece, (-1,)), work), (part.stop - part.start, width))

    for part in parts:
        yw = chunk(y, part)
        if bool(xp.any(validate.not_binary(yw))):
            validate.binary_targets(xp, y, "targets")  # raises, naming the first entry outside [0, 1]

    def _factor(value, name):
        if value is None:
            return None
        f = validate.same_namespace(xp, value, name)
        _, f, _ = validate.real_array(f, name)
        # Broadcast views: nothing of the logits' size is made.
        return xp.reshape(validate.broadcast_to(xp, xp.astype(f, work), shape, name, "logits"), flat_shape)

    w = _factor(weight, "weight")
    beta = _factor(pos_weight, "pos_weight")
    if beta is not None:
        validate.pos_weights(xp, beta)
    device = array_api_compat.device(x)
    sums = None if reduction == "none" else xp.empty((-(-flat_shape[0] // group),), dtype=work, device=device)
    loss_out = xp.empty(flat_shape, dtype=out_dtype, device=device) if reduction == "none" else None
    grad = xp.empty(flat_shape, dtype=out_dtype, device=device) if return_grad else None
    denominator = num.elementwise_denominator(xp, x, work)
    for part in parts:
        loss, g = num.binary_cross_entropy(xp, chunk(x, part), chunk(y, part), None if beta is None else chunk(beta, part), return_grad)
        if w is not None:
            w_part = chunk(w, part)
            loss = w_part * loss
            g = None if g is None else w_part * g
        piece_shape = (part.stop - part.start,) + flat_shape[1:]
        if reduction == "none":
            loss_out[part, ...] = xp.reshape(xp.astype(loss, out_dtype), piece_shape)
        else:
            k, block = part.stop - part.start, part.start // group
            full = k // group
            if full:
                whole_blocks = xp.reshape(loss[: full * group, :], (full, group * width))
                sums[block : block + full] = num.compensated_sum(xp, whole_blocks, widened)[..., 0]
            if k > full * group:
                rest = xp.reshape(loss[full * group :, :], (1, (k - full * group) * width))
                sums[block + full : block + full + 1] = num.compensated_sum(xp, rest, widened)[..., 0]
        if return_grad:
            grad[part, ...] = xp.reshape(xp.astype(num.reduce_grad(xp, g, denominator, reduction), out_dtype), piece_shape)
    if reduction == "none":
        loss = xp.reshape(loss_out, shape)
    else:
        loss, _ = num.reduce(xp, sums, None, denominator, reduction, widened)
        loss = xp.astype(loss, out_dtype)
    if not return_grad:
        return loss
    return loss, xp.reshape(grad, shape)
