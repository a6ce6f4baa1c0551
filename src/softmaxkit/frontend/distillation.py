"""distillation_loss: a divergence between a student's and a teacher's tempered softmax, plus a hard-label term.

The row formulas are ``numerics.distillation``'s; this module validates the
options once (:func:`options`, which the torch and JAX backends call too),
goes through the rows in chunks and reduces them with ``numerics.reduction``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import array_api_compat

from softmaxkit import numerics as num
from softmaxkit.frontend import registry
from softmaxkit.frontend import validate
from softmaxkit.frontend.layout import put
from softmaxkit.frontend.softmax import _itemsize, _prepare_rows, _working
from softmaxkit.numerics.distillation import DIVERGENCES, distillation_rows

REDUCTIONS = ("batchmean", "sum", "none")


class Options(NamedTuple):
    """The checked scalar options of a distillation loss (hashable: a static argument under ``jax.jit``)."""

    divergence: str
    beta: float
    temperature: float
    scale_t2: bool
    ignore_index: int
    hard_label_weight: float
    reduction: str


def options(divergence, beta, temperature, scale_by_temperature_squared, has_targets, ignore_index, hard_label_weight, reduction, targets_name) -> Options:
    """Check the scalar options of every front end; ``targets_name`` names the targets argument in messages."""
    if divergence not in DIVERGENCES:
        raise ValueError(f"divergence must be one of {', '.join(map(repr, DIVERGENCES))}; got {validate.describe(divergence)}")
    b = validate.real_number(beta, "beta")
    if divergence == "jsd" and not 0.0 < b < 1.0:
        # JSD is 0 at beta = 0 and 1 whatever the logits: a silent zero loss.
        raise ValueError(
            f"beta must be in (0, 1) for divergence='jsd'; got {b!r} (the divergence is 0 at both ends: "
            "use divergence='forward_kl' for the limit beta -> 0 and divergence='reverse_kl' for beta -> 1)"
        )
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(map(repr, REDUCTIONS))}; got {validate.describe(reduction)}")
    w = validate.non_negative(hard_label_weight, "hard_label_weight")
    if w > 0 and not has_targets:
        raise ValueError(f"hard_label_weight={w!r} needs {targets_name} (class indices); pass {targets_name} or hard_label_weight=0")
    return Options(
        divergence,
        b,
        validate.temperature(temperature),
        validate.flag(scale_by_temperature_squared, "scale_by_temperature_squared"),
        validate.integer(ignore_index, "ignore_index"),
        w,
        reduction,
    )


def mean_reduction(reduction: str) -> str:
    """``numerics.reduction``'s name for a distillation reduction: "batchmean" is its "mean"."""
    return "mean" if reduction == "batchmean" else reduction


