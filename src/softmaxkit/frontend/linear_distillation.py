"""linear_distillation_loss: distillation between two linear heads, never holding either's logits.

The student's head goes through ``frontend.linear.fused_pass``; per chunk of
tokens the per-row loss forms the teacher's logits for the same tokens
(``form_logits``), and the row formulas are ``numerics.distillation``'s.
"""

from __future__ import annotations

from typing import Any

import array_api_compat
import numpy as np

from softmaxkit import numerics as num
from softmaxkit.frontend import registry, validate
from softmaxkit.frontend.distillation import Options, mean_reduction, options
from softmaxkit.frontend.linear import NumpyProducts, RowLoss, WeightTiles, check_shapes, form_logits, fused_pass, live_rows
from softmaxkit.numerics.distillation import distillation_rows

# Bytes per logit of a chunk's teacher logits and the row formulas' float64
# temporaries (both distributions, their logarithms, the gradients).
DISTILLATION_BYTES = 176


def distillation_row_loss(
    xp: Any, products: Any, teacher_hidden: Any, teacher_weight: Any, teacher_bias: Any, targets: Any, opts: Options, denominator: Any
) -> RowLoss:
    """``fused_pass``'s per-row loss for a distillation head.

    ``teacher_hidden`` ``(N, H_t)``, ``teacher_weight`` ``(V, H_t)`` and
    ``teacher_bias`` (working dtype, or None) give the teacher's logits of a
    chunk's tokens; ``targets`` (``(N,)`` class indices, or None) the hard
    labels and ignored rows.  The teacher is a constant: no gradient flows
    to it.
    """
    rule = mean_reduction(opts.reduction)
    buffers = []  # the teacher's logits and weight tiles, made at the first (largest) chunk

    def row_loss(logits, grad, rows):
        k, v = logits.shape
        work = logits.dtype
        if not buffers:
            buffers.append(xp.empty((k, v), dtype=work, device=array_api_compat.device(logits)))
            buffers.append(WeightTiles(xp, teacher_weight, work))
        teacher = buffers[0][:k, ...]
        form_logits(xp, products, xp.astype(teacher_hidden[rows, ...], work), buffers[1], teacher_bias, teacher)
        wide, widened = num.working_dtype(xp, work, logits)
        hot = None if targets is None else num.one_hot(xp, targets[rows], v, opts.ignore_index, wide)
        loss, gs, _ = distillation_rows(
            xp, xp.astype(logits, wide), xp.astype(teacher, wide), hot,
            divergence=opts.divergence, beta=opts.beta, temperature=opts.temperature, scale_t2=opts.scale_t2,
            hard_label_weight=opts.hard_label_weight, widened=widened, want_grad=grad is not None,
        )
        if grad is not None:
            grad[...] = xp.astype(num.reduce_grad(xp, gs, denominator, rule), grad.dtype)
        return loss

    return row_loss


def denominator_and_live(xp: Any, targets: Any, n: int, ignore_index: int) -> tuple[Any, Any]:
    """``(batchmean's denominator, the rows that take part or None for all)``:
    the non-ignored rows with targets, every row without."""
    if targets is None:
        return xp.asarray(float(n), dtype=xp.float64), None
    return num.mean_denominator(xp, targets, None, ignore_index, xp.float64, False), live_rows(xp, targets, ignore_index)


def computable(rule: str, denominator: Any) -> bool:
    """Whether the distillation's gradients are more than zeros: not a "mean" over no row."""
    return not (rule == "mean" and float(denominator) == 0)


def check_teacher_shapes(student_shape: tuple, teacher_shape: tuple, v: int, teacher_weight_shape: tuple, bias_shape: tuple | None, names: tuple[str, str, str]) -> None:
    """The teacher's head: hidden states of the student's leading shape, ``V`` classes like the student."""
    h_name, w_name, b_name = names
    if tuple(teacher_shape[:-1]) != tuple(student_shape[:-1]):
        raise ValueError(f"{h_name} must have the student's leading shape {tuple(student_shape[:-1])}; got shape {tuple(teacher_shape)}")
    v_t, _ = check_shapes(tuple(teacher_shape), tuple(teacher_weight_shape), bias_shape, names)
    if v_t != v:
        raise ValueError(f"{w_name} has {v_t} classes but the student's head has {v}")


