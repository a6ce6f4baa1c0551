"""linear_cross_entropy: the cross-entropy of a linear layer's logits, never holding them.

The pass below (:func:`fused_pass`) is shared by the NumPy front end and the
torch backend: it goes through the tokens a chunk of rows at a time
(``numerics.linear.chunk_rows``), forms that chunk's logits with one matrix
product, hands them to a per-row loss that writes its gradient into a
buffer (the native cross-entropy kernel where it runs), and folds that
gradient into the gradients of the hidden states, the weight and the bias at
once.  Nothing of size ``tokens x classes`` is ever held.
"""

from __future__ import annotations

from typing import Any, Callable

import array_api_compat
import array_api_compat.numpy as _NUMPY
import numpy as np

from softmaxkit import numerics as num
from softmaxkit.frontend import registry, validate
from softmaxkit.frontend.losses import cross_entropy_chunk
from softmaxkit.numerics import linear as lin


class NumpyProducts:
    """The matrix products of :func:`fused_pass` for NumPy arrays (BLAS through ``np.matmul``)."""

    # add_product's band: bytes per logit of a chunk
    temporary_bytes = 2

    @staticmethod
    def product_into(out: Any, a: Any, b: Any) -> None:
        """``out[...] = a @ b``."""
        np.matmul(a, b, out=out)

    @staticmethod
    def add_product(acc: Any, a: Any, b: Any) -> None:
        """``acc += a @ b`` a band of rows at a time, each band's product no
        larger than half of ``a``: no temporary of ``acc``'s size."""
        band = max(1, a.size // (2 * acc.shape[1]))
        for start in range(0, acc.shape[0], band):
            rows = slice(start, start + band)
            acc[rows] += a[rows] @ b


RowLoss = Callable[[Any, Any, Any], Any]

# Bytes per logit the formulas' per-row loss allocates (its float64
# temporaries); the native kernel allocates none.
FORMULA_BYTES = 96


class WeightTiles:
    """The weight a tile of rows at a time, for the logits' product.

    A product with the whole ``(V, H)`` weight makes the BLAS pack a slab
    of all ``V`` rows (tens of MiB for a large vocabulary); a tile bounds
    that.  A weight narrower than the working dtype is widened tile by tile
    into one buffer made once per pass (a loop of fresh tile-sized
    temporaries would leave the allocator holding their memory).
    """

    def __init__(self, xp: Any, weight: Any, work: Any) -> None:
        v, width = weight.shape
        self.weight = weight
        self.tile = lin.tile_rows(v, width, xp.finfo(work).bits // 8)
        narrow = weight.dtype != work
        self.widened = xp.empty((self.tile, width), dtype=work, device=array_api_compat.device(weight)) if narrow else None

    def __iter__(self):
        """``(first row, last row + 1, the tile in the working dtype)`` over the weight's rows."""
        v = self.weight.shape[0]
        for t0 in range(0, v, self.tile):
            t1 = min(v, t0 + self.tile)
            w = self.weight[t0:t1, ...]
            if self.widened is not None:
                self.widened[: t1 - t0, ...] = w
                w = self.widened[: t1 - t0, ...]
            yield t0, t1, w


def form_logits(xp: Any, products: Any, hidden: Any, tiles: WeightTiles, bias: Any, out: Any) -> None:
    """``out[...] = hidden @ weight.T + bias`` in ``out``'s dtype (the
    working dtype, which ``hidden`` and ``bias`` are in already), a tile of
    the weight's rows (a block of ``out``'s columns) at a time."""
    for t0, t1, w in tiles:
        products.product_into(out[:, t0:t1], hidden, xp.matrix_transpose(w))
    if bias is not None:
        out += bias


# Bytes per logit of the float64 temporaries of a soft cap (the widened
# logits, their cap and slope, the float64 gradient).
_SOFTCAP_BYTES = 48


def fused_pass(
    xp: Any,
    products: Any,
    hidden: Any,
    weight: Any,
    bias: Any,
    row_loss: RowLoss,
    *,
    work: Any,
    softcap: float | None,
    want_grad: bool,
    live: Any = None,
    row_scale: Any = None,
    loss_bytes: int = 0,
    computable: bool = True,
    chunk_classes: int | None = None,
    hidden_grad_dtype: Any = None,
) -> tuple[Any, Any, Any, Any]:
    """One pass over the tokens: ``(loss rows, d_hidden, d_weight, d_bias)``.

    ``hidden`` is ``(N, H)``, ``weight`` ``(V, H)``, ``bias`` ``(V,)`` or
    None, in their own dtypes.  ``row_loss(logits, grad_out, rows)`` gets a
    chunk's logits (``(k, V)``, C-contiguous, in ``work``; float64 with a soft
    cap), writes the gradient of the chunk's reduced loss into ``grad_out``
    (``logits``' shape and dtype; None without gradients) and returns the
    ``k`` per-row losses; ``rows`` says which tokens these are (a slice or an
    index array into ``hidden``).  ``live`` (an index array) restricts the
    pass to those tokens: the others take no part in the loss (ignored
    targets), and get loss 0 and zero gradients without a product.
    ``row_scale`` (``(N,)``) multiplies each token's gradient (the
    cotangent of a per-token loss).  Gradients wanted where they are not
    ``computable`` (a "mean" over a total weight of 0) are zeros, and
    ``row_loss`` then gets no gradient buffer.  ``loss_bytes`` is what ``row_loss``
    allocates per logit, for the chunk size; the size is computed for
    ``chunk_classes`` classes where given (ranks of a split vocabulary, which
    exchange row totals per chunk, pass the widest slice's, so that their
    chunks match).  ``hidden_grad_dtype`` (default: ``hidden``'s) is the
    dtype of the hidden states' gradient.  The gradients accumulate in ``work``
    (at least float32) and are rounded to the inputs' dtypes once; the bias
    gradient sums in float64.  Without ``want_grad`` the gradients are None.
    """
    zero_grads, want_grad = want_grad and not computable, want_grad and computable
    n, width = hidden.shape
    v = weight.shape[0]
    device = array_api_compat.device(hidden)
    narrow = weight.dtype != work
    work_size = xp.finfo(work).bits // 8
    wide = xp.float64
    m = n if live is None else live.shape[0]
    # The kernel writes a float32 gradient over its logits; a soft cap
    # computes in float64 beside them.
    in_place = softcap is None and work == xp.float32
    per_logit = work_size + (0 if in_place or not want_grad else work_size) + (_SOFTCAP_BYTES if softcap is not None else 0)
    dh_dtype = hidden.dtype if hidden_grad_dtype is None else hidden_grad_dtype
    vc = v if chunk_classes is None else chunk_classes
    gbytes = lin.grad_bytes(n, vc, width, weight.dtype.itemsize, bias is not None)
    accumulator = vc * width * work_size if narrow and want_grad else 0
    held = (n * width * hidden.dtype.itemsize + vc * width * work_size + (8 * vc if bias is not None else 0)) if want_grad else 0
    if narrow:
        held += lin.tile_rows(vc, width, work_size) * width * work_size  # WeightTiles' buffer
    rows = lin.chunk_rows(m, vc, gbytes, accumulator, held, per_logit + loss_bytes + products.temporary_bytes)
    loss = xp.zeros((n,), dtype=wide, device=device)
    dh = xp.zeros((n, width), dtype=dh_dtype, device=device) if want_grad else None
    dw = xp.zeros((v, width), dtype=work, device=device) if want_grad else None
    db = xp.zeros((v,), dtype=wide, device=device) if want_grad and bias is not None else None

    def chunks() -> None:
        # Its buffers are freed on return, before a 16-bit weight gradient
        # is rounded from its accumulator.
        z_buf = xp.empty((rows, v), dtype=work, device=device)
        g_buf = None if not want_grad else z_buf if in_place else xp.empty((rows, v), dtype=work, device=device)
        bias_w = None if bias is None else xp.astype(bias, work)
        tiles = WeightTiles(xp, weight, work)
        dh_buf = xp.empty((rows, width), dtype=work, device=device) if want_grad else None
        for start in range(0, m, rows):
            k = min(rows, m - start)
            index = slice(start, start + k) if live is None else live[start : start + k]
            hc = xp.astype(hidden[index, ...], work)
            z = z_buf[:k, ...]
            form_logits(xp, products, hc, tiles, bias_w, z)
            g = None if g_buf is None else g_buf[:k, ...]
            if softcap is None:
                loss[index] = xp.astype(row_loss(z, g, index), wide)
            else:
                capped, slope = lin.softcap(xp, xp.astype(z, wide), softcap)
                g_wide = None if g is None else xp.empty_like(capped)
                loss[index] = xp.astype(row_loss(capped, g_wide, index), wide)
                if g is not None:
                    g[...] = xp.astype(g_wide * slope, work)
            if g is None:
                continue
            if row_scale is not None:
                g *= xp.astype(row_scale[index], work)[:, None]
            dh_c = dh_buf[:k, ...]
            if narrow:
                dh_c[...] = 0
                for t0, t1, w in tiles:
                    g_t = g[:, t0:t1]
                    products.add_product(dh_c, g_t, w)
                    products.add_product(dw[t0:t1, ...], xp.matrix_transpose(g_t), hc)
            else:
                products.product_into(dh_c, g, weight)
                products.add_product(dw, xp.matrix_transpose(g), hc)
            dh[index, ...] = xp.astype(dh_c, dh_dtype)
            if db is not None:
                db[...] += xp.sum(g, axis=0, dtype=wide)

    chunks()
    if zero_grads:
        return loss, xp.zeros_like(hidden, dtype=dh_dtype), xp.zeros_like(weight), (None if bias is None else xp.zeros_like(bias))
    if not want_grad:
        return loss, None, None, None
    dw = dw if dw.dtype == weight.dtype else xp.astype(dw, weight.dtype)
    db = None if db is None else xp.astype(db, bias.dtype)
    return loss, dh, dw, db


def native_row_loss(into: Any, targets: Any, weight: Any, ignore_index: int, eps: float, z: float, divisor: float) -> RowLoss:
    """:func:`fused_pass`'s per-row loss by the native kernel, on NumPy arrays.

    ``targets``: int64 class indices ``(N,)`` or probabilities ``(N, V)``;
    ``weight``: float64 class weights or None; ``divisor``: what each row's
    gradient is divided by (``numerics.gradient_divisor``).
    """

    def row_loss(logits, grad, rows):
        t = np.ascontiguousarray(targets[rows])
        if t.dtype.kind == "f":
            t = t.astype(logits.dtype, copy=False)
        loss = np.empty(logits.shape[0], dtype=np.float64)
        into.cross_entropy_into(
            logits, t, loss, grad, weight=weight, ignore_index=ignore_index, label_smoothing=eps, z_loss=z, grad_divisor=divisor
        )
        return loss

    return row_loss


def formula_row_loss(xp: Any, targets: Any, weight: Any, ignore_index: int, eps: float, z: float, denominator: Any, reduction: str) -> RowLoss:
    """:func:`fused_pass`'s per-row loss by the ``numerics`` formulas, on any
    array namespace (computed in float64 where the namespace has it)."""

    def row_loss(logits, grad, rows):
        wide, widened = num.working_dtype(xp, logits.dtype, logits)
        xw = xp.astype(logits, wide)
        t = targets[rows]
        if validate.target_kind(xp, t, "targets") == "float":
            t = xp.astype(t, wide)
        w = None if weight is None else xp.astype(weight, wide)
        loss, g = cross_entropy_chunk(xp, xw, t, w, ignore_index, eps, z, widened, grad is not None)
        if grad is not None:
            grad[...] = xp.astype(num.reduce_grad(xp, g, denominator, reduction), grad.dtype)
        return loss

    return row_loss


def _array(xp: Any, value: Any, name: str) -> Any:
    a = validate.same_namespace(xp, value, name)
    _, a, _ = validate.real_array(a, name)
    return a


def check_shapes(hidden_shape: tuple, weight_shape: tuple, bias_shape: tuple | None, names: tuple[str, str, str]) -> tuple[int, int]:
    """``(V, H)`` once the shapes of a fused linear loss are checked: ``hidden`` ``(..., H)``,
    ``weight`` ``(V, H)`` with ``V >= 1``, ``bias`` ``(V,)``."""
    h_name, w_name, b_name = names
    if len(hidden_shape) < 1:
        raise ValueError(f"{h_name} must have at least one dimension (..., hidden_size); got shape {hidden_shape}")
    if len(weight_shape) != 2:
        raise ValueError(f"{w_name} must have shape (num_classes, hidden_size); got {weight_shape}")
    v, width = weight_shape
    if width != hidden_shape[-1]:
        raise ValueError(f"{w_name} has hidden size {width} but {h_name} has {hidden_shape[-1]} (shapes {weight_shape} and {hidden_shape})")
    if v == 0:
        raise ValueError(f"{w_name} has no classes (shape {weight_shape}); cross-entropy needs at least one")
    if bias_shape is not None and tuple(bias_shape) != (v,):
        raise ValueError(f"{b_name} must have shape ({v},), one entry per class; got {tuple(bias_shape)}")
    return v, width


def check_targets(xp: Any, targets: Any, lead: tuple, v: int, ignore_index: int, name: str, checks: Any = validate.EAGER) -> bool:
    """Check a fused linear loss's targets; True for probabilities.

    Class indices have the hidden states' leading shape ``lead``;
    probabilities ``lead + (V,)``.  Value checks follow ``checks`` (at once,
    asynchronous under ``torch.compile``, skipped on tracers).
    """
    if validate.target_kind(xp, targets, name) == "int":
        if tuple(targets.shape) != lead:
            raise ValueError(f"{name} of class indices must have shape {lead} (the hidden states' shape without the last axis); got {tuple(targets.shape)}")
        validate.class_indices(xp, targets, v, ignore_index, name, checks)
        return False
    if tuple(targets.shape) != lead + (v,):
        raise ValueError(f"{name} of probabilities must have shape {lead + (v,)}; got {tuple(targets.shape)}")
    validate.probability_targets_ignore_index(ignore_index, targets.dtype, name)
    validate.probabilities(xp, targets, name, checks)
    return True


def live_rows(xp: Any, targets: Any, ignore_index: int) -> Any:
    """The rows of class-index ``targets`` that take part (an index array),
    or None when every row does: :func:`fused_pass`'s ``live``."""
    keep = targets != ignore_index
    return None if bool(xp.all(keep)) else xp.nonzero(keep)[0]


def normalizer_value(normalizer: Any, reduction: str) -> float | None:
    """A caller's normaliser of a "sum" (a count, finite and >= 0), read on the host."""
    if normalizer is None:
        return None
    if reduction != "sum":
        raise ValueError(f"normalizer divides a sum: it needs reduction='sum'; got reduction={reduction!r}")
    value = validate.real_number(normalizer, "normalizer")
    if not (value >= 0 and value != float("inf")):
        raise ValueError(f"normalizer must be finite and >= 0; got {value!r}")
    return value


def softcap_value(softcap: Any) -> float | None:
    return None if softcap is None else validate.positive_finite(softcap, "softcap")


@validate.quiet
def linear_cross_entropy(
    hidden: Any,
    linear_weight: Any,
    targets: Any,
    *,
    linear_bias: Any = None,
    weight: Any = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    reduction: str = "mean",
    normalizer: Any = None,
    return_grad: bool = False,
) -> Any:
    r"""Cross-entropy of a linear layer's logits, without ever holding them.

    .. math:: \ell = \operatorname{cross\_entropy}\bigl(\operatorname{cap}(h W^\top + b),\; t\bigr),
              \qquad \operatorname{cap}(z) = c \tanh(z / c)

    the loss of a language model's head over ``N`` tokens and ``V`` classes,
    computed a chunk of tokens at a time: the ``N x V`` logits are never
    formed.

    Parameters
    ----------
    hidden : array of shape (..., H)
        Hidden states, one row per token.
    linear_weight : array of shape (V, H)
        The head's weight (``torch.nn.Linear``'s layout).
    targets : array
        Integer class indices of shape ``hidden.shape[:-1]``, or
        probabilities of shape ``hidden.shape[:-1] + (V,)``.
    linear_bias : array of shape (V,), optional
        Added to the logits; a ``-inf`` entry masks its class.
    weight, ignore_index, label_smoothing, z_loss
        As in :func:`cross_entropy`.
    softcap : float > 0, optional
        Gemma-2's final-logit soft cap ``c``, applied before the loss, with
        its exact derivative ``sech^2(z / c)``; infinite logits stay
        infinite.
    reduction : {"mean", "sum", "none"}, default "mean"
        As in :func:`cross_entropy`.
    normalizer : number >= 0, optional
        With ``reduction="sum"``: divide the sum (and its gradients) by this
        count, for gradient accumulation over several calls (Hugging Face's
        ``num_items_in_batch``); 0 gives 0 and zero gradients.
    return_grad : bool, default False
        Also return ``(d_hidden, d_linear_weight, d_linear_bias)``; with
        ``reduction="none"`` the gradients of ``loss.sum()``.

    Returns
    -------
    loss, or ``(loss, (d_hidden, d_linear_weight, d_linear_bias))`` with
    ``d_linear_bias`` None without a bias.  The loss has the inputs' dtype.

    Notes
    -----
    Algorithm: the tokens go through in chunks sized so that a chunk's
    logits and their gradient take about a fifth of the gradients' memory;
    per chunk, one product forms the logits, the cross-entropy kernel writes
    each row's loss and logit gradient, and two more products fold that
    gradient into ``d_hidden`` and ``d_linear_weight``.  Three products in
    all, as for the materialised loss.  Peak memory beyond the inputs is
    about 1.25 times the gradients returned (plus a float32 accumulator
    for 16-bit weights); tokens whose target is ignored are skipped.

    Accuracy: the logits are formed in float32 (float64 for float64 input;
    16-bit inputs are widened, never rounded back) and, with a soft cap,
    capped in float64.  The loss and the logit gradient are then those of
    :func:`cross_entropy` on these logits, within its contract.  The other
    gradients are products of that gradient, accumulated across chunks in
    float32 or wider, and rounded once to the inputs' dtype.  Chunk sizes
    depend on the shapes alone, so results are the same, bit for bit, from
    run to run and for every thread count of softmaxkit's kernels (NumPy's
    BLAS may round a product differently on one thread than on several).

    Edge behaviour is :func:`cross_entropy`'s: every target ignored gives 0
    and zero gradients; a ``-inf`` bias masks a class; a target on a masked
    class gives ``+inf``.

    Examples
    --------
    >>> import numpy as np, softmaxkit as smk
    >>> h = np.array([[1.0, 0.0], [0.0, 2.0]], dtype=np.float32)
    >>> w = np.array([[30.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], dtype=np.float32)
    >>> loss, (dh, dw, db) = smk.linear_cross_entropy(h, w, np.array([0, 1]), return_grad=True)
    >>> loss
    array(0.11977238, dtype=float32)
    >>> dh[0, 0]  # a confident token: naive float32 code, computing p_t - 1, gives -1.7e-14
    np.float32(-1.9372275e-12)
    """
    backend = registry.backend_for(hidden)
    if backend is not None:
        return backend.linear_cross_entropy(
            hidden, linear_weight, targets, linear_bias=linear_bias, weight=weight, ignore_index=ignore_index,
            label_smoothing=label_smoothing, z_loss=z_loss, softcap=softcap, reduction=reduction,
            normalizer=normalizer, return_grad=return_grad,
        )
    return_grad = validate.flag(return_grad, "return_grad")
    ignore_index, eps, z, reduction = validate.loss_options(ignore_index, label_smoothing, z_loss, reduction)
    cap = softcap_value(softcap)
    norm = normalizer_value(normalizer, reduction)
    xp, h, h_dtype = validate.real_array(hidden, "hidden")
    w_lin = _array(xp, linear_weight, "linear_weight")
    b_lin = None if linear_bias is None else _array(xp, linear_bias, "linear_bias")
    v, width = check_shapes(tuple(h.shape), tuple(w_lin.shape), None if b_lin is None else tuple(b_lin.shape), ("hidden", "linear_weight", "linear_bias"))
    out_dtype = xp.result_type(h_dtype, w_lin.dtype, *(() if b_lin is None else (b_lin.dtype,)))
    work = xp.float64 if out_dtype == xp.float64 else xp.float32
    lead = tuple(h.shape[:-1])
    n = int(np.prod(lead, dtype=np.int64)) if lead else 1
    h2 = xp.reshape(xp.astype(h, out_dtype, copy=False), (n, width))
    w_lin = xp.astype(w_lin, out_dtype, copy=False)
    b_lin = None if b_lin is None else xp.astype(b_lin, out_dtype, copy=False)
    t = validate.same_namespace(xp, targets, "targets")
    probabilities = check_targets(xp, t, lead, v, ignore_index, "targets")
    class_w = None
    if weight is not None:
        class_w = _array(xp, weight, "weight")
        validate.class_weights(xp, class_w, v)
        class_w = xp.astype(class_w, xp.float64)
    t2 = xp.reshape(t, (n, v)) if probabilities else xp.reshape(xp.astype(t, xp.int64), (n,))
    denominator = num.mean_denominator(xp, t2, class_w, ignore_index, xp.float64, probabilities)
    reduction_rule, denominator = lin.normalized(reduction, denominator, norm)
    divisor = num.gradient_divisor(denominator, reduction_rule)
    live = None if probabilities else live_rows(xp, t2, ignore_index)
    native = registry.native()
    if native is not None and xp is _NUMPY and divisor is not None:
        row_loss, loss_bytes = native_row_loss(native.into, t2, class_w, ignore_index, eps, z, divisor), 0
    else:
        row_loss = formula_row_loss(xp, t2, class_w, ignore_index, eps, z, denominator, reduction_rule)
        loss_bytes = FORMULA_BYTES
    loss_rows, dh, dw, db = fused_pass(
        xp, NumpyProducts, h2, w_lin, b_lin, row_loss, work=work, softcap=cap, want_grad=return_grad, live=live,
        loss_bytes=loss_bytes, computable=divisor is not None,
    )
    loss, _ = num.reduce(xp, loss_rows, None, denominator, reduction_rule, True)
    loss = xp.astype(xp.reshape(loss, lead) if reduction == "none" else loss, out_dtype)
    if not return_grad:
        return loss
    return loss, (xp.reshape(dh, tuple(h.shape)), dw, db)