@validate.quiet
def distillation_loss(
    student_logits: Any,
    teacher_logits: Any,
    *,
    divergence: str = "forward_kl",
    beta: float = 0.5,
    temperature: float = 1.0,
    scale_by_temperature_squared: bool = False,
    targets: Any = None,
    ignore_index: int = -100,
    hard_label_weight: float = 0.0,
    reduction: str = "batchmean",
    axis: int = -1,
    return_grad: bool = False,
) -> Any:
    r"""Knowledge-distillation loss between student and teacher logits, exact and NaN-free.

    With ``p = softmax(student / T)``, ``q = softmax(teacher / T)`` and
    ``f = T**2`` when ``scale_by_temperature_squared`` (else 1), the loss of a
    row is

    .. math:: \ell = f\,\mathrm{Div}(p, q) + w_h\,\mathrm{CE}(\mathrm{student}, y)

    where ``Div`` is

    * ``"forward_kl"``: :math:`\mathrm{KL}(q\|p) = \sum_j q_j(\log q_j - \log p_j)`
      (the teacher weights the terms; Hinton et al.'s distillation loss);
    * ``"reverse_kl"``: :math:`\mathrm{KL}(p\|q)` (mode seeking);
    * ``"jsd"``: :math:`\beta\,\mathrm{KL}(q\|m) + (1-\beta)\,\mathrm{KL}(p\|m)`,
      :math:`m = \beta q + (1-\beta) p` (the generalised Jensen-Shannon
      divergence of TRL's GKD trainer).  ``JSD / beta -> KL(q || p)`` as
      ``beta -> 0`` and ``JSD / (1 - beta) -> KL(p || q)`` as ``beta -> 1``,
      while JSD itself goes to 0 at both ends: ``beta`` must lie in (0, 1),
      and 0 or 1 raises ``ValueError`` pointing at the KL divergence.

    and ``CE`` is the cross-entropy of the student's raw logits (temperature
    1) at the class indices ``targets``, weighted by ``hard_label_weight``.

    Parameters
    ----------
    student_logits, teacher_logits : array_like or array-API arrays of the same shape
        Raw logits with the classes along ``axis``.
    divergence : {"forward_kl", "reverse_kl", "jsd"}, default "forward_kl"
    beta : float in (0, 1), default 0.5
        The JSD's mixing weight (of the teacher); ignored by the KL divergences.
    temperature : float > 0, default 1
        Divides both logits before the softmax.
    scale_by_temperature_squared : bool, default False
        Multiply the divergence by ``T**2`` (Hinton et al.), which keeps its
        gradient's size independent of ``T``.
    targets : integer array, optional
        Class indices of the logits' shape without ``axis``.  Rows whose
        target is ``ignore_index`` contribute nothing at all (neither
        divergence nor cross-entropy) and are not counted by "batchmean".
    ignore_index : int, default -100
    hard_label_weight : float >= 0, default 0
        Weight of the hard-label cross-entropy; > 0 needs ``targets``.
    reduction : {"batchmean", "sum", "none"}, default "batchmean"
        "batchmean" divides the sum over rows by the number of rows (of
        non-ignored rows with ``targets``); all rows ignored gives 0 with a
        zero gradient.
    axis : int, default -1
        The class axis.
    return_grad : bool, default False
        Also return ``(grad_student, grad_teacher)``, the gradients of the
        loss (of ``loss.sum()`` for "none") in both logits.

    Returns
    -------
    loss, or ``(loss, (grad_student, grad_teacher))``: ``loss`` is a scalar
    array, or one per row for "none"; the gradients have the logits' shape.
    All have the logits' promoted dtype.

    Notes
    -----
    Log-probabilities come from the exact log-softmax (``(z_j - a) -
    log1p(s)``) and the terms are summed with compensation; JSD forms
    ``log m - log p`` as ``logaddexp(log(1 - beta), log beta + log q - log
    p)``, never ``m`` itself, so it stays accurate as ``beta`` nears 0 or 1.
    The student gradient of the forward KL, ``(p - q)/T``, is assembled at
    the argmax from the other classes, as in :func:`cross_entropy`, so a
    confident row keeps its exact gradient; the teacher's is
    ``q (log q - log p - KL)/T``.  With ``scale_by_temperature_squared`` the
    gradients carry ``T`` instead of ``1/T``.

    Accuracy: a divergence of nearly equal distributions is a difference of
    nearly equal numbers, so the contract is stated against the row's scale
    ``S = f sum_j (p_j + q_j)(1 + |log p_j| + |log q_j|) + w_h CE`` (terms
    with ``p_j = q_j = 0`` left out): each row's loss is within 2 ULP
    (float16, bfloat16, float32) or 8 ULP (float64) of ``max(loss, S)``.
    Each gradient entry is within 2 ULP (8 for float64) of its own scale:
    ``max(p_j, q_j)`` for the ``p - q`` forms, and the weighting probability
    times ``|log p_j| + |log q_j| + |log-ratio_j| + Div`` for the centred
    forms, times the row's factor (``1/T``, or ``T`` with the ``T**2`` rule).

    Edge behaviour: ``0 log 0 = 0`` (a class where the weighting
    distribution has no mass contributes 0, also where the other has none);
    a class with teacher mass where the student's logit is ``-inf`` makes the
    forward KL ``+inf`` (the reverse KL likewise with the roles swapped),
    and such a row has zero gradients (it is ``+inf`` under every finite
    change of the finite logits); JSD is always finite.  Classes masked in
    both (``-inf``) take no part; rows fully masked in both give 0 with zero
    gradients; NaN stays in its row.  The rows are computed a chunk at a
    time: peak memory is the gradients (if asked for) plus a few tens of MiB.

    References
    ----------
    Hinton, Vinyals & Dean, "Distilling the knowledge in a neural network",
    2015.  Agarwal et al., "On-policy distillation of language models:
    learning from self-generated mistakes" (GKD), ICLR 2024.

    Examples
    --------
    >>> import numpy as np, softmaxkit as smk
    >>> student = np.array([[2.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    >>> teacher = np.array([[3.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    >>> round(float(smk.distillation_loss(student, teacher, temperature=2.0)), 6)
    0.055019
    >>> smk.distillation_loss(student, teacher, reduction="none")[1]  # equal rows
    np.float64(0.0)
    >>> x = np.array([[0.0, -np.inf]])
    >>> smk.distillation_loss(x, np.array([[0.0, 0.0]]))  # teacher mass where the student has none
    array(inf)
    """
    backend = registry.backend_for(student_logits)
    if backend is not None and backend.distillation_loss is not None:
        return backend.distillation_loss(
            student_logits, teacher_logits, divergence=divergence, beta=beta, temperature=temperature,
            scale_by_temperature_squared=scale_by_temperature_squared, targets=targets, ignore_index=ignore_index,
            hard_label_weight=hard_label_weight, reduction=reduction, axis=axis, return_grad=return_grad,
        )
    return_grad = validate.flag(return_grad, "return_grad")
    o = options(
        divergence, beta, temperature, scale_by_temperature_squared, targets is not None, ignore_index, hard_label_weight,
        reduction, "targets",
    )
    xp, layout, s_rows, _, s_dtype, _, _ = _prepare_rows(student_logits, axis, name="student_logits", allow_many=False)
    teacher = validate.same_namespace(xp, teacher_logits, "teacher_logits")
    _, _, t_rows, _, t_dtype, _, _ = _prepare_rows(teacher, axis, name="teacher_logits", allow_many=False)
    if tuple(teacher.shape) != layout.shape:
        raise ValueError(f"teacher_logits must have the shape of student_logits {layout.shape}; got {tuple(teacher.shape)}")
    n_classes = layout.n
    if n_classes == 0:
        raise ValueError(f"student_logits has an empty class axis (axis={axis}, shape {layout.shape}); distillation needs at least one class")
    out_dtype = xp.result_type(s_dtype, t_dtype)
    work, widened = num.working_dtype(xp, out_dtype, s_rows)
    labels = None
    if targets is not None:
        t = validate.same_namespace(xp, targets, "targets")
        if validate.target_kind(xp, t, "targets") != "int":
            raise TypeError(f"targets must hold integer class indices; got dtype {t.dtype}")
        validate.target_shape("int", t.shape, layout.shape, layout.axes[0], "targets", "student_logits", "axis")
        validate.class_indices(xp, t, n_classes, o.ignore_index, "targets")
        labels = xp.reshape(t, (layout.n_rows,))
    reduction = mean_reduction(o.reduction)
    denominator = num.mean_denominator(xp, s_rows if labels is None else labels, None, o.ignore_index, work, labels is None)
    device = array_api_compat.device(s_rows)
    loss = xp.empty((layout.n_rows,), dtype=work, device=device)
    grads = (xp.empty_like(s_rows, dtype=out_dtype), xp.empty_like(s_rows, dtype=out_dtype)) if return_grad else None
    for part in layout.chunks(_itemsize(xp, work)):
        hot = None if labels is None else num.one_hot(xp, labels[part], n_classes, o.ignore_index, work)
        rows, gs, gt = distillation_rows(
            xp, _working(xp, s_rows, part, work), _working(xp, t_rows, part, work), hot,
            divergence=o.divergence, beta=o.beta, temperature=o.temperature, scale_t2=o.scale_t2,
            hard_label_weight=o.hard_label_weight, widened=widened, want_grad=return_grad,
        )
        loss = put(loss, part, rows)
        if return_grad:
            grads = tuple(
                put(out, (part, slice(None)), xp.astype(num.reduce_grad(xp, g, denominator, reduction), out_dtype))
                for out, g in zip(grads, (gs, gt))
            )
    loss, _ = num.reduce(xp, xp.reshape(loss, layout.rest_shape), None, denominator, reduction, widened)
    loss = xp.astype(loss, out_dtype)
    if not return_grad:
        return loss
    return loss, tuple(layout.back_rows(g) for g in grads)
