"""The formulas: one statement of each, written against an array namespace ``xp``.

Every function here works along the **last axis** of arrays that are already in
the *working dtype* (see :func:`working_dtype`); the public layer moves the
class axis to the end, validates, and rounds the result once to the output
dtype.  Backends (NumPy, PyTorch, JAX, the native kernels) share these
formulas rather than copying them.

Techniques
----------
For a row ``x`` with maximum ``a`` at index ``k`` let ``z_i = x_i - a`` (or
``(x_i - a)/T`` with a temperature) and ``s = sum_{i != k} exp(z_i)``; the
max term, exactly 1, is left out of ``s``.

* logsumexp ``= a + log1p(s)`` (Blanchard, Higham & Higham, "Accurately
  computing the log-sum-exp and softmax functions", IMA J. Numer. Anal. 41,
  2021, Algorithm 4.1).  ``log1p`` keeps full relative accuracy when ``s`` is
  tiny, i.e. on confident rows.
* log_softmax ``= (z_i - log1p(s))``: both terms are <= 0, so nothing cancels,
  and at ``i = k`` it is ``-log1p(s)``, exact even when ``p_k`` rounds to 1.
* softmax ``= exp(z_i) / (1 + s)``: dividing is more accurate than
  ``exp(x_i - logsumexp)`` (Blanchard et al., Thm 3.4 vs 4.3).
* cross-entropy with class coefficients ``c`` (a one-hot target, a smoothed
  target, class weights or probabilities) is ``sum_j c_j * (-log_softmax_j)``,
  a sum of non-negative terms.  Its gradient ``C p - c`` (``C = sum c``) is
  never formed as ``p_t - 1`` at the argmax, which in float32 rounds to 0 once
  the margin exceeds about 17 ("softmax collapse", Prieto et al. 2025).  Where
  ``p_k > 1/2`` (``s < 1``) it is ``(C - c_k) - C * s / (1 + s)``, with
  ``C - c_k`` summed from the other coefficients.

Precision
---------
* float16, bfloat16 and float32 inputs are computed in float64 and rounded
  once: the difference of two float32 numbers is exact in float64, and the
  float64 rounding errors are far below half a float32 ULP.
* float64 inputs (and float32 inputs where float64 is not available: JAX
  without x64, an array-API device without it) use compensated arithmetic:
  ``x_i - a`` is formed exactly as ``hi + lo`` (TwoSum, Knuth/Møller) and
  ``exp(hi + lo)`` as ``exp(hi) * (1 + lo)``, which removes the
  ``|x_i - a| * u`` error of the plain shift; with a temperature the
  quotient's remainder is recovered with Dekker's TwoProduct (Veltkamp
  splitting), on a power-of-two-scaled temperature so that no temperature
  from the smallest subnormal to the largest finite number overflows it.
  Sums use a TwoSum halving tree whose rounding errors are added back
  (cascaded summation), so they are accurate to about one rounding whatever
  the width.  Compensated float32 is within 6 ULP (the float32 ``exp``'s
  own error is part of it).
"""

from __future__ import annotations

from softmaxkit.numerics.precision import (
    compensated_sum,
    compensated_sum_pair,
    device,
    divide_pair,
    two_diff,
    two_prod,
    working_dtype,
)
from softmaxkit.numerics.rows import (
    RowStats,
    row_stats,
)
from softmaxkit.numerics.softmax import (
    entropy,
    log_softmax,
    log_softmax_jvp,
    log_softmax_vjp,
    logsumexp_vjp,
    logsumexp,
    logsumexp_weighted,
    neg_log_softmax,
    softmax,
    softmax_vjp,
)
from softmaxkit.numerics.cross_entropy import (
    class_coefficients,
    cross_entropy_rows,
    hot_row_weight,
    kl_rows,
    probability_target_grad,
)
from softmaxkit.numerics.reduction import (
    elementwise_denominator,
    gradient_divisor,
    gradient_divisor_array,
    mean_denominator,
    one_hot,
    reduce,
    reduce_grad,
)
from softmaxkit.numerics.elementwise import (
    binary_cross_entropy,
    binary_cross_entropy_target_grad,
    log_sigmoid,
    sigmoid,
    softplus,
)

__all__ = [
    "RowStats",
    "binary_cross_entropy",
    "binary_cross_entropy_target_grad",
    "class_coefficients",
    "compensated_sum",
    "compensated_sum_pair",
    "cross_entropy_rows",
    "device",
    "divide_pair",
    "elementwise_denominator",
    "entropy",
    "gradient_divisor",
    "gradient_divisor_array",
    "hot_row_weight",
    "kl_rows",
    "log_sigmoid",
    "log_softmax",
    "log_softmax_jvp",
    "log_softmax_vjp",
    "logsumexp",
    "logsumexp_vjp",
    "logsumexp_weighted",
    "mean_denominator",
    "neg_log_softmax",
    "one_hot",
    "probability_target_grad",
    "reduce",
    "reduce_grad",
    "row_stats",
    "sigmoid",
    "softmax",
    "softmax_vjp",
    "softplus",
    "two_diff",
    "two_prod",
    "working_dtype",
]