@validate.quiet
def linear_distillation_loss(
    student_hidden: Any,
    student_weight: Any,
    teacher_hidden: Any,
    teacher_weight: Any,
    *,
    student_bias: Any = None,
    teacher_bias: Any = None,
    targets: Any = None,
    divergence: str = "forward_kl",
    beta: float = 0.5,
    temperature: float = 1.0,
    scale_by_temperature_squared: bool = False,
    ignore_index: int = -100,
    hard_label_weight: float = 0.0,
    reduction: str = "batchmean",
    return_grad: bool = False,
) -> Any:
    r""":func:`distillation_loss` of two linear heads' logits, without ever holding them.

    .. math:: \ell = \operatorname{distillation\_loss}\bigl(h_s W_s^\top + b_s,\; h_t W_t^\top + b_t\bigr)

    a chunk of tokens at a time: neither ``N x V`` matrix of logits is formed.

    Parameters
    ----------
    student_hidden : array of shape (..., H_s)
    student_weight : array of shape (V, H_s)
    teacher_hidden : array of shape (..., H_t)
        The same tokens as ``student_hidden`` (same leading shape).
    teacher_weight : array of shape (V, H_t)
        The same ``V`` classes as the student's head.
    student_bias, teacher_bias : arrays of shape (V,), optional
    targets : integer array of ``student_hidden``'s leading shape, optional
        Hard labels: rows equal to ``ignore_index`` take no part at all,
        and with ``hard_label_weight > 0`` the student's cross-entropy is
        added.
    divergence, beta, temperature, scale_by_temperature_squared, ignore_index, hard_label_weight, reduction
        As in :func:`distillation_loss`.
    return_grad : bool, default False
        Also return ``(d_student_hidden, d_student_weight,
        d_student_bias)`` (the gradients of ``loss.sum()`` for "none").

    Returns
    -------
    loss, or ``(loss, (d_student_hidden, d_student_weight, d_student_bias))``;
    ``d_student_bias`` is None without a bias.  The teacher is a constant:
    no gradient flows to it.

    Notes
    -----
    Per chunk of tokens both heads' logits are formed in float32 (float64
    for float64 input; 16-bit inputs widened), the row formulas of
    :func:`distillation_loss` give each row's loss and the student's logit
    gradient within that function's contract, and two products fold that
    gradient into the student's hidden-state and weight gradients
    (accumulated in float32 or wider, rounded once).  Peak memory beyond the
    inputs is about 1.25 times the student's gradients (plus a float32
    accumulator for a 16-bit weight); results do not depend on the thread
    count.

    Examples
    --------
    >>> import numpy as np, softmaxkit as smk
    >>> hs = np.array([[1.0, 0.0], [0.0, 1.0]])
    >>> ws = np.array([[2.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
    >>> ht, wt = hs, np.array([[3.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    >>> round(float(smk.linear_distillation_loss(hs, ws, ht, wt, temperature=2.0)), 6)
    0.02966
    """
    backend = registry.backend_for(student_hidden)
    if backend is not None and backend.linear_distillation_loss is not None:
        return backend.linear_distillation_loss(
            student_hidden, student_weight, teacher_hidden, teacher_weight, student_bias=student_bias,
            teacher_bias=teacher_bias, targets=targets, divergence=divergence, beta=beta, temperature=temperature,
            scale_by_temperature_squared=scale_by_temperature_squared, ignore_index=ignore_index,
            hard_label_weight=hard_label_weight, reduction=reduction, return_grad=return_grad,
        )
    return_grad = validate.flag(return_grad, "return_grad")
    opts = options(divergence, beta, temperature, scale_by_temperature_squared, targets is not None, ignore_index, hard_label_weight, reduction, "targets")
    xp, hs, hs_dtype = validate.real_array(student_hidden, "student_hidden")
    arrays = {}
    for name, value in (("student_weight", student_weight), ("teacher_hidden", teacher_hidden), ("teacher_weight", teacher_weight), ("student_bias", student_bias), ("teacher_bias", teacher_bias)):
        if value is not None:
            _, arrays[name], _ = validate.real_array(validate.same_namespace(xp, value, name), name)
    ws, ht, wt = arrays["student_weight"], arrays["teacher_hidden"], arrays["teacher_weight"]
    bs, bt = arrays.get("student_bias"), arrays.get("teacher_bias")
    v, width = check_shapes(tuple(hs.shape), tuple(ws.shape), None if bs is None else tuple(bs.shape), ("student_hidden", "student_weight", "student_bias"))
    check_teacher_shapes(tuple(hs.shape), tuple(ht.shape), v, tuple(wt.shape), None if bt is None else tuple(bt.shape), ("teacher_hidden", "teacher_weight", "teacher_bias"))
    out_dtype = xp.result_type(hs_dtype, ws.dtype, *(() if bs is None else (bs.dtype,)))
    work = xp.float64 if xp.result_type(out_dtype, ht.dtype, wt.dtype) == xp.float64 else xp.float32
    lead = tuple(hs.shape[:-1])
    n = int(np.prod(lead, dtype=np.int64)) if lead else 1
    t2 = None
    if targets is not None:
        t = validate.same_namespace(xp, targets, "targets")
        if validate.target_kind(xp, t, "targets") != "int" or tuple(t.shape) != lead:
            raise ValueError(f"targets must be integer class indices of shape {lead} (student_hidden's shape without its last axis); got dtype {t.dtype}, shape {tuple(t.shape)}")
        validate.class_indices(xp, t, v, opts.ignore_index, "targets")
        t2 = xp.reshape(xp.astype(t, xp.int64), (n,))
    denominator, live = denominator_and_live(xp, t2, n, opts.ignore_index)
    rule = mean_reduction(opts.reduction)
    row_loss = distillation_row_loss(
        xp, NumpyProducts, xp.reshape(ht, (n, ht.shape[-1])), wt, None if bt is None else xp.astype(bt, work), t2, opts, denominator
    )
    loss_rows, dh, dw, db = fused_pass(
        xp, NumpyProducts, xp.reshape(xp.astype(hs, out_dtype, copy=False), (n, width)), xp.astype(ws, out_dtype, copy=False),
        None if bs is None else xp.astype(bs, out_dtype, copy=False), row_loss,
        work=work, softcap=None, want_grad=return_grad, live=live, loss_bytes=DISTILLATION_BYTES,
        computable=computable(rule, denominator),
    )
    loss, _ = num.reduce(xp, loss_rows, None, denominator, rule, True)
    loss = xp.astype(xp.reshape(loss, lead) if rule == "none" else loss, out_dtype)
    if not return_grad:
        return loss
    return loss, (xp.reshape(dh, tuple(hs.shape)), dw, db)
